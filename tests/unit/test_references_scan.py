"""The reference scan's rules as pure functions: owners and managers, Ingress annotations,
PodTemplates, PersistentVolumes, StorageClasses (templates included), Gateway API references,
the custom-resource string match, RBAC ``resourceNames`` and API discovery parsing. The
listing, the bounds and the SubjectAccessReviews run against the real API server in
tests/integration/test_reference_scan.py."""

from __future__ import annotations

from typing import Any

import pytest

from cloudtaser.target.references.cluster import (
    ClusterRef,
    _aggregated_kinds,
    custom_resource_strings,
    gateway_refs,
    pv_refs,
    storage_class_refs,
)
from cloudtaser.target.references.managers import manager_uses
from cloudtaser.target.references.readers import secret_rule_names
from cloudtaser.target.references.scan import object_uses
from cloudtaser.target.references.uses import SecretMeta, ingress_annotation_refs, secret_meta


def _meta(**kw: Any) -> SecretMeta:
    base: dict[str, Any] = {
        "name": "s",
        "namespace": "ns",
        "type": "Opaque",
        "uid": "u",
        "resource_version": "1",
    }
    return SecretMeta(**(base | kw))


def test_a_plain_secret_has_no_manager() -> None:
    assert manager_uses(_meta(labels={"app": "web"}, annotations={"note": "x"})) == []


@pytest.mark.parametrize(
    ("kw", "kind", "where"),
    [
        ({"owners": (("Deployment", "web"),)}, "Deployment", "change or delete the Deployment"),
        ({"owners": (("ExternalSecret", "db"),)}, "ExternalSecret", "delete the ExternalSecret"),
        ({"owners": (("SealedSecret", "db"),)}, "SealedSecret", "its file in Git"),
        (
            {
                "type": "kubernetes.io/service-account-token",
                "annotations": {"kubernetes.io/service-account.name": "builder"},
            },
            "ServiceAccount",
            "token controller",
        ),
        ({"type": "bootstrap.kubernetes.io/token"}, "bootstrap token", "kubeadm token delete"),
        ({"type": "helm.sh/release.v1", "labels": {"name": "web"}}, "Helm release", "helm"),
        (
            {"annotations": {"cert-manager.io/certificate-name": "web"}},
            "cert-manager Certificate",
            "delete the Certificate",
        ),
        (
            {"labels": {"reconcile.external-secrets.io/created-by": "abc"}},
            "ExternalSecret",
            "delete the ExternalSecret",
        ),
        (
            {"annotations": {"sealedsecrets.bitnami.com/cluster-wide": "true"}},
            "SealedSecret",
            "file in Git",
        ),
        ({"labels": {"argocd.argoproj.io/instance": "shop"}}, "Argo CD Application", "Git"),
        (
            {"annotations": {"argocd.argoproj.io/tracking-id": "shop:/Secret:ns/s"}},
            "Argo CD Application",
            "Git",
        ),
        ({"labels": {"app.kubernetes.io/instance": "shop"}}, "Argo CD Application", "chart"),
        (
            {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}},
            "Flux Kustomization",
            "Git source",
        ),
        ({"labels": {"helm.toolkit.fluxcd.io/name": "web"}}, "Flux HelmRelease", "values"),
        ({"labels": {"app.kubernetes.io/managed-by": "Helm"}}, "Helm release", "chart values"),
        ({"annotations": {"meta.helm.sh/release-name": "web"}}, "Helm release", "uninstall"),
        ({"labels": {"app.kubernetes.io/managed-by": "my-operator"}}, "my-operator", "tool"),
    ],
)
def test_each_manager_keeps_the_secret_and_says_where_to_delete_it(
    kw: dict[str, Any], kind: str, where: str
) -> None:
    uses = manager_uses(_meta(**kw))
    assert uses, "a managed Secret must have a use"
    assert uses[0].kind == kind
    assert uses[0].via in {"ownedBy", "managedBy"}
    assert where in str(uses[0])


