"""Issues 28 and 30 on the real node: the Secret references that something besides the
wrapped process reads, and what finalize does with them now that the runtime serves them.

An exec probe runs with the container spec's env, the kubelet expands ``$(VAR)`` in args from
the container spec's env, and init containers are the pod's own processes: before issue 30
finalize had to keep their references. The runtime now wraps init containers, routes exec
probes that name a migrated variable through ``cloudtaser-runtime exec`` and expands
``$(VAR)`` itself (docs/injector.md), so finalize removes those references too, proven on the
live pods (``ProvenCoverage``), and ``--delete-secrets`` may then delete the Secret.

Two Deployments, protected through the real injector and finalized through the real CLI:

* ``probed``: an init container and exec readiness / liveness probes that test DB_PASSWORD
  against the canaries (either one passes: the Kubernetes Secret's before protect; after
  finalize no reference is left, so only the vault's value served by the runtime can pass);
* ``expanded``: ``args: ["$(DB_PASSWORD)"]``, printed by the app next to the value the wrapper
  gives it (the vault's canary).

A third, ``scripted``, runs its probe from a script under a volume mount: every variable may be
read by it, the runtime cannot tell, nothing can be removed, and finalize says so and leaves it
alone.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Secret

from cloudtaser import plan as planlib
from cloudtaser.plan import EnvUse
from tests.integration.test_lifecycle_realnode import (
    Site,
    Tenant,
    _cloudtaser,
    _pods,
    _replicasets,
    _target,
    _wait_ready,
    _workload,
    app_image,
    injector,
    rt_image,
    site,
)
from tests.testenv.workloads import create_secret, create_service_account

pytestmark = pytest.mark.integration

# re-exported module fixtures of the lifecycle test (same site, same injector set-up)
__all__ = ["app_image", "injector", "rt_image", "site"]

APP = 'echo "ARG=$1"; echo "DB_PASSWORD=$DB_PASSWORD"; exec sleep 3600'


def _secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": "db", "key": key}}}


def _deployment(
    namespace: str, name: str, app: dict[str, Any], pod: dict[str, Any] | None = None
) -> dict[str, Any]:
    container = {
        "name": "app",
        "command": ["sh", "-c", APP, "sh"],
        "env": [_secret_env("DB_PASSWORD", "password"), _secret_env("DB_USER", "username")],
        **app,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "Recreate"},  # hostNetwork: old and new pod never overlap
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "serviceAccountName": "app",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container],
                    **(pod or {}),
                },
            },
        },
    }


def _manifest(
    name: str, namespace: str, image: str, k8s_canary: str, vault_canary: str
) -> dict[str, Any]:
    """``probed``: exec readiness / liveness probes and an init container that pass only with
    the Kubernetes Secret's value; ``expanded``: ``$(DB_PASSWORD)`` in args; ``scripted``: a
    readiness probe running a file under a volume mount."""
    either = f'test "$DB_PASSWORD" = "{k8s_canary}" -o "$DB_PASSWORD" = "{vault_canary}"'
    check = {
        "exec": {"command": ["sh", "-c", either]},
        "periodSeconds": 1,
        "failureThreshold": 3,
    }
    if name == "probed":
        init = {
            "name": "wait-db",
            "image": image,
            "command": ["sh", "-c", either],
            "env": [_secret_env("DB_PASSWORD", "password")],
        }
        app = {
            "image": image,
            "readinessProbe": check,
            "livenessProbe": {**check, "initialDelaySeconds": 2},
        }
        return _deployment(namespace, name, app, {"initContainers": [init]})
    if name == "expanded":
        return _deployment(namespace, name, {"image": image, "args": ["$(DB_PASSWORD)"]})
    app = {
        "image": image,
        "readinessProbe": {"exec": {"command": ["sh", "/health/ready"]}, "periodSeconds": 1},
        "volumeMounts": [{"name": "health", "mountPath": "/health"}],
        "lifecycle": {
            "postStart": {"exec": {"command": ["sh", "-c", "echo 'exit 0' > /health/ready"]}}
        },
    }
    return _deployment(namespace, name, app, {"volumes": [{"name": "health", "emptyDir": {}}]})


def _tenant(site: Site, image: str, names: list[str]) -> Tenant:
    """Namespace, ServiceAccount ``app``, Secret ``db`` (the Kubernetes canary) and the named
    Deployments Ready; discovered, applied, the vault canary put and verified (real CLI)."""
    tag = secrets.token_hex(3)
    namespace = site.node.create_namespace(f"cons-{tag}")
    k8s_canary, vault_canary = f"K8S-{secrets.token_hex(6)}", f"BAO-{secrets.token_hex(6)}"
    with contextlib.closing(site.node.client()) as client:
        create_service_account(client, namespace, "app")
        create_secret(client, namespace, "db", {"password": k8s_canary, "username": "app"})
        for name in names:
            client.create(
                codecs.from_dict(_manifest(name, namespace, image, k8s_canary, vault_canary))
            )
    for name in names:
        _wait_ready(site, namespace, name)
    plan = site.tmp / f"plan-cons-{tag}.yaml"
    discover = _cloudtaser(
        "target", "discover", "--kubeconfig", site.kubeconfig, "-n", namespace,
        "--name", f"cons-{tag}", "--auth-mount", site.mount, "--kv-mount", site.kv,
        "--output-plan", str(plan),
    )  # fmt: skip
    assert discover.returncode == 0, discover.stderr
    vault = {"BAO_ADDR": site.openbao.address}
    apply = _cloudtaser(
        "source", "apply-plan", str(plan), "--token-file", str(site.token), "--audience", "openbao",
        env=vault,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stdout + apply.stderr
    for path in {s.vault_path for _t, w in planlib.load(plan).iter_workloads() for s in w.secrets}:
        mount, rest = planlib.split_vault_path(path)
        site.openbao.bao(
            "kv", "put", f"-mount={mount}", rest, f"password={vault_canary}", "username=app"
        )
    verify = _cloudtaser(
        "source", "verify-plan", str(plan), "--token-file", str(site.token),
        "--attest", f"{plan}.verified.json", env=vault,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return Tenant(namespace, plan, k8s_canary, vault_canary)


def _template(site: Site, tenant: Tenant, name: str) -> dict[str, Any]:
    with contextlib.closing(site.node.client()) as client:
        obj = client.get(Deployment, name, namespace=tenant.namespace).to_dict()
    return dict(obj["spec"]["template"]["spec"])


def _env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env") or []]


def _newest_log(site: Site, tenant: Tenant, name: str, prefix: str, timeout: float = 60) -> str:
    """What the newest pod of ``name`` printed after ``prefix``."""
    deadline = time.monotonic() + timeout
    while True:
        pods = sorted(
            _pods(site, tenant.namespace, name), key=lambda p: str(p.metadata.creationTimestamp)
        )
        if pods:
            logs = site.node.logs(tenant.namespace, str(pods[-1].metadata.name), "app")
            for line in logs.splitlines():
                if line.startswith(prefix):
                    return line.removeprefix(prefix)
        assert time.monotonic() < deadline, f"{name} printed no {prefix}"
        time.sleep(0.5)


def _ready_pods(site: Site, tenant: Tenant, name: str) -> int:
    ready = 0
    for pod in _pods(site, tenant.namespace, name):
        conditions = (pod.status.conditions or []) if pod.status else []
        ready += any(c.type == "Ready" and c.status == "True" for c in conditions)
    return ready


def test_finalize_removes_what_the_runtime_serves_to_probes_args_and_init_containers(
    site: Site, injector: str, app_image: str
) -> None:
    tenant = _tenant(site, app_image, ["probed", "expanded"])
    # discover recorded the uses for the reviewers
    probed = _workload(tenant, "probed")
    assert EnvUse(env="DB_PASSWORD", container="app", where="readinessProbe") in probed.env_uses
    assert EnvUse(env="DB_PASSWORD", container="app", where="livenessProbe") in probed.env_uses
    expanded = _workload(tenant, "expanded")
    assert expanded.env_uses == [EnvUse(env="DB_PASSWORD", container="app", where="args")]
    # so the checks below can fail: the kubelet expands $(DB_PASSWORD) from the Secret
    assert _newest_log(site, tenant, "expanded", "ARG=") == tenant.k8s_canary

    protect = _target(site, "protect", tenant, "--vault-address", site.openbao.address, "--yes")
    assert protect.returncode == 0, protect.stdout + protect.stderr
    warned = protect.stdout + protect.stderr
    # protect warns only about what the runtime cannot serve at all (issue 30)
    assert "finalize will keep the Secret reference of env DB_PASSWORD" not in warned
    # the runtime expands $(DB_PASSWORD) with the vault's value now (the injector escaped it)
    assert _newest_log(site, tenant, "expanded", "ARG=") == tenant.vault_canary
    # so the checks below can fail: every reference is there
    for name in ("probed", "expanded"):
        assert _env_names(_template(site, tenant, name)["containers"][0]) == [
            "DB_PASSWORD",
            "DB_USER",
        ]
    assert _env_names(_template(site, tenant, "probed")["initContainers"][0]) == ["DB_PASSWORD"]
    assert _ready_pods(site, tenant, "probed") == 1
    with contextlib.closing(site.node.client()) as client:
        assert client.get(Secret, "db", namespace=tenant.namespace) is not None
    verified = ("--require-verified", f"{tenant.plan}.verified.json")

    result = _target(site, "finalize", tenant, "--yes", "--delete-secrets", *verified)

    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # every reference went: the live pods prove the runtime serves the probes, the args and
    # the init container
    for name in ("probed", "expanded"):
        assert _env_names(_template(site, tenant, name)["containers"][0]) == []
        workload = _workload(tenant, name)
        assert workload.finalized_at is not None
        assert {r.env for r in workload.finalized_refs} == {"DB_PASSWORD", "DB_USER"}
    assert _env_names(_template(site, tenant, "probed")["initContainers"][0]) == []
    # the new pods passed their probes with the vault's value only (no reference is left)
    _wait_ready(site, tenant.namespace, "probed")
    time.sleep(3)  # a few more probe periods: liveness would restart, readiness would flip
    assert _ready_pods(site, tenant, "probed") == 1
    pod = _pods(site, tenant.namespace, "probed")[0]
    assert all((s.restartCount or 0) == 0 for s in pod.status.containerStatuses or [])
    assert all(
        (s.state and s.state.terminated and s.state.terminated.exitCode == 0)
        for s in pod.status.initContainerStatuses or []
    )
    assert _newest_log(site, tenant, "expanded", "DB_PASSWORD=") == tenant.vault_canary
    assert _newest_log(site, tenant, "expanded", "ARG=") == tenant.vault_canary
    # nothing uses the Secret any more: --delete-secrets deleted it
    with contextlib.closing(site.node.client()) as client:
        assert [
            s.metadata.name
            for s in client.list(Secret, namespace=tenant.namespace)
            if s.metadata is not None
        ] == []


def test_finalize_leaves_a_workload_alone_when_nothing_can_be_removed(
    site: Site, injector: str, app_image: str
) -> None:
    tenant = _tenant(site, app_image, ["scripted"])
    scripted = _workload(tenant, "scripted")
    # the postStart hook writes the file under the mount: it counts as running it too
    assert {(u.env, u.where) for u in scripted.env_uses} == {
        ("DB_PASSWORD", "postStart"),
        ("DB_PASSWORD", "readinessProbe"),
        ("DB_USER", "postStart"),
        ("DB_USER", "readinessProbe"),
    }
    protect = _target(site, "protect", tenant, "--vault-address", site.openbao.address, "--yes")
    assert protect.returncode == 0, protect.stdout + protect.stderr
    assert _env_names(_template(site, tenant, "scripted")["containers"][0]) == [
        "DB_PASSWORD",
        "DB_USER",
    ]
    before = _replicasets(site, tenant.namespace)

    result = _target(site, "finalize", tenant, "--yes")

    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "nothing can be removed" in out
    assert "its readinessProbe runs a script that may read it ('/health/ready')" in out
    assert _env_names(_template(site, tenant, "scripted")["containers"][0]) == [
        "DB_PASSWORD",
        "DB_USER",
    ]
    assert _replicasets(site, tenant.namespace) == before
    workload = _workload(tenant, "scripted")
    assert workload.finalized_at is None
    assert workload.finalized_refs == []
