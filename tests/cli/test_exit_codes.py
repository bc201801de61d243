"""Exit codes: every command's help ends with them, one code per kind of failure everywhere
(an unreachable API server is 3 on every target command; a refused gate is 5, not the 2 of a
typo), and the top-level help shows the whole workflow."""

from __future__ import annotations

import argparse
import re
import socket
from pathlib import Path

import pytest

from cloudtaser.cli import build_parser, main
from cloudtaser.cli.exitcodes import ExitCode, exit_code_for
from cloudtaser.errors import ApprovalError, PlanError


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("cloudtaser",)
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(" ".join(path), parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, (*path, name))
    return out


PARSERS = _parsers(build_parser())


@pytest.mark.parametrize(("name", "parser"), PARSERS, ids=[n for n, _p in PARSERS])
def test_every_help_ends_with_its_exit_codes(name: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help().rstrip()
    last = re.split(r"\n\s*\n", text)[-1]
    assert last.startswith("exit codes"), f"{name} --help does not end with its exit codes"
    is_group = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    if not is_group or name == "cloudtaser":
        assert re.search(r"\b0\b", last), f"{name}: the exit codes do not say what success is"


def test_every_exit_code_named_in_a_help_exists() -> None:
    known = {int(code) for code in ExitCode}
    for name, parser in PARSERS:
        last = re.split(r"\n\s*\n", parser.format_help().rstrip())[-1]
        body = last.split(":", 1)[1]
        numbers = re.findall(r"(?:^|[,;(]\s*|\s)(\d{1,3}) [a-z-]", body)
        codes = {int(n) for n in numbers if int(n) <= 255}  # 401 / 403 are HTTP statuses
        assert codes <= known, f"{name}: unknown exit code(s) {sorted(codes - known)}"


def test_top_level_help_lists_the_whole_workflow() -> None:
    text = build_parser().format_help()
    steps = re.findall(r"^\s+(\d)\. cloudtaser (\S+ \S+)", text, flags=re.MULTILINE)
    assert [int(n) for n, _cmd in steps] == list(range(9))
    assert [cmd for _n, cmd in steps][1:] == [
        "target discover",
        "plan approve",
        "source apply-plan",
        "source verify-plan",
        "target install",
        "target protect",
        "target finalize",
        "target audit",
    ]


def test_a_refused_gate_is_not_a_usage_error() -> None:
    assert exit_code_for(ApprovalError("not approved", source="p.yaml"))[0] == ExitCode.REFUSED
    assert exit_code_for(PlanError("bad", source="p.yaml"))[0] == ExitCode.USAGE
    assert ExitCode.REFUSED not in {ExitCode.USAGE, ExitCode.PROBLEMS, ExitCode.FAILED}


# --- an unreachable API server: 3 on every command, before any workload ------------------------

PLAN = """\
apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata: {{name: p}}
tenants:
  - name: web
    namespace: web
    workloads:
      - kind: Deployment
        name: api
        status: {status}
        secrets:
          - source: db
            vaultPath: secret/data/web/db
            fields: {{password: DB_PASSWORD}}
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable(tmp_path: Path) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{_closed_port()}'}}}}]\n"
        "users: [{name: u, user: {token: canary-token-never-printed}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    return kubeconfig


@pytest.mark.parametrize(
    ("status", "command"),
    [
        ("pending", ["target", "protect", "--vault-address", "https://bao.example:8200"]),
        ("migrated", ["target", "unprotect"]),
        ("migrated", ["target", "finalize"]),
    ],
    ids=["protect", "unprotect", "finalize"],
)
def test_unreachable_api_server_is_exit_3_before_any_workload(
    tmp_path: Path,
    unreachable: Path,
    status: str,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(status=status))
    before = plan.read_text()
    code = main([*command, "--plan", str(plan), "--kubeconfig", str(unreachable), "--yes"])
    captured = capsys.readouterr()
    assert code == ExitCode.REMOTE, captured.err
    assert "cannot reach the API server" in captured.err
    assert "nothing was changed" in captured.err
    assert "Deployment web/api" not in captured.err + captured.out  # no workload was tried
    assert plan.read_text() == before
    assert "canary-token" not in captured.err + captured.out


def test_unreachable_api_server_is_exit_3_for_audit_too(
    unreachable: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["target", "audit", "--kubeconfig", str(unreachable)]) == ExitCode.REMOTE
    assert "cannot reach the API server" in capsys.readouterr().err


def test_finalize_with_an_accepted_report_does_not_warn_that_none_was_given(
    tmp_path: Path, unreachable: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warning comes before any request, so an unreachable cluster still shows it."""
    from cloudtaser import plan as planlib
    from cloudtaser.plan.attest import build_report, dump_report

    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(status="migrated"))
    loaded = planlib.load(plan)
    proven = {
        secret.vault_path: (list(secret.fields), 1)
        for _tenant, workload in loaded.iter_workloads()
        for secret in workload.secrets
    }
    report = tmp_path / "verified.json"
    report.write_bytes(dump_report(build_report(loaded, proven, vault_address="https://bao:8200")))
    finalize = ["target", "finalize", "--plan", str(plan), "--kubeconfig", str(unreachable)]
    assert main([*finalize, "--yes"]) == ExitCode.REMOTE
    assert "no verification report given" in capsys.readouterr().err  # can fail
    assert main([*finalize, "--yes", "--require-verified", str(report)]) == ExitCode.REMOTE
    assert "no verification report" not in capsys.readouterr().err