def test_secret_meta_keeps_metadata_only() -> None:
    meta = secret_meta(
        {
            "metadata": {
                "name": "db",
                "uid": "1-2",
                "resourceVersion": "7",
                "labels": {"a": "b"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": '{"data": "Q0FOQVJZ"}',
                    "note": "kept",
                },
                "ownerReferences": [{"kind": "ExternalSecret", "name": "db"}],
            },
            "data": {"password": "Q0FOQVJZ"},
        },
        "shop",
        "Opaque",
    )
    assert (meta.name, meta.namespace, meta.uid, meta.resource_version) == (
        "db",
        "shop",
        "1-2",
        "7",
    )
    assert meta.owners == (("ExternalSecret", "db"),)
    assert "Q0FOQVJZ" not in repr(meta)
    assert meta.annotations == {"note": "kept"}  # kubectl apply's copy holds the values


def test_ingress_annotations_that_name_secrets() -> None:
    ing = {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": {
                "nginx.ingress.kubernetes.io/auth-secret": "basic",
                "nginx.ingress.kubernetes.io/auth-tls-secret": "other/ca",
                "example.com/upstream-secret-name": "a, b",
                "traefik.example/tlsSecretName": "t",
                "nginx.ingress.kubernetes.io/auth-type": "basic",
                "note": "secret",
            },
        }
    }
    assert sorted(ingress_annotation_refs(ing)) == [
        ("example.com/upstream-secret-name", None, "a"),
        ("example.com/upstream-secret-name", None, "b"),
        ("nginx.ingress.kubernetes.io/auth-secret", None, "basic"),
        ("nginx.ingress.kubernetes.io/auth-tls-secret", "other", "ca"),
        ("traefik.example/tlsSecretName", None, "t"),
    ]
    # in its own namespace: the bare names; "other/ca" is counted by the cluster-wide pass
    assert {(u.secret, u.via) for u in object_uses("Ingress", ing)} == {
        ("basic", "ingressAnnotation"),
        ("a", "ingressAnnotation"),
        ("b", "ingressAnnotation"),
        ("t", "ingressAnnotation"),
    }


def test_a_core_pod_template_is_a_user() -> None:
    obj = {
        "metadata": {"name": "tpl"},
        "template": {
            "spec": {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "db"}}]}]}
        },
    }
    (use,) = object_uses("PodTemplate", obj)
    assert (use.secret, use.kind, use.via) == ("db", "PodTemplate", "podTemplate")
    assert "envFrom" in use.detail


def test_persistent_volume_secret_refs() -> None:
    pv = {
        "metadata": {"name": "pv1"},
        "spec": {
            "csi": {
                "driver": "x",
                "nodeStageSecretRef": {"name": "stage", "namespace": "storage"},
                "controllerExpandSecretRef": {"name": "expand", "namespace": "storage"},
            },
            "azureFile": {"secretName": "az"},
        },
    }
    refs = {(r.namespace, r.secret) for r in pv_refs(pv)}
    assert refs == {("storage", "stage"), ("storage", "expand"), (None, "az")}


def test_storage_class_parameters_and_templates() -> None:
    sc = {
        "metadata": {"name": "fast"},
        "parameters": {
            "csi.storage.k8s.io/provisioner-secret-name": "prov",
            "csi.storage.k8s.io/provisioner-secret-namespace": "storage",
            "csi.storage.k8s.io/node-stage-secret-name": "stage",
            "csi.storage.k8s.io/node-stage-secret-namespace": "${pvc.namespace}",
            "csi.storage.k8s.io/node-publish-secret-name": "${pvc.name}-key",
            "csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}",
            "csi.storage.k8s.io/controller-expand-secret-name": (
                "${pvc.annotations['team.example/key']}"
            ),
            "csi.storage.k8s.io/controller-expand-secret-namespace": "keys",
            "adminSecretName": "admin",
        },
    }
    claims = [{"metadata": {"name": "data", "namespace": "shop", "annotations": {}}}]
    refs = {(r.namespace, r.secret) for r in storage_class_refs(sc, claims)}
    assert refs == {
        ("storage", "prov"),
        (None, "stage"),  # a template namespace: any namespace
        ("shop", "data-key"),
        ("keys", None),  # the annotation is missing: any Secret of "keys"
        (None, "admin"),  # no namespace: any namespace
    }
    unknown = {(r.namespace, r.secret) for r in storage_class_refs(sc, None)}
    assert (None, None) in unknown
    assert ClusterRef(None, None, "StorageClass", "x", "storageClass", "").matches(
        "ns", ["a", "b"]
    ) == ["a", "b"]


