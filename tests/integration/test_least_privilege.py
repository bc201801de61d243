"""Every command with exactly the permissions docs/security.md documents, and no more.

The ClusterRoles and vault policies are loaded from the fenced blocks of ``docs/security.md``
(``# cloudtaser-doc: <id>`` marker), so the documentation and these tests cannot drift apart.

Cluster: a ServiceAccount bound to exactly the documented rules, and a kubeconfig holding its
TokenRequest token (server and CA of the test cluster). Vault: a token created with
``no_default_policy`` and only the documented policy (names substituted for the test's own).
Each command succeeds; with one rule removed it fails with a message naming what is missing.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, codecs
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

from cloudtaser import plan as planlib
from tests.integration.source_helpers import enable_k8s_auth, plan_dict, workload, write_plan
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
    statefulset,
    wait_rollout,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECURITY_MD = REPO / "docs" / "security.md"
CANARY = f"CANARY-{secrets.token_hex(8)}"


# -- the documented blocks ----------------------------------------------------------------------


def doc_block(marker: str) -> str:
    """The fenced block of docs/security.md whose first line is ``# cloudtaser-doc: <marker>``."""
    text = SECURITY_MD.read_text()
    blocks = re.findall(r"```(?:yaml|hcl)\n(.*?)```", text, flags=re.DOTALL)
    found = [b for b in blocks if b.splitlines()[0].strip() == f"# cloudtaser-doc: {marker}"]
    assert len(found) == 1, f"docs/security.md must hold exactly one block marked {marker}"
    return found[0]


def doc_cluster_role(marker: str) -> dict[str, Any]:
    role = yaml.safe_load(doc_block(marker))
    assert role["kind"] == "ClusterRole"
    return dict(role)


def doc_policy(
    marker: str, *, plan: str = "prod-eu", auth: str = "k8s-prod-eu", kv: str = ""
) -> str:
    hcl = doc_block(marker)
    hcl = hcl.replace("cloudtaser-prod-eu-", f"cloudtaser-{plan}-").replace("k8s-prod-eu", auth)
    if kv:
        hcl = hcl.replace('"secret/', f'"{kv}/')
    return hcl


def test_security_doc_blocks_are_well_formed() -> None:
    for marker in (
        "rbac-discover",
        "rbac-protect",
        "rbac-connect",
        "rbac-connect-jwt",
        "rbac-install",
        "rbac-finalize-owners",
    ):
        role = doc_cluster_role(marker)
        assert role["rules"], marker
        for rule in role["rules"]:
            assert "*" not in rule["verbs"], marker
            assert "*" not in rule.get("resources", rule.get("nonResourceURLs")), marker
    for marker in ("policy-source", "policy-connect"):
        hcl = doc_policy(marker)
        assert "delete" not in hcl
        assert "/data/" not in hcl  # no command needs to read a secret value


# -- a ServiceAccount with exactly some rules ---------------------------------------------------


def kubeconfig_for(cluster: Cluster, path: Path, token: str) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": base64.b64encode(
                        cluster.ca_pem.encode()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


