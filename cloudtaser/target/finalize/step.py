"""``target finalize``: remove the Secret references the vault now serves, and (only when
asked) the Secrets nobody uses any more.

Per ``migrated`` workload not yet finalized, in plan order (``docs/lifecycle.md``):

1. The workload must be protected (the inject label on its template) and its **live pods
   proven injected** (:mod:`cloudtaser.target.engine.injection`): whatever the plan says, nothing is
   removed from a workload whose pods do not run through the wrapper.
2. Drift check: the template must consume exactly the (Secret, key, env) triples the plan
   maps. Then exactly those ``env[].valueFrom.secretKeyRef`` entries, and the
   ``envFrom[].secretRef`` entries whose every key the plan maps, are removed; anything else
   stays. An ``envFrom`` whose Secret has a key the plan does not map is refused (removing it
   would take that variable away). A mapped reference the runtime does not serve is kept and
   reported (:class:`KeptRef`): init containers', and a variable read by ``$(VAR)``, an exec
   probe or a lifecycle hook (:mod:`cloudtaser.target.consumers`); when nothing is left to
   remove, the workload is refused and left alone.
3. What will be removed is written into the plan (``finalizedRefs``) just before the one
   strategic-merge patch (``resourceVersion`` precondition, field manager ``cloudtaser``), so a
   run killed at any moment can still be undone by ``target unprotect``.
4. Wait for the one rollout, prove injection again on the new pods, record ``finalizedAt``
   and a history entry. The status stays ``migrated``. A re-run after a kill finds the
   references gone: no patch, only wait and record (no second rollout).

``--delete-secrets`` (:func:`delete_unused_secrets`, never implied) then deletes a Secret of a
finalized workload only when (1) every key it holds is mapped by the plan and proven in the
vault by the verification report, or released by a reviewer (:mod:`cloudtaser.target.
secret_safety`), and (2) the reference scan (:mod:`cloudtaser.target.references.scan`) finds no user
left in its namespace — both checked again just before the delete, which carries the
Secret's uid and resourceVersion as preconditions. Otherwise it keeps it and names the keys
or users. Names of deleted Secrets go into the plan history of the workloads that used them.
Deletion is irreversible.
"""

from __future__ import annotations

import copy
import enum
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import cloudtaser.target.annotations as ann
from cloudtaser.plan.model import FinalizedRef, Tenant, Workload, WorkloadStatus
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
    WorkloadRef,
    run,
    workload_ref,
)
from cloudtaser.target.references.safety import (
    ATTEST_HINT,
    KeySafety,
    key_safety,
    proof,
)
from cloudtaser.target.rollout import blockers, dig

if TYPE_CHECKING:
    from cloudtaser.plan.attest import VerificationReport
    from cloudtaser.target.kube.session import KubeSession
    from cloudtaser.target.kube.workloads import SecretHead, WorkloadAPI
    from cloudtaser.target.podspec import SecretKeys
    from cloudtaser.target.references.scan import Scan

__all__ = [
    "FinalizeEdit",
    "FinalizeStep",
    "KeptRef",
    "SecretAction",
    "SecretDecision",
    "SecretsReport",
    "clear_finalized",
    "delete_unused_secrets",
    "finalize",
    "finalize_edit",
    "missing_refs",
    "restore_for_unprotect",
    "restore_fragment",
    "verification_warning",
    "with_restore",
]

_CONTAINER_KEYS = (("initContainers", True), ("containers", False))


# --- pure helpers ---------------------------------------------------------------------------


@dataclass
class FinalizeEdit:
    """What finalize removes from one pod template, and what it keeps."""

    refs: list[FinalizedRef] = field(default_factory=list)
    #: ``spec.template.spec`` fragment of the strategic-merge patch.
    spec_patch: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Plan-mapped references left in place because something the runtime does not serve
    #: reads them (:mod:`cloudtaser.target.consumers`).
    kept: list[KeptRef] = field(default_factory=list)


@dataclass(frozen=True)
class KeptRef:
    """A plan-mapped reference finalize leaves in the template, and why (names only)."""

    ref: FinalizedRef
    why: str

    def __str__(self) -> str:
        return f"kept {_named(self.ref)}: {self.why}"


def _planned(workload: Workload) -> set[tuple[str, str, str]]:
    from cloudtaser.target.protect import plan_triples  # noqa: PLC0415

    return plan_triples(workload)


