"""Cluster defaults in the injector (issue 31, deliverable 2), on two real API servers.

Two clusters of their own (``ct-fleet-a``, ``ct-fleet-b``: etcd, kube-apiserver, controllers,
kwok nodes), each with ``target install --default-*`` of its own vault address, auth mount,
auth method and vault namespace, in URL mode, and the injector those flags describe running
as a local process (``cloudtaser-runtime inject`` with the Deployment's own arguments; kwok
runs nothing inside pods), so the API servers really call it for every opted-in pod.

What it proves:

- **one manifest, two clusters**: the same Deployment manifest (inject label, role, secret
  paths, env map; no address, auth path, method or namespace) created in both clusters gives
  pods — made by each cluster's ReplicaSet controller through its admission chain, and a
  server-side dry-run pod of the template — wrapped with *that* cluster's address, auth
  mount, method and namespace (and a 600 s projected token where the method is jwt);
- ``target install --check`` reports the defaults and passes its dry-run pod without any
  vault address on it;
- **protect against an injector with defaults** writes no cluster-specific annotation into
  the template, records what it left to the injector in the plan (``injectorDefaults``), and
  the rolled-out pods are injected with the defaults; finalize (its admission check of the
  address-less template) removes the Secret reference; unprotect puts it back, removes
  everything protect wrote and clears the record;
- an annotation still overrides a default, but only within the allow-list.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from lightkube import ApiError, Client, codecs
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from tests.integration.connect_helpers import cli, hexid
from tests.integration.runtime_binary import runtime_binary
from tests.testenv.cluster import Cluster
from tests.testenv.process import free_ports
from tests.testenv.workloads import (
    ContainerSpec,
    create_namespace,
    create_secret,
    create_workload,
    deployment,
    list_pods,
    request_token,
    wait_rollout,
)

pytestmark = pytest.mark.integration

NAME = contract.INJECTOR_WEBHOOK_CONFIGURATION
IMAGE = "registry.corp:5000/cloudtaser/runtime:0.1.0"
CLUSTER_KEYS = (
    contract.VAULT_ADDRESS,
    contract.AUTH_PATH,
    contract.AUTH_METHOD,
    contract.VAULT_NAMESPACE,
)


@dataclass(frozen=True)
class Settings:
    """One cluster's vault settings, given to its injector as defaults."""

    address: str
    mount: str
    method: str
    namespace: str


SETTINGS = {
    "ct-fleet-a": Settings("https://bao-a.fleet.test:8200", "jwt-a", "jwt", "fleet/a"),
    "ct-fleet-b": Settings("https://bao-b.fleet.test:8200", "k8s-b", "kubernetes", "fleet/b"),
}


