"""``--dry-run=server`` and ``--dry-run=client`` (kubectl's habit) are accepted wherever
``--dry-run`` is, and mean the same dry run (docs/cli.md, Conventions)."""

from __future__ import annotations

import argparse

import pytest

from cloudtaser.cli import build_parser


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for a in subs for n, sub in a.choices.items() for leaf in _leaves(sub, (*path, n))]


WITH_DRY_RUN = [
    (" ".join(path), parser)
    for path, parser in _leaves(build_parser())
    if "--dry-run" in parser._option_string_actions
]


def test_the_commands_with_a_dry_run_are_found() -> None:
    names = {name for name, _parser in WITH_DRY_RUN}
    assert {"target protect", "target finalize", "source apply-plan", "target install"} <= names


@pytest.mark.parametrize("spelling", ["--dry-run=server", "--dry-run=client"])
@pytest.mark.parametrize(("name", "parser"), WITH_DRY_RUN, ids=[n for n, _p in WITH_DRY_RUN])
def test_kubectl_spellings_of_dry_run_are_the_dry_run(
    name: str, parser: argparse.ArgumentParser, spelling: str
) -> None:
    plain = parser._option_string_actions["--dry-run"]
    assert parser._option_string_actions[spelling] is plain, f"{name} refuses {spelling}"
    assert plain.dest == "dry_run"
    assert "=client" in (plain.help or ""), f"{name}: --help does not say what =client does"


def test_dry_run_spellings_parse_and_leave_the_plan_to_the_positional() -> None:
    parser = build_parser()
    for spelling in ("--dry-run", "--dry-run=server", "--dry-run=client"):
        args = parser.parse_args(["source", "apply-plan", spelling, "plan.yaml"])
        assert args.dry_run is True
        assert args.plan == "plan.yaml"
        args = parser.parse_args(["target", "finalize", "--plan", "p.yaml", spelling])
        assert args.dry_run is True
    assert parser.parse_args(["source", "apply-plan", "plan.yaml"]).dry_run is False


def test_an_unknown_dry_run_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudtaser.cli import main

    assert main(["source", "apply-plan", "plan.yaml", "--dry-run=maybe"]) == 2
    assert "--dry-run" in capsys.readouterr().err
