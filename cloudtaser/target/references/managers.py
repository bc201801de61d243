"""Secrets that something else owns or manages: never deletable by cloudtaser.

Each rule reads a Secret's metadata only (type, labels, annotations, ``ownerReferences``; never
a value) and yields a :class:`~cloudtaser.target.references.uses.SecretUse` whose text names the
manager and where to delete the Secret instead. The rules, in order:

- any ``metadata.ownerReferences`` entry (``ownedBy``): the owner recreates or garbage-collects
  it (an ``ExternalSecret`` or ``SealedSecret`` owner gets its own advice);
- type ``kubernetes.io/service-account-token`` (the token controller), type
  ``bootstrap.kubernetes.io/token`` (nodes joining the cluster), type ``helm.sh/release.v1``
  (Helm's release record);
- cert-manager: any ``cert-manager.io/*`` annotation;
- external-secrets: any ``reconcile.external-secrets.io/*`` or ``external-secrets.io/*`` label
  or annotation;
- sealed-secrets: any ``sealedsecrets.bitnami.com/*`` annotation;
- Argo CD: label ``argocd.argoproj.io/instance``, annotation ``argocd.argoproj.io/tracking-id``,
  or label ``app.kubernetes.io/instance`` (Argo CD's default tracking label, also set by Helm
  charts: either way a tool owns the Secret);
- Flux: any ``kustomize.toolkit.fluxcd.io/*`` or ``helm.toolkit.fluxcd.io/*`` label;
- Helm and other tools: label ``app.kubernetes.io/managed-by`` (any value) or annotation
  ``meta.helm.sh/release-name``.

Every matching rule yields its own use (``via`` ``ownedBy`` or ``managedBy``): more than one
manager may claim a Secret, and the reviewer should see each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cloudtaser.target.owners import (
    ARGO_INSTANCE_LABEL,
    ARGO_TRACKING_ID,
    CERT_MANAGER_CERTIFICATE,
    HELM_MANAGED_BY,
    HELM_RELEASE_NAME,
    INSTANCE_LABEL,
)
from cloudtaser.target.references.uses import SecretMeta, SecretUse

__all__ = ["manager_uses"]

_CERT_MANAGER: Final = "cert-manager.io/"
_EXTERNAL_SECRETS: Final = ("reconcile.external-secrets.io/", "external-secrets.io/")
_SEALED_SECRETS: Final = "sealedsecrets.bitnami.com/"
_FLUX: Final = (
    ("kustomize.toolkit.fluxcd.io/", "Flux Kustomization", "the Kustomization's Git source"),
    ("helm.toolkit.fluxcd.io/", "Flux HelmRelease", "the HelmRelease's values in Git"),
)
_OWNER_ADVICE: Final = {
    "ExternalSecret": "delete the ExternalSecret instead (the value stays in the external store)",
    "SealedSecret": "delete the SealedSecret and its file in Git instead",
}


def _prefixed(items: Mapping[str, str], prefixes: str | tuple[str, ...]) -> list[str]:
    return sorted(k for k in items if k.startswith(prefixes))


def manager_uses(meta: SecretMeta) -> list[SecretUse]:
    """Who owns or manages the Secret ``meta`` describes (empty: nobody says so)."""
    uses: list[SecretUse] = []
    labels, annotations = meta.labels, meta.annotations

    def add(kind: str, name: str, via: str, detail: str) -> None:
        uses.append(SecretUse(meta.name, kind, name or "?", via, detail))

    for kind, name in meta.owners:
        advice = _OWNER_ADVICE.get(
            kind, f"the {kind} manages it: change or delete the {kind} instead"
        )
        add(kind, name, "ownedBy", f"metadata.ownerReferences; {advice}")
    if meta.type == "kubernetes.io/service-account-token":
        add(
            "ServiceAccount",
            annotations.get("kubernetes.io/service-account.name", ""),
            "managedBy",
            "type kubernetes.io/service-account-token, kept by the token controller; delete "
            "the ServiceAccount, or this token with kubectl once no client uses it",
        )
    if meta.type == "bootstrap.kubernetes.io/token":
        add(
            "bootstrap token",
            meta.name,
            "managedBy",
            "type bootstrap.kubernetes.io/token, used by nodes joining the cluster; remove it "
            "with `kubeadm token delete`",
        )
    if meta.type == "helm.sh/release.v1":
        add(
            "Helm release",
            labels.get("name", ""),
            "managedBy",
            "type helm.sh/release.v1, Helm's record of a release: uninstall the release "
            "(`helm uninstall`) instead",
        )
    if keys := _prefixed(annotations, _CERT_MANAGER):
        add(
            "cert-manager Certificate",
            annotations.get(CERT_MANAGER_CERTIFICATE, ""),
            "managedBy",
            f"annotation {keys[0]}; cert-manager writes it: delete the Certificate (or the "
            "annotation that requests it) instead",
        )
    if keys := _prefixed(labels, _EXTERNAL_SECRETS) + _prefixed(annotations, _EXTERNAL_SECRETS):
        add(
            "ExternalSecret",
            "",
            "managedBy",
            f"{keys[0]}; external-secrets writes it: delete the ExternalSecret instead",
        )
    if keys := _prefixed(annotations, _SEALED_SECRETS):
        add(
            "SealedSecret",
            meta.name,
            "managedBy",
            f"annotation {keys[0]}; the sealed-secrets controller writes it: delete the "
            "SealedSecret and its file in Git instead",
        )
    argo = (
        (f"label {ARGO_INSTANCE_LABEL}", labels.get(ARGO_INSTANCE_LABEL)),
        (
            f"annotation {ARGO_TRACKING_ID}",
            (annotations.get(ARGO_TRACKING_ID) or "").split(":", 1)[0] or None,
        ),
        (f"label {INSTANCE_LABEL}", labels.get(INSTANCE_LABEL)),
    )
    for where, app in argo:
        if app:
            add(
                "Argo CD Application",
                app,
                "managedBy",
                f"{where} (Argo CD tracking; Helm sets app.kubernetes.io/instance too): remove "
                "it from the application's source in Git or the chart values instead",
            )
            break
    for prefix, kind, where in _FLUX:
        if keys := _prefixed(labels, prefix):
            add(
                kind,
                labels.get(f"{prefix}name", ""),
                "managedBy",
                f"label {keys[0]}; Flux re-applies it: remove it from {where} instead",
            )
    managed_by = labels.get(HELM_MANAGED_BY, "")
    release = annotations.get(HELM_RELEASE_NAME, "")
    if release or managed_by.lower() == "helm":
        add(
            "Helm release",
            release,
            "managedBy",
            "Helm manages it (label app.kubernetes.io/managed-by / annotation "
            "meta.helm.sh/release-name): remove it from the chart values or uninstall the "
            "release instead",
        )
    elif managed_by:
        add(
            managed_by,
            "",
            "managedBy",
            f"label app.kubernetes.io/managed-by={managed_by}: delete it through that tool",
        )
    return uses
