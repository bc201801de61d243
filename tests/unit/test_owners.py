"""Who owns a workload or a Secret (cloudtaser.target.owners), on metadata shaped like what each
tool really writes, and the owner discover records in the plan (the pure builder)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cloudtaser import plan as planlib
from cloudtaser.plan.model import Owner
from cloudtaser.target.discover.entry import Entry, workload_entry
from cloudtaser.target.discover.naming import PathTemplate
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.owners import describe, secret_owner, workload_owner

# --- what each tool writes (from their docs / source; see cloudtaser/target/owners.py) --------

# Argo CD >= 3.0, annotation tracking (the default); app in Argo CD's own namespace
ARGO_TRACKING = {
    "annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/api"},
    "labels": {"app": "api"},
}
# Argo CD "apps in any namespace": <namespace>_<name>
ARGO_TRACKING_NS = {
    "annotations": {"argocd.argoproj.io/tracking-id": "team-a_shop:apps/Deployment:shop/api"}
}
# Argo CD rendering a Helm chart with annotation tracking: the chart's labels are there too
ARGO_HELM_CHART = {
    "annotations": {"argocd.argoproj.io/tracking-id": "web:apps/Deployment:web/web-nginx"},
    "labels": {
        "app.kubernetes.io/instance": "web",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": "nginx-18.1.0",
    },
}
# Argo CD < 3.0 label tracking (or any tool setting the recommended label)
ARGO_LABEL = {"labels": {"app.kubernetes.io/instance": "shop"}}
ARGO_CUSTOM_LABEL = {"labels": {"argocd.argoproj.io/instance": "shop"}}
# Flux kustomize-controller (as the test bed's real controller writes them)
FLUX_KS = {
    "labels": {
        "kustomize.toolkit.fluxcd.io/name": "apps",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    }
}
# Flux helm-controller: Helm's own annotations and labels, plus Flux's labels
FLUX_HR = {
    "annotations": {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "web"},
    "labels": {
        "app.kubernetes.io/instance": "web",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.toolkit.fluxcd.io/name": "web",
        "helm.toolkit.fluxcd.io/namespace": "flux-system",
    },
}
# helm install / upgrade (Helm 3)
HELM = {
    "annotations": {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "web"},
    "labels": {"app.kubernetes.io/instance": "web", "app.kubernetes.io/managed-by": "Helm"},
}
# `helm template | kubectl apply`, or Argo CD < 3.0 rendering a chart: no meta.helm.sh/*
HELM_TEMPLATE = {
    "labels": {"app.kubernetes.io/instance": "web", "app.kubernetes.io/managed-by": "Helm"}
}
EXTERNAL_SECRET = {
    "ownerReferences": [
        {
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "name": "db",
            "uid": "5b0c7a4e-0000-4000-8000-000000000001",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ],
    "labels": {"reconcile.external-secrets.io/created-by": "c0ffee"},
    "annotations": {"reconcile.external-secrets.io/data-hash": "0123abcd"},
}
SEALED_SECRET = {
    "ownerReferences": [
        {
            "apiVersion": "bitnami.com/v1alpha1",
            "kind": "SealedSecret",
            "name": "db",
            "uid": "5b0c7a4e-0000-4000-8000-000000000002",
            "controller": True,
        }
    ],
    # a SealedSecret in Git applied by Flux: the operator is still what writes the data
    "labels": dict(FLUX_KS["labels"]),
}
CERT_MANAGER = {
    "annotations": {
        "cert-manager.io/certificate-name": "api-tls",
        "cert-manager.io/issuer-name": "letsencrypt",
        "cert-manager.io/issuer-kind": "ClusterIssuer",
        "cert-manager.io/common-name": "api.example.com",
    },
    "labels": {"controller.cert-manager.io/fao": "true"},
}


def _owner(**kw: Any) -> Owner:
    return Owner(**kw)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (ARGO_TRACKING, ("argocd", "Application", "shop", None, False)),
        (ARGO_TRACKING_NS, ("argocd", "Application", "shop", "team-a", False)),
        (ARGO_HELM_CHART, ("argocd", "Application", "web", None, False)),
        (ARGO_LABEL, ("argocd", "Application", "shop", None, True)),
        (ARGO_CUSTOM_LABEL, ("argocd", "Application", "shop", None, False)),
        (FLUX_KS, ("flux", "Kustomization", "apps", "flux-system", False)),
        (FLUX_HR, ("flux", "HelmRelease", "web", "flux-system", False)),
        (HELM, ("helm", "Release", "web", "web", False)),
        (HELM_TEMPLATE, ("helm", "Release", "web", None, True)),
    ],
    ids=[
        "argo-tracking", "argo-any-namespace", "argo-helm-chart", "argo-instance-label",
        "argo-custom-label", "flux-kustomization", "flux-helmrelease", "helm", "helm-template",
    ],
)  # fmt: skip
def test_workload_owner_from_what_each_tool_writes(
    meta: dict[str, Any], expected: tuple[str, str, str, str | None, bool]
) -> None:
    owner = workload_owner(meta)
    assert owner is not None
    assert (owner.tool, owner.kind, owner.name, owner.namespace, owner.ambiguous) == expected
    assert owner.evidence  # always says which label/annotation


def test_no_owner_and_hostile_values_are_not_recorded() -> None:
    assert workload_owner({}) is None
    assert workload_owner({"labels": {"app": "api"}, "annotations": {"team": "x"}}) is None
    # not a tracking id (no ':'), names with newlines or spaces, non-string values
    assert workload_owner({"annotations": {"argocd.argoproj.io/tracking-id": "shop"}}) is None
    assert workload_owner({"labels": {"kustomize.toolkit.fluxcd.io/name": "a\nb"}}) is None
    assert workload_owner({"labels": {"app.kubernetes.io/instance": 7}}) is None
    assert workload_owner({"labels": None, "annotations": []}) is None
    # a bad namespace is dropped, the name kept
    owner = workload_owner(
        {
            "labels": {
                "kustomize.toolkit.fluxcd.io/name": "apps",
                "kustomize.toolkit.fluxcd.io/namespace": "Not_A_Namespace",
            }
        }
    )
    assert owner is not None
    assert (owner.name, owner.namespace) == ("apps", None)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (EXTERNAL_SECRET, ("external-secrets", "ExternalSecret", "db")),
        (SEALED_SECRET, ("sealed-secrets", "SealedSecret", "db")),
        (CERT_MANAGER, ("cert-manager", "Certificate", "api-tls")),
        (FLUX_KS, ("flux", "Kustomization", "apps")),
        (HELM, ("helm", "Release", "web")),
    ],
    ids=["external-secret", "sealed-secret", "cert-manager", "flux", "helm"],
)
def test_secret_owner_prefers_the_operator_that_writes_the_data(
    meta: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    owner = secret_owner(meta)
    assert owner is not None
    assert (owner.tool, owner.kind, owner.name) == expected


def test_secret_owner_ignores_unrelated_owner_references() -> None:
    meta = {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}]}
    assert secret_owner(meta) is None
    assert secret_owner({"ownerReferences": "junk"}) is None


def test_describe_says_possibly_when_ambiguous() -> None:
    ks = workload_owner(FLUX_KS)
    label = workload_owner(ARGO_LABEL)
    assert ks is not None
    assert label is not None
    assert describe(ks) == "Flux Kustomization flux-system/apps"
    assert describe(label) == "possibly Argo CD Application shop"


# --- the plan: discover's pure builder records the owners ------------------------------------


def _template() -> dict[str, Any]:
    env = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]
    return {"spec": {"containers": [{"name": "app", "image": "x", "env": env}]}}


def test_discover_records_workload_and_secret_owner_and_the_plan_round_trips() -> None:
    scanned = ScannedWorkload(
        namespace="shop",
        kind=planlib.WorkloadKind.DEPLOYMENT,
        name="api",
        template=_template(),
        replicas=1,
        owner=workload_owner(FLUX_KS),
    )
    lookup = SecretLookup(owners={("shop", "db"): secret_owner(EXTERNAL_SECRET)})  # type: ignore[dict-item]
    entry = workload_entry(scanned, lookup, PathTemplate("{mount}/data/{namespace}/{secret}"))
    assert isinstance(entry, Entry)
    workload = entry.workload
    assert workload.owner is not None
    assert workload.owner.kind == "Kustomization"
    (ref,) = workload.secrets
    assert ref.owner is not None
    assert ref.owner.kind == "ExternalSecret"
    # the plan file form: camelCase, omitted when absent, loads back identical
    raw = msgspec.to_builtins(workload)
    flux_labels = "kustomize.toolkit.fluxcd.io/name, kustomize.toolkit.fluxcd.io/namespace"
    assert raw["owner"] == {
        "tool": "flux",
        "kind": "Kustomization",
        "name": "apps",
        "namespace": "flux-system",
        "evidence": f"labels {flux_labels}",
    }
    assert msgspec.convert(raw, planlib.Workload) == workload


def test_no_owner_leaves_the_plan_unchanged() -> None:
    scanned = ScannedWorkload(
        namespace="shop", kind=planlib.WorkloadKind.DEPLOYMENT, name="api", template=_template()
    )
    entry = workload_entry(
        scanned, SecretLookup(), PathTemplate("{mount}/data/{namespace}/{secret}")
    )
    assert isinstance(entry, Entry)
    raw = msgspec.to_builtins(entry.workload)
    assert "owner" not in raw
    assert all("owner" not in s for s in raw["secrets"])
