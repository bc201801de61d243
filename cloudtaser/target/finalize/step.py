"""``target finalize``: the engine step that removes the Secret references the vault now
serves (:class:`FinalizeStep`), and the run (:func:`finalize`), which then, only when asked,
deletes the Secrets nobody uses any more (:mod:`cloudtaser.target.finalize.deletion`).

Per ``migrated`` workload not yet finalized, in plan order (``docs/lifecycle.md``):

1. The workload must be protected (the inject label on its template) and its **live pods
   proven injected** (:mod:`cloudtaser.target.engine.injection`): whatever the plan says, nothing is
   removed from a workload whose pods do not run through the wrapper. And the injector must
   admit its *next* pods: a dry-run pod of its template comes back injected
   (:mod:`cloudtaser.target.engine.admission`), since without the references they depend on
   the injector alone.
2. Drift check: the template must consume exactly the (Secret, key, env) triples the plan
   maps (:mod:`cloudtaser.target.engine.consumption`). Then exactly those
   ``env[].valueFrom.secretKeyRef`` entries, and the ``envFrom[].secretRef`` entries whose every
   key the plan maps, are removed, and each migrated Secret volume's ``secret``/``projected``
   source becomes ``emptyDir {medium: Memory}`` of the same name (the template no longer
   references the Secret; the injector renders the files into it); anything else stays
   (:func:`cloudtaser.target.engine.secret_refs.finalize_edit`). An ``envFrom`` whose Secret has
   a key the plan does not map is refused (removing it would take that variable away). A mapped
   reference the runtime does not serve is kept and reported
   (:class:`~cloudtaser.target.engine.secret_refs.KeptRef`): init containers', and a variable
   read by ``$(VAR)``, an exec probe or a lifecycle hook (:mod:`cloudtaser.target.consumers`);
   when nothing is left to remove, the workload is refused and left alone.
3. What will be removed is written into the plan (``finalizedRefs``, ``finalizedVolumes``)
   just before the one strategic-merge patch (``resourceVersion`` precondition, field manager
   ``cloudtaser``), so a run killed at any moment can still be undone by ``target unprotect``.
4. Wait for the one rollout, prove injection again on the new pods, record ``finalizedAt``
   and a history entry. The status stays ``migrated``. A re-run after a kill finds the
   references gone: no patch, only wait and record (no second rollout).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import cloudtaser.target.annotations as ann
from cloudtaser.plan.model import FinalizedRef, FinalizedVolume, Tenant, Workload, WorkloadStatus
from cloudtaser.target.consumers import ProvenCoverage
from cloudtaser.target.engine.admission import check_admission
from cloudtaser.target.engine.consumption import drift, file_drift, live_triples, plan_triples
from cloudtaser.target.engine.core import (
    DecideFn,
    Engine,
    Event,
    Inspected,
    Outcome,
    ProgressFn,
    RunOptions,
    RunReport,
    Step,
    Verified,
    WorkloadResult,
    run,
)
from cloudtaser.target.engine.injection import REROLL_HINT, explain_workload, revision_pods
from cloudtaser.target.engine.secret_refs import describe, finalize_edit
from cloudtaser.target.engine.template_proof import live_proof, verify_injection
from cloudtaser.target.finalize.deletion import ConfirmFn, SecretsReport, delete_unused_secrets
from cloudtaser.target.kube.kinds import pod_template
from cloudtaser.target.references.safety import ATTEST_HINT
from cloudtaser.target.rollout import blockers, dig

if TYPE_CHECKING:
    from pathlib import Path

    from cloudtaser.plan.attest import VerificationReport
    from cloudtaser.target.kube.session import KubeSession
    from cloudtaser.target.kube.workloads import WorkloadRef

__all__ = ["FinalizeStep", "finalize", "not_protected_reason", "verification_warning"]


def verification_warning(
    report: VerificationReport | None, *, delete_secrets: bool = False
) -> str | None:
    """The warning of a finalize run without a verification report (``None`` with one: the
    ``--require-verified`` gate has checked it covers every migrated workload)."""
    if report is not None:
        return None
    return (
        "no verification report given (--require-verified REPORT): finalize cannot know that "
        "every value is in the vault; it proves on the live pods that they start through the "
        "wrapper, which exits when a path cannot be read"
        + (
            ". --delete-secrets keeps every Secret holding a key the plan maps (only keys "
            f"released in the plan need no proof): {ATTEST_HINT}"
            if delete_secrets
            else ""
        )
    )


class FinalizeStep(Step):
    """Finalize a ``migrated`` workload: remove exactly the plan-mapped Secret references in
    one patch; already done when none is left and the plan recorded what was removed;
    recorded with ``finalizedAt`` (the status stays ``migrated``)."""

    action = "finalize"
    summary = "{todo} migrated, not yet finalized, of {selected} selected workload(s)"
    done_status = WorkloadStatus.MIGRATED
    done_outcome = Outcome.FINALIZED
    patched_reason = "finalized: Secret references removed and rolled out"
    found_reason = "finalized: Secret references found removed; rollout confirmed"
    declined_message = "left as it is"
    already_message = "the mapped Secret references are already gone: not patched again"
    already_dry_run = "references already removed; a real run would only wait and record"
    already_dry_run_applied = True
    conflict_message = "changed while we looked at it (409); checking again"
    dry_run_message = "server-side dry run accepted the patch"
    dry_run_result = "removal accepted (dry run)"
    patched_message = "Secret references removed (one rollout); waiting"
    patched_no_wait_message = "Secret references removed"
    failed_reason = "finalize failed"
    failed_status = WorkloadStatus.MIGRATED
    unverified_reason = "finalize: injection not proven after the rollout"
    gitops_action = "finalize"

    def __init__(self, *, named: bool = False) -> None:
        self._removing: dict[int, list[FinalizedRef]] = {}
        self._replacing: dict[int, list[FinalizedVolume]] = {}
        #: One line per reference this run keeps (``str(KeptRef)``), for the history.
        self._keeping: dict[int, list[str]] = {}
        #: The run names its workloads (``--workload``): one finalize cannot act on is
        #: refused with the step that comes first, never passed over in silence.
        self.named = named

    def wanted(self, workload: Workload) -> bool:
        return self.named or (
            workload.effective_status == WorkloadStatus.MIGRATED and workload.finalized_at is None
        )

    def _comes_first(self, workload: Workload, ref: WorkloadRef) -> str | None:
        """Why a named workload is not finalize's to do, naming the step that comes first."""
        status = workload.effective_status
        named = f"--workload {ref.namespace}/{ref.kind}/{ref.name}"
        if status == WorkloadStatus.PENDING:
            return (
                "still pending: protect comes first (`cloudtaser target protect "
                f"{named}`), then finalize"
            )
        if status == WorkloadStatus.SKIPPED:
            return (
                "skipped in the plan: `cloudtaser plan set-status PLAN --status pending "
                f"{named}`, then `cloudtaser target protect`, then finalize"
            )
        return None

    def inspect(
        self, engine: Engine, tenant: Tenant, workload: Workload, ref: WorkloadRef
    ) -> Inspected | None:
        return self._inspect(engine, tenant, workload, ref, again=True)

    def _inspect(
        self, engine: Engine, tenant: Tenant, workload: Workload, ref: WorkloadRef, *, again: bool
    ) -> Inspected | None:
        """``again``: inspect once more when the template changed while its pods were being
        proven (see below)."""
        first = self._comes_first(workload, ref)
        if first is not None:
            engine.refuse(self, ref, workload, first, [])
            return None
        if workload.finalized_at is not None:  # named, already done: say so (exit 0)
            why = f"already finalized ({workload.finalized_at.isoformat()}): nothing to do"
            engine.emit(ref, why)
            engine.result(WorkloadResult(ref, Outcome.FINALIZED, why))
            return None
        obj = engine.cluster.get(ref)
        if obj is None:
            engine.refuse(self, ref, workload, f"{ref} does not exist in the cluster", [])
            return None
        template = pod_template(ref.kind, obj)
        labels = dig(template, "metadata", "labels") or {}
        annotations = dig(template, "metadata", "annotations") or {}
        if labels.get(ann.INJECT_LABEL) != "true" or not (
            ann.SECRET_PATHS in annotations or ann.SECRET_FILES in annotations
        ):
            engine.refuse(self, ref, workload, not_protected_reason(workload, ref), [])
            return None
        found = blockers(ref.kind, obj)
        if found.refusals:
            engine.refuse(self, ref, workload, " ".join(found.refusals), found.warnings)
            return None
        # a use the runtime serves no longer needs its reference, proven on the live pods
        coverage = ProvenCoverage.of_pods(revision_pods(engine.cluster, ref, obj))
        edit = finalize_edit(
            template,
            workload,
            lambda name: engine.cluster.secret_keys(ref.namespace, name),
            coverage=coverage,
        )
        if edit.problems:
            engine.refuse(self, ref, workload, "; ".join(edit.problems), found.warnings)
            return None
        live = live_triples(
            template,
            lambda n: engine.cluster.secret_keys(ref.namespace, n),
            env_names=engine.plan.metadata.env_name_rule,
        )
        planned = plan_triples(workload)
        files_drift = file_drift(workload, template)
        kept = [str(k) for k in edit.kept]
        if not edit.refs and not edit.volumes:
            finalized = workload.finalized_refs or workload.finalized_volumes
            if finalized and live <= planned and not files_drift:
                # our own earlier patch (a run killed before recording): only wait and record;
                # what is left is what finalize keeps
                self._keeping[id(workload)] = kept
                for line in kept:
                    engine.emit(ref, line, warning=True)
                return Inspected(obj, None, {}, [*found.warnings, *kept])
            if edit.kept and live == planned:
                why = (
                    "nothing can be removed: every mapped reference is still read by something "
                    "the runtime does not serve: " + "; ".join(kept)
                )
            elif live or planned or files_drift:
                why = "drift since protect: " + "; ".join(drift(planned, live) + files_drift)
            else:
                why = "the plan maps no Kubernetes Secret reference of this workload"
            engine.refuse(self, ref, workload, f"{why}. Nothing was changed", found.warnings)
            return None
        if live != planned or files_drift:
            engine.refuse(
                self,
                ref,
                workload,
                "drift since protect: "
                + "; ".join(drift(planned, live) + files_drift)
                + ". Nothing was changed; re-run discover (or fix the plan) and review again",
                found.warnings,
            )
            return None
        proof = live_proof(engine.cluster, ref, obj)
        if not proof.ok and again and _changed(engine, ref, obj):
            # the template changed between the read and the proof (its owner applied a change:
            # with --wait-for-git, the very change it waits for; a Recreate rollout has no pod
            # of either revision then): judge the new template, not the old one's gone pods
            return self._inspect(engine, tenant, workload, ref, again=False)
        if not proof.ok:
            engine.refuse(
                self,
                ref,
                workload,
                f"its live pods are not proven injected, so nothing is removed: {proof.message}"
                + ("" if REROLL_HINT in proof.message else f"; {REROLL_HINT} (then finalize)"),
                found.warnings,
            )
            return None
        # the pods will depend on the injector alone once the references are gone
        admission = check_admission(engine.cluster, ref, template)
        if not admission.admitted:
            engine.refuse(self, ref, workload, admission.reason, found.warnings)
            return None
        patch: dict[str, Any] = {"spec": {"template": {"spec": edit.spec_patch}}}
        rv = dig(obj, "metadata", "resourceVersion")
        if rv:
            patch["metadata"] = {"resourceVersion": rv}
        self._removing[id(workload)] = edit.refs
        self._replacing[id(workload)] = edit.volumes
        self._keeping[id(workload)] = kept
        engine.emit(ref, f"removes {describe(edit.refs, edit.volumes)}")
        for line in kept:
            engine.emit(ref, line, warning=True)
        return Inspected(obj, patch, patch, [*found.warnings, *kept])

    def before_patch(self, engine: Engine, workload: Workload, step: Inspected) -> None:
        refs = self._removing.get(id(workload), [])
        volumes = self._replacing.get(id(workload), [])

        def change(w: Workload) -> None:
            w.finalized_refs = list(refs)
            w.finalized_volumes = list(volumes)

        engine.store.update(workload, change)

    def verify(self, engine: Engine, ref: WorkloadRef, workload: Workload) -> Verified | None:
        return verify_injection(engine.cluster, ref)

    def explain(self, engine: Engine, ref: WorkloadRef) -> str | None:
        return explain_workload(engine.cluster, ref)

    def done_update(self, workload: Workload) -> Callable[[Workload], None] | None:
        kept = "".join(f"; {line}" for line in self._keeping.get(id(workload), []))

        def change(w: Workload) -> None:
            w.finalized_at = datetime.now(UTC).replace(microsecond=0)
            if w.history:
                last = w.history[-1]
                removed = describe(w.finalized_refs, w.finalized_volumes)
                last.reason = f"{last.reason}; removed {removed}{kept}"[:4000]

        return change


