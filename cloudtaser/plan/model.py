"""The MigrationPlan Structs: the plan file format as typed values.

The plan is the one artifact that crosses the air gap between cluster and vault, and the
compliance evidence of a migration. It never holds a secret value: only names of Kubernetes
Secrets, their keys, vault paths and environment variable names.

Compatibility: the documented CloudTaser schema (``apiVersion: cloudtaser.io/v1``,
``kind: MigrationPlan``) plus optional extension fields, all documented in
``docs/plan-format.md``. Unknown fields are rejected so a reviewer's typo is never ignored.

The patterns and limits the Structs carry come from :mod:`cloudtaser.plan.rules`; the rules
over a whole plan (tenant isolation, dangerous variables, forged run state) are
:mod:`cloudtaser.plan.isolation`; reading and writing the YAML is :mod:`cloudtaser.plan.yamlio`;
locking and recording is :mod:`cloudtaser.plan.store`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from cloudtaser.plan import rules
from cloudtaser.plan.rules import (
    DEFAULT_AUTH_MOUNT,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME,
    ENV_PREFIX,
    FIELD_NAME,
    FILE_PATH,
    MOUNT,
    ONE_LINE,
    PLAN_NAME,
    SOURCE_REF,
    VAULT_PATH,
)

__all__ = [
    "API_VERSION",
    "CLOUDTASER_KINDS",
    "KIND",
    "MAX_APPROVALS",
    "Approval",
    "EnvUse",
    "EnvUseWhere",
    "FileMount",
    "FinalizedRef",
    "FinalizedVolume",
    "GitopsAction",
    "GitopsWait",
    "MigrationPlan",
    "Owner",
    "OwnerKind",
    "OwnerTool",
    "PlanMetadata",
    "SecretFile",
    "SecretFileKey",
    "SecretRef",
    "StatusChange",
    "Tenant",
    "VaultRead",
    "Workload",
    "WorkloadKind",
    "WorkloadStatus",
    "json_schema",
    "split_vault_path",
]

API_VERSION: Final = "cloudtaser.io/v1"
KIND: Final = "MigrationPlan"

# --- constrained string types (patterns and limits: the rule book, cloudtaser.plan.rules) ------

DnsLabel = Annotated[str, Meta(pattern=DNS_LABEL, max_length=rules.MAX_DNS_LABEL)]
DnsSubdomain = Annotated[str, Meta(pattern=DNS_SUBDOMAIN, max_length=rules.MAX_DNS_SUBDOMAIN)]
PlanName = Annotated[str, Meta(pattern=PLAN_NAME, max_length=rules.MAX_PLAN_NAME)]
#: The widest name any plan may map (the ``relaxed`` rule); the plan's ``envNameRule``
#: narrows it when the plan is loaded (:func:`cloudtaser.plan.isolation.rule_problem`).
EnvVarName = Annotated[str, Meta(pattern=ENV_NAME, max_length=rules.MAX_ENV_VAR)]
FieldName = Annotated[str, Meta(pattern=FIELD_NAME, max_length=rules.MAX_FIELD_NAME)]
#: The pattern gives the schema; :func:`cloudtaser.plan.isolation.rule_problem` applies the
#: rest of the rule book (segment length, reserved mounts) when a plan is loaded.
VaultPath = Annotated[str, Meta(pattern=VAULT_PATH, max_length=rules.MAX_VAULT_PATH)]
MountName = Annotated[str, Meta(pattern=MOUNT, max_length=rules.MAX_MOUNT)]
SourceRef = Annotated[str, Meta(pattern=SOURCE_REF, min_length=1, max_length=512)]
OneLine = Annotated[str, Meta(pattern=ONE_LINE, max_length=4096)]
NonEmptyLine = Annotated[str, Meta(pattern=ONE_LINE, min_length=1, max_length=1024)]
UtcTimestamp = Annotated[datetime, Meta(tz=True)]
FilePath = Annotated[str, Meta(pattern=FILE_PATH, max_length=rules.MAX_FILE_PATH)]
FileMode = Annotated[int, Meta(ge=0, le=rules.MAX_FILE_MODE)]
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
    """The workload kinds a plan may name: CloudTaser's three (:data:`CLOUDTASER_KINDS`) and
    our extension (issue 30): CronJobs (their job template), Jobs (recorded, never protected:
    a Job's pod template is immutable) and Argo Rollouts (``argoproj.io/v1alpha1``)."""

    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"
    # --- extensions (docs/plan-format.md) ---
    CRON_JOB = "CronJob"
    JOB = "Job"
    ROLLOUT = "Rollout"


#: The kinds CloudTaser's own tools know: a plan naming only these is valid for them
#: (``target discover --cloudtaser-kinds-only`` writes nothing else).
CLOUDTASER_KINDS: Final = frozenset(
    {WorkloadKind.DEPLOYMENT, WorkloadKind.STATEFUL_SET, WorkloadKind.DAEMON_SET}
)


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


OwnerTool = Literal["argocd", "flux", "helm", "external-secrets", "sealed-secrets", "cert-manager"]
OwnerKind = Literal[
    "Application",  # Argo CD
    "Kustomization",  # Flux kustomize-controller
    "HelmRelease",  # Flux helm-controller
    "Release",  # a Helm release (helm install/upgrade)
    "ExternalSecret",
    "SealedSecret",
    "Certificate",  # cert-manager
]


class Owner(_Base, kw_only=True):
    """Who writes a workload or Secret from elsewhere, so a live change may not last: written
    by discover from the labels, annotations and ownerReferences each tool sets
    (:mod:`cloudtaser.target.owners`, docs/gitops.md), for reviewers; never a value."""

    tool: OwnerTool
    #: The object that owns it (for Helm: the release, kept in ``helm.sh/release.v1`` Secrets).
    kind: OwnerKind
    name: Annotated[str, Meta(pattern=ONE_LINE, min_length=1, max_length=253)]
    #: The owner's namespace, when the evidence names it.
    namespace: DnsLabel | None = None
    #: The label, annotation or ownerReference that says so.
    evidence: NonEmptyLine
    #: The evidence is also written by another tool: ``app.kubernetes.io/instance`` is Argo
    #: CD's label tracking and every Helm chart's label; ``managed-by: Helm`` alone is also
    #: what a chart rendered by Argo CD or ``helm template`` carries.
    ambiguous: bool = False


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
    #: Without it apply-plan and protect refuse such a path (see
    #: :func:`cloudtaser.plan.isolation.isolation_problems`).
    shared: bool = False
    #: Set by a reviewer, never by discover: keys of the Secret ``source`` that are *not*
    #: moved to the vault and that the reviewer accepts to lose when ``target finalize
    #: --delete-secrets`` deletes the Secret. Without them a Secret holding a key that no
    #: workload of the tenant maps is kept (docs/lifecycle.md, "What is never deleted").
    released_keys: list[FieldName] = msgspec.field(default_factory=list)
    #: Written by discover: who writes this Secret from elsewhere (an operator, Git, Helm).
    owner: Owner | None = None

    @property
    def mount(self) -> str:
        """The KV mount: the part of ``vaultPath`` before ``/data/``."""
        return split_vault_path(self.vault_path)[0]


@dataclass(frozen=True)
class VaultRead:
    """One vault path a workload reads, and the fields it needs there
    (:meth:`Workload.vault_reads`); ``location`` is the plan entry, relative to the workload
    (``secrets[0]``, ``secretFiles[1]``)."""

    source: str
    vault_path: str
    fields: tuple[str, ...]
    location: str
    #: The path may lie outside the tenant's scope (a reviewer's ``shared: true``).
    shared: bool = False
    #: Fields of Secret files marked ``encoding: base64`` (stored as the base64 of the bytes).
    binary: tuple[str, ...] = ()


class SecretFileKey(_Base, kw_only=True):
    """One file of a migrated Secret volume: the Secret key (the vault field) and the file it
    becomes (a path relative to the volume root, ``items[].path`` or the key itself)."""

    key: FieldName
    file: FilePath
    #: The file's mode (``items[].mode``); absent: the volume's ``defaultMode``.
    mode: FileMode | None = None
    #: ``base64``: the value is not UTF-8 text (a keystore, a DER key); the vault field holds
    #: the base64 of its bytes and the runtime writes the decoded bytes (docs/secret-files.md).
    encoding: Literal["base64"] | None = None


class FileMount(_Base, kw_only=True):
    """Where one container mounts a Secret volume (``volumeMounts[]``)."""

    container: DnsLabel
    #: The container is an init container.
    init: bool = False
    mount_path: NonEmptyLine
    #: One file of the volume mounted alone (``subPath``): rendered at start, never updated
    #: in place (as with Kubernetes).
    sub_path: NonEmptyLine | None = None
    read_only: bool = False


class SecretFile(_Base, kw_only=True):
    """A Secret mounted as files, through a ``secret`` volume or a ``projected`` volume whose
    sources are all Secrets (one entry per Secret of the volume).

    With ``vaultPath`` and ``files`` the volume is migrated (issue 29): protect has the runtime
    render ``files`` from the vault into a memory volume of the same name, finalize replaces the
    volume's source by ``emptyDir {medium: Memory}``. Without them (plans written before, or a
    volume discover cannot migrate) it is recorded for review only and stays a Kubernetes
    Secret.
    """

    source: SourceRef
    volume: DnsSubdomain
    #: ``<container>:<mountPath>`` of every mount (written by earlier versions; see ``mounts``).
    mount_paths: list[NonEmptyLine] = msgspec.field(default_factory=list)
    # --- migration (optional; issue 29) ---
    #: Where the Secret's keys live in the vault: the same path as the Secret's env use, if any.
    vault_path: VaultPath | None = None
    #: The files the volume holds from this Secret (every key when the volume lists no
    #: ``items``), key names only.
    files: list[SecretFileKey] = msgspec.field(default_factory=list)
    #: The volume's ``defaultMode`` (absent: Kubernetes' 0o644, 420).
    default_mode: FileMode | None = None
    #: The Secret (or the projected source) was marked ``optional: true``.
    optional: bool = False
    #: The volume is a ``projected`` volume (all sources Secrets), not a ``secret`` volume.
    projected: bool = False
    #: The containers mounting the volume.
    mounts: list[FileMount] = msgspec.field(default_factory=list)
    #: Written by discover: who writes this Secret from elsewhere (an operator, Git, Helm),
    #: as on ``secrets[].owner``.
    owner: Owner | None = None

    def __post_init__(self) -> None:
        if (self.vault_path is None) != (not self.files):
            raise ValueError(
                f"secret file {self.source} (volume {self.volume}): 'vaultPath' and 'files' go "
                "together (both for a migrated volume, neither for one kept as a Secret)"
            )
        names = [f.file for f in self.files]
        if len(names) != len(set(names)):
            raise ValueError(f"volume {self.volume}: a file is listed twice in {self.source}")

    @property
    def migrated(self) -> bool:
        """The runtime serves this Secret's files from the vault."""
        return self.vault_path is not None


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
    prefix: Annotated[str, Meta(pattern=ENV_PREFIX, max_length=rules.MAX_ENV_VAR)] | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.via == "env" and (self.key is None or self.env is None):
            raise ValueError("a finalized env reference needs both 'key' and 'env'")
        if self.via == "envFrom" and (self.key is not None or self.env is not None):
            raise ValueError("a finalized envFrom reference has no 'key' or 'env' (only 'prefix')")


class FinalizedVolume(_Base, kw_only=True):
    """One pod volume whose Secret source ``target finalize`` replaced by
    ``emptyDir {medium: Memory}``, with the source exactly as it was (Kubernetes' own field
    names: Secret names, keys, paths and modes, never a value), so that ``target unprotect``
    puts it back."""

    volume: DnsSubdomain
    #: The ``secret`` volume source as it was.
    secret: dict[str, Any] | None = None
    #: The ``projected`` volume source as it was.
    projected: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.projected is None):
            raise ValueError(
                f"finalized volume {self.volume}: exactly one of 'secret' or 'projected'"
            )


