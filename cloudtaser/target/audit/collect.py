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

The report is a typed value (:class:`AuditReport`); :func:`to_json` is its stable JSON form
(``formatVersion`` 1, JSON Schema in ``schema/audit.schema.json`` generated from these
Structs), :func:`to_html` one self-contained HTML file (inline CSS, no script, no external
asset) and :func:`to_text` the table. Secrets are listed as metadata only (names, types,
labels, annotations, owners); their values are never read, and their key names only with
``--plan``, for the Secrets nobody uses (the key-level verdict of ``finalize
--delete-secrets``, :mod:`cloudtaser.target.references.safety`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from cloudtaser.contract import INJECT_LABEL, MANAGED_KEYS
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.plan.attest import VerificationReport
    from cloudtaser.plan.model import MigrationPlan
    from cloudtaser.target.kube.session import KubeSession
    from cloudtaser.target.kube.workloads import WorkloadAPI
    from cloudtaser.target.references.scan import Scan

__all__ = [
    "FORMAT_VERSION",
    "AuditNamespace",
    "AuditReport",
    "KeyVerdict",
    "audit",
    "json_schema",
    "namespace_report",
    "to_html",
    "to_json",
    "to_text",
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


# --- building ---------------------------------------------------------------------------------


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
    from cloudtaser.target.engine.injection import pod_problems  # noqa: PLC0415

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
    from lightkube.resources.core_v1 import Namespace  # noqa: PLC0415

    from cloudtaser.target.kube.workloads import WorkloadAPI  # noqa: PLC0415
    from cloudtaser.target.references.cluster import ScanCache  # noqa: PLC0415
    from cloudtaser.target.references.scan import scan  # noqa: PLC0415

    cache = ScanCache()
    with WorkloadAPI(session) as cluster:
        names = list(namespaces) or sorted(
            str(dig(n, "metadata", "name"))
            for n in cluster.list_objects(Namespace, None, action="list namespaces")
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
    from cloudtaser.target.references.safety import key_safety, proof  # noqa: PLC0415

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


# --- rendering --------------------------------------------------------------------------------


def to_json(report: AuditReport) -> str:
    """The stable JSON form (keys in schema order; ``schema/audit.schema.json``)."""
    import json  # noqa: PLC0415

    return json.dumps(msgspec.to_builtins(report), indent=2) + "\n"


def json_schema() -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(AuditReport)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtaser target audit report (formatVersion 1)"
    return schema


def _reads_text(reads: Sequence[SecretRead]) -> str:
    return "; ".join(f"{r.secret} ({r.via}{': ' + r.detail if r.detail else ''})" for r in reads)


#: Reasons to keep a Secret whose detail says what to do: the text report shows it.
_ADVISED: Final = frozenset({"managedBy", "ownedBy", "apiReader", "customResource"})


def _secret_text(secret: SecretEntry) -> str:
    if secret.users:
        return "; ".join(_use_text(u) for u in secret.users)
    if secret.keys is None:
        return "unused"
    if secret.keys.safe:
        return (
            "unused; every key is in the vault or released: finalize --delete-secrets can delete it"
        )
    return f"unused, but kept: {secret.keys.reason}"


def _use_text(use: SecretUseEntry) -> str:
    detail = f": {use.detail}" if use.via in _ADVISED and use.detail else ""
    return f"{use.kind} {use.name} ({use.via}{detail})"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()
        for row in [headers, *rows]
    )


def to_text(report: AuditReport) -> str:
    """The human table: one summary row per namespace, then what still needs attention."""
    rows = [
        [
            ns.name,
            str(ns.summary.workloads),
            str(ns.summary.reading_secrets_as_env),
            str(ns.summary.protected),
            str(ns.summary.finalized),
            str(ns.summary.secrets),
            str(ns.summary.secrets_unused),
            str(ns.summary.pods_not_injected),
        ]
        for ns in report.namespaces
    ]
    t = report.totals
    rows.append(
        [
            "TOTAL",
            str(t.workloads),
            str(t.reading_secrets_as_env),
            str(t.protected),
            str(t.finalized),
            str(t.secrets),
            str(t.secrets_unused),
            str(t.pods_not_injected),
        ]
    )
    out = [
        _table(
            rows,
            [
                "NAMESPACE",
                "WORKLOADS",
                "READ SECRETS AS ENV",
                "PROTECTED",
                "FINALIZED",
                "SECRETS",
                "UNUSED",
                "PODS NOT INJECTED",
            ],
        )
    ]
    for ns in report.namespaces:
        lines = [
            f"  {w.kind} {w.name}: {_reads_text(w.secret_reads)}"
            for w in ns.workloads
            if w.secret_reads
        ]
        lines += [f"  Secret {s.name}: {_secret_text(s)}" for s in ns.secrets]
        lines += [
            f"  pod {p.name} not injected: {'; '.join(p.problems)}" for p in ns.pods_not_injected
        ]
        lines += [f"  incomplete: could not list {u}" for u in ns.unreadable]
        if lines:
            out.append(f"\n{ns.name}:")
            out.extend(lines)
    return "\n".join(out) + "\n"


_CSS: Final = """
body{font-family:system-ui,"DejaVu Sans",sans-serif;margin:24px;color:#1a1a1a;
background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;font-size:13px;vertical-align:top}
th{background:#eee}
table.summary td.fig{font-size:28px;font-weight:700;text-align:center;min-width:90px;color:#fff}
td.fig.bad{background:#b71c1c}td.fig.good{background:#1b5e20}td.fig.info{background:#0d47a1}
.legend{font-size:12px;color:#555}.none{color:#777;font-style:italic}
"""

_FIGURES: Final = (
    ("readingSecretsAsEnv", "reading_secrets_as_env", "still read Secrets as env", "bad"),
    ("podsNotInjected", "pods_not_injected", "pods opted in but not injected", "bad"),
    ("protected", "protected", "protected", "info"),
    ("finalized", "finalized", "finalized", "info"),
    ("secrets", "secrets", "Secrets left", "info"),
    ("secretsUnused", "secrets_unused", "Secrets nobody uses", "info"),
    ("workloads", "workloads", "workloads", "info"),
)


def _fig_cells(namespace: str, summary: Summary) -> str:
    cells = []
    for key, attr, _label, kind in _FIGURES:
        value = int(getattr(summary, attr))
        css = kind if kind != "bad" else ("bad" if value else "good")
        cells.append(
            f'<td class="fig {css}" data-namespace="{html.escape(namespace)}" '
            f'data-figure="{key}">{value}</td>'
        )
    return "".join(cells)


def to_html(report: AuditReport) -> str:
    """One self-contained HTML page (inline CSS, no script, no external asset): the summary
    per namespace first — red tiles where Secrets are still read or pods not injected — then
    the details. Every name is HTML-escaped."""
    e = html.escape
    head = "".join(f"<th>{e(label)}</th>" for _k, _a, label, _c in _FIGURES)
    rows = [
        f'<tr><th scope="row">{e(ns.name)}</th>{_fig_cells(ns.name, ns.summary)}</tr>'
        for ns in report.namespaces
    ]
    rows.append(f'<tr><th scope="row">TOTAL</th>{_fig_cells("*", report.totals)}</tr>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>cloudtaser audit</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>cloudtaser audit: Kubernetes Secrets still in use</h1>",
        f'<div class="meta">cluster <b>{e(report.cluster)}</b> &middot; generated '
        f'<time datetime="{e(report.generated_at)}">{e(report.generated_at)}</time> &middot; '
        f"formatVersion {report.format_version}</div>",
        f'<table class="summary" id="summary"><tr><th>namespace</th>{head}</tr>',
        *rows,
        "</table>",
        '<p class="legend">Red: still reads Kubernetes Secrets as environment variables, or '
        "pods that opt in to injection but were not injected. Green: none.</p>",
    ]
    for ns in report.namespaces:
        parts.append(f'<section data-namespace="{e(ns.name)}"><h2>{e(ns.name)}</h2>')
        if ns.unreadable:
            parts.append(
                "<p><b>Incomplete:</b> could not list "
                + "; ".join(e(u) for u in ns.unreadable)
                + "</p>"
            )
        parts.append(
            "<table><tr><th>workload</th><th>protected</th><th>finalized</th>"
            "<th>Secrets still read (how)</th></tr>"
        )
        for w in ns.workloads:
            reads = (
                "<br>".join(
                    f"{e(r.secret)} ({e(r.via)}{': ' + e(r.detail) if r.detail else ''})"
                    for r in w.secret_reads
                )
                or '<span class="none">none</span>'
            )
            parts.append(
                f'<tr data-workload="{e(w.kind)}/{e(w.name)}"><td>{e(w.kind)} {e(w.name)}</td>'
                f"<td>{'yes' if w.protected else 'no'}</td>"
                f"<td>{'yes' if w.finalized else 'no'}</td><td>{reads}</td></tr>"
            )
        parts.append("</table>")
        parts.append("<table><tr><th>Secret</th><th>type</th><th>used by</th></tr>")
        for s in ns.secrets:
            users = (
                "<br>".join(
                    f"{e(u.kind)} {e(u.name)} ({e(u.via)}{': ' + e(u.detail) if u.detail else ''})"
                    for u in s.users
                )
                or '<span class="none">nobody</span>'
            )
            parts.append(
                f'<tr data-secret="{e(s.name)}"><td>{e(s.name)}</td><td>{e(s.type)}</td>'
                f"<td>{users}</td></tr>"
            )
        parts.append("</table>")
        if ns.pods_not_injected:
            parts.append("<table><tr><th>pod not injected</th><th>why</th></tr>")
            parts.extend(
                f'<tr data-pod="{e(p.name)}"><td>{e(p.name)}</td>'
                f"<td>{'<br>'.join(e(x) for x in p.problems)}</td></tr>"
                for p in ns.pods_not_injected
            )
            parts.append("</table>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
