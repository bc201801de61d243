"""The vault connection cannot be steered from the pod (issue 28, findings 7 and 8), on the
real node with the real webhook and the real OpenBao.

The vault is reached through a TCP relay on a non-loopback address of this machine (Go never
proxies loopback, so the dev server's ``127.0.0.1`` could not show anything); the injector is
installed with that address (and a host name for the same port, for the ``hostAliases`` case)
as its allow-list. A real HTTP proxy records every connection it gets.

* A protected pod whose container sets ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (both
  spellings) to that proxy reads its secret from OpenBao, and the proxy sees nothing of the
  wrapper: no login, no read. The proxy first proves it works (a request through it is
  recorded), and the app's own request through it is recorded too: the app keeps its proxy.
* Denied by the webhook, with the reason: a container setting a variable the injector owns
  (``CLOUDTASER_VAULT_*``), ``hostAliases`` naming the vault host, a vault field mapped to a
  loader/interpreter variable without ``cloudtaser.io/accept-dangerous-env`` or to a reserved
  ``CLOUDTASER_*`` name. Each denial has a control pod, the same but harmless, that is admitted.
* An accepted dangerous target (``PYTHONPATH``) runs and gets the vault's value.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, codecs

from tests.integration.connect_helpers import cli, connect_args
from tests.integration.recording_proxy import RecordingProxy, TcpRelay, host_ip
from tests.integration.runtime_binary import REPO, go_binary, go_build
from tests.testenv.openbao import BaoServer
from tests.testenv.process import free_ports
from tests.testenv.realnode import Image, RealNode
from tests.testenv.workloads import create_service_account

pytestmark = pytest.mark.integration

AUDIENCE = "openbao"
BUSYBOX = "ghcr.io/cloudtaser-test/busybox:allow"
WRAPPER = "/cloudtaser/bin/cloudtaser-runtime"
VAULT_NAME = "vault.cloudtaser.test"  # an allowed address by name, for the hostAliases case
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


@dataclass
class Bed:
    """Namespace with ServiceAccount ``app``, connect's auth mount, a KV v2 mount, a role."""

    namespace: str
    mount: str
    kv: str
    role: str
    address: str  # the vault as the pods reach it (the relay)

    def path(self, name: str) -> str:
        return f"{self.kv}/data/{name}/db"


@pytest.fixture(scope="module")
def busybox(real_node: RealNode) -> str:
    real_node.build_image("cloudtaser-test/busybox:allow", cmd=["sh"])
    return BUSYBOX


@pytest.fixture(scope="module")
def runtime_image(real_node: RealNode) -> Image:
    with tempfile.TemporaryDirectory(prefix="ct-allow-image-") as tmp:
        out = Path(tmp)
        binary = go_build(out / "amd64" / "cloudtaser-runtime", arch="amd64")
        subprocess.run(
            [go_binary(), "run", "./tools/build-image", "-out", str(out / "image"),
             "-tag", "cloudtaser-runtime:allow", "-version", "allow", f"amd64={binary}"],
            cwd=REPO / "runtime", check=True, capture_output=True, text=True,
        )  # fmt: skip
        return real_node.push_oci_layout(out / "image", "cloudtaser/runtime:allow")


@pytest.fixture(scope="module")
def relay(openbao: BaoServer) -> Iterator[TcpRelay]:
    r = TcpRelay(host_ip(), ("127.0.0.1", openbao.port))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def proxy() -> Iterator[RecordingProxy]:
    p = RecordingProxy()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def injector(real_node: RealNode, relay: TcpRelay, runtime_image: Image) -> Iterator[str]:
    ns = f"ct-allow-{secrets.token_hex(3)}"
    (port,) = free_ports(1)
    run = cli([
        "target", "install", "--image", real_node.image_ref("cloudtaser/runtime:allow"),
        "--allowed-vault-address", f"http://{relay.address}",
        "--allowed-vault-address", f"http://{VAULT_NAME}:{relay.port}",
        "--audience", AUDIENCE, "--namespace", ns,
        "--webhook-url", f"https://127.0.0.1:{port}/mutate",
        "--kube-api", f"{real_node.api_host}:{real_node.api_port}",
        "--kubeconfig", str(real_node.kubeconfig), "--timeout", "180s",
    ])  # fmt: skip
    assert run.code == 0, run.text
    try:
        yield ns
    finally:
        if real_node.running:
            cli(["target", "uninstall", "--namespace", ns, "--kubeconfig",
                 str(real_node.kubeconfig), "--timeout", "60s",
                 "--ignore-protected-workloads"])  # fmt: skip


