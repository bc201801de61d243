"""Secret files from memory on the real node (issue 29, the runtime): the injector of
``target install`` (URL mode) and a Deployment whose template carries the annotations by hand,
as ``target protect`` writes them, ``cloudtaser.io/secret-files`` included; the values are in
a real bao dev server and the Kubernetes Secrets the volumes name do not even exist (a kubelet
that still read them would never start the pod).

The workload reads a TLS key pair from a ``secret`` volume (``items``, ``defaultMode``, an item
``mode``) in two containers, a config file and a binary keystore from an all-secret
``projected`` volume, the config also through a ``subPath`` mount; the pod has ``fsGroup`` and
runs as another user than the runtime; the config also arrives as env, injected as before. The
app container's wrapper is resident with rotation, so it re-renders the files in place;
``filewatch`` (runtime/tools/filewatch) watches the volume with inotify as certificate-reloading
libraries do. Values are compared by sha256 computed in
the container: no test prints a value, and none may appear in any log, event or pod record.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from tests.integration import test_injector_realnode as injector_bed
from tests.integration.connect_helpers import cli, connect_args
from tests.integration.runtime_binary import REPO, go_binary
from tests.integration.test_injector_realnode import AUDIENCE, Injector
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import RealNode
from tests.testenv.workloads import create_service_account, wait_rollout

pytestmark = pytest.mark.integration

# The injector of ``target install`` (URL mode) and its runtime image, set up as there.
injector = injector_bed.injector
runtime_image = injector_bed.runtime_image

FS_GROUP = 2000
APP_USER = 1000
FILES = "/cloudtaser/files"


@dataclass
class Bed:
    namespace: str
    mount: str
    kv: str
    role: str
    values: dict[str, bytes]  # canary name -> value (never printed)

    def path(self, name: str) -> str:
        return f"{self.kv}/data/shop/{name}"

    def sha(self, name: str) -> str:
        return hashlib.sha256(self.values[name]).hexdigest()


@pytest.fixture(scope="module")
def files_image(real_node: RealNode) -> str:
    """busybox plus /filewatch (inotify on a volume, prints ..data swaps)."""
    with tempfile.TemporaryDirectory(prefix="ct-filewatch-") as tmp:
        out = Path(tmp) / "filewatch"
        subprocess.run(
            [go_binary(), "build", "-trimpath", "-o", str(out), "./tools/filewatch"],
            cwd=REPO / "runtime", check=True, capture_output=True,
            env={**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64"},
        )  # fmt: skip
        return real_node.build_image(
            "cloudtaser-test/files:1", binary=out, binary_path="/filewatch", entrypoint=["sh"]
        ).pinned


@pytest.fixture(scope="module")
def bed(
    real_node: RealNode, openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bed]:
    tag = secrets.token_hex(3)
    mount, system_ns = f"k8s-sf-{tag}", f"ct-sys-sf-{tag}"
    namespace = real_node.create_namespace(f"sf-{tag}")
    run = cli(
        connect_args(real_node.cluster, openbao, tmp_path_factory.mktemp("sf"), mount, system_ns)
    )
    assert run.code == 0, run.text
    kv = openbao.enable_kv2(f"kv-sf-{tag}")
    values = {
        "crt": f"-----BEGIN CERTIFICATE-----\nCANARY-CRT-{secrets.token_hex(8)}\n".encode(),
        "key": f"-----BEGIN PRIVATE KEY-----\nCANARY-KEY-{secrets.token_hex(8)}\n".encode(),
        "config": f"db:\n  password: CANARY-CFG-{secrets.token_hex(8)}\n".encode(),
        # every byte value, NUL and invalid UTF-8 included
        "keystore": bytes(range(256)) + secrets.token_bytes(64),
    }
    bed = Bed(namespace, mount, kv, f"shop-{tag}", values)
    policy = f"tenant-sf-{tag}"
    hcl = "".join(
        f'path "{bed.path(p)}" {{\n  capabilities = ["read"]\n}}\n'
        for p in ("tls", "cfg", "missing")
    )
    openbao.api_ok("PUT", f"sys/policies/acl/{policy}", {"policy": hcl})
    _put_tls(openbao, bed)
    openbao.api_ok("POST", bed.path("cfg"), {"data": {
        "config": values["config"].decode(),
        "keystore": base64.b64encode(values["keystore"]).decode(),
    }})  # fmt: skip
    with contextlib.closing(real_node.client()) as client:
        create_service_account(client, namespace, "shop")
    openbao.api_ok("POST", f"auth/{mount}/role/{bed.role}", {
        "bound_service_account_names": ["shop"], "bound_service_account_namespaces": [namespace],
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


def _put_tls(openbao: BaoServer, bed: Bed) -> None:
    openbao.api_ok("POST", bed.path("tls"), {"data": {
        "tls.crt": bed.values["crt"].decode(), "tls.key": bed.values["key"].decode(),
    }})  # fmt: skip


def secret_files(bed: Bed, *, missing: bool = False) -> str:
    """The annotation as protect writes it (compact JSON, sorted keys, the volumes' order)."""
    certs = [
        {"file": "tls.crt", "key": "tls.crt", "path": bed.path("tls")},
        {"file": "private/tls.key", "key": "tls.key", "mode": 0o400, "path": bed.path("tls")},
    ]
    if missing:
        certs.append({"file": "ca.crt", "key": "ca.crt", "path": bed.path("missing")})
    config = [
        {"file": "app.yaml", "key": "config", "path": bed.path("cfg")},
        {"encoding": "base64", "file": "keystore.p12", "key": "keystore", "path": bed.path("cfg")},
        {"file": "extra.txt", "key": "extra", "optional": True, "path": bed.path("cfg")},
    ]
    value = [
        {"defaultMode": 0o440, "files": certs, "volume": "certs"},
        {"defaultMode": 0o644, "files": config, "volume": "config"},
    ]
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# The app: sha256 of what it reads (never the content), then the watcher in the foreground.
APP = (
    "cd /etc/tls && echo app: crt=$(sha256sum tls.crt | cut -c1-64) "
    "key=$(sha256sum private/tls.key | cut -c1-64) "
    "ks=$(sha256sum /etc/app/keystore.p12 | cut -c1-64) "
    "cfg=$(sha256sum /etc/app/app.yaml | cut -c1-64); exec /filewatch /etc/tls"
)
# The sidecar also gets the config as env (cloudtaser.io/secret-paths, unchanged by files).
SIDECAR = (
    "echo sidecar: crt=$(sha256sum /tls/tls.crt | cut -c1-64) "
    "cfg=$(sha256sum /app.yaml | cut -c1-64) "
    'env=$(printf %s "$APP_CONFIG" | sha256sum | cut -c1-64); exec sleep 3600'
)


def _template(
    node: RealNode, bed: Bed, openbao: BaoServer, image: str, files: str
) -> dict[str, Any]:
    rotation = [{"name": "CLOUDTASER_MODE", "value": "resident"},
                {"name": "CLOUDTASER_ROTATION_INTERVAL", "value": "1s"}]  # fmt: skip
    return {
        "metadata": {
            "labels": {"app": "shop", "cloudtaser.io/inject": "true"},
            "annotations": {
                "cloudtaser.io/inject": "true",
                "cloudtaser.io/vault-address": openbao.address,
                "cloudtaser.io/vault-role": bed.role,
                "cloudtaser.io/vault-auth-path": f"auth/{bed.mount}",
                "cloudtaser.io/secret-files": files,
            },
        },
        "spec": {
            "hostNetwork": True,
            "dnsPolicy": "Default",
            "serviceAccountName": "shop",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"fsGroup": FS_GROUP, "runAsUser": APP_USER},
            "volumes": [
                {
                    "name": "certs",
                    "secret": {
                        "secretName": "shop-tls",
                        "defaultMode": 0o440,
                        "items": [
                            {"key": "tls.crt", "path": "tls.crt"},
                            {"key": "tls.key", "path": "private/tls.key", "mode": 0o400},
                        ],
                    },
                },
                {
                    "name": "config",
                    "projected": {
                        "sources": [
                            {
                                "secret": {
                                    "name": "shop-cfg",
                                    "items": [{"key": "config", "path": "app.yaml"}],
                                }
                            },
                            {
                                "secret": {
                                    "name": "shop-ks",
                                    "items": [{"key": "keystore", "path": "keystore.p12"}],
                                }
                            },
                        ]
                    },
                },
            ],
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "command": ["sh", "-c", APP],
                    "env": rotation,
                    "volumeMounts": [
                        {"name": "certs", "mountPath": "/etc/tls"},
                        {"name": "config", "mountPath": "/etc/app", "readOnly": True},
                    ],
                },
                {
                    "name": "sidecar",
                    "image": image,
                    "command": ["sh", "-c", SIDECAR],
                    "volumeMounts": [
                        {"name": "certs", "mountPath": "/tls", "readOnly": True},
                        {"name": "config", "mountPath": "/app.yaml", "subPath": "app.yaml"},
                    ],
                },
            ],
        },
    }


