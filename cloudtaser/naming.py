"""Names every step must agree on: vault policies, Kubernetes-auth roles, auth mounts.

Convention (documented in docs/plan-format.md): policy and role of a tenant are both named
``cloudtaser-<plan name>-<tenant name>``, lower-cased (OpenBao stores policy and role names
lower-cased). The plan name identifies the cluster, so two plans
from two clusters applied to one vault never overwrite each other's objects, even when they
share tenant names and vault paths. ``apply-plan`` creates them and ``protect`` writes the
role into ``cloudtaser.io/vault-role``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PREFIX", "policy_name", "role_name"]

PREFIX: Final = "cloudtaser"


def policy_name(plan_name: str, tenant_name: str) -> str:
    """The ACL policy of one tenant of one plan (inputs are validated plan names)."""
    return f"{PREFIX}-{plan_name}-{tenant_name}".lower()


def role_name(plan_name: str, tenant_name: str) -> str:
    """The Kubernetes-auth role of one tenant of one plan."""
    return f"{PREFIX}-{plan_name}-{tenant_name}".lower()
