"""The plan summary: what ``plan status`` reports (counts by status), computed once here so
the CLI only renders it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloudtaser.plan.model import MigrationPlan, Tenant, WorkloadStatus

__all__ = ["status_counts", "waiting_for_git"]


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


def waiting_for_git(tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
    """The workloads of ``tenants`` whose change was written for Git (``--emit``) and not yet
    found applied (``gitops``), in plan order (``plan status``; its JSON ``waitingForGit``)."""
    return [
        {
            "tenant": t.name,
            "namespace": t.namespace,
            "kind": str(w.kind),
            "name": w.name,
            "status": w.effective_status.value,
            "action": w.gitops.action,
            "emittedAt": w.gitops.emitted_at.isoformat(),
            "files": list(w.gitops.files),
        }
        for t in tenants
        for w in t.workloads
        if w.gitops is not None
    ]
