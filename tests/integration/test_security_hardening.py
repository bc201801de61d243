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
from tests.integration.source_helpers import (
    enable_k8s_auth,
    plan_dict,
    run_cli,
    unique,
    workload,
    write_plan,
)
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import CLI_AGENT, BaoServer
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
        "--output-plan", str(plan), *extra,
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
    # an expected error prints no traceback even with -v (issue 17), and -v's extra
    # diagnostics are scrubbed too
    verbose = cloudtaser(
        "-v",
        "target",
        "discover",
        "--kubeconfig",
        str(kubeconfig),
        "-n",
        ns,
        "--output-plan",
        str(plan),
    )
    assert verbose.returncode == 3
    assert "Traceback" not in verbose.stderr
    assert "<redacted>" in verbose.stderr
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


# -- finding 2: cluster content must not widen a tenant's policy -------------------------------


def test_hostile_vault_agent_annotation_grants_nothing_outside_the_tenant(
    cluster: Cluster, kube_client: Any, openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3)
    hostile, billing = f"hostile-{tag}", f"billing-{tag}"
    auth = enable_k8s_auth(openbao, unique("k8s"))
    for ns in (hostile, billing):
        create_namespace(kube_client, ns)
    try:
        openbao.api_ok("POST", f"{kv_mount}/data/{billing}/db", {"data": {"pw": CANARY}})
        create_workload(
            kube_client,
            deployment(
                "thief",
                hostile,
                pod_annotations={
                    "vault.hashicorp.com/agent-inject": "true",
                    "vault.hashicorp.com/agent-inject-secret-db": f"{kv_mount}/data/{billing}/db",
                    "vault.hashicorp.com/agent-inject-secret-pay": f"{kv_mount}/{billing}/db",
                },
            ),
        )
        create_workload(
            kube_client,
            deployment(
                "api",
                billing,
                pod_annotations={
                    "vault.hashicorp.com/agent-inject": "true",
                    "vault.hashicorp.com/agent-inject-secret-db": f"{kv_mount}/data/{billing}/db",
                },
            ),
        )
        plan = tmp_path / "plan.yaml"
        found = discover(
            cluster.kubeconfig, hostile, plan, "-n", billing, "--kv-mount", kv_mount,
            "--auth-mount", auth,
        )  # fmt: skip
        assert found.returncode in (0, 1), found.stderr
        loaded = planlib.load(plan)
        by_ns = {t.namespace: t.workloads[0] for t in loaded.tenants}
        assert by_ns[hostile].status is planlib.WorkloadStatus.SKIPPED
        assert "outside namespace" in (by_ns[hostile].reason or "")
        assert by_ns[billing].status is planlib.WorkloadStatus.PENDING
        # the reviewer fills in fields; apply-plan grants billing its path, hostile nothing
        for _t, w in loaded.iter_workloads():
            for s in w.secrets:
                s.fields = {"pw": f"PW_{s.source.split(':')[1].upper()}"}
        planlib.save(loaded, plan)
        applied = run_cli(openbao, "source", "apply-plan", str(plan))
        assert applied.returncode == 0, applied.stderr
        name = loaded.metadata.name.lower()
        assert (
            openbao.api("GET", f"sys/policies/acl/cloudtaser-{name}-{hostile}").status_code == 404
        )
        billing_policy = openbao.api_ok("GET", f"sys/policies/acl/cloudtaser-{name}-{billing}")
        assert f"{kv_mount}/data/{billing}/db" in billing_policy["data"]["policy"]

        # a careless (or hostile) edit flips the status: refused before any request
        text = plan.read_text()
        flipped = text.replace("status: skipped", "status: pending")
        assert flipped != text
        plan.write_text(flipped)
        mark = openbao.audit_mark()
        refused = run_cli(openbao, "source", "apply-plan", str(plan))
        assert refused.returncode == 2
        assert f"outside the scope of tenant '{hostile}'" in refused.stderr
        assert openbao.requests_since(mark, client=CLI_AGENT) == []
        protect = cloudtaser(
            "target", "protect", "--plan", str(plan), "--kubeconfig", str(cluster.kubeconfig),
            "--vault-address", "https://vault.example.com:8200", "--yes",
        )  # fmt: skip
        assert protect.returncode == 2
        assert "outside the scope" in protect.stderr
        assert plan.read_text() == flipped
    finally:
        for ns in (hostile, billing):
            delete_namespace(kube_client, ns)


# -- finding 3: what a reviewer sees is what runs ----------------------------------------------


def test_nul_byte_before_status_skipped_is_refused_by_a_real_apply_plan(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    auth = enable_k8s_auth(openbao, unique("k8s"))
    plan = tmp_path / "plan.yaml"
    write_plan(
        plan,
        plan_dict(
            unique("nul"),
            {
                "victim": [
                    workload("w", {f"{kv_mount}/data/victim/db": {"k": "K"}}, status="skipped")
                ]
            },
            auth_mount=auth,
        ),
    )
    text = plan.read_text()
    plan.write_text(text.replace("status: skipped", "\x00status: skipped"))
    mark = openbao.audit_mark()

    run = run_cli(openbao, "source", "apply-plan", str(plan))

    assert run.returncode == 2
    assert "U+0000" in run.stderr
    assert "\x00" not in run.stderr
    assert openbao.requests_since(mark, client=CLI_AGENT) == []


# -- finding 9: exec plugins in client.authentication.k8s.io/v1 work -----------------------------


@pytest.mark.parametrize(
    "version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]
)
def test_exec_credential_plugin_works_against_a_real_api_server(
    cluster: Cluster, apps: tuple[str, str], tmp_path: Path, version: str
) -> None:
    ns, token = apps
    token_file = tmp_path / "sa-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    plugin = tmp_path / "plugin.sh"
    plugin.write_text(
        "#!/bin/sh\n"
        # a v1 plugin must see KUBERNETES_EXEC_INFO naming its version
        f'case "$KUBERNETES_EXEC_INFO" in *"{version}"*) ;; *) echo no info >&2; exit 9;; esac\n'
        f'printf \'{{"apiVersion": "{version}", "kind": "ExecCredential", '
        f'"status": {{"token": "%s"}}}}\' "$(cat {token_file})"\n'
    )
    plugin.chmod(0o700)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        kubeconfig_text(
            cluster,
            f"    exec:\n      apiVersion: {version}\n      command: {plugin}\n"
            "      interactiveMode: Never\n",
        )
    )
    plan = tmp_path / "plan.yaml"

    run = discover(kubeconfig, ns, plan)

    assert run.returncode == 0, run.stderr
    assert [w.name for _t, w in planlib.load(plan).iter_workloads()] == ["web"]
    assert token not in run.stdout + run.stderr + plan.read_text()
