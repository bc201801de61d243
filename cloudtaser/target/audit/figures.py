"""The audit's arithmetic over :class:`~cloudtaser.target.audit.result.Summary` figures, once:
totals, the score's two shares and the verdict. ``target audit`` applies them to the
namespaces of one cluster (:func:`cloudtaser.target.audit.collect.build_report`), the fleet
report to the clusters of a fleet (:mod:`cloudtaser.target.audit.fleet`), so a fleet's score
and verdict are those of one cluster holding every namespace of the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from cloudtaser.target.audit.result import Score, Summary, Verdict

__all__ = ["score", "timestamp", "totals", "verdict"]


def timestamp(value: datetime | str) -> str:
    """A report's timestamp: UTC, whole seconds, ``Z`` (a string is taken as it is)."""
    if isinstance(value, str):
        return value
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def totals(summaries: Iterable[Summary]) -> Summary:
    """The field-by-field sum of ``summaries`` (all zero for none)."""
    parts = list(summaries)
    return Summary(**{f: sum(getattr(s, f) for s in parts) for f in Summary.__struct_fields__})


def _percent(part: int, whole: int) -> int | None:
    return None if whole == 0 else (100 * part) // whole


def score(figures: Summary) -> Score:
    """``secretConsumptionMoved``: finalized among the workloads that consume Secrets as env
    or files (finalized + still reading); ``podsInjected``: of the pods that need the vault.
    ``None`` when there is nothing to count."""
    moved = figures.finalized
    still = figures.reading_secrets_as_env + figures.reading_secrets_only_as_files
    return Score(
        secret_consumption_moved=_percent(moved, moved + still),
        pods_injected=_percent(figures.pods_injected, figures.pods),
    )


def verdict(figures: Summary) -> tuple[Verdict, str]:
    """``fail`` when a workload still reads Secrets (as env or as files) or an opted-in pod is
    not injected,
    else ``incomplete`` when a namespace could not be read completely, else ``pass``; and why,
    in one line."""
    problems = []
    if figures.reading_secrets_as_env:
        problems.append(f"{figures.reading_secrets_as_env} workload(s) still read Secrets as env")
    if figures.reading_secrets_only_as_files:
        problems.append(
            f"{figures.reading_secrets_only_as_files} workload(s) still read Secrets as files"
        )
    if figures.pods_not_injected:
        problems.append(f"{figures.pods_not_injected} opted-in pod(s) not proven injected")
    if problems:
        return Verdict.FAIL, "; ".join(problems)
    if figures.unreadable_namespaces:
        return (
            Verdict.INCOMPLETE,
            f"{figures.unreadable_namespaces} namespace(s) could not be read completely",
        )
    return (
        Verdict.PASS,
        "no workload reads Kubernetes Secrets as env or files and every opted-in pod is injected",
    )
