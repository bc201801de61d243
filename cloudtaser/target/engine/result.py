"""The ``--output json`` results of the engine's runs (``target protect``, ``unprotect`` and
``finalize``) as Structs, built from a :class:`~cloudtaser.target.engine.core.RunReport`, and
their JSON Schemas (``schema/output-<kind>.schema.json``, generated like every other document's
by ``python tools/gen_schemas.py``; tests/unit/test_schemas_current.py fails on a stale one).

The three share one shape (:class:`RunResult`: one entry per workload worked on, what was not
reached, a count per outcome); finalize adds what ``--delete-secrets`` did with each Secret.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cloudtaser.plan.model import Owner
from cloudtaser.results import Part, Result
from cloudtaser.target.engine.core import Outcome, RunReport

__all__ = [
    "KINDS",
    "OUTCOME_ORDER",
    "FinalizeRun",
    "NotReachedEntry",
    "ProtectRun",
    "RunResult",
    "RunSummary",
    "SecretEntry",
    "UnprotectRun",
    "WorkloadEntry",
    "finalize_run",
    "protect_run",
    "run_summary",
    "unprotect_run",
    "workload_entries",
]


class _Entry(Part, omit_defaults=True):
    """An entry of a run's result (a field with a default is left out while it has it)."""


class WorkloadEntry(_Entry, kw_only=True):
    """What happened to one workload in this run."""

    tenant: str
    namespace: str
    kind: str
    name: str
    outcome: Outcome
    message: str
    warnings: list[str]
    already_applied: bool
    #: The exact patch sent (or, with ``--dry-run``, that would be sent).
    patch: dict[str, Any] | None = None


class NotReachedEntry(_Entry, kw_only=True):
    """A workload selected but never reached (quit, interrupt, stop-on-error)."""

    namespace: str
    kind: str
    name: str


class RunSummary(_Entry, kw_only=True):
    """A count per outcome (every outcome, zero included), and the totals."""

    migrated: int
    finalized: int
    unprotected: int
    applied: int
    dry_run: int = msgspec.field(name="dry-run")
    failed: int
    refused: int
    skipped: int
    deferred: int
    interrupted: int
    #: ``--emit``: written for Git, nothing changed in the cluster.
    emitted: int
    #: ``--wait-for-git``: not applied by the owner before the deadline (still waiting).
    waiting: int
    not_reached: int
    total: int


class RunResult(Result, kw_only=True):
    """The fields every engine run's result has, in output order (``summary`` comes last)."""

    dry_run: bool
    interrupted: bool
    quit: bool
    stopped_on_error: bool
    results: list[WorkloadEntry]
    not_reached: list[NotReachedEntry]
    #: ``--emit``: the files written for the owners to commit (sorted).
    files: list[str] | msgspec.UnsetType = msgspec.UNSET


class ProtectRun(RunResult, kw_only=True):
    """``cloudtaser target protect -o json``."""

    kind: Literal["protect-run"] = "protect-run"
    summary: RunSummary


class UnprotectRun(RunResult, kw_only=True):
    """``cloudtaser target unprotect -o json``."""

    kind: Literal["unprotect-run"] = "unprotect-run"
    summary: RunSummary


class SecretEntry(_Entry, kw_only=True):
    """What ``finalize --delete-secrets`` did (or, with ``--dry-run``, would do) with one
    Secret (names only, never a value)."""

    namespace: str
    name: str
    #: ``deleted``, ``would-delete``, ``kept``, ``absent`` or ``declined`` (``--interactive``).
    action: str
    #: Who still uses it (``kept``).
    users: list[str]
    #: Why it was kept or skipped.
    reason: str = ""
    #: The keys that keep it: not mapped, or not proven in the vault.
    keys: list[str] = msgspec.field(default_factory=list)
    #: ``kept`` because it has an owner (Git, Helm or an operator would recreate it): who,
    #: from the live Secret's metadata, else from the plan (docs/lifecycle.md).
    owner: Owner | None = None
    #: With ``owner``: what to remove or change at the source instead (one line).
    remove_at_source: str = ""
    #: With ``owner`` and ``--gitops-source DIR``: the files of DIR that define the Secret.
    source_files: list[str] = msgspec.field(default_factory=list)
    #: With ``owner``: the owner objects that could not be read, and why.
    owner_unread: list[str] = msgspec.field(default_factory=list)


