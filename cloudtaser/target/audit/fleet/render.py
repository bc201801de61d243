"""The human forms of a :class:`~cloudtaser.target.audit.fleet.result.FleetReport` (its JSON
is the Struct itself): :func:`to_text`, the tables, and :func:`to_html`, one self-contained
page with the audit page's look, built from the audit renderer's own pieces
(:mod:`cloudtaser.target.audit.render`: the page, the verdict and score tiles, the figure
tiles, the legend). Inline CSS, no script, no external asset, every name escaped.
"""

from __future__ import annotations

import html

from cloudtaser.target.audit.fleet.result import FleetCluster, FleetReport
from cloudtaser.target.audit.render import (
    LEGEND,
    SUMMARY_HEADERS,
    figure_cells,
    figure_headers,
    head_tiles,
    page,
    percent_text,
    summary_columns,
    table,
)
from cloudtaser.target.audit.result import NamespaceStatus

__all__ = ["cluster_key", "to_html", "to_text"]


def cluster_key(cluster: FleetCluster) -> str:
    """How the page names a cluster in its ``data-cluster`` attributes: the kube-system UID,
    else the API address."""
    return cluster.cluster_id or cluster.cluster


def _identity(cluster: FleetCluster) -> str:
    return f"{cluster.cluster} (kube-system UID {cluster.cluster_id or 'unknown'})"


def to_text(report: FleetReport) -> str:
    """The verdict and score, one row per cluster and the fleet's total, then per cluster its
    namespaces (the empty ones on one line) and the audit files left out."""
    s = report.summary
    out = [
        f"verdict: {report.verdict.value.upper()}: {report.verdict_reason}",
        f"score: Secret consumption moved to the vault "
        f"{percent_text(report.score.secret_consumption_moved)}; pods proven injected "
        f"{percent_text(report.score.pods_injected)}",
        f"clusters: {s.clusters}, measured from {report.measured_from} to {report.measured_to}",
        "",
    ]
    rows = [
        [
            c.file,
            c.cluster_id or "unknown",
            c.measured_at,
            c.verdict.value,
            *summary_columns(c.summary),
        ]
        for c in report.clusters
    ]
    rows.append(["TOTAL", "", "", report.verdict.value, *summary_columns(s)])
    out.append(table(rows, ["AUDIT", "KUBE-SYSTEM UID", "MEASURED", "VERDICT", *SUMMARY_HEADERS]))
    for c in report.clusters:
        out.append(f"\n{c.file}: {_identity(c)}, measured {c.measured_at}")
        shown = [ns for ns in c.namespaces if ns.status is not NamespaceStatus.EMPTY]
        empty = [ns.name for ns in c.namespaces if ns.status is NamespaceStatus.EMPTY]
        if shown:
            ns_rows = [[ns.name, ns.status.value, *summary_columns(ns.summary)] for ns in shown]
            out.extend(
                "  " + line
                for line in table(ns_rows, ["NAMESPACE", "STATUS", *SUMMARY_HEADERS]).split("\n")
            )
        if empty:
            out.append(f"  empty (no workload, no Secret): {', '.join(empty)}")
    for left in report.superseded:
        out.append(
            f"\nleft out: {left.file} (measured {left.measured_at}): {left.kept} is the newest "
            "audit given of the same cluster"
        )
    return "\n".join(out) + "\n"


def _cluster_row(c: FleetCluster) -> str:
    e = html.escape
    return (
        f'<tr data-cluster-row="{e(cluster_key(c))}"><th scope="row">{e(c.cluster)}<br>'
        f'<span class="legend">{e(c.file)}</span> <span class="status {c.verdict.value}">'
        f"{e(c.verdict.value)}</span></th>"
        f'<td class="when"><time datetime="{e(c.measured_at)}">{e(c.measured_at)}</time></td>'
        f"{figure_cells(c.summary, cluster=cluster_key(c), namespace='*')}</tr>"
    )


