"""The Go runtime in real pods on the real node (issue 13): install, wrap, resident, rotation.

The runtime image is built from ``runtime/`` exactly as ``nox -s runtime`` builds it (static
linux/amd64 + linux/arm64 binaries, ``tools/build-image`` OCI layout), pushed from the layout to
the node's local registry; its init container runs ``cloudtaser-runtime install /ct`` into a
Memory emptyDir, the busybox main container runs ``/ct/cloudtaser-runtime wrap -- …`` with a
projected ServiceAccount token (audience ``openbao``) that logs in through the auth mount made by
``target connect``. The tenant policy is least privilege: ``read`` on the pod's exact
``<kv>/data/<path>`` only (no ``metadata/``, so rotation uses the data-read fallback).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import Pod

from tests.integration.connect_helpers import cli, connect_args
from tests.integration.runtime_binary import REPO, go_binary, go_build
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import Image, RealNode
from tests.testenv.workloads import create_service_account

pytestmark = pytest.mark.integration

BUSYBOX = "ghcr.io/cloudtaser-test/busybox:1"
AUDIENCE = "openbao"
TOKEN_DIR = "/var/run/secrets/openbao"
# secrets a child must never see: a vault token (OpenBao ``s.``, Vault ``hvs.``/``hvb.``) or a JWT
TOKEN_LIKE = re.compile(r"\b(?:s|hvs|hvb)\.[A-Za-z0-9]{20,}|eyJ[A-Za-z0-9_-]{10,}\.")


@dataclass
class Bed:
    """A namespace with ServiceAccount ``app``, a connected auth mount, a KV v2 mount."""

    namespace: str
    mount: str
    kv: str
    role: str

    def path(self, name: str) -> str:
        return f"{self.kv}/data/{name}/db"


@pytest.fixture(scope="module")
def busybox(real_node: RealNode) -> str:
    real_node.build_image("cloudtaser-test/busybox:1", cmd=["sh"])
    return BUSYBOX


@pytest.fixture(scope="module")
def runtime_image(real_node: RealNode) -> Image:
    """The runtime image index, built from source as ``nox -s runtime`` does, pushed from its
    OCI layout (two platforms; the node pulls linux/amd64)."""
    with tempfile.TemporaryDirectory(prefix="ct-rt-image-") as tmp:
        out = Path(tmp)
        bins = {
            arch: go_build(out / arch / "cloudtaser-runtime", arch=arch)
            for arch in ("amd64", "arm64")
        }
        subprocess.run(
            [go_binary(), "run", "./tools/build-image", "-out", str(out / "image"),
             "-tag", "cloudtaser-runtime:test", *(f"{a}={p}" for a, p in bins.items())],
            cwd=REPO / "runtime", check=True, capture_output=True, text=True,
        )  # fmt: skip
        return real_node.push_oci_layout(out / "image", "cloudtaser/runtime:test")


PATHS = ("exec", "resident", "rotate")


@pytest.fixture(scope="module")
def bed(
    real_node: RealNode, openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bed]:
    tag = secrets.token_hex(3)
    mount, system_ns = f"k8s-rw-{tag}", f"ct-sys-rw-{tag}"
    namespace = real_node.create_namespace(f"rw-{tag}")
    run = cli(
        connect_args(
            real_node.cluster, openbao, tmp_path_factory.mktemp("connect"), mount, system_ns
        )
    )
    assert run.code == 0, run.text
    kv = openbao.enable_kv2(f"kv-rw-{tag}")
    bed = Bed(namespace, mount, kv, f"app-{tag}")
    policy = f"tenant-rw-{tag}"
    hcl = "".join(f'path "{bed.path(p)}" {{\n  capabilities = ["read"]\n}}\n' for p in PATHS)
    openbao.api_ok("PUT", f"sys/policies/acl/{policy}", {"policy": hcl})
    with contextlib.closing(real_node.client()) as client:
        create_service_account(client, namespace, "app")
    openbao.api_ok(
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
    try:
        yield bed
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        openbao.disable_mount(kv)
        openbao.api("DELETE", f"sys/policies/acl/{policy}")
        if real_node.running:
            real_node.delete_namespace(namespace)
            real_node.delete_namespace(system_ns)


def _canary(bed: Bed, openbao: BaoServer, name: str) -> str:
    value = f"CANARY-{name}-{secrets.token_hex(8)}"
    openbao.api_ok("POST", bed.path(name), {"data": {"username": "app", "password": value}})
    return value


def _wrapped_pod(
    node: RealNode,
    bed: Bed,
    openbao: BaoServer,
    image: Image,
    busybox: str,
    name: str,
    script: str,
    **env: str,
) -> dict[str, Any]:
    """Init container ``install /ct`` (the runtime image), main ``/ct/cloudtaser-runtime wrap
    -- sh -c SCRIPT`` (busybox) with the wrapper environment and a projected token."""
    wrapper_env = {
        "CLOUDTASER_VAULT_ADDR": openbao.address,
        "CLOUDTASER_VAULT_AUTH_ROLE": bed.role,
        "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": f"auth/{bed.mount}",
        "CLOUDTASER_SECRET_PATHS": bed.path(name),
        "CLOUDTASER_ENV_MAP": "username=DB_USER,password=DB_PASSWORD",
        "CLOUDTASER_SA_TOKEN_PATH": f"{TOKEN_DIR}/token",
        **env,
    }
    manifest = node.pod_manifest(
        name,
        busybox,
        ["/ct/cloudtaser-runtime", "wrap", "--", "sh", "-c", script],
        namespace=bed.namespace,
        env=wrapper_env,
        service_account="app",
        automountServiceAccountToken=False,  # the wrapper uses only the projected token
        terminationGracePeriodSeconds=20,
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
    manifest["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "ct", "mountPath": "/ct", "readOnly": True},
        {"name": "bao-token", "mountPath": TOKEN_DIR, "readOnly": True},
    ]
    return manifest


def _wait_logs(node: RealNode, bed: Bed, pod: str, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while needle not in (logs := node.logs(bed.namespace, pod)):
        assert time.monotonic() < deadline, logs
        time.sleep(0.3)
    return logs


def _assert_not_in_cluster_records(node: RealNode, bed: Bed, *canaries: str) -> None:
    """No canary in any event or pod (spec and status) of the namespace, nor in the kubelet's
    log."""
    events = node.kubectl("-n", bed.namespace, "get", "events", "-o", "json").stdout
    pods = node.kubectl("-n", bed.namespace, "get", "pods", "-o", "json").stdout
    assert json.loads(pods)["items"], "no pods listed: the check would prove nothing"
    kubelet = node.processes["kubelet"].tail(3000)
    for canary in canaries:
        assert canary not in events
        assert canary not in pods
        assert canary not in kubelet


def test_install_then_wrap_gives_the_busybox_app_the_vault_value(
    real_node: RealNode, openbao: BaoServer, bed: Bed, runtime_image: Image, busybox: str
) -> None:
    canary = _canary(bed, openbao, "exec")
    script = 'echo "$DB_PASSWORD"; echo ---; env'
    manifest = _wrapped_pod(real_node, bed, openbao, runtime_image, busybox, "exec", script)
    mark = openbao.audit_mark()
    t0 = time.monotonic()
    pod = real_node.run_pod(manifest, until=("Succeeded",), timeout=90)
    print(f"\ninstall + wrap pod create -> Succeeded: {time.monotonic() - t0:.2f} s")
    assert pod.status is not None
    init = (pod.status.initContainerStatuses or [])[0]
    assert init.state is not None
    assert init.state.terminated is not None
    assert init.state.terminated.exitCode == 0
    main = (pod.status.containerStatuses or [])[0]
    assert main.state is not None
    assert main.state.terminated is not None
    assert main.state.terminated.exitCode == 0

    logs = real_node.logs(bed.namespace, "exec")
    value, _, env_dump = logs.partition("\n---\n")
    assert value == canary  # the first line the app printed is the vault's value
    child_env = dict(line.split("=", 1) for line in env_dump.splitlines() if "=" in line)
    assert child_env["DB_PASSWORD"] == canary
    assert child_env["DB_USER"] == "app"
    assert "VAULT_ADDR" not in child_env  # the wrapper's address is a stripped CLOUDTASER_*
    assert not [k for k in child_env if k.startswith("CLOUDTASER_")], sorted(child_env)
    assert not {"VAULT_TOKEN", "BAO_TOKEN"} & set(child_env)
    assert not TOKEN_LIKE.search(env_dump), "a token reached the child environment"
    # the wrapper logged in through connect's mount and revoked its token before exec
    ops = openbao.request_ops_since(mark)
    assert ("update", f"auth/{bed.mount}/login") in ops
    assert ("update", "auth/token/revoke-self") in ops
    installed = real_node.logs(bed.namespace, "exec", container="install")
    assert installed == "cloudtaser-runtime: installed /ct/cloudtaser-runtime\n"
    _assert_not_in_cluster_records(real_node, bed, canary)


class _Follow:
    """``kubectl logs -f`` of a pod in the background: the log survives the pod's deletion."""

    def __init__(self, node: RealNode, bed: Bed, pod: str) -> None:
        self.proc = subprocess.Popen(
            [str(node.bin["kubectl"]), "--kubeconfig", str(node.kubeconfig),
             "-n", bed.namespace, "logs", "-f", pod],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.lines):
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.2)

    def close(self, timeout: float = 30) -> list[str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(5)
        return self.lines


def test_resident_wrapper_forwards_sigterm_on_pod_delete_and_exits_with_the_apps_code(
    real_node: RealNode, openbao: BaoServer, bed: Bed, runtime_image: Image, busybox: str
) -> None:
    canary = _canary(bed, openbao, "resident")
    code = 37
    script = (
        f"trap 'echo \"app: got SIGTERM\"; exit {code}' TERM; "
        'echo "app: running, password length ${#DB_PASSWORD}"; '
        "while true; do sleep 0.1; done"
    )
    manifest = _wrapped_pod(
        real_node, bed, openbao, runtime_image, busybox, "resident", script,
        CLOUDTASER_MODE="resident",
    )  # fmt: skip
    real_node.run_pod(manifest, timeout=90)
    follow = _Follow(real_node, bed, "resident")
    try:
        follow.wait_for("app: running")
        with contextlib.closing(real_node.client()) as client:
            current = client.get(Pod, "resident", namespace=bed.namespace)
            assert current.metadata is not None
            version = current.metadata.resourceVersion
            t0 = time.monotonic()
            client.delete(Pod, "resident", namespace=bed.namespace)
            exit_codes: list[int] = []
            deleted = False
            for kind, pod in client.watch(
                Pod,
                namespace=bed.namespace,
                fields={"metadata.name": "resident"},
                resource_version=version,
                server_timeout=40,
            ):
                for status in (pod.status.containerStatuses or []) if pod.status else []:
                    term = status.state.terminated if status.state else None
                    if term is not None and term.exitCode not in exit_codes:
                        exit_codes.append(term.exitCode)
                if kind == "DELETED":
                    deleted = True
                    break
        elapsed = time.monotonic() - t0
    finally:
        lines = follow.close()
    print(f"\nresident pod delete -> gone: {elapsed:.2f} s")
    assert deleted
    assert exit_codes == [code]  # the container's exit code is the app's own
    assert elapsed < 15  # the app exited on SIGTERM, not SIGKILL after the grace period (20 s)
    app_lines = [line for line in lines if line.startswith("app: ")]
    assert app_lines == [
        f"app: running, password length {len(canary)}",
        "app: got SIGTERM",
    ], lines
    assert not any(canary in line for line in lines)


def test_rotation_restarts_the_app_with_the_new_value(
    real_node: RealNode, openbao: BaoServer, bed: Bed, runtime_image: Image, busybox: str
) -> None:
    first = _canary(bed, openbao, "rotate")
    script = (
        'echo "app: value=$DB_PASSWORD"; trap "echo app: stopping; exit 0" TERM; '
        "while true; do sleep 0.1; done"
    )
    manifest = _wrapped_pod(
        real_node, bed, openbao, runtime_image, busybox, "rotate", script,
        CLOUDTASER_MODE="resident", CLOUDTASER_ROTATION_INTERVAL="1s",
        CLOUDTASER_GRACE_PERIOD="5s",
    )  # fmt: skip
    real_node.run_pod(manifest, timeout=90)
    _wait_logs(real_node, bed, "rotate", f"app: value={first}")
    second = f"CANARY-rotate-v2-{secrets.token_hex(8)}"
    put = openbao.bao("kv", "put", f"-mount={bed.kv}", "rotate/db", "username=app",
                      f"password={second}")  # fmt: skip
    assert second not in put.stdout + put.stderr
    t0 = time.monotonic()
    logs = _wait_logs(real_node, bed, "rotate", f"app: value={second}", timeout=30)
    print(f"\nrotation: kv put -> app restarted with v2: {time.monotonic() - t0:.2f} s")
    app_lines = [line for line in logs.splitlines() if line.startswith("app: ")]
    assert app_lines == [f"app: value={first}", "app: stopping", f"app: value={second}"], logs
    # the values appear only where the app printed them, never in the wrapper's own lines
    others = [line for line in logs.splitlines() if not line.startswith("app: ")]
    assert not [line for line in others if first in line or second in line], others
    with contextlib.closing(real_node.client()) as client:
        pod = client.get(Pod, "rotate", namespace=bed.namespace)
    assert pod.status is not None
    main = (pod.status.containerStatuses or [])[0]
    assert main.restartCount == 0  # restarted by the wrapper, inside the same container
    assert main.state is not None
    assert main.state.running is not None
    _assert_not_in_cluster_records(real_node, bed, first, second)
