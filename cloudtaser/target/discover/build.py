"""The pure plan builder: :func:`build_plan` turns scanned workloads into a validated,
deterministic :class:`~cloudtaser.plan.model.MigrationPlan` and a :class:`DiscoveryResult`.

No cluster, no printing. Each workload's entry is :func:`cloudtaser.target.discover.entry.
workload_entry`; this module orders and deduplicates the workloads, writes the plan metadata,
checks the plan against the rule book (a failure is a bug: discover writes only what ``plan
validate`` accepts) and counts the summary.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import msgspec

from cloudtaser.errors import ConfigError, PlanError
from cloudtaser.plan.isolation import rule_problem
from cloudtaser.plan.model import (
    API_VERSION,
    KIND,
    MigrationPlan,
    PlanMetadata,
    Tenant,
    Workload,
    WorkloadKind,
    WorkloadStatus,
)
from cloudtaser.plan.rules import DNS_LABEL, DNS_SUBDOMAIN, EnvNameRule, shown
from cloudtaser.plan.store import one_line
from cloudtaser.target.discover.entry import LeftOut, workload_entry
from cloudtaser.target.discover.naming import PathTemplate, valid_plan_name
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup

__all__ = [
    "EXCLUDED_NAMESPACE",
    "DiscoveryResult",
    "DiscoverySummary",
    "SkippedWorkload",
    "build_plan",
]

#: Why a workload of an excluded namespace is left out of the plan.
EXCLUDED_NAMESPACE: Final = "excluded namespace"

_KIND_ORDER: Final = {kind: index for index, kind in enumerate(WorkloadKind)}
# Always used with ``fullmatch``: the plan patterns end in ``$``, which also matches before a
# trailing newline.
_SUBDOMAIN_RE: Final = re.compile(DNS_SUBDOMAIN)
_LABEL_RE: Final = re.compile(DNS_LABEL)


@dataclass(frozen=True)
class SkippedWorkload:
    """A workload that will not be migrated, and why.

    ``in_plan`` is True for workloads written to the plan with ``status: skipped`` (they use
    Secrets, but not in a way env injection can take over), False for workloads left out of
    the plan (no Secrets, already protected, excluded namespace).
    """

    namespace: str
    kind: str
    name: str
    reason: str
    in_plan: bool


@dataclass(frozen=True)
class DiscoverySummary:
    """Counts for the end-of-run summary."""

    namespaces_scanned: int
    workloads_scanned: int
    tenants: int
    workloads: int
    pending: int
    skipped: int
    #: Distinct vault paths in the plan (several workloads sharing a Secret count once).
    secrets: int
    #: Workloads left out of the plan, by reason.
    not_in_plan: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DiscoveryResult:
    """What discovery found: the plan, plus everything a reviewer should hear about."""

    plan: MigrationPlan
    warnings: tuple[str, ...]
    skipped: tuple[SkippedWorkload, ...]
    #: What could not be read (e.g. "list secrets in namespace x: forbidden"); the plan is
    #: incomplete where this is not empty.
    unreadable: tuple[str, ...]
    summary: DiscoverySummary

    @property
    def complete(self) -> bool:
        return not self.unreadable


@dataclass
class _Tenants:
    """The entries built so far, per namespace, and what a reviewer should hear about."""

    by_namespace: dict[str, list[Workload]] = field(default_factory=lambda: defaultdict(list))
    warnings: list[str] = field(default_factory=list)
    skipped: list[SkippedWorkload] = field(default_factory=list)
    seen_namespaces: set[str] = field(default_factory=set)
    scanned: int = 0


def _unique_in_order(workloads: Iterable[ScannedWorkload]) -> list[ScannedWorkload]:
    """By namespace, kind (Deployment, StatefulSet, DaemonSet) and name; a workload listed
    twice (overlapping scans) once."""
    ordered = sorted(
        workloads, key=lambda w: (w.namespace, _KIND_ORDER[WorkloadKind(w.kind)], w.name)
    )
    out: list[ScannedWorkload] = []
    previous: tuple[str, str, str] | None = None
    for workload in ordered:
        ident = (workload.namespace, str(workload.kind), workload.name)
        if ident != previous:
            out.append(workload)
        previous = ident
    return out


def _add_workload(
    tenants: _Tenants,
    workload: ScannedWorkload,
    lookup: SecretLookup,
    naming: PathTemplate,
    excluded: frozenset[str],
) -> None:
    ident = (workload.namespace, str(workload.kind), workload.name)
    tenants.scanned += 1
    tenants.seen_namespaces.add(workload.namespace)
    if workload.namespace in excluded:
        tenants.skipped.append(SkippedWorkload(*ident, reason=EXCLUDED_NAMESPACE, in_plan=False))
        return
    if not _LABEL_RE.fullmatch(workload.namespace) or not _SUBDOMAIN_RE.fullmatch(workload.name):
        tenants.warnings.append(f"{shown(workload.name)}: invalid name from the API; ignored")
        return
    outcome = workload_entry(workload, lookup, naming)
    if isinstance(outcome, LeftOut):
        tenants.skipped.append(SkippedWorkload(*ident, reason=outcome.reason, in_plan=False))
        return
    tenants.warnings.extend(outcome.warnings)
    if outcome.skip_reason is not None:
        tenants.skipped.append(SkippedWorkload(*ident, reason=outcome.skip_reason, in_plan=True))
    tenants.by_namespace[workload.namespace].append(outcome.workload)


def _metadata(
    options: DiscoverOptions,
    name: str,
    naming: PathTemplate,
    cluster: str,
    unread: list[str],
    *,
    env_names: EnvNameRule | None = None,
) -> PlanMetadata:
    created = (options.now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return PlanMetadata(
        name=name,
        cluster=one_line(cluster, 4000),
        created_at=created,
        created_by=one_line(options.created_by, 256) if options.created_by else None,
        auth_mount=options.auth_mount or None,
        auth_method=options.auth_method,
        env_name_rule=env_names,
        kv_mount=options.kv_mount or None,
        path_template=options.path_template,
        path_cluster=naming.cluster if naming.uses_cluster and naming.cluster != name else None,
        unread=unread,
    )


def _validated(plan: MigrationPlan) -> MigrationPlan:
    """``plan`` as the plan loader reads it; a failure is a bug (every name was checked)."""
    try:
        checked = msgspec.convert(msgspec.to_builtins(plan), MigrationPlan)
    except (msgspec.ValidationError, ValueError) as exc:
        raise PlanError(f"discovery produced an invalid plan: {exc}", source="discover") from exc
    violation = rule_problem(checked)
    if violation is not None:  # a bug as well: discover writes only what plan validate accepts
        raise PlanError(f"discovery produced an invalid plan: {violation[1]}", source="discover")
    return checked


def _summary(
    plan: MigrationPlan,
    tenants: _Tenants,
    namespaces_scanned: int | None,
) -> DiscoverySummary:
    paths: set[str] = set()
    pending = skipped = workloads_in_plan = 0
    for _tenant, wl in plan.iter_workloads():
        workloads_in_plan += 1
        if wl.effective_status is WorkloadStatus.SKIPPED:
            skipped += 1
        else:
            pending += 1
        paths.update(r.vault_path for r in wl.vault_reads())
    not_in_plan: dict[str, int] = defaultdict(int)
    for skip in tenants.skipped:
        if not skip.in_plan:
            not_in_plan[skip.reason] += 1
    return DiscoverySummary(
        namespaces_scanned=namespaces_scanned
        if namespaces_scanned is not None
        else len(tenants.seen_namespaces),
        workloads_scanned=tenants.scanned,
        tenants=len(plan.tenants),
        workloads=workloads_in_plan,
        pending=pending,
        skipped=skipped,
        secrets=len(paths),
        not_in_plan=dict(sorted(not_in_plan.items())),
    )


def build_plan(
    workloads: Iterable[ScannedWorkload],
    lookup: SecretLookup,
    *,
    options: DiscoverOptions,
    plan_name: str,
    cluster: str,
    unreadable: Sequence[str] = (),
    namespaces_scanned: int | None = None,
    warnings: Sequence[str] = (),
) -> DiscoveryResult:
    """Turn scanned workloads into a validated, deterministic plan. Pure."""
    options.validate()
    name = options.name or plan_name
    if not valid_plan_name(name):
        raise ConfigError(f"plan name {name!r} is not valid; pass --name NAME")
    naming = options.naming(name)
    tenants = _Tenants(warnings=list(warnings))
    excluded = options.excluded()
    ordered = _unique_in_order(workloads)
    unread = list(dict.fromkeys(one_line(u, 1000) for u in unreadable))
    try:  # the Structs' own rules (e.g. no variable fed twice); a failure is a bug
        for workload in ordered:
            _add_workload(tenants, workload, lookup, naming, excluded)
        plan = MigrationPlan(
            api_version=API_VERSION,
            kind=KIND,
            metadata=_metadata(options, name, naming, cluster, unread, env_names=lookup.env_names),
            tenants=[
                Tenant(name=ns, namespace=ns, workloads=tenants.by_namespace[ns])
                for ns in sorted(tenants.by_namespace)
            ],
        )
    except ValueError as exc:
        raise PlanError(f"discovery produced an invalid plan: {exc}", source="discover") from exc
    plan = _validated(plan)
    return DiscoveryResult(
        plan=plan,
        warnings=tuple(dict.fromkeys(tenants.warnings)),
        skipped=tuple(tenants.skipped),
        unreadable=tuple(unread),
        summary=_summary(plan, tenants, namespaces_scanned),
    )
