"""The paginated cluster scan: every Deployment, StatefulSet, DaemonSet, CronJob, Job and Argo
Rollout (only CloudTaser's first three with ``--cloudtaser-kinds-only``), one paginated list
per kind and scope (cluster-wide, or each chosen namespace), read into
:class:`~cloudtaser.target.discover.scanned.ScannedWorkload` values. Rollouts are listed only
where their CRD is installed: a 404 (no such resource) is no Rollout, not an error.

A forbidden cluster-wide list falls back to one list per namespace (when namespaces may be
listed); a forbidden namespace is recorded as unreadable, not an error, unless nothing at all
could be listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec
from lightkube import operators
from lightkube.resources.core_v1 import Namespace

from cloudtaser.errors import (
    ClusterAuthError,
    ClusterError,
    ClusterForbiddenError,
    ClusterInvalidError,
    ClusterNotFoundError,
    ConfigError,
)
from cloudtaser.plan.model import CLOUDTASER_KINDS, WorkloadKind
from cloudtaser.progress import Counter, Progress
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload
from cloudtaser.target.kube import api
from cloudtaser.target.kube.errors import api_errors
from cloudtaser.target.kube.kinds import KINDS, kind_info
from cloudtaser.target.owners import workload_owner

if TYPE_CHECKING:
    from lightkube import Client

    from cloudtaser.target.kube.session import KubeSession

__all__ = ["CHUNK_SIZE", "optional_kinds_absent", "scan_workloads"]

#: Page size of every list call.
CHUNK_SIZE: Final = 500

#: The kinds listed when their API may be missing (a CRD): a 404 means none of them.
_OPTIONAL: Final = frozenset({WorkloadKind.ROLLOUT})


def _kinds(options: DiscoverOptions, absent: frozenset[str]) -> list[WorkloadKind]:
    """The kinds a run lists, in plan order (not those whose API the cluster does not serve)."""
    return [
        WorkloadKind(k)
        for k in KINDS
        if k not in absent
        and (not options.cloudtaser_kinds_only or WorkloadKind(k) in CLOUDTASER_KINDS)
    ]


def optional_kinds_absent(session: KubeSession) -> frozenset[str]:
    """The optional kinds (a CRD: Argo Rollouts) whose API group version the cluster does not
    serve, by API discovery (which every authenticated user may read, so a user who may not
    list Rollouts is not told "unreadable" where there are none)."""
    absent: set[str] = set()
    for kind in sorted(_OPTIONAL):
        version = KINDS[kind].api_version
        try:
            found = api.get_path(
                session, f"/apis/{version}", action=f"read the API discovery of {version}"
            )
        except ClusterNotFoundError:
            found = {}
        plural = KINDS[kind].plural
        if not any(
            isinstance(r, dict) and r.get("name") == plural for r in found.get("resources") or ()
        ):
            absent.add(kind)
    return frozenset(absent)


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


def _at(obj: Any, *path: str) -> Any:
    """The value at ``path`` of a lightkube object (camelCase attributes) or of an API dict
    (a generic resource: Rollout), ``None`` where absent. Only what discover needs is
    converted, never a whole object (its managedFields and status), for fleet-size lists."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
        if obj is None:
            return None
    return obj


def _builtins(value: Any) -> Any:
    """A lightkube model (or a list of them) as API dicts; a generic resource's dicts as
    they are."""
    return value if value is None or isinstance(value, dict) else msgspec.to_builtins(value)


def _controller_of(obj: Any) -> tuple[str, str] | None:
    """(kind, name) of the object's controlling owner, if any."""
    for ref in _builtins(_at(obj, "metadata", "ownerReferences")) or ():
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None


def _scanned(kind: WorkloadKind, obj: Any) -> ScannedWorkload:
    info = kind_info(kind)
    replicas = None
    if info.replicas:
        value = _at(obj, "spec", "replicas")
        replicas = value if isinstance(value, int) else 1
    template = _builtins(_at(obj, *info.template_path))
    return ScannedWorkload(
        namespace=str(_at(obj, "metadata", "namespace")),
        kind=kind,
        name=str(_at(obj, "metadata", "name")),
        template=template if isinstance(template, dict) else {},
        replicas=replicas,
        owner=workload_owner(
            {"labels": obj.metadata.labels or {}, "annotations": obj.metadata.annotations or {}}
        ),
        controller=_controller_of(obj),
        running=kind is WorkloadKind.JOB and bool(_at(obj, "status", "active")),
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
    *,
    absent: frozenset[str] = frozenset(),
) -> tuple[list[ScannedWorkload], int | None]:
    """Every workload ``options`` selects, and how many namespaces were scanned (None when
    the cluster-wide lists answered, so the namespaces are those the workloads name).

    Namespaces that could not be read are appended to ``unreadable``; chosen namespaces that
    are excluded to ``warnings``. ``absent``: kinds not to list (their CRD is not installed:
    :func:`optional_kinds_absent`).
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
    kinds = _kinds(options, absent)
    for index, kind in enumerate(kinds):
        resource, plural = api.resource(kind), f"{KINDS[kind].plural}"
        group = f"{plural}.{KINDS[kind].group}"
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
                    action=f"list {group} in {where}",
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
            except ClusterNotFoundError:
                if kind not in _OPTIONAL:
                    raise
                progress(f"no {group} in this cluster (the CRD is not installed)")
                lists.skip()
                break
            except ClusterForbiddenError as exc:
                first_error = first_error or exc
                if ns == "*":
                    # fall back to one list per namespace, if we may list namespaces
                    if all_namespaces is None:
                        try:
                            all_namespaces = _list_namespaces(client)
                        except ClusterForbiddenError:
                            if kind not in CLOUDTASER_KINDS:
                                # an extension kind: the plan is incomplete for it, not void
                                unreadable.append(
                                    f"list {group} in all namespaces: permission denied "
                                    "(grant it, or discover --cloudtaser-kinds-only)"
                                )
                                lists.skip()
                                break
                            raise ClusterAuthError(
                                f"cannot list {group} in all namespaces: permission denied "
                                f"(403). discover needs 'list {plural}' in API group "
                                f"{KINDS[kind].group} "
                                "cluster-wide, or 'list namespaces' to fall back to "
                                "per-namespace lists, or --namespace NS for namespaces you may "
                                "read",
                                status=403,
                            ) from exc
                    progress(f"listing {plural} cluster-wide is forbidden; listing per namespace")
                    pending_scopes = [n for n in all_namespaces if n not in excluded]
                    continue
                unreadable.append(f"list {group} in namespace {ns}: permission denied")
                lists.skip()
        progress(f"found {count} {plural}")
    if attempts and not successes and first_error is not None:
        raise first_error
    scanned = namespaces if namespaces is not None else all_namespaces
    return out, (len([n for n in scanned if n not in excluded]) if scanned is not None else None)
