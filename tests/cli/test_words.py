"""The words of messages: each names what the user actually did and offers the way that keeps
them safe (issue 34, "Exit codes and words")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cloudtaser.cli import main
from cloudtaser.config import resolve_vault_target

PLAN = """\
apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata: {name: p}
tenants:
  - name: web
    namespace: web
    workloads:
      - kind: Deployment
        name: api
        secrets:
          - source: db
            vaultPath: secret/data/web/db
            fields: {password: DB_PASSWORD}
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_vault_names_vault_addr_when_vault_addr_was_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BAO_ADDR", raising=False)
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("VAULT_TOKEN", "canary-token-never-printed")
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    assert main(["source", "verify-plan", str(plan)]) == 3
    err = capsys.readouterr().err
    assert "cannot reach the vault" in err
    assert "VAULT_ADDR" in err
    assert "BAO_ADDR" not in err
    assert "canary-token" not in err


@pytest.mark.parametrize(
    ("env", "named", "not_named"),
    [
        ({"VAULT_ADDR": "http://127.0.0.1:{port}"}, "VAULT_ADDR", "BAO_ADDR"),
        ({"BAO_ADDR": "http://127.0.0.1:{port}"}, "BAO_ADDR", "VAULT_ADDR"),
        ({"VAULT_ADDR": "", "BAO_ADDR": "http://127.0.0.1:{port}"}, "BAO_ADDR", "VAULT_ADDR"),
        ({}, "--openbao-addr", "_ADDR"),
    ],
    ids=["VAULT_ADDR", "BAO_ADDR", "empty-VAULT_ADDR", "flag"],
)
def test_the_client_names_where_the_address_came_from(
    env: dict[str, str], named: str, not_named: str
) -> None:
    from cloudtaser.errors import VaultUnreachableError
    from cloudtaser.source.openbao import OpenBaoClient, RetryPolicy

    port = _closed_port()
    environ = {name: value.format(port=port) for name, value in env.items()}
    flag = None if env else f"http://127.0.0.1:{port}"
    target = resolve_vault_target(address=flag, token="t", environ=environ)
    assert target.address_source == named
    with (
        OpenBaoClient(target, retry=RetryPolicy(max_attempts=1)) as client,
        pytest.raises(VaultUnreachableError) as caught,
    ):
        client.auth_mounts()
    assert named in str(caught.value)
    assert not_named not in str(caught.value)


def test_a_bad_address_names_where_it_came_from() -> None:
    from cloudtaser.errors import ConfigError

    with pytest.raises(ConfigError, match="VAULT_ADDR"):
        resolve_vault_target(environ={"VAULT_ADDR": "bao.example:8200", "VAULT_TOKEN": "t"})
    with pytest.raises(ConfigError, match="BAO_ADDR"):
        resolve_vault_target(environ={"BAO_ADDR": "bao.example:8200", "BAO_TOKEN": "t"})
    target = resolve_vault_target(
        environ={
            "VAULT_ADDR": "https://a.example",
            "BAO_ADDR": "https://b.example",
            "BAO_TOKEN": "t",
        }
    )
    assert (target.address, target.address_source) == ("https://a.example", "VAULT_ADDR")


def test_verify_plan_checks_the_signing_key_before_any_vault_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    key = tmp_path / "k.pub"
    key.write_bytes(
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b" sec@example.com\n"
    )
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # the key cannot be in an agent
    monkeypatch.setenv("VAULT_TOKEN", "canary-token-never-printed")
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    code = main(
        [
            "source", "verify-plan", str(plan), "--openbao-addr",
            f"http://127.0.0.1:{_closed_port()}", "--attest", str(tmp_path / "v.json"),
            "--key", str(key),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "ssh-agent" in err
    assert "cannot reach the vault" not in err  # refused before the vault was asked anything
    assert not (tmp_path / "v.json").exists()


def test_tenant_scope_error_offers_the_layout_fields_before_shared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.replace("secret/data/web/db", "secret/data/legacy/web-db"))
    assert main(["plan", "validate", str(plan)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "outside the scope of tenant 'web'" in err
    assert "'secret/data/web/web-db'" in err  # what a path in its scope looks like
    assert "metadata.pathTemplate" in err
    assert "tenants[0].pathPrefix" in err
    # shared: true is named last, and as what it is
    assert err.index("pathPrefix") < err.index("shared: true")
    assert "widens access" in err


# --- one line per workload ------------------------------------------------------------------


def _screen(stream: str) -> str:
    """What a terminal shows at the end: each line as left after its last in-place clear."""
    return "\n".join(line.rsplit("\r\x1b[2K", 1)[-1] for line in stream.split("\n"))


def _refused_run(live: bool, *, verbose: bool = False) -> tuple[str, str]:
    """The events the engine emits for a refused workload with one extra warning, through
    the reporter, then the result table: (stderr, stdout)."""
    import argparse
    import contextlib
    import io

    from cloudtaser.cli.output import RunProgress
    from cloudtaser.cli.steps import print_report
    from cloudtaser.target.engine.core import Event, RunReport, WorkloadResult
    from cloudtaser.target.engine.result import Outcome
    from cloudtaser.target.kube.workloads import WorkloadRef

    ref = WorkloadRef("web", "web", "Deployment", "api")
    err, out = io.StringIO(), io.StringIO()
    with RunProgress(stream=err, live=live, verbose=verbose) as reporter:
        reporter.event(Event(None, "protecting 1 workload", total=1))
        reporter.event(Event(ref, DANGEROUS, warning=True))
        reporter.event(Event(ref, f"not changed: {WHY}", warning=True))
        reporter.event(Event(ref, f"refused: {WHY}", warning=True, outcome="refused"))
        reporter.close("1 refused")
    report = RunReport(results=[WorkloadResult(ref, Outcome.REFUSED, WHY, [DANGEROUS])])
    args = argparse.Namespace(output="text", dry_run=False, verbose=int(verbose))
    with contextlib.redirect_stdout(out):
        print_report(report, args, None)  # type: ignore[arg-type]  # text: no JSON result
    return err.getvalue(), out.getvalue()


WHY = "Secret db is also read by CronJob web/backup, which the runtime does not serve"
DANGEROUS = "the reviewed plan accepts vault fields as LD_PRELOAD (acceptedDangerousEnv)"


def test_on_a_terminal_a_refused_workload_is_one_line_with_its_reason_once() -> None:
    err, out = _refused_run(live=True)
    screen = _screen(err) + out
    assert screen.count(WHY) == 1, screen
    assert [line for line in out.splitlines() if "api" in line] == [
        line for line in out.splitlines() if WHY in line
    ]
    assert "(+1 warning: -v or -o json)" in out  # the other warning is counted, not lost
    assert DANGEROUS not in screen


def test_piped_the_reason_is_said_once_and_other_warnings_stay() -> None:
    err, _out = _refused_run(live=False)
    assert err.count(WHY) == 1, err
    assert "refused: " + WHY in err
    assert err.count(DANGEROUS) == 1


def test_verbose_shows_every_warning() -> None:
    err, out = _refused_run(live=True, verbose=True)
    assert DANGEROUS in _screen(err)
    assert "-v or -o json" not in out
