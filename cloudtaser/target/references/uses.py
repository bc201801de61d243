"""What the reference scan reports, and the rules more than one of its readers applies.

- :class:`SecretUse`: one place that names a Secret (the object and how), the unit every reader
  of :mod:`cloudtaser.target.references` yields and :class:`~cloudtaser.target.references.scan.Scan`
  collects; :class:`SecretMeta` (:func:`secret_meta`): what the scan knows of a Secret itself,
  metadata only;
- :func:`listing_failure`: which listing failure makes a kind unreadable (then its Secrets are
  kept) and which stops the command;
- :func:`ingress_annotation_refs`: which Ingress annotations name a Secret (read for the scanned
  namespace by :mod:`~cloudtaser.target.references.scan`, for every other namespace by
  :mod:`~cloudtaser.target.references.cluster`).

Its own module so the scan, the cluster-wide kinds, the managers and the API readers share
these without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cloudtaser.errors import (
    ClusterAuthError,
    ClusterError,
    ClusterForbiddenError,
    ClusterUnreachableError,
)
from cloudtaser.target.kube.workloads import LAST_APPLIED
from cloudtaser.target.rollout import dig

__all__ = [
    "SecretMeta",
    "SecretUse",
    "ingress_annotation_refs",
    "listing_failure",
    "secret_meta",
]


@dataclass(frozen=True, order=True)
class SecretUse:
    """One place that names a Secret: the object and how (names only)."""

    secret: str
    kind: str
    name: str
    #: ``env``, ``envFrom``, ``volume``, ``projected``, ``plugin``, ``imagePullSecret``,
    #: ``serviceAccount``, ``ingressTLS``, ``ingressAnnotation``, ``podTemplate`` (a core
    #: PodTemplate's pod spec: the other vias name how), ``persistentVolume``,
    #: ``storageClass``, ``gatewayRef``, ``customResource``, ``apiReader``, ``managedBy`` or
    #: ``ownedBy``.
    via: str
    #: Human detail: the container, the variable or the volume.
    detail: str = ""

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.name}: {self.via}{detail}"


@dataclass(frozen=True)
class SecretMeta:
    """What the scan knows of a Secret: metadata only (never a key or a value)."""

    name: str
    namespace: str
    type: str
    uid: str
    resource_version: str
    labels: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: Without ``kubectl.kubernetes.io/last-applied-configuration``: for a Secret applied with
    #: ``kubectl apply`` it holds the whole manifest, values included.
    annotations: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: ``(kind, name)`` of each ``metadata.ownerReferences`` entry.
    owners: tuple[tuple[str, str], ...] = ()


def secret_meta(obj: Mapping[str, Any], namespace: str, type_: str) -> SecretMeta:
    """A :class:`SecretMeta` from an object's ``metadata`` (a PartialObjectMetadata)."""
    meta = obj.get("metadata") or {}

    def strings(value: Any) -> dict[str, str]:
        return (
            {str(k): str(v) for k, v in (value or {}).items()} if isinstance(value, Mapping) else {}
        )

    return SecretMeta(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or namespace),
        type=type_ or "Opaque",
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        labels=strings(meta.get("labels")),
        annotations={
            k: v for k, v in strings(meta.get("annotations")).items() if k != LAST_APPLIED
        },
        owners=tuple(
            (str(o.get("kind") or "?"), str(o.get("name") or "?"))
            for o in meta.get("ownerReferences") or ()
            if isinstance(o, Mapping)
        ),
    )


def listing_failure(exc: ClusterError) -> bool:
    """True for a failure that makes a kind unreadable (403, 404, 5xx, ...); False for one
    that must stop the command (unreachable, bad credentials)."""
    if isinstance(exc, ClusterUnreachableError):
        return False
    return not (isinstance(exc, ClusterAuthError) and not isinstance(exc, ClusterForbiddenError))


#: Ingress annotation keys (the part after the last ``/``, lower case) that name a Secret.
_ANNOTATION_KEYS: Final = frozenset({"auth-secret", "auth-tls-secret"})
_ANNOTATION_SUFFIXES: Final = ("-secret", "secret-name", "secretname")


def ingress_annotation_refs(obj: Mapping[str, Any]) -> list[tuple[str, str | None, str]]:
    """``(annotation key, namespace or None, secret)`` for each Secret an Ingress's annotations
    name: a key whose name part is ``auth-secret``, ``auth-tls-secret`` or ends in ``-secret``,
    ``secret-name`` or ``secretName`` (ingress-nginx, Traefik, HAProxy, ALB use such keys); the
    value is ``name`` or ``namespace/name``, several separated by commas."""
    out: list[tuple[str, str | None, str]] = []
    for key, value in (dig(obj, "metadata", "annotations") or {}).items():
        part = str(key).rsplit("/", 1)[-1].lower()
        if not isinstance(value, str) or not (
            part in _ANNOTATION_KEYS or part.endswith(_ANNOTATION_SUFFIXES)
        ):
            continue
        for item in value.replace(" ", ",").split(","):
            namespace, sep, name = item.strip().rpartition("/")
            if name and (not sep or (namespace and "/" not in namespace)):
                out.append((str(key), namespace or None, name))
    return out
