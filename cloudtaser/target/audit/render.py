"""The forms of a :class:`~cloudtaser.target.audit.collect.AuditReport`: :func:`to_json`, the
stable JSON (``formatVersion`` 1, the schema :func:`cloudtaser.target.audit.collect.json_schema`
generates), :func:`to_text`, the table, and :func:`to_html`, one self-contained HTML file
(inline CSS, no script, no external asset, every name escaped). Names only, never a value.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Final

import msgspec

from cloudtaser.target.audit.collect import (
    AuditReport,
    SecretEntry,
    SecretRead,
    SecretUseEntry,
    Summary,
)

__all__ = ["to_html", "to_json", "to_text"]


def to_json(report: AuditReport) -> str:
    """The stable JSON form (keys in schema order; ``schema/audit.schema.json``)."""
    return json.dumps(msgspec.to_builtins(report), indent=2) + "\n"


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
