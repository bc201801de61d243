"""The values of the workload engine's run (:mod:`cloudtaser.target.engine.core`): what a run is
asked (:class:`RunOptions`, :class:`Selection`), what it says (:class:`Event`,
:class:`Proposal`, :class:`Decision`), what one inspected workload is (:class:`Inspected`,
:func:`placed_step`), and what it reports (:class:`Outcome`, :class:`WorkloadResult`,
:class:`RunReport`, :class:`Verified`). Plain data, no cluster access; the run loop and the
GitOps part of it (:mod:`cloudtaser.target.engine.gitflow`) share them, and
:mod:`~cloudtaser.target.engine.core` re-exports them (its callers import them from there).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cloudtaser.errors import ConfigError
from cloudtaser.plan.model import MigrationPlan, Tenant, Workload
from cloudtaser.target.kube.kinds import placed
from cloudtaser.target.kube.workloads import WorkloadRef

__all__ = [
    "DecideFn",
    "Decision",
    "Event",
    "Inspected",
    "MappingLine",
    "Outcome",
    "ProgressFn",
    "Proposal",
    "RunOptions",
    "RunReport",
    "Selection",
    "Verified",
    "WorkloadResult",
    "check_options",
    "placed_step",
]

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


@dataclass(frozen=True)
class Verified:
    """The result of :meth:`Step.verify`: ``ok`` and a one-line message (names only)."""

    ok: bool
    message: str


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


def placed_step(kind: str, step: Inspected | None) -> Inspected | None:
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
