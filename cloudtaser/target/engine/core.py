"""The workload engine: one implementation of what protect, unprotect and finalize share —
selection, the yes / no / quit dialogue, one patch per workload (``resourceVersion``
precondition, 409 retries), the rollout wait in up to ``--parallel`` workers, recording every
outcome through the :class:`~cloudtaser.plan.store.PlanStore` (lock + atomic save after each
status change), resume and cancellation.

A :class:`Step` is the small part that differs: which workloads it wants, how it inspects one
and builds its patch (``None`` when it is already done: then it is only waited for and
recorded, which is what makes a killed run resume without a second rollout), and the status
and texts it records. The steps live in their workflows (:mod:`cloudtaser.target.protect`:
protect and unprotect; :mod:`cloudtaser.target.finalize.step`: finalize), which never import
each other nor are imported here: what they share is in this package
(:mod:`~cloudtaser.target.engine.consumption`, :mod:`~cloudtaser.target.engine.secret_refs`,
:mod:`~cloudtaser.target.engine.injection`).

With ``--emit DIR`` (:attr:`RunOptions.emit_dir`) the same loop sends nothing: each change
becomes a :class:`~cloudtaser.target.gitops.change.TemplateChange` for the workload's owner,
the files are written once at the end and the plan records the workload waiting for Git
(``gitops``). A live patch of a workload an unambiguous owner writes (Argo CD, Flux, a Helm
release) is refused unless :attr:`RunOptions.live_patch_owned`. With ``--wait-for-git``
(:attr:`RunOptions.wait_for_git`) only the waiting workloads are taken, each inspected until
the live object carries the change (the step then has no patch left), and then waited for,
proven and recorded exactly as after a live patch.

The library never prints: progress goes to ``progress`` (a callable taking an
:class:`Event`), questions to ``decide`` (a callable taking a :class:`Proposal`, returning a
:class:`Decision`). ``cancel`` (a :class:`threading.Event`) asks the run to stop between
steps; a plan write in progress is always completed. Cluster calls go through one
:class:`~cloudtaser.target.kube.workloads.WorkloadAPI` (an async client on its own event loop), so
the wait workers' reads really overlap.

Why one module of this size: it is one concept, the run loop, and its values (options,
report, proposal, event) are only meaningful with it; splitting them apart would scatter
the one state machine a reviewer must read as a whole.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import enum
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import CloudtaserError, ClusterConflictError, ClusterError, ConfigError
from cloudtaser.plan.model import (
    GitopsAction,
    GitopsWait,
    MigrationPlan,
    Owner,
    Tenant,
    Workload,
    WorkloadStatus,
)
from cloudtaser.plan.store import PlanStore, one_line
from cloudtaser.target.gitops.change import TemplateChange, for_git, protection
from cloudtaser.target.gitops.emit import Emitter, owner_slug
from cloudtaser.target.kube.kinds import kind_info, placed, pod_template
from cloudtaser.target.kube.workloads import WorkloadAPI, WorkloadRef
from cloudtaser.target.owners import describe, workload_owner
from cloudtaser.target.rollout import (
    RolloutCancelledError,
    RolloutFailedError,
    RolloutTimeoutError,
    dig,
    wait_for_rollout,
)

if TYPE_CHECKING:
    from cloudtaser.target.kube.session import KubeSession

__all__ = [
    "Decision",
    "Engine",
    "Event",
    "Inspected",
    "MappingLine",
    "Outcome",
    "Proposal",
    "RunOptions",
    "RunReport",
    "Selection",
    "Step",
    "Verified",
    "WorkloadResult",
    "check_options",
    "run",
    "workload_ref",
]

#: How often a 409 Conflict (the object changed between our GET and PATCH) is retried.
CONFLICT_RETRIES: Final = 5

_KIND_ALIASES: Final = {
    "deployment": "Deployment",
    "deployments": "Deployment",
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "statefulsets": "StatefulSet",
    "sts": "StatefulSet",
    "daemonset": "DaemonSet",
    "daemonsets": "DaemonSet",
    "ds": "DaemonSet",
    "cronjob": "CronJob",
    "cronjobs": "CronJob",
    "cj": "CronJob",
    "job": "Job",
    "jobs": "Job",
    "rollout": "Rollout",
    "rollouts": "Rollout",
    "ro": "Rollout",
}


class Outcome(enum.StrEnum):
    """What happened to one workload in this run."""

    #: Rolled out (or found already rolled out) and recorded ``migrated``.
    MIGRATED = "migrated"
    #: ``--no-wait``: patched and recorded without waiting for the rollout.
    APPLIED = "applied"
    #: Declined at the prompt: recorded ``skipped`` (protect) / left alone (unprotect).
    SKIPPED = "skipped"
    #: Not touched: drift, paused, OnDelete, partition, not found, nothing to inject.
    REFUSED = "refused"
    #: Patch or rollout failed or timed out; left ``pending`` with the error recorded.
    FAILED = "failed"
    #: The run was interrupted while this workload was waited for; it stays ``pending``.
    INTERRUPTED = "interrupted"
    #: ``--dry-run``: the server accepted the patch; nothing was changed.
    DRY_RUN = "dry-run"
    #: Unprotect: annotations removed, rolled out, back to ``pending``.
    UNPROTECTED = "unprotected"
    #: Answered "not now" at the prompt: nothing changed, the workload stays ``pending``.
    DEFERRED = "deferred"
    #: Finalize: the plan-mapped Secret references removed, rolled out, ``finalizedAt`` set.
    FINALIZED = "finalized"
    #: ``--emit``: the change written as files for the owner; nothing changed in the cluster.
    EMITTED = "emitted"
    #: ``--wait-for-git``: the owner had not applied the change by the deadline (still waiting).
    WAITING = "waiting"


class Decision(enum.StrEnum):
    """The answer to a :class:`Proposal`."""

    YES = "yes"
    NO = "no"
    QUIT = "quit"
    #: "Not now": leave this workload as it is (still ``pending``) and go on with the next.
    LATER = "later"


@dataclass(frozen=True)
class MappingLine:
    """One secret of a workload as shown to the reviewer: source → vaultPath, field → ENV (or,
    ``via: files``, key → the file it becomes)."""

    source: str
    vault_path: str
    fields: dict[str, str]
    via: str | None = None


@dataclass(frozen=True)
class Proposal:
    """What is about to happen to one workload, for a yes / no / quit decision."""

    action: str  # "protect", "unprotect" or "finalize"
    ref: WorkloadRef
    replicas: int | None
    mapping: list[MappingLine]
    warnings: list[str]
    patch: dict[str, Any]
    #: The workload already carries the intended state: no patch, only wait and record.
    already_applied: bool


@dataclass(frozen=True)
class Event:
    """A progress line: ``ref`` may be ``None`` for run-level messages.

    The stream a run emits, for progress reporters (cloudtaser.cli.output.RunProgress): one
    run-level event with ``total`` (how many workloads this run will work on), per-workload
    messages (``detail``: intermediate steps such as rollout polls, which a quiet reporter
    drops), and one event with ``outcome`` per workload when it is done with.
    """

    ref: WorkloadRef | None
    message: str
    warning: bool = False
    #: Run-level: the number of workloads the run will work on.
    total: int | None = None
    #: The workload is done with in this run: its :class:`Outcome` value.
    outcome: str | None = None
    #: An intermediate step (rollout progress, "patched; waiting"), not a result.
    detail: bool = False

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}" if self.ref else self.message


@dataclass
class WorkloadResult:
    """The outcome of one workload in this run."""

    ref: WorkloadRef
    outcome: Outcome
    message: str
    warnings: list[str] = field(default_factory=list)
    #: The exact patch sent (or, with ``--dry-run``, that would be sent).
    patch: dict[str, Any] | None = None
    already_applied: bool = False


@dataclass
class RunReport:
    """Everything a run did, in plan order."""

    results: list[WorkloadResult] = field(default_factory=list)
    interrupted: bool = False
    quit: bool = False
    stopped_on_error: bool = False
    #: Workloads selected but never reached (quit, interrupt, stop-on-error).
    not_reached: list[WorkloadRef] = field(default_factory=list)
    #: ``--emit``: the files written (sorted).
    files: list[Path] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def problems(self) -> bool:
        return any(
            r.outcome in {Outcome.REFUSED, Outcome.FAILED, Outcome.WAITING} for r in self.results
        )

    @property
    def failed(self) -> bool:
        return any(r.outcome == Outcome.FAILED for r in self.results)


@dataclass(frozen=True)
class Selection:
    """Limit a run to some tenants and/or workloads (empty: everything).

    ``tenants``: tenant names or namespaces. ``workloads``: ``kind/name``, ``namespace/name``
    or ``namespace/kind/name`` (kinds case-insensitive, with kubectl short names). A workload
    is selected when it matches any ``--workload`` (if given) and its tenant matches any
    ``--tenant`` (if given).
    """

    tenants: tuple[str, ...] = ()
    workloads: tuple[str, ...] = ()

    @functools.cached_property
    def _parsed(self) -> list[tuple[str | None, str | None, str]]:
        """The parsed ``workloads`` (parsed once, not once per workload of the plan)."""
        out: list[tuple[str | None, str | None, str]] = []
        for raw in self.workloads:
            parts = raw.strip().split("/")
            if len(parts) == 3 and all(parts):
                kind = _KIND_ALIASES.get(parts[1].lower())
                if kind is None:
                    raise ConfigError(f"--workload {raw!r}: unknown kind {parts[1]!r}")
                out.append((parts[0], kind, parts[2]))
            elif len(parts) == 2 and all(parts):
                kind = _KIND_ALIASES.get(parts[0].lower())
                out.append((None, kind, parts[1]) if kind else (parts[0], None, parts[1]))
            else:
                raise ConfigError(
                    f"--workload {raw!r}: expected KIND/NAME, NAMESPACE/NAME or NAMESPACE/KIND/NAME"
                )
        return out

    def matches(self, tenant: Tenant, workload: Workload) -> bool:
        if self.tenants and not ({tenant.name, tenant.namespace} & set(self.tenants)):
            return False
        if not self.workloads:
            return True
        return any(_match(p, tenant, workload) for p in self._parsed)

    def check(self, plan: MigrationPlan) -> None:
        """Raise :class:`ConfigError` for a ``--tenant`` / ``--workload`` that matches nothing."""
        for name in self.tenants:
            if not any(name in {t.name, t.namespace} for t in plan.tenants):
                raise ConfigError(f"--tenant {name!r} matches no tenant or namespace of the plan")
        for raw, parsed in zip(self.workloads, self._parsed, strict=True):
            if not any(_match(parsed, t, w) for t, w in plan.iter_workloads()):
                raise ConfigError(f"--workload {raw!r} matches no workload of the plan")


def _match(parsed: tuple[str | None, str | None, str], tenant: Tenant, workload: Workload) -> bool:
    namespace, kind, name = parsed
    return (
        workload.name == name
        and (kind is None or str(workload.kind) == kind)
        and (namespace is None or namespace == tenant.namespace)
    )


@dataclass(frozen=True)
class RunOptions:
    """How to run. ``vault_address`` is required by :func:`protect` (validated URL)."""

    actor: str
    vault_address: str | None = None
    dry_run: bool = False
    wait: bool = True
    timeout: float = 300.0
    poll_interval: float = 1.0
    parallel: int = 1
    stop_on_error: bool = True
    selection: Selection = Selection()
    #: Called with the plan as loaded under the lock, before the cluster is touched; raises to
    #: refuse the run (the approval / verification gates of docs/approval.md, so what they
    #: checked is exactly what runs).
    plan_check: Callable[[MigrationPlan], None] | None = None
    #: protect: prove on the new pods that they were injected before recording ``migrated``
    #: (``--no-verify-injection`` turns it off, loudly; finalize always proves).
    verify_injection: bool = True
    #: ``--emit DIR``: write each change as files for the workload's owner instead of
    #: patching it (nothing changes in the cluster); the plan records it waiting for Git.
    emit_dir: Path | None = None
    #: ``--live-patch-owned``: patch a workload an unambiguous owner writes (Argo CD, Flux,
    #: a Helm release) live anyway, with a loud warning; without it such a patch is refused.
    live_patch_owned: bool = False
    #: ``--wait-for-git``: the deadline in seconds. Only the workloads waiting for Git
    #: (``gitops``) are taken; each is inspected until its owner has applied the change.
    wait_for_git: float | None = None


ProgressFn = Callable[[Event], None]
DecideFn = Callable[[Proposal], Decision]


def _replicas(kind: str, obj: Mapping[str, Any]) -> int | None:
    if kind_info(kind).replicas:
        value = dig(obj, "spec", "replicas")
        if value is None:
            value = 1
    else:  # a DaemonSet's pods per node; a CronJob's runs have none
        value = dig(obj, "status", "desiredNumberScheduled")
    return value if isinstance(value, int) else None


def _mapping(workload: Workload) -> list[MappingLine]:
    """The secrets (field → ENV), then the migrated Secret files (key → ``file
    <volume>/<path>``, via ``files``)."""
    return [
        MappingLine(source=s.source, vault_path=s.vault_path, fields=dict(s.fields), via=s.via)
        for s in workload.secrets
    ] + [
        MappingLine(
            source=f.source,
            vault_path=f.vault_path,
            fields={k.key: f"file {f.volume}/{k.file}" for k in f.files},
            via="files",
        )
        for f in workload.secret_files
        if f.vault_path is not None
    ]


def workload_ref(tenant: Tenant, workload: Workload) -> WorkloadRef:
    return WorkloadRef(
        tenant=tenant.name, namespace=tenant.namespace, kind=str(workload.kind), name=workload.name
    )


def check_options(options: RunOptions) -> None:
    """Refuse unusable run options before anything is read."""
    if options.parallel < 1 or options.parallel > 64:
        raise ConfigError("--parallel must be between 1 and 64")
    if options.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    if options.poll_interval <= 0:
        raise ConfigError("the poll interval must be positive")
    if not options.actor or not options.actor.isprintable():
        raise ConfigError("the actor name must be a non-empty printable string")
    if options.wait_for_git is not None and options.wait_for_git <= 0:
        raise ConfigError("--deadline must be positive")
    if options.emit_dir is not None and options.wait_for_git is not None:
        raise ConfigError("--emit writes the change; --wait-for-git waits for it: one at a time")


class Engine:
    """One run of a :class:`Step` over the selected workloads of a plan: state shared by the
    main thread (inspect, ask, patch) and the wait workers (wait, record)."""

    def __init__(
        self,
        cluster: WorkloadAPI,
        store: PlanStore,
        options: RunOptions,
        *,
        progress: ProgressFn | None,
        decide: DecideFn | None,
        cancel: threading.Event,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.plan = store.plan
        self.options = options
        self._progress = progress
        self.decide = decide
        self.cancel = cancel
        self.report = RunReport()
        self._report_lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(max(1, options.parallel))
        self._quiet = threading.local()
        #: ``--emit``: the changes collected, written once at the end of the run.
        self.emitter = Emitter(options.emit_dir) if options.emit_dir is not None else None
        self.emitted: list[_Emitted] = []
        #: ``--wait-for-git``: when the run stops waiting (monotonic clock).
        self.git_deadline = time.monotonic() + (options.wait_for_git or 0.0)

    # -- reporting and recording --

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Drop this thread's progress messages (not results) meanwhile: the repeated
        inspections of a workload waiting for Git."""
        self._quiet.on = True
        try:
            yield
        finally:
            self._quiet.on = False

    def emit(
        self,
        ref: WorkloadRef | None,
        message: str,
        *,
        warning: bool = False,
        total: int | None = None,
        detail: bool = False,
    ) -> None:
        if self._progress is not None and not getattr(self._quiet, "on", False):
            self._progress(
                Event(ref=ref, message=message, warning=warning, total=total, detail=detail)
            )

    def result(self, res: WorkloadResult) -> None:
        with self._report_lock:
            self.report.results.append(res)
        if res.outcome == Outcome.FAILED and self.options.stop_on_error:
            self._stop.set()
        if self._progress is not None:
            self._progress(
                Event(
                    ref=res.ref,
                    message=f"{res.outcome}: {res.message}",
                    warning=res.outcome in {Outcome.FAILED, Outcome.REFUSED, Outcome.WAITING},
                    outcome=str(res.outcome),
                )
            )

    def record(
        self,
        workload: Workload,
        status: WorkloadStatus,
        *,
        reason: str,
        error: str | None = None,
        update: Callable[[Workload], None] | None = None,
    ) -> None:
        """Record a status change in the plan store (atomic save; nothing with ``dry_run``);
        ``update`` changes more of the workload in the same save."""
        self.store.record(workload, status, reason=reason, error=error, update=update)

    # -- scheduling --

    def acquire_slot(self) -> bool:
        """Wait for a free worker slot; False when the run must stop instead."""
        while True:
            if self.cancel.is_set() or self._stop.is_set():
                return False
            if self._slots.acquire(timeout=0.2):
                if self.cancel.is_set() or self._stop.is_set():
                    self._slots.release()
                    return False
                return True

    def release_slot(self) -> None:
        self._slots.release()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- waiting --

    def wait_and_record(
        self,
        flow: Step,
        ref: WorkloadRef,
        workload: Workload,
        *,
        generation: int,
        warnings: list[str],
        patch: dict[str, Any] | None,
        already: bool,
    ) -> None:
        done_status = flow.done_status
        done_outcome = flow.done_outcome
        done_reason = flow.found_reason if already else flow.patched_reason
        failed_status = flow.failed_status
        try:
            if self.options.wait:
                watch = _Watch(flow, self, ref)
                state = wait_for_rollout(
                    lambda: watch.check(self._fetch_for_wait(ref)),
                    ref.kind,
                    min_generation=generation,
                    timeout=self.options.timeout,
                    interval=self.options.poll_interval,
                    cancel=self.cancel,
                    on_progress=lambda msg: self.emit(ref, msg, detail=True),
                )
                message = state.message
                reason = done_reason
                outcome = done_outcome
                verified = flow.verify(self, ref, workload)
                if verified is not None and not verified.ok:
                    error = one_line(verified.message)
                    self.emit(ref, error, warning=True)
                    self.record(workload, failed_status, reason=flow.unverified_reason, error=error)
                    self.result(
                        WorkloadResult(ref, Outcome.FAILED, error, warnings, patch, already)
                    )
                    return
                if verified is not None:
                    message = f"{message}; {verified.message}"
                    reason = f"{reason}; {verified.message}"
            else:
                message = "rollout started; not waited for (--no-wait)"
                reason = f"{done_reason}; rollout not awaited (--no-wait)"
                outcome = Outcome.APPLIED
            self.record(workload, done_status, reason=reason, update=_done_update(flow, workload))
            self.emit(ref, f"{message}; recorded {done_status}", detail=True)
            self.result(
                WorkloadResult(ref, outcome, message, warnings, patch, already_applied=already)
            )
        except RolloutCancelledError as exc:
            error = f"interrupted while waiting for the rollout: {exc}; re-run to resume"
            self.record(workload, failed_status, reason="interrupted", error=error)
            self.result(WorkloadResult(ref, Outcome.INTERRUPTED, error, warnings, patch, already))
        except (RolloutFailedError, RolloutTimeoutError, CloudtaserError) as exc:
            error = f"rollout did not complete: {exc}"
            cause = _explain(flow, self, ref)
            if cause:
                error = f"{error}; likely cause: {cause}"
            self.emit(ref, error, warning=True)
            self.record(workload, failed_status, reason="rollout failed", error=error)
            self.result(WorkloadResult(ref, Outcome.FAILED, error, warnings, patch, already))

    def _fetch_for_wait(self, ref: WorkloadRef) -> Mapping[str, Any]:
        obj = self.cluster.get(ref)
        if obj is None:
            raise RolloutFailedError(f"{ref} was deleted while rolling out")
        return obj

    def refuse(
        self,
        step: Step,
        ref: WorkloadRef,
        workload: Workload,
        why: str,
        warnings: list[str],
    ) -> None:
        """Leave the workload unchanged and report why. A step with ``records_refusals``
        records it (the workload stays ``pending`` with the reason); others change nothing,
        not even the plan."""
        why = one_line(why)
        self.emit(ref, f"not changed: {why}", warning=True)
        if step.records_refusals:
            self.record(workload, WorkloadStatus.PENDING, reason="refused", error=why)
        self.result(WorkloadResult(ref, Outcome.REFUSED, why, warnings))


