"""The MigrationPlan: typed model, strict loading, deterministic atomic saving.

The plan is the one artifact that crosses the air gap between cluster and vault, and the
compliance evidence of a migration. It never holds a secret value: only names of Kubernetes
Secrets, their keys, vault paths and environment variable names.

Compatibility: the documented CloudTaser schema (``apiVersion: cloudtaser.io/v1``,
``kind: MigrationPlan``) plus optional extension fields, all documented in
``docs/plan-format.md``. Unknown fields are rejected so a reviewer's typo is never ignored.

Why one module of this size: the Structs, their loader (msgspec error locations made
readable) and the deterministic emitter are one concept, the plan file format; the rules it
applies live in :mod:`cloudtaser.plan.rules`, storage in :mod:`cloudtaser.plan.store`.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import yaml_rs
from msgspec import Meta

from cloudtaser.errors import PlanError
from cloudtaser.fileio import atomic_write
from cloudtaser.plan import rules
from cloudtaser.plan.rules import (
    DEFAULT_AUTH_MOUNT,
    DEFAULT_KV_MOUNT,
    DEFAULT_PATH_TEMPLATE,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_VAR,
    FIELD_NAME,
    MOUNT,
    ONE_LINE,
    PLAN_NAME,
    SOURCE_REF,
    VAULT_PATH,
    template_problem,
    tenant_scope,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_AUTH_MOUNT",
    "DEFAULT_KV_MOUNT",
    "DEFAULT_PATH_TEMPLATE",
    "KIND",
    "MAX_APPROVALS",
    "MAX_PLAN_BYTES",
    "Approval",
    "EnvUse",
    "EnvUseWhere",
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
    "check_isolation",
    "dangerous_env_violation",
    "dump",
    "dumps",
    "finalized_ref_problem",
    "finalized_refs_violation",
    "isolation_problems",
    "json_schema",
    "load",
    "loads",
    "plan_kv_mount",
    "rule_problem",
    "save",
    "split_vault_path",
    "template_problem",
    "tenant_scope",
]

API_VERSION: Final = "cloudtaser.io/v1"
KIND: Final = "MigrationPlan"
#: Plans are hand-reviewed YAML; anything past this is not a plan (or is an attack).
MAX_PLAN_BYTES: Final = 64 * 1024 * 1024

# --- constrained string types (patterns and limits: the rule book, cloudtaser.plan.rules) ------

DnsLabel = Annotated[str, Meta(pattern=DNS_LABEL, max_length=rules.MAX_DNS_LABEL)]
DnsSubdomain = Annotated[str, Meta(pattern=DNS_SUBDOMAIN, max_length=rules.MAX_DNS_SUBDOMAIN)]
PlanName = Annotated[str, Meta(pattern=PLAN_NAME, max_length=rules.MAX_PLAN_NAME)]
EnvVarName = Annotated[str, Meta(pattern=ENV_VAR, max_length=rules.MAX_ENV_VAR)]
FieldName = Annotated[str, Meta(pattern=FIELD_NAME, max_length=rules.MAX_FIELD_NAME)]
#: The pattern gives the schema; :func:`rule_problem` applies the rest of the rule book
#: (segment length, reserved mounts) when a plan is loaded.
VaultPath = Annotated[str, Meta(pattern=VAULT_PATH, max_length=rules.MAX_VAULT_PATH)]
MountName = Annotated[str, Meta(pattern=MOUNT, max_length=rules.MAX_MOUNT)]
SourceRef = Annotated[str, Meta(pattern=SOURCE_REF, min_length=1, max_length=512)]
OneLine = Annotated[str, Meta(pattern=ONE_LINE, max_length=4096)]
NonEmptyLine = Annotated[str, Meta(pattern=ONE_LINE, min_length=1, max_length=1024)]
UtcTimestamp = Annotated[datetime, Meta(tz=True)]
#: Kubernetes ``replicas`` is an int32 (the bound also keeps the canonical form's integers
#: exact in every JSON implementation, RFC 8785).
Replicas = Annotated[int, Meta(ge=0, le=2**31 - 1)]

MAX_APPROVALS: Final = rules.MAX_APPROVALS
ApprovalIdentity = Annotated[
    str, Meta(pattern=rules.APPROVAL_IDENTITY, max_length=rules.MAX_APPROVAL_IDENTITY)
]
Digest = Annotated[str, Meta(pattern=rules.DIGEST)]
ArmoredSignature = Annotated[
    str, Meta(pattern=rules.ARMORED_SIGNATURE, max_length=rules.MAX_ARMORED_SIGNATURE)
]


class WorkloadKind(enum.StrEnum):
    """The workload kinds a plan may name."""

    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"


class WorkloadStatus(enum.StrEnum):
    """Where a workload stands in the migration. An absent status means ``pending``."""

    PENDING = "pending"
    MIGRATED = "migrated"
    SKIPPED = "skipped"


class _Base(
    msgspec.Struct,
    rename="camel",
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
    gc=False,
):
    """Shared conventions of every plan Struct.

    ``gc=False``: plan objects never form reference cycles, so the cycle collector need not
    track them (a 10,000-workload plan loads about a third faster).
    """


class SecretRef(_Base, kw_only=True):
    """One Kubernetes Secret (or existing vault path) a workload consumes, and where it moves.

    ``fields`` maps a vault field (the Secret's key) to the environment variable the
    application reads.
    """

    source: SourceRef
    vault_path: VaultPath
    fields: dict[FieldName, EnvVarName] = msgspec.field(default_factory=dict)
    # --- extensions (optional) ---
    #: ``env`` (secretKeyRef), ``envFrom`` (secretRef), or ``vaultAgent`` (injector annotation).
    via: Literal["env", "envFrom", "vaultAgent"] | None = None
    #: The Kubernetes reference was marked ``optional: true``.
    optional: bool = False
    #: A reviewer-facing remark from discovery (e.g. "Secret not found in the cluster").
    note: OneLine | None = None
    #: Set by a reviewer, never by discover: this path lies outside the tenant's own scope
    #: (another tenant's paths, another KV mount) or is used by several tenants, on purpose.
    #: Without it apply-plan and protect refuse such a path (see :func:`isolation_problems`).
    shared: bool = False
    #: Set by a reviewer, never by discover: keys of the Secret ``source`` that are *not*
    #: moved to the vault and that the reviewer accepts to lose when ``target finalize
    #: --delete-secrets`` deletes the Secret. Without them a Secret holding a key that no
    #: workload of the tenant maps is kept (docs/lifecycle.md, "What is never deleted").
    released_keys: list[FieldName] = msgspec.field(default_factory=list)

    @property
    def mount(self) -> str:
        """The KV mount: the part of ``vaultPath`` before ``/data/``."""
        return split_vault_path(self.vault_path)[0]


class SecretFile(_Base, kw_only=True):
    """A Secret mounted as files (secret or projected volume): env injection cannot replace it."""

    source: SourceRef
    volume: DnsSubdomain
    mount_paths: list[NonEmptyLine] = msgspec.field(default_factory=list)


class FinalizedRef(_Base, kw_only=True):
    """One Secret reference ``target finalize`` removed from a pod template, recorded so that
    ``target unprotect`` can put it back exactly (names only, never a value)."""

    container: DnsLabel
    #: The reference was in ``initContainers`` rather than ``containers``.
    init: bool = False
    #: ``env`` (one ``env[].valueFrom.secretKeyRef``) or ``envFrom`` (one ``secretRef``).
    via: Literal["env", "envFrom"]
    secret: DnsSubdomain
    #: ``env`` only: the Secret key and the variable it fed.
    key: FieldName | None = None
    env: EnvVarName | None = None
    #: ``envFrom`` only: the ``prefix`` of the entry (absent: none).
    prefix: Annotated[str, Meta(pattern=ENV_VAR, max_length=rules.MAX_ENV_VAR)] | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.via == "env" and (self.key is None or self.env is None):
            raise ValueError("a finalized env reference needs both 'key' and 'env'")
        if self.via == "envFrom" and (self.key is not None or self.env is not None):
            raise ValueError("a finalized envFrom reference has no 'key' or 'env' (only 'prefix')")


EnvUseWhere = Literal[
    "command",
    "args",
    "env",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "postStart",
    "preStop",
]


class EnvUse(_Base, kw_only=True):
    """A place other than the process environment that reads a migrated variable: a
    ``$(VAR)`` expansion in ``command``/``args``/another env value, or an exec probe or
    lifecycle hook (which run with the container spec's env, not the wrapper's child env).
    Written by discover for reviewers; finalize keeps such references (docs/lifecycle.md)."""

    env: EnvVarName
    container: DnsLabel
    #: The container is an init container.
    init: bool = False
    where: EnvUseWhere
    #: ``where: env`` only: the variable whose value expands ``$(env)``.
    target: EnvVarName | None = None


class StatusChange(_Base, kw_only=True):
    """One entry of a workload's status history."""

    status: WorkloadStatus
    at: UtcTimestamp
    by: OneLine | None = None
    reason: OneLine | None = None


class Workload(_Base, kw_only=True):
    """A Deployment, StatefulSet or DaemonSet of one tenant."""

    kind: WorkloadKind
    name: DnsSubdomain
    replicas: Replicas | None = None
    status: WorkloadStatus | None = None
    secrets: list[SecretRef]
    # --- extensions (optional) ---
    #: The ServiceAccount the pods run as (``default`` when the pod spec names none).
    service_account: DnsSubdomain | None = None
    #: Why the workload is skipped, or a note for reviewers.
    reason: OneLine | None = None
    #: Secrets consumed as files; kept for review, not migrated by env injection.
    secret_files: list[SecretFile] = msgspec.field(default_factory=list)
    #: The last error ``protect`` recorded (rollout timeout, drift, ...).
    last_error: OneLine | None = None
    #: Every status change, oldest first.
    history: list[StatusChange] = msgspec.field(default_factory=list)
    #: When ``target finalize`` removed the workload's Secret references (status stays
    #: ``migrated``); cleared by ``target unprotect``, which puts them back.
    finalized_at: UtcTimestamp | None = None
    #: The references finalize removed (written just before its patch, so a killed run can
    #: still be undone); unprotect restores exactly these.
    finalized_refs: list[FinalizedRef] = msgspec.field(default_factory=list)
    #: Written by discover: where a mapped variable is read besides the environment
    #: (``$(VAR)``, exec probes, lifecycle hooks), so reviewers see it.
    env_uses: list[EnvUse] = msgspec.field(default_factory=list)
    #: Set by a reviewer, never by discover: loader / interpreter variables
    #: (:data:`cloudtaser.plan.rules.DANGEROUS_ENV`) this workload may receive from the vault.
    #: Whoever can write the tenant's vault path can run code in the pod through them, so
    #: ``plan validate``, apply-plan, protect and the injector refuse them unless listed here.
    accepted_dangerous_env: list[EnvVarName] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        envs = self.env_names
        if len(envs) == len(set(envs)):
            return
        seen: dict[str, str] = {}
        for secret in self.secrets:
            for field, env in secret.fields.items():
                where = f"{secret.source}.{field}"
                if env in seen:
                    raise ValueError(
                        f"environment variable {env!r} is fed twice in {self.kind} {self.name} "
                        f"(by {seen[env]} and by {where}); one of them must be renamed or dropped"
                    )
                seen[env] = where

    @property
    def effective_status(self) -> WorkloadStatus:
        """``status``, with an absent value meaning ``pending``."""
        return self.status or WorkloadStatus.PENDING

    def set_status(
        self,
        status: WorkloadStatus,
        *,
        by: str | None = None,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record a status change (the new status, and an entry in ``history``)."""
        when = (at or datetime.now(UTC)).replace(microsecond=0)
        self.status = status
        self.history.append(StatusChange(status=status, at=when, by=by, reason=reason))

    @property
    def env_names(self) -> list[str]:
        """Every environment variable this workload will receive, in plan order."""
        return [env for secret in self.secrets for env in secret.fields.values()]


class Tenant(_Base, kw_only=True):
    """The workloads of one namespace."""

    name: DnsLabel
    namespace: DnsLabel
    workloads: list[Workload]
    # --- extensions (optional) ---
    #: A KV v2 path prefix (``<mount>/data/<segments>``) that belongs to this tenant besides
    #: the scope the path template gives it (e.g. a legacy layout); reviewer-set.
    path_prefix: VaultPath | None = None

    def __post_init__(self) -> None:
        seen: dict[tuple[str, str], int] = {}
        for index, workload in enumerate(self.workloads):
            key = (str(workload.kind), workload.name)
            if key in seen:
                raise ValueError(
                    f"workloads[{index}]: duplicate {workload.kind} {workload.name!r} "
                    f"(already at workloads[{seen[key]}])"
                )
            seen[key] = index


class PlanMetadata(_Base, kw_only=True):
    """Identification and audit fields of a plan."""

    name: PlanName
    cluster: OneLine | None = None
    created_at: UtcTimestamp | None = None
    created_by: OneLine | None = None
    # --- extensions (optional) ---
    #: The vault Kubernetes auth mount the cluster's workloads log in through
    #: (absent: ``kubernetes``, i.e. ``auth/kubernetes``).
    auth_mount: MountName | None = None
    #: The KV v2 mount every ``vaultPath`` must live in (absent: any, taken per path).
    kv_mount: MountName | None = None
    #: The naming template discovery used for vault paths. It also defines each tenant's
    #: scope (absent: ``{mount}/data/{namespace}/{secret}``); see :func:`tenant_scope`.
    path_template: OneLine | None = None
    #: The value of ``{cluster}`` in ``pathTemplate`` (absent: the plan name).
    path_cluster: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(?!\n)$")] | None = (
        None
    )
    #: What discovery could not read (e.g. a namespace or Secrets it had no permission for):
    #: the plan does not cover these. Absent or empty: discovery read everything it needed.
    unread: list[NonEmptyLine] = msgspec.field(default_factory=list)


class Approval(_Base, kw_only=True):
    """One reviewer's signature over the plan's reviewed content (docs/approval.md).

    Only ``signature`` is proof: it is an SSHSIG (namespace ``cloudtaser-plan``) over the
    canonical reviewed content (:mod:`cloudtaser.plan.canonical`). ``identity`` names the
    principal to look up in an allowed-signers file; ``at``, ``comment`` and ``digest`` are
    informative (``digest`` tells a stale approval from a current one without verifying).
    """

    identity: ApprovalIdentity
    at: UtcTimestamp
    digest: Digest
    signature: ArmoredSignature
    comment: Annotated[str, Meta(pattern=ONE_LINE, max_length=1024)] | None = None


class MigrationPlan(_Base, kw_only=True):
    """A CloudTaser MigrationPlan (``cloudtaser.io/v1``)."""

    api_version: Literal["cloudtaser.io/v1"] = msgspec.field(name="apiVersion")
    kind: Literal["MigrationPlan"]
    metadata: PlanMetadata
    tenants: list[Tenant]
    # --- extensions (optional) ---
    #: Reviewers' signatures over the reviewed content (``cloudtaser plan approve``).
    approvals: Annotated[list[Approval], Meta(max_length=MAX_APPROVALS)] = msgspec.field(
        default_factory=list
    )

    def __post_init__(self) -> None:
        seen_approvals: dict[tuple[str, str], int] = {}
        for index, approval in enumerate(self.approvals):
            key = (approval.identity, approval.digest)
            if key in seen_approvals:
                raise ValueError(
                    f"approvals[{index}]: duplicate approval by {approval.identity!r} of "
                    f"{approval.digest} (already at approvals[{seen_approvals[key]}]); "
                    "remove one of them"
                )
            seen_approvals[key] = index
        names: dict[str, int] = {}
        namespaces: dict[str, int] = {}
        for index, tenant in enumerate(self.tenants):
            if tenant.name in names:
                raise ValueError(
                    f"tenants[{index}]: duplicate tenant name {tenant.name!r} "
                    f"(already at tenants[{names[tenant.name]}])"
                )
            if tenant.namespace in namespaces:
                raise ValueError(
                    f"tenants[{index}]: namespace {tenant.namespace!r} already belongs to "
                    f"tenants[{namespaces[tenant.namespace]}] (one tenant per namespace)"
                )
            names[tenant.name] = index
            namespaces[tenant.namespace] = index
        kv_mount = self.metadata.kv_mount
        if kv_mount is not None:
            for t_index, tenant in enumerate(self.tenants):
                for w_index, workload in enumerate(tenant.workloads):
                    for s_index, secret in enumerate(workload.secrets):
                        if secret.mount != kv_mount:
                            raise ValueError(
                                f"tenants[{t_index}].workloads[{w_index}].secrets[{s_index}]"
                                f".vaultPath: {secret.vault_path!r} is outside the plan's "
                                f"kvMount {kv_mount!r}"
                            )

    @property
    def auth_mount(self) -> str:
        """The Kubernetes auth mount (without ``auth/``); ``kubernetes`` when unrecorded."""
        return self.metadata.auth_mount or DEFAULT_AUTH_MOUNT

    def iter_workloads(self) -> Iterator[tuple[Tenant, Workload]]:
        """Every (tenant, workload) pair, in plan order."""
        for tenant in self.tenants:
            for workload in tenant.workloads:
                yield tenant, workload


def rule_problem(plan: MigrationPlan) -> tuple[str, str] | None:
    """The first rule-book violation the schema cannot express, as ``(location, message)``.

    The Struct patterns are the schema (and the JSON schema); the rules no pattern can carry
    (a vault path segment over 128 characters, a reserved mount in any letter case, a mount
    over the length limit) come from :mod:`cloudtaser.plan.rules`, the same functions
    apply-plan, verify-plan, protect and discover call. ``loads`` runs this on every plan, so
    ``plan validate`` accepts exactly what those commands accept.

    Per workload it also refuses a vault field mapped to a loader / interpreter variable the
    workload does not accept (:func:`dangerous_env_violation`) and a ``finalizedRefs`` entry
    that is not one of the workload's reviewed mappings (:func:`finalized_refs_violation`):
    both change what runs, so every command that loads a plan refuses them.
    """
    meta = plan.metadata
    if meta.auth_mount is not None:
        problem = rules.auth_mount_problem(meta.auth_mount)
        if problem:
            return "$.metadata.authMount", problem
    if meta.kv_mount is not None:
        problem = rules.kv_mount_problem(meta.kv_mount)
        if problem:
            return "$.metadata.kvMount", problem
    for t_index, tenant in enumerate(plan.tenants):
        for w_index, workload in enumerate(tenant.workloads):
            for s_index, secret in enumerate(workload.secrets):
                problem = rules.vault_path_problem(secret.vault_path)
                if problem:
                    where = f"$.tenants[{t_index}].workloads[{w_index}].secrets[{s_index}]"
                    return f"{where}.vaultPath", problem
            violation = _workload_problem(
                tenant, workload, f"$.tenants[{t_index}].workloads[{w_index}]"
            )
            if violation is not None:
                return violation
    return None


def _workload_problem(tenant: Tenant, workload: Workload, where: str) -> tuple[str, str] | None:
    """The first dangerous-target or forged-run-state problem of one workload."""
    who = f"tenant {tenant.name}, {workload.kind} {workload.name}"
    return dangerous_env_violation(workload, where, who) or finalized_refs_violation(
        workload, where, who
    )


def dangerous_env_violation(workload: Workload, where: str, who: str) -> tuple[str, str] | None:
    """``(location, message)`` when the workload maps a vault field to a dangerous variable
    it does not accept (:func:`cloudtaser.plan.rules.dangerous_env_problem`), or its
    ``acceptedDangerousEnv`` holds an entry that accepts nothing.

    A skipped workload gets no grant and no annotation, so it may hold such a mapping (that is
    how discover writes it, with the reason): only its ``acceptedDangerousEnv`` is checked.
    """
    accepted = workload.accepted_dangerous_env
    if workload.effective_status is not WorkloadStatus.SKIPPED:
        for s_index, secret in enumerate(workload.secrets):
            for field, env in secret.fields.items():
                problem = rules.dangerous_env_problem(env, accepted)
                if problem is not None:
                    return (
                        f"{where}.secrets[{s_index}].fields.{field}",
                        f"{who}, secret {secret.source}, field {field!r}: {problem}",
                    )
    mapped = set(workload.env_names)
    seen: set[str] = set()
    for index, name in enumerate(accepted):
        problem = rules.accepted_dangerous_env_problem(name, mapped)
        if problem is None and name in seen:
            problem = f"{rules.shown(name)} is listed twice; remove one"
        if problem is not None:
            return (
                f"{where}.acceptedDangerousEnv[{index}]",
                f"{who}: acceptedDangerousEnv: {problem}",
            )
        seen.add(name)
    return None


def finalized_ref_problem(workload: Workload, ref: FinalizedRef) -> str | None:
    """Why ``ref`` is not a reference ``target finalize`` could have recorded for
    ``workload``, or None.

    ``finalizedRefs`` is run state, outside the signed reviewed content, and ``target
    unprotect`` puts back whatever it lists. So each entry must be one of the workload's
    reviewed mappings, exactly as :func:`cloudtaser.target.finalize.step.finalize_edit` records
    them (it removes only references whose (Secret, key, env) triples the plan maps):

    * ``via: env``: a secret of the workload with ``source`` = the Secret maps ``key`` to
      ``env`` (``via`` env, envFrom or absent: the same reviewed key-to-variable pair);
    * ``via: envFrom``: a secret with ``source`` = the Secret and ``via`` envFrom (or absent,
      as in plans without ``via``) maps some key ``k`` to ``<prefix>k``: the prefix is one a
      reviewer saw, so every restored variable is named the way the review showed.
    """
    candidates = [s for s in workload.secrets if s.source == ref.secret and s.via != "vaultAgent"]
    if ref.via == "env":
        if any(s.fields.get(ref.key or "") == ref.env for s in candidates):
            return None
        return (
            f"env {ref.env} from Secret {ref.secret} key {ref.key} (container {ref.container}) "
            "is not a mapping of the workload's reviewed secrets"
        )
    prefix = ref.prefix or ""
    if any(
        env == prefix + key
        for s in candidates
        if s.via in {None, "envFrom"}
        for key, env in s.fields.items()
    ):
        return None
    shown_prefix = f" with prefix {prefix}" if prefix else ""
    return (
        f"envFrom of Secret {ref.secret}{shown_prefix} (container {ref.container}) is not an "
        "envFrom mapping of the workload's reviewed secrets"
    )


def finalized_refs_violation(workload: Workload, where: str, who: str) -> tuple[str, str] | None:
    """``(location, message)`` for the first ``finalizedRefs`` entry that is not one of the
    workload's reviewed mappings (:func:`finalized_ref_problem`), or None."""
    for index, ref in enumerate(workload.finalized_refs):
        problem = finalized_ref_problem(workload, ref)
        if problem is not None:
            return (
                f"{where}.finalizedRefs[{index}]",
                f"{who}: finalizedRefs[{index}]: {problem}. finalizedRefs is run state, not "
                "signed by the approvals, and `target unprotect` would put it into the "
                "workload: the plan was edited after finalize. Restore the plan file from "
                "the run that wrote it, or remove the entry",
            )
    return None


# --- the rule book: path templates and tenant isolation --------------------------------------
#
# One tenant must never gain another tenant's secrets through the plan. Discover names paths
# with an injective template ({namespace} is a whole segment), so each tenant owns a disjoint
# *scope*; discover skips (with a reason) anything outside it; apply-plan, protect and
# 'plan validate' refuse a plan in which an active workload names a path outside its tenant's
# scope, a path inside another tenant's scope, a path several tenants use, or a second KV mount,
# unless a reviewer marked that secret ``shared: true``.


def plan_kv_mount(plan: MigrationPlan) -> str | None:
    """The one KV mount of the plan: ``kvMount``, else the template's literal mount, else the
    mount every active non-shared path uses (None when they use several, or none)."""
    if plan.metadata.kv_mount:
        return plan.metadata.kv_mount
    template = plan.metadata.path_template or DEFAULT_PATH_TEMPLATE
    literal = template.partition("/data/")[0]
    if "{" not in literal and literal:
        return literal
    mounts = {
        secret.vault_path.partition("/data/")[0]
        for _tenant, workload in plan.iter_workloads()
        if workload.effective_status is not WorkloadStatus.SKIPPED
        for secret in workload.secrets
        if not secret.shared
    }
    return mounts.pop() if len(mounts) == 1 else None


def isolation_problems(plan: MigrationPlan) -> list[tuple[str, str]]:
    """``(location, problem)`` for every active secret that could widen a tenant's policy.

    Skipped workloads are ignored (they get no grant). A secret marked ``shared: true`` is
    allowed anywhere in a KV mount (the reviewer decided it); everything else must lie in its
    tenant's scope (template or ``pathPrefix``), in no other tenant's scope, in the plan's one
    KV mount, and be used by this tenant only.
    """
    template = plan.metadata.path_template or DEFAULT_PATH_TEMPLATE
    problem = template_problem(template)
    if problem is not None:
        return [("$.metadata.pathTemplate", f"path template {template!r} {problem}")]
    mount = plan_kv_mount(plan)
    cluster = plan.metadata.path_cluster or plan.metadata.name
    problems: list[tuple[str, str]] = []
    scopes = {
        tenant.name: tenant_scope(
            template,
            namespace=tenant.namespace,
            mount=mount or DEFAULT_KV_MOUNT,
            cluster=cluster,
        )
        for tenant in plan.tenants
    }
    users: dict[str, set[str]] = {}
    for t_index, tenant in enumerate(plan.tenants):
        for w_index, workload in enumerate(tenant.workloads):
            if workload.effective_status is WorkloadStatus.SKIPPED:
                continue
            for s_index, secret in enumerate(workload.secrets):
                path = secret.vault_path
                users.setdefault(path, set())
                if not secret.shared:
                    users[path].add(tenant.name)
                if secret.shared:
                    continue
                where = f"$.tenants[{t_index}].workloads[{w_index}].secrets[{s_index}].vaultPath"
                hint = (
                    "; if this is intended, mark the secret 'shared: true' (a reviewer's "
                    "decision, see docs/plan-format.md)"
                )
                if mount is None:
                    problems.append(
                        (
                            where,
                            f"{path!r}: the plan's paths span several KV mounts; set "
                            f"metadata.kvMount or mark the other mounts' secrets shared{hint}",
                        )
                    )
                    continue
                if secret.vault_path.partition("/data/")[0] != mount:
                    problems.append(
                        (where, f"{path!r} is outside the plan's KV mount {mount!r}{hint}")
                    )
                    continue
                own = bool(scopes[tenant.name].fullmatch(path)) or rules.path_in_prefix(
                    path, tenant.path_prefix
                )
                if not own:
                    problems.append(
                        (
                            where,
                            f"{path!r} is outside the scope of tenant {tenant.name!r} "
                            f"(namespace {tenant.namespace}, path template {template!r})"
                            f"{hint}",
                        )
                    )
                    continue
                others = sorted(
                    other.name
                    for other in plan.tenants
                    if other.name != tenant.name
                    and (
                        scopes[other.name].fullmatch(path)
                        or rules.path_in_prefix(path, other.path_prefix)
                    )
                )
                if others:
                    problems.append(
                        (
                            where,
                            f"{path!r} also lies in the scope of tenant(s) {', '.join(others)}"
                            f"{hint}",
                        )
                    )
    for path, tenants in users.items():
        if len(tenants) > 1:
            problems.append(
                (
                    "$.tenants",
                    f"{path!r} is used by tenants {', '.join(sorted(tenants))}: each of them would "
                    "get read on it; mark every use 'shared: true' if this is intended",
                )
            )
    return problems


def check_isolation(plan: MigrationPlan, *, source: str = "<plan>") -> None:
    """Raise :class:`PlanError` naming every :func:`isolation_problems` entry (at most 20)."""
    problems = isolation_problems(plan)
    if not problems:
        return
    shown = "; ".join(f"{where}: {what}" for where, what in problems[:20])
    more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
    raise PlanError(
        f"the plan would let a tenant read secrets outside its own scope: {shown}{more}",
        source=source,
    )


def split_vault_path(vault_path: str) -> tuple[str, str]:
    """Split ``<mount>/data/<rest>`` into ``(mount, rest)``.

    The mount is everything before the first ``/data/`` segment. Only paths that passed plan
    validation are expected here.
    """
    mount, sep, rest = vault_path.partition("/data/")
    if not sep or not mount or not rest:
        raise ValueError(f"{vault_path!r} is not a KV v2 data path (<mount>/data/<path>)")
    return mount, rest


# --- loading -----------------------------------------------------------------------------

_ALIASES_FORBIDDEN = yaml_rs.AliasLimits(max_alias_expansions_per_anchor=0)
_LOCATION = re.compile(r"^(?P<message>.*?)(?: - at `(?P<location>\$[^`]*)`)?$", re.DOTALL)


def _yaml_problem(message: str) -> str:
    """One line from the YAML parser's message (no source excerpt: it could hold anything)."""
    if "alias" in message and "limit" in message:
        return (
            "YAML anchors and aliases (&name / *name) are not allowed in a plan; "
            "write every value out"
        )
    if message.startswith("duplicate mapping key"):
        return f"not valid YAML: {message.splitlines()[0]} (a key must appear once per mapping)"
    first = message.splitlines()[0] if message else "invalid YAML"
    reason = message.strip().splitlines()[-1] if message.strip() else ""
    if reason and reason != first and not reason.lstrip().startswith(("|", "^")):
        first = f"{first}: {reason.strip()}"
    return f"not valid YAML: {first.removeprefix('YAML parse error at ')}"


def _check_header(data: dict[str, Any], source: str) -> None:
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        value = data.get(key)
        if value is None:
            raise PlanError(
                f"missing {key}: a plan starts with 'apiVersion: {API_VERSION}' and 'kind: {KIND}'",
                source=source,
                location=f"$.{key}",
            )
        if value != expected:
            shown = value if isinstance(value, str) and len(value) < 80 else type(value).__name__
            raise PlanError(
                f"must be {expected!r}, got {shown!r}; this is not a cloudtaser plan "
                "or it was written by an incompatible version",
                source=source,
                location=f"$.{key}",
            )


_KEY_IN = re.compile(r"^(?P<message>.*?) - at `key` in `(?P<location>\$[^`]*)`$", re.DOTALL)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _walk(data: Any, location: str) -> Any:
    """Follow a msgspec location (``$.a[0].b``) through the raw YAML data, or return None."""
    node = data
    for name, index in _STEP.findall(location[1:]):
        if name and isinstance(node, dict):
            node = node.get(name)
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    return node


def _explain_fields(data: Any, mapping_location: str) -> tuple[str, str] | None:
    """Name the offending entry of a ``fields`` mapping (msgspec only says ``fields[...]``)."""
    fields = _walk(data, mapping_location)
    if not isinstance(fields, dict):
        return None
    for key, value in fields.items():
        if not isinstance(key, str) or not re.match(FIELD_NAME, key) or len(key) > 253:
            return (
                f"field name {key!r} is not allowed: use letters, digits, '.', '_' and '-'",
                mapping_location,
            )
        if not isinstance(value, str) or not re.match(ENV_VAR, value) or len(value) > 256:
            return (
                f"environment variable name {value!r} is not valid: it must match "
                "[A-Za-z_][A-Za-z0-9_]*",
                f"{mapping_location}.{key}",
            )
    return None


_DESCRIBE = {
    DNS_LABEL: "a Kubernetes DNS-1123 label (lower-case letters, digits and '-', at most 63)",
    DNS_SUBDOMAIN: "a Kubernetes name (lower-case letters, digits, '-' and '.')",
    PLAN_NAME: "a safe plan name (letters, digits, '.', '_', '-'; at most 63; alphanumeric ends)",
    ENV_VAR: "a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
    FIELD_NAME: "a safe field name (letters, digits, '.', '_', '-'; not '.' or '..')",
    VAULT_PATH: (
        "a safe KV v2 path: <mount>/data/<path> with segments of ASCII letters, digits, '.', "
        "'_', '-' only, none starting with '.' (no '..', globs, quotes, spaces or empty "
        "segments), and not in a reserved mount (sys, auth, identity, cubbyhole, token)"
    ),
    MOUNT: (
        "a safe mount name (segments of letters, digits, '.', '_', '-', none starting with "
        "'.'; not sys, auth, identity, cubbyhole or token in any case)"
    ),
    ONE_LINE: "a single line of printable text",
    rules.APPROVAL_IDENTITY: (
        "an approver identity as in an allowed-signers file (letters, digits and @._+=:/%~-)"
    ),
    rules.DIGEST: "a reviewed-content digest (sha256: and 64 lower-case hex digits)",
    rules.ARMORED_SIGNATURE: (
        "an armored SSH signature as ssh-keygen -Y sign writes it (-----BEGIN SSH "
        "SIGNATURE----- ...)"
    ),
}
_REGEX = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$", re.DOTALL)


def _humanize(message: str, data: Any, location: str) -> str:
    """Replace msgspec's "matching regex '<pattern>'" with what the rule means and the value."""
    match = _REGEX.match(message)
    pattern = match["pattern"].replace("\\\\", "\\") if match else ""
    if pattern not in _DESCRIBE:
        return message
    value = _walk(data, location)
    shown = repr(value[:100] + "…" if isinstance(value, str) and len(value) > 100 else value)
    return f"{shown} is not {_DESCRIBE[pattern]}"


def _translate(exc: msgspec.ValidationError, data: Any, source: str) -> PlanError:
    text = str(exc)
    key_match = _KEY_IN.match(text)
    if key_match:
        message, location = key_match["message"], key_match["location"]
    else:
        match = _LOCATION.match(text)
        message, location = (match["message"], match["location"]) if match else (text, None)
    location = location or "$"
    if location.endswith("[...]") or key_match:
        explained = _explain_fields(data, location.removesuffix("[...]"))
        if explained is not None:
            message, location = explained
    else:
        message = _humanize(message, data, location)
    return PlanError(message.replace("`", "'"), source=source, location=location)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cycle collector while building a large acyclic tree (restores its state)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def loads(text: str | bytes, *, source: str = "<string>") -> MigrationPlan:
    """Parse and validate a plan from YAML text. Raises :class:`PlanError` on any problem."""
    with _no_cycle_collection():
        return _loads(text, source)


def _loads(text: str | bytes, source: str) -> MigrationPlan:
    if len(text) > MAX_PLAN_BYTES:
        raise PlanError(
            f"plan is larger than {MAX_PLAN_BYTES // (1024 * 1024)} MiB; refusing to parse it",
            source=source,
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PlanError(
                f"not UTF-8 text (invalid byte at offset {exc.start})", source=source
            ) from None
    hidden = rules.hidden_character_problem(text)
    if hidden is not None:
        raise PlanError(hidden, source=source)
    try:
        data = yaml_rs.loads(
            text,
            parse_datetime=False,
            alias_limits=_ALIASES_FORBIDDEN,
            duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error,
        )
    except yaml_rs.YAMLDecodeError as exc:
        raise PlanError(_yaml_problem(str(exc)), source=source) from None
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise PlanError(f"not valid YAML: {type(exc).__name__}", source=source) from None
    if data is None:
        raise PlanError("the file is empty; expected a MigrationPlan mapping", source=source)
    if not isinstance(data, dict):
        what = (
            "a list (or several YAML documents)"
            if isinstance(data, list)
            else (f"a {type(data).__name__}")
        )
        raise PlanError(
            f"expected one MigrationPlan mapping at the top level, got {what}", source=source
        )
    _check_header(data, source)
    try:
        plan = msgspec.convert(data, MigrationPlan, from_attributes=False)
    except msgspec.ValidationError as exc:
        raise _translate(exc, data, source) from None
    violation = rule_problem(plan)
    if violation is not None:
        location, message = violation
        raise PlanError(message, source=source, location=location)
    return plan


def load(path: str | os.PathLike[str]) -> MigrationPlan:
    """Read and validate the plan at ``path``."""
    source = os.fspath(path)
    try:
        with Path(path).open("rb") as handle:
            text = handle.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        raise PlanError("no such file", source=source) from None
    except IsADirectoryError:
        raise PlanError("is a directory, not a plan file", source=source) from None
    except OSError as exc:
        raise PlanError(f"cannot read: {exc.strerror}", source=source) from None
    return loads(text, source=source)


# --- saving ------------------------------------------------------------------------------


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./@-]*$")
#: Words YAML 1.1 or 1.2 readers would turn into booleans or null when unquoted.
_SPECIAL = frozenset(
    word
    for base in ("y", "yes", "n", "no", "true", "false", "on", "off", "null")
    for word in (base, base.capitalize(), base.upper())
)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value not in _SPECIAL:
            return value
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot emit {type(value).__name__} in a plan")


def _emit(node: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(value, dict | list) and value:
                out.append(head)
                # block sequences start at the key's column (as kubectl writes them)
                _emit(value, indent + 2 if isinstance(value, dict) else indent, out)
            elif isinstance(value, dict):
                out.append(f"{head} {{}}")
            elif isinstance(value, list):
                out.append(f"{head} []")
            else:
                out.append(f"{head} {_scalar(value)}")
    else:
        for item in node:
            if isinstance(item, dict | list) and item:
                start = len(out)
                _emit(item, indent + 2, out)
                out[start] = f"{pad}- {out[start][indent + 2 :]}"
            elif isinstance(item, dict | list):
                out.append(f"{pad}- {'{}' if isinstance(item, dict) else '[]'}")
            else:
                out.append(f"{pad}- {_scalar(item)}")


def dumps(plan: MigrationPlan) -> str:
    """Deterministic YAML: same plan, same bytes; keys in schema order, block style.

    Strings are written plain only when no YAML 1.1 or 1.2 reader could take them for anything
    but a string; everything else is double-quoted (JSON escaping, ASCII only).
    """
    out: list[str] = []
    with _no_cycle_collection():
        _emit(msgspec.to_builtins(plan), 0, out)
    out.append("")
    return "\n".join(out)


def dump(plan: MigrationPlan) -> bytes:
    """:func:`dumps` as UTF-8 bytes."""
    return dumps(plan).encode("utf-8")


def save(plan: MigrationPlan, path: str | os.PathLike[str]) -> None:
    """Write the plan atomically (:func:`cloudtaser.fileio.atomic_write`: temp file in the
    same directory, fsync, rename). A crash at any moment leaves either the old file or the
    new one, never a mix. The file's permission bits are kept when it already exists.
    """
    atomic_write(path, dump(plan))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan, generated from the Structs (for editors and CI checks)."""
    schema: dict[str, Any] = msgspec.json.schema(MigrationPlan)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtaser MigrationPlan (cloudtaser.io/v1)"
    return schema