def _named(ref: FinalizedRef) -> str:
    where = f"{'init container' if ref.init else 'container'} {ref.container}"
    if ref.via == "env":
        return f"env {ref.env} (Secret {ref.secret} key {ref.key}, {where})"
    prefix = f" prefix {ref.prefix}" if ref.prefix else ""
    return f"envFrom Secret {ref.secret}{prefix} ({where})"


def _kept_reasons(
    template: Mapping[str, Any],
    workload: Workload,
    planned: set[tuple[str, str, str]],
    secret_keys: SecretKeys,
) -> dict[tuple[str, bool, str], list[str]]:
    """Why a planned variable must keep its reference, by (container, init, env)."""
    from cloudtaser.target.consumers import keep_reasons  # noqa: PLC0415
    from cloudtaser.target.podspec import env_consumptions  # noqa: PLC0415

    mapped = [
        c for c in env_consumptions(template, secret_keys) if (c.secret, c.key, c.env) in planned
    ]
    return keep_reasons(template, mapped, workload.env_uses)


def _env_edit(
    container: Mapping[str, Any],
    init: bool,
    planned: set[tuple[str, str, str]],
    reasons: Mapping[tuple[str, bool, str], list[str]],
    edit: FinalizeEdit,
) -> list[dict[str, Any]]:
    """The ``env`` deletions of one container (``$patch: delete`` by name); what must stay
    goes into ``edit.kept``."""
    cname = str(container.get("name") or "")
    deletes: list[dict[str, Any]] = []
    for entry in container.get("env") or ():
        ref = dig(entry, "valueFrom", "secretKeyRef") if isinstance(entry, Mapping) else None
        if not isinstance(ref, Mapping):
            continue
        triple = (
            str(ref.get("name") or ""),
            str(ref.get("key") or ""),
            str(entry.get("name") or ""),
        )
        if triple not in planned:
            continue
        finalized = FinalizedRef(
            container=cname,
            init=init,
            via="env",
            secret=triple[0],
            key=triple[1],
            env=triple[2],
            optional=bool(ref.get("optional")),
        )
        why = reasons.get((cname, init, triple[2]))
        if why:
            edit.kept.append(KeptRef(finalized, "; ".join(why)))
            continue
        deletes.append({"name": triple[2], "$patch": "delete"})
        edit.refs.append(finalized)
    return deletes


def _env_from_edit(
    container: Mapping[str, Any],
    init: bool,
    planned: set[tuple[str, str, str]],
    reasons: Mapping[tuple[str, bool, str], list[str]],
    *,
    secret_keys: SecretKeys,
    edit: FinalizeEdit,
) -> tuple[bool, list[Any]]:
    """Whether an ``envFrom`` Secret entry of one container goes, and the entries that stay.
    An entry goes only when the plan maps every key it provides and no provided variable
    must stay; one with unmapped keys is a problem (the workload is refused)."""
    cname = str(container.get("name") or "")
    kept_from: list[Any] = []
    removed = False
    for source in container.get("envFrom") or ():
        ref = source.get("secretRef") if isinstance(source, Mapping) else None
        if not isinstance(ref, Mapping):
            kept_from.append(source)
            continue
        secret = str(ref.get("name") or "")
        prefix = str(source.get("prefix") or "")
        provided = {(secret, k, prefix + k) for k in secret_keys(secret) or []}
        if not provided & planned:
            kept_from.append(source)
            continue
        unmapped = sorted(k for s, k, e in provided if (s, k, e) not in planned)
        if unmapped:
            edit.problems.append(
                f"envFrom of Secret {secret} in container {cname} also provides key(s) "
                f"{', '.join(unmapped)} that the plan does not map; removing it would take "
                "those variables away (map them in the plan, or remove them yourself)"
            )
            kept_from.append(source)
            continue
        finalized = FinalizedRef(
            container=cname,
            init=init,
            via="envFrom",
            secret=secret,
            prefix=prefix or None,
            optional=bool(ref.get("optional")),
        )
        why = [
            reason if init else f"for {env}, {reason}"
            for env in sorted(e for _s, _k, e in provided)
            for reason in reasons.get((cname, init, env), ())
        ]
        if why:
            why = list(dict.fromkeys(why))
            edit.kept.append(KeptRef(finalized, "; ".join(why)))
            kept_from.append(source)
            continue
        removed = True
        edit.refs.append(finalized)
    return removed, kept_from


