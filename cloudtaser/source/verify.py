"""``source verify-plan``: prove every secret a plan needs exists in the vault, without reading it.

For every workload that is not ``skipped``, each ``vaultPath`` must exist with a live latest
version (not soft-deleted, not destroyed) holding every field named in ``fields``. The check
uses only KV v2 endpoints that never return values:

* ``sys/internal/ui/mounts/<mount>`` once per mount (exists, KV v2);
* ``sys/capabilities-self`` once per 500 paths (tells "permission denied" from "missing");
* ``GET <mount>/subkeys/<path>?depth=1`` once per *distinct* path: key names with ``null``
  leaves, plus the latest version's ``deletion_time``/``destroyed``. A 404 without a body means
  the path was never written; a 404 carrying metadata means the latest version is deleted or
  destroyed.

``<mount>/data/`` is never requested. Paths are checked on a bounded thread pool over the
client's one pooled session. Pure library: typed results, no printing.
"""

from __future__ import annotations

import enum
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from cloudtaser.errors import VaultAuthError
from cloudtaser.plan.model import MigrationPlan, WorkloadStatus
from cloudtaser.plan.todo import TodoItem, select_tenants
from cloudtaser.progress import Counter, Progress
from cloudtaser.source.preflight import check_kv_mounts, validate_kv_path

if TYPE_CHECKING:
    from cloudtaser.source.openbao import OpenBaoClient, SubkeysResult

__all__ = [
    "PathReport",
    "PathStatus",
    "SecretCheck",
    "TenantReport",
    "VerifyResult",
    "WorkloadReport",
    "verify_plan",
]

DEFAULT_CONCURRENCY: Final = 16


class PathStatus(enum.StrEnum):
    """The outcome for one secret reference (wire values of ``--output json``)."""

    OK = "ok"
    MISSING = "missing"
    DELETED = "deleted"
    DESTROYED = "destroyed"
    MISSING_FIELDS = "missing-fields"
    DENIED = "permission-denied"


#: Worst first: a workload's status is the worst of its secrets'.
_SEVERITY: Final = {
    PathStatus.DENIED: 5,
    PathStatus.MISSING: 4,
    PathStatus.DESTROYED: 3,
    PathStatus.DELETED: 2,
    PathStatus.MISSING_FIELDS: 1,
    PathStatus.OK: 0,
}


@dataclass(frozen=True)
class SecretCheck:
    """One secret reference of one workload."""

    source: str
    vault_path: str
    status: PathStatus
    #: Field names the latest version lacks (names only, never values).
    missing_fields: tuple[str, ...] = ()
    version: int | None = None
    detail: str = ""
    #: Every field name the workload reads from the path.
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkloadReport:
    """The checks of one workload (``skipped`` workloads are listed without checks)."""

    kind: str
    name: str
    status: PathStatus | None
    skipped: bool
    secrets: tuple[SecretCheck, ...]


@dataclass(frozen=True)
class TenantReport:
    """The workloads of one tenant."""

    tenant: str
    namespace: str
    workloads: tuple[WorkloadReport, ...]


