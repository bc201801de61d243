"""The vault objects a plan asks for: one ACL policy and one auth role per tenant.

For every tenant with at least one non-skipped workload that has secrets, one ACL policy and
one role, both named ``cloudtaser-<plan>-<tenant>`` (:mod:`cloudtaser.plan.rules`, lower-cased the
way OpenBao stores them):

* the policy grants ``read`` on exactly the tenant's KV v2 ``data/`` paths (the runtime wrapper
  reads ``<mount>/data/<path>`` and nothing else), headed by a ``managed-by`` comment that marks
  it as ours;
* the role on ``auth/<plan auth mount>/role/<name>`` binds the tenant's namespace and the
  ServiceAccounts of its non-skipped workloads, with ``token_policies = [policy]``, a token TTL
  and an optional audience. With the plan's ``metadata.authMethod: jwt`` it is a
  ``role_type=jwt`` role that binds the same identity through the token's claims
  (:func:`jwt_role_binding`) and requires the audience.

Pure: no I/O. Everything taken from the plan is validated again right before it is rendered
(defence in depth: a plan built in code skips the loader's checks), so a hostile value is
rejected before :mod:`cloudtaser.source.provision` sends any request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cloudtaser import contract
from cloudtaser.errors import PlanError
from cloudtaser.plan import rules
from cloudtaser.plan.isolation import check_isolation
from cloudtaser.plan.model import MigrationPlan, WorkloadStatus
from cloudtaser.source.preflight import validate_kv_path

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MANAGED_BY",
    "TenantGrant",
    "build_grants",
    "claims_normalised",
    "jwt_role_binding",
    "owner_line",
    "parse_duration",
    "render_policy",
]

DEFAULT_TOKEN_TTL: Final = 3600
#: The first words of every policy cloudtaser writes: marks it as ours.
MANAGED_BY: Final = "# managed-by: cloudtaser"

# Names and paths are checked by the rule book (cloudtaser.plan.rules); these patterns are
# apply-plan's own: what may be rendered into HCL and sent as a role field.
_OBJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HCL_SAFE = re.compile(r"^[A-Za-z0-9._/:=@+-]*$")


@dataclass(frozen=True)
class TenantGrant:
    """The desired vault objects of one tenant, built from validated plan values only."""

    tenant: str
    namespace: str
    policy: str
    role: str
    auth_mount: str
    paths: tuple[str, ...]
    service_accounts: tuple[str, ...]
    policy_hcl: str
    token_ttl: int
    audience: str | None
    #: ``kubernetes`` or ``jwt`` (the plan's ``metadata.authMethod``).
    auth_method: str = rules.KUBERNETES_AUTH_TYPE

    def role_fields(self) -> dict[str, Any]:
        """The role body apply-plan writes (only the fields cloudtaser manages)."""
        if self.auth_method == rules.JWT_AUTH_TYPE:
            if not self.audience:  # build_grants refuses it first
                raise PlanError("a jwt role needs an audience", source="--audience")
            return jwt_role_binding(self.namespace, self.service_accounts, self.audience) | {
                "token_policies": [self.policy],
                "token_ttl": self.token_ttl,
            }
        fields: dict[str, Any] = {
            "bound_service_account_names": list(self.service_accounts),
            "bound_service_account_namespaces": [self.namespace],
            "token_policies": [self.policy],
            "token_ttl": self.token_ttl,
        }
        if self.audience:
            fields["audience"] = self.audience
        return fields


#: The JSON pointers of a projected ServiceAccount token's claims a jwt role binds.
NAMESPACE_CLAIM: Final = "/kubernetes.io/namespace"
SERVICE_ACCOUNT_CLAIM: Final = "/kubernetes.io/serviceaccount/name"


def jwt_role_binding(
    namespace: str, service_accounts: Sequence[str], audience: str
) -> dict[str, Any]:
    """The fields of a ``role_type=jwt`` role that accept exactly the ServiceAccount tokens of
    ``service_accounts`` in ``namespace`` with ``audience`` (apply-plan's tenant roles and
    connect's self-test role): ``user_claim: sub`` (``system:serviceaccount:<ns>:<sa>``), the
    audience, and string-matched claims on the namespace and the ServiceAccount name."""
    return {
        "role_type": rules.JWT_AUTH_TYPE,
        "user_claim": "sub",
        "bound_audiences": [audience],
        "bound_claims_type": "string",
        "bound_claims": {
            NAMESPACE_CLAIM: namespace,
            SERVICE_ACCOUNT_CLAIM: sorted(service_accounts),
        },
    }


def claims_normalised(value: Any) -> dict[str, Any]:
    """``bound_claims`` as compared (a role read back vs the desired one): each pointer's value
    a string or a sorted list of strings; anything else is ``{}``."""
    if not isinstance(value, dict):
        return {}
    return {
        str(k): sorted(str(v) for v in item) if isinstance(item, list) else str(item)
        for k, item in sorted(value.items())
    }


def _reject(message: str, location: str | None = None) -> PlanError:
    return PlanError(message, source="<plan>", location=location)


def _validate_object_name(name: str, what: str) -> str:
    if len(name) > rules.MAX_OBJECT_NAME or not _OBJECT_NAME.fullmatch(name):
        raise _reject(
            f"{what} name {name[:80]!r} is not safe: lower-case letters, digits, '.', '_', '-', "
            f"at most {rules.MAX_OBJECT_NAME} characters"
        )
    return name


def _validate_audience(audience: str | None) -> str | None:
    if audience is None or audience == "":
        return None
    if not rules.valid_audience(audience):  # the one rule (plan/rules.py)
        raise PlanError(
            f"audience {audience[:80]!r} is not a safe token audience (no blanks or quotes, "
            f"at most {rules.MAX_AUDIENCE_CHARS} characters)",
            source="--audience",
        )
    return audience


def parse_duration(text: str) -> int:
    """``3600``, ``1h``, ``90m``, ``1h30m``, ``45s`` → whole seconds (at least 1, at most 1
    year): a token TTL. The grammar is :func:`cloudtaser.contract.parse_duration`."""
    try:
        value = contract.parse_duration("the duration", text)
    except contract.ContractError as exc:
        raise ValueError(str(exc)) from None
    seconds = int(value)
    if seconds != value:
        raise ValueError(f"{text!r} is not a whole number of seconds")
    if not 1 <= seconds <= 366 * 24 * 3600:
        raise ValueError(f"{text!r} is out of range (1 second to 1 year)")
    return seconds


def _hcl_string(value: str) -> str:
    """Quote a validated value as an HCL string literal.

    Only a conservative character set passes (no quote, backslash, ``$``/``%`` template
    starters, blanks or control characters), so no escaping is ever needed; anything else is
    a bug upstream and is refused rather than escaped.
    """
    return f'"{_comment_value(value)}"'


def _comment_value(value: str) -> str:
    """``value`` unchanged when it is in the conservative HCL-safe set; else PlanError."""
    if not _HCL_SAFE.fullmatch(value):
        raise PlanError(f"refusing to render {value[:80]!r} into a policy", source="<plan>")
    return value


def render_policy(
    *, plan_name: str, tenant: str, namespace: str, role_path: str, paths: Sequence[str]
) -> str:
    """The HCL of a tenant's policy: a managed-by header and one ``read`` block per path."""
    if not paths:
        raise PlanError(f"tenant {tenant!r} has no vault paths to grant", source="<plan>")
    lines = [
        owner_line(_comment_value(plan_name), _comment_value(tenant)),
        "# Written by 'cloudtaser source apply-plan'; hand edits are overwritten on the next run.",
        f"# namespace={_comment_value(namespace)}; role={_comment_value(role_path)}",
    ]
    for path in paths:
        lines += [f"path {_hcl_string(path)} {{", '  capabilities = ["read"]', "}"]
    return "\n".join(lines) + "\n"


def owner_line(plan_name: str, tenant: str) -> str:
    """The first line of a policy cloudtaser wrote for ``tenant`` of ``plan_name``."""
    return f"{MANAGED_BY}; plan={plan_name}; tenant={tenant}"


def build_grants(
    plan: MigrationPlan,
    *,
    token_ttl: int = DEFAULT_TOKEN_TTL,
    audience: str | None = None,
) -> tuple[list[TenantGrant], list[tuple[str, str]]]:
    """Desired objects per tenant, and the tenants that get none (with the reason).

    Pure: no I/O. Raises :class:`PlanError` for any unsafe value, so nothing hostile reaches a
    request.
    """
    if not 1 <= token_ttl <= 366 * 24 * 3600:
        raise PlanError(f"token TTL {token_ttl}s is out of range", source="--token-ttl")
    audience = _validate_audience(audience)
    auth_method = plan.metadata.auth_method or rules.KUBERNETES_AUTH_TYPE
    if auth_method == rules.JWT_AUTH_TYPE and audience is None:
        raise PlanError(
            "the plan's metadata.authMethod is jwt: pass --audience, the audience the injector "
            "projects into the pods' tokens (the vault's jwt method refuses a token whose "
            "audience no role names)",
            source="--audience",
        )
    plan_name = plan.metadata.name
    if not rules.is_plan_name(plan_name):
        raise _reject(f"plan name {plan_name[:80]!r} is not safe", "$.metadata.name")
    # the recorded value itself: an empty one is refused, not silently the default
    recorded = plan.metadata.auth_mount
    auth_mount = plan.auth_mount if recorded is None else recorded
    problem = rules.auth_mount_problem(auth_mount)
    if problem is not None:
        raise _reject(problem, "$.metadata.authMount")
    kv_mount = plan.metadata.kv_mount
    problem = None if kv_mount is None else rules.kv_mount_problem(kv_mount)
    if problem is not None:
        raise _reject(problem, "$.metadata.kvMount")
    grants: list[TenantGrant] = []
    skipped: list[tuple[str, str]] = []
    for t_index, tenant in enumerate(plan.tenants):
        where = f"$.tenants[{t_index}]"
        if not rules.is_dns_label(tenant.name):
            raise _reject(f"tenant name {tenant.name[:80]!r} is not a DNS label", f"{where}.name")
        if not rules.is_dns_label(tenant.namespace):
            raise _reject(
                f"namespace {tenant.namespace[:80]!r} is not a DNS label", f"{where}.namespace"
            )
        paths: set[str] = set()
        accounts: set[str] = set()
        active = 0
        for w_index, workload in enumerate(tenant.workloads):
            if workload.effective_status is WorkloadStatus.SKIPPED:
                continue
            active += 1
            account = workload.service_account or "default"
            if not rules.is_dns_subdomain(account):
                raise _reject(
                    f"ServiceAccount {account[:80]!r} is not a DNS subdomain",
                    f"{where}.workloads[{w_index}].serviceAccount",
                )
            reads = workload.vault_reads()  # env fields and migrated Secret files
            for read in reads:
                loc = f"{where}.workloads[{w_index}].{read.location}.vaultPath"
                validate_kv_path(read.vault_path, allowed_mount=kv_mount, location=loc)
                paths.add(read.vault_path)
            if reads:
                accounts.add(account)
        if not active:
            skipped.append((tenant.name, "every workload is skipped"))
            continue
        if not paths:
            skipped.append((tenant.name, "no workload consumes a secret"))
            continue
        policy = _validate_object_name(rules.policy_name(plan_name, tenant.name), "policy")
        role = _validate_object_name(rules.role_name(plan_name, tenant.name), "role")
        ordered = tuple(sorted(paths))
        role_path = f"auth/{auth_mount}/role/{role}"
        hcl = render_policy(
            plan_name=plan_name,
            tenant=tenant.name,
            namespace=tenant.namespace,
            role_path=role_path,
            paths=ordered,
        )
        grants.append(
            TenantGrant(
                tenant=tenant.name,
                namespace=tenant.namespace,
                policy=policy,
                role=role,
                auth_mount=auth_mount,
                paths=ordered,
                service_accounts=tuple(sorted(accounts)),
                policy_hcl=hcl,
                token_ttl=token_ttl,
                audience=audience,
                auth_method=auth_method,
            )
        )
    # the rule book: no tenant reads outside its own scope unless a reviewer marked it shared
    check_isolation(plan)
    return grants, skipped
