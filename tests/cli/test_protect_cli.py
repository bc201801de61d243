"""`target protect|unprotect` argument handling that needs no cluster."""

from __future__ import annotations

import argparse

import pytest

from cloudtaser.cli import main
from cloudtaser.cli.common import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("90s", 90), ("5m", 300), ("1h", 3600), ("500ms", 0.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "5d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_protect_without_yes_or_interactive_refuses_before_touching_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["target", "protect", "--plan", "/nonexistent.yaml", "--vault-address", "https://v"]
    )
    assert code == 2
    assert "--yes" in capsys.readouterr().err


def test_protect_refuses_a_bad_vault_namespace_before_touching_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """(--vault-address is optional: the installed injector's default address stands in,
    and protect refuses the workloads when it has none: test_fleet_defaults.py.)"""
    args = ["target", "protect", "--plan", "/nonexistent.yaml", "--yes"]
    assert main([*args, "--vault-namespace", "eu/../prod"]) == 2
    assert "--vault-namespace" in capsys.readouterr().err


def test_yes_and_interactive_are_exclusive() -> None:
    args = ["target", "unprotect", "--plan", "p.yaml", "--yes", "--interactive"]
    assert main(args) == 2


def test_vault_address_aliases_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--vault-addr", "--openbao-addr", "--vault-address"):
        assert main(["target", "protect", "--plan", "/x.yaml", flag, "https://v"]) == 2
        assert "--yes" in capsys.readouterr().err  # parsed; refused only for lack of --yes
