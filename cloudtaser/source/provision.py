"""``source apply-plan``: make the vault hold exactly the policies and roles a plan asks for.

The desired objects come from :func:`cloudtaser.source.grants.build_grants` (pure, validated:
nothing hostile reaches a request). Then, in phases (:func:`apply_plan` lists them once):
pre-flight (token capabilities, KV v2 mounts, auth mount), read, compare, the capabilities the
writes need, write only what differs, prune. Objects the plan does not name are never read or
written, except the ones named for this plan and marked as ours (orphans, pruned on request).

Pure library: no printing, no ``sys.exit``; progress goes to an optional callback. Pre-flight
shared with verify-plan is :mod:`cloudtaser.source.preflight`. The result types, the pure
comparison that decides each :class:`Change` and the phases that act on it are one concept:
what apply-plan does to the vault.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.changes import Action
from cloudtaser.errors import OperationError, VaultAuthError
from cloudtaser.plan import rules
from cloudtaser.plan.model import MigrationPlan, split_vault_path
from cloudtaser.plan.rules import KUBERNETES_AUTH_TYPE
from cloudtaser.progress import Counter, Progress
from cloudtaser.source.grants import (
    DEFAULT_TOKEN_TTL,
    MANAGED_BY,
    TenantGrant,
    build_grants,
    claims_normalised,
    owner_line,
)
from cloudtaser.source.preflight import (
    capability_error,
    check_kv_mounts,
    has_capability,
    is_auth_type,
    missing_capabilities,
    missing_kv_mount_error,
)

if TYPE_CHECKING:
    from cloudtaser.source.openbao import OpenBaoClient

__all__ = [
    "MANAGED_ROLE_FIELDS",
    "ApplyResult",
    "Change",
    "apply_plan",
    "policy_action",
    "role_action",
]


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


#: The role fields apply-plan manages (others on the role are left alone): those of a
#: ``kubernetes`` role, then those only a ``jwt`` role has.
MANAGED_ROLE_FIELDS: Final = (
    "bound_service_account_names",
    "bound_service_account_namespaces",
    "token_policies",
    "token_ttl",
    "audience",
    "role_type",
    "user_claim",
    "bound_audiences",
    "bound_claims_type",
    "bound_claims",
)
#: Role fields that hold one string (the others may come back as comma-joined lists).
_ONE_STRING_FIELDS: Final = ("audience", "role_type", "user_claim", "bound_claims_type")
#: What a jwt role is compared on besides its policies.
_JWT_ROLE_FIELDS: Final = (
    "role_type",
    "user_claim",
    "bound_audiences",
    "bound_claims_type",
    "bound_claims",
    "token_ttl",
)


def _normalised(key: str, value: Any) -> Any:
    """A role field as compared: lists sorted, comma strings split, empty = None."""
    if value in (None, "", [], {}):
        return None
    if key == "token_ttl":
        return value
    if isinstance(value, dict):  # bound_claims
        return claims_normalised(value)
    if isinstance(value, str) and key not in _ONE_STRING_FIELDS:
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


# --- diffing (pure) ------------------------------------------------------------------------


def policy_action(grant: TenantGrant, plan_name: str, current: str | None) -> tuple[Action, str]:
    """Compare a policy's current HCL with the desired one."""
    if current is None:
        return Action.CREATE, ""
    first = current.lstrip().split("\n", 1)[0].rstrip()
    if first != owner_line(plan_name, grant.tenant):
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
    if grant.auth_method == rules.JWT_AUTH_TYPE:
        desired = grant.role_fields()
        differs = [
            key
            for key in _JWT_ROLE_FIELDS
            if _normalised(key, current.get(key)) != _normalised(key, desired.get(key))
        ]
        if policies != [grant.policy]:
            differs.append("token_policies")
        return (Action.UPDATE, ", ".join(differs)) if differs else (Action.UNCHANGED, "")
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
    result = ApplyResult(
        plan=plan.metadata.name,
        dry_run=dry_run,
        auth_mount=plan.auth_mount,
        skipped_tenants=skipped,
    )
    if not grants:
        say("nothing to provision: no tenant has a non-skipped workload with secrets")
        return result
    run = _Run(
        client,
        plan.metadata.name,
        grants,
        auth_mount=plan.auth_mount,
        workers=max(1, min(concurrency, 64)),
        say=say,
        auth_method=grants[0].auth_method,
    )
    _read_capabilities(run, enable_auth_mount=enable_auth_mount)
    _check_mounts(run, result, enable_auth_mount=enable_auth_mount)
    _compare(run, result, _read_current(run))
    result.changes.extend(_orphans(run, prune=prune, warnings=result.warnings))
    _refuse_conflicts(result, force=force)
    _check_write_capabilities(run, result)
    if dry_run:
        return result
    if before_write is not None and result.changed:
        before_write(result)
    counted = _Counted(say, len(run.todo_policies) + len(run.todo_roles) + len(run.deletes))
    _write(run, result, counted)
    _prune(run, result, counted)
    return result


