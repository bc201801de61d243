"""Issue 29 end to end on the real node, through the real CLI: a workload that reads a TLS key
pair and a binary keystore from a Secret volume (``items``, ``defaultMode``, an item ``mode``,
a ``subPath`` mount in a second container) is discovered, applied, populated (the keystore as
base64), verified, protected (the injector serves the files from OpenBao, the app reads the
vault's values), finalized (the volume becomes a memory volume, the template no longer names the
Secret), ``--delete-secrets`` deletes the Secret (proven to exist first), the pod restarts fine
without it, and unprotect (once the Secret is recreated, as its refusal says) restores the
volume: the app reads the Kubernetes Secret again.

The app prints sha256 sums of what it reads, never a value; the values are canaries that differ
between the Kubernetes Secret and the vault, which is how the test tells where a file came from.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Secret

from cloudtaser import contract
from cloudtaser import plan as planlib
from tests.integration import test_lifecycle_realnode as lifecycle
from tests.integration.test_lifecycle_realnode import (
    AUDIENCE,
    Site,
    _cloudtaser,
    _pods,
    _wait_ready,
)
from tests.testenv.workloads import create_service_account

pytestmark = pytest.mark.integration

# The connected cluster, the injector of ``target install`` and busybox, set up as there.
site = lifecycle.site
rt_image = lifecycle.rt_image
injector = lifecycle.injector
app_image = lifecycle.app_image

APP = (
    'echo "files: crt=$(sha256sum /etc/tls/tls.crt | cut -c1-64)'
    " key=$(sha256sum /etc/tls/private/tls.key | cut -c1-64)"
    ' ks=$(sha256sum /etc/tls/keystore.p12 | cut -c1-64)"; exec sleep 3600'
)
SIDECAR = 'echo "sidecar: crt=$(sha256sum /tls.crt | cut -c1-64)"; exec sleep 3600'


@dataclass
class Values:
    """One side's values (the Kubernetes Secret's, or the vault's); never printed."""

    crt: bytes
    key: bytes
    keystore: bytes

    @classmethod
    def new(cls, side: str) -> Values:
        tag = secrets.token_hex(6)
        return cls(
            crt=f"-----BEGIN CERTIFICATE-----\n{side}-CRT-{tag}\n".encode(),
            key=f"-----BEGIN PRIVATE KEY-----\n{side}-KEY-{tag}\n".encode(),
            # every byte value, NUL and invalid UTF-8 included: discover marks it base64
            keystore=bytes(range(256)) + f"{side}-KS-{tag}".encode(),
        )

    def data(self) -> dict[str, str]:
        return {
            "tls.crt": base64.b64encode(self.crt).decode(),
            "tls.key": base64.b64encode(self.key).decode(),
            "keystore.p12": base64.b64encode(self.keystore).decode(),
        }

    def line(self) -> str:
        return f"files: crt={_sha(self.crt)} key={_sha(self.key)} ks={_sha(self.keystore)}"

    def canaries(self) -> list[str]:
        return [
            self.crt.decode().split()[-1],
            self.key.decode().split()[-1],
            base64.b64encode(self.keystore).decode(),
        ]


def _sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _secret(namespace: str, values: Values) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tls", "namespace": namespace},
        "data": values.data(),
    }


def _deployment(namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "Recreate"},  # hostNetwork: old and new pod never overlap
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "serviceAccountName": "app",
                    "terminationGracePeriodSeconds": 1,
                    "volumes": [
                        {
                            "name": "certs",
                            "secret": {
                                "secretName": "tls",
                                "defaultMode": 0o440,
                                "items": [
                                    {"key": "tls.crt", "path": "tls.crt"},
                                    {"key": "tls.key", "path": "private/tls.key", "mode": 0o400},
                                    {"key": "keystore.p12", "path": "keystore.p12"},
                                ],
                            },
                        }
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "command": ["sh", "-c", APP],
                            "volumeMounts": [
                                {"name": "certs", "mountPath": "/etc/tls", "readOnly": True}
                            ],
                        },
                        {
                            "name": "sidecar",
                            "image": image,
                            "command": ["sh", "-c", SIDECAR],
                            "volumeMounts": [
                                {"name": "certs", "mountPath": "/tls.crt", "subPath": "tls.crt"}
                            ],
                        },
                    ],
                },
            },
        },
    }


def _printed(site: Site, namespace: str, container: str, prefix: str, timeout: float = 90) -> str:
    """The last ``prefix`` line the newest pod's ``container`` printed."""
    deadline = time.monotonic() + timeout
    while True:
        pods = sorted(
            _pods(site, namespace, "web"), key=lambda p: str(p.metadata.creationTimestamp)
        )
        if pods:
            logs = site.node.logs(namespace, str(pods[-1].metadata.name), container)
            found = [line for line in logs.splitlines() if line.startswith(prefix)]
            if found:
                return found[-1]
        assert time.monotonic() < deadline, f"{container} printed no {prefix!r} line"
        time.sleep(0.5)


def _template(site: Site, namespace: str) -> dict[str, Any]:
    with contextlib.closing(site.node.client()) as client:
        obj = client.get(Deployment, "web", namespace=namespace).to_dict()
    return dict(obj["spec"]["template"])


def _secret_exists(site: Site, namespace: str) -> bool:
    with contextlib.closing(site.node.client()) as client:
        return any(s.metadata.name == "tls" for s in client.list(Secret, namespace=namespace))


