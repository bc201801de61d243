"""Issue 31 on the real node: the whole workflow in jwt mode with a vault that is given no way
to the cluster at all.

Through the real CLI: ``target connect --auth-method jwt`` (the vault gets the cluster's issuer
and public signing keys, nothing else), ``target discover --auth-method jwt`` (the plan records
``metadata.authMethod: jwt``), ``source apply-plan --audience`` (``role_type=jwt`` roles bound by
claims), ``bao kv put``, ``source verify-plan``, ``target install`` (the injector), ``target
protect``; then the pod, wrapped by the injected runtime, logs in through the jwt mount
(protect's ``cloudtaser.io/vault-auth-path``) and prints the vault's canary.

"Nothing could reach the API server" is checked on both ends: the vault's side (no auth mount
names the node's API server, the jwt mount's config holds no URL to fetch keys from) and the
API server's side (its own ``apiserver_request_total{resource="tokenreviews"}`` does not move
while the pods log in). Another tenant's role is refused to a pod on the real node as well; a
token of another control plane is refused; and when the node's API server rotates its signing
key, a new pod cannot log in until ``target connect`` runs again, then it can.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from cloudtaser import contract
from cloudtaser import plan as planlib
from tests.integration.connect_helpers import (
    cli,
    connect_args,
    create_namespace_with_accounts,
    request_token,
    token_file,
)
from tests.integration.test_lifecycle_realnode import (
    AUDIENCE,
    Site,
    _cloudtaser,
    _deployment,
    _free_port,
    _pods,
    _printed,
    _wait_ready,
)
from tests.integration.test_runtime_realnode import BUSYBOX
from tests.integration.test_runtime_realnode import runtime_image as _runtime_image
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import Image, RealNode
from tests.testenv.workloads import create_secret, create_service_account

pytestmark = pytest.mark.integration

rt_image = pytest.fixture(scope="module", name="rt_image")(_runtime_image.__wrapped__)
_TOKENREVIEWS = re.compile(
    r'^apiserver_request_total\{([^}]*resource="tokenreviews"[^}]*)\} (\S+)$'
)


@pytest.fixture(scope="module")
def app_image(real_node: RealNode) -> str:
    real_node.build_image("cloudtaser-test/busybox:1", cmd=["sh"])
    return BUSYBOX


@dataclass
class JwtSite(Site):
    #: connect's namespace (the self-test's ServiceAccount), for re-running connect
    system_ns: str = ""


@pytest.fixture(scope="module")
def site(
    real_node: RealNode, openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JwtSite]:
    """The node's cluster connected in jwt mode (its own jwt mount) and a KV v2 mount."""
    tag = secrets.token_hex(3)
    tmp = tmp_path_factory.mktemp("jwt-rn")
    mount, system_ns = f"jwt-rn-{tag}", f"ct-sys-jwt-{tag}"
    run = cli(
        connect_args(real_node.cluster, openbao, tmp, mount, system_ns, "--auth-method", "jwt")
    )
    assert run.code == 0, run.text
    assert "self-test passed" in run.stdout
    kv = openbao.enable_kv2(f"kv-jwt-{tag}")
    try:
        yield JwtSite(real_node, openbao, mount, kv, tmp, token_file(openbao, tmp), system_ns)
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        openbao.disable_mount(kv)
        if real_node.running:
            real_node.delete_namespace(system_ns)


