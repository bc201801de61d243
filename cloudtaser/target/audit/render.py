"""The human forms of an :class:`~cloudtaser.target.audit.result.AuditReport` (its JSON is the
Struct itself, ``msgspec.to_builtins``): :func:`to_text`, the table, and :func:`to_html`, one
self-contained HTML page a reviewer signs off (inline CSS, no script, no external asset, every
name escaped). Names only, never a value.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

from cloudtaser.target.audit.result import (
    AuditNamespace,
    AuditReport,
    NamespaceStatus,
    Provenance,
    Score,
    SecretEntry,
    SecretRead,
    SecretUseEntry,
    Summary,
    Verdict,
)

__all__ = [
    "LEGEND",
    "SUMMARY_HEADERS",
    "figure_cells",
    "figure_headers",
    "group_reads",
    "group_users",
    "head_tiles",
    "page",
    "percent_text",
    "summary_columns",
    "table",
    "to_html",
    "to_text",
]


def percent_text(value: int | None) -> str:
    """``40%``, or ``n/a`` when there was nothing to count."""
    return "n/a" if value is None else f"{value}%"


def group_reads(reads: Sequence[SecretRead]) -> list[str]:
    """One entry per Secret: ``"db (env: DB_USER <- key u, DB_PASS <- key p; volume: certs)"``
    (env's detail without the container, as :func:`group_users` does)."""
    by_secret: dict[str, dict[str, list[str]]] = {}
    for read in reads:
        details = by_secret.setdefault(read.secret, {}).setdefault(read.via, [])
        detail = _detail(read.via, read.detail)
        if detail and detail not in details:
            details.append(detail)
    return [f"{secret} ({_ways(ways)})" for secret, ways in by_secret.items()]


def _detail(via: str, detail: str) -> str:
    # env's detail is "<container>, <VAR> <- key <key>": the variable says enough
    return detail.split(", ", 1)[-1] if via == "env" else detail


def _ways(ways: dict[str, list[str]]) -> str:
    return "; ".join(f"{via}: {', '.join(d)}" if d else via for via, d in ways.items())


def _reads_text(reads: Sequence[SecretRead]) -> str:
    return "; ".join(group_reads(reads))


#: Reasons to keep a Secret whose detail says what to do: the text report shows it.
_ADVISED: Final = frozenset({"managedBy", "ownedBy", "apiReader", "customResource"})


#: Ways whose details are listed per user (the others are named only).
_GROUPED: Final = _ADVISED | {"env", "envFrom", "volume"}


def group_users(users: Sequence[SecretUseEntry]) -> list[tuple[str, str]]:
    """One entry per user object: ``("Deployment web", "env: DB_USER, DB_PASS; volume")``.
    The details of ``env`` and ``envFrom`` uses (variable names, containers) are grouped under
    their way; the others keep their detail only when it says what to do."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for use in users:
        ways = grouped.setdefault(f"{use.kind} {use.name}", {})
        details = ways.setdefault(use.via, [])
        detail = _detail(use.via, use.detail)
        if detail and use.via in _GROUPED and detail not in details:
            details.append(detail)
    return [(user, _ways(ways)) for user, ways in grouped.items()]


def _secret_text(secret: SecretEntry) -> str:
    if secret.users:
        return "; ".join(f"{user} ({how})" for user, how in group_users(secret.users))
    if secret.keys is None:
        return "unused"
    if secret.keys.safe:
        return (
            "unused; every key is in the vault or released: finalize --delete-secrets can delete it"
        )
    return f"unused, but kept: {secret.keys.reason}"


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()
        for row in [headers, *rows]
    )


#: The column titles of :func:`summary_columns`.
SUMMARY_HEADERS: Final = (
    "WORKLOADS",
    "READ SECRETS AS ENV",
    "ONLY AS FILES",
    "PROTECTED",
    "FINALIZED",
    "SECRETS",
    "UNUSED",
    "PODS NOT INJECTED",
)


def summary_columns(s: Summary) -> list[str]:
    """The figures of a text table row (:data:`SUMMARY_HEADERS`)."""
    return [
        str(s.workloads),
        str(s.reading_secrets_as_env),
        str(s.reading_secrets_only_as_files),
        str(s.protected),
        str(s.finalized),
        str(s.secrets),
        str(s.secrets_unused),
        str(s.pods_not_injected),
    ]


def _row(name: str, s: Summary, status: str) -> list[str]:
    return [name, status, *summary_columns(s)]


def _status_text(ns: AuditNamespace) -> str:
    return "UNREADABLE" if ns.status is NamespaceStatus.UNREADABLE else ns.status.value


def to_text(report: AuditReport) -> str:
    """The verdict and score, one summary row per namespace (the empty ones on one line), then
    what needs attention."""
    rows = [
        _row(ns.name, ns.summary, _status_text(ns))
        for ns in report.namespaces
        if ns.status is not NamespaceStatus.EMPTY
    ]
    rows.append(_row("TOTAL", report.summary, ""))
    empty = [ns.name for ns in report.namespaces if ns.status is NamespaceStatus.EMPTY]
    out = [
        f"verdict: {report.verdict.value.upper()}: {report.verdict_reason}",
        f"score: Secret consumption moved to the vault "
        f"{percent_text(report.score.secret_consumption_moved)}; pods proven injected "
        f"{percent_text(report.score.pods_injected)}",
        f"cluster: {report.cluster} (kube-system UID {report.cluster_id or 'unknown'})",
    ]
    if report.provenance is not None:
        out.append(f"plan: {report.provenance.plan} {report.provenance.digest}")
    out.append("")
    out.append(
        table(
            rows,
            ["NAMESPACE", "STATUS", *SUMMARY_HEADERS],
        )
    )
    if empty:
        out.append(f"empty (no workload, no Secret): {', '.join(empty)}")
    for ns in report.namespaces:
        lines = [f"  next: {a}" for a in ns.next_actions]
        lines += [
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
h3{font-size:15px;margin:12px 0 4px}
.meta{color:#555;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;font-size:13px;vertical-align:top}
th{background:#eee}
table.summary td.fig{font-size:28px;font-weight:700;text-align:center;min-width:90px;color:#fff}
td.fig.bad{background:#b71c1c}td.fig.good{background:#1b5e20}td.fig.info{background:#0d47a1}
.head{display:flex;gap:16px;align-items:stretch;margin:12px 0}
.verdict{padding:12px 20px;color:#fff;min-width:260px}
.verdict b{display:block;font-size:34px;letter-spacing:2px}
.verdict.pass{background:#2e7d32}.verdict.fail{background:#c62828}
.verdict.incomplete{background:#ef6c00}
.score{padding:12px 20px;background:#37474f;color:#fff;min-width:200px}
.score b{display:block;font-size:34px}
.legend{font-size:12px;color:#555}.none{color:#777;font-style:italic}.when{white-space:nowrap}
.status{font-weight:700}.status.action,.status.unreadable{color:#c62828}
.status.clean{color:#2e7d32}
.status.fail{color:#c62828}.status.pass{color:#2e7d32}.status.incomplete{color:#ef6c00}
ol.next{margin:4px 0 8px;padding-left:22px;font-size:14px}
.signoff td{height:28px;min-width:220px}
@media print{.head{break-inside:avoid}section{break-inside:avoid-page}}
"""

_FIGURES: Final = (
    ("readingSecretsAsEnv", "reading_secrets_as_env", "still read Secrets as env", "bad"),
    (
        "readingSecretsOnlyAsFiles",
        "reading_secrets_only_as_files",
        "still read Secrets as files",
        "bad",
    ),
    ("podsNotInjected", "pods_not_injected", "pods opted in but not injected", "bad"),
    ("protected", "protected", "protected (pods injected)", "info"),
    ("finalized", "finalized", "finalized", "info"),
    ("secrets", "secrets", "Secrets left", "info"),
    ("secretsUnused", "secrets_unused", "Secrets nobody uses", "info"),
    ("workloads", "workloads", "workloads", "info"),
)

_VERDICT_WORDS: Final = {
    Verdict.PASS: "PASS",
    Verdict.FAIL: "FAIL",
    Verdict.INCOMPLETE: "INCOMPLETE",
}


def figure_headers() -> str:
    """The ``<th>`` of each summary figure, in :func:`figure_cells`' order."""
    return "".join(f"<th>{html.escape(label)}</th>" for _k, _a, label, _c in _FIGURES)


def figure_cells(summary: Summary, **data: str) -> str:
    """One large tile per summary figure: red where a warning figure is not zero, green where
    it is, blue for the others; each ``<td>`` carries ``data-figure`` and the escaped
    ``data-<key>`` attributes given (``namespace="shop"``, ``cluster=...``), so a test reads
    the figures back from the page."""
    attrs = "".join(f' data-{key}="{html.escape(value)}"' for key, value in data.items())
    cells = []
    for key, attr, _label, kind in _FIGURES:
        value = int(getattr(summary, attr))
        css = kind if kind != "bad" else ("bad" if value else "good")
        cells.append(f'<td class="fig {css}"{attrs} data-figure="{key}">{value}</td>')
    return "".join(cells)


def head_tiles(verdict: Verdict, reason: str, score: Score, summary: Summary) -> list[str]:
    """The verdict tile (its colour) and the two score tiles, each saying what it counts."""
    s = summary
    moved = percent_text(score.secret_consumption_moved)
    injected = percent_text(score.pods_injected)
    return [
        '<div class="head">',
        f'<div class="verdict {verdict.value}" id="verdict" '
        f'data-verdict="{verdict.value}"><b>{_VERDICT_WORDS[verdict]}</b>'
        f"{html.escape(reason)}</div>",
        f'<div class="score" data-score="secretConsumptionMoved"><b>{moved}</b>'
        f"of Secret consumption moved to the vault ({s.finalized} finalized of "
        f"{s.finalized + s.reading_secrets_as_env + s.reading_secrets_only_as_files} "
        "workloads)</div>",
        f'<div class="score" data-score="podsInjected"><b>{injected}</b>'
        f"of pods proven injected ({s.pods_injected} of {s.pods})</div>",
        "</div>",
    ]


#: What the tile colours mean (under every table of tiles).
LEGEND: Final = (
    '<p class="legend">Red: still reads Kubernetes Secrets as environment variables, or '
    "pods that opt in to injection but were not injected. Green: none. Protected: opted "
    "in and every running pod proven injected.</p>"
)


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained HTML document: ``title``, the report's inline CSS (no script, no
    external asset) and ``body``, lines already escaped by the caller."""
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                f"<title>{html.escape(title)}</title>",
                f"<style>{_CSS}</style></head><body>",
                *body,
                "</body></html>",
            ]
        )
        + "\n"
    )


def _provenance(report: AuditReport) -> list[str]:
    e = html.escape
    out = ['<section id="provenance"><h2>Provenance</h2><table>']
    out.append(f"<tr><th>cluster API server</th><td>{e(report.cluster)}</td></tr>")
    out.append(
        '<tr><th>cluster identity (kube-system UID)</th><td id="cluster-id">'
        f"{e(report.cluster_id or 'unknown: kube-system could not be read')}</td></tr>"
    )
    p: Provenance | None = report.provenance
    if p is None:
        out.append(
            "<tr><th>plan</th><td>none given (audit --plan PLAN records the plan, its digest "
            "and approvals)</td></tr>"
        )
    else:
        out.append(f'<tr><th>plan</th><td id="plan">{e(p.plan)}</td></tr>')
        out.append(f'<tr><th>plan digest</th><td id="plan-digest">{e(p.digest)}</td></tr>')
        approvals = (
            "<br>".join(
                f"{e(a.identity)} at {e(a.at)}"
                + ("" if a.current else " (stale: signed an earlier version)")
                for a in p.approvals
            )
            or "none"
        )
        out.append(f'<tr><th>approved by</th><td id="approvals">{approvals}</td></tr>')
        v = p.verification
        if v is None:
            verification = "none given (--require-verified REPORT)"
        else:
            verification = (
                f"plan {e(v.plan)} {e(v.digest)}, verified {e(v.verified_at)} against "
                f"{e(v.vault)}; signed by {e(', '.join(v.signed_by) or 'nobody')}"
                + ("" if v.matches_plan else " (MADE FOR ANOTHER PLAN OR VERSION)")
            )
        out.append(f'<tr><th>verification report</th><td id="verification">{verification}</td>')
        out.append("</tr>")
    out.append(f"<tr><th>generated</th><td>{e(report.generated_at)}</td></tr></table>")
    out.append(
        '<table class="signoff"><tr><th>reviewed by</th><td></td><th>date</th><td></td>'
        "<th>signature</th><td></td></tr></table></section>"
    )
    return out


def _namespace(ns: AuditNamespace) -> list[str]:
    e = html.escape
    parts = [
        f'<section data-namespace="{e(ns.name)}"><h2>{e(ns.name)} '
        f'<span class="status {ns.status.value}">{e(ns.status.value)}</span></h2>'
    ]
    if ns.next_actions:
        parts.append('<h3>Next actions</h3><ol class="next">')
        parts.extend(f"<li>{e(a)}</li>" for a in ns.next_actions)
        parts.append("</ol>")
    if ns.unreadable:
        parts.append(
            "<p><b>Incomplete:</b> could not list "
            + "; ".join(e(u) for u in ns.unreadable)
            + "</p>"
        )
    if ns.workloads:
        parts.append(
            "<table><tr><th>workload</th><th>opted in</th><th>pods injected</th>"
            "<th>protected</th><th>finalized</th><th>Secrets still read (how)</th></tr>"
        )
        for w in ns.workloads:
            reads = "<br>".join(e(r) for r in group_reads(w.secret_reads)) or (
                '<span class="none">none</span>'
            )
            parts.append(
                f'<tr data-workload="{e(w.kind)}/{e(w.name)}"><td>{e(w.kind)} {e(w.name)}</td>'
                f"<td>{'yes' if w.opted_in else 'no'}</td>"
                f"<td>{w.pods_injected} of {w.pods}</td>"
                f"<td>{'yes' if w.protected else 'no'}</td>"
                f"<td>{'yes' if w.finalized else 'no'}</td><td>{reads}</td></tr>"
            )
        parts.append("</table>")
    if ns.secrets:
        parts.append("<table><tr><th>Secret</th><th>type</th><th>used by</th></tr>")
        for s in ns.secrets:
            users = (
                "<br>".join(
                    f'<span data-user="{e(user)}">{e(user)}: {e(how)}</span>'
                    for user, how in group_users(s.users)
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
    return parts


def to_html(report: AuditReport) -> str:
    """One self-contained HTML page (inline CSS, no script, no external asset): the verdict
    and score first, the provenance and a sign-off line, the summary per namespace (red tiles
    where Secrets are still read as env or pods not injected), then per namespace its next
    actions and details. Empty namespaces (no workload, no Secret) are one collapsed line.
    Every name is HTML-escaped."""
    e = html.escape
    shown = [ns for ns in report.namespaces if ns.status is not NamespaceStatus.EMPTY]
    empty = [ns.name for ns in report.namespaces if ns.status is NamespaceStatus.EMPTY]
    rows = [
        f'<tr><th scope="row">{e(ns.name)} <span class="status {ns.status.value}">'
        f"{e(ns.status.value)}</span></th>{figure_cells(ns.summary, namespace=ns.name)}</tr>"
        for ns in shown
    ]
    rows.append(f'<tr><th scope="row">TOTAL</th>{figure_cells(report.summary, namespace="*")}</tr>')
    parts = [
        "<h1>cloudtaser audit: Kubernetes Secrets still in use</h1>",
        f'<div class="meta">cluster <b>{e(report.cluster)}</b> &middot; kube-system UID '
        f"<b>{e(report.cluster_id or 'unknown')}</b> &middot; generated "
        f'<time datetime="{e(report.generated_at)}">{e(report.generated_at)}</time> &middot; '
        f"formatVersion {e(report.format_version)}</div>",
        *head_tiles(report.verdict, report.verdict_reason, report.score, report.summary),
        f'<table class="summary" id="summary"><tr><th>namespace</th>{figure_headers()}</tr>',
        *rows,
        "</table>",
        LEGEND,
    ]
    if empty:
        parts.append(
            f'<details id="empty-namespaces"><summary>{len(empty)} empty namespace(s) (no '
            f"workload, no Secret)</summary><p>{e(', '.join(empty))}</p></details>"
        )
    parts.extend(_provenance(report))
    for ns in shown:
        parts.extend(_namespace(ns))
    return page("cloudtaser audit", parts)
