"""``target audit``: what still depends on Kubernetes Secrets, per namespace (cluster only).

Whole cluster by default: every namespace the credentials may list (a namespace named with
``-n`` that does not exist is a :class:`~cloudtaser.errors.ConfigError`; one whose objects
cannot be listed is reported ``unreadable``, never clean). For each namespace it reports (names,
never values):

- the workloads that still read Secrets, and how (env, envFrom, secret / projected volume,
  volume plugin, image pull): Deployments, StatefulSets, DaemonSets, CronJobs (their job
  template), Jobs no CronJob owns and Pods no controller owns;
- those opted in (the ``cloudtaser.io/inject`` label on the pod template), those protected
  (opted in and every running pod proven injected, :func:`cloudtaser.target.engine.injection.
  pod_problems`, which also checks the files report of ``cloudtaser-files``) and those
  finalized (protected and no env / envFrom / secret or projected volume reference left);
- every Secret left and who uses it, or why it must stay (the reference scan of
  :mod:`cloudtaser.target.references.scan`, shared with ``finalize --delete-secrets``, one
  :class:`~cloudtaser.target.references.cluster.ScanCache` for the whole run: owners and
  managers, cluster-wide users, custom resources and ServiceAccounts that may read it
  through the API count as users, so audit never calls a used Secret unused);
- the pods that carry the cloudtaser label or annotations but are not proven injected;
- its status and next actions.

Then the verdict, the score and, with ``--plan``, the provenance (plan name, reviewed-content
digest, approvals, verification report). The report is a typed value
(:class:`~cloudtaser.target.audit.result.AuditReport`, the common envelope, schema
``schema/output-audit.schema.json``); its text and HTML forms are
:mod:`cloudtaser.target.audit.render`. Secrets are listed as metadata only; their key names
are read only with ``--plan``, for the Secrets nobody uses (the key-level verdict of
``finalize --delete-secrets``, :mod:`cloudtaser.target.references.safety`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.contract import INJECT_LABEL, MANAGED_KEYS
from cloudtaser.errors import ClusterError, ConfigError
from cloudtaser.plan.canonical import plan_digest
from cloudtaser.target.audit.figures import score, timestamp, totals, verdict
from cloudtaser.target.audit.result import (
    ApprovalEntry,
    AuditNamespace,
    AuditReport,
    FailOn,
    KeyVerdict,
    NamespaceStatus,
    PodEntry,
    Provenance,
    SecretEntry,
    SecretRead,
    SecretUseEntry,
    Summary,
    VerificationEntry,
    WorkloadEntry,
    WorkloadKind,
)
from cloudtaser.target.engine.injection import REROLL_HINT, pod_problems
from cloudtaser.target.kube import api
from cloudtaser.target.kube.identity import cluster_identity
from cloudtaser.target.kube.kinds import pod_template
from cloudtaser.target.kube.workloads import WorkloadAPI
from cloudtaser.target.references.cluster import ScanCache
from cloudtaser.target.references.safety import key_safety, proof
from cloudtaser.target.references.scan import job_finished, pod_gone, scan
from cloudtaser.target.references.uses import listing_failure
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.plan.attest import VerificationReport
    from cloudtaser.plan.model import MigrationPlan
    from cloudtaser.target.kube.session import KubeSession
    from cloudtaser.target.references.scan import Scan

__all__ = [
    "audit",
    "build_report",
    "failures",
    "namespace_report",
    "provenance",
]

_CONTROLLERS: Final[tuple[WorkloadKind, ...]] = ("Deployment", "StatefulSet", "DaemonSet")
#: Ways of reading a Secret as environment variables (the wrapper's env injection replaces them).
_ENV_VIAS: Final = frozenset({"env", "envFrom"})
#: Ways of reading a Secret as files (the runtime's memory volumes replace them).
_FILE_VIAS: Final = frozenset({"volume", "projected"})
#: Every way of reading a Secret that cloudtaser replaces.
_REPLACED_VIAS: Final = _ENV_VIAS | _FILE_VIAS
#: How many names a next action lists before "and N more".
_NAMES_SHOWN: Final = 5


def _opts_in(pod: Mapping[str, Any]) -> bool:
    labels = dig(pod, "metadata", "labels") or {}
    annotations = dig(pod, "metadata", "annotations") or {}
    return labels.get(INJECT_LABEL) == "true" or any(k in annotations for k in MANAGED_KEYS)


def _live(obj: Mapping[str, Any]) -> bool:
    return not pod_gone(obj)


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in dig(obj, "metadata", "ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return None


def _workload_objects(found: Scan) -> Iterable[tuple[WorkloadKind, Mapping[str, Any]]]:
    """Every workload of the scan: the controllers, CronJobs, running Jobs no CronJob owns and
    running Pods no controller owns (a Pod of a Job or ReplicaSet counts through its owner; a
    finished Job or Pod reads nothing any more)."""
    for kind in (*_CONTROLLERS, "CronJob"):
        for obj in found.objects.get(kind, []):
            yield kind, obj
    for obj in found.objects.get("Job", []):
        owner = _controller(obj)
        if (owner is None or owner.get("kind") != "CronJob") and not job_finished(obj):
            yield "Job", obj
    for obj in found.objects.get("Pod", []):
        if _controller(obj) is None and _live(obj):
            yield "Pod", obj


def _template_labels(kind: WorkloadKind, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    if kind == "Pod":
        return dig(obj, "metadata", "labels") or {}
    return dig(pod_template(kind, obj), "metadata", "labels") or {}


def _protected(kind: WorkloadKind, obj: Mapping[str, Any], proofs: Sequence[bool]) -> bool:
    """Opted in and every running pod proven injected; a CronJob between runs (no pod of
    its Jobs running) counts as protected from its job template alone (its next run is
    proven when it runs: its pods are then counted here)."""
    if _template_labels(kind, obj).get(INJECT_LABEL) != "true":
        return False
    if proofs:
        return all(proofs)
    return kind == "CronJob"


def _owners(found: Scan) -> dict[str, tuple[str, str, Mapping[str, Any] | None]]:
    """uid -> (kind, name, controller reference) of every object that can own a pod."""
    out: dict[str, tuple[str, str, Mapping[str, Any] | None]] = {}
    for kind in (*_CONTROLLERS, "CronJob", "Job", "ReplicaSet"):
        for obj in found.objects.get(kind, []):
            uid = dig(obj, "metadata", "uid")
            if uid:
                out[str(uid)] = (kind, str(dig(obj, "metadata", "name")), _controller(obj))
    return out


def _workload_of(
    pod: Mapping[str, Any], owners: Mapping[str, tuple[str, str, Mapping[str, Any] | None]]
) -> tuple[str, str]:
    """(kind, name) of the workload that runs ``pod``: its controller chain's top, or itself."""
    ref = _controller(pod)
    if ref is None:
        return "Pod", str(dig(pod, "metadata", "name"))
    kind, name = str(ref.get("kind")), str(ref.get("name"))
    seen: set[str] = set()
    while (uid := str(ref.get("uid") or "")) in owners and uid not in seen:
        seen.add(uid)
        kind, name, parent = owners[uid]
        if parent is None:
            break
        ref = parent
        kind, name = str(ref.get("kind")), str(ref.get("name"))
    return kind, name


