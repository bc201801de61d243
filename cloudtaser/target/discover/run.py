"""``target discover``: :func:`discover`, the one entry point that reads a cluster. It lists
the workloads (:mod:`~cloudtaser.target.discover.scan`; an optional kind only where the
cluster serves it), reads the key names of the Secrets their ``envFrom`` and Secret volumes
need and the owners of every Secret the workloads read
(:mod:`~cloudtaser.target.discover.secrets`) and builds the plan
(:mod:`~cloudtaser.target.discover.build`, pure).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from cloudtaser.errors import ClusterError
from cloudtaser.plan.rules import EnvNameRule, env_name_rule_for
from cloudtaser.progress import Progress
from cloudtaser.target.discover.build import DiscoveryResult, build_plan
from cloudtaser.target.discover.naming import default_plan_name
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scan import optional_kinds_absent, scan_workloads
from cloudtaser.target.discover.scanned import ScannedWorkload
from cloudtaser.target.discover.secrets import read_secret_keys, read_secret_owners
from cloudtaser.target.kube.api import get_path
from cloudtaser.target.kube.session import KubeSession
from cloudtaser.target.podspec import (
    env_consumptions,
    env_refs_from,
    is_protected,
    secret_files,
    secret_name_problem,
)

__all__ = ["cluster_env_names", "discover"]


def _noop(_message: str) -> None:
    return None


def _needed_secrets(
    workloads: list[ScannedWorkload], options: DiscoverOptions
) -> dict[str, set[str]]:
    """``{namespace: {name}}`` of the Secrets whose keys the plan needs (``envFrom``, and
    Secret volumes: every key without ``items``, and which keys are binary)."""
    excluded = options.excluded()
    needed: dict[str, set[str]] = defaultdict(set)
    for workload in workloads:
        if workload.namespace in excluded or is_protected(workload.template):
            continue
        names = [ref.secret for ref in env_refs_from(workload.template)]
        names += [use.secret for use in secret_files(workload.template)]
        for name in names:
            if secret_name_problem(name) is None:
                needed[workload.namespace].add(name)
    return needed


def _key_ref_secrets(
    workloads: list[ScannedWorkload], options: DiscoverOptions, needed: dict[str, set[str]]
) -> dict[str, set[str]]:
    """``{namespace: {name}}`` of the ``secretKeyRef`` Secrets not in ``needed``: read only for
    their owner (the plan needs no keys of them)."""
    excluded = options.excluded()
    more: dict[str, set[str]] = defaultdict(set)
    for workload in workloads:
        if workload.namespace in excluded or is_protected(workload.template):
            continue
        for item in env_consumptions(workload.template, lambda _name: None):
            if (
                item.via == "env"
                and secret_name_problem(item.secret) is None
                and item.secret not in needed.get(workload.namespace, ())
            ):
                more[workload.namespace].add(item.secret)
    return more


def cluster_env_names(session: KubeSession, warnings: list[str]) -> EnvNameRule | None:
    """The cluster's env-name rule, from its API server's ``/version`` (read once): which
    ``envFrom`` keys reach a container's environment (:func:`cloudtaser.plan.rules.
    env_name_rule_for`). None, with a warning, when the version cannot be read: the plan then
    keeps the portable rule (keys outside it are left out, and their Secrets kept)."""
    try:
        version = get_path(session, "/version", action="read the API server's version")
    except ClusterError as exc:
        warnings.append(
            f"could not read the API server's version ({exc}); environment variable names "
            "are held to the portable rule [A-Za-z_][A-Za-z0-9_]*"
        )
        return None
    return env_name_rule_for(str(version.get("major", "")), str(version.get("minor", "")))


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
    needed = _needed_secrets(workloads, options)
    lookup = read_secret_keys(
        session.client, needed, cluster_wide=not options.namespaces, progress=report
    )
    more = _key_ref_secrets(workloads, options, needed)
    if more:
        owners = read_secret_owners(session.client, more)
        lookup = dataclasses.replace(lookup, owners={**lookup.owners, **owners})
    env_names = cluster_env_names(session, warnings)
    if env_names is not None:
        report(f"environment variable names: the cluster's {env_names} rule")
    lookup = dataclasses.replace(lookup, env_names=env_names)
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
