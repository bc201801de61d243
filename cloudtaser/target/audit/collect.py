"""``target audit``: what still depends on Kubernetes Secrets, per namespace (cluster only).

For each namespace it reports (names, never values):

- the workloads (Deployments, StatefulSets, DaemonSets) that still read Secrets, and how
  (env, envFrom, secret / projected volume, volume plugin, image pull);
- those protected (the ``cloudtaser.io/inject`` label on the pod template) and those
  finalized (protected and no env / envFrom Secret reference left);
- every Secret left and who uses it, or why it must stay (the reference scan of
  :mod:`cloudtaser.target.references.scan`, shared with ``finalize --delete-secrets``, one
  :class:`~cloudtaser.target.references.cluster.ScanCache` for the whole run: owners and
  managers, cluster-wide users, custom resources and ServiceAccounts that may read it
  through the API count as users, so audit never calls a used Secret unused);
- the pods that carry the cloudtaser label or annotations but are not proven injected
  (:func:`cloudtaser.target.engine.injection.pod_problems`).

The report is a typed value (:class:`AuditReport`, ``formatVersion`` 1, JSON Schema in
``schema/audit.schema.json`` generated from these Structs by :func:`json_schema`); its JSON,
text and HTML forms are :mod:`cloudtaser.target.audit.render`. Secrets are listed as
metadata only (names, types, labels, annotations, owners); their values are never read, and
their key names only with ``--plan``, for the Secrets nobody uses (the key-level verdict of
``finalize --delete-secrets``, :mod:`cloudtaser.target.references.safety`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from cloudtaser.contract import INJECT_LABEL, MANAGED_KEYS
from cloudtaser.target.engine.injection import pod_problems
from cloudtaser.target.kube import api
from cloudtaser.target.kube.workloads import WorkloadAPI
from cloudtaser.target.references.cluster import ScanCache
from cloudtaser.target.references.safety import key_safety, proof
from cloudtaser.target.references.scan import scan
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.plan.attest import VerificationReport
    from cloudtaser.plan.model import MigrationPlan
    from cloudtaser.target.kube.session import KubeSession
    from cloudtaser.target.references.scan import Scan

__all__ = [
    "FORMAT_VERSION",
    "AuditNamespace",
    "AuditReport",
    "KeyVerdict",
    "SecretEntry",
    "SecretRead",
    "SecretUseEntry",
    "Summary",
    "audit",
    "build_report",
    "json_schema",
    "namespace_report",
]

FORMAT_VERSION: Final = 1
_WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet")
#: Ways of reading a Secret that cloudtaser's env injection replaces.
_ENV_VIAS: Final = frozenset({"env", "envFrom"})


class _Base(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class SecretUseEntry(_Base):
    """One use of a Secret: which object and how."""

    kind: str
    name: str
    #: env, envFrom, volume, projected, plugin, imagePullSecret, serviceAccount, ingressTLS,
    #: ingressAnnotation, podTemplate, persistentVolume, storageClass, gatewayRef,
    #: customResource, apiReader, managedBy, ownedBy (see cloudtaser.target.references.scan).
    via: str
    detail: str = ""


class SecretRead(_Base):
    """One Secret a workload reads, and how."""

    secret: str
    via: str
    detail: str = ""


class WorkloadEntry(_Base):
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"]
    name: str
    #: The pod template carries the ``cloudtaser.io/inject`` label.
    protected: bool
    #: Protected, and no env / envFrom Secret reference is left.
    finalized: bool
    #: The Secrets it still reads (empty: none).
    secret_reads: list[SecretRead]


class KeyVerdict(_Base):
    """With ``--plan``: would ``finalize --delete-secrets`` lose a key of this unused Secret?
    The same rule (:func:`cloudtaser.target.references.safety.key_safety`), key names only."""

    #: Every key is proven in the vault by the report, or released by a reviewer.
    safe: bool
    #: The keys that keep it (not mapped and not released, or not proven).
    keeping: list[str]
    #: Why it is kept and what to do (``None`` when safe).
    reason: str | None


class SecretEntry(_Base):
    name: str
    type: str
    #: Who references it (empty: nobody; it could go).
    users: list[SecretUseEntry]
    #: Only for an unused Secret, and only with ``--plan``: the key-level verdict.
    keys: KeyVerdict | None = None


class PodEntry(_Base):
    """A pod that opts in to injection but is not proven injected."""

    name: str
    problems: list[str]


class Summary(_Base):
    """The figures a reviewer takes in at a glance."""

    workloads: int
    reading_secrets: int
    reading_secrets_as_env: int
    protected: int
    finalized: int
    secrets: int
    secrets_in_use: int
    secrets_unused: int
    pods_not_injected: int


class AuditNamespace(_Base):
    name: str
    summary: Summary
    workloads: list[WorkloadEntry]
    secrets: list[SecretEntry]
    pods_not_injected: list[PodEntry]
    #: What could not be listed (figures of this namespace are then incomplete).
    unreadable: list[str]


class AuditReport(_Base):
    """``cloudtaser target audit`` output (``formatVersion`` 1)."""

    format_version: Literal[1]
    generated_at: str
    #: The API server audited.
    cluster: str
    totals: Summary
    namespaces: list[AuditNamespace]


def _opts_in(pod: Mapping[str, Any]) -> bool:
    labels = dig(pod, "metadata", "labels") or {}
    annotations = dig(pod, "metadata", "annotations") or {}
    return labels.get(INJECT_LABEL) == "true" or any(k in annotations for k in MANAGED_KEYS)


def _summary(
    workloads: Sequence[WorkloadEntry], secrets: Sequence[SecretEntry], pods: Sequence[PodEntry]
) -> Summary:
    return Summary(
        workloads=len(workloads),
        reading_secrets=sum(1 for w in workloads if w.secret_reads),
        reading_secrets_as_env=sum(
            1 for w in workloads if any(r.via in _ENV_VIAS for r in w.secret_reads)
        ),
        protected=sum(1 for w in workloads if w.protected),
        finalized=sum(1 for w in workloads if w.finalized),
        secrets=len(secrets),
        secrets_in_use=sum(1 for s in secrets if s.users),
        secrets_unused=sum(1 for s in secrets if not s.users),
        pods_not_injected=len(pods),
    )


def namespace_report(
    namespace: str, found: Scan, secrets: Sequence[Mapping[str, Any]], unreadable: Sequence[str]
) -> AuditNamespace:
    """One namespace's part of the report, from a reference scan made with ``keep=True`` and
    the namespace's Secret list (only ``metadata.name`` and ``type`` are read)."""
    workloads: list[WorkloadEntry] = []
    for kind in _WORKLOAD_KINDS:
        for obj in found.objects.get(kind, []):
            name = str(dig(obj, "metadata", "name") or "?")
            reads = [
                SecretRead(secret=u.secret, via=u.via, detail=u.detail)
                for u in found.uses
                if u.kind == kind and u.name == name
            ]
            labels = dig(obj, "spec", "template", "metadata", "labels") or {}
            protected = labels.get(INJECT_LABEL) == "true"
            finalized = protected and not any(r.via in _ENV_VIAS for r in reads)
            workloads.append(
                WorkloadEntry(
                    kind=kind,
                    name=name,
                    protected=protected,
                    finalized=finalized,
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
    pods = sorted(
        (
            PodEntry(name=str(dig(p, "metadata", "name")), problems=problems)
            for p in found.objects.get("Pod", [])
            if _opts_in(p)
            and dig(p, "status", "phase") not in {"Succeeded", "Failed"}
            and not dig(p, "metadata", "deletionTimestamp")
            and (problems := pod_problems(p))
        ),
        key=lambda e: e.name,
    )
    return AuditNamespace(
        name=namespace,
        summary=_summary(workloads, secret_entries, pods),
        workloads=workloads,
        secrets=secret_entries,
        pods_not_injected=pods,
        unreadable=[*found.unreadable, *unreadable],
    )


def audit(
    session: KubeSession,
    *,
    namespaces: Sequence[str] = (),
    plan: MigrationPlan | None = None,
    verified: VerificationReport | None = None,
) -> AuditReport:
    """Audit ``namespaces`` (default: every namespace the credentials can list). With
    ``plan`` (and the ``verified`` report of ``source verify-plan --attest``), every Secret
    nobody uses also gets the key-level verdict ``finalize --delete-secrets`` would reach
    (its key names are read then; never a value)."""
    cache = ScanCache()
    with WorkloadAPI(session) as cluster:
        names = list(namespaces) or sorted(
            str(dig(n, "metadata", "name"))
            for n in cluster.list_objects(api.resource("Namespace"), None, action="list namespaces")
        )
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
            parts.append(part)
    return build_report(parts, cluster=session.server)


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


def build_report(parts: Sequence[AuditNamespace], *, cluster: str) -> AuditReport:
    totals = Summary(
        **{f: sum(getattr(p.summary, f) for p in parts) for f in Summary.__struct_fields__}
    )
    return AuditReport(
        format_version=FORMAT_VERSION,
        generated_at=datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        cluster=cluster,
        totals=totals,
        namespaces=list(parts),
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`AuditReport` (committed as ``schema/audit.schema.json``)."""
    schema: dict[str, Any] = msgspec.json.schema(AuditReport)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtaser target audit report (formatVersion 1)"
    return schema
