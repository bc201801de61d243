"""The reference scan that ``finalize --delete-secrets`` and ``target audit`` share, one test
per kind of user, on the real API server (kwok runs the pods).

Each test first asserts that the Secret exists (so the checks can fail), then that the scan
(:func:`cloudtaser.target.references.scan.scan`, what the deletion step consults) names the
expected user with the expected ``via``, that a Secret nothing uses gets no user, and that
``cloudtaser target audit`` shows the same user (so audit never calls a used Secret unused).
Gateway API and custom resources get their CRDs created by the test; the 403 case runs as a
ServiceAccount bound to the documented ``rbac-audit`` ClusterRole (docs/security.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, codecs
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import ConfigMap, PersistentVolume, Secret
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding
from lightkube.resources.storage_v1 import StorageClass

from cloudtaser.config import ClusterTarget
from cloudtaser.target.kube.session import connect
from cloudtaser.target.kube.workloads import WorkloadAPI
from cloudtaser.target.references.cluster import ScanCache
from cloudtaser.target.references.scan import Scan, scan
from tests.integration.test_least_privilege import Identity, doc_cluster_role
from tests.integration.test_protect import REPO, _env
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import create_namespace, create_secret, delete_namespace

pytestmark = pytest.mark.integration

CANARY = f"CANARY-{secrets.token_hex(8)}"


def _apply(client: Any, obj: dict[str, Any]) -> Any:
    return client.create(codecs.from_dict(obj))


def _scan(kubeconfig: Path, namespace: str) -> Scan:
    session = connect(ClusterTarget(kubeconfig=(str(kubeconfig),)))
    with session, WorkloadAPI(session) as api:
        return scan(api, namespace, cache=ScanCache())


def _audit_users(cluster: Cluster, namespace: str, kubeconfig: Path | None = None) -> Any:
    """``target audit -n namespace -o json``: (users by Secret, unreadable)."""
    out = subprocess.run(
        [sys.executable, "-m", "cloudtaser", "target", "audit", "-n", namespace, "--output",
         "json", "--kubeconfig", str(kubeconfig or cluster.kubeconfig)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert CANARY not in out.stdout + out.stderr, "a Secret value reached the output"
    assert out.returncode == 0, out.stdout + out.stderr
    ns = json.loads(out.stdout)["namespaces"][0]
    return {s["name"]: s["users"] for s in ns["secrets"]}, ns["unreadable"]


def _check(
    cluster: Cluster, client: Any, namespace: str, secret: str, via: str, unused: str = ""
) -> Scan:
    """``secret`` exists, the scan and audit name a user of it with ``via``; ``unused`` (if
    given) exists and has no user."""
    assert client.get(Secret, secret, namespace=namespace) is not None
    found = _scan(cluster.kubeconfig, namespace)
    assert found.unreadable == [], found.unreadable
    users = found.users(secret)
    assert via in {u.via for u in users}, [str(u) for u in users]
    assert all(str(u) for u in users)
    audit, unreadable = _audit_users(cluster, namespace)
    assert unreadable == []
    assert via in {u["via"] for u in audit[secret]}, audit[secret]
    if unused:
        assert client.get(Secret, unused, namespace=namespace) is not None
        assert found.users(unused) == [], [str(u) for u in found.users(unused)]
        assert audit[unused] == []
    return found


@pytest.fixture
def other_namespace(kube_client: Any) -> Iterator[str]:
    name = create_namespace(kube_client)
    yield name
    delete_namespace(kube_client, name)


def _pod(client: Any, namespace: str, name: str, service_account: str = "default") -> None:
    _apply(
        client,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "serviceAccountName": service_account,
                "containers": [{"name": "c", "image": "busybox"}],
            },
        },
    )


def _service_account(client: Any, namespace: str, name: str) -> None:
    _apply(
        client,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        },
    )


# -- cluster-scoped users -------------------------------------------------------------------------


def test_a_persistent_volume_csi_secret_ref_keeps_the_secret(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_secret(kube_client, namespace, "stage-key", {"k": CANARY})
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    pv = f"refscan-{secrets.token_hex(4)}"
    _apply(
        kube_client,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "csi": {
                    "driver": "csi.example.com",
                    "volumeHandle": "vol-1",
                    "nodeStageSecretRef": {"name": "stage-key", "namespace": namespace},
                },
            },
        },
    )
    try:
        found = _check(cluster, kube_client, namespace, "stage-key", "persistentVolume", "plain")
        (use,) = found.users("stage-key")
        assert (use.kind, use.name) == ("PersistentVolume", pv)
        assert "nodeStageSecretRef" in str(use)
    finally:
        kube_client.delete(PersistentVolume, pv)


def test_a_storage_class_secret_parameter_keeps_the_secret_in_any_namespace_for_a_template(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_secret(kube_client, namespace, "provisioner", {"k": CANARY})
    create_secret(kube_client, namespace, "node-publish", {"k": CANARY})
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    sc = f"refscan-{secrets.token_hex(4)}"
    _apply(
        kube_client,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": sc},
            "provisioner": "csi.example.com",
            "parameters": {
                "csi.storage.k8s.io/provisioner-secret-name": "provisioner",
                "csi.storage.k8s.io/provisioner-secret-namespace": namespace,
                "csi.storage.k8s.io/node-publish-secret-name": "node-publish",
                "csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}",
            },
        },
    )
    try:
        found = _check(cluster, kube_client, namespace, "provisioner", "storageClass", "plain")
        (templated,) = found.users("node-publish")
        assert templated.via == "storageClass"
        assert "${pvc.namespace}" in str(templated)
    finally:
        kube_client.delete(StorageClass, sc)


# -- namespaced kinds the scan did not know -------------------------------------------------------


def test_a_core_pod_template_keeps_the_secret(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_secret(kube_client, namespace, "tpl", {"k": CANARY})
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    _apply(
        kube_client,
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "batch", "namespace": namespace},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "busybox",
                            "envFrom": [{"secretRef": {"name": "tpl"}}],
                        }
                    ]
                }
            },
        },
    )
    _check(cluster, kube_client, namespace, "tpl", "podTemplate", "plain")


def test_ingress_annotations_keep_the_secrets_they_name_across_namespaces(
    cluster: Cluster, kube_client: Any, namespace: str, other_namespace: str
) -> None:
    create_secret(kube_client, namespace, "basic-auth", {"auth": CANARY})
    create_secret(kube_client, namespace, "client-ca", {"ca.crt": CANARY})
    create_secret(kube_client, namespace, "plain", {"k": CANARY})

    def ingress(ns: str, annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": ns, "annotations": annotations},
            "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
        }

    _apply(
        kube_client,
        ingress(namespace, {"nginx.ingress.kubernetes.io/auth-secret": "basic-auth"}),
    )
    _apply(  # another namespace's Ingress names namespace/client-ca
        kube_client,
        ingress(
            other_namespace,
            {"nginx.ingress.kubernetes.io/auth-tls-secret": f"{namespace}/client-ca"},
        ),
    )
    _check(cluster, kube_client, namespace, "basic-auth", "ingressAnnotation", "plain")
    found = _check(cluster, kube_client, namespace, "client-ca", "ingressAnnotation")
    assert found.users("client-ca")[0].name == f"{other_namespace}/web"


# -- custom resources: Gateway API and unknown kinds ----------------------------------------------


def _crd(group: str, kind: str, plural: str, scope: str = "Namespaced") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            # what the real Gateway API CRDs carry (*.k8s.io groups need it)
            "annotations": {
                "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/1538"
            },
        },
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": scope,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@contextlib.contextmanager
def _custom_kind(
    client: Any, group: str, kind: str, plural: str, scope: str = "Namespaced"
) -> Iterator[None]:
    crd = _crd(group, kind, plural, scope)
    _apply(client, crd)
    try:
        yield
    finally:
        client.delete(CustomResourceDefinition, crd["metadata"]["name"])
        deadline = time.monotonic() + 30  # gone from discovery before the next test
        while time.monotonic() < deadline:
            try:
                client.get(CustomResourceDefinition, crd["metadata"]["name"])
            except ApiError:
                break
            time.sleep(0.2)


def _create_custom(client: Any, plural: str, obj: dict[str, Any]) -> None:
    """Create a custom resource once its CRD is served (established a moment after create)."""
    group, version = obj["apiVersion"].split("/")
    if "namespace" in obj["metadata"]:
        create_namespaced_resource(group, version, obj["kind"], plural)
    else:
        create_global_resource(group, version, obj["kind"], plural)
    deadline = time.monotonic() + 30
    while True:
        try:
            _apply(client, obj)
            return
        except (ApiError, Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_gateway_certificate_refs_keep_the_secret_even_from_another_namespace(
    cluster: Cluster, kube_client: Any, namespace: str, other_namespace: str
) -> None:
    create_secret(kube_client, namespace, "web-tls", {"tls.crt": CANARY})
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    with _custom_kind(kube_client, "gateway.networking.k8s.io", "Gateway", "gateways"):
        _create_custom(
            kube_client,
            "gateways",
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "edge", "namespace": other_namespace},
                "spec": {
                    "gatewayClassName": "example",
                    "listeners": [
                        {
                            "name": "https",
                            "port": 443,
                            "protocol": "HTTPS",
                            "tls": {
                                "certificateRefs": [
                                    {"kind": "Secret", "name": "web-tls", "namespace": namespace}
                                ]
                            },
                        }
                    ],
                },
            },
        )
        found = _check(cluster, kube_client, namespace, "web-tls", "gatewayRef", "plain")
        (use,) = [u for u in found.users("web-tls") if u.via == "gatewayRef"]
        assert (use.kind, use.name) == ("Gateway", "edge")
        with _custom_kind(
            kube_client, "gateway.networking.k8s.io", "BackendTLSPolicy", "backendtlspolicies"
        ):
            _create_custom(
                kube_client,
                "backendtlspolicies",
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "BackendTLSPolicy",
                    "metadata": {"name": "to-api", "namespace": namespace},
                    "spec": {
                        "validation": {
                            "caCertificateRefs": [
                                {"group": "", "kind": "Secret", "name": "api-ca"}
                            ],
                            "hostname": "api.internal",
                        }
                    },
                },
            )
            create_secret(kube_client, namespace, "api-ca", {"ca.crt": CANARY})
            found = _check(cluster, kube_client, namespace, "api-ca", "gatewayRef", "plain")
            assert "BackendTLSPolicy" in {u.kind for u in found.users("api-ca")}


def test_an_unknown_custom_resource_naming_the_secret_keeps_it(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    group = f"refscan{secrets.token_hex(3)}.example.com"
    create_secret(kube_client, namespace, "backup-creds", {"k": CANARY})
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    with _custom_kind(kube_client, group, "Backup", "backups"):
        _create_custom(
            kube_client,
            "backups",
            {
                "apiVersion": f"{group}/v1",
                "kind": "Backup",
                "metadata": {"name": "nightly", "namespace": namespace},
                "spec": {"storage": {"credentials": {"from": "backup-creds"}}},
            },
        )
        found = _check(cluster, kube_client, namespace, "backup-creds", "customResource", "plain")
        assert found.users("backup-creds")[0].name == f"{namespace}/nightly"
    # a cluster-scoped custom resource naming a Secret keeps it in every namespace
    create_secret(kube_client, namespace, "ca-key", {"k": CANARY})
    with _custom_kind(kube_client, group, "Issuer", "issuers", "Cluster"):
        _create_custom(
            kube_client,
            "issuers",
            {
                "apiVersion": f"{group}/v1",
                "kind": "Issuer",
                "metadata": {"name": f"issuer-{group}"},
                "spec": {"ca": {"secretName": "ca-key"}},
            },
        )
        found = _check(cluster, kube_client, namespace, "ca-key", "customResource", "plain")
        assert found.users("ca-key")[0].name == f"issuer-{group}"


# -- owned or managed by something else -----------------------------------------------------------


def test_secrets_owned_or_managed_by_something_else_are_kept_naming_the_manager(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    _service_account(kube_client, namespace, "builder")
    owner = kube_client.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "owner", "namespace": namespace},
            }
        )
    )
    assert kube_client.get(ConfigMap, "owner", namespace=namespace) is not None
    owner_ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    managed: dict[str, tuple[dict[str, Any], str, str]] = {
        "owned": ({"ownerReferences": [owner_ref]}, "Opaque", "ConfigMap"),
        "sa-token": (
            {"annotations": {"kubernetes.io/service-account.name": "builder"}},
            "kubernetes.io/service-account-token",
            "ServiceAccount",
        ),
        "bootstrap-token-abcdef": ({}, "bootstrap.kubernetes.io/token", "bootstrap token"),
        "sh.helm.release.v1.web.v1": (
            {"labels": {"name": "web"}},
            "helm.sh/release.v1",
            "Helm release",
        ),
        "cert": (
            {"annotations": {"cert-manager.io/certificate-name": "web"}},
            "kubernetes.io/tls",
            "cert-manager Certificate",
        ),
        "external": (
            {"labels": {"reconcile.external-secrets.io/created-by": "abc"}},
            "Opaque",
            "ExternalSecret",
        ),
        "sealed": (
            {"annotations": {"sealedsecrets.bitnami.com/managed": "true"}},
            "Opaque",
            "SealedSecret",
        ),
        "argo": (
            {"labels": {"argocd.argoproj.io/instance": "shop"}},
            "Opaque",
            "Argo CD Application",
        ),
        "flux": (
            {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}},
            "Opaque",
            "Flux Kustomization",
        ),
        "helm": ({"labels": {"app.kubernetes.io/managed-by": "Helm"}}, "Opaque", "Helm release"),
    }
    for name, (meta, type_, _kind) in managed.items():
        data = {"cert": {"tls.crt": "", "tls.key": ""}}.get(name, {"k": CANARY})
        _apply(
            kube_client,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace, **meta},
                "type": type_,
                "stringData": data
                if type_ != "bootstrap.kubernetes.io/token"
                else {
                    "token-id": "abcdef",
                    "token-secret": "0123456789abcdef",
                },
            },
        )
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    # applied with kubectl apply: the annotation holds the whole manifest, value included
    applied = {"apiVersion": "v1", "kind": "Secret", "stringData": {"k": CANARY}}
    _apply(
        kube_client,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "applied",
                "namespace": namespace,
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied)
                },
            },
            "stringData": {"k": CANARY},
        },
    )
    for name in managed:
        assert kube_client.get(Secret, name, namespace=namespace) is not None

    found = _scan(cluster.kubeconfig, namespace)
    audit, _unreadable = _audit_users(cluster, namespace)

    assert found.unreadable == []
    for name, (_meta, _type, kind) in managed.items():
        users = found.users(name)
        assert kind in {u.kind for u in users}, (name, [str(u) for u in users])
        assert {u.via for u in users} <= {"ownedBy", "managedBy"}, name
        assert " instead" in " ".join(str(u) for u in users) or "delete" in " ".join(
            str(u) for u in users
        ), name
        assert kind in {u["kind"] for u in audit[name]}, name
    assert found.users("plain") == []
    assert audit["plain"] == []
    assert found.users("applied") == []
    assert "applied" in found.secrets
    # metadata only: the scan keeps no key and no value
    assert CANARY not in repr(found)
    assert CANARY not in repr([vars(m) for m in found.secrets.values()])
    assert "token-secret" not in repr(found)


# -- Secrets read through the API (RBAC of running pods' ServiceAccounts) -------------------------


def test_a_role_granting_get_on_one_secret_to_a_running_pods_account_keeps_only_that_one(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_secret(kube_client, namespace, "argocd-secret", {"admin.password": CANARY})
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    _service_account(kube_client, namespace, "argocd-server")
    _apply(
        kube_client,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "argocd-server", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": ["argocd-secret"],
                    "verbs": ["get"],
                }
            ],
        },
    )
    _apply(
        kube_client,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "argocd-server", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "argocd-server",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "argocd-server", "namespace": namespace}
            ],
        },
    )
    _pod(kube_client, namespace, "argocd-server", "argocd-server")
    found = _check(cluster, kube_client, namespace, "argocd-secret", "apiReader", "plain")
    (use,) = found.users("argocd-secret")
    assert use.name == f"{namespace}/argocd-server"
    assert "resourceNames" in str(use)


def test_a_cluster_role_to_list_secrets_keeps_every_secret_of_every_namespace(
    cluster: Cluster, kube_client: Any, namespace: str, other_namespace: str
) -> None:
    tag = f"refscan-{secrets.token_hex(4)}"
    create_secret(kube_client, other_namespace, "anything", {"k": CANARY})
    _service_account(kube_client, namespace, "operator")
    _apply(
        kube_client,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": tag},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
        },
    )
    _apply(
        kube_client,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": tag},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": tag,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        },
    )
    try:
        _pod(kube_client, namespace, "operator", "operator")
        found = _check(cluster, kube_client, other_namespace, "anything", "apiReader")
        (use,) = found.users("anything")
        assert use.name == f"{namespace}/operator"
        assert "all namespaces" in str(use)
    finally:
        kube_client.delete(ClusterRoleBinding, tag)
        kube_client.delete(ClusterRole, tag)


# -- what cannot be listed is unreadable ----------------------------------------------------------


def test_a_kind_the_credentials_cannot_list_makes_the_scan_keep_everything(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    create_secret(kube_client, namespace, "plain", {"k": CANARY})
    full = doc_cluster_role("rbac-audit")
    ident = Identity(cluster, kube_client, tmp_path)
    try:
        ident.grant(full)
        allowed = _scan(ident.kubeconfig(), namespace)
        assert allowed.secrets.keys() == {"plain"}
        assert not [u for u in allowed.unreadable if "persistentvolumes" in u]
        assert allowed.users("plain") == []

        without = copy.deepcopy(full)
        for rule in without["rules"]:
            rule["resources"] = [r for r in rule["resources"] if r != "persistentvolumes"]
        without["rules"] = [r for r in without["rules"] if r["resources"]]
        other = Identity(cluster, kube_client, tmp_path)
        try:
            other.grant(without)
            denied = _scan(other.kubeconfig(), namespace)
            assert any(u.startswith("persistentvolumes") for u in denied.unreadable), (
                denied.unreadable
            )
            _users, unreadable = _audit_users(cluster, namespace, other.kubeconfig())
            assert any("persistentvolumes" in u for u in unreadable)
        finally:
            other.close()
    finally:
        ident.close()