@dataclass
class Shop:
    pod: str
    uid: str


@pytest.fixture(scope="module")
def shop(
    real_node: RealNode,
    openbao: BaoServer,
    bed: Bed,
    injector: Injector,
    files_image: str,
) -> Shop:
    template = _template(real_node, bed, openbao, files_image, secret_files(bed))
    template["metadata"]["annotations"].update({  # a Secret read as env too, as before
        "cloudtaser.io/secret-paths": bed.path("cfg"),
        "cloudtaser.io/env-map": "config=APP_CONFIG",
    })  # fmt: skip
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": bed.namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop"}}, "template": template},
    }  # fmt: skip
    t0 = time.monotonic()
    with contextlib.closing(real_node.client()) as client:
        client.create(codecs.from_dict(manifest))
        wait_rollout(client, Deployment, bed.namespace, "shop", timeout=120)
        (pod,) = client.list(Pod, namespace=bed.namespace, labels={"app": "shop"})
    print(f"\nsecret files: Deployment created -> ready: {time.monotonic() - t0:.2f} s")
    assert pod.metadata is not None
    assert pod.metadata.name is not None
    assert pod.metadata.uid is not None
    return Shop(pod.metadata.name, pod.metadata.uid)


def _line(
    node: RealNode, bed: Bed, pod: str, container: str, prefix: str, timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = node.logs(bed.namespace, pod, container)
        found = [line for line in logs.splitlines() if line.startswith(prefix)]
        if found:
            return found[-1]
        own = [x for x in logs.splitlines() if x.startswith(("cloudtaser-runtime:", "watch:"))]
        assert time.monotonic() < deadline, f"no {prefix!r} line in {container}'s log: {own}"
        time.sleep(0.3)


def _sh(
    node: RealNode, bed: Bed, pod: str, container: str, script: str
) -> subprocess.CompletedProcess[str]:
    return node.exec(bed.namespace, pod, "sh", "-c", script, container=container, check=False)


def _get_pod(node: RealNode, bed: Bed, name: str) -> Pod:
    with contextlib.closing(node.client()) as client:
        return client.get(Pod, name, namespace=bed.namespace)


def test_the_workload_reads_the_openbao_values_as_files_from_memory(
    real_node: RealNode, bed: Bed, shop: Shop
) -> None:
    app = _line(real_node, bed, shop.pod, "app", "app: ")
    assert app == (f"app: crt={bed.sha('crt')} key={bed.sha('key')} ks={bed.sha('keystore')} "
                   f"cfg={bed.sha('config')}")  # fmt: skip
    sidecar = _line(real_node, bed, shop.pod, "sidecar", "sidecar: ")
    # the subPath mount, and the same value through env in the same pod
    config = bed.sha("config")
    assert sidecar == f"sidecar: crt={bed.sha('crt')} cfg={config} env={config}"

    # the kubelet's layout, modes with fsGroup (group-readable), the optional file left out
    got = _sh(real_node, bed, shop.pod, "sidecar",
              "cd /tls && readlink ..data && readlink tls.crt && readlink private && "
              "stat -c '%a %g %n' ..data/tls.crt "
              "..data/private/tls.key && ls -A /tls | tr '\\n' ' '")  # fmt: skip
    lines = got.stdout.splitlines()
    assert got.returncode == 0, got.stderr
    assert lines[0].startswith("..20"), lines
    assert lines[1:3] == ["..data/tls.crt", "..data/private"], lines
    assert lines[3:5] == [
        f"440 {FS_GROUP} ..data/tls.crt",
        f"440 {FS_GROUP} ..data/private/tls.key",
    ]
    assert lines[5].split() == sorted([lines[0], "..data", "private", "tls.crt"]), lines
    extra = _sh(real_node, bed, shop.pod, "app", "test -e /etc/app/extra.txt")
    assert extra.returncode == 1, "an optional file whose field is missing was written"
    # read-only for the apps (a Secret volume always is), even where readOnly was not set
    for container, path in (("sidecar", "/tls"), ("app", "/etc/tls")):
        wrote = _sh(real_node, bed, shop.pod, container, f"touch {path}/x")
        assert wrote.returncode != 0, container
        assert "Read-only" in wrote.stderr, (container, wrote.stderr)

    # the report of cloudtaser-files: names and counts
    pod = _get_pod(real_node, bed, shop.pod)
    assert pod.status is not None
    (files,) = [s for s in pod.status.initContainerStatuses or [] if s.name == "cloudtaser-files"]
    assert files.state is not None
    assert files.state.terminated is not None
    assert files.state.terminated.exitCode == 0
    report = json.loads(files.state.terminated.message or "{}")
    assert report == {
        "formatVersion": 1,
        "files": 4,
        "volumes": [
            {"volume": "certs", "files": 2},
            {"volume": "config", "files": 2, "skipped": 1},
        ],
    }

    # memory only: the kubelet's directory of each volume is a tmpfs mount on the node
    assert pod.metadata is not None
    assert pod.spec is not None
    vols = {v.name: v for v in pod.spec.volumes or []}
    assert vols["certs"].emptyDir is not None
    assert vols["certs"].emptyDir.medium == "Memory"
    assert vols["certs"].secret is None
    mounts = {
        line.split()[1]: line.split()[2] for line in Path("/proc/mounts").read_text().splitlines()
    }
    pod_dir = real_node.base / "kubelet" / "pods" / shop.uid / "volumes" / "kubernetes.io~empty-dir"
    for name in ("certs", "config"):
        assert mounts.get(str(pod_dir / name)) == "tmpfs", (
            name,
            [m for m in mounts if shop.uid in m],
        )
    _assert_no_value_anywhere(real_node, bed, shop.pod)


def test_rotation_rerenders_the_files_in_place_without_a_restart(
    real_node: RealNode, openbao: BaoServer, bed: Bed, shop: Shop
) -> None:
    start = _line(real_node, bed, shop.pod, "app", "watch: start ..data -> ")
    first = start.rsplit(" ", 1)[1]
    assert first.startswith("..20")
    bed.values["crt"] = (
        f"-----BEGIN CERTIFICATE-----\nCANARY-CRT2-{secrets.token_hex(8)}\n".encode()
    )
    _put_tls(openbao, bed)
    t0 = time.monotonic()
    swap = _line(real_node, bed, shop.pod, "app", "watch: ..data -> ", timeout=30)
    print(f"\nsecret files: kv put -> ..data swapped in the pod: {time.monotonic() - t0:.2f} s")
    second = swap.rsplit(" ", 1)[1]
    assert second.startswith("..20")
    assert second != first
    got = _sh(
        real_node,
        bed,
        shop.pod,
        "sidecar",
        f"sha256sum /tls/tls.crt | cut -c1-64; test -e /tls/{first}; echo gone=$?",
    )
    assert got.stdout.split() == [bed.sha("crt"), "gone=1"], got.stdout  # the old directory removed
    pod = _get_pod(real_node, bed, shop.pod)
    assert pod.status is not None
    restarts = {s.name: s.restartCount for s in pod.status.containerStatuses or []}
    assert restarts == {"app": 0, "sidecar": 0}
    wrapper = [line for line in real_node.logs(bed.namespace, shop.pod, "app").splitlines()
               if line.startswith("cloudtaser-runtime:")]  # fmt: skip
    assert any("re-rendered in place" in line for line in wrapper), wrapper
    _assert_no_value_anywhere(real_node, bed, shop.pod)


def test_a_missing_file_path_never_starts_the_app(
    real_node: RealNode,
    openbao: BaoServer,
    bed: Bed,
    injector: Injector,
    files_image: str,
) -> None:
    template = _template(real_node, bed, openbao, files_image, secret_files(bed, missing=True))
    template["metadata"]["labels"]["app"] = "broken"  # not the Deployment's pod
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "broken", "namespace": bed.namespace, **template["metadata"]},
        "spec": {**template["spec"], "restartPolicy": "Never"}}  # fmt: skip
    pod = real_node.run_pod(manifest, until=("Failed",), timeout=60)
    assert pod.status is not None
    (files,) = [s for s in pod.status.initContainerStatuses or [] if s.name == "cloudtaser-files"]
    assert files.state is not None
    assert files.state.terminated is not None
    assert files.state.terminated.exitCode == 4
    report = json.loads(files.state.terminated.message or "{}")
    assert f"file certs/ca.crt (field 'ca.crt' of {bed.path('missing')})" in report["error"], report
    for status in pod.status.containerStatuses or []:
        assert status.state is not None
        assert status.state.running is None
        assert status.lastState is None or status.lastState.terminated is None
        assert status.state.terminated is None, f"{status.name} ran"
    _assert_no_value_anywhere(real_node, bed, "broken")


