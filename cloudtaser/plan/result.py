"""The ``-o json`` documents of the ``plan`` commands (no system access), as
:class:`~cloudtaser.results.Result` Structs: ``status``, ``validate``, ``set-status``, ``todo``
(and the checklist ``source verify-plan --missing`` shares), ``diff`` and ``verify-approvals``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from cloudtaser.plan.approval import ApprovalState
from cloudtaser.plan.model import Digest, GitopsAction, WorkloadKind, WorkloadStatus
from cloudtaser.results import Count, Part, Result

__all__ = [
    "ApprovalEntry",
    "ApprovalsSummary",
    "Checklist",
    "ChecklistPath",
    "ChecklistSummary",
    "DiffChange",
    "DiffStatusChange",
    "DiffSummary",
    "FileCheck",
    "GitWaiting",
    "PlanApprovals",
    "PlanDiff",
    "PlanSetStatus",
    "PlanStatus",
    "PlanTodo",
    "PlanValidate",
    "SetStatusSummary",
    "StatusChanged",
    "StatusCounts",
    "StatusTotals",
    "TenantStatus",
    "ValidateSummary",
    "WorkloadState",
]


class StatusCounts(Part, kw_only=True):
    """How many by status (one field per :class:`~cloudtaser.plan.model.WorkloadStatus`)."""

    pending: Count
    migrated: Count
    skipped: Count


class StatusTotals(Part, kw_only=True):
    workloads: StatusCounts
    #: The secrets of those workloads.
    secrets: StatusCounts


class TenantStatus(Part, kw_only=True):
    tenant: str
    namespace: str
    workloads: StatusCounts
    secrets: StatusCounts


class WorkloadState(Part, kw_only=True):
    tenant: str
    namespace: str
    kind: WorkloadKind
    name: str
    status: WorkloadStatus
    #: Why it has its status (the last history entry's reason, else the workload's).
    reason: str | None
    last_error: str | None
    #: The change written with ``--emit`` that its owner has not applied yet, when any.
    waiting_for_git: GitopsAction | UnsetType = UNSET


class GitWaiting(Part, kw_only=True):
    """A workload waiting for Git: its change was written with ``--emit`` (the plan's
    ``gitops``) and ``--wait-for-git`` has not found it applied yet."""

    tenant: str
    namespace: str
    kind: WorkloadKind
    name: str
    status: WorkloadStatus
    action: GitopsAction
    emitted_at: str
    files: list[str]


class PlanStatus(Result, kw_only=True):
    """``cloudtaser plan status -o json``: workloads and secrets per status, per tenant and in
    total; ``--workloads`` adds one entry per workload."""

    kind: Literal["plan-status"] = "plan-status"
    plan: str
    tenants: list[TenantStatus]
    total: StatusTotals
    workloads: list[WorkloadState] | UnsetType = UNSET
    #: The workloads waiting for Git (absent when none).
    waiting_for_git: list[GitWaiting] | UnsetType = UNSET
    summary: StatusTotals


class FileCheck(Part, kw_only=True):
    """One file given: ``error`` when invalid, else the plan's name and size."""

    file: str
    valid: bool
    error: str | UnsetType = UNSET
    plan: str | UnsetType = UNSET
    tenants: Count | UnsetType = UNSET
    workloads: Count | UnsetType = UNSET


class ValidateSummary(Part, kw_only=True):
    files: Count
    valid: Count
    invalid: Count


class PlanValidate(Result, kw_only=True):
    """``cloudtaser plan validate -o json``: one entry per file given."""

    kind: Literal["plan-validate"] = "plan-validate"
    files: list[FileCheck]
    summary: ValidateSummary


class StatusChanged(Part, kw_only=True):
    #: ``namespace/kind/name``
    workload: str
    from_: WorkloadStatus = msgspec.field(name="from")
    to: WorkloadStatus


class SetStatusSummary(Part, kw_only=True):
    changed: Count
    unchanged: Count


class PlanSetStatus(Result, kw_only=True):
    """``cloudtaser plan set-status -o json``: the workloads whose status was changed (recorded
    in their history) and those already at it."""

    kind: Literal["plan-set-status"] = "plan-set-status"
    plan: str
    changed: list[StatusChanged]
    #: ``namespace/kind/name`` of each workload already at the status.
    unchanged: list[str]
    summary: SetStatusSummary


class ChecklistPath(Part, kw_only=True):
    """One vault path to populate, with its fields (names only, never a value)."""

    vault_path: str
    mount: str
    path: str
    #: ``unknown`` (plan todo: the vault was not asked), else the path's verify-plan status.
    status: str
    #: The fields to write.
    fields: list[str]
    #: ``namespace/kind/name`` of each workload that needs it.
    workloads: list[str]
    command: Annotated[
        str, Meta(description="bao kv put/patch skeleton; values are \u2026 placeholders")
    ]


class ChecklistSummary(Part, kw_only=True):
    paths: Count
    fields: Count


class Checklist(Result, kw_only=True):
    """The populate checklist (the fields of ``plan-todo`` and ``verify-plan-missing``)."""

    plan: str
    paths: list[ChecklistPath]
    summary: ChecklistSummary


class PlanTodo(Checklist, kw_only=True):
    """``cloudtaser plan todo -o json``: the populate checklist, every vault path of the plan
    with its fields (no values)."""

    kind: Literal["plan-todo"] = "plan-todo"


class DiffChange(Part, kw_only=True):
    """One change of the reviewed content: ``old`` unless added, ``new`` unless removed."""

    op: Literal["added", "removed", "changed", "reordered"]
    #: e.g. ``tenants[payments].workloads[Deployment/api].secrets[db].fields.user``
    path: str
    old: Any | UnsetType = UNSET
    new: Any | UnsetType = UNSET


class DiffStatusChange(Part, kw_only=True):
    """A workload in both plans whose run state differs (not reviewed content)."""

    #: ``namespace/kind/name``
    workload: str
    old_status: str
    new_status: str
    old_last_error: str | UnsetType = UNSET
    new_last_error: str | UnsetType = UNSET
    new_history_entries: Count


class DiffSummary(Part, kw_only=True):
    reviewed_changed: bool
    changes: Count
    status_changes: Count


class PlanDiff(Result, kw_only=True):
    """``cloudtaser plan diff OLD NEW -o json``: what changed in the reviewed content (the
    digests differ exactly when it did), and the status changes beside it."""

    kind: Literal["plan-diff"] = "plan-diff"
    old_digest: Digest
    new_digest: Digest
    changes: list[DiffChange]
    status_changes: list[DiffStatusChange]
    summary: DiffSummary


class ApprovalEntry(Part, kw_only=True):
    """One recorded approval and whether it counts."""

    #: Its position in the plan's ``approvals:`` list.
    index: Count
    identity: str
    at: Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
    state: ApprovalState
    fingerprint: Annotated[str, Meta(pattern="^SHA256:")] | UnsetType = UNSET
    detail: str | UnsetType = UNSET


class ApprovalsSummary(Part, kw_only=True):
    #: At least ``required`` approvals are valid.
    ok: bool
    valid: Count
    required: Annotated[int, Meta(ge=1)]


class PlanApprovals(Result, kw_only=True):
    """``cloudtaser plan verify-approvals -o json``: each approval of the plan checked against
    the allowed signers, over the reviewed content's digest."""

    kind: Literal["plan-approvals"] = "plan-approvals"
    plan: str
    digest: Digest
    approvals: list[ApprovalEntry]
    summary: ApprovalsSummary