def _summary(
    workloads: Sequence[WorkloadEntry],
    secrets: Sequence[SecretEntry],
    not_injected: Sequence[PodEntry],
    pods: tuple[int, int],
    *,
    unreadable: bool,
) -> Summary:
    return Summary(
        workloads=len(workloads),
        reading_secrets=sum(1 for w in workloads if w.secret_reads),
        reading_secrets_as_env=sum(
            1 for w in workloads if any(r.via in _ENV_VIAS for r in w.secret_reads)
        ),
        reading_secrets_only_as_files=sum(
            1
            for w in workloads
            if any(r.via in _FILE_VIAS for r in w.secret_reads)
            and not any(r.via in _ENV_VIAS for r in w.secret_reads)
        ),
        opted_in=sum(1 for w in workloads if w.opted_in),
        protected=sum(1 for w in workloads if w.protected),
        finalized=sum(1 for w in workloads if w.finalized),
        secrets=len(secrets),
        secrets_in_use=sum(1 for s in secrets if s.users),
        secrets_unused=sum(1 for s in secrets if not s.users),
        pods=pods[0],
        pods_injected=pods[1],
        pods_not_injected=len(not_injected),
        unreadable_namespaces=int(unreadable),
    )


def namespace_report(
    namespace: str, found: Scan, secrets: Sequence[Mapping[str, Any]], unreadable: Sequence[str]
) -> AuditNamespace:
    """One namespace's part of the report, from a reference scan made with ``keep=True`` and
    the namespace's Secret list (only ``metadata.name`` and ``type`` are read). Its next
    actions are set by :func:`next_actions` (``--plan`` adds key verdicts first)."""
    owners = _owners(found)
    env_pods: set[str] = {u.name for u in found.uses if u.kind == "Pod" and u.via in _REPLACED_VIAS}
    live = [p for p in found.objects.get("Pod", []) if _live(p)]
    problems = {str(dig(p, "metadata", "name")): pod_problems(p) for p in live if _opts_in(p)}
    pods_by_workload: dict[tuple[str, str], list[bool]] = {}
    needing = injected = 0
    for pod in live:
        name = str(dig(pod, "metadata", "name"))
        proven = name in problems and not problems[name]
        pods_by_workload.setdefault(_workload_of(pod, owners), []).append(proven)
        if name in problems or name in env_pods:
            needing += 1
            injected += proven
    workloads: list[WorkloadEntry] = []
    for kind, obj in _workload_objects(found):
        name = str(dig(obj, "metadata", "name") or "?")
        reads = [
            SecretRead(secret=u.secret, via=u.via, detail=u.detail)
            for u in found.uses
            if u.kind == kind and u.name == name
        ]
        opted_in = _template_labels(kind, obj).get(INJECT_LABEL) == "true"
        proofs = pods_by_workload.get((kind, name), [])
        protected = _protected(kind, obj, proofs)
        workloads.append(
            WorkloadEntry(
                kind=kind,
                name=name,
                opted_in=opted_in,
                pods=len(proofs),
                pods_injected=sum(proofs),
                protected=protected,
                finalized=protected and not any(r.via in _REPLACED_VIAS for r in reads),
                secret_reads=reads,
            )
        )
    workloads.sort(key=lambda w: (w.kind, w.name))
    by_secret = found.by_secret()
    secret_entries = sorted(
        (
            SecretEntry(
                name=str(dig(s, "metadata", "name")),
                type=str(s.get("type") or "Opaque"),
                users=[
                    SecretUseEntry(kind=u.kind, name=u.name, via=u.via, detail=u.detail)
                    for u in by_secret.get(str(dig(s, "metadata", "name")), [])
                ],
            )
            for s in secrets
        ),
        key=lambda e: e.name,
    )
    not_injected = sorted(
        (PodEntry(name=name, problems=why) for name, why in problems.items() if why),
        key=lambda e: e.name,
    )
    missing = [*found.unreadable, *unreadable]
    part = AuditNamespace(
        name=namespace,
        status=NamespaceStatus.CLEAN,
        next_actions=[],
        summary=_summary(
            workloads, secret_entries, not_injected, (needing, injected), unreadable=bool(missing)
        ),
        workloads=workloads,
        secrets=secret_entries,
        pods_not_injected=not_injected,
        unreadable=missing,
    )
    next_actions(part)
    return part


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_NAMES_SHOWN])
    more = len(items) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def next_actions(part: AuditNamespace) -> None:
    """Set ``part.status`` and ``part.next_actions`` from its figures, in the order a team
    works: read everything, protect, fix injection, finalize, delete what nobody uses."""
    ns = part.name
    actions: list[str] = []
    if part.unreadable:
        kinds = sorted({u.split(":", 1)[0] for u in part.unreadable})
        actions.append(
            f"could not list {_names(kinds)}: audit again with credentials that may list them "
            "(until then these figures are a lower bound)"
        )
    env = [w for w in part.workloads if any(r.via in _REPLACED_VIAS for r in w.secret_reads)]
    unprotected = [f"{w.kind} {w.name}" for w in env if not w.opted_in]
    if unprotected:
        actions.append(
            f"protect {_names(unprotected)} (still read Secrets as env or files): cloudtaser "
            f"target discover -n {ns} -o plan.yaml, approve the plan, source apply-plan, "
            "target protect"
        )
    if part.pods_not_injected:
        pods = [p.name for p in part.pods_not_injected]
        actions.append(
            f"pods {_names(pods)} opt in but are not proven injected: check the injector "
            f"(cloudtaser target install --check), then {REROLL_HINT}"
        )
    unproven = [f"{w.kind} {w.name}" for w in env if w.opted_in and not w.pods and not w.protected]
    if unproven:
        actions.append(
            f"{_names(unproven)} opt in but run no pod to prove injection yet: finalize "
            "after their next run (or rollout) is proven injected"
        )
    unfinished = [f"{w.kind} {w.name}" for w in env if w.protected]
    if unfinished:
        actions.append(
            f"finalize {_names(unfinished)} (injected, Secret references left): cloudtaser "
            "target finalize --plan PLAN"
        )
    unused = [s for s in part.secrets if not s.users]
    deletable = [s.name for s in unused if s.keys is not None and s.keys.safe]
    review = [s.name for s in unused if s.keys is None or not s.keys.safe]
    if deletable:
        actions.append(
            f"delete unused Secrets {_names(deletable)} (every key in the vault or released): "
            "cloudtaser target finalize --plan PLAN --delete-secrets --require-verified REPORT"
        )
    if review:
        actions.append(f"review the Secrets nothing references: {_names(review)}")
    part.next_actions = actions
    if part.unreadable:
        part.status = NamespaceStatus.UNREADABLE
    elif actions:
        part.status = NamespaceStatus.ACTION
    elif not part.workloads and not part.secrets:
        part.status = NamespaceStatus.EMPTY
    else:
        part.status = NamespaceStatus.CLEAN