@dataclass
class _Run:
    """What the phases of one apply-plan run share; each phase fills in its part."""

    client: OpenBaoClient
    plan_name: str
    grants: list[TenantGrant]
    auth_mount: str
    workers: int
    say: Progress
    #: ``kubernetes`` or ``jwt``: the auth method type the mount must have.
    auth_method: str = KUBERNETES_AUTH_TYPE
    #: The token's capabilities, per path (phase 1; phase 5 adds the delete paths).
    caps: dict[str, frozenset[str]] = field(default_factory=dict)
    #: The auth mount does not exist yet and is created (phase 2).
    create_auth: bool = False
    #: Per grant, its policy and its role change (phase 4).
    policy_changes: list[tuple[TenantGrant, Change]] = field(default_factory=list)
    role_changes: list[tuple[TenantGrant, Change]] = field(default_factory=list)
    #: The orphans to delete with --prune (phase 5).
    deletes: list[Change] = field(default_factory=list)

    @property
    def policy_paths(self) -> dict[str, str]:
        return {g.policy: f"{self.policy_list}/{g.policy}" for g in self.grants}

    @property
    def role_paths(self) -> dict[str, str]:
        return {g.role: f"{self.role_list}/{g.role}" for g in self.grants}

    @property
    def enable_path(self) -> str:
        return f"sys/auth/{self.auth_mount}"

    @property
    def policy_list(self) -> str:
        return "sys/policies/acl"

    @property
    def role_list(self) -> str:
        return f"auth/{self.auth_mount}/role"

    @property
    def todo_policies(self) -> list[tuple[TenantGrant, Change]]:
        return [(g, c) for g, c in self.policy_changes if _needed(c) is not None]

    @property
    def todo_roles(self) -> list[tuple[TenantGrant, Change]]:
        return [(g, c) for g, c in self.role_changes if _needed(c) is not None]


def _read_capabilities(run: _Run, *, enable_auth_mount: bool) -> None:
    """Phase 1: what the token may do, one request for every path; refuse a missing read.

    'list' on the two list paths is optional: with it, one LIST replaces a read of every
    object that is absent.
    """
    probe = [*run.policy_paths.values(), *run.role_paths.values()]
    if enable_auth_mount:
        probe.append(run.enable_path)
    run.say(f"pre-flight: checking the token's capabilities on {len(probe)} paths")
    run.caps = run.client.capabilities_self([*probe, run.policy_list, run.role_list])
    missing = missing_capabilities((("read", p) for p in probe if p != run.enable_path), run.caps)
    if missing:
        raise capability_error(missing)


