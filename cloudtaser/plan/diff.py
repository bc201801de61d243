"""A reviewer's diff of two plans: what changed in the reviewed content, and (separately) in
the workloads' run state.

The reviewed content (:func:`cloudtaser.plan.canonical.reviewed_content`) is compared as a
tree: lists of tenants, workloads and secrets are matched by identity (tenant ``name``,
workload ``kind/name``, secret ``source``), so an insertion shows as one added entry, not as a
shifted list. A change of order alone is reported as ``reordered`` (plan order is protect's
order, so it is reviewed). Paths read ``tenants[payments].workloads[Deployment/api]
.secrets[db].fields.password``. Status changes (``status``, ``lastError``, new ``history``
entries) are listed apart: they never make the reviewed content differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.plan.canonical import canonical_json, digest_of, reviewed_content

if TYPE_CHECKING:
    from cloudtaser.plan.model import MigrationPlan

__all__ = ["Change", "PlanDiff", "StatusChange", "diff_plans"]


@dataclass(frozen=True)
class Change:
    """One difference in the reviewed content."""

    op: str  # added | removed | changed | reordered
    path: str
    old: Any = None
    new: Any = None


@dataclass(frozen=True)
class StatusChange:
    """A workload present in both plans whose run state differs."""

    workload: str
    old_status: str
    new_status: str
    old_error: str | None
    new_error: str | None
    new_history: int


@dataclass
class PlanDiff:
    """The result of :func:`diff_plans`."""

    old_digest: str
    new_digest: str
    changes: list[Change] = field(default_factory=list)
    status_changes: list[StatusChange] = field(default_factory=list)

    @property
    def reviewed_changed(self) -> bool:
        """True when the reviewed content differs (the digests differ)."""
        return self.old_digest != self.new_digest


def _secret_key(item: dict[str, Any]) -> str:
    return str(item.get("source"))


_IDENTITY: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "tenants": lambda item: str(item.get("name")),
    "workloads": lambda item: f"{item.get('kind')}/{item.get('name')}",
    "secrets": _secret_key,
    "secretFiles": _secret_key,
}


def _keyed(items: list[Any], key: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Items by identity; a repeated identity gets ``#2``, ``#3`` ..."""
    out: dict[str, Any] = {}
    for item in items:
        base = key(item) if isinstance(item, dict) else repr(item)
        name, count = base, 1
        while name in out:
            count += 1
            name = f"{base}#{count}"
        out[name] = item
    return out


def _walk(old: Any, new: Any, path: str, name: str, out: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else key
            if key not in new:
                out.append(Change("removed", sub, old=old[key]))
            elif key not in old:
                out.append(Change("added", sub, new=new[key]))
            else:
                _walk(old[key], new[key], sub, key, out)
        return
    if isinstance(old, list) and isinstance(new, list) and name in _IDENTITY:
        before, after = _keyed(old, _IDENTITY[name]), _keyed(new, _IDENTITY[name])
        for ident, item in before.items():
            if ident not in after:
                out.append(Change("removed", f"{path}[{ident}]", old=item))
        for ident, item in after.items():
            if ident not in before:
                out.append(Change("added", f"{path}[{ident}]", new=item))
            else:
                _walk(before[ident], item, f"{path}[{ident}]", "", out)
        common = [i for i in before if i in after]
        if common != [i for i in after if i in before]:
            out.append(Change("reordered", path, old=common, new=[i for i in after if i in before]))
        return
    if old != new:
        out.append(Change("changed", path, old=old, new=new))


def _run_state(plan: MigrationPlan) -> dict[str, tuple[str, str | None, int]]:
    return {
        f"{tenant.namespace}/{workload.kind}/{workload.name}": (
            str(workload.effective_status),
            workload.last_error,
            len(workload.history),
        )
        for tenant, workload in plan.iter_workloads()
    }


def diff_plans(old: MigrationPlan, new: MigrationPlan) -> PlanDiff:
    """Compare two plans (see the module docstring)."""
    before, after = reviewed_content(old), reviewed_content(new)
    result = PlanDiff(
        old_digest=digest_of(canonical_json(before)), new_digest=digest_of(canonical_json(after))
    )
    _walk(before, after, "", "", result.changes)
    old_state, new_state = _run_state(old), _run_state(new)
    for ident, (status, error, history) in new_state.items():
        if ident not in old_state:
            continue
        was_status, was_error, was_history = old_state[ident]
        if (status, error, history) != (was_status, was_error, was_history):
            result.status_changes.append(
                StatusChange(
                    workload=ident,
                    old_status=was_status,
                    new_status=status,
                    old_error=was_error,
                    new_error=error,
                    new_history=max(0, history - was_history),
                )
            )
    return result
