"""``source apply-plan``: per-tenant ACL policies and Kubernetes-auth roles from a plan.

For every tenant with at least one non-skipped workload that has secrets, one ACL policy and
one role, both named ``cloudtaser-<plan>-<tenant>`` (:mod:`cloudtaser.plan.rules`, lower-cased the
way OpenBao stores them):

* the policy grants ``read`` on exactly the tenant's KV v2 ``data/`` paths (the runtime wrapper
  reads ``<mount>/data/<path>`` and nothing else), headed by a ``managed-by`` comment that marks
  it as ours;
* the role on ``auth/<plan auth mount>/role/<name>`` binds the tenant's namespace and the
  ServiceAccounts of its non-skipped workloads, with ``token_policies = [policy]``, a token TTL
  and an optional audience.

Everything taken from the plan is validated again right before it is rendered (defence in
depth: a plan built in code skips the loader's checks), and a hostile value is rejected before
any request is sent. Then: pre-flight (token capabilities, KV v2 mounts, auth mount), read,
compare, write only what differs. Objects the plan does not name are never read or written.

Pure library: no printing, no ``sys.exit``; progress goes to an optional callback.

Why one module of this size: grants, HCL rendering, diffing and the bounded write pool are
the one apply-plan concept; pre-flight shared with verify-plan is
:mod:`cloudtaser.source.preflight`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from cloudtaser import contract
from cloudtaser.changes import Action
from cloudtaser.errors import OperationError, PlanError, VaultAuthError
from cloudtaser.plan import (
    MigrationPlan,
    WorkloadStatus,
    check_isolation,
    rules,
    split_vault_path,
)
from cloudtaser.progress import Counter
from cloudtaser.source.preflight import (
    capability_error,
    check_kv_mounts,
    has_capability,
    missing_capabilities,
    missing_kv_mount_error,
    validate_kv_path,
)

if TYPE_CHECKING:
    from cloudtaser.source.openbao import OpenBaoClient

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MANAGED_BY",
    "Action",
    "ApplyResult",
    "Change",
    "TenantGrant",
    "apply_plan",
    "build_grants",
    "parse_duration",
    "render_policy",
    "validate_kv_path",
]

Progress = Callable[[str], None]

DEFAULT_TOKEN_TTL: Final = 3600
MANAGED_BY: Final = "# managed-by: cloudtaser"
MAX_AUDIENCE_CHARS: Final = rules.MAX_AUDIENCE_CHARS
KUBERNETES_AUTH_TYPE: Final = "kubernetes"

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

    def role_fields(self) -> dict[str, Any]:
        """The role body apply-plan writes (only the fields cloudtaser manages)."""
        fields: dict[str, Any] = {
            "bound_service_account_names": list(self.service_accounts),
            "bound_service_account_namespaces": [self.namespace],
            "token_policies": [self.policy],
            "token_ttl": self.token_ttl,
        }
        if self.audience:
            fields["audience"] = self.audience
        return fields


@dataclass(frozen=True)
class Change:
    """One object and what apply-plan did (or would do) to it."""

    kind: str  # "policy" | "role" | "auth-mount"
    name: str
    path: str
    action: Action
    tenant: str | None = None
    #: Which managed fields differ (``update``), or why it is a conflict.
    detail: str = ""
    #: What the vault holds now and what the plan wants, for a diff: the policy HCL
    #: (``str``; ``None`` when absent) or the role's managed fields (``dict``). Never a secret:
    #: policies and role fields hold names and paths only.
    current: Any = None
    desired: Any = None

    def field_changes(self) -> list[tuple[str, Any, Any]]:
        """``(field, old, new)`` for each managed role field that differs (roles only)."""
        if self.kind != "role" or not isinstance(self.desired, dict):
            return []
        current = self.current if isinstance(self.current, dict) else {}
        keys = list(self.desired) + [k for k in MANAGED_ROLE_FIELDS if k not in self.desired]
        out = []
        for key in keys:
            old, new = _normalised(key, current.get(key)), _normalised(key, self.desired.get(key))
            if old != new:
                out.append((key, old, new))
        return out


#: The role fields apply-plan manages (others on the role are left alone).
MANAGED_ROLE_FIELDS: Final = (
    "bound_service_account_names",
    "bound_service_account_namespaces",
    "token_policies",
    "token_ttl",
    "audience",
)


def _normalised(key: str, value: Any) -> Any:
    """A role field as compared: lists sorted, comma strings split, empty = None."""
    if value in (None, "", []):
        return None
    if key == "token_ttl":
        return value
    if isinstance(value, str) and key != "audience":
        value = [v for v in value.split(",") if v]
    if isinstance(value, list):
        return sorted(str(v) for v in value)
    return value


@dataclass
class ApplyResult:
    """The outcome of one apply-plan run."""

    plan: str
    dry_run: bool
    auth_mount: str
    changes: list[Change] = field(default_factory=list)
    #: Tenants that get no objects, with the reason (all workloads skipped, no secrets).
    skipped_tenants: list[tuple[str, str]] = field(default_factory=list)
    #: Server warnings and notes for the operator.
    warnings: list[str] = field(default_factory=list)
    #: Write requests actually sent (0 on a dry run or when everything is unchanged).
    writes: int = 0

    def count(self, action: Action) -> int:
        """How many objects got ``action``."""
        return sum(1 for c in self.changes if c.action is action)

    @property
    def changed(self) -> bool:
        """True when something was (or would be) created, updated or deleted."""
        return any(c.action in (Action.CREATE, Action.UPDATE, Action.DELETE) for c in self.changes)

    @property
    def pending(self) -> bool:
        """True when the vault does not match the plan (a dry run's "changes pending",
        orphaned objects included)."""
        return self.changed or any(
            c.action in (Action.CONFLICT, Action.ORPHANED) for c in self.changes
        )


# --- validation (defence in depth) -----------------------------------------------------------


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
            f"at most {MAX_AUDIENCE_CHARS} characters)",
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
        _owner_line(_comment_value(plan_name), _comment_value(tenant)),
        "# Written by 'cloudtaser source apply-plan'; hand edits are overwritten on the next run.",
        f"# namespace={_comment_value(namespace)}; role={_comment_value(role_path)}",
    ]
    for path in paths:
        lines += [f"path {_hcl_string(path)} {{", '  capabilities = ["read"]', "}"]
    return "\n".join(lines) + "\n"


def _owner_line(plan_name: str, tenant: str) -> str:
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
            for s_index, secret in enumerate(workload.secrets):
                loc = f"{where}.workloads[{w_index}].secrets[{s_index}].vaultPath"
                validate_kv_path(secret.vault_path, allowed_mount=kv_mount, location=loc)
                paths.add(secret.vault_path)
            if workload.secrets:
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
            )
        )
    # the rule book: no tenant reads outside its own scope unless a reviewer marked it shared
    check_isolation(plan)
    return grants, skipped


# --- diffing (pure) ------------------------------------------------------------------------


def policy_action(grant: TenantGrant, plan_name: str, current: str | None) -> tuple[Action, str]:
    """Compare a policy's current HCL with the desired one."""
    if current is None:
        return Action.CREATE, ""
    first = current.lstrip().split("\n", 1)[0].rstrip()
    if first != _owner_line(plan_name, grant.tenant):
        why = (
            "created by cloudtaser for another plan or tenant"
            if first.startswith(MANAGED_BY)
            else "not created by cloudtaser"
        )
        return Action.CONFLICT, f"existing policy {why}; pass --force to overwrite it"
    if current == grant.policy_hcl:
        return Action.UNCHANGED, ""
    return Action.UPDATE, "paths"