EnvUseWhere = Literal[
    "command",
    "args",
    "env",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "postStart",
    "preStop",
    "subPathExpr",
]


class EnvUse(_Base, kw_only=True):
    """A place other than the process environment that reads a migrated variable: a
    ``$(VAR)`` expansion in ``command``/``args``/another env value, or an exec probe or
    lifecycle hook (which run with the container spec's env, not the wrapper's child env), or
    a ``volumeMounts[].subPathExpr`` (expanded by the kubelet, which the runtime cannot serve).
    Written by discover for reviewers; finalize keeps such references unless the injected pods
    show the runtime serving the use (docs/lifecycle.md)."""

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


#: The steps whose change can be written for Git (``--emit``).
GitopsAction = Literal["protect", "finalize"]


class GitopsWait(_Base, kw_only=True):
    """A change ``target protect --emit`` / ``target finalize --emit`` wrote as files for the
    workload's owner to commit, instead of patching it live (docs/gitops.md): the workload waits
    for its owner (Argo CD, Flux, Helm) to apply it, which ``--wait-for-git`` checks. Run
    state; cleared when the change is found applied and recorded."""

    #: Which step's change: ``protect`` (the status stays ``pending`` until it is applied) or
    #: ``finalize`` (``finalizedRefs`` / ``finalizedVolumes`` are recorded at emit time).
    action: GitopsAction
    emitted_at: UtcTimestamp
    #: The files written for this workload's owner (as given on the command line: relative
    #: to where it ran, or absolute).
    files: list[NonEmptyLine] = msgspec.field(default_factory=list)


