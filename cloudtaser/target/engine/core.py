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

The run loop is one state machine and stays in one module; its plain values (options,
selection, events, results: :mod:`~cloudtaser.target.engine.values`) and its GitOps part (the
owner guard, ``--emit``, ``--wait-for-git``: :mod:`~cloudtaser.target.engine.gitflow`) live
beside it, and this module re-exports the values its callers use.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import CloudtaserError, ClusterConflictError, ClusterError
from cloudtaser.plan.model import (
    GitopsAction,
    MigrationPlan,
    Tenant,
    Workload,
    WorkloadStatus,
)
from cloudtaser.plan.store import PlanStore, one_line
from cloudtaser.target.engine.gitflow import (
    Emitted,
    done_update,
    emit_change,
    guard,
    waits_for_git,
    write_emitted,
)
from cloudtaser.target.engine.values import (
    DecideFn,
    Decision,
    Event,
    Inspected,
    MappingLine,
    Outcome,
    ProgressFn,
    Proposal,
    RunOptions,
    RunReport,
    Selection,
    Verified,
    WorkloadResult,
    check_options,
    placed_step,
)
from cloudtaser.target.gitops.change import for_git
from cloudtaser.target.gitops.emit import Emitter
from cloudtaser.target.kube.kinds import kind_info
from cloudtaser.target.kube.workloads import WorkloadAPI, WorkloadRef
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
    "DecideFn",
    "Decision",
    "Engine",
    "Event",
    "Inspected",
    "MappingLine",
    "Outcome",
    "ProgressFn",
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
        self.emitted: list[Emitted] = []
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
            self.record(workload, done_status, reason=reason, update=done_update(flow, workload))
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


def _explain(flow: Step, engine: Engine, ref: WorkloadRef) -> str | None:
    try:
        return flow.explain(engine, ref)
    except CloudtaserError as exc:
        return f"(could not tell: {one_line(str(exc), 200)})"


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
        todo = [(t, w) for t, w in todo if waits_for_git(step, w)]
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
        write_emitted(engine)
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
            step = guard(
                engine, flow, tenant, workload, ref,
                step=placed_step(ref.kind, flow.inspect(engine, tenant, workload, ref)),
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
                emit_change(engine, flow, ref, workload, step)
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
