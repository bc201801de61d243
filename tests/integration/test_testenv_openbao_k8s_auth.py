"""OpenBao's Kubernetes auth method against the test API server: the chain `target connect`
and the runtime wrapper rely on (reviewer SA + system:auth-delegator, cluster CA, host)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import ApiError
from lightkube.resources.core_v1 import ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer
from tests.testenv.workloads import bind_cluster_role, create_service_account, request_token

pytestmark = pytest.mark.integration


@pytest.fixture
def k8s_auth(
    openbao: BaoServer, cluster: Cluster, kube_client: Any, namespace: str
) -> Iterator[str]:
    """A ``kubernetes`` auth mount configured for ``cluster``; role ``app`` binds SA ns/app."""
    mount = f"k8s-{secrets.token_hex(4)}"
    binding = f"openbao-tokenreview-{namespace}"
    create_service_account(kube_client, namespace, "openbao-reviewer")
    bind_cluster_role(kube_client, binding, "system:auth-delegator", namespace, "openbao-reviewer")
    reviewer_jwt = request_token(kube_client, namespace, "openbao-reviewer")  # API audience
    openbao.api_ok("POST", f"sys/auth/{mount}", {"type": "kubernetes"})
    try:
        openbao.api_ok(
            "POST",
            f"auth/{mount}/config",
            {
                "kubernetes_host": cluster.server,
                "kubernetes_ca_cert": cluster.ca_pem,
                "token_reviewer_jwt": reviewer_jwt,
                "disable_local_ca_jwt": True,
            },
        )
        openbao.api_ok(
            "POST",
            f"auth/{mount}/role/app",
            {
                "bound_service_account_names": ["app"],
                "bound_service_account_namespaces": [namespace],
                "audience": "openbao",
                "token_policies": ["default"],
                "token_ttl": "10m",
            },
        )
        yield mount
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        with contextlib.suppress(ApiError):
            kube_client.delete(ClusterRoleBinding, binding)


def _login(openbao: BaoServer, mount: str, jwt: str) -> Any:
    return openbao.api("POST", f"auth/{mount}/login", {"role": "app", "jwt": jwt}, token="")


def test_kubernetes_auth_accepts_a_bound_service_account(
    openbao: BaoServer, kube_client: Any, namespace: str, k8s_auth: str
) -> None:
    create_service_account(kube_client, namespace, "app")
    jwt = request_token(kube_client, namespace, "app", audiences=["openbao"], seconds=600)
    mark = openbao.audit_mark()
    r = _login(openbao, k8s_auth, jwt)
    assert r.status_code == 200, r.json().get("errors")
    auth = r.json()["auth"]
    assert auth["metadata"]["service_account_name"] == "app"
    assert auth["metadata"]["service_account_namespace"] == namespace
    assert "default" in auth["policies"]
    lookup = openbao.api("GET", "auth/token/lookup-self", token=auth["client_token"])
    assert lookup.status_code == 200
    assert ("update", f"auth/{k8s_auth}/login") in openbao.request_ops_since(mark)


def test_kubernetes_auth_rejects_a_service_account_the_role_does_not_bind(
    openbao: BaoServer, kube_client: Any, namespace: str, k8s_auth: str
) -> None:
    create_service_account(kube_client, namespace, "intruder")
    jwt = request_token(kube_client, namespace, "intruder", audiences=["openbao"], seconds=600)
    r = _login(openbao, k8s_auth, jwt)
    assert r.status_code == 403
    assert "not authorized" in " ".join(r.json()["errors"])


def test_kubernetes_auth_rejects_a_token_of_a_deleted_service_account(
    openbao: BaoServer, kube_client: Any, namespace: str, k8s_auth: str
) -> None:
    create_service_account(kube_client, namespace, "app")
    jwt = request_token(kube_client, namespace, "app", audiences=["openbao"], seconds=600)
    kube_client.delete(ServiceAccount, "app", namespace=namespace)
    r = _login(openbao, k8s_auth, jwt)
    assert r.status_code == 403  # the API server's TokenReview says: not authenticated