@dataclass
class Member:
    """A cluster of the fleet with its injector running."""

    cluster: Cluster
    client: Client
    settings: Settings
    injector_namespace: str


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the injector exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            got = requests.get(f"https://127.0.0.1:{port}/readyz", verify=False, timeout=2)
            if got.status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"the injector never became ready: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _member(cl: Cluster, tmp: Path) -> Iterator[Member]:
    """``target install`` with the cluster's defaults, then its injector as a local process
    with exactly the arguments of the Deployment install wrote."""
    s = SETTINGS[cl.name]
    client = cl.client()
    ns = f"ct-sys-{hexid()}"
    (port,) = free_ports(1)
    run = cli(
        ["target", "install", "--image", IMAGE, "--allowed-vault-address", s.address,
         "--allowed-vault-address", "http://override.fleet.test:8200",
         "--audience", "openbao", "--namespace", ns, "--replicas", "1",
         "--webhook-url", f"https://127.0.0.1:{port}/mutate",
         "--default-vault-address", s.address, "--default-auth-path", f"auth/{s.mount}",
         "--default-auth-method", s.method, "--default-vault-namespace", s.namespace,
         "--kubeconfig", str(cl.kubeconfig), "--no-wait"]
    )  # fmt: skip
    assert run.code == 0, run.text
    dep = client.get(Deployment, NAME, namespace=ns)
    assert dep.spec is not None
    assert dep.spec.template.spec is not None
    args = list(dep.spec.template.spec.containers[0].args or [])
    assert args[0] == "inject"
    assert "--default-vault-address" in args
    token = tmp / f"{cl.name}-token"
    token.write_text(request_token(client, ns, NAME))
    log = tmp / f"{cl.name}-injector.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "POD_NAME": f"{NAME}-local",
        "POD_NAMESPACE": ns,
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(cl.api_port),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [runtime_binary(), *args, "--kube-token-file", str(token),
             "--kube-ca-file", str(cl.ca_cert), "--shutdown-delay", "0s"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(port, proc, log)
        yield Member(cl, client, s, ns)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        cli(["target", "uninstall", "--namespace", ns, "--kubeconfig", str(cl.kubeconfig),
             "--timeout", "60s", "--ignore-protected-workloads"])  # fmt: skip
        client.close()


@pytest.fixture(scope="module")
def fleet(
    cluster_factory: Callable[..., Cluster], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Member]]:
    tmp = tmp_path_factory.mktemp("fleet")
    with contextlib.ExitStack() as stack:
        members = {
            name: stack.enter_context(_member(cluster_factory(name, nodes=1), tmp))
            for name in SETTINGS
        }
        yield members


#: The one manifest both clusters get: nothing in it names a cluster's vault.
def _manifest(namespace: str) -> dict[str, Any]:
    labels = {"app": "api"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": {**labels, contract.INJECT_LABEL: "true"},
                    "annotations": {
                        contract.INJECT: "true",
                        contract.VAULT_ROLE: "cloudtaser-shop-shop",
                        contract.SECRET_PATHS: "secret/data/shop/db",
                        contract.ENV_MAP: "password=DB_PASSWORD",
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "command": ["/pause"],
                        }
                    ]
                },
            },
        },
    }


def _wrapper_env(pod: dict[str, Any]) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    assert container["command"][0] == contract.WRAPPER_PATH, container["command"]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def _token_lifetime(pod: dict[str, Any]) -> int:
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == contract.TOKEN_VOLUME)
    return int(volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"])


def _expect(s: Settings) -> dict[str, str]:
    return {
        "CLOUDTASER_VAULT_ADDR": s.address,
        "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": f"auth/{s.mount}",
        "CLOUDTASER_VAULT_AUTH_METHOD": s.method,
        "CLOUDTASER_VAULT_NAMESPACE": s.namespace,
    }


def _dry_run_pod(client: Client, namespace: str, template: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**copy.deepcopy(template["metadata"]), "generateName": "api-dry-"},
        "spec": copy.deepcopy(template["spec"]),
    }
    created = client.create(codecs.from_dict(body), namespace=namespace, dry_run=True)
    return dict(created.to_dict())


def test_the_same_manifest_is_injected_with_each_clusters_own_vault_settings(
    fleet: dict[str, Member],
) -> None:
    namespace = f"shop-{hexid()}"  # the same name in both clusters: the same manifests
    manifest = _manifest(namespace)
    annotations = manifest["spec"]["template"]["metadata"]["annotations"]
    assert not set(CLUSTER_KEYS) & set(annotations)  # so the checks below can fail
    for name, member in fleet.items():
        create_namespace(member.client, namespace)
        want = _expect(member.settings)
        # a server-side dry-run pod of the template (admission runs, nothing is stored)
        dry = _dry_run_pod(member.client, namespace, manifest["spec"]["template"])
        assert {k: _wrapper_env(dry)[k] for k in want} == want, name
        # real pods: the cluster's ReplicaSet controller creates them through admission
        member.client.create(codecs.from_dict(copy.deepcopy(manifest)))
        wait_rollout(member.client, "Deployment", namespace, "api", timeout=90)
        pods = [p.to_dict() for p in list_pods(member.client, namespace, "api")]
        assert pods, name
        for pod in pods:
            assert {k: _wrapper_env(pod)[k] for k in want} == want, name
            assert _token_lifetime(pod) == (600 if member.settings.method == "jwt" else 3600)
            assert pod["spec"]["initContainers"][0]["name"] == contract.INIT_CONTAINER
    # each cluster used only its own values
    addresses = {
        name: _wrapper_env(list_pods(member.client, namespace, "api")[0].to_dict())[
            "CLOUDTASER_VAULT_ADDR"
        ]
        for name, member in fleet.items()
    }
    assert addresses == {name: s.address for name, s in SETTINGS.items()}


