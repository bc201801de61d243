"""A pod in an OpenBao namespace gets its value (issue 31, deliverable 3), on the real node.

OpenBao (the test bed's ``bao server -dev``, 2.7.2: ``sys/namespaces`` is in OpenBao since
2.3) gets a namespace of its own; inside it, and only there, ``target connect
--vault-namespace`` makes the Kubernetes auth mount, and the test a KV v2 mount, the tenant
policy and role. ``target install`` (URL mode, the runtime image built from source) gives the
injector this cluster's defaults: the vault address, that auth mount and that vault namespace.

A pod that carries only the inject label, the role, the secret path and the env map — no
address, auth path or namespace annotation — is injected with the defaults
(``CLOUDTASER_VAULT_NAMESPACE``), and its busybox app prints the canary stored in the
namespace. The wrapper without the namespace (the same wrapper environment written by hand,
``CLOUDTASER_VAULT_NAMESPACE`` left out) is refused at login: nothing of it exists in the root
namespace, so the injected pod can only have logged in and read through ``X-Vault-Namespace``.
The audit log shows its requests in that namespace.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudtaser import contract
from tests.integration.connect_helpers import cli, connect_args
from tests.integration.runtime_binary import REPO, go_binary, go_build
from tests.testenv.openbao import BaoServer
from tests.testenv.process import free_ports
from tests.testenv.realnode import Image, RealNode
from tests.testenv.workloads import create_service_account

pytestmark = pytest.mark.integration

BUSYBOX = "ghcr.io/cloudtaser-test/busybox:ns"
AUDIENCE = "openbao"
TOKEN_DIR = "/var/run/secrets/openbao"


@dataclass
class NamespacedBed:
    """A Kubernetes namespace with ServiceAccount ``app``; an OpenBao namespace holding the
    auth mount, the KV v2 mount, the policy and the role."""

    namespace: str
    vault_namespace: str
    mount: str
    kv: str
    role: str

    @property
    def path(self) -> str:
        return f"{self.kv}/data/app/db"


@pytest.fixture(scope="module")
def runtime_image(real_node: RealNode) -> Image:
    with tempfile.TemporaryDirectory(prefix="ct-ns-image-") as tmp:
        out = Path(tmp)
        binary = go_build(out / "amd64" / "cloudtaser-runtime", arch="amd64")
        subprocess.run(
            [go_binary(), "run", "./tools/build-image", "-out", str(out / "image"),
             "-tag", "cloudtaser-runtime:ns", f"amd64={binary}"],
            cwd=REPO / "runtime", check=True, capture_output=True, text=True,
        )  # fmt: skip
        return real_node.push_oci_layout(out / "image", "cloudtaser/runtime:ns")


@pytest.fixture(scope="module")
def bed(
    real_node: RealNode, openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NamespacedBed]:
    tag = secrets.token_hex(3)
    vault_ns = f"ct-tenant-{tag}"
    created = openbao.api("POST", f"sys/namespaces/{vault_ns}")
    assert created.ok, (
        f"OpenBao refused to create a namespace: {created.status_code} {created.text}"
    )
    inside = {"X-Vault-Namespace": vault_ns}

    def api_in(method: str, path: str, body: object = None) -> None:
        got = openbao.api(method, path, json=body, headers=inside)
        assert got.ok, f"{method} {vault_ns}/{path}: {got.status_code} {got.text}"

    mount, system_ns = f"k8s-ns-{tag}", f"ct-sys-ns-{tag}"
    namespace = real_node.create_namespace(f"ns-{tag}")
    run = cli(
        connect_args(
            real_node.cluster,
            openbao,
            tmp_path_factory.mktemp("connect"),
            mount,
            system_ns,
            "--vault-namespace",
            vault_ns,
        )
    )
    assert run.code == 0, run.text
    kv = f"kv-ns-{tag}"
    api_in("POST", f"sys/mounts/{kv}", {"type": "kv", "options": {"version": "2"}})
    bed = NamespacedBed(namespace, vault_ns, mount, kv, f"app-{tag}")
    policy = f"tenant-ns-{tag}"
    api_in(
        "PUT",
        f"sys/policies/acl/{policy}",
        {"policy": f'path "{bed.path}" {{ capabilities = ["read"] }}'},
    )
    with contextlib.closing(real_node.client()) as client:
        create_service_account(client, namespace, "app")
    api_in(
        "POST",
        f"auth/{mount}/role/{bed.role}",
        {
            "bound_service_account_names": ["app"],
            "bound_service_account_namespaces": [namespace],
            "audience": AUDIENCE,
            "token_policies": [policy],
            "token_ttl": "5m",
        },
    )
    # nothing of it in the root namespace: so the pod without the namespace must fail
    assert openbao.api("GET", f"sys/auth/{mount}").status_code in (400, 404)
    assert openbao.api("GET", f"auth/{mount}/role/{bed.role}").status_code in (400, 403, 404)
    try:
        yield bed
    finally:
        for path in (f"sys/auth/{mount}", f"sys/mounts/{kv}", f"sys/policies/acl/{policy}"):
            openbao.api("DELETE", path, headers=inside)
        openbao.api("DELETE", f"sys/namespaces/{vault_ns}")
        if real_node.running:
            real_node.delete_namespace(namespace)
            real_node.delete_namespace(system_ns)


@pytest.fixture(scope="module")
def injector(
    real_node: RealNode, openbao: BaoServer, bed: NamespacedBed, runtime_image: Image
) -> Iterator[str]:
    """``target install`` with this cluster's defaults (its vault, auth mount, namespace)."""
    ns = f"ct-inj-ns-{secrets.token_hex(3)}"
    (port,) = free_ports(1)
    run = cli(
        ["target", "install", "--image", real_node.image_ref("cloudtaser/runtime:ns"),
         "--allowed-vault-address", openbao.address, "--audience", AUDIENCE, "--namespace", ns,
         "--webhook-url", f"https://127.0.0.1:{port}/mutate",
         "--kube-api", f"{real_node.api_host}:{real_node.api_port}",
         "--default-vault-address", openbao.address, "--default-auth-path", f"auth/{bed.mount}",
         "--default-vault-namespace", bed.vault_namespace,
         "--kubeconfig", str(real_node.kubeconfig), "--timeout", "180s"]
    )  # fmt: skip
    assert run.code == 0, run.text
    try:
        yield ns
    finally:
        if real_node.running:
            cli(["target", "uninstall", "--namespace", ns, "--kubeconfig",
                 str(real_node.kubeconfig), "--timeout", "60s",
                 "--ignore-protected-workloads"])  # fmt: skip


