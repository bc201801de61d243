"""TLS to the vault against a real OpenBao serving HTTPS (``bao server -dev -dev-tls``):
verification is on by default, an untrusted certificate fails at once with a clear message
(no retries), ``--ca-cert`` works, and ``--tls-skip-verify`` works but warns loudly."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cloudtaser.cli import main
from tests.testenv.binaries import find_bao
from tests.testenv.process import ManagedProcess, free_ports, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.vault]

PLAN = """\
apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata:
  name: tls
tenants:
  - name: tls
    namespace: tls
    workloads:
      - kind: Deployment
        name: api
        secrets:
          - source: db
            vaultPath: secret/data/tls/db
            fields:
              password: DB_PASSWORD
"""


@dataclass(frozen=True)
class TlsBao:
    address: str
    ca: Path
    token_file: Path
    token: str


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBao]:
    work = tmp_path_factory.mktemp("bao-tls")
    port, cluster_port = free_ports(2)
    token = f"root-{secrets.token_hex(16)}"
    env = {
        **os.environ,
        "BAO_DEV_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "BAO_DEV_ROOT_TOKEN_ID": token,
    }
    proc = ManagedProcess(
        "bao-tls",
        [find_bao(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={work}"],
        work / "bao.log",
        env=env,
        cwd=work,
        redact=(token,),
    )
    proc.start()
    address = f"https://127.0.0.1:{port}"
    ca = work / "vault-ca.pem"
    try:
        wait_until(
            lambda: (
                ca.exists()
                and requests.get(f"{address}/v1/sys/health", verify=str(ca), timeout=2).ok
            ),
            timeout=30,
            what="bao -dev-tls health",
            abort=proc.exit_reason,
        )
        requests.post(
            f"{address}/v1/secret/data/tls/db",
            json={"data": {"password": "tls-canary-value"}},
            headers={"X-Vault-Token": token},
            verify=str(ca),
            timeout=5,
        ).raise_for_status()
        token_file = work / "token"
        token_file.write_text(token)
        yield TlsBao(address, ca, token_file, token)
    finally:
        proc.stop()
    del cluster_port


def _verify(
    tls_bao: TlsBao, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    code = main(
        [
            "-vv",
            "source",
            "verify-plan",
            str(plan),
            "--openbao-addr",
            tls_bao.address,
            "--token-file",
            str(tls_bao.token_file),
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    assert tls_bao.token not in out + err
    assert "tls-canary-value" not in out + err
    return code, out, err


def test_untrusted_certificate_fails_at_once_and_says_what_to_do(
    tls_bao: TlsBao,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("VAULT_CACERT", "BAO_CACERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = _verify(tls_bao, tmp_path, capsys)
    assert code == 3, err
    assert "TLS handshake" in err
    assert "--ca-cert" in err
    assert not re.search(r"retry \d+ in", err)  # a certificate problem is not retried


def test_ca_cert_makes_tls_work(
    tls_bao: TlsBao, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _verify(tls_bao, tmp_path, capsys, "--ca-cert", str(tls_bao.ca))
    assert code == 0, err
    assert "DISABLED" not in err


def test_skip_verify_works_but_warns_loudly(
    tls_bao: TlsBao, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _verify(tls_bao, tmp_path, capsys, "--tls-skip-verify")
    assert code == 0, err
    assert "TLS verification" in err
    assert "DISABLED" in err
