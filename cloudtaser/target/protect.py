"""``target protect`` / ``target unprotect``: annotate workloads for injection, roll them out
once, record every outcome in the plan.

Per pending workload, in plan order (``docs/protect.md`` tells the whole story):

1. ``migrated`` and ``skipped`` workloads are never touched again (that is what resumes),
   except with ``--reroll``: a ``migrated`` workload (or an annotated ``pending`` one) whose
   live pods are not proven injected gets a new restart marker, one rollout, and is proven
   again. A workload named with ``--workload`` that the step cannot act on is reported with
   the step that comes first (exit 1), never passed over in silence.
2. Drift check: the live pod template must still consume exactly the (Secret, key, env)
   triples the plan lists (``cloudtaser.target.podspec.consumed_env``). On drift nothing is
   patched; the workload stays ``pending`` with the reason recorded.
3. Refusals (paused Deployment, ``OnDelete``, StatefulSet partition) leave it pending too;
   warnings (Recreate strategy, Argo CD / Flux / Helm ownership, and each mapped variable whose
   Secret reference finalize will keep: :mod:`cloudtaser.target.consumers`) are reported.
4. One strategic-merge patch of the pod template with a ``metadata.resourceVersion``
   precondition and field manager ``cloudtaser``: every annotation of
   :mod:`cloudtaser.target.annotations`, the inject label and the restart marker at once, so exactly
   one rollout happens. A workload that already carries exactly the intended annotations (the
   marker aside) is not patched again: it is only waited for and recorded. That is what makes
   a run killed between patch and plan write resume without a second rollout.
5. Wait by kubectl's rules (:mod:`cloudtaser.target.rollout`), then write the new status to the plan
   at once (atomic save), with time and actor.

The two :class:`~cloudtaser.target.engine.core.Step` objects here (:class:`ProtectStep`,
:class:`UnprotectStep`) say what differs; the workload engine (:mod:`cloudtaser.target.engine.core`)
does the rest: selection, the dialogue, one patch, waiting, recording, resume and the lock.
The patch builders are pure functions; the drift rules are the engine's
(:mod:`cloudtaser.target.engine.consumption`), and unprotect puts back what finalize removed
through :mod:`cloudtaser.target.engine.secret_refs`: this workflow never imports finalize.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudtaser.target.annotations as ann
import cloudtaser.target.owners as owner_rules
from cloudtaser.config import valid_vault_namespace, validate_vault_address
from cloudtaser.contract import InjectorDefaults
from cloudtaser.errors import ConfigError, RegistryError
from cloudtaser.plan.isolation import check_isolation
from cloudtaser.plan.model import MigrationPlan, Tenant, Workload, WorkloadStatus
from cloudtaser.target.consumers import DESIGN_COVERAGE
from cloudtaser.target.engine.admission import check_admission
from cloudtaser.target.engine.consumption import (
    drift,
    file_drift,
    kept_reasons,
    live_triples,
    plan_triples,
)
from cloudtaser.target.engine.core import (
    DecideFn,
    Engine,
    Inspected,
    Outcome,
    ProgressFn,
    RunOptions,
    RunReport,
    Step,
    Verified,
    WorkloadResult,
    check_options,
    run,
)
from cloudtaser.target.engine.injection import (
    REROLL_HINT,
    denied,
    explain_workload,
    injector_defaults,
)
from cloudtaser.target.engine.secret_refs import (
    clear_finalized,
    restore_for_unprotect,
    with_restore,
)
from cloudtaser.target.engine.template_proof import live_proof, verify_injection
from cloudtaser.target.kube.kinds import kind_info, pod_template
from cloudtaser.target.kube.session import KubeSession
from cloudtaser.target.kube.workloads import WorkloadAPI, WorkloadRef
from cloudtaser.target.podspec import SecretKeys
from cloudtaser.target.registry import Lookup, pin_commands
from cloudtaser.target.rollout import blockers, dig

__all__ = [
    "ProtectStep",
    "UnprotectStep",
    "build_patch",
    "build_removal_patch",
    "protect",
    "unlabelled_gitops_writers",
    "unprotect",
]


# --- pure helpers ---------------------------------------------------------------------------


#: Field managers of GitOps controllers: evidence of an owner that labels and annotations may
#: not show (the owner rules, cloudtaser.target.owners, read those; the engine's owner guard
#: refuses or warns from them).
_GITOPS_MANAGERS = {
    "argocd-controller": "Argo CD",
    "argocd-application-controller": "Argo CD",
    "argocd": "Argo CD",
    "kustomize-controller": "Flux (kustomize-controller)",
    "helm-controller": "Flux (helm-controller)",
    "gotk-sync-manager": "Flux",
}


def unlabelled_gitops_writers(obj: Mapping[str, Any]) -> list[str]:
    """GitOps controllers among the object's ``managedFields`` managers when its labels and
    annotations name no owner (:func:`cloudtaser.target.owners.workload_owner`): the one
    evidence the owner rules do not read. An owner they find is the engine's to say (one
    refusal or warning), so nothing is listed then."""
    meta = obj.get("metadata") or {}
    if owner_rules.workload_owner(meta) is not None:
        return []
    found: list[str] = []
    for entry in meta.get("managedFields") or []:
        manager = str((entry or {}).get("manager") or "")
        tool = _GITOPS_MANAGERS.get(manager)
        text = f"{tool} (field manager {manager!r})"
        if tool and text not in found:
            found.append(text)
    return found


def build_patch(
    intended: Mapping[str, str],
    marker: str,
    resource_version: str | None,
    live_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The one strategic-merge patch of protect: inject label, annotations, restart marker,
    conditional on ``resource_version``.

    A managed key present on the live template but not intended any more (e.g. a
    ``vault-auth-path`` from an earlier plan) is set to ``null``, so after the patch the
    template matches the intent exactly and a re-run does not patch again.
    """
    stale = {
        key: None
        for key in ann.MANAGED_KEYS
        if key != ann.RESTARTED_AT and key in (live_annotations or {}) and key not in intended
    }
    patch: dict[str, Any] = {
        "spec": {
            "template": {
                "metadata": {
                    "labels": {ann.INJECT_LABEL: "true"},
                    "annotations": {**stale, **intended, ann.RESTARTED_AT: marker},
                }
            }
        }
    }
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def _template_meta(kind: str, obj: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    meta = pod_template(kind, obj).get("metadata") or {}
    return dict(meta.get("annotations") or {}), dict(meta.get("labels") or {})


def build_removal_patch(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The one patch of unprotect: ``null`` for each annotation (and the label) protect adds
    that is present on ``obj``'s pod template (a workload of ``kind``); ``None`` when
    nothing is there. The patch carries the template at ``spec.template`` (the engine
    places it: :func:`cloudtaser.target.kube.kinds.placed`)."""
    live_ann, live_labels = _template_meta(kind, obj)
    annotations: dict[str, None] = {k: None for k in ann.MANAGED_KEYS if k in live_ann}
    template_meta: dict[str, Any] = {}
    if annotations:
        template_meta["annotations"] = annotations
    if ann.INJECT_LABEL in live_labels:
        template_meta["labels"] = {ann.INJECT_LABEL: None}
    if not template_meta:
        return None
    patch: dict[str, Any] = {"spec": {"template": {"metadata": template_meta}}}
    rv = dig(obj, "metadata", "resourceVersion")
    if rv:
        patch["metadata"] = {"resourceVersion": rv}
    return patch


def _is_applied(kind: str, obj: Mapping[str, Any], intended: Mapping[str, str]) -> bool:
    live_ann, live_labels = _template_meta(kind, obj)
    return ann.matches_intended(live_ann, intended) and live_labels.get(ann.INJECT_LABEL) == "true"


@dataclass
class _Inspection:
    obj: dict[str, Any] | None = None
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _inspect_for_protect(
    cluster: WorkloadAPI,
    ref: WorkloadRef,
    workload: Workload,
    intended: Mapping[str, str],
    env_names: str | None = None,
) -> _Inspection:
    obj = cluster.get(ref)
    if obj is None:
        return _Inspection(refusals=[f"{ref} does not exist in the cluster"])
    found = _Inspection(obj=obj)
    if not kind_info(ref.kind).mutable:
        found.refusals.extend(blockers(ref.kind, obj).refusals)
        return found
    if _is_applied(ref.kind, obj, intended):
        # Our own earlier patch (a run killed before recording): no drift check is possible
        # against an injected template that still carries the Secret refs - and none needed.
        found.warnings.extend(_writer_warnings(obj))
        return found
    template = pod_template(ref.kind, obj)
    secret_keys = _secret_keys(cluster, ref)
    live = live_triples(template, secret_keys, env_names=env_names)
    differences = drift(plan_triples(workload), live)
    differences += file_drift(workload, template)
    if differences:
        found.refusals.append(
            "drift since discovery: "
            + "; ".join(differences)
            + ". Nothing was changed; re-run discover (or fix the plan) and review again"
        )
    found_rules = blockers(ref.kind, obj)
    found.refusals.extend(found_rules.refusals)
    found.warnings.extend(found_rules.warnings)
    found.warnings.extend(_writer_warnings(obj))
    return found


def _writer_warnings(obj: Mapping[str, Any]) -> list[str]:
    return [
        f"GitOps: {w} writes this workload although its labels name no owner: a live change "
        "may not last; if Git owns it, --emit DIR writes the change for Git (docs/gitops.md)"
        for w in unlabelled_gitops_writers(obj)
    ]


def _secret_keys(cluster: WorkloadAPI, ref: WorkloadRef) -> SecretKeys:
    """The key names of a Secret in the workload's namespace (``None``: it does not exist)."""
    return lambda name: cluster.secret_keys(ref.namespace, name)


def _kept_after_finalize(
    cluster: WorkloadAPI, ref: WorkloadRef, workload: Workload, obj: Mapping[str, Any]
) -> list[str]:
    """One warning per mapped variable whose Secret reference finalize will keep, because
    something the runtime does not serve reads it (docs/lifecycle.md, "What finalize keeps")."""
    template = pod_template(ref.kind, obj)
    return [
        f"finalize will keep the Secret reference of env {env} in "
        f"{'init container' if init else 'container'} {container}: {'; '.join(why)}"
        for (container, init, env), why in sorted(
            kept_reasons(
                template, workload, _secret_keys(cluster, ref), coverage=DESIGN_COVERAGE
            ).items()
        )
    ]


class ProtectStep(Step):
    """Protect a ``pending`` workload: the annotations of the plan, the inject label and the
    restart marker in one patch; already done when the live template carries exactly the
    intended annotations; recorded ``migrated``."""

    action = "protect"
    summary = "{todo} pending of {selected} selected workload(s)"
    done_status = WorkloadStatus.MIGRATED
    done_outcome = Outcome.MIGRATED
    patched_reason = "protected: annotations applied and rolled out"
    found_reason = "protected: annotations found applied; rollout confirmed"
    declined_status: WorkloadStatus | None = WorkloadStatus.SKIPPED
    declined_message = "skipped (recorded in the plan)"
    already_message = "already carries the intended annotations: not patched again"
    already_dry_run = "already annotated; a real run would only wait and record"
    already_dry_run_applied = True
    conflict_message = "changed while we looked at it (409); checking again"
    dry_run_message = "server-side dry run accepted the patch"
    dry_run_result = "patch accepted (dry run)"
    patched_message = "patched (one rollout); waiting"
    patched_no_wait_message = "patched"
    failed_reason = "protect failed"
    records_refusals = True
    gitops_action = "protect"

    unverified_reason = "injection not proven"

    def __init__(
        self,
        vault_address: str | None,
        pin: Lookup | None = None,
        *,
        verify_injection: bool = True,
        reroll: bool = False,
        named: bool = False,
        vault_namespace: str | None = None,
    ) -> None:
        #: ``None``: the installed injector's default address (read at the first workload).
        self.vault_address = vault_address
        self.vault_namespace = vault_namespace
        #: The injector's cluster defaults (:func:`injector_defaults`), read once.
        self.defaults: InjectorDefaults | None = None
        #: What the templates leave to those defaults (recorded as ``injectorDefaults``).
        self.left_to_injector: list[str] = []
        #: ``--pin-entrypoints``: image lookups from this machine; explicit command/args go
        #: into the same patch (:func:`cloudtaser.target.registry.pin_commands`).
        self.pin = pin
        self.verify_injection = verify_injection or reroll
        #: ``--reroll``: also the ``migrated`` (and already annotated ``pending``) workloads
        #: whose live pods are not proven injected get a new restart marker (one rollout) and
        #: are proven again; a workload whose pods are proven is left alone.
        self.reroll = reroll
        #: The run names its workloads (``--workload``): one this step cannot act on is
        #: refused with the step that comes first, never passed over in silence.
        self.named = named
        if reroll:
            self.action = "reroll"
            self.summary = "{todo} of {selected} selected workload(s) to protect or re-roll"
            self.patched_reason = "re-rolled: pods restarted (one rollout)"
            self.found_reason = "protected: annotations found applied; rollout confirmed"
            # a migrated workload is never recorded pending or skipped by a refusal or a "no"
            self.records_refusals = False
            self.declined_status = None
            self.declined_message = "left as it is"

    def verify(self, engine: Engine, ref: WorkloadRef, workload: Workload) -> Verified | None:
        if not self.verify_injection:
            engine.emit(
                ref,
                "injection NOT verified (--no-verify-injection; nor was admission checked before "
                "the patch): the pods may run exactly as before; finalize proves it on the live "
                "pods before it removes anything",
                warning=True,
            )
            return Verified(True, "injection NOT verified (--no-verify-injection)")
        return verify_injection(engine.cluster, ref)

    def explain(self, engine: Engine, ref: WorkloadRef) -> str | None:
        return explain_workload(engine.cluster, ref)

    def watch(self, engine: Engine, ref: WorkloadRef) -> str | None:
        return denied(engine.cluster, ref) if self.verify_injection else None

    def done_update(self, workload: Workload) -> Callable[[Workload], None] | None:
        left = list(self.left_to_injector)
        if left == workload.injector_defaults:
            return None

        def update(target: Workload) -> None:
            target.injector_defaults = left  # type: ignore[assignment]

        return update

    def check_plan(self, plan: MigrationPlan, *, source: str) -> None:
        # the rule book: never point a tenant's pods at paths outside its scope
        check_isolation(plan, source=source)

    def wanted(self, workload: Workload) -> bool:
        status = workload.effective_status
        if self.named:
            return True
        if self.reroll:
            return status != WorkloadStatus.SKIPPED
        return status == WorkloadStatus.PENDING

    def _tell(self, engine: Engine, ref: WorkloadRef, outcome: Outcome, why: str) -> None:
        """Report a workload this step does not act on, without touching the plan."""
        engine.emit(ref, why, warning=outcome == Outcome.REFUSED)
        engine.result(WorkloadResult(ref, outcome, why))

    def _not_pending(self, engine: Engine, workload: Workload, ref: WorkloadRef) -> bool:
        """A named workload that is not protect's to do: say what comes first (``True``:
        it is done with)."""
        status = workload.effective_status
        if status == WorkloadStatus.SKIPPED:
            self._tell(
                engine,
                ref,
                Outcome.REFUSED,
                "skipped in the plan: `cloudtaser plan set-status PLAN --status pending "
                f"--workload {ref.namespace}/{ref.kind}/{ref.name}` first",
            )
            return True
        if status != WorkloadStatus.MIGRATED or self.reroll:
            return False
        obj = engine.cluster.get(ref)
        if obj is None:
            self._tell(engine, ref, Outcome.REFUSED, f"{ref} does not exist in the cluster")
            return True
        proof = live_proof(engine.cluster, ref, obj)
        if proof.ok:
            self._tell(
                engine, ref, Outcome.MIGRATED, f"already migrated and {proof.message}: "
                "nothing to do (next: `cloudtaser target finalize`)",
            )  # fmt: skip
        else:
            self._tell(
                engine, ref, Outcome.REFUSED, f"already migrated, but {proof.message}"
                + ("" if REROLL_HINT in proof.message else f"; {REROLL_HINT}"),
            )  # fmt: skip
        return True

    def inspect(
        self, engine: Engine, tenant: Tenant, workload: Workload, ref: WorkloadRef
    ) -> Inspected | None:
        if self._not_pending(engine, workload, ref):
            return None
        try:
            if self.defaults is None:
                self.defaults = injector_defaults(engine.cluster)
                if self.defaults is None:
                    engine.emit(
                        None,
                        "cannot read the injector's MutatingWebhookConfiguration (forbidden): "
                        "its cluster defaults are unknown, so every cluster-specific annotation "
                        "is written (grant get on it: docs/security.md, rbac-protect)",
                        warning=True,
                    )
                    self.defaults = InjectorDefaults()
            intended = ann.build_annotations(
                engine.plan,
                tenant,
                workload,
                self.vault_address,
                defaults=self.defaults,
                vault_namespace=self.vault_namespace,
            )
            self.left_to_injector = ann.cluster_annotations(
                engine.plan,
                self.vault_address,
                defaults=self.defaults,
                vault_namespace=self.vault_namespace,
            )[1]
        except ann.AnnotationError as exc:
            engine.refuse(self, ref, workload, str(exc), [])
            return None
        found = _inspect_for_protect(
            engine.cluster, ref, workload, intended, engine.plan.metadata.env_name_rule
        )
        if found.obj is not None and not found.refusals:
            found.warnings.extend(_kept_after_finalize(engine.cluster, ref, workload, found.obj))
        if workload.accepted_dangerous_env:
            found.warnings.append(
                "the reviewed plan accepts vault fields as loader / interpreter variable(s) "
                f"{', '.join(sorted(workload.accepted_dangerous_env))} (acceptedDangerousEnv): "
                "whoever can write these vault paths can run code in the pods"
            )
        for warning in found.warnings:
            engine.emit(ref, warning, warning=True)
        if found.refusals or found.obj is None:
            engine.refuse(self, ref, workload, " ".join(found.refusals), found.warnings)
            return None
        obj = found.obj
        already = _is_applied(ref.kind, obj, intended)
        if already and self.reroll:
            proof = live_proof(engine.cluster, ref, obj)
            if proof.ok and workload.effective_status == WorkloadStatus.MIGRATED:
                self._tell(engine, ref, Outcome.MIGRATED, f"not re-rolled: {proof.message}")
                return None
            if not proof.ok:
                engine.emit(ref, f"re-rolls: {proof.message}")
                already = False  # a new restart marker: one rollout, then proven again
        rv = dig(obj, "metadata", "resourceVersion")
        patch = build_patch(intended, ann.restart_marker(), rv, _template_meta(ref.kind, obj)[0])
        if self.pin is not None and not already:
            try:
                pinned = pin_commands(pod_template(ref.kind, obj).get("spec") or {}, self.pin)
            except (RegistryError, ConfigError) as exc:  # ConfigError: an unparsable image
                why = f"--pin-entrypoints: {exc}. Set the container's command, or fix the lookup"
                engine.refuse(self, ref, workload, why, found.warnings)
                return None
            if pinned:
                patch["spec"]["template"]["spec"] = {"containers": pinned}
        if not already and not self._admitted(
            engine, ref, workload, obj, patch=patch, warnings=found.warnings
        ):
            return None
        return Inspected(obj, None if already else patch, patch, found.warnings)

    def _admitted(
        self,
        engine: Engine,
        ref: WorkloadRef,
        workload: Workload,
        obj: Mapping[str, Any],
        *,
        patch: Mapping[str, Any],
        warnings: list[str],
    ) -> bool:
        """Before the patch: a dry-run pod of the patched template comes back injected
        (:mod:`cloudtaser.target.engine.admission`); else the workload is refused, untouched."""
        if not self.verify_injection:
            return True  # said once, loudly, by verify()
        written = dig(patch, "spec", "template") or {}
        answer = check_admission(
            engine.cluster,
            ref,
            pod_template(ref.kind, obj),
            labels=dig(written, "metadata", "labels"),
            annotations=dig(written, "metadata", "annotations"),
            containers=dig(written, "spec", "containers") or (),
        )
        if not answer.admitted:
            engine.refuse(self, ref, workload, answer.reason, warnings)
        return answer.admitted


class UnprotectStep(Step):
    """Undo protect for a ``migrated`` (or half-protected ``pending``) workload: remove
    exactly the annotations and label protect adds in one patch; already done when none is
    there; recorded ``pending`` again. Refusals change nothing, not even the plan."""

    action = "unprotect"
    summary = "{todo} of {selected} selected workload(s) may carry protection"
    done_status = WorkloadStatus.PENDING
    done_outcome = Outcome.UNPROTECTED
    patched_reason = "unprotected: cloudtaser annotations removed and rolled out"
    found_reason = "unprotected: cloudtaser annotations removed and rolled out"
    declined_message = "left as it is"
    already_dry_run = "annotations already removed"
    dry_run_result = "removal accepted (dry run)"
    patched_message = "annotations removed (one rollout)"
    patched_no_wait_message = "annotations removed (one rollout)"

    def __init__(self, *, named: bool = False) -> None:
        #: The run names its workloads (``--workload``): a skipped one is refused, and one
        #: with nothing to undo says so, never passed over in silence.
        self.named = named

    def wanted(self, workload: Workload) -> bool:
        return self.named or workload.effective_status != WorkloadStatus.SKIPPED

    def done_update(self, workload: Workload) -> Callable[[Workload], None] | None:
        finalized = bool(
            workload.finalized_refs or workload.finalized_volumes or workload.finalized_at
        )
        if not finalized and not workload.injector_defaults:
            return None

        def update(target: Workload) -> None:
            if finalized:
                clear_finalized(target)
            target.injector_defaults = []  # the templates carry nothing of ours any more

        return update

    def inspect(
        self, engine: Engine, tenant: Tenant, workload: Workload, ref: WorkloadRef
    ) -> Inspected | None:
        status = workload.effective_status
        if status == WorkloadStatus.SKIPPED:
            why = (
                "skipped in the plan: protect never touched it, so there is nothing to undo "
                "(`cloudtaser plan set-status PLAN --status pending` to protect it)"
            )
            engine.refuse(self, ref, workload, why, [])
            return None
        obj = engine.cluster.get(ref)
        if obj is None:
            if status == WorkloadStatus.MIGRATED or self.named:
                engine.refuse(self, ref, workload, f"{ref} does not exist in the cluster", [])
            return None
        restore, refused = restore_for_unprotect(engine.cluster, ref, workload, obj)
        if refused:
            engine.refuse(self, ref, workload, refused, [])
            return None
        removal = with_restore(build_removal_patch(obj, ref.kind), obj, restore)
        if removal is None and status != WorkloadStatus.MIGRATED:
            if self.named:  # asked by name: say it, it is already in the state asked for
                why = "pending and carries no cloudtaser annotation: nothing to undo"
                engine.emit(ref, why)
                engine.result(WorkloadResult(ref, Outcome.UNPROTECTED, why))
            return None  # pending and clean: nothing to undo
        found = blockers(ref.kind, obj)
        if removal is not None and found.refusals:
            engine.refuse(self, ref, workload, " ".join(found.refusals), found.warnings)
            return None
        return Inspected(obj, removal, removal or {}, list(found.warnings))


def protect(
    session: KubeSession,
    plan_path: str | os.PathLike[str],
    options: RunOptions,
    *,
    progress: ProgressFn | None = None,
    decide: DecideFn | None = None,
    cancel: threading.Event | None = None,
    pin: Lookup | None = None,
    reroll: bool = False,
    vault_namespace: str | None = None,
) -> RunReport:
    """Protect every selected ``pending`` workload of the plan at ``plan_path``.

    ``options.vault_address`` (the pods' vault) may be ``None`` when the installed injector
    has a default address; ``vault_namespace`` is the pods' vault namespace (``None``: the
    injector's default, or none). With cluster defaults installed, only what differs from
    them is written (:func:`cloudtaser.target.annotations.cluster_annotations`), and the
    names left to them are recorded per workload (``injectorDefaults``).

    ``pin`` (``--pin-entrypoints``): an image lookup (``RegistryClient.image_config``); every
    container without a ``command`` gets its image's ENTRYPOINT/CMD written explicitly in the
    same patch, so the injector needs no registry access.

    ``reroll`` (``--reroll``): also every selected ``migrated`` workload, and every
    ``pending`` one already annotated, whose live pods are not proven injected gets a new
    restart marker (one rollout), is proven on its new pods and recorded (``migrated``, or
    ``pending`` with the reason when still not injected); proven ones are left alone.
    A workload named with ``--workload`` that protect cannot act on (skipped; migrated
    without ``reroll``) is reported with the step that comes first, never passed over.

    Takes the plan lock (not with ``dry_run``), loads the plan, and for each workload in plan
    order checks, asks ``decide`` (when given), patches once, waits (in up to
    ``options.parallel`` workers) and saves the plan after each status change.
    """
    check_options(options)
    vault_address = (
        validate_vault_address(options.vault_address, what="--vault-address")
        if options.vault_address
        else None  # the installed injector's default address (refused when it has none)
    )
    if vault_namespace and not valid_vault_namespace(vault_namespace.strip("/")):
        raise ConfigError(
            f"--vault-namespace {vault_namespace!r} is not a vault namespace path such as "
            "team-a or eu/prod"
        )
    step = ProtectStep(
        vault_address,
        pin,
        verify_injection=options.verify_injection,
        reroll=reroll,
        named=bool(options.selection.workloads),
        vault_namespace=vault_namespace,
    )
    return run(session, plan_path, step, options, progress=progress, decide=decide, cancel=cancel)


def unprotect(
    session: KubeSession,
    plan_path: str | os.PathLike[str],
    options: RunOptions,
    *,
    progress: ProgressFn | None = None,
    decide: DecideFn | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Undo protect for the selected ``migrated`` (or half-protected ``pending``) workloads:
    remove exactly the annotations and label protect adds (one patch, one rollout), wait,
    and record the workload as ``pending`` again."""
    return run(
        session,
        plan_path,
        UnprotectStep(named=bool(options.selection.workloads)),
        options,
        progress=progress,
        decide=decide,
        cancel=cancel,
    )