def test_an_annotation_overrides_a_default_only_within_the_allow_list(
    fleet: dict[str, Member],
) -> None:
    member = fleet["ct-fleet-a"]
    namespace = create_namespace(member.client, f"shop-{hexid()}")
    template = _manifest(namespace)["spec"]["template"]
    template["metadata"]["annotations"].update(
        {
            contract.VAULT_ADDRESS: "http://override.fleet.test:8200",
            contract.AUTH_METHOD: "kubernetes",
            contract.VAULT_NAMESPACE: "team-x",
        }
    )
    env = _wrapper_env(_dry_run_pod(member.client, namespace, template))
    assert env["CLOUDTASER_VAULT_ADDR"] == "http://override.fleet.test:8200"
    assert env["CLOUDTASER_VAULT_AUTH_METHOD"] == "kubernetes"
    assert env["CLOUDTASER_VAULT_NAMESPACE"] == "team-x"
    assert env["CLOUDTASER_VAULT_AUTH_MOUNT_PATH"] == "auth/jwt-a"  # the default still
    template["metadata"]["annotations"][contract.VAULT_ADDRESS] = "https://elsewhere.test:8200"
    with pytest.raises(ApiError) as info:
        _dry_run_pod(member.client, namespace, template)
    assert "not one of the vault addresses this injector allows" in str(info.value)


def test_install_check_reports_the_defaults_and_admits_a_pod_without_an_address(
    fleet: dict[str, Member],
) -> None:
    member = fleet["ct-fleet-b"]
    run = cli(
        ["target", "install", "--check", "--namespace", member.injector_namespace,
         "--kubeconfig", str(member.cluster.kubeconfig), "--output", "json"]
    )  # fmt: skip
    doc = json.loads(run.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["cluster defaults"]["ok"], checks
    assert checks["mutation"]["ok"], checks
    assert "without a vault-address annotation" in checks["mutation"]["detail"]
    s = member.settings
    assert doc["defaults"] == {
        "address": s.address,
        "authMount": s.mount,
        "authMethod": s.method,
        "namespace": s.namespace,
    }
    # the record on the webhook configuration must agree with what the injector runs with
    member.client.patch(
        MutatingWebhookConfiguration,
        NAME,
        {"metadata": {"annotations": {contract.INJECTOR_DEFAULTS: '{"authMethod":"jwt"}'}}},
    )
    try:
        run = cli(
            ["target", "install", "--check", "--namespace", member.injector_namespace,
             "--kubeconfig", str(member.cluster.kubeconfig)]
        )  # fmt: skip
        assert run.code == 1, run.text
        assert "FAIL cluster defaults" in run.stdout
    finally:
        raw = json.dumps(doc["defaults"], separators=(",", ":"), sort_keys=True)
        member.client.patch(
            MutatingWebhookConfiguration,
            NAME,
            {"metadata": {"annotations": {contract.INJECTOR_DEFAULTS: raw}}},
        )


def _plan(path: Path, namespace: str, s: Settings) -> Path:
    workload = Workload(
        kind="Deployment",
        name="web",
        secrets=[
            SecretRef(
                source="db",
                vault_path=f"secret/data/{namespace}/db",
                fields={"password": "DB_PASSWORD"},
                via="env",
            )
        ],
    )
    plan = MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="shop", auth_mount=s.mount, auth_method=s.method),  # type: ignore[arg-type]
        tenants=[Tenant(name=namespace, namespace=namespace, workloads=[workload])],
    )
    planlib.save(plan, path)
    return path