@pytest.fixture(scope="module")
def bed(
    real_node: RealNode,
    openbao: BaoServer,
    relay: TcpRelay,
    injector: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Bed]:
    tag = secrets.token_hex(3)
    mount, system_ns = f"k8s-al-{tag}", f"ct-sys-al-{tag}"
    namespace = real_node.create_namespace(f"al-{tag}")
    run = cli(connect_args(real_node.cluster, openbao, tmp_path_factory.mktemp("al"), mount,
                           system_ns))  # fmt: skip
    assert run.code == 0, run.text
    kv = openbao.enable_kv2(f"kv-al-{tag}")
    bed = Bed(namespace, mount, kv, f"app-{tag}", f"http://{relay.address}")
    policy = f"tenant-al-{tag}"
    hcl = f'path "{kv}/data/*" {{\n  capabilities = ["read"]\n}}\n'
    openbao.api_ok("PUT", f"sys/policies/acl/{policy}", {"policy": hcl})
    with contextlib.closing(real_node.client()) as client:
        create_service_account(client, namespace, "app")
    openbao.api_ok("POST", f"auth/{mount}/role/{bed.role}", {
        "bound_service_account_names": ["app"], "bound_service_account_namespaces": [namespace],
        "audience": AUDIENCE, "token_policies": [policy], "token_ttl": "5m",
    })  # fmt: skip
    try:
        yield bed
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        openbao.disable_mount(kv)
        openbao.api("DELETE", f"sys/policies/acl/{policy}")
        if real_node.running:
            real_node.delete_namespace(namespace)
            real_node.delete_namespace(system_ns)


def _canary(openbao: BaoServer, bed: Bed, name: str) -> str:
    value = f"CANARY-{name}-{secrets.token_hex(8)}"
    openbao.api_ok("POST", bed.path(name), {"data": {"username": "app", "password": value}})
    return value


