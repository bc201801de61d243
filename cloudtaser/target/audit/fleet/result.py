"""``fleet report -o json``: the audits of many clusters in one
:class:`~cloudtaser.results.Result` (``kind: "fleet-report"``, ``summary`` last).

Per cluster: which audit file it comes from, its identity (API server, kube-system UID), when
it was measured, its verdict and score, its totals and per namespace the status and figures,
exactly as its audit reported them. Then the fleet: its verdict and score (the audit's rules
over the fleet's totals, :mod:`cloudtaser.target.audit.figures`), the audit files left out
because a newer (or the same) audit of their cluster was given, and the totals. Names and
counts only.
"""

from __future__ import annotations

from typing import Literal

from cloudtaser.results import Count, Part, Result
from cloudtaser.target.audit.result import NamespaceStatus, Score, Summary, Verdict

__all__ = ["FleetCluster", "FleetNamespace", "FleetReport", "FleetSummary", "Superseded"]


class FleetNamespace(Part, kw_only=True):
    """One namespace of one cluster, as its audit reported it."""

    name: str
    status: NamespaceStatus
    summary: Summary


class FleetCluster(Part, kw_only=True):
    """One cluster: the figures of its newest audit given."""

    #: The audit file, as named on the command line.
    file: str
    #: The API server audited.
    cluster: str
    #: The UID of its kube-system namespace (``null``: the audit could not read it).
    cluster_id: str | None
    #: When the audit measured the cluster (its ``generatedAt``).
    measured_at: str
    verdict: Verdict
    verdict_reason: str
    score: Score
    #: With an audit made with ``--plan``: the plan's name and reviewed-content digest.
    plan: str | None = None
    plan_digest: str | None = None
    namespaces: list[FleetNamespace]
    #: The audit's totals.
    summary: Summary


class Superseded(Part, kw_only=True):
    """An audit file left out: a newer (or the same) audit of its cluster was given."""

    file: str
    cluster: str
    cluster_id: str | None
    measured_at: str
    #: The file kept for that cluster.
    kept: str


class FleetSummary(Summary, kw_only=True):
    """The fleet's totals: the sum of every cluster's, and how many clusters."""

    clusters: Count
    #: Clusters whose verdict is ``fail`` / ``incomplete``.
    clusters_failing: Count
    clusters_incomplete: Count


class FleetReport(Result, kw_only=True):
    """``cloudtaser fleet report -o json``: many clusters' audits in one document."""

    kind: Literal["fleet-report"] = "fleet-report"
    generated_at: str
    #: The oldest and newest measurement among the clusters.
    measured_from: str
    measured_to: str
    #: The audit's verdict rule over the fleet's totals: ``fail`` when any cluster fails.
    verdict: Verdict
    verdict_reason: str
    score: Score
    clusters: list[FleetCluster]
    superseded: list[Superseded]
    summary: FleetSummary