def test_protect_writes_no_cluster_specific_annotation_against_an_injector_with_defaults(
    fleet: dict[str, Member], tmp_path: Path
) -> None:
    member = fleet["ct-fleet-a"]
    client, kubeconfig = member.client, str(member.cluster.kubeconfig)
    namespace = create_namespace(client, f"web-{hexid()}")
    create_secret(client, namespace, "db", {"password": "not-a-real-value"})
    spec = deployment(
        "web",
        namespace,
        containers=[
            ContainerSpec(command=["/pause"], secret_env={"DB_PASSWORD": ("db", "password")})
        ],
    )
    create_workload(client, spec)
    wait_rollout(client, "Deployment", namespace, "web", timeout=90)
    plan_path = _plan(tmp_path / "plan.yaml", namespace, member.settings)

    run = cli(
        [
            "target",
            "protect",
            "--plan",
            str(plan_path),
            "--kubeconfig",
            kubeconfig,
            "--yes",
            "--timeout",
            "90s",
            "--poll-interval",
            "200ms",
        ]
    )  # fmt: skip  (no --vault-address: the injector's default)
    assert run.code == 0, run.text
    template = client.get(Deployment, "web", namespace=namespace).to_dict()["spec"]["template"]
    written = template["metadata"]["annotations"]
    assert written[contract.INJECT] == "true"
    assert written[contract.VAULT_ROLE] == "cloudtaser-shop-" + namespace
    assert written[contract.SECRET_PATHS] == f"secret/data/{namespace}/db"
    assert not set(CLUSTER_KEYS) & set(written), written
    recorded = planlib.load(plan_path).tenants[0].workloads[0]
    assert recorded.status == "migrated"
    assert recorded.injector_defaults == ["address", "authMethod", "authMount", "namespace"]
    pods = [
        p.to_dict()
        for p in client.list(Pod, namespace=namespace, labels={"app": "web"})
        if contract.INJECT_LABEL in ((p.metadata.labels if p.metadata else None) or {})
    ]
    assert pods
    for pod in pods:
        env = _wrapper_env(pod)
        assert {k: env[k] for k in _expect(member.settings)} == _expect(member.settings)

    # finalize: its admission check of the live template (no address on it) passes through
    # the defaults; the Secret reference goes, the template stays free of cluster values
    assert "secretKeyRef" in json.dumps(template["spec"])  # so the check below can fail
    run = cli(
        ["target", "finalize", "--plan", str(plan_path), "--kubeconfig", kubeconfig, "--yes",
         "--timeout", "90s", "--poll-interval", "200ms"]
    )  # fmt: skip
    assert run.code == 0, run.text
    template = client.get(Deployment, "web", namespace=namespace).to_dict()["spec"]["template"]
    assert "secretKeyRef" not in json.dumps(template["spec"])
    assert not set(CLUSTER_KEYS) & set(template["metadata"]["annotations"])
    assert planlib.load(plan_path).tenants[0].workloads[0].finalized_at is not None

    run = cli(
        ["target", "unprotect", "--plan", str(plan_path), "--kubeconfig", kubeconfig, "--yes",
         "--timeout", "90s", "--poll-interval", "200ms"]
    )  # fmt: skip
    assert run.code == 0, run.text
    template = client.get(Deployment, "web", namespace=namespace).to_dict()["spec"]["template"]
    left = (template["metadata"].get("annotations") or {}).keys()
    assert not {k for k in left if k.startswith(contract.PREFIX)}, left
    assert "secretKeyRef" in json.dumps(template["spec"])  # put back by unprotect
    again = planlib.load(plan_path).tenants[0].workloads[0]
    assert again.status in (None, "pending")
    assert again.injector_defaults == []