def _namespaces(session: KubeSession, cluster: WorkloadAPI, asked: Sequence[str]) -> list[str]:
    """``asked`` (each must exist), or every namespace the credentials may list."""
    if not asked:
        try:
            listed = cluster.list_objects(api.resource("Namespace"), None, action="list namespaces")
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            raise ConfigError(
                f"cannot list the cluster's namespaces ({exc}): name the namespaces to audit "
                "with -n NS (repeatable)"
            ) from exc
        return sorted(str(dig(n, "metadata", "name")) for n in listed)
    for name in asked:
        try:
            found = api.get_object(session, "Namespace", name, None)
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            continue  # may not read Namespaces: the scan reports what it cannot list
        if found is None:
            raise ConfigError(
                f"namespace {name} does not exist in cluster {session.server}: check -n "
                "(kubectl get namespaces)"
            )
    return list(dict.fromkeys(asked))


def _identity(session: KubeSession) -> str | None:
    try:
        return cluster_identity(session)
    except ClusterError as exc:
        if not listing_failure(exc):
            raise
        return None


def audit(
    session: KubeSession,
    *,
    namespaces: Sequence[str] = (),
    plan: MigrationPlan | None = None,
    verified: VerificationReport | None = None,
) -> AuditReport:
    """Audit ``namespaces`` (default: every namespace the credentials can list; a named one
    that does not exist raises :class:`~cloudtaser.errors.ConfigError`). With ``plan`` (and
    the ``verified`` report of ``source verify-plan --attest``), every Secret nobody uses also
    gets the key-level verdict ``finalize --delete-secrets`` would reach (its key names are
    read then; never a value), and the report carries the plan's provenance."""
    cache = ScanCache()
    with WorkloadAPI(session) as cluster:
        names = _namespaces(session, cluster, namespaces)
        parts = []
        for namespace in names:
            found = scan(cluster, namespace, keep=True, cache=cache)
            # names and types only: the scan never reads a Secret's keys or values
            secrets = [
                {"metadata": {"name": m.name}, "type": m.type} for m in found.secrets.values()
            ]
            part = namespace_report(namespace, found, secrets, [])
            if plan is not None:
                _judge_keys(cluster, part, plan, verified)
                next_actions(part)
            parts.append(part)
    return build_report(
        parts,
        cluster=session.server,
        cluster_id=_identity(session),
        provenance=provenance(plan, verified) if plan is not None else None,
    )