#: How often (seconds) a waiting workload is checked for a definitive failure (Step.watch).
WATCH_INTERVAL: Final = 5.0


class _Watch:
    """Calls :meth:`Step.watch` at most every :data:`WATCH_INTERVAL` seconds while a rollout
    is awaited; a definitive failure it names ends the wait at once."""

    def __init__(self, flow: Step, engine: Engine, ref: WorkloadRef) -> None:
        self.flow, self.engine, self.ref = flow, engine, ref
        self.next = time.monotonic() + WATCH_INTERVAL

    def check(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        if time.monotonic() >= self.next:
            self.next = time.monotonic() + WATCH_INTERVAL
            try:
                problem = self.flow.watch(self.engine, self.ref)
            except CloudtaserError:
                problem = None  # a failed look is no verdict: keep waiting
            if problem:
                raise RolloutFailedError(problem)
        return obj


@dataclass(frozen=True)
class Verified:
    """The result of :meth:`Step.verify`: ``ok`` and a one-line message (names only)."""

    ok: bool
    message: str


def _explain(flow: Step, engine: Engine, ref: WorkloadRef) -> str | None:
    try:
        return flow.explain(engine, ref)
    except CloudtaserError as exc:
        return f"(could not tell: {one_line(str(exc), 200)})"


@dataclass(frozen=True)
class Inspected:
    """One inspected workload, ready for the shared steps (ask, patch, wait, record)."""

    obj: dict[str, Any]
    #: What to send; ``None`` when the workload already carries the intended state (a run
    #: killed after its patch, before recording): then it is only waited for and recorded.
    patch: dict[str, Any] | None
    #: What the reviewer is shown (protect shows its patch even when it is not sent again).
    shown_patch: dict[str, Any]
    warnings: list[str]


class Step(abc.ABC):
    """One kind of change the engine applies to a workload (protect, unprotect, finalize):
    what it selects, how it inspects a workload and builds its one patch (``None``:
    already done), and what it says and records. A message that is ``None`` is not emitted.
    """

    #: ``protect`` / ``unprotect`` / ``finalize`` (shown in the :class:`Proposal`).
    action: str
    #: Run summary, formatted with ``todo`` and ``selected``.
    summary: str
    done_status: WorkloadStatus
    done_outcome: Outcome
    #: Plan reasons once the rollout is done: after our patch / found already applied.
    patched_reason: str
    found_reason: str
    #: Declined at the prompt: the status recorded (``None``: the plan is not touched).
    declined_status: WorkloadStatus | None = None
    declined_message: str = "left as it is"
    already_message: str | None = None
    already_dry_run: str = "already done"
    already_dry_run_applied: bool = False
    conflict_message: str | None = None
    dry_run_message: str | None = None
    dry_run_result: str = "accepted (dry run)"
    patched_message: str = "patched (one rollout); waiting"
    patched_no_wait_message: str = "patched"
    #: An error leaves the workload ``pending`` with this reason (``None``: plan not touched).
    failed_reason: str | None = None
    #: A refusal is recorded in the plan (the workload stays ``pending`` with the reason).
    records_refusals: bool = False
    #: The status a failed or unverified rollout leaves (finalize keeps ``migrated``).
    failed_status: WorkloadStatus = WorkloadStatus.PENDING
    #: The plan reason when :meth:`verify` says the rollout did not achieve the step's goal.
    unverified_reason: str = "not verified"
    #: The change this step can write for Git (``--emit``); its live patch of an owned
    #: workload needs ``--live-patch-owned``. ``None``: neither (unprotect, the way back).
    gitops_action: GitopsAction | None = None

    def verify(self, engine: Engine, ref: WorkloadRef, workload: Workload) -> Verified | None:
        """After a completed rollout: check the result on the live pods (``None``: no check).
        A failed check leaves the workload in :attr:`failed_status` with the message."""
        return None

    def explain(self, engine: Engine, ref: WorkloadRef) -> str | None:
        """After a failed or timed-out rollout: the likely cause (``None``: none known)."""
        return None

    def watch(self, engine: Engine, ref: WorkloadRef) -> str | None:
        """While the rollout is awaited (every few seconds): a definitive failure that makes
        waiting pointless (e.g. the injector denies every pod), or ``None``."""
        return None

    def before_patch(self, engine: Engine, workload: Workload, step: Inspected) -> None:  # noqa: B027
        """After the decision, before the patch is sent (not with ``dry_run``): e.g. record
        in the plan what the patch removes, so a killed run can still undo it."""

    def done_update(self, workload: Workload) -> Callable[[Workload], None] | None:
        """More changes to the workload recorded with the done status (same atomic save)."""
        return None

    def check_plan(self, plan: MigrationPlan, *, source: str) -> None:  # noqa: B027
        """Plan-wide rules this step enforces before touching anything (raise PlanError)."""

    @abc.abstractmethod
    def wanted(self, workload: Workload) -> bool:
        """Whether a selected workload is this step's to do (by its plan status)."""

    @abc.abstractmethod
    def inspect(
        self, engine: Engine, tenant: Tenant, workload: Workload, ref: WorkloadRef
    ) -> Inspected | None:
        """Read the workload and decide: the patch to send (or ``None`` when already done),
        or ``None`` after calling :meth:`Engine.refuse` (or when there is nothing to do).
        Called again after a 409 Conflict."""


def run(
    session: KubeSession,
    plan_path: str | os.PathLike[str],
    step: Step,
    options: RunOptions,
    *,
    progress: ProgressFn | None = None,
    decide: DecideFn | None = None,
    cancel: threading.Event | None = None,
    after: Callable[[Engine, Sequence[tuple[Tenant, Workload]]], None] | None = None,
) -> RunReport:
    """Run ``step`` over the plan at ``plan_path``: take the plan lock (not with ``dry_run``)
    through a :class:`PlanStore`, load the plan, select the workloads ``step`` wants, say how
    many, and drive the step over them (inspect, ask, one patch, wait in up to
    ``options.parallel`` workers, record after each status change). ``after(engine,
    selected)`` runs once the workloads are done, still under the lock with the same
    cluster client (finalize deletes Secrets there)."""
    check_options(options)
    store = PlanStore(
        plan_path, actor=options.actor, lock=not options.dry_run, read_only=options.dry_run
    )
    with store:
        plan = store.load()
        step.check_plan(plan, source=str(plan_path))  # before the cluster is touched
        if options.plan_check is not None:
            options.plan_check(plan)
        options.selection.check(plan)
        selected = [(t, w) for t, w in plan.iter_workloads() if options.selection.matches(t, w)]
        with WorkloadAPI(session) as cluster:
            return _run_loaded(
                cluster,
                store,
                step,
                options,
                selected,
                progress=progress,
                decide=decide,
                cancel=cancel,
                after=after,
            )


def _run_loaded(
    cluster: WorkloadAPI,
    store: PlanStore,
    step: Step,
    options: RunOptions,
    selected: Sequence[tuple[Tenant, Workload]],
    *,
    progress: ProgressFn | None,
    decide: DecideFn | None,
    cancel: threading.Event | None,
    after: Callable[[Engine, Sequence[tuple[Tenant, Workload]]], None] | None = None,
) -> RunReport:
    engine = Engine(
        cluster,
        store,
        options,
        progress=progress,
        decide=decide,
        cancel=cancel or threading.Event(),
    )
    todo = [(t, w) for t, w in selected if step.wanted(w)]
    if options.wait_for_git is not None:
        todo = [(t, w) for t, w in todo if _waits_for_git(step, w)]
        summary = f"{len(todo)} of {len(selected)} selected workload(s) waiting for Git"
    else:
        summary = step.summary.format(todo=len(todo), selected=len(selected))
    if options.emit_dir is not None:
        summary += f" (--emit {options.emit_dir}: nothing in the cluster will change)"
    elif options.dry_run:
        summary += " (server-side dry run: nothing will change)"
    engine.emit(None, summary, total=len(todo))
    _drive(engine, todo, lambda t, w: _apply(engine, step, t, w))
    if engine.emitter is not None:
        _write_emitted(engine)
    if after is not None:
        after(engine, selected)
    return engine.report


def _drive(
    engine: Engine,
    todo: Sequence[tuple[Tenant, Workload]],
    step: Callable[[Tenant, Workload], Callable[[], None] | None],
) -> None:
    """Run ``step`` per workload in the main thread (inspect, ask, patch); a returned callable
    (wait + record) runs in a worker while the next workload is prepared."""
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(
        max_workers=max(1, engine.options.parallel), thread_name_prefix="cloudtaser-wait"
    ) as pool:
        try:
            for index, (tenant, workload) in enumerate(todo):
                if not engine.acquire_slot():
                    engine.report.not_reached.extend(workload_ref(t, w) for t, w in todo[index:])
                    break
                waiter: Callable[[], None] | None = None
                try:
                    waiter = step(tenant, workload)
                finally:
                    if waiter is None:
                        engine.release_slot()
                if waiter is not None:
                    futures.append(pool.submit(_release_after, engine, waiter))
                if engine.report.quit:
                    engine.report.not_reached.extend(
                        workload_ref(t, w) for t, w in todo[index + 1 :]
                    )
                    break
        except BaseException:
            engine.cancel.set()
            raise
        finally:
            unexpected = [e for e in (f.exception() for f in futures) if e is not None]
    if unexpected:
        raise unexpected[0]  # a bug in a wait worker: surface it, never swallow it
    engine.report.interrupted = engine.cancel.is_set()
    engine.report.stopped_on_error = engine.stopped and not engine.report.interrupted
    order = {workload_ref(t, w): i for i, (t, w) in enumerate(todo)}
    engine.report.results.sort(key=lambda r: order.get(r.ref, len(order)))


def _release_after(engine: Engine, waiter: Callable[[], None]) -> None:
    try:
        waiter()
    finally:
        engine.release_slot()


def _apply(
    engine: Engine, flow: Step, tenant: Tenant, workload: Workload
) -> Callable[[], None] | None:
    """The per-workload work every step shares, in the main thread: inspect (again after a
    409 Conflict), ask once, patch once. Returns the wait + record job for a worker, or
    ``None`` when the workload is done with (its result already reported)."""
    opts = engine.options
    ref = workload_ref(tenant, workload)
    asked = False
    try:
        for _attempt in range(CONFLICT_RETRIES):
            step = _gitops(
                engine, flow, tenant, workload, ref,
                step=_placed(ref.kind, flow.inspect(engine, tenant, workload, ref)),
            )  # fmt: skip
            if step is None:
                return None
            if not asked:
                asked = True
                if not _ask(engine, flow, ref, workload, step):
                    return None
            if step.patch is None:
                if flow.already_message is not None:
                    engine.emit(ref, flow.already_message)
                if opts.dry_run:
                    engine.result(
                        WorkloadResult(
                            ref,
                            Outcome.DRY_RUN,
                            flow.already_dry_run,
                            step.warnings,
                            None,
                            already_applied=flow.already_dry_run_applied,
                        )
                    )
                    return None
                return _waiter(
                    engine, flow, ref, workload, obj=step.obj, warnings=step.warnings, patch=None
                )
            if not opts.dry_run:
                flow.before_patch(engine, workload, step)
            if engine.emitter is not None:
                _emit(engine, flow, ref, workload, step)
                return None
            try:
                patched = engine.cluster.patch(ref, step.patch, dry_run=opts.dry_run)
            except ClusterConflictError:
                if flow.conflict_message is not None:
                    engine.emit(ref, flow.conflict_message)
                continue
            if opts.dry_run:
                if flow.dry_run_message is not None:
                    engine.emit(ref, flow.dry_run_message)
                engine.result(
                    WorkloadResult(
                        ref, Outcome.DRY_RUN, flow.dry_run_result, step.warnings, step.patch
                    )
                )
                return None
            engine.emit(
                ref,
                flow.patched_message if opts.wait else flow.patched_no_wait_message,
                detail=True,
            )
            return _waiter(
                engine, flow, ref, workload, obj=patched, warnings=step.warnings, patch=step.patch
            )
        raise ClusterError(f"{ref} kept changing while we tried to patch it (409 Conflict)")
    except CloudtaserError as exc:
        error = one_line(str(exc))
        engine.emit(ref, error, warning=True)
        if flow.failed_reason is not None:
            engine.record(workload, flow.failed_status, reason=flow.failed_reason, error=error)
        engine.result(WorkloadResult(ref, Outcome.FAILED, error))
        return None


def _placed(kind: str, step: Inspected | None) -> Inspected | None:
    """The step's patches (pod template at ``spec.template``) in ``kind``'s layout
    (:func:`cloudtaser.target.kube.kinds.placed`: a CronJob's job template, a Rollout's
    ``spec.restartAt``), so what is shown is what is sent."""
    if step is None:
        return None
    return dataclasses.replace(
        step,
        patch=placed(kind, step.patch),
        shown_patch=placed(kind, step.shown_patch) or {},
    )


def _ask(engine: Engine, flow: Step, ref: WorkloadRef, workload: Workload, step: Inspected) -> bool:
    """Ask ``decide`` (when given) about the workload; False when it is done with (declined,
    or the run quits or was interrupted)."""
    if engine.decide is None:
        return True
    answer = engine.decide(
        Proposal(
            action=flow.action,
            ref=ref,
            replicas=_replicas(ref.kind, step.obj),
            mapping=_mapping(workload),
            warnings=step.warnings,
            # --emit: what goes to Git (no resourceVersion, no restart marker)
            patch=for_git(step.shown_patch) if engine.emitter is not None else step.shown_patch,
            already_applied=step.patch is None,
        )
    )
    if answer == Decision.QUIT or engine.cancel.is_set():
        engine.report.quit = answer == Decision.QUIT
        engine.report.not_reached.append(ref)
        return False
    if answer == Decision.LATER:
        engine.emit(ref, "not now: left as it is (still pending)")
        engine.result(WorkloadResult(ref, Outcome.DEFERRED, "not now", step.warnings))
        return False
    if answer == Decision.NO:
        if flow.declined_status is not None:
            engine.record(
                workload, flow.declined_status, reason="declined at the interactive prompt"
            )
        engine.emit(ref, flow.declined_message)
        engine.result(WorkloadResult(ref, Outcome.SKIPPED, "declined", step.warnings))
        return False
    return True


def _waiter(
    engine: Engine,
    flow: Step,
    ref: WorkloadRef,
    workload: Workload,
    *,
    obj: Mapping[str, Any],
    warnings: list[str],
    patch: dict[str, Any] | None,
) -> Callable[[], None]:
    """Wait for the rollout of ``obj``'s generation and record ``flow.done_status``;
    ``patch`` is ``None`` when the workload was found already applied."""
    generation = int(dig(obj, "metadata", "generation") or 0)
    already = patch is None

    def run() -> None:
        engine.wait_and_record(
            flow,
            ref,
            workload,
            generation=generation,
            warnings=warnings,
            patch=patch,
            already=already,
        )

    return run


# -- GitOps: the owner guard, --emit, --wait-for-git ---------------------------------------------


def _gitops(
    engine: Engine,
    flow: Step,
    tenant: Tenant,
    workload: Workload,
    ref: WorkloadRef,
    *,
    step: Inspected | None,
) -> Inspected | None:
    """Between inspect and the dialogue, for a step with a patch: ``--wait-for-git`` waits
    until the owner applied it; a live patch passes the owner guard (``--emit`` needs none)."""
    if step is None or step.patch is None:
        return step
    if engine.options.wait_for_git is not None:
        return _until_applied(engine, flow, tenant, workload, ref)
    if engine.options.emit_dir is None and not _may_patch_live(engine, flow, ref, workload, step):
        return None
    return step


def _owner(workload: Workload, obj: Mapping[str, Any]) -> Owner | None:
    """The plan's owner (what the reviewer saw), else the live object's."""
    return workload.owner or workload_owner(obj.get("metadata") or {})


def _may_patch_live(
    engine: Engine, flow: Step, ref: WorkloadRef, workload: Workload, step: Inspected
) -> bool:
    """Before a live patch: refuse one of a workload an unambiguous owner writes (unless
    ``--live-patch-owned``), warn loudly about an ambiguous owner or an allowed patch."""
    owner = _owner(workload, step.obj) if flow.gitops_action is not None else None
    if owner is None:
        return True
    who = describe(owner)
    if not owner.ambiguous and not engine.options.live_patch_owned:
        wait = workload.gitops
        engine.refuse(
            flow,
            ref,
            workload,
            f"owned by {who} ({owner.evidence}): a live {flow.gitops_action} is not in Git "
            "and its owner may revert it. "
            + (
                f"Its change was written for Git ({wait.emitted_at.isoformat()}): once merged, "
                "re-run with --wait-for-git"
                if wait is not None and wait.action == flow.gitops_action
                else "Write the change for Git with --emit DIR (commit it, then re-run with "
                "--wait-for-git)"
            )
            + ", or patch live anyway with --live-patch-owned",
            step.warnings,
        )
        return False
    warning = (
        f"live patch of a workload owned by {who} (--live-patch-owned): Git does not know "
        "this change and its owner may revert it; --emit DIR writes it for Git instead"
        if not owner.ambiguous
        else f"{who} may write this workload ({owner.evidence}): a live {flow.gitops_action} "
        "may be reverted at its next sync; if Git owns it, use --emit DIR instead"
    )
    engine.emit(ref, f"WARNING: {warning}", warning=True)
    step.warnings.append(warning)
    return True


@dataclass(frozen=True)
class _Emitted:
    """A change collected by ``--emit``, to report and record once the files are written."""

    workload: Workload
    ref: WorkloadRef
    action: GitopsAction
    change: TemplateChange
    warnings: list[str]


def _emit(
    engine: Engine, flow: Step, ref: WorkloadRef, workload: Workload, step: Inspected
) -> None:
    """``--emit``: the step's placed patch, for Git, goes to the emitter instead of the
    cluster (written, reported and recorded at the end: :func:`_write_emitted`)."""
    if engine.emitter is None or flow.gitops_action is None or step.patch is None:
        raise ConfigError(f"target {flow.action} cannot write its change for Git (--emit)")
    change = TemplateChange(
        action=flow.gitops_action,
        api_version=str(step.obj.get("apiVersion") or kind_info(ref.kind).api_version),
        kind=ref.kind,
        namespace=ref.namespace,
        name=ref.name,
        owner=_owner(workload, step.obj),
        patch=for_git(step.patch),
        template=pod_template(ref.kind, step.obj),
    )
    engine.emitter.add(change)
    template = pod_template(ref.kind, step.obj)
    kept = protection(template) if flow.gitops_action == "finalize" else None
    if kept is not None:
        engine.emitter.add(
            dataclasses.replace(
                change,
                action="protect",
                patch=placed(ref.kind, kept) or {},
                template=template,
                rebuilt=True,
            )
        )
    engine.emitted.append(_Emitted(workload, ref, flow.gitops_action, change, step.warnings))
    engine.emit(ref, f"{flow.gitops_action} change collected for Git", detail=True)


def _write_emitted(engine: Engine) -> None:
    """Write every collected change, then per workload report it and record it in the plan
    as waiting for Git (nothing with ``dry_run``: the plan is read-only)."""
    if engine.emitter is None or not engine.emitted:
        return
    root = engine.emitter.out_dir
    try:
        files = engine.emitter.write()
    except OSError as exc:
        raise ConfigError(
            f"--emit {root}: cannot write the files ({exc.strerror or exc}); nothing was "
            "changed in the cluster, re-run with a directory you can write"
        ) from exc
    engine.report.files = list(files)
    now = datetime.now(UTC).replace(microsecond=0)
    for done in engine.emitted:
        workload, ref, change = done.workload, done.ref, done.change
        mine = [str(p) for p in files if p.is_relative_to(root / owner_slug(change))]
        who = describe(change.owner) if change.owner is not None else "no known owner"
        message = (
            f"{change.action} written for Git ({who}): {', '.join(mine) or 'no file'}; commit "
            "it, then re-run with --wait-for-git"
        )
        wait = GitopsWait(action=done.action, emitted_at=now, files=mine)

        def waiting(target: Workload, wait: GitopsWait = wait) -> None:
            target.gitops = wait

        engine.record(
            workload,
            workload.effective_status,
            reason=f"{change.action} emitted for Git ({who}); waiting for it to be applied",
            update=waiting,
        )
        engine.result(
            WorkloadResult(ref, Outcome.EMITTED, message, done.warnings, dict(change.patch))
        )


def _waits_for_git(flow: Step, workload: Workload) -> bool:
    return workload.gitops is not None and workload.gitops.action == flow.gitops_action


#: How often (seconds) a workload waiting for Git says so while it waits.
GIT_PROGRESS_INTERVAL: Final = 30.0


def _until_applied(
    engine: Engine, flow: Step, tenant: Tenant, workload: Workload, ref: WorkloadRef
) -> Inspected | None:
    """``--wait-for-git``: inspect the workload again every poll interval until its owner
    has applied the change (the step has no patch left: returned, to be waited for, proven
    and recorded as usual). ``None`` when it is done with: refused by the step, interrupted,
    or still waiting at the deadline (reported ``waiting``; the plan keeps it waiting)."""
    opts = engine.options
    wait = workload.gitops
    owner = describe(workload.owner) if workload.owner is not None else "its owner"
    since = wait.emitted_at.isoformat() if wait is not None else "?"
    engine.emit(ref, f"waiting for {owner} to apply the change from Git (emitted {since})")
    said = time.monotonic()
    while True:
        left = engine.git_deadline - time.monotonic()
        if engine.cancel.is_set():
            why = "interrupted while waiting for Git: still waiting; re-run --wait-for-git"
            engine.result(WorkloadResult(ref, Outcome.INTERRUPTED, why))
            return None
        if left <= 0:
            why = (
                f"not applied by {owner} before the deadline: still waiting for Git (files: "
                f"{', '.join(wait.files) if wait is not None else '?'}); merge them, then re-run "
                "--wait-for-git"
            )
            engine.emit(ref, why, warning=True)
            engine.result(WorkloadResult(ref, Outcome.WAITING, why))
            return None
        engine.cancel.wait(min(opts.poll_interval, left))
        if time.monotonic() - said >= GIT_PROGRESS_INTERVAL:
            said = time.monotonic()
            engine.emit(ref, f"still waiting for Git ({int(left)}s left)", detail=True)
        with engine.quiet():
            step = _placed(ref.kind, flow.inspect(engine, tenant, workload, ref))
        if step is None or step.patch is None:
            if step is not None:
                engine.emit(ref, f"{owner} applied the change")
            return step


def _done_update(flow: Step, workload: Workload) -> Callable[[Workload], None] | None:
    """The step's own done update, and a change waiting for Git is not waiting any more."""
    more = flow.done_update(workload)
    if workload.gitops is None:
        return more

    def update(target: Workload) -> None:
        target.gitops = None
        if more is not None:
            more(target)

    return update
