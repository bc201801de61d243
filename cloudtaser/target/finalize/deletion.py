"""``target finalize --delete-secrets`` (never implied): delete the Secrets of finalized
workloads that lose nothing and that nothing uses any more. Deletion is irreversible.

A Secret of a finalized workload is deleted only when (1) every key it holds is mapped by the
plan and proven in the vault by the verification report, or released by a reviewer
(:mod:`cloudtaser.target.references.safety`), and (2) the reference scan
(:mod:`cloudtaser.target.references.scan`) finds no user left in its namespace — both checked
again just before the delete, which carries the Secret's uid and resourceVersion as
preconditions. Otherwise it keeps it and names the keys or users. Names of deleted Secrets go
into the plan history of the workloads that used them.

A Secret with an owner is never deleted: Git, Helm or an operator would write it again at its
next sync (docs/gitops.md). The owner is decided from both the plan (``secrets[].owner`` and
``secretFiles[].owner``, written by discover) and the live Secret's metadata, read with the
decision (:func:`cloudtaser.target.owners.secret_owner`; the re-read just before the delete
refuses any change, an owner label included, by its resourceVersion). The live read is the
truth, so an owner label added after discover still stops it, and an owner the plan records
stops it even when the live labels no longer show it. An *ambiguous* owner
(``possibly …``) stops it too: a possible owner still probably recreates it. The refusal names
what to remove at the source (:mod:`cloudtaser.target.gitops.at_source`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloudtaser.errors import ClusterConflictError, ClusterForbiddenError, ClusterNotFoundError
from cloudtaser.plan.model import Owner, Tenant, Workload, WorkloadStatus
from cloudtaser.target.consumers import ProvenCoverage
from cloudtaser.target.engine.core import Engine, Event, Outcome, ProgressFn, workload_ref
from cloudtaser.target.engine.injection import revision_pods
from cloudtaser.target.engine.result import SecretEntry
from cloudtaser.target.engine.secret_refs import finalize_edit, volume_secrets
from cloudtaser.target.gitops.at_source import AtSource, at_source, refusal
from cloudtaser.target.kube.kinds import pod_template
from cloudtaser.target.owners import describe, secret_owner
from cloudtaser.target.references import scan as references
from cloudtaser.target.references.cluster import ScanCache
from cloudtaser.target.references.safety import KeySafety, key_safety, proof
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.plan.attest import VerificationReport
    from cloudtaser.target.kube.workloads import SecretHead, WorkloadRef
    from cloudtaser.target.references.scan import Scan

__all__ = [
    "ConfirmFn",
    "SecretAction",
    "SecretDecision",
    "SecretsReport",
    "delete_unused_secrets",
]


class SecretAction(enum.StrEnum):
    """What ``--delete-secrets`` did with one Secret (the JSON ``action``)."""

    DELETED = "deleted"
    WOULD_DELETE = "would-delete"
    KEPT = "kept"
    ABSENT = "absent"
    #: ``--interactive``: the operator answered no (or nothing) to the delete question.
    DECLINED = "declined"


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
    #: Who writes it from elsewhere (``kept``: an owned Secret is never deleted).
    owner: Owner | None = None
    #: What to remove or change at the owner's source instead.
    at_source: AtSource | None = None


#: ``--interactive``: asked once per Secret just before it is deleted, with its namespace,
#: name and key names (never a value); only ``True`` deletes it.
ConfirmFn = Callable[[str, str, Sequence[str]], bool]


@dataclass
class SecretsReport:
    decisions: list[SecretDecision] = field(default_factory=list)

    def named(self, action: str) -> list[SecretDecision]:
        return [d for d in self.decisions if d.action == action]

    def entries(self) -> list[SecretEntry]:
        """The decisions in the ``--output json`` form."""
        return [
            SecretEntry(
                namespace=d.namespace,
                name=d.name,
                action=str(d.action),
                users=list(d.users),
                reason=d.reason,
                keys=list(d.keys),
                owner=d.owner,
                remove_at_source=d.at_source.line if d.at_source else "",
                source_files=list(d.at_source.files) if d.at_source else [],
                owner_unread=list(d.at_source.unread) if d.at_source else [],
            )
            for d in self.decisions
        ]


def _users(found: Scan, name: str, ignored: set[tuple[str, str, str]]) -> list[str]:
    return [
        str(u)
        for u in found.users(name)
        if not (
            (u.kind, u.name, name) in ignored and u.via in {"env", "envFrom", "volume", "projected"}
        )
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


def _recorded_owners(
    selected: Sequence[tuple[Tenant, Workload]],
) -> dict[tuple[str, str], Owner]:
    """(namespace, Secret) -> the owner discover recorded on a ``secrets[]`` or
    ``secretFiles[]`` entry of a selected workload (the first one found)."""
    out: dict[tuple[str, str], Owner] = {}
    for tenant, workload in selected:
        entries = [(s.source, s.owner) for s in workload.secrets]
        entries += [(f.source, f.owner) for f in workload.secret_files]
        for source, owner in entries:
            if owner is not None:
                out.setdefault((tenant.namespace, source), owner)
    return out


def _owned(
    engine: Engine, head: SecretHead, recorded: Owner | None, checkout: Path | None
) -> SecretDecision | None:
    """``kept`` when the Secret has an owner, live or recorded in the plan (module doc)."""
    live = secret_owner(head.owner_metadata)
    owner = live or recorded
    if owner is None:
        return None
    if live is None:
        note = "; recorded in the plan by discover, no longer on the live Secret: discover again"
    elif recorded is not None and recorded != live:
        note = f"; the plan records {describe(recorded)}"
    else:
        note = ""
    found = at_source(engine.cluster, owner, head.namespace, head.name, checkout=checkout)
    return SecretDecision(
        head.namespace,
        head.name,
        SecretAction.KEPT,
        reason=refusal(owner, found, note=note),
        owner=owner,
        at_source=found,
    )


def _recheck(engine: Engine, head: SecretHead) -> SecretDecision | None:
    """Immediately before deleting: the Secret must be the one decided on, and a fresh scan
    of its namespace must find no user. A decision when it must stay, else ``None``."""
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
    confirm: ConfirmFn | None = None,
    checkout: Path | None = None,
) -> SecretsReport:
    """Delete the Secrets of finalized workloads that lose nothing and that nothing uses.

    ``confirm`` (``--interactive``): asked separately before each delete, with the Secret's
    key names; anything but ``True`` keeps it (``declined``).

    Per Secret, in namespace and name order: read it (uid, resourceVersion, key names);
    keep it unless every key is proven in the vault by ``verified`` or released in the plan
    (:mod:`cloudtaser.target.references.safety`) and the reference scan of its namespace finds
    no user; then, immediately before deleting, read it again and scan again, and delete
    with the uid/resourceVersion of the decision as preconditions (a 409 keeps it; an owner
    label added in between changes the resourceVersion too).

    A Secret with an owner (the live metadata, or the plan's ``owner``) is kept first, with
    what to remove at the source; ``checkout`` (``--gitops-source DIR``), a local checkout
    of the owner's Git source, lets it name the file(s).

    With ``dry_run`` nothing is deleted: a workload that the dry run would finalize counts as
    finalized, and its own plan-mapped env/envFrom references are not counted as uses."""
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
        sources = [s.source for s in workload.secrets if s.via != "vaultAgent"]
        sources += [f.source for f in workload.migrated_files]
        for source in dict.fromkeys(sources):
            by_ns.setdefault(tenant.namespace, {}).setdefault(source, []).append((tenant, workload))
    # one cache per run: the cluster-wide kinds (PersistentVolumes, StorageClasses, custom
    # resources, ServiceAccount access) are listed once; the re-check before each delete
    # (_recheck) scans afresh, without it
    cache = ScanCache()
    recorded = _recorded_owners(selected)
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
            owned = _owned(engine, head, recorded.get((namespace, name)), checkout)
            if owned is not None:
                report.decisions.append(owned)
                continue
            safety = key_safety(tenants[namespace], name, head.keys, proven, no_proof=no_proof)
            kept = _decide(head, safety, found, ignored)
            if kept is not None:
                report.decisions.append(kept)
                continue
            if dry:
                report.decisions.append(SecretDecision(namespace, name, SecretAction.WOULD_DELETE))
                continue
            if confirm is not None and not confirm(namespace, name, head.keys):
                report.decisions.append(
                    SecretDecision(
                        namespace, name, SecretAction.DECLINED, reason="kept: answered no"
                    )
                )
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
    """The (kind, name, Secret) env/envFrom/volume uses a dry run discounts: those of each workload
    the real run would finalize, and of the pods of its current revision (the rollout replaces
    them) — only for the Secrets whose references the real run removes (env, envFrom, and the
    sources of the Secret volumes it turns into memory volumes), so a Secret that keeps
    a reference (init container, ``$(VAR)``, probe, hook) stays used, as in the real run."""
    out: set[tuple[str, str, str]] = set()
    for tenant, workload in selected:
        ref = workload_ref(tenant, workload)
        if tenant.namespace != namespace or ref not in would:
            continue
        obj = engine.cluster.get(ref)
        if obj is None:
            continue
        pods = revision_pods(engine.cluster, ref, obj)
        edit = finalize_edit(
            pod_template(ref.kind, obj),
            workload,
            lambda name: engine.cluster.secret_keys(namespace, name),
            coverage=ProvenCoverage.of_pods(pods),
        )
        gone = {r.secret for r in edit.refs} - {k.ref.secret for k in edit.kept}
        gone |= {secret for v in edit.volumes for secret, _optional in volume_secrets(v)}
        objects = [(ref.kind, ref.name)] + [("Pod", str(dig(p, "metadata", "name"))) for p in pods]
        out.update((kind, name, secret) for kind, name in objects for secret in gone)
    return out