@dataclass
class VerifyResult:
    """The whole report and its summary."""

    plan: str
    tenants: list[TenantReport] = field(default_factory=list)
    #: Distinct vault paths checked (a path shared by several workloads counts once).
    paths_checked: int = 0
    #: Secret references by status.
    counts: dict[str, int] = field(default_factory=dict)
    workloads_checked: int = 0
    workloads_ok: int = 0
    workloads_skipped: int = 0

    @property
    def ok(self) -> bool:
        """True when every checked secret is present with every field."""
        return self.workloads_ok == self.workloads_checked

    @property
    def problems(self) -> int:
        """Secret references that are not ok."""
        return sum(n for status, n in self.counts.items() if status != PathStatus.OK)

    def by_path(self) -> list[PathReport]:
        """One entry per distinct vault path (plan order): its worst status, the fields the
        workloads need and lack, and which workloads need it."""
        order: list[str] = []
        checks: dict[str, list[tuple[str, SecretCheck]]] = {}
        for tenant in self.tenants:
            for w in tenant.workloads:
                for check in w.secrets:
                    if check.vault_path not in checks:
                        order.append(check.vault_path)
                    ref = f"{tenant.namespace}/{w.kind}/{w.name}"
                    checks.setdefault(check.vault_path, []).append((ref, check))
        out = []
        for path in order:
            found = checks[path]
            worst = max((c.status for _r, c in found), key=_SEVERITY.__getitem__)
            fields = dict.fromkeys(f for _r, c in found for f in c.fields)
            missing = dict.fromkeys(f for _r, c in found for f in c.missing_fields)
            refs = dict.fromkeys(r for r, _c in found)
            first = found[0][1]
            out.append(
                PathReport(
                    vault_path=path,
                    status=worst,
                    fields=tuple(fields),
                    missing_fields=tuple(missing),
                    workloads=tuple(refs),
                    version=first.version,
                    detail=next((c.detail for _r, c in found if c.status is worst), ""),
                )
            )
        return out

    def path_counts(self) -> dict[str, int]:
        """Distinct paths by status (each path counted once, at its worst status)."""
        counts = {status.value: 0 for status in PathStatus}
        for report in self.by_path():
            counts[report.status.value] += 1
        return counts


@dataclass(frozen=True)
class PathReport:
    """One distinct vault path of a verify-plan report."""

    vault_path: str
    status: PathStatus
    #: Every field the workloads read from this path.
    fields: tuple[str, ...]
    #: The fields the latest version lacks (``missing-fields`` only).
    missing_fields: tuple[str, ...]
    #: ``NAMESPACE/KIND/NAME`` of each workload that needs the path.
    workloads: tuple[str, ...]
    version: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is PathStatus.OK

    def todo(self) -> TodoItem:
        """What to write so the path passes: all its fields, or only the missing ones."""
        mount, _sep, rest = self.vault_path.partition("/data/")
        return TodoItem(
            vault_path=self.vault_path,
            mount=mount,
            path=rest,
            fields=self.fields,
            missing_fields=self.missing_fields
            if self.status is PathStatus.MISSING_FIELDS
            else self.fields,
            workloads=self.workloads,
            status=self.status.value,
        )


@dataclass(frozen=True)
class _PathState:
    status: PathStatus
    keys: frozenset[str] = frozenset()
    version: int | None = None
    detail: str = ""


def _classify(found: SubkeysResult | None) -> _PathState:
    if found is None:
        return _PathState(PathStatus.MISSING, detail="no secret at this path")
    if found.destroyed:
        return _PathState(
            PathStatus.DESTROYED,
            version=found.version,
            detail=f"latest version {found.version} is destroyed; write a new version",
        )
    if found.keys is None:
        return _PathState(
            PathStatus.DELETED,
            version=found.version,
            detail=f"latest version {found.version} is deleted (deletion_time "
            f"{found.deletion_time or 'set'}); undelete it or write a new version",
        )
    return _PathState(PathStatus.OK, keys=found.keys, version=found.version)


def _readable(caps: frozenset[str]) -> bool:
    return "root" in caps or ("read" in caps and "deny" not in caps)


