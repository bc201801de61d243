"""Names every step must agree on: vault policies, Kubernetes-auth roles, auth mounts.

Convention (documented in docs/plan-format.md): policy and role of a tenant are both named
``cloudtaser-<plan name>-<tenant name>``, lower-cased (OpenBao stores policy and role names
lower-cased). The plan name identifies the cluster, so two plans
from two clusters applied to one vault never overwrite each other's objects, even when they
share tenant names and vault paths. ``apply-plan`` creates them and ``protect`` writes the
role into ``cloudtaser.io/vault-role``.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "MAX_SEGMENT_CHARS",
    "PREFIX",
    "RESERVED_MOUNTS",
    "policy_name",
    "reserved_mount",
    "role_name",
    "safe_mount_path",
    "safe_segment",
    "usable_mount",
    "valid_role_name",
]

PREFIX: Final = "cloudtaser"

#: Mount names the vault reserves: never a KV engine or a cluster's Kubernetes auth method.
RESERVED_MOUNTS: Final = frozenset({"sys", "auth", "identity", "cubbyhole", "token"})
#: The longest path segment (mount or vault path) any command accepts.
MAX_SEGMENT_CHARS: Final = 128

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def policy_name(plan_name: str, tenant_name: str) -> str:
    """The ACL policy of one tenant of one plan (inputs are validated plan names)."""
    return f"{PREFIX}-{plan_name}-{tenant_name}".lower()


def role_name(plan_name: str, tenant_name: str) -> str:
    """The Kubernetes-auth role of one tenant of one plan."""
    return f"{PREFIX}-{plan_name}-{tenant_name}".lower()


def valid_role_name(name: str) -> bool:
    """True for a Kubernetes-auth role name the vault accepts (letters, digits, '.', '_', '-';
    at most 255 characters, starting with a letter or digit)."""
    return _ROLE.fullmatch(name) is not None


def safe_segment(segment: str) -> bool:
    """True for one safe segment of a vault path or mount: letters, digits, '.', '_', '-', not
    starting with '.' (so never '.' or '..'), not empty."""
    return segment not in {".", ".."} and _SEGMENT.fullmatch(segment) is not None


def safe_mount_path(mount: str) -> bool:
    """True for a non-empty mount path (``kubernetes``, ``k8s/eu-prod``) of safe segments."""
    return bool(mount) and all(safe_segment(s) for s in mount.split("/"))


def reserved_mount(mount: str) -> bool:
    """True when ``mount``'s first segment is a vault-reserved mount, in any case (the vault
    routes ``SYS/`` and ``Sys/`` like ``sys/``)."""
    return mount.split("/", maxsplit=1)[0].lower() in RESERVED_MOUNTS


def usable_mount(mount: str) -> bool:
    """The one rule for a KV or auth mount every command applies: safe segments (no ``.``,
    ``..``, ``...`` or ``.db``: a segment never starts with a dot), not reserved, bounded."""
    return len(mount) <= MAX_SEGMENT_CHARS and safe_mount_path(mount) and not reserved_mount(mount)