def finalize_edit(
    template: Mapping[str, Any], workload: Workload, secret_keys: SecretKeys
) -> FinalizeEdit:
    """The references of ``template`` (``spec.template``) that the plan maps and nothing but
    the wrapped process reads, as :class:`FinalizedRef` entries and the patch fragment
    removing exactly them. The others go into ``kept`` with the reason: every init container
    reference, and a variable used by ``$(VAR)``, an exec probe or hook, or an ``envFrom``
    providing one (:func:`cloudtaser.target.consumers.keep_reasons`)."""
    planned = _planned(workload)
    reasons = _kept_reasons(template, workload, planned, secret_keys)
    edit = FinalizeEdit()
    spec = template.get("spec") or {}
    for key, init in _CONTAINER_KEYS:
        fragments: list[dict[str, Any]] = []
        for container in spec.get(key) or ():
            if not isinstance(container, Mapping):
                continue
            fragment: dict[str, Any] = {}
            deletes = _env_edit(container, init, planned, reasons, edit)
            if deletes:
                fragment["env"] = deletes
            removed, env_from = _env_from_edit(
                container, init, planned, reasons, secret_keys=secret_keys, edit=edit
            )
            if removed:  # envFrom has no merge key: the list is sent whole
                fragment["envFrom"] = copy.deepcopy(env_from) or None
            if fragment:
                fragments.append({"name": str(container.get("name") or ""), **fragment})
        if fragments:
            edit.spec_patch[key] = fragments
    return edit


def _restored_env(ref: FinalizedRef) -> dict[str, Any]:
    key_ref: dict[str, Any] = {"name": ref.secret, "key": ref.key}
    if ref.optional:
        key_ref["optional"] = True
    return {"name": ref.env, "valueFrom": {"secretKeyRef": key_ref}}


def _restored_from(ref: FinalizedRef) -> dict[str, Any]:
    secret_ref: dict[str, Any] = {"name": ref.secret}
    if ref.optional:
        secret_ref["optional"] = True
    entry: dict[str, Any] = {"secretRef": secret_ref}
    if ref.prefix:
        entry["prefix"] = ref.prefix
    return entry


def _has(container: Mapping[str, Any], ref: FinalizedRef) -> bool:
    if ref.via == "env":
        return any(
            isinstance(e, Mapping)
            and e.get("name") == ref.env
            and dig(e, "valueFrom", "secretKeyRef", "name") == ref.secret
            and dig(e, "valueFrom", "secretKeyRef", "key") == ref.key
            for e in container.get("env") or ()
        )
    return any(
        isinstance(e, Mapping)
        and dig(e, "secretRef", "name") == ref.secret
        and (e.get("prefix") or None) == ref.prefix
        for e in container.get("envFrom") or ()
    )


def missing_refs(template: Mapping[str, Any], refs: Sequence[FinalizedRef]) -> list[FinalizedRef]:
    """The recorded references that ``template`` no longer carries (the ones to restore)."""
    spec = template.get("spec") or {}
    out: list[FinalizedRef] = []
    for ref in refs:
        key = "initContainers" if ref.init else "containers"
        container = next(
            (
                c
                for c in spec.get(key) or ()
                if isinstance(c, Mapping) and c.get("name") == ref.container
            ),
            None,
        )
        if container is not None and not _has(container, ref):
            out.append(ref)
    return out


def restore_fragment(template: Mapping[str, Any], refs: Sequence[FinalizedRef]) -> dict[str, Any]:
    """The ``spec.template.spec`` patch fragment putting back ``refs`` that are missing (an
    empty dict when none is): env entries are merged by name, ``envFrom`` (no merge key) is
    sent whole — the live entries plus the restored ones."""
    spec = template.get("spec") or {}
    missing = missing_refs(template, refs)
    out: dict[str, Any] = {}
    for key, init in _CONTAINER_KEYS:
        fragments: list[dict[str, Any]] = []
        for container in spec.get(key) or ():
            if not isinstance(container, Mapping):
                continue
            mine = [r for r in missing if r.init == init and r.container == container.get("name")]
            if not mine:
                continue
            fragment: dict[str, Any] = {"name": container.get("name")}
            env = [_restored_env(r) for r in mine if r.via == "env"]
            if env:
                fragment["env"] = env
            froms = [_restored_from(r) for r in mine if r.via == "envFrom"]
            if froms:
                fragment["envFrom"] = [*copy.deepcopy(list(container.get("envFrom") or ())), *froms]
            fragments.append(fragment)
        if fragments:
            out[key] = fragments
    return out


