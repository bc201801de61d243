"""The ``-o json`` documents of ``source apply-plan`` and ``source verify-plan`` (``--missing``
prints the populate checklist of :mod:`cloudtaser.plan.result`), as
:class:`~cloudtaser.results.Result` Structs. Never a secret value: paths, field names and
statuses only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, UnsetType

from cloudtaser.changes import Action
from cloudtaser.plan.result import Checklist
from cloudtaser.results import Count, Part, Result
from cloudtaser.source.verify import PathStatus

__all__ = [
    "ApplyObject",
    "ApplyPlan",
    "ApplySummary",
    "FieldChange",
    "PathCounts",
    "PathEntry",
    "SecretEntry",
    "SkippedTenant",
    "TenantEntry",
    "VerifyPlan",
    "VerifyPlanMissing",
    "VerifySummary",
    "WorkloadEntry",
]


class FieldChange(Part, kw_only=True):
    """A role field that differs: the vault's value, then the plan's (``null``: unset)."""

    field: str
    old: Any
    new: Any


class ApplyObject(Part, kw_only=True):
    """What apply-plan did (or, with ``dryRun``, would do) to one vault object."""

    kind: Literal["policy", "role", "auth-mount"]
    name: str
    path: str
    #: ``null`` for the auth mount and for an object no tenant of the plan owns.
    tenant: str | None
    action: Action
    detail: str | UnsetType = UNSET
    #: A policy that is not unchanged: the unified diff of its HCL (vault -> plan).
    diff: list[str] | UnsetType = UNSET
    #: A role that is not unchanged: the fields that differ.
    field_changes: list[FieldChange] | UnsetType = UNSET


class SkippedTenant(Part, kw_only=True):
    """A tenant that gets no policy or role, and why."""

    tenant: str
    reason: str


class ApplySummary(Part, kw_only=True):
    """Objects by action, and the writes made."""

    create: Count
    update: Count
    unchanged: Count
    conflict: Count
    orphaned: Count
    delete: Count
    writes: Count


class ApplyPlan(Result, kw_only=True):
    """``cloudtaser source apply-plan -o json``: per object what apply-plan did or (dryRun)
    would do, with the policy HCL diff and role field changes."""

    kind: Literal["apply-plan"] = "apply-plan"
    plan: str
    dry_run: bool
    auth_mount: str
    changes_pending: bool
    objects: list[ApplyObject]
    skipped_tenants: list[SkippedTenant]
    warnings: list[str]
    summary: ApplySummary


#: A workload's verdict: the worst status of its secrets, ``skipped``, or ``null`` (none).
WorkloadVerdict = Annotated[
    str | None, Meta(extra_json_schema={"enum": [*(s.value for s in PathStatus), "skipped", None]})
]


class PathEntry(Part, kw_only=True):
    """One distinct vault path, at the worst status of its references."""

    vault_path: str
    status: PathStatus
    #: Every field the plan needs from it.
    fields: list[str]
    missing_fields: list[str] | UnsetType = UNSET
    #: ``namespace/kind/name`` of each workload that needs it.
    workloads: list[str]
    version: int | UnsetType = UNSET
    detail: str | UnsetType = UNSET


class SecretEntry(Part, kw_only=True):
    """One secret reference of a workload."""

    source: str
    vault_path: str
    status: PathStatus
    missing_fields: list[str] | UnsetType = UNSET
    version: int | UnsetType = UNSET
    detail: str | UnsetType = UNSET


class WorkloadEntry(Part, kw_only=True):
    kind: str
    name: str
    status: WorkloadVerdict
    secrets: list[SecretEntry]


class TenantEntry(Part, kw_only=True):
    tenant: str
    namespace: str
    workloads: list[WorkloadEntry]


class PathCounts(Part, rename="kebab", kw_only=True):
    """How many by status (one field per :class:`~cloudtaser.source.verify.PathStatus`)."""

    ok: Count
    missing: Count
    deleted: Count
    destroyed: Count
    missing_fields: Count
    permission_denied: Count


class VerifySummary(Part, kw_only=True):
    paths_checked: Count
    #: Distinct paths by status.
    paths: PathCounts
    workloads_checked: Count
    workloads_ok: Count
    workloads_skipped: Count
    #: Secret references by status.
    secrets: PathCounts


class VerifyPlan(Result, kw_only=True):
    """``cloudtaser source verify-plan -o json``: one entry per distinct vault path (paths) and
    the per-tenant/workload detail (tenants). Never a secret value."""

    kind: Literal["verify-plan"] = "verify-plan"
    plan: str
    ok: bool
    paths: list[PathEntry]
    tenants: list[TenantEntry]
    summary: VerifySummary


class VerifyPlanMissing(Checklist, kw_only=True):
    """``cloudtaser source verify-plan --missing -o json``: the populate checklist for what
    the vault lacks (no values)."""

    kind: Literal["verify-plan-missing"] = "verify-plan-missing"
