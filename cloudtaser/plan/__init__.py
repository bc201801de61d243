"""The MigrationPlan: the rule book, the model with its YAML I/O, and the plan store.

=====================  ==========================================================================
module                 what it holds
=====================  ==========================================================================
``plan.rules``         every name pattern, length limit, reserved mount and path rule (stdlib)
``plan.model``         the msgspec Structs, strict ``load``/``loads``, deterministic ``dumps``,
                       atomic ``save``, ``json_schema``
``plan.store``         :class:`PlanStore`: lock + load + record + atomic save, for every command
                       that writes the plan
``plan.summary``       the counts ``plan show`` / ``plan status`` report
=====================  ==========================================================================

The plan core imports neither cluster nor vault client (an import-linter contract in
``pyproject.toml`` enforces it). Importing :mod:`cloudtaser.plan.rules` alone stays
standard-library only: the model (msgspec, yaml-rs) is loaded on first use of a name below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtaser.plan.model import API_VERSION as API_VERSION
    from cloudtaser.plan.model import KIND as KIND
    from cloudtaser.plan.model import MAX_PLAN_BYTES as MAX_PLAN_BYTES
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
    from cloudtaser.plan.model import _no_cycle_collection as _no_cycle_collection
    from cloudtaser.plan.model import dump as dump
    from cloudtaser.plan.model import dumps as dumps
    from cloudtaser.plan.model import json_schema as json_schema
    from cloudtaser.plan.model import load as load
    from cloudtaser.plan.model import loads as loads
    from cloudtaser.plan.model import rule_problem as rule_problem
    from cloudtaser.plan.model import save as save
    from cloudtaser.plan.model import split_vault_path as split_vault_path
    from cloudtaser.plan.rules import DEFAULT_AUTH_MOUNT as DEFAULT_AUTH_MOUNT

_FROM_RULES = frozenset({"DEFAULT_AUTH_MOUNT"})
_SUBMODULES = frozenset(
    {
        "approval",
        "attest",
        "canonical",
        "diff",
        "model",
        "rules",
        "signers",
        "sshsig",
        "store",
        "summary",
    }
)


def __getattr__(name: str) -> Any:
    """Load the model lazily, so ``cloudtaser.plan.rules`` alone needs no msgspec."""
    if name.startswith("__"):
        raise AttributeError(name)
    if name in _SUBMODULES:  # `from cloudtaser.plan import rules` must not load the model
        return importlib.import_module(f"{__name__}.{name}")
    module = importlib.import_module(
        "cloudtaser.plan.rules" if name in _FROM_RULES else "cloudtaser.plan.model"
    )
    try:
        value = getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'cloudtaser.plan' has no attribute {name!r}") from None
    globals()[name] = value
    return value