def verify_plan(
    client: OpenBaoClient,
    plan: MigrationPlan,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
    tenants: tuple[str, ...] = (),
) -> VerifyResult:
    """Check every non-skipped workload's secrets; see the module docstring. ``tenants``
    (tenant names or namespaces) limits the check to those tenants.

    Raises :class:`cloudtaser.errors.PlanError` for an unsafe path (before any request),
    :class:`cloudtaser.errors.OperationError` for a mount that is not KV v2, and the client's
    errors when the vault cannot be reached or refuses the token.
    """
    say = progress or (lambda _m: None)
    kv_mount = plan.metadata.kv_mount
    scope = select_tenants(plan, tenants)
    in_scope = {id(t) for t in scope}
    # 1. validate every path before any request; deduplicate
    wanted: dict[str, tuple[str, str]] = {}
    for t_index, tenant in enumerate(plan.tenants):
        if id(tenant) not in in_scope:
            continue
        for w_index, workload in enumerate(tenant.workloads):
            if workload.effective_status is WorkloadStatus.SKIPPED:
                continue
            for read in workload.vault_reads():
                if read.vault_path not in wanted:
                    wanted[read.vault_path] = validate_kv_path(
                        read.vault_path,
                        allowed_mount=kv_mount,
                        location=f"$.tenants[{t_index}].workloads[{w_index}]"
                        f".{read.location}.vaultPath",
                    )

    states: dict[str, _PathState] = {}
    if wanted:
        # 2. mounts
        mounts = {mount for mount, _rest in wanted.values()}
        say(f"checking KV mount(s) {', '.join(sorted(mounts))}")
        present = check_kv_mounts(client, mounts)
        for path, (mount, _rest) in wanted.items():
            if not present[mount]:
                states[path] = _PathState(
                    PathStatus.MISSING,
                    detail=f"KV mount {mount!r} does not exist or the token cannot see it",
                )
        # 3. permission pre-check in bulk
        todo = {p: mr for p, mr in wanted.items() if p not in states}
        subkeys_path = {p: f"{m}/subkeys/{r}" for p, (m, r) in todo.items()}
        if todo:
            say(f"checking the token's capabilities on {len(todo)} paths")
            caps = client.capabilities_self(list(subkeys_path.values()))
            for path, api_path in subkeys_path.items():
                if not _readable(caps.get(api_path, frozenset())):
                    states[path] = _PathState(
                        PathStatus.DENIED,
                        detail=f"the token lacks 'read' on {api_path}",
                    )
        # 4. one subkeys request per distinct path, bounded concurrency
        todo = {p: mr for p, mr in todo.items() if p not in states}
        total = len(todo)
        if total:
            say(f"checking {total} distinct vault paths (concurrency {concurrency})")
        counter = Counter(say, total, "checked {done}/{total} paths", min_step=200)

        def check(path: str) -> tuple[str, _PathState]:
            mount, rest = todo[path]
            try:
                state = _classify(client.kv2_subkeys(mount, rest, depth=1))
            except VaultAuthError:
                state = _PathState(
                    PathStatus.DENIED, detail=f"permission denied on {mount}/subkeys/{rest}"
                )
            counter.advance()
            return path, state

        workers = max(1, min(concurrency, 64))
        if workers == 1 or total <= 1:
            states.update(check(p) for p in todo)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
                states.update(pool.map(check, list(todo)))

    # 5. report per tenant / workload / secret
    result = VerifyResult(plan=plan.metadata.name, paths_checked=len(wanted))
    counts = {status.value: 0 for status in PathStatus}
    for tenant in scope:
        reports = []
        for workload in tenant.workloads:
            if workload.effective_status is WorkloadStatus.SKIPPED:
                result.workloads_skipped += 1
                reports.append(
                    WorkloadReport(
                        kind=str(workload.kind),
                        name=workload.name,
                        status=None,
                        skipped=True,
                        secrets=(),
                    )
                )
                continue
            checks = []
            for secret in workload.vault_reads():  # env fields, then Secret files' keys
                state = states[secret.vault_path]
                status, detail = state.status, state.detail
                missing_fields: tuple[str, ...] = ()
                if status is PathStatus.OK:
                    missing_fields = tuple(f for f in secret.fields if f not in state.keys)
                    if missing_fields:
                        status = PathStatus.MISSING_FIELDS
                        detail = (
                            f"latest version {state.version} lacks {len(missing_fields)} field(s)"
                        )
                counts[status.value] += 1
                checks.append(
                    SecretCheck(
                        source=secret.source,
                        vault_path=secret.vault_path,
                        status=status,
                        missing_fields=missing_fields,
                        version=state.version,
                        detail=detail,
                        fields=tuple(secret.fields),
                    )
                )
            worst = max(
                (c.status for c in checks), key=_SEVERITY.__getitem__, default=PathStatus.OK
            )
            result.workloads_checked += 1
            if worst is PathStatus.OK:
                result.workloads_ok += 1
            reports.append(
                WorkloadReport(
                    kind=str(workload.kind),
                    name=workload.name,
                    status=worst,
                    skipped=False,
                    secrets=tuple(checks),
                )
            )
        result.tenants.append(
            TenantReport(tenant=tenant.name, namespace=tenant.namespace, workloads=tuple(reports))
        )
    result.counts = counts
    return result
