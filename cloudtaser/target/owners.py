"""Who owns a workload or a Secret: the one set of rules, pure functions over object metadata.

An *owner* writes the object from elsewhere, so a live change to it may not last (what each
tool does to a live change: docs/gitops.md). The evidence is what each tool really writes:

- Argo CD: annotation ``argocd.argoproj.io/tracking-id: <app>:<group>/<kind>:<ns>/<name>``
  (the default tracking method since Argo CD 3.0; ``<app>`` is ``<namespace>_<name>`` for an
  Application outside Argo CD's own namespace); label ``argocd.argoproj.io/instance`` (custom
  label tracking); label ``app.kubernetes.io/instance`` (the label tracking of Argo CD < 3.0 --
  but every Helm chart sets it too: **ambiguous**).
- Flux: labels ``kustomize.toolkit.fluxcd.io/name`` + ``/namespace`` (kustomize-controller:
  a ``Kustomization``), ``helm.toolkit.fluxcd.io/name`` + ``/namespace`` (helm-controller: a
  ``HelmRelease``).
- Helm: annotations ``meta.helm.sh/release-name`` + ``meta.helm.sh/release-namespace`` (Helm 3
  writes them on every object it installs); label ``app.kubernetes.io/managed-by: Helm``
  alone is only the chart's template, also there when Argo CD or ``helm template`` rendered
  the chart: **ambiguous**.
- Secrets only: an ``ownerReference`` of kind ``ExternalSecret`` (external-secrets.io) or
  ``SealedSecret`` (bitnami.com); cert-manager's annotation ``cert-manager.io/certificate-name``.

One owner per object, the most specific first: the operator that writes a Secret's data, then
Argo CD's tracking id, Flux's HelmRelease, Flux's Kustomization, a Helm release, then the
ambiguous labels. Only names are read from the metadata (never ``last-applied-configuration``,
which can hold a Secret's values).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cloudtaser.plan.model import Owner
from cloudtaser.plan.rules import DNS_LABEL

__all__ = [
    "ARGO_INSTANCE_LABEL",
    "ARGO_TRACKING_ID",
    "CERT_MANAGER_CERTIFICATE",
    "FLUX_HELM_NAME",
    "FLUX_HELM_NAMESPACE",
    "FLUX_KUSTOMIZE_NAME",
    "FLUX_KUSTOMIZE_NAMESPACE",
    "HELM_MANAGED_BY",
    "HELM_RELEASE_NAME",
    "HELM_RELEASE_NAMESPACE",
    "INSTANCE_LABEL",
    "describe",
    "secret_owner",
    "workload_owner",
]

ARGO_TRACKING_ID: Final = "argocd.argoproj.io/tracking-id"
ARGO_INSTANCE_LABEL: Final = "argocd.argoproj.io/instance"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
FLUX_KUSTOMIZE_NAME: Final = "kustomize.toolkit.fluxcd.io/name"
FLUX_KUSTOMIZE_NAMESPACE: Final = "kustomize.toolkit.fluxcd.io/namespace"
FLUX_HELM_NAME: Final = "helm.toolkit.fluxcd.io/name"
FLUX_HELM_NAMESPACE: Final = "helm.toolkit.fluxcd.io/namespace"
HELM_RELEASE_NAME: Final = "meta.helm.sh/release-name"
HELM_RELEASE_NAMESPACE: Final = "meta.helm.sh/release-namespace"
HELM_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
CERT_MANAGER_CERTIFICATE: Final = "cert-manager.io/certificate-name"
_SECRET_OPERATORS: Final = {
    # ownerReference (group, kind) -> tool
    ("external-secrets.io", "ExternalSecret"): "external-secrets",
    ("bitnami.com", "SealedSecret"): "sealed-secrets",
}
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_NAMESPACE_RE: Final = re.compile(DNS_LABEL)
_TOOL_NAMES: Final = {
    "argocd": "Argo CD",
    "flux": "Flux",
    "helm": "Helm",
    "external-secrets": "External Secrets",
    "sealed-secrets": "Sealed Secrets",
    "cert-manager": "cert-manager",
}


def _str_map(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _name(value: str | None) -> str | None:
    return value if value and _NAME_RE.fullmatch(value) else None


def _namespace(value: str | None) -> str | None:
    return value if value and _NAMESPACE_RE.fullmatch(value) else None


def _argo_tracking(annotations: Mapping[str, str]) -> Owner | None:
    raw = annotations.get(ARGO_TRACKING_ID)
    if not raw or ":" not in raw:
        return None
    app = raw.split(":", 1)[0]
    namespace, _, name = app.rpartition("_") if "_" in app else ("", "", app)
    if not _name(name):
        return None
    return Owner(
        tool="argocd",
        kind="Application",
        name=name,
        namespace=_namespace(namespace),
        evidence=f"annotation {ARGO_TRACKING_ID}",
    )


def _flux(labels: Mapping[str, str]) -> Owner | None:
    for name_label, ns_label, kind in (
        (FLUX_HELM_NAME, FLUX_HELM_NAMESPACE, "HelmRelease"),
        (FLUX_KUSTOMIZE_NAME, FLUX_KUSTOMIZE_NAMESPACE, "Kustomization"),
    ):
        name = _name(labels.get(name_label))
        if name:
            return Owner(
                tool="flux",
                kind=kind,  # type: ignore[arg-type]  # one of the two literals above
                name=name,
                namespace=_namespace(labels.get(ns_label)),
                evidence=f"labels {name_label}, {ns_label}",
            )
    return None


def _helm(labels: Mapping[str, str], annotations: Mapping[str, str]) -> Owner | None:
    release = _name(annotations.get(HELM_RELEASE_NAME))
    if release:
        return Owner(
            tool="helm",
            kind="Release",
            name=release,
            namespace=_namespace(annotations.get(HELM_RELEASE_NAMESPACE)),
            evidence=f"annotations {HELM_RELEASE_NAME}, {HELM_RELEASE_NAMESPACE}",
        )
    instance = _name(labels.get(INSTANCE_LABEL))
    if labels.get(HELM_MANAGED_BY) == "Helm" and instance:
        return Owner(
            tool="helm",
            kind="Release",
            name=instance,
            evidence=(
                f"labels {HELM_MANAGED_BY}=Helm, {INSTANCE_LABEL} without {HELM_RELEASE_NAME} "
                "(a chart rendered by another tool, e.g. Argo CD or helm template, looks the same)"
            ),
            ambiguous=True,
        )
    return None


def _argo_labels(labels: Mapping[str, str]) -> Owner | None:
    name = _name(labels.get(ARGO_INSTANCE_LABEL))
    if name:
        return Owner(
            tool="argocd", kind="Application", name=name, evidence=f"label {ARGO_INSTANCE_LABEL}"
        )
    name = _name(labels.get(INSTANCE_LABEL))
    if name:
        return Owner(
            tool="argocd",
            kind="Application",
            name=name,
            evidence=f"label {INSTANCE_LABEL} (Argo CD label tracking; Helm charts set it too)",
            ambiguous=True,
        )
    return None


def workload_owner(metadata: Mapping[str, Any]) -> Owner | None:
    """The owner of a workload from its ``metadata`` (API dict form), or None."""
    labels = _str_map(metadata.get("labels"))
    annotations = _str_map(metadata.get("annotations"))
    return (
        _argo_tracking(annotations)
        or _flux(labels)
        or _helm(labels, annotations)
        or _argo_labels(labels)
    )


def _operator(owner_refs: Sequence[Any], annotations: Mapping[str, str]) -> Owner | None:
    for ref in owner_refs:
        if not isinstance(ref, Mapping):
            continue
        group = str(ref.get("apiVersion") or "").split("/", 1)[0]
        kind = str(ref.get("kind") or "")
        tool = _SECRET_OPERATORS.get((group, kind))
        name = _name(ref.get("name"))
        if tool and name:
            return Owner(
                tool=tool,  # type: ignore[arg-type]  # a value of _SECRET_OPERATORS
                kind=kind,  # type: ignore[arg-type]  # its key's kind
                name=name,
                evidence=f"ownerReference {kind} ({group})",
            )
    name = _name(annotations.get(CERT_MANAGER_CERTIFICATE))
    if name:
        return Owner(
            tool="cert-manager",
            kind="Certificate",
            name=name,
            evidence=f"annotation {CERT_MANAGER_CERTIFICATE}",
        )
    return None


def secret_owner(metadata: Mapping[str, Any]) -> Owner | None:
    """The owner of a Secret from its ``metadata``: the operator that writes its data first
    (the ExternalSecret, SealedSecret or Certificate is what Git holds), else as a workload."""
    refs = metadata.get("ownerReferences")
    annotations = _str_map(metadata.get("annotations"))
    found = _operator(refs if isinstance(refs, Sequence) else (), annotations)
    return found or workload_owner(metadata)


def describe(owner: Owner) -> str:
    """``Flux Kustomization flux-system/apps`` (``possibly`` first when ambiguous)."""
    where = f"{owner.namespace}/{owner.name}" if owner.namespace else owner.name
    text = f"{_TOOL_NAMES[owner.tool]} {owner.kind} {where}"
    return f"possibly {text}" if owner.ambiguous else text
