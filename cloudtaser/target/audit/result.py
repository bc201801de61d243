"""``target audit -o json``: the audit report as a :class:`~cloudtaser.results.Result` (the
envelope of every command: ``formatVersion`` ``"1"``, ``kind: "audit"``, ``summary`` last).

What a reviewer signs off reads top down: the :class:`Verdict`, the :class:`Score`, the
provenance (which plan, its digest, who approved it, which verification report) and the
cluster identity, then per namespace its status, next actions and details. Names only, never a
Secret value.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from msgspec import Meta

from cloudtaser.results import Count, Part, Result

__all__ = [
    "ApprovalEntry",
    "AuditNamespace",
    "AuditReport",
    "FailOn",
    "KeyVerdict",
    "NamespaceStatus",
    "PodEntry",
    "Provenance",
    "Score",
    "SecretEntry",
    "SecretRead",
    "SecretUseEntry",
    "Summary",
    "Verdict",
    "VerificationEntry",
    "WorkloadEntry",
    "WorkloadKind",
]

#: Every kind of workload audit counts: the controllers and what runs pods without one.
WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job", "Pod"]

#: A share in percent; ``null`` when there is nothing to share (no consumer, no pod).
Percent = Annotated[int, Meta(ge=0, le=100)] | None


class Verdict(enum.StrEnum):
    """The report's verdict (wire values)."""

    #: Nothing reads a Secret as env or files, every opted-in pod is proven injected, all was read.
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    #: A workload still reads Secrets as env or files, or an opted-in pod is not injected.
    FAIL = "fail"
    #: Nothing failed in what was read, but something could not be read.
    INCOMPLETE = "incomplete"


class NamespaceStatus(enum.StrEnum):
    """One namespace at a glance (wire values)."""

    CLEAN = "clean"
    #: Something to do: see ``nextActions``.
    ACTION = "action"
    #: Something could not be listed: its figures are a lower bound, not a clean bill.
    UNREADABLE = "unreadable"
    #: No workload and no Secret (collapsed in the HTML report).
    EMPTY = "empty"


class FailOn(enum.StrEnum):
    """``--fail-on`` conditions: the audit exits 1 when one of them holds."""

    #: A workload still reads a Secret as env / envFrom or as files (secret / projected volume).
    SECRETS_READ = "secrets-read"
    #: A pod opts in to injection but is not proven injected.
    UNPROTECTED = "unprotected"
    #: A Secret nothing references is left.
    UNUSED_SECRETS = "unused-secrets"
    #: Something could not be read (a namespace, a kind).
    INCOMPLETE = "incomplete"
    #: Any of the above.
    ANY = "any"


class SecretUseEntry(Part, kw_only=True):
    """One use of a Secret: which object and how."""

    kind: str
    name: str
    #: env, envFrom, volume, projected, plugin, imagePullSecret, serviceAccount, ingressTLS,
    #: ingressAnnotation, podTemplate, persistentVolume, storageClass, gatewayRef,
    #: customResource, apiReader, managedBy, ownedBy (see cloudtaser.target.references.scan).
    via: str
    detail: str = ""


class SecretRead(Part, kw_only=True):
    """One Secret a workload reads, and how."""

    secret: str
    via: str
    detail: str = ""


class WorkloadEntry(Part, kw_only=True):
    """A workload: a Deployment, StatefulSet, DaemonSet, CronJob, a Job no CronJob owns, or a
    Pod no controller owns."""

    kind: WorkloadKind
    name: str
    #: The pod template (a bare Pod: the pod) carries the ``cloudtaser.io/inject`` label.
    opted_in: bool
    #: Its running pods.
    pods: Count
    #: Of those, the pods proven injected (init container done, wrapper, Ready).
    pods_injected: Count
    #: Opted in, and every one of its running pods (at least one) is proven injected.
    protected: bool
    #: Protected, and no env / envFrom / secret or projected volume reference is left.
    finalized: bool
    #: The Secrets it still reads (empty: none).
    secret_reads: list[SecretRead]


