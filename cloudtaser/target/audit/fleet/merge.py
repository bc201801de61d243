"""``fleet report``: the audit documents of many clusters into one
:class:`~cloudtaser.target.audit.fleet.result.FleetReport` (files only, no cluster, no vault).

- **What is read**: the document ``target audit --output json`` writes (``formatVersion`` "1",
  ``kind`` "audit"), decoded into the audit's own Structs, so whatever the audit schema refuses
  is refused here. Anything else is a :class:`~cloudtaser.errors.ConfigError` naming the file
  and what it is instead: not readable, not JSON, another kind of document, the audit of an
  earlier cloudtaser (numeric ``formatVersion``, no ``kind``, ``totals``, no cluster identity:
  audit the cluster again), a newer ``formatVersion``, or a field the schema refuses (with
  msgspec's ``$.…`` path).
- **One cluster, one audit**: a cluster is its kube-system UID (``clusterId``), whatever API
  address it was reached through. Given several audits of one cluster, the **newest is kept**
  (``generatedAt``) and the others are listed in ``superseded`` (a fleet's audits are
  collected over time: merging yesterday's and today's of a cluster is normal, counting both
  never is). Refused, because no choice would be right: two audits of one cluster measured
  at the same second with different figures, and an audit without a cluster identity whose
  API address another audit shares (without the UID nothing tells one cluster from two).
- **Figures**: each cluster's and each namespace's exactly as its audit reported them; the
  fleet's totals are their sums, its verdict and score the audit's rules over those totals
  (:mod:`cloudtaser.target.audit.figures`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from cloudtaser.errors import ConfigError
from cloudtaser.results import FORMAT_VERSION
from cloudtaser.target.audit.figures import score, timestamp, totals, verdict
from cloudtaser.target.audit.fleet.result import (
    FleetCluster,
    FleetNamespace,
    FleetReport,
    FleetSummary,
    Superseded,
)
from cloudtaser.target.audit.result import AuditReport, Verdict

__all__ = ["fleet_report", "load_audit", "merge"]

_KIND: Final = "audit"
_REDO: Final = (
    "audit the cluster again with this cloudtaser (cloudtaser target audit --output json)"
)


def _fail(file: str, what: str) -> ConfigError:
    return ConfigError(
        f"{file}: {what}; fleet report reads the documents of "
        f"'cloudtaser target audit --output json'"
    )


def _decode(file: str, data: bytes) -> AuditReport:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(file, f"not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise _fail(file, f"not an audit document (a JSON {type(raw).__name__}, not an object)")
    kind, version = raw.get("kind"), raw.get("formatVersion")
    if kind is None and version == 1 and "totals" in raw:
        raise ConfigError(
            f"{file}: the audit of an earlier cloudtaser (numeric formatVersion, no kind, no "
            f"cluster identity), which fleet report cannot tell from other clusters: {_REDO}"
        )
    if kind != _KIND:
        named = "no kind" if kind is None else f"kind {json.dumps(kind)}"
        raise _fail(file, f"not an audit document ({named})")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{file}: audit formatVersion {json.dumps(version)}, this cloudtaser reads "
            f'"{FORMAT_VERSION}": merge it with the cloudtaser that wrote it, or {_REDO}'
        )
    try:
        return msgspec.convert(raw, AuditReport)
    except msgspec.ValidationError as exc:
        raise _fail(file, f"not a valid audit document ({exc})") from exc


def load_audit(path: Path, *, name: str | None = None) -> AuditReport:
    """The audit document in ``path`` (errors name the file as ``name``, default the path)."""
    file = name or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read it ({exc.strerror or exc})") from exc
    return _decode(file, data)


def _measured(file: str, report: AuditReport) -> datetime:
    try:
        when = datetime.fromisoformat(report.generated_at)
    except ValueError as exc:
        raise _fail(file, f"generatedAt {report.generated_at!r} is not a timestamp") from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _key(report: AuditReport) -> str:
    return f"uid:{report.cluster_id}" if report.cluster_id else f"server:{report.cluster}"


def _check_identities(audits: Sequence[tuple[str, AuditReport]]) -> None:
    """Refuse an audit without a cluster identity whose API address another audit shares."""
    for file, report in audits:
        if report.cluster_id:
            continue
        for other, seen in audits:
            if other != file and seen.cluster == report.cluster:
                raise ConfigError(
                    f"{file} has no cluster identity (its audit could not read kube-system) "
                    f"and {other} audits the same API address {report.cluster}: nothing tells "
                    "whether they are one cluster or two; audit again with credentials that may "
                    "read the kube-system namespace, or give only one of them"
                )


def _newest(
    group: list[tuple[str, AuditReport, datetime]],
) -> tuple[tuple[str, AuditReport, datetime], list[Superseded]]:
    ordered = sorted(group, key=lambda item: item[2], reverse=True)  # stable: first given wins
    kept = ordered[0]
    for file, report, when in ordered[1:]:
        if when == kept[2] and report != kept[1]:
            raise ConfigError(
                f"{kept[0]} and {file} audit the same cluster ({kept[1].cluster}, kube-system "
                f"UID {kept[1].cluster_id or 'unknown'}) at the same time "
                f"{timestamp(when)} with different figures: give only one of them"
            )
    superseded = [
        Superseded(
            file=file,
            cluster=report.cluster,
            cluster_id=report.cluster_id,
            measured_at=report.generated_at,
            kept=kept[0],
        )
        for file, report, _when in ordered[1:]
    ]
    return kept, superseded


def _cluster(file: str, report: AuditReport) -> FleetCluster:
    return FleetCluster(
        file=file,
        cluster=report.cluster,
        cluster_id=report.cluster_id,
        measured_at=report.generated_at,
        verdict=report.verdict,
        verdict_reason=report.verdict_reason,
        score=report.score,
        plan=report.provenance.plan if report.provenance else None,
        plan_digest=report.provenance.digest if report.provenance else None,
        namespaces=[
            FleetNamespace(name=ns.name, status=ns.status, summary=ns.summary)
            for ns in report.namespaces
        ],
        summary=report.summary,
    )


def merge(
    audits: Sequence[tuple[str, AuditReport]],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FleetReport:
    """The fleet report of ``audits`` (file name, document), clusters in the order given
    (first file of each cluster), one per cluster (the newest; see the module doc)."""
    if not audits:
        raise ConfigError("fleet report needs at least one audit document")
    _check_identities(audits)
    groups: dict[str, list[tuple[str, AuditReport, datetime]]] = {}
    for file, report in audits:
        groups.setdefault(_key(report), []).append((file, report, _measured(file, report)))
    clusters: list[FleetCluster] = []
    superseded: list[Superseded] = []
    times: list[datetime] = []
    for group in groups.values():
        (file, report, when), left_out = _newest(group)
        clusters.append(_cluster(file, report))
        superseded.extend(left_out)
        times.append(when)
    figures = totals(c.summary for c in clusters)
    judged, reason = verdict(figures)
    failing = sum(1 for c in clusters if c.verdict is Verdict.FAIL)
    incomplete = sum(1 for c in clusters if c.verdict is Verdict.INCOMPLETE)
    if failing or incomplete:
        reason = f"{failing} of {len(clusters)} cluster(s) fail, {incomplete} incomplete: {reason}"
    return FleetReport(
        generated_at=timestamp(now()),
        measured_from=timestamp(min(times)),
        measured_to=timestamp(max(times)),
        verdict=judged,
        verdict_reason=reason,
        score=score(figures),
        clusters=clusters,
        superseded=superseded,
        summary=FleetSummary(
            **msgspec.structs.asdict(figures),
            clusters=len(clusters),
            clusters_failing=failing,
            clusters_incomplete=incomplete,
        ),
    )


def fleet_report(paths: Sequence[str]) -> FleetReport:
    """Read every audit file in ``paths`` (as given) and merge them."""
    return merge([(p, load_audit(Path(p), name=p)) for p in paths])
