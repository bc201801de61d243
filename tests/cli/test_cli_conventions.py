"""Issue 17, the CLI conventions a kubectl / terraform user expects (no servers needed):
the flag contract, did-you-mean, tracebacks, token file, namespace flag, tables, stdin, the
populate checklist, set-status, progress reporting, interactive answers, completion and the
kubectl plugin. The server-side halves are in tests/integration/test_*_cli_ux.py."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from cloudtaser import plan as planlib
from cloudtaser.cli import build_parser, main
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import RunProgress, table, visible_len
from cloudtaser.config import resolve_vault_target
from tests.unit.test_plan import VALID

ROOT = Path(__file__).parents[2]


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(VALID)
    return path


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, (*path, name))
    return out


# -- 1. the flag contract -------------------------------------------------------------------


def test_discover_output_json_never_writes_a_file_named_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The finding: `discover --output json` (and `--out json`) wrote the plan to ./json."""
    monkeypatch.chdir(tmp_path)
    for argv in (["--output", "json"], ["--out", "json"], ["-o", "json"]):
        assert main(["target", "discover", *argv]) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert "--output-plan" in err
    assert not (tmp_path / "json").exists()
    assert list(tmp_path.iterdir()) == []


def test_discover_dash_o_with_a_name_that_is_no_plan_file_is_refused_naming_both_forms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 34: `-o plan.yaml` is the plan file now (tests/cli/test_seed_commands.py); a
    value that is neither a format nor a .yaml/.yml name is still not guessed."""
    assert main(["target", "discover", "-o", "plan.txt"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "'plan.txt' is neither a result format nor a plan file" in err
    assert "text or json" in err
    assert ".yaml or .yml" in err
    assert "--output-plan FILE" in err


def test_no_parser_accepts_abbreviated_options() -> None:
    for path, parser in _parsers(build_parser()):
        assert parser.allow_abbrev is False, f"cloudtaser {' '.join(path)} allows abbreviations"


def test_every_output_option_is_dash_o_text_or_json() -> None:
    reporting = 0
    for path, parser in _parsers(build_parser()):
        actions = {o: a for a in parser._actions for o in a.option_strings}
        if "--output" not in actions and "-o" not in actions:
            continue
        reporting += 1
        assert actions["-o"] is actions["--output"], f"{path}: -o and --output differ"
        if path == ("target", "discover"):
            # issue 34: text|json, or CloudTaser's `-o plan.yaml` (a .yaml/.yml name or '-')
            parse = actions["--output"].type
            assert callable(parse)
            assert [parse(v) for v in ("text", "json", "p.yaml")] == ["text", "json", "p.yaml"]
            continue
        choices = tuple(actions["--output"].choices or ())
        # text and json everywhere; `target audit` adds its one-file html report (issue 15)
        extra = ("html",) if path == ("target", "audit") else ()
        assert choices == ("text", "json", *extra), path
    assert reporting >= 10


@pytest.mark.parametrize(
    "command",
    [
        ("target", "discover"),
        ("plan", "validate"),
        ("plan", "status"),
        ("plan", "todo"),
        ("source", "apply-plan"),
        ("source", "verify-plan"),
        ("target", "protect"),
        ("target", "unprotect"),
        ("target", "connect"),
    ],
)
def test_commands_that_report_have_the_output_format(command: tuple[str, ...]) -> None:
    parser = dict(_parsers(build_parser()))[command]
    assert "-o" in parser._option_string_actions


def test_unknown_flag_shows_the_subcommand_usage_and_did_you_mean(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "status", str(plan_file), "--outptu", "json"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: cloudtaser plan status")
    assert "did you mean --output?" in err
    assert main(["source", "apply-plan", str(plan_file), "--dryrun"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: cloudtaser source apply-plan")
    assert "did you mean --dry-run" in err


# -- JSON outputs -------------------------------------------------------------------------


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    main(argv)
    return json.loads(capsys.readouterr().out)


def test_plan_json_outputs_carry_format_version_and_summary(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["plan", "status", str(plan_file), "-o", "json"],
        ["plan", "validate", str(plan_file), "-o", "json"],
        ["plan", "todo", str(plan_file), "-o", "json"],
    ):
        doc = _json(argv, capsys)
        assert doc["formatVersion"] == "1", argv
        assert isinstance(doc["summary"], dict), argv


# -- 5. habits ------------------------------------------------------------------------------


def test_vault_token_file_comes_after_flag_and_environment(tmp_path: Path) -> None:
    (tmp_path / ".vault-token").write_text("s.from-bao-login\n")
    (tmp_path / ".vault-token").chmod(0o600)
    env = {"HOME": str(tmp_path), "VAULT_ADDR": "https://v.example"}
    assert resolve_vault_target(environ=env).token == "s.from-bao-login"
    assert resolve_vault_target(environ={**env, "BAO_TOKEN": "s.env"}).token == "s.env"
    flag_file = tmp_path / "flag"
    flag_file.write_text("s.flag-file")
    flag_file.chmod(0o600)
    assert (
        resolve_vault_target(environ={**env, "VAULT_TOKEN": "s.env"}, token_file=str(flag_file))
    ).token == "s.flag-file"
    assert "s.from-bao-login" not in repr(resolve_vault_target(environ=env))


def test_source_commands_refuse_namespace_with_a_hint(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kubectl user's --namespace team-00 must not become the vault namespace."""
    for verb in ("apply-plan", "verify-plan"):
        code = main(["source", verb, str(plan_file), "--namespace", "team-00"])
        assert code == ExitCode.USAGE
        err = capsys.readouterr().err
        assert "--vault-namespace" in err
        assert "talks only to the vault" in err
    args = build_parser().parse_args(
        ["source", "verify-plan", str(plan_file), "--vault-namespace", "team-00"]
    )
    assert args.vault_namespace == "team-00"


