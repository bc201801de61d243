"""``target discover``: :func:`discover`, the one entry point that reads a cluster. It lists
the workloads (:mod:`~cloudtaser.target.discover.scan`; an optional kind only where the
cluster serves it), reads the key names of the Secrets
their ``envFrom`` needs (:mod:`~cloudtaser.target.discover.secrets`) and builds the plan
(:mod:`~cloudtaser.target.discover.build`, pure).
"""

from __future__ import annotations

from collections import defaultdict

from cloudtaser.progress import Progress
from cloudtaser.target.discover.build import DiscoveryResult, build_plan
from cloudtaser.target.discover.naming import default_plan_name
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scan import optional_kinds_absent, scan_workloads
from cloudtaser.target.discover.scanned import ScannedWorkload
from cloudtaser.target.discover.secrets import read_secret_keys
from cloudtaser.target.kube.session import KubeSession
from cloudtaser.target.podspec import env_refs_from, is_protected, secret_name_problem

__all__ = ["discover"]


def _noop(_message: str) -> None:
    return None


def _needed_secrets(
    workloads: list[ScannedWorkload], options: DiscoverOptions
) -> dict[str, set[str]]:
    """``{namespace: {name}}`` of the Secrets whose keys the plan needs (``envFrom``)."""
    excluded = options.excluded()
    needed: dict[str, set[str]] = defaultdict(set)
    for workload in workloads:
        if workload.namespace in excluded or is_protected(workload.template):
            continue
        for ref in env_refs_from(workload.template):
            if secret_name_problem(ref.secret) is None:
                needed[workload.namespace].add(ref.secret)
    return needed


def discover(
    session: KubeSession,
    options: DiscoverOptions,
    *,
    progress: Progress | None = None,
) -> DiscoveryResult:
    """Scan the cluster behind ``session``.

    Raises :class:`ConfigError` for bad options, :class:`ClusterError` (and subclasses) when
    the cluster cannot be read at all. Partial permission problems (403 on some namespaces or
    on Secrets) do not raise: they are listed in :attr:`DiscoveryResult.unreadable` and the
    affected workloads are skipped with a reason.
    """
    report = progress or _noop
    options.validate()
    plan_name = options.name or default_plan_name(session.context, session.cluster_name)
    options.naming(plan_name)  # refuse bad naming before talking to the cluster
    unreadable: list[str] = []
    warnings: list[str] = []
    absent = frozenset() if options.cloudtaser_kinds_only else optional_kinds_absent(session)
    workloads, namespaces_scanned = scan_workloads(
        session.client, options, report, unreadable, warnings, absent=absent
    )
    lookup = read_secret_keys(
        session.client,
        _needed_secrets(workloads, options),
        cluster_wide=not options.namespaces,
        progress=report,
    )
    for (ns, name), why in sorted(lookup.unreadable.items()):
        unreadable.append(f"keys of Secret {ns}/{name}: {why}")
    return build_plan(
        workloads,
        lookup,
        options=options,
        plan_name=plan_name,
        cluster=session.server,
        unreadable=unreadable,
        namespaces_scanned=namespaces_scanned,
        warnings=warnings,
    )