class Workload(_Base, kw_only=True):
    """A Deployment, StatefulSet, DaemonSet, CronJob, Job or Argo Rollout of one tenant."""

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
    #: Secrets consumed as files (secret and projected volumes); migrated when they carry
    #: ``vaultPath`` and ``files``.
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
    #: The volumes finalize turned into memory volumes (same timing as ``finalizedRefs``);
    #: unprotect puts their Secret sources back.
    finalized_volumes: list[FinalizedVolume] = msgspec.field(default_factory=list)
    #: Written by discover: where a mapped variable is read besides the environment
    #: (``$(VAR)``, exec probes, lifecycle hooks), so reviewers see it.
    env_uses: list[EnvUse] = msgspec.field(default_factory=list)
    #: Set by a reviewer, never by discover: loader / interpreter variables
    #: (:data:`cloudtaser.plan.rules.DANGEROUS_ENV`) this workload may receive from the vault.
    #: Whoever can write the tenant's vault path can run code in the pod through them, so
    #: ``plan validate``, apply-plan, protect and the injector refuse them unless listed here.
    accepted_dangerous_env: list[EnvVarName] = msgspec.field(default_factory=list)
    #: Written by protect (run state): the cluster-specific values it left out of the pod
    #: template because the installed injector's cluster defaults supply them (``address``:
    #: ``cloudtaser.io/vault-address``, ``authMount``: ``vault-auth-path``, ``authMethod``:
    #: ``vault-auth-method``, ``namespace``: ``vault-namespace``); empty when it wrote them
    #: all. Cleared by unprotect.
    injector_defaults: list[Literal["address", "authMethod", "authMount", "namespace"]] = (
        msgspec.field(default_factory=list)
    )
    #: Written by discover: who writes this workload from elsewhere (Argo CD, Flux, Helm).
    owner: Owner | None = None
    #: Written by ``--emit`` (run state): the change waits for the owner to apply it from Git.
    gitops: GitopsWait | None = None

    def __post_init__(self) -> None:
        volume_files: dict[str, set[str]] = {}
        for entry in self.secret_files:
            files = volume_files.setdefault(entry.volume, set())
            for item in entry.files:
                if item.file in files:
                    raise ValueError(
                        f"volume {entry.volume} of {self.kind} {self.name}: file {item.file!r} "
                        "comes from two Secrets"
                    )
                files.add(item.file)
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

    @property
    def migrated_files(self) -> list[SecretFile]:
        """The Secret files the runtime serves from the vault (``vaultPath`` set), plan order."""
        return [f for f in self.secret_files if f.vault_path is not None]

    def vault_reads(self) -> list[VaultRead]:
        """Every vault path this workload reads and the fields it needs there: its secrets'
        field mappings, then its migrated Secret files' keys (plan order). What apply-plan
        grants, verify-plan proves and ``plan todo`` lists."""
        out = [
            VaultRead(
                source=s.source,
                vault_path=s.vault_path,
                fields=tuple(s.fields),
                location=f"secrets[{i}]",
                shared=s.shared,
            )
            for i, s in enumerate(self.secrets)
        ]
        shared = {s.vault_path for s in self.secrets if s.shared}
        for i, f in enumerate(self.secret_files):
            if f.vault_path is None:
                continue
            required = tuple(dict.fromkeys(k.key for k in f.files))
            out.append(
                VaultRead(
                    source=f.source,
                    vault_path=f.vault_path,
                    fields=required,
                    location=f"secretFiles[{i}]",
                    shared=f.vault_path in shared,
                    binary=tuple(k.key for k in f.files if k.encoding == "base64"),
                )
            )
        return out


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
    #: How the cluster's workloads log in (issue 31): ``kubernetes`` (the vault calls the
    #: cluster's TokenReview API at every login) or ``jwt`` (the vault checks tokens offline
    #: with the cluster's public signing keys). Absent: ``kubernetes``.
    auth_method: Literal["kubernetes", "jwt"] | None = None
    #: Which environment variable names the cluster passes to containers (written by
    #: discover from the API server's version; :data:`cloudtaser.plan.rules.ENV_NAME_RULES`):
    #: ``identifier`` (absent), ``kubernetes`` or ``relaxed``. Every mapped name must pass it.
    env_name_rule: rules.EnvNameRule | None = None
    #: The KV v2 mount every ``vaultPath`` must live in (absent: any, taken per path).
    kv_mount: MountName | None = None
    #: The naming template discovery used for vault paths. It also defines each tenant's
    #: scope (absent: ``{mount}/data/{namespace}/{secret}``); see
    #: :func:`cloudtaser.plan.rules.tenant_scope`.
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
                    for read in workload.vault_reads():
                        if split_vault_path(read.vault_path)[0] != kv_mount:
                            raise ValueError(
                                f"tenants[{t_index}].workloads[{w_index}].{read.location}"
                                f".vaultPath: {read.vault_path!r} is outside the plan's "
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


def split_vault_path(vault_path: str) -> tuple[str, str]:
    """Split ``<mount>/data/<rest>`` into ``(mount, rest)``.

    The mount is everything before the first ``/data/`` segment. Only paths that passed plan
    validation are expected here.
    """
    mount, sep, rest = vault_path.partition("/data/")
    if not sep or not mount or not rest:
        raise ValueError(f"{vault_path!r} is not a KV v2 data path (<mount>/data/<path>)")
    return mount, rest


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan, generated from the Structs (for editors and CI checks)."""
    schema: dict[str, Any] = msgspec.json.schema(MigrationPlan)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtaser MigrationPlan (cloudtaser.io/v1)"
    return schema