def _judge_keys(
    cluster: WorkloadAPI,
    part: AuditNamespace,
    plan: MigrationPlan,
    verified: VerificationReport | None,
) -> None:
    """Set :attr:`SecretEntry.keys` on the unused Secrets of ``part`` (as finalize decides)."""
    tenant = next((t for t in plan.tenants if t.namespace == part.name), None)
    proven, no_proof = proof(plan, verified)
    for entry in part.secrets:
        if entry.users:
            continue
        if tenant is None:
            entry.keys = KeyVerdict(
                safe=False,
                keeping=[],
                reason=f"namespace {part.name} is not in plan {plan.metadata.name}: "
                "finalize --delete-secrets never deletes it",
            )
            continue
        keys = cluster.secret_keys(part.name, entry.name)
        if keys is None:  # deleted since the scan
            continue
        safety = key_safety(tenant, entry.name, keys, proven, no_proof=no_proof)
        entry.keys = KeyVerdict(
            safe=safety.safe, keeping=list(safety.keeping), reason=safety.problem()
        )


def provenance(plan: MigrationPlan, verified: VerificationReport | None) -> Provenance:
    """The plan the report was judged against: name, digest, approvals, verification."""
    digest = plan_digest(plan)
    verification = None
    if verified is not None:
        verification = VerificationEntry(
            plan=verified.plan,
            digest=verified.digest,
            verified_at=timestamp(verified.verified_at),
            vault=verified.vault.address,
            signed_by=[s.identity for s in verified.signatures],
            matches_plan=verified.digest == digest and verified.plan == plan.metadata.name,
        )
    return Provenance(
        plan=plan.metadata.name,
        digest=digest,
        approvals=[
            ApprovalEntry(identity=a.identity, at=timestamp(a.at), current=a.digest == digest)
            for a in plan.approvals
        ],
        verification=verification,
    )


