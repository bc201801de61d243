"""The MigrationPlan: the rule book, the Structs, their YAML I/O, and the plan store.

=====================  ==========================================================================
module                 what it holds
=====================  ==========================================================================
``plan.rules``         every name pattern, length limit, reserved mount and path rule (stdlib)
``plan.isolation``     the rules over a whole plan: tenant isolation, dangerous variables,
                       forged run state (``rules`` + ``isolation`` are the one rule book)
``plan.model``         the msgspec Structs and ``json_schema``
``plan.yamlio``        strict ``load``/``loads`` with readable errors, deterministic
                       ``dumps``, atomic ``save``
``plan.store``         :class:`PlanStore`: lock + load + record + atomic save, for every command
                       that writes the plan
``plan.summary``       the counts ``plan show`` / ``plan status`` report
=====================  ==========================================================================

The plan core imports neither cluster nor vault client (an import-linter contract in
``pyproject.toml`` enforces it).

Why this package loads its names lazily: importing :mod:`cloudtaser.plan.rules` runs this file
first, and ``rules`` must stay standard-library only (:mod:`cloudtaser.contract` imports it;
``tests/unit/test_contract.py`` checks that msgspec and ``plan.model`` stay unloaded). So the
names below come from their owning module on first use, never at import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtaser.plan.isolation import check_isolation as check_isolation
    from cloudtaser.plan.isolation import isolation_problems as isolation_problems
    from cloudtaser.plan.isolation import rule_problem as rule_problem
    from cloudtaser.plan.model import API_VERSION as API_VERSION
    from cloudtaser.plan.model import KIND as KIND
    from cloudtaser.plan.model import EnvUse as EnvUse
    from cloudtaser.plan.model import FinalizedRef as FinalizedRef
    from cloudtaser.plan.model import MigrationPlan as MigrationPlan
    from cloudtaser.plan.model import PlanMetadata as PlanMetadata
    from cloudtaser.plan.model import SecretFile as SecretFile
    from cloudtaser.plan.model import SecretRef as SecretRef
    from cloudtaser.plan.model import StatusChange as StatusChange
    from cloudtaser.plan.model import Tenant as Tenant
    from cloudtaser.plan.model import Workload as Workload
    from cloudtaser.plan.model import WorkloadKind as WorkloadKind
    from cloudtaser.plan.model import WorkloadStatus as WorkloadStatus
    from cloudtaser.plan.model import json_schema as json_schema
    from cloudtaser.plan.model import split_vault_path as split_vault_path
    from cloudtaser.plan.rules import DEFAULT_AUTH_MOUNT as DEFAULT_AUTH_MOUNT
    from cloudtaser.plan.rules import template_problem as template_problem
    from cloudtaser.plan.yamlio import MAX_PLAN_BYTES as MAX_PLAN_BYTES
    from cloudtaser.plan.yamlio import dump as dump
    from cloudtaser.plan.yamlio import dumps as dumps
    from cloudtaser.plan.yamlio import load as load
    from cloudtaser.plan.yamlio import loads as loads
    from cloudtaser.plan.yamlio import save as save

#: Each exported name and the module that owns it.
_OWNER = {
    **dict.fromkeys(("check_isolation", "isolation_problems", "rule_problem"), "isolation"),
    **dict.fromkeys(
        (
            "API_VERSION",
            "KIND",
            "EnvUse",
            "FinalizedRef",
            "MigrationPlan",
            "PlanMetadata",
            "SecretFile",
            "SecretRef",
            "StatusChange",
            "Tenant",
            "Workload",
            "WorkloadKind",
            "WorkloadStatus",
            "json_schema",
            "split_vault_path",
        ),
        "model",
    ),
    **dict.fromkeys(("DEFAULT_AUTH_MOUNT", "template_problem"), "rules"),
    **dict.fromkeys(("MAX_PLAN_BYTES", "dump", "dumps", "load", "loads", "save"), "yamlio"),
}
_SUBMODULES = frozenset(
    {
        "approval",
        "attest",
        "canonical",
        "diff",
        "isolation",
        "model",
        "rules",
        "signers",
        "sshsig",
        "store",
        "summary",
        "todo",
        "yamlio",
    }
)


def __getattr__(name: str) -> Any:
    """Load a name from its owning module on first use (see the module docstring)."""
    if name in _SUBMODULES:  # `from cloudtaser.plan import rules` must not load the model
        return importlib.import_module(f"{__name__}.{name}")
    owner = _OWNER.get(name)
    if owner is None:
        raise AttributeError(f"module 'cloudtaser.plan' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{owner}"), name)
    globals()[name] = value
    return value