class Identity:
    """A ServiceAccount in its own namespace, granted ClusterRoles; cleans up after itself."""

    def __init__(self, cluster: Cluster, client: Any, tmp: Path) -> None:
        self.cluster = cluster
        self.client = client
        self.tmp = tmp
        self.tag = secrets.token_hex(3)
        self.namespace = create_namespace(client, f"lp-{self.tag}")
        self.sa = "operator"
        create_service_account(client, self.namespace, self.sa)
        self.cluster_roles: list[str] = []
        self.cluster_bindings: list[str] = []
        self.namespaces = [self.namespace]

    def grant(self, role: dict[str, Any], *, namespace: str | None = None) -> None:
        """Create ``role`` (renamed to be unique) and bind it cluster-wide, or in ``namespace``
        with a RoleBinding."""
        role = copy.deepcopy(role)
        name = f"{role['metadata']['name']}-{self.tag}-{secrets.token_hex(2)}"
        role["metadata"]["name"] = name
        self.client.create(codecs.from_dict(role))
        self.cluster_roles.append(name)
        subject = {"kind": "ServiceAccount", "name": self.sa, "namespace": self.namespace}
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
        if namespace is None:
            binding = {"kind": "ClusterRoleBinding", "metadata": {"name": name}}
            self.cluster_bindings.append(name)
        else:
            binding = {"kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace}}
        binding |= {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "roleRef": ref,
            "subjects": [subject],
        }
        self.client.create(codecs.from_dict(binding))

    def kubeconfig(self) -> Path:
        token = request_token(self.client, self.namespace, self.sa, seconds=3600)
        return kubeconfig_for(self.cluster, self.tmp / f"kubeconfig-{self.tag}", token)

    def close(self) -> None:
        for name in self.cluster_bindings:
            with contextlib.suppress(ApiError):
                self.client.delete(ClusterRoleBinding, name)
        for name in self.cluster_roles:
            with contextlib.suppress(ApiError):
                self.client.delete(ClusterRole, name)
        for ns in self.namespaces:
            delete_namespace(self.client, ns)


@pytest.fixture
def identity(cluster: Cluster, kube_client: Any, tmp_path: Path) -> Iterator[Identity]:
    ident = Identity(cluster, kube_client, tmp_path)
    yield ident
    ident.close()


# -- running the CLI ----------------------------------------------------------------------------


def cloudtaser(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
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
    assert "Traceback" not in run.stderr
    assert CANARY not in run.stdout + run.stderr
    return run


# -- cluster side -------------------------------------------------------------------------------


def _apps(client: Any, ns: str) -> None:
    """Two workloads consuming Secrets by secretKeyRef and by envFrom (key names needed)."""
    create_secret(client, ns, "db", {"password": CANARY, "username": "app"})
    create_workload(
        client,
        deployment("web", ns, containers=[ContainerSpec(secret_env={"PW": ("db", "password")})]),
    )
    create_workload(
        client, statefulset("store", ns, containers=[ContainerSpec(env_from=[("db", "DB_")])])
    )
    wait_rollout(client, "Deployment", ns, "web", timeout=120)
    wait_rollout(client, "StatefulSet", ns, "store", timeout=120)


def test_discover_with_exactly_the_documented_rbac(
    identity: Identity, kube_client: Any, tmp_path: Path
) -> None:
    ns = create_namespace(kube_client, f"lp-apps-{identity.tag}")
    identity.namespaces.append(ns)
    _apps(kube_client, ns)
    identity.grant(doc_cluster_role("rbac-discover"))
    plan = tmp_path / "plan.yaml"

    run = cloudtaser("target", "discover", "--kubeconfig", str(identity.kubeconfig()), "-n", ns,
                     "--output-plan", str(plan))  # fmt: skip

    assert run.returncode == 0, run.stderr  # complete: nothing unread
    loaded = planlib.load(plan)
    assert not loaded.metadata.unread
    found = {w.name: w for _t, w in loaded.iter_workloads()}
    assert found["store"].secrets[0].fields == {
        "password": "DB_password",
        "username": "DB_username",
    }
    assert CANARY not in plan.read_text()


def test_protect_and_unprotect_with_exactly_the_documented_rbac_in_one_namespace(
    identity: Identity, cluster: Cluster, kube_client: Any, tmp_path: Path
) -> None:
    ns = create_namespace(kube_client, f"lp-apps-{identity.tag}")
    identity.namespaces.append(ns)
    _apps(kube_client, ns)
    plan = tmp_path / "plan.yaml"
    admin = cloudtaser("target", "discover", "--kubeconfig", str(cluster.kubeconfig), "-n", ns,
                       "--output-plan", str(plan))  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    identity.grant(doc_cluster_role("rbac-protect"), namespace=ns)  # a RoleBinding is enough
    kubeconfig = str(identity.kubeconfig())
    common = ["--plan", str(plan), "--kubeconfig", kubeconfig, "--poll-interval", "200ms"]

    dry = cloudtaser("target", "protect", *common, "--vault-address", "https://bao:8200",
                     "--dry-run", "--no-verify-injection")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    # the admission check's dry-run pod is allowed by the role; kwok has no injector: refused
    checked = cloudtaser("target", "protect", *common, "--vault-address", "https://bao:8200",
                         "--dry-run")  # fmt: skip
    assert checked.returncode != 0, checked.stderr
    assert "not mutated by the injector" in checked.stdout + checked.stderr
    assert "permission denied" not in checked.stdout + checked.stderr
    run = cloudtaser("target", "protect", *common, "--vault-address", "https://bao:8200",
                     "--no-verify-injection", "--yes")  # fmt: skip
    assert run.returncode == 0, run.stderr
    statuses = {w.name: str(w.effective_status) for _t, w in planlib.load(plan).iter_workloads()}
    assert statuses == {"web": "migrated", "store": "migrated"}

    undo = cloudtaser("target", "unprotect", *common, "--yes")
    assert undo.returncode == 0, undo.stderr
    statuses = {w.name: str(w.effective_status) for _t, w in planlib.load(plan).iter_workloads()}
    assert statuses == {"web": "pending", "store": "pending"}


def test_protect_without_patch_fails_naming_the_missing_permission(
    identity: Identity, cluster: Cluster, kube_client: Any, tmp_path: Path
) -> None:
    ns = create_namespace(kube_client, f"lp-apps-{identity.tag}")
    identity.namespaces.append(ns)
    _apps(kube_client, ns)
    plan = tmp_path / "plan.yaml"
    admin = cloudtaser("target", "discover", "--kubeconfig", str(cluster.kubeconfig), "-n", ns,
                       "--output-plan", str(plan))  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    role = doc_cluster_role("rbac-protect")
    for rule in role["rules"]:
        rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    identity.grant(role, namespace=ns)

    kubeconfig = str(identity.kubeconfig())
    run = cloudtaser("target", "protect", "--plan", str(plan), "--kubeconfig", kubeconfig,
                     "--vault-address", "https://bao:8200", "--no-verify-injection",
                     "--yes")  # fmt: skip

    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "403" in text
    assert 'cannot patch resource "deployments"' in text
    assert {str(w.effective_status) for _t, w in planlib.load(plan).iter_workloads()} == {"pending"}


# -- vault side ---------------------------------------------------------------------------------


def token_with_only(openbao: BaoServer, hcl: str) -> str:
    """A token holding exactly ``hcl`` (no ``default`` policy)."""
    name = f"lp-{secrets.token_hex(4)}"
    openbao.api_ok("POST", f"sys/policies/acl/{name}", {"policy": hcl})
    r = openbao.api(
        "POST",
        "auth/token/create",
        {"policies": [name], "no_default_policy": True, "ttl": "1h"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["auth"]["policies"] == [name]
    return str(r.json()["auth"]["client_token"])


@pytest.fixture
def source_scene(openbao: BaoServer, kv_mount: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    plan_name = f"lp-{secrets.token_hex(3)}"
    auth = enable_k8s_auth(openbao, f"k8s-{plan_name}")
    doc = plan_dict(
        plan_name,
        {
            "payments": [
                workload("api", {f"{kv_mount}/data/payments/db": {"password": "DB_PASSWORD"}})
            ],
            "billing": [
                workload("job", {f"{kv_mount}/data/billing/key": {"key": "KEY"}}, sa="job")
            ],
        },
        auth_mount=auth,
        kv_mount=kv_mount,
    )
    plan = write_plan(tmp_path / "plan.yaml", doc)
    yield plan, plan_name
    openbao.api("DELETE", f"sys/auth/{auth}")


def _source_env(openbao: BaoServer, token: str, tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {
        "BAO_ADDR": openbao.address,
        "BAO_TOKEN": token,
        "KUBECONFIG": str(tmp / "none" / "kubeconfig"),
        "HOME": str(home),
    }


def test_apply_and_verify_with_exactly_the_documented_policy(
    openbao: BaoServer, kv_mount: str, source_scene: tuple[Path, str], tmp_path: Path
) -> None:
    plan, name = source_scene
    hcl = doc_policy("policy-source", plan=name, auth=f"k8s-{name}", kv=kv_mount)
    env = _source_env(openbao, token_with_only(openbao, hcl), tmp_path)
    before = plan.read_bytes()

    dry = cloudtaser("source", "apply-plan", str(plan), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    run = cloudtaser("source", "apply-plan", str(plan), env=env)
    assert run.returncode == 0, run.stderr
    for tenant in ("payments", "billing"):
        assert openbao.api("GET", f"sys/policies/acl/cloudtaser-{name}-{tenant}").ok
        assert openbao.api("GET", f"auth/k8s-{name}/role/cloudtaser-{name}-{tenant}").ok
    again = cloudtaser("source", "apply-plan", str(plan), env=env)
    assert again.returncode == 0, again.stderr

    missing = cloudtaser("source", "verify-plan", str(plan), env=env)
    assert missing.returncode == 1, missing.stderr
    assert "permission-denied" not in missing.stdout
    openbao.bao("kv", "put", f"-mount={kv_mount}", "payments/db", f"password={CANARY}")
    openbao.bao("kv", "put", f"-mount={kv_mount}", "billing/key", f"key={CANARY}")
    ok = cloudtaser("source", "verify-plan", str(plan), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert plan.read_bytes() == before


def test_apply_without_the_role_rule_fails_naming_the_missing_capability(
    openbao: BaoServer, kv_mount: str, source_scene: tuple[Path, str], tmp_path: Path
) -> None:
    plan, name = source_scene
    hcl = doc_policy("policy-source", plan=name, auth=f"k8s-{name}", kv=kv_mount)
    without_roles = re.sub(r'path "auth/[^"]*" \{.*?\}\n', "", hcl, flags=re.DOTALL)
    assert without_roles != hcl
    env = _source_env(openbao, token_with_only(openbao, without_roles), tmp_path)
    mark = openbao.audit_mark()

    run = cloudtaser("source", "apply-plan", str(plan), env=env)

    assert run.returncode == 3, run.stdout + run.stderr
    assert "lacks capability" in run.stderr
    assert f"auth/k8s-{name}/role/cloudtaser-{name}-" in run.stderr
    # refused in the pre-flight: nothing was written
    writes = openbao.writes_since(mark, client=CLI_AGENT)
    assert [w for w in writes if w[1] != "sys/capabilities-self"] == []


# -- connect: both sides, each with exactly its documented permissions --------------------------


def test_jwt_connect_with_exactly_the_documented_rbac_and_policy(
    identity: Identity, openbao: BaoServer, kube_client: Any, tmp_path: Path
) -> None:
    """jwt mode: the ``rbac-connect-jwt`` rules (no binding, no SubjectAccessReview) and the
    ``policy-connect`` paths on a jwt mount are enough for connect, its re-run and ``--check``."""
    identity.grant(doc_cluster_role("rbac-connect-jwt"))
    mount = f"jwt-lp-{identity.tag}"
    connect_ns = f"lp-jwt-{identity.tag}"
    identity.namespaces.append(connect_ns)
    token = token_with_only(openbao, doc_policy("policy-connect", auth=mount))
    token_file = tmp_path / "vault-token"
    token_file.write_text(token)
    args = ["target", "connect", "--auth-method", "jwt",
            "--kubeconfig", str(identity.kubeconfig()),
            "--openbao-addr", openbao.address, "--token-file", str(token_file),
            "--auth-mount", mount, "--namespace", connect_ns]  # fmt: skip
    try:
        run = cloudtaser(*args)
        assert run.returncode == 0, run.stdout + run.stderr
        config = openbao.api_ok("GET", f"auth/{mount}/config")["data"]
        assert config["jwt_validation_pubkeys"], config  # the cluster's keys reached the vault
        assert not config.get("kubernetes_host")
        again = cloudtaser(*args)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to change" in again.stdout
        check = cloudtaser(*args, "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert token not in run.stdout + run.stderr
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        with contextlib.suppress(ApiError):
            kube_client.delete(Namespace, connect_ns)


def test_connect_with_exactly_the_documented_rbac_and_policy(
    identity: Identity, openbao: BaoServer, kube_client: Any, tmp_path: Path
) -> None:
    identity.grant(doc_cluster_role("rbac-connect"))
    mount = f"k8s-lp-{identity.tag}"
    connect_ns = f"lp-sys-{identity.tag}"
    identity.namespaces.append(connect_ns)
    reviewer_binding = f"cloudtaser-token-reviewer-{connect_ns}"
    identity.cluster_bindings.append(reviewer_binding)
    token = token_with_only(openbao, doc_policy("policy-connect", auth=mount))
    token_file = tmp_path / "vault-token"
    token_file.write_text(token)
    args = ["target", "connect", "--kubeconfig", str(identity.kubeconfig()),
            "--openbao-addr", openbao.address, "--token-file", str(token_file),
            "--auth-mount", mount, "--namespace", connect_ns]  # fmt: skip
    try:
        run = cloudtaser(*args)
        assert run.returncode == 0, run.stdout + run.stderr
        again = cloudtaser(*args)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to change" in again.stdout
        check = cloudtaser(*args, "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert token not in run.stdout + run.stderr
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        with contextlib.suppress(ApiError):
            kube_client.delete(Namespace, connect_ns)