def _describe(refs: Sequence[FinalizedRef]) -> str:
    parts = [
        f"env {r.env} (Secret {r.secret} key {r.key}, container {r.container})"
        if r.via == "env"
        else f"envFrom Secret {r.secret} (container {r.container})"
        for r in refs
    ]
    return ", ".join(parts) if parts else "nothing"


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


# --- the step -------------------------------------------------------------------------------


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

    def __init__(self) -> None:
        self._removing: dict[int, list[FinalizedRef]] = {}
        #: One line per reference this run keeps (``str(KeptRef)``), for the history.
        self._keeping: dict[int, list[str]] = {}

    def wanted(self, workload: Workload) -> bool:
        return (
            workload.effective_status == WorkloadStatus.MIGRATED and workload.finalized_at is None
        )

    def inspect(
        self, engine: Engine, tenant: Tenant, workload: Workload, ref: WorkloadRef
    ) -> Inspected | None:
        from cloudtaser.target.engine.injection import prove  # noqa: PLC0415
        from cloudtaser.target.protect import drift  # noqa: PLC0415

        obj = engine.cluster.get(ref)
        if obj is None:
            engine.refuse(self, ref, workload, f"{ref} does not exist in the cluster", [])
            return None
        labels = dig(obj, "spec", "template", "metadata", "labels") or {}
        annotations = dig(obj, "spec", "template", "metadata", "annotations") or {}
        if labels.get(ann.INJECT_LABEL) != "true" or ann.SECRET_PATHS not in annotations:
            engine.refuse(
                self,
                ref,
                workload,
                "not protected (its pod template lacks the cloudtaser.io/inject label or "
                "annotations): run `cloudtaser target protect` first",
                [],
            )
            return None
        found = blockers(ref.kind, obj)
        if found.refusals:
            engine.refuse(self, ref, workload, " ".join(found.refusals), found.warnings)
            return None
        template = dig(obj, "spec", "template") or {}
        edit = finalize_edit(
            template, workload, lambda name: engine.cluster.secret_keys(ref.namespace, name)
        )
        if edit.problems:
            engine.refuse(self, ref, workload, "; ".join(edit.problems), found.warnings)
            return None
        from cloudtaser.target.podspec import consumed_env  # noqa: PLC0415

        live = set(consumed_env(template, lambda n: engine.cluster.secret_keys(ref.namespace, n)))
        planned = _planned(workload)
        kept = [str(k) for k in edit.kept]
        if not edit.refs:
            if workload.finalized_refs and live <= planned:
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
            elif live or planned:
                why = "drift since protect: " + "; ".join(drift(planned, live))
            else:
                why = "the plan maps no Kubernetes Secret reference of this workload"
            engine.refuse(self, ref, workload, f"{why}. Nothing was changed", found.warnings)
            return None
        if live != planned:
            engine.refuse(
                self,
                ref,
                workload,
                "drift since protect: "
                + "; ".join(drift(planned, live))
                + ". Nothing was changed; re-run discover (or fix the plan) and review again",
                found.warnings,
            )
            return None
        proof = prove(engine.cluster, ref, obj)
        if not proof.proven:
            engine.refuse(
                self,
                ref,
                workload,
                f"its live pods are not proven injected, so nothing is removed: {proof.message()}",
                found.warnings,
            )
            return None
        patch: dict[str, Any] = {"spec": {"template": {"spec": edit.spec_patch}}}
        rv = dig(obj, "metadata", "resourceVersion")
        if rv:
            patch["metadata"] = {"resourceVersion": rv}
        self._removing[id(workload)] = edit.refs
        self._keeping[id(workload)] = kept
        engine.emit(ref, f"removes {_describe(edit.refs)}")
        for line in kept:
            engine.emit(ref, line, warning=True)
        return Inspected(obj, patch, patch, [*found.warnings, *kept])

    def before_patch(self, engine: Engine, workload: Workload, step: Inspected) -> None:
        refs = self._removing.get(id(workload), [])

        def change(w: Workload) -> None:
            w.finalized_refs = list(refs)

        engine.store.update(workload, change)

    def verify(self, engine: Engine, ref: WorkloadRef, workload: Workload) -> Verified | None:
        from cloudtaser.target.engine.injection import verify_workload  # noqa: PLC0415

        return verify_workload(engine.cluster, ref)

    def explain(self, engine: Engine, ref: WorkloadRef) -> str | None:
        from cloudtaser.target.engine.injection import explain_workload  # noqa: PLC0415

        return explain_workload(engine.cluster, ref)

    def done_update(self, workload: Workload) -> Callable[[Workload], None] | None:
        kept = "".join(f"; {line}" for line in self._keeping.get(id(workload), []))

        def change(w: Workload) -> None:
            w.finalized_at = datetime.now(UTC).replace(microsecond=0)
            if w.history:
                last = w.history[-1]
                last.reason = f"{last.reason}; removed {_describe(w.finalized_refs)}{kept}"[:4000]

        return change