def _pod(
    node: RealNode,
    bed: Bed,
    busybox: str,
    name: str,
    script: str,
    *,
    env: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An opted-in pod (label + annotations as protect writes them) reading ``bed.path(name)``."""
    manifest = node.pod_manifest(name, busybox, ["sh", "-c", script], namespace=bed.namespace,
                                 env=env, service_account="app", api_env=False, **spec)  # fmt: skip
    manifest["metadata"]["labels"] = {"cloudtaser.io/inject": "true"}
    manifest["metadata"]["annotations"] = {
        "cloudtaser.io/inject": "true",
        "cloudtaser.io/vault-address": bed.address,
        "cloudtaser.io/vault-role": bed.role,
        "cloudtaser.io/vault-auth-path": f"auth/{bed.mount}",
        "cloudtaser.io/secret-paths": bed.path(name),
        "cloudtaser.io/env-map": "username=DB_USER,password=DB_PASSWORD",
        **(annotations or {}),
    }
    return manifest


def _create(node: RealNode, manifest: dict[str, Any]) -> ApiError | None:
    with contextlib.closing(node.client()) as client:
        try:
            client.create(codecs.from_dict(manifest))
        except ApiError as exc:
            return exc
    return None


def _admitted_dry_run(node: RealNode, manifest: dict[str, Any]) -> dict[str, Any]:
    """The control: the API server (with the webhook) admits the pod; nothing is created."""
    run = node.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                       input=json.dumps(manifest), check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    pod: dict[str, Any] = json.loads(run.stdout)
    assert pod["spec"]["containers"][0]["command"][0] == WRAPPER  # the webhook mutated it
    return pod


def _denied(node: RealNode, manifest: dict[str, Any], *needles: str) -> str:
    error = _create(node, manifest)
    assert error is not None, "the pod was admitted"
    message = str(error.status.message)
    assert 'admission webhook "inject.cloudtaser.io" denied the request' in message, message
    assert error.status.code == 403
    for needle in needles:
        assert needle in message, message
    return message


def _wait_logs(node: RealNode, bed: Bed, pod: str, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while needle not in (logs := node.logs(bed.namespace, pod)):
        assert time.monotonic() < deadline, logs
        time.sleep(0.3)
    return logs


# -- the tests ----------------------------------------------------------------------------------


def test_the_apps_proxy_sees_nothing_of_the_wrappers_login(
    real_node: RealNode, openbao: BaoServer, bed: Bed, busybox: str, proxy: RecordingProxy
) -> None:
    canary = _canary(openbao, bed, "proxied")
    health = f"{bed.address}/v1/sys/health"
    # So the check below can fail: the proxy works and records a request sent through it.
    proxy.clear()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
    with opener.open(health, timeout=10) as resp:
        assert resp.status == 200
    assert [(s.method, s.target) for s in proxy.seen] == [("GET", health)]
    proxy.clear()

    script = (f"wget -q -O /dev/null {health}; echo wget=$?; "
              'echo "password=$DB_PASSWORD"; echo "proxy=$HTTPS_PROXY"; sleep 3600')  # fmt: skip
    env = dict.fromkeys(PROXY_VARS, proxy.url)
    mark = openbao.audit_mark()
    real_node.run_pod(_pod(real_node, bed, busybox, "proxied", script, env=env), timeout=90)
    logs = _wait_logs(real_node, bed, "proxied", "proxy=")

    assert f"password={canary}\n" in logs  # the wrapper read the secret from the real OpenBao
    ops = openbao.request_ops_since(mark)
    assert ("update", f"auth/{bed.mount}/login") in ops, ops
    assert f"proxy={proxy.url}\n" in logs  # the app keeps its proxy variables
    assert "wget=0\n" in logs, logs
    seen = proxy.seen
    # the app's own request went through the proxy, and nothing else did
    assert [(s.method, s.target) for s in seen] == [("GET", health)], seen


@pytest.mark.parametrize(
    "variable", ["CLOUDTASER_VAULT_SKIP_VERIFY", "CLOUDTASER_VAULT_ADDR", "CLOUDTASER_VAULT_CACERT"]
)
def test_a_container_setting_an_injector_variable_is_denied(
    real_node: RealNode, bed: Bed, busybox: str, variable: str
) -> None:
    name = f"owned-{secrets.token_hex(3)}"
    value = "/etc/ssl/evil.pem" if variable.endswith("CACERT") else "true"
    # control: the same pod with the app's own VAULT_* / proxy variables is admitted
    harmless = {
        "VAULT_SKIP_VERIFY": "true",
        "VAULT_CACERT": "/etc/x.pem",
        "HTTPS_PROXY": "http://p:1",
    }
    _admitted_dry_run(real_node, _pod(real_node, bed, busybox, name, "true", env=harmless))
    manifest = _pod(real_node, bed, busybox, name, "true", env={**harmless, variable: value})
    message = _denied(real_node, manifest, f"sets {variable}", "only the injector sets")
    assert value not in message


def test_host_aliases_for_the_vault_host_are_denied(
    real_node: RealNode, relay: TcpRelay, bed: Bed, busybox: str
) -> None:
    name = f"alias-{secrets.token_hex(3)}"
    by_name = {"cloudtaser.io/vault-address": f"http://{VAULT_NAME}:{relay.port}"}
    other = [{"ip": "127.0.0.1", "hostnames": ["db.cloudtaser.test"]}]
    _admitted_dry_run(real_node, _pod(real_node, bed, busybox, name, "true",
                                      annotations=by_name, hostAliases=other))  # fmt: skip
    steer = [*other, {"ip": "127.0.0.1", "hostnames": [VAULT_NAME]}]
    manifest = _pod(real_node, bed, busybox, name, "true", annotations=by_name, hostAliases=steer)
    _denied(real_node, manifest, "spec.hostAliases", VAULT_NAME)


@pytest.mark.parametrize(
    ("target", "accept", "needle"),
    [
        ("LD_PRELOAD", None, "changes what code the app loads or runs"),
        ("NODE_OPTIONS", "PYTHONPATH", "cloudtaser.io/accept-dangerous-env"),
        ("BASH_ENV", None, "BASH_ENV"),
        ("CLOUDTASER_DEBUG", "CLOUDTASER_DEBUG", "the runtime reserves"),
    ],
)
def test_a_dangerous_target_without_acceptance_is_denied(
    real_node: RealNode, bed: Bed, busybox: str, target: str, accept: str | None, needle: str
) -> None:
    name = f"danger-{secrets.token_hex(3)}"
    _admitted_dry_run(real_node, _pod(real_node, bed, busybox, name, "true"))  # control
    annotations = {"cloudtaser.io/env-map": f"username=DB_USER,password={target}"}
    if accept is not None:
        annotations["cloudtaser.io/accept-dangerous-env"] = accept
    manifest = _pod(real_node, bed, busybox, name, "true", annotations=annotations)
    _denied(real_node, manifest, target, needle)


def test_an_accepted_dangerous_target_gets_the_vault_value(
    real_node: RealNode, openbao: BaoServer, bed: Bed, busybox: str
) -> None:
    canary = _canary(openbao, bed, "accepted")
    annotations = {
        "cloudtaser.io/env-map": "username=DB_USER,password=PYTHONPATH",
        "cloudtaser.io/accept-dangerous-env": "PYTHONPATH",
    }
    script = 'echo "pythonpath=$PYTHONPATH"; sleep 3600'
    pod = _pod(real_node, bed, busybox, "accepted", script, annotations=annotations)
    real_node.run_pod(pod, timeout=90)
    logs = _wait_logs(real_node, bed, "accepted", "pythonpath=")
    assert f"pythonpath={canary}\n" in logs