def role_action(grant: TenantGrant, current: Mapping[str, Any] | None) -> tuple[Action, str]:
    """Compare a role's managed fields with the desired ones (other fields are left alone)."""
    if current is None:
        return Action.CREATE, ""

    def strings(key: str) -> list[str]:
        value = current.get(key)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return sorted(str(v) for v in value) if isinstance(value, list) else []

    policies = [p.lower() for p in strings("token_policies")]
    if grant.policy not in policies:
        return (
            Action.CONFLICT,
            f"existing role does not use policy {grant.policy!r}, so cloudtaser did not create "
            "it; pass --force to overwrite it",
        )
    differs = []
    if strings("bound_service_account_names") != sorted(grant.service_accounts):
        differs.append("bound_service_account_names")
    if strings("bound_service_account_namespaces") != [grant.namespace]:
        differs.append("bound_service_account_namespaces")
    if policies != [grant.policy]:
        differs.append("token_policies")
    ttl = current.get("token_ttl")
    if not isinstance(ttl, int) or ttl != grant.token_ttl:
        differs.append("token_ttl")
    if (current.get("audience") or None) != grant.audience:
        differs.append("audience")
    if differs:
        return Action.UPDATE, ", ".join(differs)
    return Action.UNCHANGED, ""


# --- the run --------------------------------------------------------------------------------


