"""Issue 15 on the real node: the injector really wraps the pods, protect proves it, finalize
removes the Secret references while the app keeps getting its values from OpenBao, Secrets are
deleted only when nothing uses them, unprotect restores, audit agrees with the cluster.

Everything goes through the real CLI (``python -m cloudtaser``): ``target connect``,
``discover``, ``source apply-plan``, ``bao kv put``, ``target install`` (the injector from the
runtime image built from source, URL mode: the API server calls https://127.0.0.1:PORT),
``protect``, ``finalize``, ``unprotect``, ``audit``. The sample app is busybox printing
``DB_PASSWORD``: before protect it prints the Kubernetes Secret's canary, afterwards the vault's
(a different canary), which is how a test tells where a value came from.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Pod, Secret

from cloudtaser import contract
from cloudtaser import plan as planlib
from tests.integration.connect_helpers import cli, connect_args, token_file
from tests.integration.test_runtime_realnode import BUSYBOX
from tests.integration.test_runtime_realnode import runtime_image as _runtime_image
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import Image, RealNode
from tests.testenv.workloads import create_secret, create_service_account

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AUDIENCE = "openbao"
SCRIPT = 'echo "DB_PASSWORD=$DB_PASSWORD"; exec sleep 3600'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cloudtaser(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "NO_COLOR": "1",
            **(env or {}),
        },
    )


@dataclass
class Site:
    node: RealNode
    openbao: BaoServer
    mount: str
    kv: str
    tmp: Path
    token: Path

    @property
    def kubeconfig(self) -> str:
        return str(self.node.cluster.kubeconfig)


rt_image = pytest.fixture(scope="module", name="rt_image")(_runtime_image.__wrapped__)


@pytest.fixture(scope="module")
def app_image(real_node: RealNode) -> str:
    real_node.build_image("cloudtaser-test/busybox:1", cmd=["sh"])
    return BUSYBOX


@pytest.fixture(scope="module")
def site(
    real_node: RealNode, openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """The cluster connected to OpenBao (one auth mount) and a KV v2 mount for the tenants."""
    tag = secrets.token_hex(3)
    tmp = tmp_path_factory.mktemp("lifecycle-rn")
    mount, system_ns = f"k8s-lc-{tag}", f"ct-sys-lc-{tag}"
    run = cli(connect_args(real_node.cluster, openbao, tmp, mount, system_ns))
    assert run.code == 0, run.text
    kv = openbao.enable_kv2(f"kv-lc-{tag}")
    try:
        yield Site(real_node, openbao, mount, kv, tmp, token_file(openbao, tmp))
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        openbao.disable_mount(kv)
        if real_node.running:
            real_node.delete_namespace(system_ns)


@pytest.fixture(scope="module")
def injector(site: Site, rt_image: Image) -> Iterator[str]:
    """``cloudtaser target install`` in URL mode on the real node; uninstalled afterwards."""
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
        # the tests leave protected workloads behind: uninstall lists them and goes on
        _cloudtaser(
            "target", "uninstall", "--kubeconfig", site.kubeconfig, "--ignore-protected-workloads"
        )


@dataclass
class Tenant:
    namespace: str
    plan: Path
    k8s_canary: str
    vault_canary: str


def _tenant(site: Site, busybox_ref: str, names: list[str], *, min_ready: int = 0) -> Tenant:
    """A namespace with ServiceAccount ``app``, Secret ``db`` (the Kubernetes canary) and a
    Deployment per name printing DB_PASSWORD; discovered, applied, populated with the vault
    canary and verified — steps 1-5 through the real CLI."""
    tag = secrets.token_hex(3)
    namespace = site.node.create_namespace(f"lc-{tag}")
    k8s_canary, vault_canary = f"K8S-{secrets.token_hex(6)}", f"BAO-{secrets.token_hex(6)}"
    with contextlib.closing(site.node.client()) as client:
        create_service_account(client, namespace, "app")
        create_secret(client, namespace, "db", {"password": k8s_canary, "username": "app"})
        for name in names:
            client.create(codecs.from_dict(_deployment(namespace, name, busybox_ref, min_ready)))
    for name in names:
        _wait_ready(site, namespace, name)
    plan = site.tmp / f"plan-{tag}.yaml"
    discover = _cloudtaser(
        "target", "discover", "--kubeconfig", site.kubeconfig, "-n", namespace,
        "--name", f"lc-{tag}", "--auth-mount", site.mount, "--kv-mount", site.kv,
        "--output-plan", str(plan),
    )  # fmt: skip
    assert discover.returncode == 0, discover.stderr
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
        "source", "verify-plan", str(plan), "--token-file", str(site.token),
        "--attest", _report(plan), env=vault,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return Tenant(namespace, plan, k8s_canary, vault_canary)


def _report(plan: Path) -> str:
    """The verify-plan --attest report of ``plan`` (finalize --delete-secrets needs it)."""
    return f"{plan}.verified.json"


def _deployment(namespace: str, name: str, image: str, min_ready: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "Recreate"},  # hostNetwork: old and new pod never overlap
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "serviceAccountName": "app",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "command": ["sh", "-c", SCRIPT],
                            "env": [
                                {
                                    "name": "DB_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "db", "key": "password"}
                                    },
                                },
                                {
                                    "name": "DB_USER",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "db", "key": "username"}
                                    },
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }


def _wait_ready(site: Site, namespace: str, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with contextlib.closing(site.node.client()) as client:
        while True:
            obj = client.get(Deployment, name, namespace=namespace)
            status = obj.status
            # the controller has seen the newest template (right after a patch the status
            # still describes the previous rollout), and its one pod is the new one, ready
            if (
                status
                and (status.observedGeneration or 0) >= (obj.metadata.generation or 0)
                and (status.readyReplicas or 0) >= 1
                and status.updatedReplicas == 1
                and status.replicas == 1
            ):
                return
            assert time.monotonic() < deadline, site.node.diagnostics()
            time.sleep(0.5)


def _pods(site: Site, namespace: str, name: str) -> list[Any]:
    with contextlib.closing(site.node.client()) as client:
        return [
            p
            for p in client.list(Pod, namespace=namespace, labels={"app": name})
            if p.metadata and not p.metadata.deletionTimestamp
        ]


def _printed(site: Site, namespace: str, name: str, timeout: float = 60) -> str:
    """What the newest pod of ``name`` printed as DB_PASSWORD."""
    deadline = time.monotonic() + timeout
    while True:
        pods = sorted(_pods(site, namespace, name), key=lambda p: str(p.metadata.creationTimestamp))
        if pods:
            logs = site.node.logs(namespace, str(pods[-1].metadata.name), "app")
            for line in logs.splitlines():
                if line.startswith("DB_PASSWORD="):
                    return line.removeprefix("DB_PASSWORD=")
        assert time.monotonic() < deadline, "the app printed nothing"
        time.sleep(0.5)


def _replicasets(site: Site, namespace: str) -> int:
    with contextlib.closing(site.node.client()) as client:
        return len(list(client.list(ReplicaSet, namespace=namespace)))


def _target(site: Site, verb: str, tenant: Tenant, *args: str) -> Any:
    result = _cloudtaser(
        "target", verb, "--plan", str(tenant.plan), "--kubeconfig", site.kubeconfig,
        "--poll-interval", "300ms", "--timeout", "120s", *args,
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert tenant.k8s_canary not in text
    assert tenant.vault_canary not in text
    return result


def _workload(tenant: Tenant, name: str = "web") -> planlib.Workload:
    return next(w for _t, w in planlib.load(tenant.plan).iter_workloads() if w.name == name)


def _app_env(site: Site, tenant: Tenant, name: str = "web") -> list[dict[str, Any]]:
    with contextlib.closing(site.node.client()) as client:
        obj = client.get(Deployment, name, namespace=tenant.namespace).to_dict()
    return list(obj["spec"]["template"]["spec"]["containers"][0].get("env") or [])


# -- without an injector --------------------------------------------------------------------------


def test_pods_not_injected_are_not_recorded_migrated(site: Site, app_image: str) -> None:
    tenant = _tenant(site, app_image, ["web"])
    assert _printed(site, tenant.namespace, "web") == tenant.k8s_canary

    result = _target(site, "protect", tenant, "--vault-address", site.openbao.address, "--yes")

    # no injector: the admission check refuses before any patch (issue 34)
    assert result.returncode == 1, result.stdout + result.stderr
    workload = _workload(tenant)
    assert workload.effective_status == "pending"
    assert "the injector is not installed" in (workload.last_error or "")
    # the pods run exactly as before
    assert _printed(site, tenant.namespace, "web") == tenant.k8s_canary


def test_reroll_injects_and_proves_a_workload_protected_before_the_injector(
    site: Site, app_image: str, request: pytest.FixtureRequest
) -> None:
    """Issue 34's dead end: protected before the injector existed, a workload is ``migrated``
    but its pods run as before, and plain protect had nothing to do. ``--reroll`` restarts it
    (one rollout) and proves the new pods injected."""
    webhook = site.node.kubectl(
        "get", "mutatingwebhookconfiguration", "cloudtaser-injector", "--ignore-not-found",
        "-o", "name",
    )  # fmt: skip
    assert webhook.stdout.strip() == "", "this test must run before the injector is installed"
    tenant = _tenant(site, app_image, ["web"])
    vault = ("--vault-address", site.openbao.address, "--yes")
    first = _target(site, "protect", tenant, *vault, "--no-verify-injection")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _workload(tenant).effective_status == "migrated"
    assert _printed(site, tenant.namespace, "web") == tenant.k8s_canary  # not injected

    request.getfixturevalue("injector")
    before = _replicasets(site, tenant.namespace)
    named = _target(site, "protect", tenant, *vault, "--workload", "Deployment/web")
    # named, but nothing protect itself can do: exit 1 naming the way out, nothing restarted
    assert named.returncode == 1, named.stdout + named.stderr
    assert "protect --reroll" in named.stdout + named.stderr
    assert _replicasets(site, tenant.namespace) == before

    reroll = _target(site, "protect", tenant, *vault, "--reroll")

    assert reroll.returncode == 0, reroll.stdout + reroll.stderr
    assert _replicasets(site, tenant.namespace) == before + 1  # exactly one rollout
    workload = _workload(tenant)
    assert workload.effective_status == "migrated"
    reason = workload.history[-1].reason or ""
    assert "re-rolled" in reason
    assert "injection proven on 1 pod(s)" in reason
    pod = _pods(site, tenant.namespace, "web")[0]
    assert pod.spec.initContainers[0].name == contract.INIT_CONTAINER
    assert _printed(site, tenant.namespace, "web") == tenant.vault_canary
    # proven now: a second --reroll leaves it alone
    again = _target(site, "protect", tenant, *vault, "--reroll")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not re-rolled" in again.stdout + again.stderr
    assert _replicasets(site, tenant.namespace) == before + 1


# -- with the injector -----------------------------------------------------------------------------


def test_protect_proves_injection_and_finalize_keeps_the_app_on_vault_values(
    site: Site,
    injector: str,
    app_image: str,
) -> None:
    tenant = _tenant(site, app_image, ["web"])
    protect = _target(site, "protect", tenant, "--vault-address", site.openbao.address, "--yes")
    assert protect.returncode == 0, protect.stdout + protect.stderr
    workload = _workload(tenant)
    assert workload.effective_status == "migrated"
    assert "injection proven on 1 pod(s)" in (workload.history[-1].reason or "")
    pod = _pods(site, tenant.namespace, "web")[0]
    assert pod.spec.containers[0].command[0] == contract.WRAPPER_PATH
    assert pod.spec.initContainers[0].name == contract.INIT_CONTAINER
    assert _printed(site, tenant.namespace, "web") == tenant.vault_canary

    before = _replicasets(site, tenant.namespace)
    finalize = _target(site, "finalize", tenant, "--yes")

    assert finalize.returncode == 0, finalize.stdout + finalize.stderr
    assert _app_env(site, tenant) == []  # exactly the two mapped references went
    assert _replicasets(site, tenant.namespace) == before + 1
    assert _workload(tenant).finalized_at is not None
    # the new pod still gets its value, now only from OpenBao
    assert _printed(site, tenant.namespace, "web") == tenant.vault_canary

    # unprotect puts the references back (and removes the annotations): one rollout
    undo = _target(site, "unprotect", tenant, "--yes")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert {e["name"] for e in _app_env(site, tenant)} == {"DB_PASSWORD", "DB_USER"}
    assert _workload(tenant).effective_status == "pending"
    assert _printed(site, tenant.namespace, "web") == tenant.k8s_canary


def test_a_pod_the_injector_would_deny_is_refused_before_any_patch_with_the_injectors_reason(
    site: Site, injector: str, app_image: str
) -> None:
    """The injector's denial comes from protect's admission check (a dry-run pod of the
    template), before any patch: the workload keeps running as it was (issue 34; before, the
    patch went out and the rollout stalled until the denial was diagnosed)."""
    tenant = _tenant(site, app_image, ["web"])
    # the container sets CLOUDTASER_VAULT_ADDR, which the injector owns: denied (env-conflict)
    with contextlib.closing(site.node.client()) as client:
        client.patch(
            Deployment,
            "web",
            {"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "CLOUDTASER_VAULT_ADDR", "value": "http://elsewhere"}]}
            ]}}}},
            namespace=tenant.namespace,
        )  # fmt: skip
    _wait_ready(site, tenant.namespace, "web")
    with contextlib.closing(site.node.client()) as client:
        before = client.get(Deployment, "web", namespace=tenant.namespace).to_dict()
    assert before["metadata"]["generation"]  # so the check below can fail

    result = _cloudtaser(
        "target", "protect", "--plan", str(tenant.plan), "--kubeconfig", site.kubeconfig,
        "--vault-address", site.openbao.address, "--yes", "--timeout", "300s",
        "--poll-interval", "500ms",
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "admission check failed, nothing was changed" in output
    error = _workload(tenant).last_error or ""
    assert _workload(tenant).effective_status == "pending"
    assert "the injector denied the pods" in error
    assert "CLOUDTASER_VAULT_ADDR" in error
    with contextlib.closing(site.node.client()) as client:
        after = client.get(Deployment, "web", namespace=tenant.namespace).to_dict()
    # no patch: the same generation and template (status updates may still move the
    # resourceVersion)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]


def test_delete_secrets_keeps_a_secret_still_used_and_names_its_user(
    site: Site,
    injector: str,
    app_image: str,
) -> None:
    tenant = _tenant(site, app_image, ["web"])
    with contextlib.closing(site.node.client()) as client:
        create_secret(client, tenant.namespace, "shared", {"k": tenant.k8s_canary})
        # a bare pod still mounts Secret db: it must be kept
        client.create(
            codecs.from_dict(
                site.node.pod_manifest(
                    "bare", app_image, ["sleep", "3600"], namespace=tenant.namespace,
                    volumes=[{"name": "v", "secret": {"secretName": "db"}}],
                )
            )
        )  # fmt: skip
    assert (
        _target(
            site, "protect", tenant, "--vault-address", site.openbao.address, "--yes"
        ).returncode
        == 0
    )

    verified = ("--require-verified", _report(tenant.plan))
    result = _target(site, "finalize", tenant, "--yes", "--delete-secrets", *verified)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "KEPT" in result.stdout
    assert "Pod bare: volume" in result.stdout
    with contextlib.closing(site.node.client()) as client:
        assert client.get(Secret, "db", namespace=tenant.namespace) is not None
        # the bare pod goes: now nothing uses db and it is deleted
        client.delete(Pod, "bare", namespace=tenant.namespace, grace_period=0)
    deadline = time.monotonic() + 60
    while any(p.metadata.name == "bare" for p in _pods_all(site, tenant.namespace)):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    again = _target(site, "finalize", tenant, "--yes", "--delete-secrets", *verified)
    assert again.returncode == 0, again.stdout + again.stderr
    shown = site.node.kubectl("get", "secrets", "-n", tenant.namespace, "-o", "name").stdout
    assert "secret/db" not in shown
    assert "secret/shared" in shown
    assert any("deleted Secret db" in (h.reason or "") for h in _workload(tenant).history)
    assert _printed(site, tenant.namespace, "web") == tenant.vault_canary


def _pods_all(site: Site, namespace: str) -> list[Any]:
    with contextlib.closing(site.node.client()) as client:
        return list(client.list(Pod, namespace=namespace))


def test_a_sigkilled_finalize_resumes_without_a_second_rollout(
    site: Site,
    injector: str,
    app_image: str,
) -> None:
    tenant = _tenant(site, app_image, ["web"], min_ready=5)
    assert (
        _target(
            site, "protect", tenant, "--vault-address", site.openbao.address, "--yes"
        ).returncode
        == 0
    )
    before = _replicasets(site, tenant.namespace)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudtaser", "target", "finalize", "--plan", str(tenant.plan),
         "--kubeconfig", site.kubeconfig, "--yes", "--poll-interval", "300ms"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while _app_env(site, tenant):
        assert time.monotonic() < deadline, "finalize never patched"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _workload(tenant).finalized_at is None, "the kill came too late to test a resume"

    result = _target(site, "finalize", tenant, "--yes")

    assert result.returncode == 0, result.stdout + result.stderr
    assert _replicasets(site, tenant.namespace) == before + 1
    assert _workload(tenant).finalized_at is not None
    assert _printed(site, tenant.namespace, "web") == tenant.vault_canary


def test_audit_json_and_html_agree_with_the_cluster(
    site: Site,
    injector: str,
    app_image: str,
    tmp_path: Path,
) -> None:
    from tests.integration.test_audit_browser import check_in_browser

    tenant = _tenant(site, app_image, ["web", "legacy"])
    plan = planlib.load(tenant.plan)
    plan.tenants[0].workloads = [w for w in plan.tenants[0].workloads if w.name == "web"]
    planlib.save(plan, tenant.plan)
    assert (
        _target(
            site, "protect", tenant, "--vault-address", site.openbao.address, "--yes"
        ).returncode
        == 0
    )
    assert _target(site, "finalize", tenant, "--yes").returncode == 0

    out = _cloudtaser(
        "target",
        "audit",
        "--kubeconfig",
        site.kubeconfig,
        "-n",
        tenant.namespace,
        "--output",
        "json",
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    summary = data["namespaces"][0]["summary"]
    assert summary["workloads"] == 2
    assert summary["readingSecretsAsEnv"] == 1  # legacy
    assert summary["protected"] == 1
    assert summary["finalized"] == 1
    assert summary["podsNotInjected"] == 0
    users = {s["name"]: s["users"] for s in data["namespaces"][0]["secrets"]}
    assert {u["name"] for u in users["db"]} >= {"legacy"}
    assert not any(u["name"] == "web" for u in users["db"])

    page = tmp_path / "audit.html"
    html = _cloudtaser(
        "target", "audit", "--kubeconfig", site.kubeconfig, "-n", tenant.namespace,
        "--output", "html", "--report", str(page),
    )  # fmt: skip
    assert html.returncode == 0, html.stderr
    check_in_browser(page, data, tmp_path)