def test_gateway_certificate_refs_honour_cross_namespace_refs() -> None:
    gw = {
        "metadata": {"name": "gw", "namespace": "infra"},
        "spec": {
            "listeners": [
                {"tls": {"certificateRefs": [{"name": "local"}]}},
                {
                    "tls": {
                        "certificateRefs": [{"kind": "Secret", "name": "x", "namespace": "shop"}]
                    }
                },
                {
                    "tls": {
                        "certificateRefs": [{"group": "example.com", "kind": "Cert", "name": "y"}]
                    }
                },
            ]
        },
    }
    assert {(r.namespace, r.secret) for r in gateway_refs("Gateway", gw)} == {
        ("infra", "local"),
        ("shop", "x"),
    }
    policy = {
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {
            "validation": {"caCertificateRefs": [{"group": "", "kind": "Secret", "name": "ca"}]}
        },
    }
    assert {(r.namespace, r.secret) for r in gateway_refs("BackendTLSPolicy", policy)} == {
        ("shop", "ca")
    }


def test_custom_resource_string_match_skips_managed_fields() -> None:
    obj = {
        "metadata": {
            "name": "db",
            "namespace": "shop",
            "managedFields": [{"manager": "hidden-secret"}],
        },
        "spec": {
            "auth": {"secretRef": {"name": "creds", "namespace": "vault"}},
            "target": "other/tls",
            "n": 3,
        },
    }
    strings, pairs = custom_resource_strings(obj)
    assert {"db", "creds", "other/tls"} <= strings
    assert "hidden-secret" not in strings
    assert {("vault", "creds"), ("other", "tls")} <= pairs


def test_secret_rule_names_reads_resource_names_of_secret_rules_only() -> None:
    roles = [
        {
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["argocd-secret"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cm"]},
                {"apiGroups": ["*"], "resources": ["*"], "resourceNames": ["wild"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
            ]
        }
    ]
    assert secret_rule_names(roles) == {"argocd-secret", "wild"}


def test_aggregated_discovery_lists_listable_kinds_once_per_resource() -> None:
    doc = {
        "kind": "APIGroupDiscoveryList",
        "items": [
            {
                "metadata": {"name": "example.com"},
                "versions": [
                    {
                        "version": "v2",
                        "resources": [
                            {
                                "resource": "widgets",
                                "responseKind": {"kind": "Widget"},
                                "scope": "Namespaced",
                                "verbs": ["get", "list"],
                            },
                            {"resource": "nolist", "scope": "Cluster", "verbs": ["get"]},
                        ],
                    },
                    {
                        "version": "v1",
                        "resources": [
                            {"resource": "widgets", "scope": "Namespaced", "verbs": ["list"]}
                        ],
                    },
                ],
            }
        ],
    }
    (kind,) = _aggregated_kinds(doc)
    assert (kind.group, kind.version, kind.plural, kind.kind, kind.namespaced) == (
        "example.com",
        "v2",
        "widgets",
        "Widget",
        True,
    )
    assert kind.path("shop") == "/apis/example.com/v2/namespaces/shop/widgets"


def test_audit_text_says_who_manages_a_kept_secret_and_where_to_delete_it() -> None:
    from cloudtaser.target.audit.collect import build_report, namespace_report
    from cloudtaser.target.audit.render import to_text
    from cloudtaser.target.references.scan import Scan

    meta = _meta(name="db", labels={"app.kubernetes.io/managed-by": "Helm"})
    found = Scan(namespace="shop", uses=manager_uses(meta), secrets={"db": meta})
    part = namespace_report("shop", found, [{"metadata": {"name": "db"}, "type": "Opaque"}], [])
    assert part.summary.secrets_unused == 0
    text = to_text(build_report([part], cluster="https://k"))
    assert "Secret db: Helm release ? (managedBy: Helm manages it" in text
    assert "chart values" in text