def test_a_secret_volume_moves_to_openbao_and_its_secret_is_deleted_then_restored(
    site: Site, app_image: str, injector: str
) -> None:
    node, tag = site.node, secrets.token_hex(3)
    namespace = node.create_namespace(f"sf-{tag}")
    k8s, vault = Values.new("K8S"), Values.new("BAO")
    with contextlib.closing(node.client()) as client:
        create_service_account(client, namespace, "app")
        client.create(codecs.from_dict(_secret(namespace, k8s)))
        client.create(codecs.from_dict(_deployment(namespace, app_image)))
    _wait_ready(site, namespace, "web")
    assert _printed(site, namespace, "app", "files: ") == k8s.line()  # the Kubernetes Secret
    outputs: list[str] = []

    def cloudtaser(*args: str, env: dict[str, str] | None = None) -> Any:
        result = _cloudtaser(*args, env=env)
        outputs.append(result.stdout + result.stderr)
        return result

    def target(verb: str, *args: str) -> Any:
        return cloudtaser(
            "target", verb, "--plan", str(plan), "--kubeconfig", site.kubeconfig,
            "--poll-interval", "300ms", "--timeout", "180s", *args,
        )  # fmt: skip

    # 1. discover: the volume is migrated data, the keystore marked binary, no value read out
    plan = site.tmp / f"plan-sf-{tag}.yaml"
    discover = cloudtaser(
        "target", "discover", "--kubeconfig", site.kubeconfig, "-n", namespace,
        "--name", f"sf-{tag}", "--auth-mount", site.mount, "--kv-mount", site.kv,
        "--output-plan", str(plan),
    )  # fmt: skip
    assert discover.returncode == 0, discover.stderr
    ((_t, workload),) = list(planlib.load(plan).iter_workloads())
    assert workload.effective_status == "pending", workload.reason
    (entry,) = workload.secret_files
    assert entry.vault_path == f"{site.kv}/data/{namespace}/tls"
    assert [(f.file, f.encoding) for f in entry.files] == [
        ("tls.crt", None),
        ("private/tls.key", None),
        ("keystore.p12", "base64"),
    ]

    # 2-5. apply, put the vault's values (the keystore as base64 text), verify
    bao = {"BAO_ADDR": site.openbao.address}
    apply = cloudtaser(
        "source", "apply-plan", str(plan), "--token-file", str(site.token),
        "--audience", AUDIENCE, env=bao,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stdout + apply.stderr
    keystore = site.tmp / f"keystore-{tag}.b64"
    keystore.write_text(base64.b64encode(vault.keystore).decode())
    crt, key = site.tmp / f"crt-{tag}", site.tmp / f"key-{tag}"
    crt.write_bytes(vault.crt)
    key.write_bytes(vault.key)
    site.openbao.bao(
        "kv", "put", f"-mount={site.kv}", f"{namespace}/tls",
        f"tls.crt=@{crt}", f"tls.key=@{key}", f"keystore.p12=@{keystore}",
    )  # fmt: skip
    report = f"{plan}.verified.json"
    verify = cloudtaser(
        "source", "verify-plan", str(plan), "--token-file", str(site.token), "--attest", report,
        env=bao,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # 6. protect: one rollout, the files now come from OpenBao, byte for byte
    protect = target("protect", "--vault-address", site.openbao.address, "--yes")
    assert protect.returncode == 0, protect.stdout + protect.stderr
    assert "injection proven" in (
        planlib.load(plan).tenants[0].workloads[0].history[-1].reason or ""
    )
    assert _printed(site, namespace, "app", "files: ") == vault.line()
    assert _printed(site, namespace, "sidecar", "sidecar: ") == f"sidecar: crt={_sha(vault.crt)}"

    # 7. finalize: the template names no Secret any more; the pod restarts and reads OpenBao
    finalize = target("finalize", "--yes")
    assert finalize.returncode == 0, finalize.stdout + finalize.stderr
    volume = _template(site, namespace)["spec"]["volumes"][0]
    assert volume == {"name": "certs", "emptyDir": {"medium": "Memory"}}
    assert _printed(site, namespace, "app", "files: ") == vault.line()

    # 8. --delete-secrets: the Secret exists (so the check can fail), then it is gone
    assert _secret_exists(site, namespace)
    delete = target("finalize", "--yes", "--delete-secrets", "--require-verified", report)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert not _secret_exists(site, namespace)
    with contextlib.closing(node.client()) as client:
        client.patch(
            Deployment,
            "web",
            {"spec": {"template": {"metadata": {"annotations": {"test/restart": tag}}}}},
            namespace=namespace,
        )
    _wait_ready(site, namespace, "web")
    pods = _pods(site, namespace, "web")
    assert [p.metadata.annotations.get("test/restart") for p in pods] == [tag]
    assert _printed(site, namespace, "app", "files: ") == vault.line()  # restarts fine

    # 9. unprotect: refused while the Secret is gone; once recreated, the volume comes back
    refused = target("unprotect", "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Recreate the Secret(s) from the vault first" in refused.stdout + refused.stderr
    with contextlib.closing(node.client()) as client:
        client.create(codecs.from_dict(_secret(namespace, k8s)))
    undo = target("unprotect", "--yes")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    template = _template(site, namespace)
    assert (
        template["spec"]["volumes"]
        == _deployment(namespace, app_image)["spec"]["template"]["spec"]["volumes"]
    )
    assert contract.SECRET_FILES not in (template["metadata"].get("annotations") or {})
    assert _printed(site, namespace, "app", "files: ") == k8s.line()

    for text in outputs:
        for canary in [*k8s.canaries(), *vault.canaries()]:
            assert canary not in text, "a value reached cloudtaser's output"
    node.delete_namespace(namespace)
