"""The identity of a cluster: the UID of its ``kube-system`` namespace, stable for the life of
the cluster and unique per cluster (``target connect`` records it; ``target audit`` prints it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudtaser.errors import ClusterError
from cloudtaser.target.kube.api import get_object

if TYPE_CHECKING:
    from cloudtaser.target.kube.session import KubeSession

__all__ = ["cluster_identity"]


def cluster_identity(session: KubeSession) -> str:
    """The UID of the ``kube-system`` namespace: stable and unique per cluster."""
    namespace = get_object(session, "Namespace", "kube-system", None) or {}
    uid = (namespace.get("metadata") or {}).get("uid")
    if not uid:
        raise ClusterError(
            "cannot identify the cluster: namespace kube-system has no UID (is this a "
            "Kubernetes API server?)"
        )
    return str(uid)
