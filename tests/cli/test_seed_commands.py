"""Issue 34, deliverable 1: the seed's commands, and CloudTaser's documented ones, parse as
written and mean what they say (parser level: no cluster, no vault).

The seed (shared/PRODUCT.md, the enterprise-deployment workflow quoted in
shared/reference/compat-cloudtaser.md §3 and §12) is the compatibility contract. Each command is
split as a shell would (``~`` expanded against a test HOME), parsed by the real
``build_parser()``, run through the same precheck ``main()`` applies, and the resolved values
(plan file, kubeconfig, vault address) are asserted. The discover command is run against a
real API server in tests/integration/test_kube_exec_plugin.py.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

import pytest

from cloudtaser.cli import build_parser, main
from cloudtaser.cli.common import cluster_target, vault_target
from cloudtaser.cli.exitcodes import ExitCode

VAULT = "https://vault.eu.example.com"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with the seed's two kubeconfigs, and no vault or kube settings inherited."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_")) or name == "KUBECONFIG":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    kube = tmp_path / ".kube"
    kube.mkdir()
    for name in ("cluster-a", "config"):
        (kube / name).write_text("apiVersion: v1\nkind: Config\n")
    return tmp_path


def parse(command: str) -> argparse.Namespace:
    """``command`` as a shell hands it over: split, ``~`` expanded; then argparse and the
    precheck, as ``main()`` runs them."""
    words = shlex.split(command)
    assert words[0] == "cloudtaser"
    argv = [str(Path(w).expanduser()) if w.startswith("~") else w for w in words[1:]]
    args = build_parser().parse_args(argv)
    precheck = getattr(args, "precheck", None)
    problem = precheck(args) if precheck is not None else None
    assert problem is None, f"{command}: {problem}"
    return args


# -- target discover ---------------------------------------------------------------------------


def test_seed_discover_with_dash_o_writes_the_plan_to_that_file(home: Path) -> None:
    """The issue's finding: this exited 2 with "-o/--output takes text or json"."""
    args = parse("cloudtaser target discover --kubeconfig ~/.kube/cluster-a -o plan-a.yaml")
    assert args.output_plan == "plan-a.yaml"
    assert args.output == "text"
    assert cluster_target(args).kubeconfig == (str(home / ".kube" / "cluster-a"),)


@pytest.mark.parametrize(
    ("command", "plan", "output"),
    [
        # CloudTaser's docs (compat §0.1 and §12)
        ("cloudtaser target discover -o plan.yaml", "plan.yaml", "text"),
        # CloudTaser's long flag (compat §3: `-o`, `--output-plan FILE`)
        ("cloudtaser target discover --output-plan plan.yaml", "plan.yaml", "text"),
        ("cloudtaser target discover --output plan.yml", "plan.yml", "text"),
        ("cloudtaser target discover -o plans/cluster-a.YAML", "plans/cluster-a.YAML", "text"),
        ("cloudtaser target discover -o -", "-", "text"),
        # both meanings of -o in one command, in either order
        ("cloudtaser target discover -o plan.yaml -o json", "plan.yaml", "json"),
        ("cloudtaser target discover -o json -o plan.yaml", "plan.yaml", "json"),
        ("cloudtaser target discover --output-plan p.yaml -o json", "p.yaml", "json"),
        # the same file twice is not a conflict
        ("cloudtaser target discover -o p.yaml --output-plan p.yaml", "p.yaml", "text"),
    ],
)
def test_discover_plan_file_and_result_format(
    home: Path, command: str, plan: str, output: str
) -> None:
    args = parse(command)
    assert (args.output_plan, args.output) == (plan, output)
    assert cluster_target(args).kubeconfig == (str(home / ".kube" / "config"),)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-o", "plan.txt"], "'plan.txt' is neither a result format nor a plan file"),
        (["-o", "json"], "discover needs the plan file: -o plan.yaml"),
        ([], "discover needs the plan file: -o plan.yaml"),
        (["-o", "a.yaml", "--output-plan", "b.yaml"], "two plan files given"),
        (["--output-plan", "b.yaml", "-o", "a.yml"], "two plan files given"),
        (["-o", "-", "-o", "json"], "choose one"),
    ],
)
def test_discover_dash_o_that_is_not_clear_is_exit_2_with_both_forms(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["target", "discover", *argv]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file named json, a.yaml


def test_discover_help_states_the_dash_o_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["target", "discover", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "'text' and 'json' are the result format" in text
    assert "a name ending in .yaml or .yml, or '-' (stdout), is the plan file" in text
    assert "cloudtaser target discover --kubeconfig ~/.kube/cluster-a -o plan-a.yaml" in text


# -- source apply-plan / verify-plan -----------------------------------------------------------


def test_seed_apply_plan_takes_the_plan_the_openbao_address_and_the_token(home: Path) -> None:
    args = parse(
        f"cloudtaser source apply-plan plan-a.yaml --openbao-addr {VAULT} --token hvs.TOKEN"
    )
    assert args.plan == "plan-a.yaml"
    target = vault_target(args)
    assert target.address == VAULT
    assert target.token == "hvs.TOKEN"


@pytest.mark.parametrize(
    "command",
    [
        "cloudtaser source verify-plan plan-a.yaml",  # the seed, address from the environment
        "cloudtaser source verify-plan plan.yaml",  # CloudTaser's docs
        "cloudtaser source apply-plan plan.yaml",
    ],
)
def test_documented_vault_commands_take_the_address_from_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", VAULT)
    monkeypatch.setenv("VAULT_TOKEN", "hvs.ENVTOKEN")
    args = parse(command)
    assert args.plan == command.rsplit(" ", 1)[1]
    assert vault_target(args).address == VAULT


# -- target protect ----------------------------------------------------------------------------


@pytest.mark.parametrize("confirm", ["--interactive", "--yes"])
def test_seed_protect_takes_plan_kubeconfig_and_the_pods_vault_address(
    home: Path, confirm: str
) -> None:
    args = parse(
        "cloudtaser target protect --plan plan-a.yaml --kubeconfig ~/.kube/cluster-a "
        f"--vault-address {VAULT} {confirm}"
    )
    assert args.plan == "plan-a.yaml"
    assert args.vault_address == VAULT
    assert cluster_target(args).kubeconfig == (str(home / ".kube" / "cluster-a"),)
    assert (args.interactive, args.yes) == (confirm == "--interactive", confirm == "--yes")


def test_docs_short_protect_form_parses_and_asks_only_for_the_pods_vault_address(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CloudTaser's docs list the command as `target protect --plan plan.yaml` (its shape;
    the seed's full form is above). It parses; the vault address the pods will use is never
    guessed from $VAULT_ADDR (the operator's address): without --vault-address it is the
    installed injector's default address, and protect refuses the workloads when the
    injector has none (tests/integration/test_fleet_defaults.py)."""
    monkeypatch.setenv("VAULT_ADDR", VAULT)
    args = build_parser().parse_args(["target", "protect", "--plan", "plan.yaml"])
    assert args.plan == "plan.yaml"
    assert args.vault_address is None
