"""Issue 18 (red-team findings) against the real servers: a real kube-apiserver, a real
``bao server -dev``. Each test names the finding it covers; docs/security.md lists them in its
threat model.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import plan as planlib
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import (
    ContainerSpec,
    create_namespace,
    create_secret,
    create_service_account,
    create_workload,
    delete_namespace,
    deployment,
    request_token,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CANARY = f"CANARY-{secrets.token_hex(8)}"


def cloudtaser(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    """The real CLI in a subprocess; never the canary, and no traceback unless ``-v``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAULT_", "BAO_")) and k != "KUBECONFIG"
    }
    base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
    base["NO_COLOR"] = "1"
    base.update(env or {})
    run = subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args],
        env=base,
        input=input,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    if "-v" not in args:
        assert "Traceback" not in run.stderr, run.stderr
    assert CANARY not in run.stdout + run.stderr
    return run


def kubeconfig_text(cluster: Cluster, user: str) -> str:
    """A kubeconfig for ``cluster`` whose ``users[0].user`` block is ``user`` (raw YAML lines,
    indented under ``user:``), so tests can write the block form ``token: |`` exactly."""
    ca = base64.b64encode(cluster.ca_pem.encode()).decode()
    return (
        "apiVersion: v1\nkind: Config\ncurrent-context: sa\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {cluster.server}\n"
        f"    certificate-authority-data: {ca}\n"
        "contexts:\n- name: sa\n  context: {cluster: c, user: sa}\n"
        f"users:\n- name: sa\n  user:\n{user}"
    )


def discover(kubeconfig: Path, namespace: str, plan: Path, *extra: str) -> Any:
    return cloudtaser(
        "target", "discover", "--kubeconfig", str(kubeconfig), "-n", namespace,
        "-o", str(plan), *extra,
    )  # fmt: skip


@pytest.fixture
def apps(kube_client: Any) -> Iterator[tuple[str, str]]:
    """A namespace with one Deployment consuming a Secret, and a cluster-admin-free
    ServiceAccount token allowed to discover it (``view`` + secrets get)."""
    ns = create_namespace(kube_client, f"sec-{secrets.token_hex(3)}")
    create_secret(kube_client, ns, "db", {"password": CANARY})
    create_workload(
        kube_client,
        deployment("web", ns, containers=[ContainerSpec(secret_env={"PW": ("db", "password")})]),
    )
    create_service_account(kube_client, ns, "operator")
    from lightkube import codecs

    kube_client.create(
        codecs.from_dict(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "operator-admin", "namespace": ns},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
            }
        )
    )
    token = request_token(kube_client, ns, "operator", seconds=3600)
    try:
        yield ns, token
    finally:
        delete_namespace(kube_client, ns)


# -- finding 1: a bearer token in the plan and on the terminal --------------------------------


def test_block_form_token_with_trailing_newline_works_and_never_leaks(
    cluster: Cluster, apps: tuple[str, str], tmp_path: Path
) -> None:
    """``token: |`` (a pasted token) ends with a newline: stripped like kubectl does."""
    ns, token = apps
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(cluster, f"    token: |\n      {token}\n"))
    kubeconfig.chmod(0o600)
    plan = tmp_path / "plan.yaml"

    run = discover(kubeconfig, ns, plan)

    assert run.returncode == 0, run.stderr
    assert [w.name for _t, w in planlib.load(plan).iter_workloads()] == ["web"]
    assert token not in run.stdout + run.stderr + plan.read_text()


def test_token_file_with_surrounding_blanks_works(
    cluster: Cluster, apps: tuple[str, str], tmp_path: Path
) -> None:
    ns, token = apps
    token_file = tmp_path / "token"
    token_file.write_text(f"  {token}\n\n")
    token_file.chmod(0o600)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(cluster, f"    tokenFile: {token_file}\n"))
    plan = tmp_path / "plan.yaml"

    run = discover(kubeconfig, ns, plan)

    assert run.returncode == 0, run.stderr
    assert token not in run.stdout + run.stderr + plan.read_text()


def _broken_token_kubeconfig(cluster: Cluster, token: str, tmp_path: Path) -> Path:
    """A token with a newline *inside* (nothing to strip): the HTTP library refuses the header
    and quotes it in its exception."""
    half = len(token) // 2
    kubeconfig = tmp_path / "kubeconfig-broken"
    kubeconfig.write_text(
        kubeconfig_text(cluster, f'    token: "{token[:half]}\\n{token[half:]}"\n')
    )
    kubeconfig.chmod(0o600)
    return kubeconfig


def _token_parts_absent(token: str, text: str) -> None:
    half = len(token) // 2
    for part in (token, token[:half], token[half:], token[:40], token[-40:]):
        assert part not in text


def test_unsendable_token_never_reaches_discover_output(
    cluster: Cluster, apps: tuple[str, str], tmp_path: Path
) -> None:
    ns, token = apps
    kubeconfig = _broken_token_kubeconfig(cluster, token, tmp_path)
    plan = tmp_path / "plan.yaml"

    run = discover(kubeconfig, ns, plan)

    assert run.returncode == 3  # cannot reach the API server with these credentials
    assert "cloudtaser: error:" in run.stderr
    assert "<redacted>" in run.stderr
    _token_parts_absent(token, run.stdout + run.stderr)
    if plan.exists():
        _token_parts_absent(token, plan.read_text())
    # -v prints the traceback with the library's chained exception: scrubbed too
    verbose = cloudtaser(
        "-v", "target", "discover", "--kubeconfig", str(kubeconfig), "-n", ns, "-o", str(plan)
    )
    assert "LocalProtocolError" in verbose.stderr
    _token_parts_absent(token, verbose.stdout + verbose.stderr)


def test_unsendable_token_never_reaches_the_plan_of_protect(
    cluster: Cluster, apps: tuple[str, str], tmp_path: Path
) -> None:
    ns, token = apps
    good = tmp_path / "kubeconfig"
    good.write_text(kubeconfig_text(cluster, f"    token: {token}\n"))
    plan = tmp_path / "plan.yaml"
    made = discover(good, ns, plan)
    assert made.returncode == 0, made.stderr

    run = cloudtaser(
        "target", "protect", "--plan", str(plan), "--kubeconfig",
        str(_broken_token_kubeconfig(cluster, token, tmp_path)),
        "--vault-address", "https://vault.example.com:8200", "--yes",
    )  # fmt: skip

    assert run.returncode != 0
    _token_parts_absent(token, run.stdout + run.stderr + plan.read_text())


def test_unsendable_token_never_reaches_connect_export(
    cluster: Cluster, apps: tuple[str, str], tmp_path: Path
) -> None:
    _ns, token = apps
    conn = tmp_path / "conn.yaml"

    run = cloudtaser(
        "target", "connect", "--kubeconfig",
        str(_broken_token_kubeconfig(cluster, token, tmp_path)),
        "--auth-mount", f"k8s-{secrets.token_hex(3)}", "--export", str(conn),
    )  # fmt: skip

    assert run.returncode != 0
    _token_parts_absent(token, run.stdout + run.stderr)
    if conn.exists():
        _token_parts_absent(token, conn.read_text())
