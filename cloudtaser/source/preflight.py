"""Vault pre-flight shared by apply-plan and verify-plan: path re-validation, capabilities,
KV v2 mounts. Checked before any write (apply-plan) or read of a secret (verify-plan)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from cloudtaser.errors import OperationError, PlanError, VaultAuthError
from cloudtaser.plan import rules
from cloudtaser.plan.model import split_vault_path
from cloudtaser.plan.rules import KUBERNETES_AUTH_TYPE

if TYPE_CHECKING:
    from cloudtaser.source.openbao import OpenBaoClient

__all__ = [
    "capability_error",
    "check_kv_mounts",
    "has_capability",
    "is_auth_type",
    "is_kubernetes_auth",
    "missing_capabilities",
    "missing_kv_mount_error",
    "validate_kv_path",
]


def _reject(message: str, location: str | None = None) -> PlanError:
    return PlanError(message, source="<plan>", location=location)


def validate_kv_path(
    vault_path: str, *, allowed_mount: str | None = None, location: str | None = None
) -> tuple[str, str]:
    """Re-check a ``<mount>/data/<path>`` KV v2 path and return ``(mount, rest)``.

    Rejects anything that could widen a policy or escape into another part of the API:
    globs (``*``, ``+``), ``..`` and ``.`` segments, quotes, blanks, control characters,
    templates, ``sys/`` and the other reserved mounts, a mount other than ``allowed_mount``,
    empty segments and over-long values.
    """
    if not isinstance(vault_path, str):
        raise _reject("empty vault path", location)
    problem = rules.vault_path_problem(vault_path, allowed_mount=allowed_mount)
    if problem is not None:
        raise _reject(problem, location)
    mount, rest = split_vault_path(vault_path)
    return mount, rest


def has_capability(caps: frozenset[str], needed: str) -> bool:
    """True when ``caps`` (one path's capabilities) grant ``needed``."""
    return "root" in caps or (needed in caps and "deny" not in caps)


def missing_capabilities(
    needs: Iterable[tuple[str, str]], caps: Mapping[str, frozenset[str]]
) -> list[tuple[str, str]]:
    return [
        (cap, path) for cap, path in needs if not has_capability(caps.get(path, frozenset()), cap)
    ]


def capability_error(missing: Sequence[tuple[str, str]]) -> VaultAuthError:
    shown = "; ".join(f"'{cap}' on {path}" for cap, path in missing[:5])
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    cap, path = missing[0]
    return VaultAuthError(
        f"the token lacks capability {shown}{more}. Nothing was written. Grant these in the "
        "operator's policy (docs/source-commands.md shows a complete one) and run again",
        status=403,
        path=path,
        errors=[f"missing capability {cap!r} on {path}"],
        method="POST",
    )


def check_kv_mounts(client: OpenBaoClient, mounts: Iterable[str]) -> dict[str, bool]:
    """Pre-flight: each mount exists and is KV v2. Returns mount → exists.

    A mount that is missing (or that the token cannot see at all) maps to ``False``; a mount
    that exists but is not KV v2, or whose real mount point differs from the plan's split of
    the path, raises :class:`OperationError`.
    """
    out: dict[str, bool] = {}
    for mount in sorted(set(mounts)):
        info = client.mount_info(mount)
        if info is None:
            out[mount] = False
            continue
        if info.path != mount:
            raise OperationError(
                f"the plan's vault paths put the KV mount at {mount!r}, but the vault's mount "
                f"there is {info.path!r}; fix the plan's vaultPath values "
                f"(<mount>/data/<path>)"
            )
        if not info.is_kv2:
            version = f" version {info.version}" if info.version else ""
            raise OperationError(
                f"mount {mount!r} is a {info.type or 'unknown'}{version} engine, not KV version 2; "
                f"cloudtaser needs KV v2 (upgrade with 'bao kv enable-versioning {mount}', which "
                "changes the API paths of every existing policy)"
            )
        out[mount] = True
    return out


def is_kubernetes_auth(mount_type: str) -> bool:
    """True when an auth mount's ``type`` (as the server reports it) is Kubernetes auth.

    The one comparison apply-plan and connect make: case and a plugin version suffix
    (``kubernetes:v0.20``) do not matter.
    """
    return is_auth_type(mount_type, KUBERNETES_AUTH_TYPE)


def is_auth_type(mount_type: str, expected: str) -> bool:
    """True when an auth mount's ``type`` is ``expected`` (``kubernetes``, ``jwt``), case and
    a plugin version suffix aside."""
    return mount_type.split(":", 1)[0].strip().lower() == expected


def missing_kv_mount_error(mount: str) -> OperationError:
    return OperationError(
        f"KV mount {mount!r} does not exist, or the token has no capability anywhere under it "
        f"(OpenBao does not tell the two apart). Create it with 'bao secrets enable "
        f"-path={mount} kv-v2', or grant the operator 'read' on {mount}/subkeys/* "
        "(verify-plan needs it anyway)"
    )