def apply_plan(
    client: OpenBaoClient,
    plan: MigrationPlan,
    *,
    dry_run: bool = False,
    force: bool = False,
    token_ttl: int = DEFAULT_TOKEN_TTL,
    audience: str | None = None,
    enable_auth_mount: bool = False,
    concurrency: int = 16,
    prune: bool = False,
    progress: Progress | None = None,
    before_write: Callable[[ApplyResult], None] | None = None,
) -> ApplyResult:
    """Create or update the plan's policies and roles; see the module docstring.

    Raises :class:`PlanError` for unsafe plan values (before any request),
    :class:`VaultAuthError` naming a missing capability and path (before any write),
    :class:`OperationError` for a missing/wrong mount or a conflict (before any write), and
    the client's errors when the vault fails mid-run (a re-run repairs: every write is a full,
    idempotent replacement).

    Objects named for this plan (``cloudtaser-<plan>-*``, marked as ours) that the plan no
    longer contains are reported as ``orphaned`` (needs ``list`` on ``sys/policies/acl`` and
    ``auth/<mount>/role``; without it they cannot be found and a warning says so); with
    ``prune`` they are deleted (``delete``), roles before policies.

    ``before_write`` is called with the result (every change, with ``current`` and
    ``desired``) once all checks passed and right before the first write (not on a dry run,
    not when nothing differs), so the caller can show what is about to change.
    """
    say = progress or (lambda _m: None)
    grants, skipped = build_grants(plan, token_ttl=token_ttl, audience=audience)
    auth_mount = plan.auth_mount
    result = ApplyResult(
        plan=plan.metadata.name, dry_run=dry_run, auth_mount=auth_mount, skipped_tenants=skipped
    )
    if not grants:
        say("nothing to provision: no tenant has a non-skipped workload with secrets")
        return result
    workers = max(1, min(concurrency, 64))

    # 1. what the token may do (one request for every path)
    policy_paths = {g.policy: f"sys/policies/acl/{g.policy}" for g in grants}
    role_paths = {g.role: f"auth/{auth_mount}/role/{g.role}" for g in grants}
    enable_path = f"sys/auth/{auth_mount}"
    # optional: with 'list' on these, one LIST replaces a read of every object that is absent
    policy_list, role_list = "sys/policies/acl", f"auth/{auth_mount}/role"
    probe = [*policy_paths.values(), *role_paths.values()]
    if enable_auth_mount:
        probe.append(enable_path)
    say(f"pre-flight: checking the token's capabilities on {len(probe)} paths")
    caps = client.capabilities_self([*probe, policy_list, role_list])
    missing = missing_capabilities((("read", p) for p in probe if p != enable_path), caps)
    if missing:
        raise capability_error(missing)

    # 2. mounts
    mounts = {split_vault_path(p)[0] for g in grants for p in g.paths}
    say(f"pre-flight: checking KV mount(s) {', '.join(sorted(mounts))} and auth/{auth_mount}")
    for mount, exists in check_kv_mounts(client, mounts).items():
        if not exists:
            raise missing_kv_mount_error(mount)
    create_auth = False
    auth_info = client.mount_info(f"auth/{auth_mount}")
    if auth_info is None:
        if not enable_auth_mount:
            raise OperationError(
                f"the Kubernetes auth mount auth/{auth_mount} does not exist. Configure it for "
                "the cluster with 'cloudtaser target connect', or pass --enable-auth-mount to "
                "enable an empty Kubernetes auth method there (it still needs 'target connect' "
                "before pods can log in)"
            )
        needs = [("sudo", enable_path), ("create", enable_path)]
        if missing_capabilities(needs, caps):
            raise capability_error(missing_capabilities(needs, caps))
        create_auth = True
        result.changes.append(
            Change(kind="auth-mount", name=auth_mount, path=enable_path, action=Action.CREATE)
        )
    elif info_type(auth_info.type) != KUBERNETES_AUTH_TYPE:
        raise OperationError(
            f"auth/{auth_mount} is a {auth_info.type!r} auth method, not kubernetes; set the "
            "plan's metadata.authMount to the cluster's Kubernetes auth mount"
        )

    # 3. read what exists (only the objects the plan names)
    def existing(list_path: str, names: Iterable[str]) -> list[str]:
        """The names to read: all, or (with 'list') only those the server has."""
        if not has_capability(caps.get(list_path, frozenset()), "list"):
            return list(names)
        present = client.list_names(list_path)
        return [name for name in names if name in present]

    policies_to_read = existing(policy_list, (g.policy for g in grants))
    roles_to_read = [] if create_auth else existing(role_list, (g.role for g in grants))
    say(f"reading {len(policies_to_read)} policies and {len(roles_to_read)} roles")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply") as pool:
        policy_reads = {name: pool.submit(client.policy_read, name) for name in policies_to_read}
        role_reads: dict[str, Future[dict[str, Any] | None]] = {
            name: pool.submit(client.role_read, auth_mount, name) for name in roles_to_read
        }
        current_policies: dict[str, str | None] = {g.policy: None for g in grants}
        current_policies |= {name: f.result() for name, f in policy_reads.items()}
        current_roles = {name: f.result() for name, f in role_reads.items()}

    # 4. diff
    policy_changes: list[tuple[TenantGrant, Change]] = []
    role_changes: list[tuple[TenantGrant, Change]] = []
    for grant in grants:
        policy_changes.append(
            _grant_change(
                grant,
                "policy",
                grant.policy,
                policy_paths[grant.policy],
                policy_action(grant, plan.metadata.name, current_policies[grant.policy]),
                current=current_policies[grant.policy],
                desired=grant.policy_hcl,
            )
        )
        role_changes.append(
            _grant_change(
                grant,
                "role",
                grant.role,
                role_paths[grant.role],
                role_action(grant, current_roles.get(grant.role)),
                current=_managed(current_roles.get(grant.role)),
                desired=grant.role_fields(),
            )
        )
    for pair in zip(policy_changes, role_changes, strict=True):
        result.changes.extend(change for _g, change in pair)
    # 4b. objects of this plan the plan no longer names
    orphans = _orphans(
        client,
        caps,
        plan.metadata.name,
        auth_mount=auth_mount,
        policies={g.policy for g in grants},
        roles={g.role for g in grants},
        skip_roles=create_auth,
        prune=prune,
        warnings=result.warnings,
    )
    result.changes.extend(orphans)

    conflicts = [c for c in result.changes if c.action is Action.CONFLICT]
    if conflicts and force:
        result.warnings.append(
            f"--force: overwriting {len(conflicts)} object(s) cloudtaser did not create: "
            + ", ".join(c.path for c in conflicts)
        )
    elif conflicts and not dry_run:
        shown = "; ".join(f"{c.path} ({c.detail})" for c in conflicts[:5])
        raise OperationError(
            f"refusing to overwrite {len(conflicts)} object(s) that cloudtaser did not create: "
            f"{shown}. Nothing was written. Rename or remove them, or pass --force"
        )

    # 5. may the token write what differs?
    def needed(change: Change) -> str | None:
        if change.action is Action.CREATE:
            return "create"
        if change.action in (Action.UPDATE, Action.CONFLICT):
            return "update"
        return None

    write_needs = [
        (cap, c.path)
        for c in result.changes
        if c.kind != "auth-mount" and (cap := needed(c)) is not None
    ]
    deletes = [c for c in result.changes if c.action is Action.DELETE]
    if deletes:
        caps |= client.capabilities_self([c.path for c in deletes])
        write_needs += [("delete", c.path) for c in deletes]
    if create_auth:  # the auth mount does not exist yet; capabilities were computed by policy
        write_needs = [(cap, path) for cap, path in write_needs if path not in role_paths.values()]
        write_needs += [("create", p) for p in role_paths.values()]
    missing = missing_capabilities(write_needs, caps)
    if missing:
        raise capability_error(missing)
    if dry_run:
        return result
    if before_write is not None and result.changed:
        before_write(result)

    # 6. write: auth mount, then policies, then roles (a role never names a missing policy)
    if create_auth:
        say(f"enabling the Kubernetes auth method at auth/{auth_mount}")
        client.enable_auth(
            auth_mount, KUBERNETES_AUTH_TYPE, description="enabled by cloudtaser apply-plan"
        )
        result.writes += 1
    todo_policies = [(g, c) for g, c in policy_changes if needed(c) is not None]
    todo_roles = [(g, c) for g, c in role_changes if needed(c) is not None]
    counted = _Counted(progress or say, len(todo_policies) + len(todo_roles) + len(deletes))
    if todo_policies:
        say(f"writing {len(todo_policies)} policies")
        _run_all(
            workers,
            [
                counted(partial(client.policy_write, g.policy, g.policy_hcl))
                for g, _c in todo_policies
            ],
        )
        result.writes += len(todo_policies)
    if todo_roles:
        say(f"writing {len(todo_roles)} roles")
        warnings = _run_all(
            workers,
            [
                counted(partial(client.role_write, auth_mount, g.role, g.role_fields()))
                for g, _c in todo_roles
            ],
        )
        result.writes += len(todo_roles)
        for found in warnings:
            if isinstance(found, list):
                result.warnings.extend(w for w in found if w not in result.warnings)
    # 7. prune: roles first (a role never names a missing policy), then policies
    for kind in ("role", "policy"):
        gone = [c for c in deletes if c.kind == kind]
        if gone:
            say(f"deleting {len(gone)} {kind}(s) the plan no longer contains")
            _run_all(
                workers,
                [
                    counted(
                        partial(client.role_delete, auth_mount, c.name)
                        if kind == "role"
                        else partial(client.policy_delete, c.name)
                    )
                    for c in gone
                ],
            )
            result.writes += len(gone)
    return result