# --- deleting Secrets -----------------------------------------------------------------------


class SecretAction(enum.StrEnum):
    """What ``--delete-secrets`` did with one Secret (the JSON ``action``)."""

    DELETED = "deleted"
    WOULD_DELETE = "would-delete"
    KEPT = "kept"
    ABSENT = "absent"


@dataclass(frozen=True)
class SecretDecision:
    """What ``--delete-secrets`` did (or, with ``--dry-run``, would do) with one Secret."""

    namespace: str
    name: str
    action: SecretAction
    #: Who still uses it (``kept``).
    users: tuple[str, ...] = ()
    #: Why it was kept or skipped (names keys and what to do, never a value).
    reason: str = ""
    #: The keys that keep it: not mapped, or not proven in the vault (names only).
    keys: tuple[str, ...] = ()


@dataclass
class SecretsReport:
    decisions: list[SecretDecision] = field(default_factory=list)

    def named(self, action: str) -> list[SecretDecision]:
        return [d for d in self.decisions if d.action == action]


def _users(found: Scan, name: str, ignored: set[tuple[str, str, str]]) -> list[str]:
    return [
        str(u)
        for u in found.users(name)
        if not ((u.kind, u.name, name) in ignored and u.via in {"env", "envFrom"})
    ]


def _decide(
    head: SecretHead,
    safety: KeySafety,
    found: Scan,
    ignored: set[tuple[str, str, str]],
) -> SecretDecision | None:
    """``kept`` (with users, keys and why) or ``None`` when the Secret may go."""
    reasons = []
    if found.unreadable:
        reasons.append("cannot prove it unused: could not list " + "; ".join(found.unreadable))
    users = _users(found, head.name, ignored)
    problem = safety.problem()
    if problem is not None:
        reasons.append(problem)
    if not users and not reasons:
        return None
    return SecretDecision(
        head.namespace,
        head.name,
        SecretAction.KEPT,
        users=tuple(users),
        reason="; ".join(reasons),
        keys=safety.keeping,
    )


def _recheck(engine: Engine, head: SecretHead) -> SecretDecision | None:
    """Immediately before deleting: the Secret must be the one decided on, and a fresh scan
    of its namespace must find no user. A decision when it must stay, else ``None``."""
    from cloudtaser.target.references import scan as references  # noqa: PLC0415

    namespace, name = head.namespace, head.name
    now = engine.cluster.secret_head(namespace, name)
    if now is None:
        return SecretDecision(namespace, name, SecretAction.ABSENT, reason="already gone")
    if (now.uid, now.resource_version) != (head.uid, head.resource_version):
        return SecretDecision(
            namespace,
            name,
            SecretAction.KEPT,
            reason="it changed after the check (uid or resourceVersion differ): not deleted; "
            "re-run to decide on what it holds now",
        )
    found = references.scan(engine.cluster, namespace)
    users = [str(u) for u in found.users(name)]
    if users or found.unreadable:
        why = "a user appeared after the check" if users else "cannot prove it unused"
        return SecretDecision(
            namespace,
            name,
            SecretAction.KEPT,
            users=tuple(users),
            reason=f"{why} (checked again just before deleting)"
            + (": could not list " + "; ".join(found.unreadable) if found.unreadable else ""),
        )
    return None


