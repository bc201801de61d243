"""``target discover -o json``: the discovery report as a
:class:`~cloudtaser.results.Result` (the plan itself goes to ``--output-plan``). Object names
and counts only, never a Secret's value."""

from __future__ import annotations

from typing import Literal

from cloudtaser.results import Count, Part, Result

__all__ = ["Discover", "DiscoverSummary", "SkippedEntry"]


class SkippedEntry(Part, kw_only=True):
    """A workload discover found and did not plan (``inPlan``: it is in the plan, skipped)."""

    namespace: str
    kind: str
    name: str
    reason: str
    in_plan: bool


class DiscoverSummary(Part, kw_only=True):
    namespaces_scanned: Count
    workloads_scanned: Count
    tenants: Count
    workloads: Count
    pending: Count
    skipped: Count
    vault_paths: Count
    #: Workloads left out of the plan, by reason.
    not_in_plan: dict[str, Count]


class Discover(Result, kw_only=True):
    """``cloudtaser target discover -o json``: the discovery report (the plan itself is
    written to --output-plan)."""

    kind: Literal["discover"] = "discover"
    plan: str
    output_plan: str
    #: Every namespace and Secret could be read (else see ``unreadable``).
    complete: bool
    skipped: list[SkippedEntry]
    warnings: list[str]
    unreadable: list[str]
    summary: DiscoverSummary
