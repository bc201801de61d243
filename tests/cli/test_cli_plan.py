"""CLI behaviour through main(argv): stdout, stderr, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtaser import __version__
from cloudtaser.cli import build_parser, main
from cloudtaser.cli.exitcodes import ExitCode, exit_code_for
from cloudtaser.errors import (
    ClusterAuthError,
    ConfigError,
    OperationError,
    PlanError,
    VaultSealedError,
    VaultUnreachableError,
)
from tests.unit.test_plan import VALID


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(VALID)
    return path


def test_version_flag_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cloudtaser {__version__}"
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"cloudtaser {__version__}"


def test_help_lists_workflow_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "plan" in out
    assert "exit codes: 0 ok, 1 problems found, 2 invalid input" in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == ExitCode.USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_validate_valid_plan(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "validate", str(plan_file)]) == 0
    captured = capsys.readouterr()
    assert f"{plan_file}: valid (2 tenants, 2 workloads)" in captured.out
    assert captured.err == ""


def test_validate_reports_each_invalid_file(
    plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("kind: Deployment", "kind: ReplicaSet"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    code = main(["plan", "validate", str(plan_file), str(bad), str(empty)])
    captured = capsys.readouterr()
    assert code == ExitCode.USAGE
    assert f"{plan_file}: valid" in captured.out
    assert f"{bad}: $.tenants[0].workloads[0].kind: Invalid enum value 'ReplicaSet'" in captured.err
    assert f"{empty}: the file is empty" in captured.err
    assert "Traceback" not in captured.err


def test_status_text_and_json(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "status", str(plan_file)]) == 0
    out = capsys.readouterr().out
    assert "payments" in out
    assert "TOTAL" in out
    assert main(["plan", "status", str(plan_file), "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["workloads"] == {"pending": 2, "migrated": 0, "skipped": 0}
    assert report["tenants"][0]["secrets"]["pending"] == 2
    assert report["tenants"][1]["workloads"]["pending"] == 0


def test_status_counts_migrated_and_skipped(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = VALID.replace("status: pending", "status: migrated").replace(
        "name: ledger\n", "name: ledger\n        status: skipped\n"
    )
    plan_file.write_text(text)
    assert main(["plan", "status", str(plan_file), "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["workloads"] == {"pending": 0, "migrated": 1, "skipped": 1}


def test_status_of_missing_file_is_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "status", str(tmp_path / "missing.yaml")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("cloudtaser: error: ")
    assert "no such file" in err
    assert "Traceback" not in err


def test_schema_command_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$ref"] == "#/$defs/MigrationPlan"
    assert schema["$defs"]["MigrationPlan"]["additionalProperties"] is False


def test_committed_schema_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    committed = Path(__file__).parents[2] / "schema" / "migration-plan.schema.json"
    main(["plan", "schema"])
    assert committed.read_text() == capsys.readouterr().out, (
        "schema/migration-plan.schema.json is stale: "
        "run `cloudtaser plan schema > schema/migration-plan.schema.json`"
    )


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (PlanError("x"), ExitCode.USAGE),
        (ConfigError("x"), ExitCode.USAGE),
        (VaultUnreachableError("x"), ExitCode.REMOTE),
        (VaultSealedError("x", status=503, path="sys/health"), ExitCode.REMOTE),
        (ClusterAuthError("x", status=403), ExitCode.REMOTE),
        (OperationError("x"), ExitCode.FAILED),
        (RuntimeError("token=s3cr3t"), ExitCode.INTERNAL),
    ],
)
def test_errors_map_to_documented_exit_codes(exc: Exception, code: ExitCode) -> None:
    mapped, message = exit_code_for(exc)
    assert mapped == code
    assert "s3cr3t" not in message


def test_unexpected_exception_has_no_traceback_without_verbose(
    monkeypatch: pytest.MonkeyPatch, plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudtaser import plan as planlib

    def explode(path: object) -> None:
        raise RuntimeError("canary-value-must-not-print")

    monkeypatch.setattr(planlib, "load", explode)
    assert main(["plan", "status", str(plan_file)]) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert "unexpected RuntimeError" in err
    assert "canary-value-must-not-print" not in err
    assert "Traceback" not in err
    assert main(["-v", "plan", "status", str(plan_file)]) == ExitCode.INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_build_parser_is_pure_and_repeatable() -> None:
    first = build_parser().format_help()
    assert first == build_parser().format_help()


def test_python_dash_m_matches_console_script(plan_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloudtaser", "plan", "validate", str(plan_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "valid" in result.stdout


def test_cli_import_pulls_no_heavy_module() -> None:
    """A Tab press must stay fast: the CLI module imports only the standard library."""
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import cloudtaser.cli; cloudtaser.cli.build_parser()",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()[1:]
    }
    heavy = {"lightkube", "httpx2", "httpx", "requests", "msgspec", "yaml", "urllib3"}
    assert not imported & heavy, f"heavy modules imported by the CLI: {sorted(imported & heavy)}"
    assert "cloudtaser" in imported


def _complete(line: str, tmp_path: Path) -> list[str]:
    out_file = tmp_path / "completions.txt"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out_file),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    subprocess.run(
        [sys.executable, "-m", "cloudtaser"],
        env=env,
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return [c.strip() for c in out_file.read_text().split("\n")] if out_file.exists() else []


def test_argcomplete_completes_commands_flags_and_plan_files(
    plan_file: Path, tmp_path: Path
) -> None:
    assert "validate" in _complete("cloudtaser plan val", tmp_path)
    assert "--output" in _complete("cloudtaser plan status --out", tmp_path)
    candidates = _complete(f"cloudtaser plan validate {plan_file.parent}/pl", tmp_path)
    assert str(plan_file) in candidates