def not_protected_reason(workload: Workload, ref: WorkloadRef) -> str:
    """Why a workload without protect's label or annotations is refused, and the way back."""
    lacks = "its pod template lacks the cloudtaser.io/inject label or annotations"
    if workload.effective_status != WorkloadStatus.MIGRATED:
        return f"not protected ({lacks}): run `cloudtaser target protect` first"
    return (
        f"not protected any more: {lacks}, though the plan records it migrated: something "
        "re-applied the template without them (its owner: Git, a chart?). Put protect's change "
        "back: for an owned workload, keep protect's documents in Git (finalize --emit writes "
        "them with its own: docs/gitops.md); otherwise `cloudtaser plan set-status PLAN "
        f"--status pending --workload {ref.namespace}/{ref.kind}/{ref.name}`, then "
        "`cloudtaser target protect`"
    )


def _changed(engine: Engine, ref: WorkloadRef, obj: dict[str, Any]) -> bool:
    """Has the workload's spec changed since ``obj`` was read (another generation)?"""
    now = engine.cluster.get(ref)
    return now is not None and dig(now, "metadata", "generation") != dig(
        obj, "metadata", "generation"
    )


def finalize(
    session: KubeSession,
    plan_path: str | os.PathLike[str],
    options: RunOptions,
    *,
    delete_secrets: bool = False,
    verified: VerificationReport | None = None,
    progress: ProgressFn | None = None,
    decide: DecideFn | None = None,
    cancel: threading.Event | None = None,
    confirm_delete: ConfirmFn | None = None,
    gitops_source: Path | None = None,
) -> tuple[RunReport, SecretsReport | None]:
    """Finalize the selected ``migrated`` workloads of the plan at ``plan_path`` (one patch
    and one rollout each), then, with ``delete_secrets``, delete their Secrets that lose
    nothing (every key proven in the vault by ``verified``, the report of ``verify-plan
    --attest``, or released in the plan) and that nothing references any more. Same lock,
    selection, dialogue, dry run and resume as protect. ``confirm_delete``
    (``--interactive``) is asked separately before each irreversible delete.
    ``gitops_source`` (``--gitops-source DIR``): a local checkout of the Git source of owned
    Secrets, searched for the files that define them (an owned Secret is never deleted)."""
    step = FinalizeStep(named=bool(options.selection.workloads))
    secrets: list[SecretsReport] = []
    warning = verification_warning(verified, delete_secrets=delete_secrets)
    if warning and progress is not None:
        progress(Event(None, warning, warning=True))

    def after(engine: Engine, selected: Sequence[tuple[Tenant, Workload]]) -> None:
        if not delete_secrets:
            return
        if engine.report.interrupted or engine.report.quit or engine.report.failed:
            engine.emit(
                None, "no Secret deleted: the run did not complete (re-run to resume)", warning=True
            )
            return
        secrets.append(
            delete_unused_secrets(
                engine,
                selected,
                verified=verified,
                progress=progress,
                confirm=confirm_delete,
                checkout=gitops_source,
            )
        )

    report = run(
        session,
        plan_path,
        step,
        options,
        progress=progress,
        decide=decide,
        cancel=cancel,
        after=after,
    )
    return report, (secrets[0] if secrets else None)
