"""The populate checklist: per distinct vault path, the fields the secret owners must create.

``cloudtaser plan todo`` (no system access: every path of the plan) and ``source verify-plan
--missing`` (only what the vault lacks) render it as ``bao kv put`` skeletons. The checklist
names paths and field names only, never a value: each value is left as ``…`` for the person
who holds it (workflow step 4).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cloudtaser.errors import PlanError
from cloudtaser.plan.model import MigrationPlan, Tenant, WorkloadStatus, split_vault_path

__all__ = ["TodoItem", "checklist", "select_tenants"]

#: What stands for a value in a skeleton (never a real value).
PLACEHOLDER = "…"


@dataclass(frozen=True)
class TodoItem:
    """One vault path to populate."""

    vault_path: str
    #: The KV v2 mount and the path below it (``bao kv put -mount=<mount> <path>``).
    mount: str
    path: str
    #: Every field the workloads read from this path.
    fields: tuple[str, ...]
    #: The fields to write now (all of ``fields`` unless only some are missing).
    missing_fields: tuple[str, ...]
    #: ``NAMESPACE/KIND/NAME`` of each workload that needs the path.
    workloads: tuple[str, ...]
    #: ``unknown`` (plan todo: not checked), or the verify-plan status of the path.
    status: str = "unknown"
    #: Fields of Secret files marked ``encoding: base64`` (binary): the value to store is the
    #: base64 of the file's bytes (docs/secret-files.md).
    binary_fields: tuple[str, ...] = ()

    @property
    def patch(self) -> bool:
        """Only some fields are missing from an existing secret: ``bao kv patch`` adds them
        without replacing the others (``put`` writes a new version with only its fields)."""
        return self.status == "missing-fields"

    def command(self) -> str:
        """The skeleton: ``bao kv put -mount=secret payments/db password=… user=…``; a binary
        field reads the base64 of its file: ``keystore.jks=@<(base64 -w0 …)``."""
        verb = "patch" if self.patch else "put"
        fields = " ".join(
            f"{shlex.quote(f)}=@<(base64 -w0 {PLACEHOLDER})"
            if f in self.binary_fields
            else f"{shlex.quote(f)}={PLACEHOLDER}"
            for f in self.missing_fields
        )
        return f"bao kv {verb} -mount={shlex.quote(self.mount)} {shlex.quote(self.path)} {fields}"


def select_tenants(plan: MigrationPlan, wanted: Sequence[str]) -> list[Tenant]:
    """The tenants named (tenant name or namespace) in ``wanted``; all when it is empty.
    An unknown name is a :class:`PlanError` (a typo must not check nothing)."""
    if not wanted:
        return list(plan.tenants)
    known = {t.name for t in plan.tenants} | {t.namespace for t in plan.tenants}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise PlanError(
            f"no tenant {', '.join(repr(u) for u in unknown)} in the plan (tenants: "
            f"{', '.join(sorted(t.name for t in plan.tenants)) or 'none'})",
            source="--tenant",
        )
    return [t for t in plan.tenants if t.name in wanted or t.namespace in wanted]


def checklist(plan: MigrationPlan, tenants: Iterable[Tenant] | None = None) -> list[TodoItem]:
    """Every distinct vault path of the non-skipped workloads, with the union of their fields
    (in plan order of first use)."""
    fields: dict[str, dict[str, None]] = {}
    binary: dict[str, set[str]] = {}
    users: dict[str, list[str]] = {}
    for tenant in plan.tenants if tenants is None else tenants:
        for workload in tenant.workloads:
            if workload.effective_status is WorkloadStatus.SKIPPED:
                continue
            ref = f"{tenant.namespace}/{workload.kind}/{workload.name}"
            for secret in workload.vault_reads():
                fields.setdefault(secret.vault_path, {}).update(dict.fromkeys(secret.fields))
                binary.setdefault(secret.vault_path, set()).update(secret.binary)
                seen = users.setdefault(secret.vault_path, [])
                if ref not in seen:
                    seen.append(ref)
    items = []
    for vault_path, names in fields.items():
        mount, rest = split_vault_path(vault_path)
        items.append(
            TodoItem(
                vault_path=vault_path,
                mount=mount,
                path=rest,
                fields=tuple(names),
                missing_fields=tuple(names),
                workloads=tuple(users[vault_path]),
                binary_fields=tuple(n for n in names if n in binary[vault_path]),
            )
        )
    return items
