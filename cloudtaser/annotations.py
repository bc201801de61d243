"""The pod-template annotations ``protect`` writes: wire strings, builder, parsers.

These annotations are the contract between ``cloudtaser target protect`` and the runtime
(webhook + wrapper). Every key and every value format is defined here, once:

=================================  ==============================================================
key                                value
=================================  ==============================================================
``cloudtaser.io/inject``           ``"true"`` (also written as a pod-template *label*, because the
                                   webhook's default ``objectSelector`` matches labels)
``cloudtaser.io/vault-address``    the vault URL the pods reach (``https://host:8200``)
``cloudtaser.io/vault-role``       the tenant's Kubernetes-auth role (:func:`naming.role_name`)
``cloudtaser.io/secret-paths``     KV v2 API paths, plan order, joined by ``,``
``cloudtaser.io/env-map``          ``field=ENV`` pairs joined by ``,``; one group per secret path,
                                   groups joined by ``;`` (same order as ``secret-paths``)
``cloudtaser.io/vault-auth-path``  ``auth/<mount>``; written only when the plan's auth mount is
                                   not the default ``kubernetes``
``cloudtaser.io/restartedAt``      restart marker: RFC 3339 UTC time of the protect run that
                                   patched the workload (our own key, so GitOps tools can ignore it)
=================================  ==============================================================

Secrets of a workload with no field mapping (nothing to inject) are left out of both
``secret-paths`` and ``env-map`` so the two stay aligned group by group.

The restart marker is deliberately *not* part of the comparison that decides whether a
workload already carries the intended annotations (:func:`matches_intended`): its value is a
time, and a resumed run must recognise its own earlier patch and roll out nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from cloudtaser.naming import role_name, usable_mount, valid_role_name
from cloudtaser.plan import DEFAULT_AUTH_MOUNT, ENV_VAR, FIELD_NAME, VAULT_PATH

if TYPE_CHECKING:
    from cloudtaser.plan import MigrationPlan, Tenant, Workload

__all__ = [
    "AUTH_PATH",
    "ENV_MAP",
    "INJECT",
    "INJECT_LABEL",
    "MANAGED_KEYS",
    "PREFIX",
    "RESTARTED_AT",
    "SECRET_PATHS",
    "VAULT_ADDRESS",
    "VAULT_ROLE",
    "AnnotationError",
    "build_annotations",
    "format_env_map",
    "format_secret_paths",
    "matches_intended",
    "parse_env_map",
    "parse_mapping",
    "parse_secret_paths",
    "restart_marker",
]

PREFIX: Final = "cloudtaser.io/"
INJECT: Final = "cloudtaser.io/inject"
#: The label twin of :data:`INJECT` (same key, same value) for label-based webhook selectors.
INJECT_LABEL: Final = "cloudtaser.io/inject"
VAULT_ADDRESS: Final = "cloudtaser.io/vault-address"
VAULT_ROLE: Final = "cloudtaser.io/vault-role"
SECRET_PATHS: Final = "cloudtaser.io/secret-paths"  # noqa: S105 - a key name
ENV_MAP: Final = "cloudtaser.io/env-map"
AUTH_PATH: Final = "cloudtaser.io/vault-auth-path"
RESTARTED_AT: Final = "cloudtaser.io/restartedAt"

#: Every annotation key protect may write; exactly these are removed by unprotect.
MANAGED_KEYS: Final = (
    INJECT,
    VAULT_ADDRESS,
    VAULT_ROLE,
    SECRET_PATHS,
    ENV_MAP,
    AUTH_PATH,
    RESTARTED_AT,
)

PATH_SEPARATOR: Final = ","
GROUP_SEPARATOR: Final = ";"
PAIR_SEPARATOR: Final = ","
KEY_VALUE_SEPARATOR: Final = "="

# The plan patterns end in ``$``, which also matches before a trailing newline: always use
# ``fullmatch`` so no line break reaches an annotation value.
_VAULT_PATH_RE = re.compile(VAULT_PATH)
_FIELD_RE = re.compile(FIELD_NAME)
_ENV_RE = re.compile(ENV_VAR)


class AnnotationError(ValueError):
    """An annotation value (built or parsed) violates its format."""


def _check_path(path: str) -> str:
    if not _VAULT_PATH_RE.fullmatch(path):  # the pattern refuses '.' and '..' segments
        raise AnnotationError(f"{path!r} is not a safe KV v2 path (<mount>/data/<path>)")
    return path


def _check_field(field: str) -> str:
    if not _FIELD_RE.fullmatch(field):  # the pattern refuses '.' and '..'
        raise AnnotationError(f"{field!r} is not a valid vault field name")
    return field


def _check_env(env: str) -> str:
    if not _ENV_RE.fullmatch(env):
        raise AnnotationError(f"{env!r} is not a valid environment variable name")
    return env


def format_secret_paths(paths: Sequence[str]) -> str:
    """``secret/data/a,secret/data/b`` (each path validated)."""
    return PATH_SEPARATOR.join(_check_path(p) for p in paths)


def format_env_map(groups: Sequence[Mapping[str, str]]) -> str:
    """``f1=ENV1,f2=ENV2;f3=ENV3`` (names validated; insertion order kept)."""
    parts = []
    for group in groups:
        if not group:
            raise AnnotationError("an env-map group must map at least one field")
        parts.append(
            PAIR_SEPARATOR.join(
                f"{_check_field(field)}{KEY_VALUE_SEPARATOR}{_check_env(env)}"
                for field, env in group.items()
            )
        )
    return GROUP_SEPARATOR.join(parts)


def parse_secret_paths(value: str) -> list[str]:
    """Inverse of :func:`format_secret_paths`; blanks around paths are tolerated."""
    if not value.strip():
        return []
    return [_check_path(part.strip()) for part in value.split(PATH_SEPARATOR)]


def parse_env_map(value: str) -> list[dict[str, str]]:
    """Inverse of :func:`format_env_map`: one ``{field: ENV}`` dict per group.

    Blanks around tokens are tolerated; an empty pair, a pair without ``=``, an invalid name,
    a field given twice in a group or an environment variable fed twice are errors.
    """
    if not value.strip():
        return []
    groups: list[dict[str, str]] = []
    seen_env: set[str] = set()
    for index, raw_group in enumerate(value.split(GROUP_SEPARATOR)):
        group: dict[str, str] = {}
        for raw_pair in raw_group.split(PAIR_SEPARATOR):
            pair = raw_pair.strip()
            field, sep, env = pair.partition(KEY_VALUE_SEPARATOR)
            if not sep:
                raise AnnotationError(
                    f"env-map group {index + 1}: {pair!r} is not a field=ENV_VAR pair"
                )
            field, env = _check_field(field.strip()), _check_env(env.strip())
            if field in group:
                raise AnnotationError(f"env-map group {index + 1}: field {field!r} given twice")
            if env in seen_env:
                raise AnnotationError(f"env-map: environment variable {env!r} is fed twice")
            seen_env.add(env)
            group[field] = env
        groups.append(group)
    return groups


def parse_mapping(secret_paths: str, env_map: str) -> list[tuple[str, dict[str, str]]]:
    """Pair the ``secret-paths`` and ``env-map`` annotations: ``[(path, {field: ENV})]``."""
    paths = parse_secret_paths(secret_paths)
    groups = parse_env_map(env_map)
    if len(paths) != len(groups):
        raise AnnotationError(
            f"secret-paths names {len(paths)} path(s) but env-map has {len(groups)} group(s); "
            "they must match one to one"
        )
    return list(zip(paths, groups, strict=True))


def restart_marker(at: datetime | None = None) -> str:
    """The restart marker value: RFC 3339 UTC, seconds precision (``2026-01-02T03:04:05Z``)."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_annotations(
    plan: MigrationPlan, tenant: Tenant, workload: Workload, vault_address: str
) -> dict[str, str]:
    """The annotations protect writes for ``workload`` (without the restart marker).

    Pure. ``vault_address`` must already be validated
    (:func:`cloudtaser.config.validate_vault_address`); it is checked again for separators and
    control characters. Raises :class:`AnnotationError` when the workload has nothing to
    inject or a value would break the format.
    """
    if (
        not vault_address.startswith(("https://", "http://"))
        or any(c.isspace() or ord(c) < 32 or c in ",;\"'" for c in vault_address)
        or len(vault_address) > 2048
    ):
        raise AnnotationError("the vault address is not a plain http(s) URL")
    mapped = [s for s in workload.secrets if s.fields]
    if not mapped:
        raise AnnotationError(
            f"{workload.kind} {tenant.namespace}/{workload.name} maps no secret field to an "
            "environment variable: there is nothing to inject"
        )
    role = role_name(plan.metadata.name, tenant.name)
    if not valid_role_name(role):
        raise AnnotationError(f"role name {role!r} is not valid")
    annotations = {
        INJECT: "true",
        VAULT_ADDRESS: vault_address,
        VAULT_ROLE: role,
        SECRET_PATHS: format_secret_paths([s.vault_path for s in mapped]),
        ENV_MAP: format_env_map([s.fields for s in mapped]),
    }
    mount = plan.auth_mount
    if mount != DEFAULT_AUTH_MOUNT:
        if not usable_mount(mount):  # the rule book: never auth/sys, auth/../sys, auth/TOKEN
            raise AnnotationError(f"auth mount {mount!r} is not valid")
        annotations[AUTH_PATH] = f"auth/{mount}"
    return annotations


def matches_intended(live: Mapping[str, str] | None, intended: Mapping[str, str]) -> bool:
    """True when ``live`` pod-template annotations already carry exactly ``intended``.

    Compared over every key protect manages except the restart marker: each intended key with
    the same value, and no other managed key (e.g. a stale ``vault-auth-path``).
    """
    live = live or {}
    for key in MANAGED_KEYS:
        if key == RESTARTED_AT:
            continue
        if live.get(key) != intended.get(key):
            return False
    return True