def _check_mounts(run: _Run, result: ApplyResult, *, enable_auth_mount: bool) -> None:
    """Phase 2: every KV mount exists and is KV v2; the auth mount is Kubernetes auth, or is
    absent and may be created (``--enable-auth-mount``)."""
    auth_mount = run.auth_mount
    mounts = {split_vault_path(p)[0] for g in run.grants for p in g.paths}
    run.say(f"pre-flight: checking KV mount(s) {', '.join(sorted(mounts))} and auth/{auth_mount}")
    for mount, exists in check_kv_mounts(run.client, mounts).items():
        if not exists:
            raise missing_kv_mount_error(mount)
    auth_info = run.client.mount_info(f"auth/{auth_mount}")
    method = run.auth_method
    if auth_info is None:
        if not enable_auth_mount:
            raise OperationError(
                f"the {method} auth mount auth/{auth_mount} does not exist. Configure it for "
                "the cluster with 'cloudtaser target connect', or pass --enable-auth-mount to "
                f"enable an empty {method} auth method there (it still needs 'target connect' "
                "before pods can log in)"
            )
        needs = [("sudo", run.enable_path), ("create", run.enable_path)]
        if missing_capabilities(needs, run.caps):
            raise capability_error(missing_capabilities(needs, run.caps))
        run.create_auth = True
        result.changes.append(
            Change(kind="auth-mount", name=auth_mount, path=run.enable_path, action=Action.CREATE)
        )
    elif not is_auth_type(auth_info.type, method):
        raise OperationError(
            f"auth/{auth_mount} is a {auth_info.type!r} auth method, not {method} (the plan's "
            "metadata.authMethod); set the plan's metadata.authMount to the cluster's "
            f"{method} auth mount"
        )


@dataclass(frozen=True)
class _Current:
    """What the vault holds for the objects the plan names (None: absent)."""

    policies: dict[str, str | None]
    roles: dict[str, dict[str, Any] | None]


def _read_current(run: _Run) -> _Current:
    """Phase 3: read what exists, only the objects the plan names."""

    def existing(list_path: str, names: Iterable[str]) -> list[str]:
        """The names to read: all, or (with 'list') only those the server has."""
        if not has_capability(run.caps.get(list_path, frozenset()), "list"):
            return list(names)
        present = run.client.list_names(list_path)
        return [name for name in names if name in present]

    policies_to_read = existing(run.policy_list, (g.policy for g in run.grants))
    roles_to_read = [] if run.create_auth else existing(run.role_list, (g.role for g in run.grants))
    run.say(f"reading {len(policies_to_read)} policies and {len(roles_to_read)} roles")
    with ThreadPoolExecutor(max_workers=run.workers, thread_name_prefix="apply") as pool:
        policy_reads = {
            name: pool.submit(run.client.policy_read, name) for name in policies_to_read
        }
        role_reads: dict[str, Future[dict[str, Any] | None]] = {
            name: pool.submit(run.client.role_read, run.auth_mount, name) for name in roles_to_read
        }
        policies: dict[str, str | None] = {g.policy: None for g in run.grants}
        policies |= {name: f.result() for name, f in policy_reads.items()}
        roles = {name: f.result() for name, f in role_reads.items()}
    return _Current(policies=policies, roles=roles)


def _compare(run: _Run, result: ApplyResult, current: _Current) -> None:
    """Phase 4: one policy and one role change per grant (in grant order, policy first)."""
    policy_paths, role_paths = run.policy_paths, run.role_paths
    for grant in run.grants:
        policy = Change(
            kind="policy",
            name=grant.policy,
            path=policy_paths[grant.policy],
            tenant=grant.tenant,
            current=current.policies[grant.policy],
            desired=grant.policy_hcl,
            **_found(policy_action(grant, run.plan_name, current.policies[grant.policy])),
        )
        role = Change(
            kind="role",
            name=grant.role,
            path=role_paths[grant.role],
            tenant=grant.tenant,
            current=_managed(current.roles.get(grant.role)),
            desired=grant.role_fields(),
            **_found(role_action(grant, current.roles.get(grant.role))),
        )
        run.policy_changes.append((grant, policy))
        run.role_changes.append((grant, role))
        result.changes += [policy, role]


def _found(found: tuple[Action, str]) -> dict[str, Any]:
    action, detail = found
    return {"action": action, "detail": detail}


def _refuse_conflicts(result: ApplyResult, *, force: bool) -> None:
    """Objects cloudtaser did not create are overwritten only with ``--force``; a dry run
    reports them."""
    conflicts = [c for c in result.changes if c.action is Action.CONFLICT]
    if conflicts and force:
        result.warnings.append(
            f"--force: overwriting {len(conflicts)} object(s) cloudtaser did not create: "
            + ", ".join(c.path for c in conflicts)
        )
    elif conflicts and not result.dry_run:
        shown = "; ".join(f"{c.path} ({c.detail})" for c in conflicts[:5])
        raise OperationError(
            f"refusing to overwrite {len(conflicts)} object(s) that cloudtaser did not create: "
            f"{shown}. Nothing was written. Rename or remove them, or pass --force"
        )