def _pod(
    node: RealNode, bed: NamespacedBed, openbao: BaoServer, image: Image, name: str, **env: str
) -> dict[str, object]:
    wrapper_env = {
        "CLOUDTASER_VAULT_ADDR": openbao.address,
        "CLOUDTASER_VAULT_AUTH_ROLE": bed.role,
        "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": f"auth/{bed.mount}",
        "CLOUDTASER_SECRET_PATHS": bed.path,
        "CLOUDTASER_ENV_MAP": "password=DB_PASSWORD",
        "CLOUDTASER_SA_TOKEN_PATH": f"{TOKEN_DIR}/token",
        "CLOUDTASER_START_TIMEOUT": "10s",
        **env,
    }
    manifest = node.pod_manifest(
        name,
        BUSYBOX,
        ["/ct/cloudtaser-runtime", "wrap", "--", "sh", "-c", 'echo "$DB_PASSWORD"'],
        namespace=bed.namespace,
        env=wrapper_env,
        service_account="app",
        automountServiceAccountToken=False,
        initContainers=[
            {
                "name": "install",
                "image": image.pinned,
                "args": ["install", "/ct"],
                "volumeMounts": [{"name": "ct", "mountPath": "/ct"}],
            }
        ],
        volumes=[
            {"name": "ct", "emptyDir": {"medium": "Memory"}},
            {
                "name": "bao-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": AUDIENCE,
                                "expirationSeconds": 600,
                                "path": "token",
                            }
                        }
                    ]
                },
            },
        ],
    )
    manifest["spec"]["containers"][0]["volumeMounts"] = [  # type: ignore[index]
        {"name": "ct", "mountPath": "/ct", "readOnly": True},
        {"name": "bao-token", "mountPath": TOKEN_DIR, "readOnly": True},
    ]
    return manifest


def test_a_pod_in_an_openbao_namespace_gets_its_value(
    real_node: RealNode,
    openbao: BaoServer,
    bed: NamespacedBed,
    runtime_image: Image,
    injector: str,
) -> None:
    real_node.build_image("cloudtaser-test/busybox:ns", cmd=["sh"])
    canary = f"CANARY-ns-{secrets.token_hex(8)}"
    stored = openbao.api(
        "POST",
        bed.path,
        json={"data": {"password": canary}},
        headers={"X-Vault-Namespace": bed.vault_namespace},
    )
    assert stored.ok, stored.text

    # without the namespace: refused at login (nothing exists in the root namespace)
    outside = real_node.run_pod(
        _pod(real_node, bed, openbao, runtime_image, "outside"), until=("Failed",), timeout=90
    )
    assert outside.status is not None
    term = (outside.status.containerStatuses or [])[0].state.terminated  # type: ignore[union-attr]
    assert term is not None
    assert term.exitCode == 3  # the wrapper's "login refused"
    refused = real_node.logs(bed.namespace, "outside")
    assert f"login to auth/{bed.mount}" in refused
    assert canary not in refused

    # through the injector: nothing cluster-specific on the pod, the defaults fill it in
    manifest = real_node.pod_manifest(
        "inside",
        BUSYBOX,
        ["sh", "-c", 'echo "$DB_PASSWORD"'],
        namespace=bed.namespace,
        service_account="app",
        api_env=False,
    )
    manifest["metadata"]["labels"] = {contract.INJECT_LABEL: "true"}
    manifest["metadata"]["annotations"] = {
        contract.INJECT: "true",
        contract.VAULT_ROLE: bed.role,
        contract.SECRET_PATHS: bed.path,
        contract.ENV_MAP: "password=DB_PASSWORD",
    }
    mark = openbao.audit_mark()
    inside = real_node.run_pod(manifest, until=("Succeeded",), timeout=90)
    assert inside.spec is not None
    main = inside.spec.containers[0]
    assert (main.command or [])[0] == contract.WRAPPER_PATH  # injected
    env = {e.name: e.value for e in main.env or []}
    assert env["CLOUDTASER_VAULT_NAMESPACE"] == bed.vault_namespace  # from the default
    assert env["CLOUDTASER_VAULT_AUTH_MOUNT_PATH"] == f"auth/{bed.mount}"
    assert real_node.logs(bed.namespace, "inside") == canary + "\n"
    entries = [e for e in openbao.audit_since(mark) if e.get("type") == "request"]
    paths = {(e["request"].get("namespace", {}).get("path"), e["request"]["path"]) for e in entries}
    assert (f"{bed.vault_namespace}/", f"auth/{bed.mount}/login") in paths, paths
    assert (f"{bed.vault_namespace}/", bed.path) in paths, paths