def _delete(engine: Engine, head: SecretHead) -> SecretDecision:
    """Delete with the preconditions of the decision (uid, resourceVersion)."""
    from cloudtaser.errors import (  # noqa: PLC0415
        ClusterConflictError,
        ClusterForbiddenError,
        ClusterNotFoundError,
    )

    namespace, name = head.namespace, head.name
    try:
        engine.cluster.delete_secret(head)
    except ClusterConflictError:
        return SecretDecision(
            namespace,
            name,
            SecretAction.KEPT,
            reason="it changed between the check and the delete (409: the uid/resourceVersion "
            "preconditions failed): not deleted; re-run to decide on what it holds now",
        )
    except ClusterNotFoundError:
        return SecretDecision(namespace, name, SecretAction.ABSENT, reason="already gone")
    except ClusterForbiddenError as exc:
        return SecretDecision(namespace, name, SecretAction.KEPT, reason=str(exc))
    return SecretDecision(namespace, name, SecretAction.DELETED)


def delete_unused_secrets(
    engine: Engine,
    selected: Sequence[tuple[Tenant, Workload]],
    *,
    verified: VerificationReport | None = None,
    progress: ProgressFn | None = None,
) -> SecretsReport:
    """Delete the Secrets of finalized workloads that lose nothing and that nothing uses.

    Per Secret, in namespace and name order: read it (uid, resourceVersion, key names);
    keep it unless every key is proven in the vault by ``verified`` or released in the plan
    (:mod:`cloudtaser.target.references.safety`) and the reference scan of its namespace finds
    no user; then, immediately before deleting, read it again and scan again, and delete
    with the uid/resourceVersion of the decision as preconditions (a 409 keeps it).

    With ``dry_run`` nothing is deleted: a workload that the dry run would finalize counts as
    finalized, and its own plan-mapped env/envFrom references are not counted as uses."""
    from cloudtaser.target.references import scan as references  # noqa: PLC0415
    from cloudtaser.target.references.cluster import ScanCache  # noqa: PLC0415

    dry = engine.options.dry_run
    would = {r.ref for r in engine.report.results if r.outcome == Outcome.DRY_RUN}
    proven, no_proof = proof(engine.plan, verified)
    report = SecretsReport()
    by_ns: dict[str, dict[str, list[tuple[Tenant, Workload]]]] = {}
    tenants: dict[str, Tenant] = {}
    for tenant, workload in selected:
        finalized = workload.finalized_at is not None or workload_ref(tenant, workload) in would
        if not finalized:
            continue
        tenants[tenant.namespace] = tenant
        for secret in workload.secrets:
            if secret.via == "vaultAgent":
                continue
            by_ns.setdefault(tenant.namespace, {}).setdefault(secret.source, []).append(
                (tenant, workload)
            )
    # one cache per run: the cluster-wide kinds (PersistentVolumes, StorageClasses, custom
    # resources, ServiceAccount access) are listed once; the re-check before each delete
    # (_recheck) scans afresh, without it
    cache = ScanCache()
    for namespace, secrets in sorted(by_ns.items()):
        found = references.scan(engine.cluster, namespace, cache=cache)
        ignored = _dry_run_users(engine, selected, namespace, would) if dry else set()
        for name, owners in sorted(secrets.items()):
            head = engine.cluster.secret_head(namespace, name)
            if head is None:
                report.decisions.append(
                    SecretDecision(namespace, name, SecretAction.ABSENT, reason="already gone")
                )
                continue
            safety = key_safety(tenants[namespace], name, head.keys, proven, no_proof=no_proof)
            kept = _decide(head, safety, found, ignored)
            if kept is not None:
                report.decisions.append(kept)
                continue
            if dry:
                report.decisions.append(SecretDecision(namespace, name, SecretAction.WOULD_DELETE))
                continue
            decision = _recheck(engine, head) or _delete(engine, head)
            report.decisions.append(decision)
            if decision.action is not SecretAction.DELETED:
                continue
            if progress is not None:
                progress(Event(None, f"deleted Secret {namespace}/{name} (no reference left)"))
            why = _deleted_because(safety)
            for _tenant, workload in owners:
                engine.record(
                    workload,
                    WorkloadStatus.MIGRATED,
                    reason=f"finalize --delete-secrets: deleted Secret {name} "
                    f"(no reference left in namespace {namespace}; {why})",
                )
    return report