class KeyVerdict(Part, kw_only=True):
    """With ``--plan``: would ``finalize --delete-secrets`` lose a key of this unused Secret?
    The same rule (:func:`cloudtaser.target.references.safety.key_safety`), key names only."""

    #: Every key is proven in the vault by the report, or released by a reviewer.
    safe: bool
    #: The keys that keep it (not mapped and not released, or not proven).
    keeping: list[str]
    #: Why it is kept and what to do (``None`` when safe).
    reason: str | None


class SecretEntry(Part, kw_only=True):
    """A Secret left in the namespace (metadata only)."""

    name: str
    type: str
    #: Who references it (empty: nobody; it could go).
    users: list[SecretUseEntry]
    #: Only for an unused Secret, and only with ``--plan``: the key-level verdict.
    keys: KeyVerdict | None = None


class PodEntry(Part, kw_only=True):
    """A pod that opts in to injection but is not proven injected."""

    name: str
    problems: list[str]


class Summary(Part, kw_only=True):
    """The figures a reviewer takes in at a glance."""

    workloads: Count
    reading_secrets: Count
    reading_secrets_as_env: Count
    #: Workloads that read Secrets through secret / projected volumes and not as env (the
    #: runtime serves such files from the vault too: docs/secret-files.md).
    reading_secrets_only_as_files: Count
    #: Workloads whose pod template carries the inject label.
    opted_in: Count
    #: Opted in and every running pod proven injected.
    protected: Count
    finalized: Count
    secrets: Count
    secrets_in_use: Count
    secrets_unused: Count
    #: Running pods that need the vault: they opt in, or read a Secret as env / envFrom.
    pods: Count
    #: Of those, the pods proven injected.
    pods_injected: Count
    #: Pods that opt in but are not proven injected.
    pods_not_injected: Count
    #: Namespaces where something could not be listed.
    unreadable_namespaces: Count


class Score(Part, kw_only=True):
    """The two shares the verdict rests on."""

    #: Finalized workloads among those that consume Secrets as env or files (finalized + still
    #: reading).
    secret_consumption_moved: Percent
    #: ``summary.podsInjected`` of ``summary.pods``.
    pods_injected: Percent


class ApprovalEntry(Part, kw_only=True):
    """One approval recorded in the plan (its signature is checked by ``plan verify-approvals``
    with the allowed-signers file; audit shows who signed what)."""

    identity: str
    at: str
    #: The approval signs the plan's current reviewed content (else it is stale).
    current: bool


class VerificationEntry(Part, kw_only=True):
    """The ``--require-verified`` report: what ``source verify-plan --attest`` proved."""

    plan: str
    digest: str
    verified_at: str
    vault: str
    #: The identities that signed the report.
    signed_by: list[str]
    #: The report was made for this plan's digest.
    matches_plan: bool


class Provenance(Part, kw_only=True):
    """With ``--plan``: which plan the report judges against."""

    plan: str
    #: The reviewed-content digest (``sha256:<hex>``), as approvals sign it.
    digest: str
    approvals: list[ApprovalEntry]
    verification: VerificationEntry | None = None


class AuditNamespace(Part, kw_only=True):
    """One namespace's part of the report."""

    name: str
    status: NamespaceStatus
    #: What to do next, in order (empty: nothing).
    next_actions: list[str]
    summary: Summary
    workloads: list[WorkloadEntry]
    secrets: list[SecretEntry]
    pods_not_injected: list[PodEntry]
    #: What could not be listed (figures of this namespace are then incomplete).
    unreadable: list[str]


class AuditReport(Result, kw_only=True):
    """``cloudtaser target audit -o json``: what still depends on Kubernetes Secrets, per
    namespace, with a verdict and a score."""

    kind: Literal["audit"] = "audit"
    generated_at: str
    #: The API server audited.
    cluster: str
    #: The UID of the cluster's kube-system namespace (as ``target connect`` records it);
    #: ``null`` when it cannot be read.
    cluster_id: str | None
    verdict: Verdict
    #: Why, in one line.
    verdict_reason: str
    score: Score
    #: With ``--plan``.
    provenance: Provenance | None = None
    namespaces: list[AuditNamespace]
    #: The totals of every namespace.
    summary: Summary
