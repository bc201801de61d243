"""The GitOps part of the workload engine's run (:mod:`cloudtaser.target.engine.core`): the
owner guard before a live patch (a workload Argo CD, Flux or a Helm release writes is refused
without ``--live-patch-owned``), ``--emit`` (the step's patch, for Git, goes to the
:class:`~cloudtaser.target.gitops.emit.Emitter` instead of the API server, and the plan records
the workload waiting for Git) and ``--wait-for-git`` (inspect again until the owner applied the
change, then the run loop waits, proves and records as after a live patch). docs/gitops.md.

Called by the run loop only; it calls back the engine's reporting and recording
(:class:`~cloudtaser.target.engine.core.Engine`) and the step's ``inspect``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import ConfigError
from cloudtaser.plan.model import GitopsAction, GitopsWait, Owner, Tenant, Workload
from cloudtaser.target.engine.values import (
    Inspected,
    Outcome,
    WorkloadResult,
    placed_step,
)
from cloudtaser.target.gitops.change import TemplateChange, for_git, protection
from cloudtaser.target.gitops.emit import owner_slug
from cloudtaser.target.kube.kinds import kind_info, placed, pod_template
from cloudtaser.target.kube.workloads import WorkloadRef
from cloudtaser.target.owners import describe, workload_owner

if TYPE_CHECKING:
    from cloudtaser.target.engine.core import Engine, Step

__all__ = [
    "GIT_PROGRESS_INTERVAL",
    "Emitted",
    "done_update",
    "emit_change",
    "guard",
    "waits_for_git",
    "write_emitted",
]


def guard(
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
class Emitted:
    """A change collected by ``--emit``, to report and record once the files are written."""

    workload: Workload
    ref: WorkloadRef
    action: GitopsAction
    change: TemplateChange
    warnings: list[str]


def emit_change(
    engine: Engine, flow: Step, ref: WorkloadRef, workload: Workload, step: Inspected
) -> None:
    """``--emit``: the step's placed patch, for Git, goes to the emitter instead of the
    cluster (written, reported and recorded at the end: :func:`write_emitted`)."""
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
    engine.emitted.append(Emitted(workload, ref, flow.gitops_action, change, step.warnings))
    engine.emit(ref, f"{flow.gitops_action} change collected for Git", detail=True)


def write_emitted(engine: Engine) -> None:
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


def waits_for_git(flow: Step, workload: Workload) -> bool:
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
            step = placed_step(ref.kind, flow.inspect(engine, tenant, workload, ref))
        if step is None or step.patch is None:
            if step is not None:
                engine.emit(ref, f"{owner} applied the change")
            return step


def done_update(flow: Step, workload: Workload) -> Callable[[Workload], None] | None:
    """The step's own done update, and a change waiting for Git is not waiting any more."""
    more = flow.done_update(workload)
    if workload.gitops is None:
        return more

    def update(target: Workload) -> None:
        target.gitops = None
        if more is not None:
            more(target)

    return update
