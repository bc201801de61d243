"""The pod-template annotations ``protect`` writes for one workload of a plan.

The keys and value formats are the runtime contract, defined once in :mod:`cloudtaser.contract`
(stdlib only, shared with the Go runtime through ``spec/contract/``); this module builds them
from a plan and compares them with what a cluster holds.

``cloudtaser.io/accept-dangerous-env`` carries the workload's reviewed ``acceptedDangerousEnv``
(sorted) and is written only when that list is not empty; a stale one is removed by protect's
patch like any managed key the intent lacks.

Secrets of a workload with no field mapping (nothing to inject) are left out of both
``secret-paths`` and ``env-map`` so the two stay aligned group by group.

Cluster defaults: when the installed injector carries defaults
(:class:`~cloudtaser.contract.InjectorDefaults`), a cluster-specific annotation
(``vault-address``, ``vault-auth-path``, ``vault-auth-method``, ``vault-namespace``) is written
only when the value the pods need differs from what the injector would apply without it
(:func:`cluster_annotations`); what is left to the injector is recorded per workload
(``injectorDefaults``). Without defaults every needed value is written, as before: the
address always, the auth path when not ``auth/kubernetes``, the method when ``jwt``, the
namespace when given.

The restart marker is deliberately *not* part of the comparison that decides whether a
workload already carries the intended annotations (:func:`matches_intended`): its value is a
time, and a resumed run must recognise its own earlier patch and roll out nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from cloudtaser.contract import (
    ACCEPT_DANGEROUS_ENV,
    AUTH_METHOD,
    AUTH_METHOD_KUBERNETES,
    AUTH_PATH,
    ENV_MAP,
    INJECT,
    INJECT_LABEL,
    MANAGED_KEYS,
    PREFIX,
    RESTARTED_AT,
    SECRET_PATHS,
    VAULT_ADDRESS,
    VAULT_NAMESPACE,
    VAULT_ROLE,
    InjectorDefaults,
    check_dangerous_targets,
    format_accept_dangerous_env,
    format_auth_path,
    format_env_map,
    format_secret_paths,
    parse_env_map,
    parse_mapping,
    parse_secret_paths,
    parse_vault_address,
    parse_vault_namespace,
    restart_marker,
)
from cloudtaser.contract import ContractError as AnnotationError
from cloudtaser.plan.rules import role_name, valid_role_name

if TYPE_CHECKING:
    from cloudtaser.plan import MigrationPlan, Tenant, Workload

__all__ = [
    "ACCEPT_DANGEROUS_ENV",
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
    "cluster_annotations",
    "format_env_map",
    "format_secret_paths",
    "matches_intended",
    "parse_env_map",
    "parse_mapping",
    "parse_secret_paths",
    "restart_marker",
]


#: The JSON name (``injectorDefaults``, :meth:`InjectorDefaults.to_json`) of each
#: cluster-specific annotation.
_DEFAULT_NAMES: Final = {
    VAULT_ADDRESS: "address",
    AUTH_PATH: "authMount",
    AUTH_METHOD: "authMethod",
    VAULT_NAMESPACE: "namespace",
}


def cluster_annotations(
    plan: MigrationPlan,
    vault_address: str | None,
    *,
    defaults: InjectorDefaults | None = None,
    vault_namespace: str | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The cluster-specific annotations protect writes, and the names (``address``,
    ``authMount``, ``authMethod``, ``namespace``) it leaves to the injector's ``defaults``.

    What the pods need: ``vault_address`` (``None``: the injector's default address), the
    plan's auth mount and method, ``vault_namespace`` (``None``: the injector's default, if
    any). An annotation is written exactly when that differs from what the injector applies
    to a pod without it. Pure; ``vault_address`` and ``vault_namespace`` are validated here
    by the contract's rules (``ConfigError``-worthy :class:`AnnotationError` otherwise).
    """
    defaults = defaults or InjectorDefaults()
    if vault_address is None and defaults.address is None:
        raise AnnotationError(
            "missing-addr",
            "protect needs the vault address the pods will use (--vault-address): the "
            "installed injector has no default one",
        )
    if vault_address is not None and (
        any(c.isspace() or ord(c) < 32 or c in ",;\"'" for c in vault_address)
        or len(vault_address) > 2048
    ):
        raise AnnotationError("bad-address", "the vault address is not a plain http(s) URL")
    address = parse_vault_address("--vault-address", vault_address) if vault_address else None
    wanted: dict[str, str | None] = {
        VAULT_ADDRESS: address or defaults.address,
        AUTH_PATH: plan.auth_mount,
        AUTH_METHOD: plan.metadata.auth_method or AUTH_METHOD_KUBERNETES,
        VAULT_NAMESPACE: parse_vault_namespace("--vault-namespace", vault_namespace)
        if vault_namespace
        else defaults.namespace,
    }
    applied = defaults.effective()
    written: dict[str, str] = {}
    left: list[str] = []
    for key, value in wanted.items():
        if value is None or value == applied[key]:
            if value is not None and defaults.to_json().get(_DEFAULT_NAMES[key]) is not None:
                left.append(_DEFAULT_NAMES[key])
            continue
        written[key] = format_auth_path(value) if key == AUTH_PATH else value
    return written, sorted(left)


def build_annotations(
    plan: MigrationPlan,
    tenant: Tenant,
    workload: Workload,
    vault_address: str | None,
    *,
    defaults: InjectorDefaults | None = None,
    vault_namespace: str | None = None,
) -> dict[str, str]:
    """The annotations protect writes for ``workload`` (without the restart marker).

    Pure. The cluster-specific ones are :func:`cluster_annotations`' (``vault_address``
    validated by the contract's address rule and checked again for separators and control
    characters). Raises :class:`AnnotationError` when the workload has nothing to inject or
    a value would break the format.
    """
    cluster, _left = cluster_annotations(
        plan, vault_address, defaults=defaults, vault_namespace=vault_namespace
    )
    mapped = [s for s in workload.secrets if s.fields]
    if not mapped:
        raise AnnotationError(
            "nothing-to-inject",
            f"{workload.kind} {tenant.namespace}/{workload.name} maps no secret field to an "
            "environment variable: there is nothing to inject",
        )
    role = role_name(plan.metadata.name, tenant.name)
    if not valid_role_name(role):
        raise AnnotationError("bad-role", f"role name {role!r} is not valid")
    annotations = {
        INJECT: "true",
        **{k: v for k, v in cluster.items() if k == VAULT_ADDRESS},
        VAULT_ROLE: role,
        SECRET_PATHS: format_secret_paths([s.vault_path for s in mapped]),
        ENV_MAP: format_env_map([s.fields for s in mapped]),
        **{k: v for k, v in cluster.items() if k != VAULT_ADDRESS},
    }
    # the plan loader refused this already; checked again on what is written (defence in depth)
    accepted = frozenset(workload.accepted_dangerous_env)
    check_dangerous_targets([(s.vault_path, s.fields) for s in mapped], accepted)
    if accepted:
        annotations[ACCEPT_DANGEROUS_ENV] = format_accept_dangerous_env(sorted(accepted))
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