def test_expected_errors_never_print_a_traceback_even_with_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-v", "plan", "status", str(tmp_path / "missing.yaml")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "no such file" in err
    assert "Traceback" not in err
    assert main(["plan", "status", str(tmp_path / "missing.yaml"), "-vv"]) == ExitCode.USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_table_widths_ignore_colour_codes() -> None:
    coloured = "\x1b[32mcreate\x1b[0m"
    assert visible_len(coloured) == 6
    lines = table([[coloured, "x"], ["unchanged", "y"]], ["ACTION", "DETAIL"]).splitlines()
    plain = [line.replace("\x1b[32m", "").replace("\x1b[0m", "") for line in lines]
    assert plain[1].index("x") == plain[2].index("y") == plain[0].index("DETAIL")


def test_plan_validate_reads_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(VALID.encode())))
    assert main(["plan", "validate", "-"]) == 0
    assert "<stdin>: valid (2 tenants, 2 workloads)" in capsys.readouterr().out
    bad = VALID.replace("kind: Deployment", "kind: ReplicaSet")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bad.encode())))
    assert main(["plan", "validate", "-", "-o", "json"]) == ExitCode.USAGE
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == {"files": 1, "valid": 0, "invalid": 1}
    assert "ReplicaSet" in doc["files"][0]["error"]


# -- 3. the populate checklist ----------------------------------------------------------------


