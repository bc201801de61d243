"""The plan summary: what ``plan status`` reports (counts by status), computed once here so
the CLI only renders it."""

from __future__ import annotations

from typing import Any

from cloudtaser.plan.model import MigrationPlan, WorkloadStatus

__all__ = ["status_counts"]


def status_counts(loaded: MigrationPlan) -> dict[str, Any]:
    """Workloads and secrets per status, per tenant and in total (``plan status``; its JSON
    output is exactly this mapping)."""

    def empty() -> dict[str, dict[str, int]]:
        return {
            "workloads": {s.value: 0 for s in WorkloadStatus},
            "secrets": {s.value: 0 for s in WorkloadStatus},
        }

    total = empty()
    tenants = []
    for tenant in loaded.tenants:
        counts = empty()
        for workload in tenant.workloads:
            status = workload.effective_status.value
            for bucket in (counts, total):
                bucket["workloads"][status] += 1
                bucket["secrets"][status] += len(workload.secrets)
        tenants.append({"tenant": tenant.name, "namespace": tenant.namespace, **counts})
    return {"plan": loaded.metadata.name, "tenants": tenants, "total": total}
