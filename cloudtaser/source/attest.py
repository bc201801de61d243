"""``verify-plan --attest``: turn a verification result into the proven paths of a report.

Only what was proven goes in: a path whose latest version is live, with the fields the plan
names that it holds (names only, never values). The report itself is the plan core's
(:mod:`cloudtaser.plan.attest`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudtaser.plan.model import WorkloadStatus
from cloudtaser.source.verify import PathStatus

if TYPE_CHECKING:
    from cloudtaser.plan.model import MigrationPlan
    from cloudtaser.source.verify import VerifyResult

__all__ = ["proven_paths"]


def proven_paths(
    plan: MigrationPlan, result: VerifyResult
) -> dict[str, tuple[list[str], int | None]]:
    """``{vaultPath: (fields proven present, latest version)}`` from ``result`` (which
    :func:`cloudtaser.source.verify.verify_plan` made for ``plan``, in plan order)."""
    proven: dict[str, tuple[set[str], int | None]] = {}
    # matched by tenant, kind and name: a run scoped with --tenant reports only some tenants
    reports = {(t.tenant, w.kind, w.name): w for t in result.tenants for w in t.workloads}
    for tenant, workload in plan.iter_workloads():
        report = reports.get((tenant.name, str(workload.kind), workload.name))
        if report is None:
            continue
        if workload.effective_status is WorkloadStatus.SKIPPED or report.skipped:
            continue
        for secret, check in zip(workload.vault_reads(), report.secrets, strict=True):
            if check.status not in {PathStatus.OK, PathStatus.MISSING_FIELDS}:
                continue
            present = {f for f in secret.fields if f not in check.missing_fields}
            fields, _version = proven.setdefault(secret.vault_path, (set(), check.version))
            fields.update(present)
    return {path: (sorted(fields), version) for path, (fields, version) in proven.items()}