def _needed(change: Change) -> str | None:
    """The capability writing ``change`` needs (None: nothing to write)."""
    if change.action is Action.CREATE:
        return "create"
    if change.action in (Action.UPDATE, Action.CONFLICT):
        return "update"
    return None


def _check_write_capabilities(run: _Run, result: ApplyResult) -> None:
    """Phase 5: may the token write what differs (and delete what --prune removes)?"""
    write_needs = [
        (cap, c.path)
        for c in result.changes
        if c.kind != "auth-mount" and (cap := _needed(c)) is not None
    ]
    run.deletes = [c for c in result.changes if c.action is Action.DELETE]
    if run.deletes:
        run.caps |= run.client.capabilities_self([c.path for c in run.deletes])
        write_needs += [("delete", c.path) for c in run.deletes]
    if run.create_auth:  # the auth mount does not exist yet; capabilities were computed by policy
        role_paths = set(run.role_paths.values())
        write_needs = [(cap, path) for cap, path in write_needs if path not in role_paths]
        write_needs += [("create", p) for p in run.role_paths.values()]
    missing = missing_capabilities(write_needs, run.caps)
    if missing:
        raise capability_error(missing)


def _write(run: _Run, result: ApplyResult, counted: _Counted) -> None:
    """Phase 6: the auth mount, then policies, then roles (a role never names a missing
    policy)."""
    client, say = run.client, run.say
    if run.create_auth:
        say(f"enabling the {run.auth_method} auth method at auth/{run.auth_mount}")
        client.enable_auth(
            run.auth_mount, run.auth_method, description="enabled by cloudtaser apply-plan"
        )
        result.writes += 1
    todo_policies, todo_roles = run.todo_policies, run.todo_roles
    if todo_policies:
        say(f"writing {len(todo_policies)} policies")
        _run_all(
            run.workers,
            [
                counted(partial(client.policy_write, g.policy, g.policy_hcl))
                for g, _c in todo_policies
            ],
        )
        result.writes += len(todo_policies)
    if todo_roles:
        say(f"writing {len(todo_roles)} roles")
        warnings = _run_all(
            run.workers,
            [
                counted(partial(client.role_write, run.auth_mount, g.role, g.role_fields()))
                for g, _c in todo_roles
            ],
        )
        result.writes += len(todo_roles)
        for found in warnings:
            if isinstance(found, list):
                result.warnings.extend(w for w in found if w not in result.warnings)


def _prune(run: _Run, result: ApplyResult, counted: _Counted) -> None:
    """Phase 7: delete the orphans (--prune), roles first (a role never names a missing
    policy), then policies."""
    for kind in ("role", "policy"):
        gone = [c for c in run.deletes if c.kind == kind]
        if gone:
            run.say(f"deleting {len(gone)} {kind}(s) the plan no longer contains")
            _run_all(
                run.workers,
                [
                    counted(
                        partial(run.client.role_delete, run.auth_mount, c.name)
                        if kind == "role"
                        else partial(run.client.policy_delete, c.name)
                    )
                    for c in gone
                ],
            )
            result.writes += len(gone)


def _managed(role: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields of a role apply-plan manages (for the diff)."""
    if role is None:
        return None
    return {k: role[k] for k in MANAGED_ROLE_FIELDS if role.get(k) not in (None, "", [])}


def _orphans(run: _Run, *, prune: bool, warnings: list[str]) -> list[Change]:
    """Phase 4b: policies and roles named ``cloudtaser-<plan>-*`` that are ours but that the
    plan no longer names: ``orphaned``, or ``delete`` with ``prune``."""
    client, caps, plan_name, auth_mount = run.client, run.caps, run.plan_name, run.auth_mount
    policies = {g.policy for g in run.grants}
    roles = {g.role for g in run.grants}
    skip_roles = run.create_auth
    prefix = f"{rules.PREFIX}-{plan_name}-".lower()
    action = Action.DELETE if prune else Action.ORPHANED
    detail = (
        "no longer in the plan: deleted by --prune"
        if prune
        else "no longer in the plan; remove it with --prune"
    )
    out: list[Change] = []
    policy_list, role_list = run.policy_list, run.role_list
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