def _deleted_because(safety: KeySafety) -> str:
    parts = []
    if safety.proven:
        parts.append(f"key(s) {', '.join(safety.proven)} proven in the vault")
    if safety.released:
        parts.append(f"key(s) {', '.join(safety.released)} released in the plan")
    return "; ".join(parts) or "it held no key"


def _dry_run_users(
    engine: Engine,
    selected: Sequence[tuple[Tenant, Workload]],
    namespace: str,
    would: set[WorkloadRef],
) -> set[tuple[str, str, str]]:
    """The (kind, name, Secret) env/envFrom uses a dry run discounts: those of each workload
    the real run would finalize, and of the pods of its current revision (the rollout replaces
    them) — only for the Secrets whose references the real run removes, so a Secret that keeps
    a reference (init container, ``$(VAR)``, probe, hook) stays used, as in the real run."""
    from cloudtaser.target.engine.injection import revision_pods  # noqa: PLC0415

    out: set[tuple[str, str, str]] = set()
    for tenant, workload in selected:
        ref = workload_ref(tenant, workload)
        if tenant.namespace != namespace or ref not in would:
            continue
        obj = engine.cluster.get(ref)
        if obj is None:
            continue
        edit = finalize_edit(
            dig(obj, "spec", "template") or {},
            workload,
            lambda name: engine.cluster.secret_keys(namespace, name),
        )
        gone = {r.secret for r in edit.refs} - {k.ref.secret for k in edit.kept}
        objects = [(ref.kind, ref.name)] + [
            ("Pod", str(dig(p, "metadata", "name")))
            for p in revision_pods(engine.cluster, ref, obj)
        ]
        out.update((kind, name, secret) for kind, name in objects for secret in gone)
    return out


# --- entry point ----------------------------------------------------------------------------


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
) -> tuple[RunReport, SecretsReport | None]:
    """Finalize the selected ``migrated`` workloads of the plan at ``plan_path`` (one patch
    and one rollout each), then, with ``delete_secrets``, delete their Secrets that lose
    nothing (every key proven in the vault by ``verified``, the report of ``verify-plan
    --attest``, or released in the plan) and that nothing references any more. Same lock,
    selection, dialogue, dry run and resume as protect."""
    step = FinalizeStep()
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
            delete_unused_secrets(engine, selected, verified=verified, progress=progress)
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


# --- the way back (used by unprotect) ----------------------------------------------------------


def restore_for_unprotect(
    cluster: WorkloadAPI, ref: WorkloadRef, workload: Workload, obj: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The ``spec.template.spec`` fragment that puts back what finalize removed (empty when
    nothing is missing), or a refusal when a Secret it needs was deleted."""
    template = dig(obj, "spec", "template") or {}
    missing = missing_refs(template, workload.finalized_refs)
    gone = sorted(
        {
            r.secret
            for r in missing
            if not r.optional and cluster.secret_keys(ref.namespace, r.secret) is None
        }
    )
    if gone:
        return {}, (
            f"finalize removed its references to Secret(s) {', '.join(gone)}, which no longer "
            "exist (finalize --delete-secrets?): putting the references back would stop the pods. "
            "Recreate the Secret(s) from the vault first, then re-run unprotect"
        )
    return restore_fragment(template, workload.finalized_refs), None


def with_restore(
    patch: dict[str, Any] | None, obj: Mapping[str, Any], fragment: Mapping[str, Any]
) -> dict[str, Any] | None:
    """``patch`` (unprotect's annotation removal, or ``None``) plus the restore ``fragment``,
    in one strategic-merge patch (one rollout)."""
    if not fragment:
        return patch
    out = copy.deepcopy(patch) if patch is not None else {}
    out.setdefault("spec", {}).setdefault("template", {})["spec"] = dict(fragment)
    rv = dig(obj, "metadata", "resourceVersion")
    if rv:
        out["metadata"] = {"resourceVersion": rv}
    return out


def clear_finalized(workload: Workload) -> None:
    """Forget finalize (unprotect has put the references back)."""
    workload.finalized_at = None
    workload.finalized_refs = []