class FinalizeRun(RunResult, kw_only=True):
    """``cloudtaser target finalize -o json`` (``secrets`` only with ``--delete-secrets``)."""

    kind: Literal["finalize-run"] = "finalize-run"
    secrets: list[SecretEntry] | msgspec.UnsetType = msgspec.UNSET
    summary: RunSummary


#: The result Struct of each ``kind``.
KINDS: dict[str, type[RunResult]] = {
    "protect-run": ProtectRun,
    "unprotect-run": UnprotectRun,
    "finalize-run": FinalizeRun,
}

#: Summary and tally order: what a reader looks for first.
OUTCOME_ORDER: tuple[Outcome, ...] = (
    Outcome.MIGRATED,
    Outcome.FINALIZED,
    Outcome.EMITTED,
    Outcome.UNPROTECTED,
    Outcome.APPLIED,
    Outcome.DRY_RUN,
    Outcome.WAITING,
    Outcome.FAILED,
    Outcome.REFUSED,
    Outcome.SKIPPED,
    Outcome.DEFERRED,
    Outcome.INTERRUPTED,
)


def run_summary(report: RunReport) -> RunSummary:
    """The count per outcome of ``report``, the workloads not reached, and the total."""
    counts = {o: report.count(o) for o in OUTCOME_ORDER}
    return RunSummary(
        migrated=counts[Outcome.MIGRATED],
        finalized=counts[Outcome.FINALIZED],
        unprotected=counts[Outcome.UNPROTECTED],
        applied=counts[Outcome.APPLIED],
        dry_run=counts[Outcome.DRY_RUN],
        failed=counts[Outcome.FAILED],
        refused=counts[Outcome.REFUSED],
        skipped=counts[Outcome.SKIPPED],
        deferred=counts[Outcome.DEFERRED],
        interrupted=counts[Outcome.INTERRUPTED],
        emitted=counts[Outcome.EMITTED],
        waiting=counts[Outcome.WAITING],
        not_reached=len(report.not_reached),
        total=len(report.results),
    )


def workload_entries(report: RunReport) -> tuple[list[WorkloadEntry], list[NotReachedEntry]]:
    """The per-workload results of ``report`` and the workloads it did not reach."""
    results = [
        WorkloadEntry(
            tenant=r.ref.tenant,
            namespace=r.ref.namespace,
            kind=r.ref.kind,
            name=r.ref.name,
            outcome=r.outcome,
            message=r.message,
            warnings=list(r.warnings),
            already_applied=r.already_applied,
            patch=r.patch,
        )
        for r in report.results
    ]
    not_reached = [
        NotReachedEntry(namespace=n.namespace, kind=n.kind, name=n.name) for n in report.not_reached
    ]
    return results, not_reached


def _fields(report: RunReport, *, dry_run: bool) -> dict[str, Any]:
    results, not_reached = workload_entries(report)
    return {
        "dry_run": dry_run,
        "interrupted": report.interrupted,
        "quit": report.quit,
        "stopped_on_error": report.stopped_on_error,
        "results": results,
        "not_reached": not_reached,
        "files": [str(p) for p in report.files] if report.files else msgspec.UNSET,
        "summary": run_summary(report),
    }


def protect_run(report: RunReport, *, dry_run: bool) -> ProtectRun:
    """The result of a protect run."""
    return ProtectRun(**_fields(report, dry_run=dry_run))


def unprotect_run(report: RunReport, *, dry_run: bool) -> UnprotectRun:
    """The result of an unprotect run."""
    return UnprotectRun(**_fields(report, dry_run=dry_run))


def finalize_run(
    report: RunReport, *, dry_run: bool, secrets: list[SecretEntry] | None
) -> FinalizeRun:
    """The result of a finalize run; ``secrets``: what ``--delete-secrets`` did (``None``
    without it)."""
    return FinalizeRun(
        secrets=msgspec.UNSET if secrets is None else secrets, **_fields(report, dry_run=dry_run)
    )
