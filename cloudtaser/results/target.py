"""The documents of the cluster-side commands: ``target discover`` and ``target install``
(``--check``, ``uninstall``). Object names and counts only, never a Secret's value."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, UnsetType

from cloudtaser.results import Count, Part, Result

__all__ = [
    "CheckEntry",
    "CheckSummary",
    "Discover",
    "DiscoverSummary",
    "Install",
    "InstallCheck",
    "ObjectChanges",
    "ObjectEntry",
    "SkippedEntry",
    "Uninstall",
]


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


class ObjectEntry(Part, kw_only=True):
    """What was (or, with ``dryRun``, would be) done to one object install manages."""

    kind: str
    name: str
    #: ``null`` for a cluster-scoped object.
    namespace: str | None
    action: str
    detail: str
    diff: list[str] | UnsetType = UNSET


class ObjectChanges(Result, kw_only=True):
    """The fields of ``install`` and ``uninstall``."""

    dry_run: bool
    changes: list[ObjectEntry]
    summary: Annotated[
        dict[str, Count],
        Meta(description="objects by action (create, update, unchanged, delete, keep, ...)"),
    ]


class Install(ObjectChanges, kw_only=True):
    """``cloudtaser target install -o json``: what install did (or, with dryRun, would do) to
    each object it manages."""

    kind: Literal["install"] = "install"


class Uninstall(ObjectChanges, kw_only=True):
    """``cloudtaser target uninstall -o json``: what uninstall did (or, with dryRun, would do)
    to each object install created."""

    kind: Literal["uninstall"] = "uninstall"


class CheckEntry(Part, kw_only=True):
    name: str
    ok: bool
    detail: str


class CheckSummary(Part, kw_only=True):
    passed: Count
    failed: Count


class InstallCheck(Result, kw_only=True):
    """``cloudtaser target install --check -o json``: the results of the injector checks."""

    kind: Literal["install-check"] = "install-check"
    #: Every check passed.
    ok: bool
    checks: list[CheckEntry]
    summary: CheckSummary