def test_plan_todo_prints_bao_kv_put_skeletons_without_values(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "todo", str(plan_file)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "bao kv put -mount=secret payments/postgres-credentials username=… password=…" in lines
    assert "bao kv put -mount=secret payments/ledger-key key=…" in lines
    assert "needed by payments/Deployment/api" in out
    assert "POSTGRES_PASSWORD" not in out  # env names are not what the owners type
    doc = _json(["plan", "todo", str(plan_file), "--tenant", "payments", "-o", "json"], capsys)
    assert doc["summary"] == {"paths": 2, "fields": 3}
    assert doc["paths"][0]["fields"] == ["username", "password"]
    assert main(["plan", "todo", str(plan_file), "--tenant", "nope"]) == ExitCode.USAGE
    assert "no tenant 'nope'" in capsys.readouterr().err


# -- 4. set-status and status --workloads -----------------------------------------------------


def test_set_status_undoes_a_skip_and_records_it_in_history(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(VALID)
    data["tenants"][0]["workloads"][1]["status"] = "skipped"
    plan_file.write_text(yaml.safe_dump(data))
    code = main(
        [
            "plan",
            "set-status",
            str(plan_file),
            "--workload",
            "payments/StatefulSet/ledger",
            "--status",
            "pending",
            "--reason",
            "answered n by mistake",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "payments/StatefulSet/ledger: skipped -> pending" in capsys.readouterr().out
    ledger = planlib.load(plan_file).tenants[0].workloads[1]
    assert str(ledger.effective_status) == "pending"
    assert ledger.history[-1].reason == "answered n by mistake"
    assert ledger.history[-1].by
    # nothing named: refused; migrated: only unprotect undoes it
    assert main(["plan", "set-status", str(plan_file), "--status", "pending"]) == ExitCode.USAGE
    assert "--workload" in capsys.readouterr().err


def test_set_status_refuses_to_touch_a_migrated_workload(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file.write_text(VALID.replace("status: pending", "status: migrated"))
    argv = ["plan", "set-status", str(plan_file), "--workload", "payments/api"]
    assert main([*argv, "--status", "skipped"]) == ExitCode.USAGE
    assert "target unprotect" in capsys.readouterr().err


def test_status_workloads_shows_last_error(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(VALID)
    data["tenants"][0]["workloads"][0]["lastError"] = "rollout did not complete: timed out"
    plan_file.write_text(yaml.safe_dump(data))
    assert main(["plan", "status", str(plan_file), "--workloads"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "payments/Deployment/api" in line)
    assert "rollout did not complete: timed out" in row
    doc = _json(["plan", "status", str(plan_file), "--workloads", "-o", "json"], capsys)
    assert doc["workloads"][0]["lastError"] == "rollout did not complete: timed out"


# -- 4. progress reporting ----------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _refs() -> list:
    from cloudtaser.target.kube.workloads import WorkloadRef

    return [WorkloadRef("t", "ns", "Deployment", f"w{i}") for i in range(4)]


def test_progress_piped_is_quiet_lines_with_counter_and_always_a_tally() -> None:
    from cloudtaser.target.engine.core import Event

    refs = _refs()
    out = io.StringIO()
    clock = _Clock()
    with RunProgress(stream=out, live=False, clock=clock) as rp:
        rp.event(Event(None, "protecting 4 of 4 selected workloads", total=4))
        rp.event(Event(refs[0], "1 of 3 updated replicas are available", detail=True))
        rp.event(Event(refs[0], "migrated: rolled out", outcome="migrated"))
        clock.now += 30
        rp.event(Event(refs[1], "failed: timed out", outcome="failed", warning=True))
        rp.close("1 migrated, 1 failed")
    text = out.getvalue()
    assert "updated replicas" not in text  # detail dropped when piped
    assert "[1/4] Deployment ns/w0: migrated: rolled out" in text
    assert "warning: [2/4] Deployment ns/w1: failed: timed out" in text
    assert text.rstrip().endswith("1 migrated, 1 failed (in 30s)")
    assert "\r" not in text
    assert "\x1b" not in text


def test_progress_on_a_terminal_keeps_one_live_line_with_eta() -> None:
    from cloudtaser.target.engine.core import Event

    refs = _refs()
    out = io.StringIO()
    clock = _Clock()
    with RunProgress(stream=out, live=True, clock=clock) as rp:
        rp.event(Event(None, "protecting 4", total=4))
        clock.now += 60
        rp.event(Event(refs[0], "migrated: ok", outcome="migrated"))
        rp.event(Event(refs[1], "waiting: 1 of 3 updated", detail=True))
        assert rp.status_line().startswith("[1/4] 1m00s elapsed, ETA 3m00s")
        assert "waiting: 1 of 3 updated" in rp.status_line()
        rp.close("1 migrated")
    text = out.getvalue()
    assert "\r\x1b[2K[1/4] 1m00s elapsed, ETA 3m00s" in text
    assert text.endswith("cloudtaser: 1 migrated (in 1m00s)\n")


def test_verbose_shows_detail_lines_when_piped() -> None:
    from cloudtaser.target.engine.core import Event

    refs = _refs()
    out = io.StringIO()
    with RunProgress(stream=out, live=False, verbose=True) as rp:
        rp.event(Event(refs[0], "1 of 3 updated replicas are available", detail=True))
    assert "updated replicas" in out.getvalue()


# -- 4. interactive answers -------------------------------------------------------------------


def _proposal(tenant: str, name: str):
    from cloudtaser.target.engine.core import Proposal
    from cloudtaser.target.kube.workloads import WorkloadRef

    return Proposal(
        action="protect",
        ref=WorkloadRef(tenant, tenant, "Deployment", name),
        replicas=1,
        mapping=[],
        warnings=[],
        patch={},
        already_applied=False,
    )


def test_interactive_all_tenant_and_later_answers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudtaser.cli.steps import Interrupts, make_decide
    from cloudtaser.target.engine.core import Decision

    monkeypatch.setattr(sys, "stdin", io.StringIO("l\nt\nbogus\na\n"))
    decide = make_decide(Interrupts())
    asked = [
        decide(_proposal("pay", "a")),  # l
        decide(_proposal("pay", "b")),  # t: rest of pay
        decide(_proposal("pay", "c")),  # not asked
        decide(_proposal("shop", "d")),  # bogus, then a
        decide(_proposal("web", "e")),  # not asked
    ]
    assert asked == [Decision.LATER, Decision.YES, Decision.YES, Decision.YES, Decision.YES]
    err = capsys.readouterr().err
    assert "yes (rest of tenant pay)" in err
    assert "Deployment web/e: yes (all remaining)" in err
    assert "please answer y, n, l, a, t or q" in err
    assert err.count("  (tenant ") == 3  # the proposal shown only for a, b and d
    assert err.count("? [y]es") == 4  # d was asked twice (after the bogus answer)


# -- 6. distribution ------------------------------------------------------------------------


def test_kubectl_plugin_console_script_runs_the_same_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-cloudtaser"] == scripts["cloudtaser"] == "cloudtaser.cli:console_main"


def test_kubectl_plugin_completion_answers_in_kubectls_protocol() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl_complete-cloudtaser"] == "cloudtaser.cli:kubectl_complete_main"
    code = "import sys; from cloudtaser.cli import kubectl_complete_main as m; m()"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_ARGCOMPLETE", "COMP_"))}

    def complete(*words: str) -> list[str]:
        run = subprocess.run(
            [sys.executable, "-c", code, *words],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=ROOT,
        )
        return run.stdout.splitlines()

    assert complete("plan", "va") == ["validate", ":4"]
    assert complete("target", "protect", "--pla") == ["--plan", "--platform", ":4"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_each_shell(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    out = capsys.readouterr().out
    assert "cloudtaser" in out
    assert "kubectl-cloudtaser" in out
    assert "_ARGCOMPLETE" in out


def _complete(line: str, tmp_path: Path, **env: str) -> list[str]:
    out_file = tmp_path / "completions.txt"
    full = {
        **os.environ,
        **env,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out_file),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    subprocess.run(
        [sys.executable, "-m", "cloudtaser"],
        env=full,
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return [c.strip() for c in out_file.read_text().split("\n")] if out_file.exists() else []


def test_tenant_and_workload_complete_from_the_plan(plan_file: Path, tmp_path: Path) -> None:
    line = f"cloudtaser target protect --plan {plan_file} --tenant pa"
    assert "payments" in _complete(line, tmp_path)
    line = f"cloudtaser target protect --plan {plan_file} --workload payments/S"
    assert "payments/StatefulSet/ledger" in _complete(line, tmp_path)


def test_context_completes_from_every_kubeconfig_entry(tmp_path: Path) -> None:
    def kubeconfig(name: str, *contexts: str) -> Path:
        path = tmp_path / name
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "contexts": [{"name": c, "context": {"cluster": c}} for c in contexts],
                }
            )
        )
        return path

    first, second = kubeconfig("a", "prod-eu", "dev"), kubeconfig("b", "prod-us")
    env = {"KUBECONFIG": f"{first}{os.pathsep}{second}"}
    found = _complete("cloudtaser target discover --context prod", tmp_path, **env)
    assert "prod-eu" in found
    assert "prod-us" in found


def test_counted_messages_drive_the_counter_and_only_milestones_print_when_piped() -> None:
    from cloudtaser.progress import Count

    piped = io.StringIO()
    with RunProgress(stream=piped, live=False) as rp:
        for done in range(1, 11):
            rp.message(Count(f"checked {done}/10 paths", done=done, total=10, milestone=done == 5))
    assert piped.getvalue() == "cloudtaser: checked 5/10 paths\n"
    live = io.StringIO()
    clock = _Clock()
    with RunProgress(stream=live, live=True, clock=clock) as rp:
        clock.now += 10
        rp.message(Count("checked 5/10 paths", done=5, total=10, milestone=False))
        assert rp.status_line().startswith("[5/10] 10s elapsed, ETA 10s")


def test_only_the_reporter_asks_for_a_count_per_item() -> None:
    """A plain callback (print, a logger) gets milestones only, not one line per path."""
    from cloudtaser.progress import wants_counts

    assert wants_counts(RunProgress(stream=io.StringIO()).message)
    assert not wants_counts(print)
    assert not wants_counts(lambda _m: None)