@pytest.fixture(scope="module")
def injector(site: Site, rt_image: Image) -> Iterator[str]:
    port = _free_port()
    node = site.node
    install = _cloudtaser(
        "target", "install", "--kubeconfig", site.kubeconfig, "--image", rt_image.pinned,
        "--allowed-vault-address", site.openbao.address, "--audience", AUDIENCE,
        "--webhook-url", f"https://127.0.0.1:{port}/mutate",
        "--kube-api", f"{node.api_host}:{node.api_port}", "--replicas", "1",
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    try:
        yield rt_image.pinned
    finally:
        _cloudtaser(
            "target", "uninstall", "--kubeconfig", site.kubeconfig, "--ignore-protected-workloads"
        )


def _tokenreviews(site: Site) -> float:
    """The API server's own count of TokenReview requests so far."""
    cluster = site.node.cluster
    text = requests.get(f"{cluster.server}/metrics", timeout=10, **cluster._tls()).text
    return sum(float(m.group(2)) for m in map(_TOKENREVIEWS.match, text.splitlines()) if m)


def _jwt_tenant(site: Site, image: str) -> tuple[str, Path, str]:
    """A namespace with ServiceAccount ``app``, Secret ``db`` and Deployment ``web``;
    discovered in jwt mode, applied, populated and verified through the real CLI."""
    tag = secrets.token_hex(3)
    namespace = site.node.create_namespace(f"jwt-{tag}")
    k8s_canary, vault_canary = f"K8S-{secrets.token_hex(6)}", f"BAO-{secrets.token_hex(6)}"
    with contextlib.closing(site.node.client()) as client:
        create_service_account(client, namespace, "app")
        create_secret(client, namespace, "db", {"password": k8s_canary, "username": "app"})
        client.create(codecs.from_dict(_deployment(namespace, "web", image, 0)))
    _wait_ready(site, namespace, "web")
    assert _printed(site, namespace, "web") == k8s_canary
    plan = site.tmp / f"plan-{tag}.yaml"
    discover = _cloudtaser(
        "target", "discover", "--kubeconfig", site.kubeconfig, "-n", namespace,
        "--name", f"jwt-{tag}", "--auth-mount", site.mount, "--auth-method", "jwt",
        "--kv-mount", site.kv, "--output-plan", str(plan),
    )  # fmt: skip
    assert discover.returncode == 0, discover.stderr
    assert planlib.load(plan).metadata.auth_method == "jwt"
    vault = {"BAO_ADDR": site.openbao.address}
    apply = _cloudtaser(
        "source", "apply-plan", str(plan), "--token-file", str(site.token), "--audience", AUDIENCE,
        env=vault,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stdout + apply.stderr
    for _t, workload in planlib.load(plan).iter_workloads():
        for secret in workload.secrets:
            mount, rest = planlib.split_vault_path(secret.vault_path)
            site.openbao.bao(
                "kv", "put", f"-mount={mount}", rest, f"password={vault_canary}", "username=app"
            )
    verify = _cloudtaser(
        "source", "verify-plan", str(plan), "--token-file", str(site.token), env=vault
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return namespace, plan, vault_canary


def _protect(site: Site, plan: Path) -> Any:
    return _cloudtaser(
        "target", "protect", "--plan", str(plan), "--kubeconfig", site.kubeconfig,
        "--vault-address", site.openbao.address, "--yes", "--poll-interval", "300ms",
        "--timeout", "120s",
    )  # fmt: skip


def test_jwt_workflow_pods_get_their_values_from_a_vault_that_never_reaches_the_cluster(
    site: Site, injector: str, app_image: str
) -> None:
    openbao, mount = site.openbao, site.mount
    # the vault side first: nothing configured that could reach the node's API server
    auths = openbao.api_ok("GET", "sys/auth")["data"]
    assert auths[f"{mount}/"]["type"] == "jwt"
    for path, info in auths.items():
        if info.get("type") == "kubernetes":
            config = openbao.api("GET", f"auth/{path}config").json().get("data") or {}
            assert site.node.server not in str(config.get("kubernetes_host")), path
    config = openbao.api_ok("GET", f"auth/{mount}/config")["data"]
    assert config["jwt_validation_pubkeys"]
    assert not config.get("oidc_discovery_url")
    assert not config.get("jwks_url")
    assert "kubernetes_host" not in config

    namespace, plan, vault_canary = _jwt_tenant(site, app_image)
    other_namespace, other_plan, other_canary = _jwt_tenant(site, app_image)
    reviews = _tokenreviews(site)
    mark = openbao.audit_mark()

    protect = _protect(site, plan)
    assert protect.returncode == 0, protect.stdout + protect.stderr
    assert vault_canary not in protect.stdout + protect.stderr
    pod = _pods(site, namespace, "web")[0]
    assert pod.metadata.annotations[contract.AUTH_PATH] == f"auth/{mount}"
    assert _printed(site, namespace, "web") == vault_canary

    # the pod logged in through the jwt mount, and the API server reviewed no token for it
    logins = [
        e
        for e in openbao.audit_since(mark)
        if e.get("type") == "response"
        and e.get("request", {}).get("path") == f"auth/{mount}/login"
        and not e.get("error")
    ]
    assert logins, "no successful login through the jwt mount"
    assert _tokenreviews(site) == reviews

    # tenant A's pod given tenant B's role: the vault refuses it, the pod never gets B's value
    assert _protect(site, other_plan).returncode == 0
    assert _printed(site, other_namespace, "web") == other_canary
    other_role = planlib.load(other_plan).tenants[0]
    role_b = f"cloudtaser-{planlib.load(other_plan).metadata.name}-{other_role.name}"
    with contextlib.closing(site.node.client()) as client:
        client.patch(
            Deployment,
            "web",
            {"spec": {"template": {"metadata": {"annotations": {contract.VAULT_ROLE: role_b}}}}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
    logs = _failed_pod_logs(site, namespace, "web")
    assert other_canary not in logs
    assert "DB_PASSWORD=" not in logs


def _failed_pod_logs(site: Site, namespace: str, name: str, timeout: float = 120) -> str:
    """The logs of the newest pod of ``name`` once its app container has failed."""
    deadline = time.monotonic() + timeout
    while True:
        pods = sorted(_pods(site, namespace, name), key=lambda p: str(p.metadata.creationTimestamp))
        newest = pods[-1] if pods else None
        statuses = (newest.status.containerStatuses or []) if newest and newest.status else []
        app = next((s for s in statuses if s.name == "app"), None)
        if app is not None and (app.restartCount or (app.state and app.state.terminated)):
            return site.node.kubectl(
                "-n", namespace, "logs", str(newest.metadata.name), "-c", "app", "--previous",
                check=False,
            ).stdout + site.node.logs(namespace, str(newest.metadata.name), "app")  # fmt: skip
        assert time.monotonic() < deadline, site.node.pod_diagnostics(
            namespace, str(newest.metadata.name) if newest else name
        )
        time.sleep(1)


def _delete_pods(site: Site, namespace: str, name: str) -> None:
    with contextlib.closing(site.node.client()) as client:
        for pod in _pods(site, namespace, name):
            client.delete(Pod, str(pod.metadata.name), namespace=namespace, grace_period=0)


def test_a_second_clusters_token_is_refused_and_a_key_rotation_is_picked_up_by_connect(
    site: JwtSite, injector: str, app_image: str, cluster: Cluster, tmp_path: Path
) -> None:
    """A token of another control plane (the session's ``ct-main``: its own signing key) for the
    same namespace and ServiceAccount is refused by this cluster's jwt mount. Then the node's
    API server rotates its signing key (restarted with a new one, the old one still accepted
    and published): a new pod's token is refused until connect runs again, then it logs in."""
    openbao, mount = site.openbao, site.mount
    namespace, plan, vault_canary = _jwt_tenant(site, app_image)
    assert _protect(site, plan).returncode == 0
    assert _printed(site, namespace, "web") == vault_canary
    role = f"cloudtaser-{planlib.load(plan).metadata.name}-{planlib.load(plan).tenants[0].name}"

    def login(jwt: str) -> int:
        body = {"role": role, "jwt": jwt}
        return openbao.api("POST", f"auth/{mount}/login", body, token="").status_code

    other = cluster.client()
    try:
        create_namespace_with_accounts(other, namespace, "app")
        forged = request_token(other, namespace, "app", [AUDIENCE])
    finally:
        other.close()
    with contextlib.closing(site.node.client()) as client:
        genuine = request_token(client, namespace, "app", [AUDIENCE])
    assert login(genuine) == 200
    assert login(forged) == 400

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file, pub_file = tmp_path / "sa-new.key", tmp_path / "sa-new.pub"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    site.node.cluster.restart_apiserver(signing_key=key_file, verify_keys=[pub_file])
    with contextlib.closing(site.node.client()) as client:
        rotated = request_token(client, namespace, "app", [AUDIENCE])
    assert login(rotated) == 400  # the vault does not know the new key yet
    assert login(genuine) == 200  # the old key's tokens still do
    # a new pod gets a token signed with the new key: it cannot log in
    _delete_pods(site, namespace, "web")
    logs = _failed_pod_logs(site, namespace, "web")
    assert vault_canary not in logs

    again = cli(
        connect_args(
            site.node.cluster, openbao, tmp_path, mount, site.system_ns, "--auth-method", "jwt"
        )
    )
    assert again.code == 0, again.text
    assert "keys: +1 -0" in again.stdout
    assert login(rotated) == 200
    assert login(genuine) == 200  # the overlap: both keys
    _delete_pods(site, namespace, "web")
    _wait_started(site, namespace, "web")
    assert _printed(site, namespace, "web") == vault_canary


def _wait_started(site: Site, namespace: str, name: str, timeout: float = 120) -> None:
    """Until the newest pod of ``name`` has its app container running (logs readable)."""
    deadline = time.monotonic() + timeout
    while True:
        pods = sorted(_pods(site, namespace, name), key=lambda p: str(p.metadata.creationTimestamp))
        statuses = (pods[-1].status.containerStatuses or []) if pods and pods[-1].status else []
        if any(s.name == "app" and s.state and (s.state.running or s.state.terminated)
               for s in statuses):  # fmt: skip
            return
        assert time.monotonic() < deadline, site.node.diagnostics()
        time.sleep(0.5)