def _cluster(c: FleetCluster) -> list[str]:
    e = html.escape
    key = cluster_key(c)
    parts = [
        f'<section data-cluster="{e(key)}"><h2>{e(c.cluster)} '
        f'<span class="status {c.verdict.value}">{e(c.verdict.value)}</span></h2>',
        "<table>",
        f"<tr><th>audit file</th><td>{e(c.file)}</td></tr>",
        f"<tr><th>cluster API server</th><td>{e(c.cluster)}</td></tr>",
        "<tr><th>cluster identity (kube-system UID)</th><td data-cluster-id>"
        f"{e(c.cluster_id or 'unknown: kube-system could not be read')}</td></tr>",
        f'<tr><th>measured</th><td><time datetime="{e(c.measured_at)}">'
        f"{e(c.measured_at)}</time></td></tr>",
        f"<tr><th>verdict</th><td>{e(c.verdict.value)}: {e(c.verdict_reason)}</td></tr>",
        f"<tr><th>score</th><td>{percent_text(c.score.secret_consumption_moved)} of Secret "
        f"consumption moved to the vault; {percent_text(c.score.pods_injected)} of pods proven "
        "injected</td></tr>",
    ]
    if c.plan is not None:
        parts.append(f"<tr><th>plan</th><td>{e(c.plan)} {e(c.plan_digest or '')}</td></tr>")
    parts.append("</table>")
    shown = [ns for ns in c.namespaces if ns.status is not NamespaceStatus.EMPTY]
    empty = [ns.name for ns in c.namespaces if ns.status is NamespaceStatus.EMPTY]
    if shown:
        parts.append(f'<table class="summary"><tr><th>namespace</th>{figure_headers()}</tr>')
        parts.extend(
            f'<tr><th scope="row">{e(ns.name)} <span class="status {ns.status.value}">'
            f"{e(ns.status.value)}</span></th>"
            f"{figure_cells(ns.summary, cluster=key, namespace=ns.name)}</tr>"
            for ns in shown
        )
        parts.append("</table>")
    if empty:
        parts.append(
            f"<details><summary>{len(empty)} empty namespace(s) (no workload, no Secret)"
            f"</summary><p>{e(', '.join(empty))}</p></details>"
        )
    parts.append("</section>")
    return parts


def to_html(report: FleetReport) -> str:
    """One self-contained HTML page: the fleet's verdict and score tiles, one row of figure
    tiles per cluster (its identity, when it was measured) and the fleet's total, the audit
    files left out, then per cluster its identity and one row of tiles per namespace (empty
    ones collapsed). Every name is HTML-escaped."""
    e = html.escape
    s = report.summary
    parts = [
        f"<h1>cloudtaser fleet report: Kubernetes Secrets still in use in {s.clusters} "
        "cluster(s)</h1>",
        f'<div class="meta">measured from <time datetime="{e(report.measured_from)}">'
        f'{e(report.measured_from)}</time> to <time datetime="{e(report.measured_to)}">'
        f"{e(report.measured_to)}</time> &middot; generated "
        f'<time datetime="{e(report.generated_at)}">{e(report.generated_at)}</time> &middot; '
        f"formatVersion {e(report.format_version)}</div>",
        *head_tiles(report.verdict, report.verdict_reason, report.score, s),
        '<table class="summary" id="clusters"><tr><th>cluster</th><th>measured</th>'
        f"{figure_headers()}</tr>",
        *(_cluster_row(c) for c in report.clusters),
        f'<tr><th scope="row">TOTAL ({s.clusters} cluster(s))</th><td></td>'
        f"{figure_cells(s, cluster='*', namespace='*')}</tr>",
        "</table>",
        LEGEND,
    ]
    if report.superseded:
        parts.append(
            '<section id="superseded"><h2>Left out: not the newest audit of their cluster</h2>'
            "<table>"
        )
        parts.append("<tr><th>audit file</th><th>cluster</th><th>measured</th><th>kept</th></tr>")
        parts.extend(
            f"<tr><td>{e(x.file)}</td><td>{e(x.cluster)} ({e(x.cluster_id or 'unknown')})</td>"
            f"<td>{e(x.measured_at)}</td><td>{e(x.kept)}</td></tr>"
            for x in report.superseded
        )
        parts.append("</table></section>")
    for c in report.clusters:
        parts.extend(_cluster(c))
    return page("cloudtaser fleet report", parts)