def build_report(
    parts: Sequence[AuditNamespace],
    *,
    cluster: str,
    cluster_id: str | None = None,
    provenance: Provenance | None = None,
) -> AuditReport:
    """The report of ``parts``: totals, verdict and score."""
    figures = totals(p.summary for p in parts)
    judged, reason = verdict(figures)
    return AuditReport(
        generated_at=timestamp(datetime.now(UTC)),
        cluster=cluster,
        cluster_id=cluster_id,
        verdict=judged,
        verdict_reason=reason,
        score=score(figures),
        provenance=provenance,
        namespaces=list(parts),
        summary=figures,
    )


def failures(report: AuditReport, fail_on: Iterable[FailOn]) -> list[str]:
    """The ``--fail-on`` conditions that hold, each said in one line (empty: exit 0)."""
    t = report.summary
    holds = {
        FailOn.SECRETS_READ: (
            t.reading_secrets_as_env + t.reading_secrets_only_as_files,
            "workload(s) still read Kubernetes Secrets as env or files",
        ),
        FailOn.UNPROTECTED: (t.pods_not_injected, "opted-in pod(s) not proven injected"),
        FailOn.UNUSED_SECRETS: (t.secrets_unused, "Secret(s) nothing references"),
        FailOn.INCOMPLETE: (t.unreadable_namespaces, "namespace(s) not read completely"),
    }
    wanted = set(fail_on)
    if FailOn.ANY in wanted:
        wanted = set(holds)
    return [
        f"--fail-on {condition.value}: {count} {what}"
        for condition, (count, what) in holds.items()
        if condition in wanted and count
    ]
