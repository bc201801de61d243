"""The paginated cluster scan: every Deployment, StatefulSet and DaemonSet, one paginated list
per kind and scope (cluster-wide, or each chosen namespace), read into
:class:`~cloudtaser.target.discover.scanned.ScannedWorkload` values.

A forbidden cluster-wide list falls back to one list per namespace (when namespaces may be
listed); a forbidden namespace is recorded as unreadable, not an error, unless nothing at all
could be listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec
from lightkube import operators
from lightkube.resources import apps_v1
from lightkube.resources.core_v1 import Namespace

from cloudtaser.errors import (
    ClusterAuthError,
    ClusterError,
    ClusterForbiddenError,
    ClusterInvalidError,
    ConfigError,
)
from cloudtaser.plan.model import WorkloadKind
from cloudtaser.progress import Counter, Progress
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload
from cloudtaser.target.kube.errors import api_errors
from cloudtaser.target.owners import workload_owner

if TYPE_CHECKING:
    from lightkube import Client

__all__ = ["CHUNK_SIZE", "scan_workloads"]

#: Page size of every list call.
CHUNK_SIZE: Final = 500

_RESOURCES: Final = {
    WorkloadKind.DEPLOYMENT: (apps_v1.Deployment, "deployments"),
    WorkloadKind.STATEFUL_SET: (apps_v1.StatefulSet, "statefulsets"),
    WorkloadKind.DAEMON_SET: (apps_v1.DaemonSet, "daemonsets"),
}


class _RawSelector(operators.Operator[str]):
    """A label selector passed to the API server as the user wrote it."""

    def encode(self, key: str) -> str:
        return str(self.value)


def _selector_labels(selector: str | None) -> Any:
    """lightkube takes selectors as pairs; hand it the user's raw selector string."""
    if not selector:
        return None
    return [("", _RawSelector("raw", "", selector.strip()))]


def _list(
    client: Client,
    resource: Any,
    *,
    namespace: str,
    action: str,
    labels: Any = None,
    selector: str | None = None,
) -> Iterator[Any]:
    try:
        with api_errors(action):
            yield from client.list(
                resource, namespace=namespace, chunk_size=CHUNK_SIZE, labels=labels
            )
    except ClusterInvalidError as exc:
        if selector:
            raise ConfigError(f"the API server rejected --selector {selector!r}: {exc}") from None
        raise


def _scanned(kind: WorkloadKind, obj: Any) -> ScannedWorkload:
    spec = obj.spec
    replicas = None
    if kind is not WorkloadKind.DAEMON_SET:
        replicas = spec.replicas if spec.replicas is not None else 1
    return ScannedWorkload(
        namespace=str(obj.metadata.namespace),
        kind=kind,
        name=str(obj.metadata.name),
        template=msgspec.to_builtins(spec.template),
        replicas=replicas,
        owner=workload_owner(
            {"labels": obj.metadata.labels or {}, "annotations": obj.metadata.annotations or {}}
        ),
    )


def _list_namespaces(client: Client) -> list[str]:
    with api_errors("list namespaces (needed because the cluster-wide list was forbidden)"):
        return sorted(
            str(ns.metadata.name)
            for ns in client.list(Namespace, chunk_size=CHUNK_SIZE)
            if ns.metadata is not None and ns.metadata.name
        )


def scan_workloads(
    client: Client,
    options: DiscoverOptions,
    progress: Progress,
    unreadable: list[str],
    warnings: list[str],
) -> tuple[list[ScannedWorkload], int | None]:
    """Every workload ``options`` selects, and how many namespaces were scanned (None when
    the cluster-wide lists answered, so the namespaces are those the workloads name).

    Namespaces that could not be read are appended to ``unreadable``; chosen namespaces that
    are excluded to ``warnings``.
    """
    labels = _selector_labels(options.selector)
    excluded = options.excluded()
    out: list[ScannedWorkload] = []
    namespaces: list[str] | None = None
    if options.namespaces:
        namespaces = sorted(set(options.namespaces))
        warnings.extend(
            f"namespace {ns} is excluded from discovery (system namespace or "
            "--exclude-namespace); not scanned"
            for ns in namespaces
            if ns in excluded
        )
        namespaces = [ns for ns in namespaces if ns not in excluded]
    first_error: ClusterError | None = None
    all_namespaces: list[str] | None = None
    attempts = successes = 0
    # the live counter counts list calls: one per kind and scope (all namespaces, or each
    # chosen namespace; a forbidden cluster-wide list turns into one per namespace)
    lists = Counter(progress, 0, "listed {plural} in {where}", milestones=False)
    kinds = list(_RESOURCES.items())
    for index, (kind, (resource, plural)) in enumerate(kinds):
        scopes: list[str] = namespaces if namespaces is not None else ["*"]
        if namespaces is None:
            progress(f"listing {plural} in all namespaces")
        else:
            progress(f"listing {plural} in {len(namespaces)} namespace(s)")
        count = 0
        pending_scopes = list(scopes)
        while pending_scopes:
            ns = pending_scopes.pop(0)
            where = "all namespaces" if ns == "*" else f"namespace {ns}"
            attempts += 1
            try:
                for obj in _list(
                    client,
                    resource,
                    namespace=ns,
                    action=f"list {plural}.apps in {where}",
                    labels=labels,
                    selector=options.selector,
                ):
                    out.append(_scanned(kind, obj))
                    count += 1
                    if count % 1000 == 0:
                        progress(f"  {count} {plural} so far")
                successes += 1
                later = (len(kinds) - index - 1) * len(scopes)
                lists.advance(remaining=len(pending_scopes) + later, plural=plural, where=where)
            except ClusterForbiddenError as exc:
                first_error = first_error or exc
                if ns == "*":
                    # fall back to one list per namespace, if we may list namespaces
                    if all_namespaces is None:
                        try:
                            all_namespaces = _list_namespaces(client)
                        except ClusterForbiddenError:
                            raise ClusterAuthError(
                                f"cannot list {plural}.apps in all namespaces: permission denied "
                                f"(403). discover needs 'list {plural}' in API group apps "
                                "cluster-wide, or 'list namespaces' to fall back to "
                                "per-namespace lists, or --namespace NS for namespaces you may "
                                "read",
                                status=403,
                            ) from exc
                    progress(f"listing {plural} cluster-wide is forbidden; listing per namespace")
                    pending_scopes = [n for n in all_namespaces if n not in excluded]
                    continue
                unreadable.append(f"list {plural}.apps in namespace {ns}: permission denied")
                lists.skip()
        progress(f"found {count} {plural}")
    if attempts and not successes and first_error is not None:
        raise first_error
    scanned = namespaces if namespaces is not None else all_namespaces
    return out, (len([n for n in scanned if n not in excluded]) if scanned is not None else None)