def _managed(role: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields of a role apply-plan manages (for the diff)."""
    if role is None:
        return None
    return {k: role[k] for k in MANAGED_ROLE_FIELDS if role.get(k) not in (None, "", [])}


def _orphans(
    client: OpenBaoClient,
    caps: Mapping[str, frozenset[str]],
    plan_name: str,
    *,
    auth_mount: str,
    policies: set[str],
    roles: set[str],
    skip_roles: bool,
    prune: bool,
    warnings: list[str],
) -> list[Change]:
    """Policies and roles named ``cloudtaser-<plan>-*`` that are ours but not in ``policies``
    / ``roles``: ``orphaned``, or ``delete`` with ``prune``."""
    prefix = f"{rules.PREFIX}-{plan_name}-".lower()
    action = Action.DELETE if prune else Action.ORPHANED
    detail = (
        "no longer in the plan: deleted by --prune"
        if prune
        else "no longer in the plan; remove it with --prune"
    )
    out: list[Change] = []
    policy_list, role_list = "sys/policies/acl", f"auth/{auth_mount}/role"
    unlisted = [
        p
        for p in (policy_list, *(() if skip_roles else (role_list,)))
        if not has_capability(caps.get(p, frozenset()), "list")
    ]
    if unlisted:
        warnings.append(
            "cannot look for objects this plan no longer contains: the token lacks 'list' on "
            + ", ".join(unlisted)
        )
    if policy_list not in unlisted:
        for name in sorted(client.list_names(policy_list)):
            if not name.startswith(prefix) or name in policies:
                continue
            try:
                hcl = client.policy_read(name) or ""
            except VaultAuthError:
                warnings.append(f"cannot read policy {name} to tell whether the plan dropped it")
                continue
            first = hcl.lstrip().split("\n", 1)[0].rstrip()
            if not first.startswith(f"{MANAGED_BY}; plan={plan_name};"):
                continue  # same prefix, not ours for this plan: never touched
            out.append(
                Change(
                    kind="policy",
                    name=name,
                    path=f"{policy_list}/{name}",
                    action=action,
                    tenant=_tenant_of(first),
                    detail=detail,
                    current=hcl,
                    desired=None,
                )
            )
    if not skip_roles and role_list not in unlisted:
        for name in sorted(client.list_names(role_list)):
            if not name.startswith(prefix) or name in roles:
                continue
            try:
                role = client.role_read(auth_mount, name) or {}
            except VaultAuthError:
                warnings.append(f"cannot read role {name} to tell whether the plan dropped it")
                continue
            used = _normalised("token_policies", role.get("token_policies")) or []
            if not used or not all(str(p).lower().startswith(prefix) for p in used):
                continue  # grants other policies: someone else's role
            out.append(
                Change(
                    kind="role",
                    name=name,
                    path=f"{role_list}/{name}",
                    action=action,
                    tenant=name[len(prefix) :] or None,
                    detail=detail,
                    current=_managed(role),
                    desired=None,
                )
            )
    return out


def _tenant_of(owner_line: str) -> str | None:
    for part in owner_line.split(";"):
        key, _sep, value = part.strip().partition("=")
        if key == "tenant" and value:
            return value
    return None


def _grant_change(
    grant: TenantGrant,
    kind: str,
    name: str,
    path: str,
    found: tuple[Action, str],
    *,
    current: Any,
    desired: Any,
) -> tuple[TenantGrant, Change]:
    action, detail = found
    return grant, Change(
        kind=kind,
        name=name,
        path=path,
        action=action,
        tenant=grant.tenant,
        detail=detail,
        current=current,
        desired=desired,
    )


def info_type(value: str) -> str:
    """Normalise a mount type (plugin names may carry a version suffix)."""
    return value.split(":", 1)[0].strip().lower()


class _Counted:
    """Wraps write jobs so each finished one advances a :class:`cloudtaser.progress.Counter`
    (``wrote n/N objects``, a milestone every tenth)."""

    def __init__(self, say: Progress, total: int) -> None:
        self._counter = Counter(say, total, "wrote {done}/{total} objects")

    def __call__(self, job: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            value = job()
            self._counter.advance()
            return value

        return run


def _run_all(workers: int, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run ``jobs`` on a bounded pool; on the first failure stop submitting and re-raise it."""
    if workers == 1 or len(jobs) == 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply-write") as pool:
        futures = [pool.submit(job) for job in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                for other in pending:
                    other.cancel()
                raise error
        return [f.result() for f in futures]