def _assert_no_value_anywhere(node: RealNode, bed: Bed, pod: str) -> None:
    """No value in any container's log (init containers too), event, pod record, the kubelet's
    log; the text canaries by content, the binary one by its base64 too."""
    texts = [bed.values[n].decode().splitlines()[1] for n in ("crt", "key")]
    texts += [
        bed.values["config"].decode().split()[-1],
        base64.b64encode(bed.values["keystore"]).decode(),
    ]
    record = _get_pod(node, bed, pod)
    assert record.spec is not None
    names = [c.name for c in [*(record.spec.initContainers or []), *record.spec.containers]]
    assert "cloudtaser-files" in names, names  # so the log check below covers it
    logs = [
        node.kubectl("-n", bed.namespace, "logs", pod, "-c", n, check=False).stdout for n in names
    ]
    assert any("cloudtaser-runtime:" in text for text in logs), (
        "no wrapper line: the check would prove nothing"
    )
    events = node.kubectl("-n", bed.namespace, "get", "events", "-o", "json").stdout
    pods = node.kubectl("-n", bed.namespace, "get", "pods", "-o", "json").stdout
    kubelet = node.processes["kubelet"].tail(3000)
    for canary in texts:
        for where, text in (
            ("events", events),
            ("pods", pods),
            ("kubelet", kubelet),
            *zip(names, logs, strict=True),
        ):
            assert canary not in text, f"a value in {where}"
