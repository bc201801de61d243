"""The Kubernetes half of the test bed works: a real control plane whose workloads roll out."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, codecs
from lightkube.resources.core_v1 import Node, Pod, ServiceAccount

from tests.testenv.binaries import k8s_version
from tests.testenv.cluster import Cluster, ExternalCluster
from tests.testenv.workloads import (
    ContainerSpec,
    RolloutError,
    WorkloadSpec,
    create_secret,
    create_service_account,
    create_workload,
    list_pods,
    request_token,
    restart,
    rollout_status,
    wait_rollout,
)

pytestmark = pytest.mark.integration

ROLLOUT_TIMEOUT = 90


def test_version_endpoint_reports_the_pinned_kubernetes_version(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("external cluster: version is whatever the provider runs")
    version = cluster.get_raw("/version")
    assert version["gitVersion"] == f"v{k8s_version()}"
    assert version["major"] == "1"


def test_cluster_is_ready_with_untainted_kwok_nodes_and_default_sa(
    cluster: Cluster, kube_client: Any
) -> None:
    nodes = list(kube_client.list(Node, labels={"type": "kwok"}))
    if cluster.local:
        assert len(nodes) == 2
    for node in nodes:
        conditions = {c.type: c.status for c in node.status.conditions}
        assert conditions["Ready"] == "True"
    kube_client.get(ServiceAccount, "default", namespace="default")


def test_kubeconfig_context_is_named_after_the_cluster(cluster: Cluster) -> None:
    out = cluster.kubectl("config", "current-context").stdout.strip()
    assert out == cluster.context
    assert cluster.server.startswith("https://127.0.0.1:")
    assert "BEGIN CERTIFICATE" in cluster.ca_pem


def _secret_consuming_spec(kind: str, name: str, ns: str, replicas: int) -> WorkloadSpec:
    return WorkloadSpec(
        kind,  # type: ignore[arg-type]
        name,
        ns,
        replicas=replicas,
        containers=[
            ContainerSpec(
                secret_env={"DB_PASSWORD": ("db", "password")},
                env_from=[("db", "DB_")],
                mounts={"creds": "/etc/creds"},
            )
        ],
        init_containers=[ContainerSpec(name="init", env_from=["db"])],
        secret_volumes={"creds": "db"},
        projected_volumes={"bundle": ["db"]},
        pod_annotations={"example.com/team": "payments"},
    )


@pytest.mark.parametrize(
    ("kind", "replicas", "expected_pods"),
    [("Deployment", 2, 2), ("StatefulSet", 2, 2), ("DaemonSet", 1, None)],
)
def test_workload_rolls_out_and_a_template_change_rolls_out_again(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    kind: str,
    replicas: int,
    expected_pods: int | None,
) -> None:
    create_secret(kube_client, namespace, "db", {"password": "pw", "user": "app"})
    name = kind.lower()
    create_workload(kube_client, _secret_consuming_spec(kind, name, namespace, replicas))
    first = wait_rollout(kube_client, kind, namespace, name, timeout=ROLLOUT_TIMEOUT)
    if expected_pods is None:  # DaemonSet: one pod per schedulable node
        expected_pods = first["status"]["desiredNumberScheduled"]
        assert expected_pods >= 1
    pods = list_pods(kube_client, namespace, app=name)
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletionTimestamp]
    assert len(running) == expected_pods
    for pod in running:
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == "True"
    old_uids = {p.metadata.uid for p in running}

    restart(kube_client, kind, namespace, name)
    second = wait_rollout(kube_client, kind, namespace, name, timeout=ROLLOUT_TIMEOUT)
    assert second["metadata"]["generation"] > first["metadata"]["generation"]
    live = [
        p
        for p in list_pods(kube_client, namespace, app=name)
        if p.status.phase == "Running" and not p.metadata.deletionTimestamp
    ]
    annotated = [
        p for p in live if "kubectl.kubernetes.io/restartedAt" in (p.metadata.annotations or {})
    ]
    assert len(annotated) == expected_pods
    assert not {p.metadata.uid for p in annotated} & old_uids  # every pod was replaced


def test_rollout_status_waits_for_unobserved_generation() -> None:
    obj = {
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "n", "generation": 3},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1},
    }
    assert rollout_status(obj)[0] is False
    obj["status"]["observedGeneration"] = 3
    obj["status"]["replicas"] = 1
    assert rollout_status(obj)[0] is True


def test_wait_rollout_times_out_for_a_paused_deployment(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_workload(kube_client, WorkloadSpec("Deployment", "paused", namespace, paused=True))
    with pytest.raises(RolloutError, match="timed out"):
        wait_rollout(kube_client, "Deployment", namespace, "paused", timeout=3)


def test_service_account_admission_rejects_pods_of_missing_service_accounts(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    pod = codecs.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "orphan", "namespace": namespace},
            "spec": {
                "serviceAccountName": "does-not-exist",
                "containers": [{"name": "c", "image": "registry.invalid/x:1"}],
            },
        }
    )
    with pytest.raises(ApiError) as info:
        kube_client.create(pod)
    assert info.value.status.code == 403
    assert list(kube_client.list(Pod, namespace=namespace)) == []


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_token_request_returns_a_token_the_api_server_authenticates(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_service_account(kube_client, namespace, "app")
    token = request_token(kube_client, namespace, "app", audiences=["openbao"], seconds=600)
    claims = _jwt_claims(token)
    assert claims["aud"] == ["openbao"]
    assert claims["iss"] == cluster.issuer
    assert claims["sub"] == f"system:serviceaccount:{namespace}:app"
    review = kube_client.create(
        codecs.from_dict(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": ["openbao"]},
            }
        )
    )
    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{namespace}:app"
    wrong = kube_client.create(
        codecs.from_dict(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": ["someone-else"]},
            }
        )
    )
    assert not wrong.status.authenticated


def test_external_cluster_wraps_an_existing_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    """The path `nox -s e2e_kind` takes, exercised against the local cluster."""
    ext = ExternalCluster("wrapped", tmp_path, source=cluster.kubeconfig)
    ext.start()
    assert (ext.server, ext.issuer, ext.ca_pem) == (cluster.server, cluster.issuer, cluster.ca_pem)
    client = ext.client()
    try:
        assert client.get(ServiceAccount, "default", namespace="default").metadata.name
    finally:
        client.close()
    ext.stop()
    assert cluster.running
