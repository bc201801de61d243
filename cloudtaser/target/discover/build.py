"""``target discover``: scan one cluster and build the MigrationPlan.

Pure library: no printing, no exiting. The CLI supplies a progress callback and renders the
:class:`DiscoveryResult`. The module has two layers:

* pure functions over the plain-dict form of a pod template (``spec.template`` as API JSON):
  :func:`consumed_env` (shared with ``protect``'s drift check), :func:`env_consumptions`,
  :func:`secret_files`, :func:`vault_agent_paths`, the :class:`PathTemplate` naming rules and
  :func:`build_plan`, which turns scanned workloads into a validated plan;
* :func:`discover`, which lists Deployments, StatefulSets and DaemonSets (one paginated list
  per kind, cluster-wide or per chosen namespace), reads the *key names* of the Secrets that
  ``envFrom`` needs and calls :func:`build_plan`.

Secret values are never kept: a Secret object read from the API is reduced to its sorted key
names at once, and nothing else of it leaves the function that read it.

How each consumption form maps into the plan (documented in ``docs/discover.md``):

==============================  =================================================================
pod template                    plan
==============================  =================================================================
``env[].valueFrom               ``secrets[]`` entry ``source: <secret>``, ``via: env``,
.secretKeyRef``                 ``fields: {<key>: <env name>}``
``envFrom[].secretRef``         ``source: <secret>``, ``via: envFrom``, one field per key of
                                the Secret, env name ``<prefix><key>``
secret / projected volumes      ``secretFiles[]``; file-only workloads are ``skipped``
``vault.hashicorp.com/agent-    ``source: vault-agent:<name>``, ``via: vaultAgent``, the
inject-secret-<name>``          annotation's KV v2 path as ``vaultPath``, no fields
==============================  =================================================================

Why one module of this size: it is one concept, turning a cluster scan into a plan; pod-spec
reading is :mod:`cloudtaser.target.podspec`, the naming rules :mod:`cloudtaser.plan.rules`,
the overwrite guard :mod:`cloudtaser.plan.store`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import (
    ClusterAuthError,
    ClusterError,
    ClusterForbiddenError,
    ClusterInvalidError,
    ClusterNotFoundError,
    ConfigError,
    PlanError,
)
from cloudtaser.plan import (
    MigrationPlan,
    WorkloadKind,
    WorkloadStatus,
    rule_problem,
    rules,
)
from cloudtaser.plan.rules import (
    DEFAULT_KV_MOUNT,
    DEFAULT_PATH_TEMPLATE,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_VAR,
    FIELD_NAME,
    ISOLATED_PATH_TEMPLATE,
    PLAN_NAME,
    VAULT_PATH,
    safe_segment,
    template_problem,
    tenant_scope,
)
from cloudtaser.plan.store import recorded_progress
from cloudtaser.progress import Counter
from cloudtaser.target.annotations import INJECT
from cloudtaser.target.consumers import env_uses, migrated_by_container
from cloudtaser.target.podspec import (
    VAULT_AGENT_SECRET_PREFIX,
    EnvConsumption,
    SecretFileUse,
    SecretKeys,
    VaultAgentSecret,
    consumed_env,
    env_consumptions,
    env_refs_from,
    kv2_path,
    secret_files,
    secret_name_problem,
    template_annotations,
    vault_agent_paths,
)
from cloudtaser.target.podspec import shown as _shown

if TYPE_CHECKING:
    from lightkube import Client

__all__ = [
    "DEFAULT_EXCLUDED_NAMESPACES",
    "DEFAULT_KV_MOUNT",
    "DEFAULT_PATH_TEMPLATE",
    "INJECT_ANNOTATION",
    "ISOLATED_PATH_TEMPLATE",
    "VAULT_AGENT_SECRET_PREFIX",
    "DiscoverOptions",
    "DiscoveryResult",
    "DiscoverySummary",
    "EnvConsumption",
    "PathTemplate",
    "ScannedWorkload",
    "SecretFileUse",
    "SecretKeys",
    "SkippedWorkload",
    "VaultAgentSecret",
    "build_plan",
    "consumed_env",
    "default_plan_name",
    "discover",
    "env_consumptions",
    "recorded_progress",
    "secret_files",
    "vault_agent_paths",
]

#: Namespaces discovery never scans (the compat contract's three, plus our own operator's).
DEFAULT_EXCLUDED_NAMESPACES: Final = (
    "cloudtaser-system",
    "kube-node-lease",
    "kube-public",
    "kube-system",
)
#: Pod-template annotation of an already protected workload (see ``cloudtaser.target.annotations``).
INJECT_ANNOTATION: Final = INJECT
VAULT_AGENT_INJECT: Final = "vault.hashicorp.com/agent-inject"
#: Shared layout: clusters that use the same Secret names in the same namespaces share paths.
#: Page size of every list call.
CHUNK_SIZE: Final = 500
#: Up to this many Secrets are read with one GET each; beyond it, Secrets are listed.
GET_SECRETS_LIMIT: Final = 16

_KIND_ORDER: Final = {kind: index for index, kind in enumerate(WorkloadKind)}
_VIA_ORDER: Final = {"env": 0, "envFrom": 1, "vaultAgent": 2}
# Always used with ``fullmatch``: the plan patterns end in ``$``, which also matches before a
# trailing newline.
_ENV_RE: Final = re.compile(ENV_VAR)
_FIELD_RE: Final = re.compile(FIELD_NAME)
_SUBDOMAIN_RE: Final = re.compile(DNS_SUBDOMAIN)
_LABEL_RE: Final = re.compile(DNS_LABEL)
_VAULT_PATH_RE: Final = re.compile(VAULT_PATH)
_PLAN_NAME_RE: Final = re.compile(PLAN_NAME)
_AGENT_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")

Progress = Callable[[str], None]


def _noop(_message: str) -> None:
    return None


# --- pure: vault path naming ---------------------------------------------------------------


_PLACEHOLDERS: Final = frozenset({"mount", "cluster", "namespace", "secret"})


@dataclass(frozen=True)
class PathTemplate:
    """The vault path naming convention: a template with ``{mount}``, ``{cluster}``,
    ``{namespace}`` and ``{secret}``.

    Both ``{namespace}`` and ``{secret}`` are required, so two tenants (namespaces) can never
    share a path, and two Secrets of one namespace never collide. The rendered path must be a
    KV v2 API path ``<mount>/data/<path>`` and pass the plan's path rules.
    """

    template: str
    mount: str = DEFAULT_KV_MOUNT
    cluster: str = "cluster"

    def __post_init__(self) -> None:
        problem = template_problem(self.template)  # the rule book: injective templates only
        if problem is not None:
            raise ConfigError(f"path template {self.template!r} {problem}")
        problem = rules.kv_mount_problem(self.mount)
        if problem is not None:
            raise ConfigError(problem)
        if not safe_segment(self.cluster) or len(self.cluster) > rules.MAX_SEGMENT:
            raise ConfigError(
                f"cluster name {self.cluster!r} is not usable in a vault path (letters, "
                "digits, '.', '_', '-')"
            )
        sample = self.render("namespace", "secret")
        if sample is None:
            raise ConfigError(
                f"path template {self.template!r} does not render a KV v2 API path "
                f"<mount>/data/<path> (got {self._format('namespace', 'secret')!r})"
            )

    @property
    def uses_cluster(self) -> bool:
        return "{cluster}" in self.template

    def _format(self, namespace: str, secret: str) -> str:
        return self.template.format(
            mount=self.mount, cluster=self.cluster, namespace=namespace, secret=secret
        )

    def render(self, namespace: str, secret: str) -> str | None:
        """The vault path of ``secret`` in ``namespace``, or None when it breaks a plan rule
        (the rule book's :func:`~cloudtaser.plan.rules.vault_path_problem`, the same check
        ``plan validate`` and apply-plan make)."""
        path = self._format(namespace, secret)
        return None if rules.vault_path_problem(path) is not None else path

    def render_fitted(self, namespace: str, secret: str) -> tuple[str | None, str | None]:
        """Like :meth:`render`, with a Secret name over the segment limit shortened by
        :func:`~cloudtaser.plan.rules.fit_segment`: ``(path, note saying so)``."""
        segment, adapted = rules.fit_segment(secret)
        path = self.render(namespace, segment)
        if not adapted or path is None:
            return path, None
        return path, (
            f"Secret name is longer than {rules.MAX_SEGMENT} characters (the vault's segment "
            f"limit): its vault path uses {segment!r}"
        )

    def rendered_mount(self) -> str:
        """The KV mount the rendered paths live in."""
        return self._format("namespace", "secret").partition("/data/")[0]

    def scope(self, namespace: str) -> re.Pattern[str]:
        """Every path this template may give ``namespace`` (the rule book's tenant scope)."""
        return tenant_scope(
            self.template, namespace=namespace, mount=self.mount, cluster=self.cluster
        )


def default_plan_name(context: str, cluster_name: str = "") -> str:
    """A valid plan name derived from the kube context (or cluster) name."""
    for candidate in (context, cluster_name):
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", candidate or "")[:63]
        name = name.strip("._-")
        if name and _PLAN_NAME_RE.fullmatch(name):
            return name
    return "cluster"


# --- pure: building the plan ---------------------------------------------------------------


@dataclass(frozen=True)
class ScannedWorkload:
    """A workload as read from the cluster: identity and its pod template in API-dict form."""

    namespace: str
    kind: WorkloadKind
    name: str
    template: Mapping[str, Any]
    replicas: int | None = None


@dataclass(frozen=True)
class SkippedWorkload:
    """A workload that will not be migrated, and why.

    ``in_plan`` is True for workloads written to the plan with ``status: skipped`` (they use
    Secrets, but not in a way env injection can take over), False for workloads left out of
    the plan (no Secrets, already protected, excluded namespace).
    """

    namespace: str
    kind: str
    name: str
    reason: str
    in_plan: bool


@dataclass(frozen=True)
class DiscoverySummary:
    """Counts for the end-of-run summary."""

    namespaces_scanned: int
    workloads_scanned: int
    tenants: int
    workloads: int
    pending: int
    skipped: int
    #: Distinct vault paths in the plan (several workloads sharing a Secret count once).
    secrets: int
    #: Workloads left out of the plan, by reason.
    not_in_plan: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DiscoveryResult:
    """What discovery found: the plan, plus everything a reviewer should hear about."""

    plan: MigrationPlan
    warnings: tuple[str, ...]
    skipped: tuple[SkippedWorkload, ...]
    #: What could not be read (e.g. "list secrets in namespace x: forbidden"); the plan is
    #: incomplete where this is not empty.
    unreadable: tuple[str, ...]
    summary: DiscoverySummary

    @property
    def complete(self) -> bool:
        return not self.unreadable


@dataclass(frozen=True)
class DiscoverOptions:
    """What to scan and how to name things. Resolved by the CLI; nothing here reads env."""

    #: Namespaces to scan (empty: every namespace).
    namespaces: tuple[str, ...] = ()
    #: A Kubernetes label selector (``app=web,tier!=cache``), passed to the API server.
    selector: str | None = None
    #: Namespaces to leave out, in addition to :data:`DEFAULT_EXCLUDED_NAMESPACES`.
    exclude_namespaces: tuple[str, ...] = ()
    #: Plan name (default: derived from the kube context).
    name: str | None = None
    #: Value of ``{cluster}`` in the path template (default: the plan name).
    cluster_name: str | None = None
    path_template: str = DEFAULT_PATH_TEMPLATE
    #: KV mount recorded in the plan (``metadata.kvMount``) and used for ``{mount}``.
    kv_mount: str | None = None
    #: Kubernetes auth mount recorded in the plan (``metadata.authMount``).
    auth_mount: str | None = None
    created_by: str | None = None
    #: Creation time (default: now, UTC, second precision).
    now: datetime | None = None

    def excluded(self) -> frozenset[str]:
        return frozenset(DEFAULT_EXCLUDED_NAMESPACES) | frozenset(self.exclude_namespaces)

    def validate(self) -> None:
        """Refuse bad names before anything is sent to the cluster."""
        for what, values in (
            ("--namespace", self.namespaces),
            ("--exclude-namespace", self.exclude_namespaces),
        ):
            for value in values:
                if not _LABEL_RE.fullmatch(value):  # the pattern caps the length at 63
                    raise ConfigError(f"{what} {value!r} is not a valid namespace name")
        if self.name is not None and not _PLAN_NAME_RE.fullmatch(self.name):
            raise ConfigError(
                f"plan name {self.name!r} is not valid: letters, digits, '.', '_', '-', at most "
                "63, starting and ending with a letter or digit"
            )
        for what, mount, check in (
            ("--kv-mount", self.kv_mount, rules.kv_mount_problem),
            ("--auth-mount", self.auth_mount, rules.auth_mount_problem),
        ):
            problem = None if mount is None else check(mount)
            if problem is not None:
                raise ConfigError(f"{what}: {problem}")
        if self.selector is not None and (
            not self.selector.strip() or not self.selector.isprintable()
        ):
            raise ConfigError("--selector is empty or contains control characters")
        if self.cluster_name is not None and (
            not safe_segment(self.cluster_name) or len(self.cluster_name) > rules.MAX_SEGMENT
        ):
            raise ConfigError(
                f"--cluster-name {self.cluster_name!r} is not usable in a vault path (letters, "
                f"digits, '.', '_', '-'; at most {rules.MAX_SEGMENT} characters)"
            )
        PathTemplate(
            self.path_template,
            mount=self.kv_mount or DEFAULT_KV_MOUNT,
            cluster=self.cluster_name or "cluster",
        )


class _SecretRefBuilder:
    """Collects field mappings per (source, via); splits when one key feeds two env vars."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.optional: set[tuple[str, str]] = set()
        self.notes: dict[tuple[str, str], list[str]] = defaultdict(list)

    def touch(self, source: str, via: str) -> None:
        self.groups.setdefault((source, via), [])

    def add(self, source: str, via: str, key: str, env: str) -> None:
        dicts = self.groups.setdefault((source, via), [])
        for mapping in dicts:
            if mapping.get(key) == env:
                return
        for mapping in dicts:
            if key not in mapping:
                mapping[key] = env
                return
        dicts.append({key: env})

    def note(self, source: str, via: str, text: str) -> None:
        if text not in self.notes[(source, via)]:
            self.notes[(source, via)].append(text)

    def build(self, vault_path: Callable[[str, str], str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for source, via in sorted(self.groups, key=lambda k: (k[0], _VIA_ORDER[k[1]])):
            dicts = self.groups[(source, via)] or [{}]
            for mapping in dicts:
                ref: dict[str, Any] = {
                    "source": source,
                    "vaultPath": vault_path(source, via),
                }
                if mapping:
                    ref["fields"] = {k: mapping[k] for k in sorted(mapping)}
                ref["via"] = via
                if (source, via) in self.optional:
                    ref["optional"] = True
                notes = self.notes.get((source, via))
                if notes:
                    ref["note"] = "; ".join(notes)
                out.append(ref)
        return out


@dataclass
class _Context:
    options: DiscoverOptions
    template: PathTemplate
    warnings: list[str] = field(default_factory=list)
    skipped: list[SkippedWorkload] = field(default_factory=list)


def _where(workload: ScannedWorkload) -> str:
    return f"{workload.kind} {workload.namespace}/{workload.name}"


def _already_protected(pod_template: Mapping[str, Any]) -> bool:
    """True when ``protect`` already marked the pod template (``cloudtaser.io/inject: "true"``)."""
    return str(template_annotations(pod_template).get(INJECT_ANNOTATION, "")).lower() == "true"


@dataclass(frozen=True)
class SecretLookup:
    """Key names of the Secrets discovery read, and what it could not read."""

    keys: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    missing: frozenset[tuple[str, str]] = frozenset()
    #: (namespace, name) -> why the keys are unknown (e.g. permission denied).
    unreadable: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def for_namespace(self, namespace: str) -> SecretKeys:
        def lookup(name: str) -> Sequence[str] | None:
            return self.keys.get((namespace, name))

        return lookup


def _workload_entry(
    workload: ScannedWorkload, lookup: SecretLookup, ctx: _Context
) -> dict[str, Any] | None:
    """The plan entry of one workload, or None when it does not belong in the plan."""
    template = workload.template
    where = _where(workload)
    annotations = template_annotations(template)
    if _already_protected(template):
        ctx.skipped.append(
            SkippedWorkload(
                workload.namespace,
                str(workload.kind),
                workload.name,
                'already protected (cloudtaser.io/inject: "true")',
                in_plan=False,
            )
        )
        return None

    ns = workload.namespace
    keys_of = lookup.for_namespace(ns)
    consumptions = env_consumptions(template, keys_of)
    from_refs = env_refs_from(template)
    files = secret_files(template)
    agents = vault_agent_paths(template)
    if not consumptions and not from_refs and not files and not agents:
        ctx.skipped.append(
            SkippedWorkload(ns, str(workload.kind), workload.name, "uses no Secrets", False)
        )
        return None

    skip_reasons: list[str] = []
    reasons: list[str] = []
    builder = _SecretRefBuilder()
    agent_paths: dict[str, str] = {}

    # env / envFrom
    feeders: dict[str, list[EnvConsumption]] = defaultdict(list)
    for item in consumptions:
        if not item.usable:
            if secret_name_problem(item.secret) is not None:
                skip_reasons.append(f"{item.problem} (container {item.container})")
            else:
                builder.touch(item.secret, item.via)
                builder.note(item.secret, item.via, f"not migrated: {item.problem}")
                ctx.warnings.append(f"{where}: {item.problem}; left out of the plan")
            continue
        feeders[item.env].append(item)
    conflicts: set[str] = set()
    for env, items in feeders.items():
        distinct = sorted({(i.secret, i.key) for i in items})
        if len(distinct) > 1:
            conflicts.add(env)
            shown = " and ".join(f"{s}.{k}" for s, k in distinct)
            skip_reasons.append(f"environment variable {env} is fed by {shown}")
    for env in sorted(feeders):
        # a loader / interpreter target is a reviewer's decision (rules.dangerous_env_problem)
        dangerous = rules.dangerous_env_problem(env)
        if dangerous is not None:
            accept = "" if rules.is_reserved_env(env) else " and set the status to pending"
            skip_reasons.append(f"environment variable {dangerous}{accept}")
        items = feeders[env]
        first = items[0]
        if env in conflicts:
            # keep the first mapping only, so the plan stays valid; the workload is skipped
            builder.add(first.secret, first.via, first.key, env)
            continue
        for item in items:
            builder.add(item.secret, item.via, item.key, env)
            if item.optional:
                builder.optional.add((item.secret, item.via))
    # secretKeyRef checks where the Secret's keys are known (it was read for envFrom)
    for item in consumptions:
        if item.via == "env" and item.usable:
            if (ns, item.secret) in lookup.missing:
                text = "Secret not found in the cluster"
                builder.note(item.secret, "env", text)
            elif (ns, item.secret) in lookup.keys and item.key not in lookup.keys[
                (ns, item.secret)
            ]:
                builder.note(item.secret, "env", f"key {item.key!r} not found in the Secret")
    for ref in from_refs:
        problem = secret_name_problem(ref.secret)
        if problem is not None:
            skip_reasons.append(f"envFrom: {problem} (container {ref.container})")
            continue
        if ref.optional:
            builder.optional.add((ref.secret, "envFrom"))
        builder.touch(ref.secret, "envFrom")
        key = (ns, ref.secret)
        if key in lookup.unreadable:
            why = lookup.unreadable[key]
            builder.note(ref.secret, "envFrom", f"keys unknown: {why}")
            skip_reasons.append(
                f"the keys of Secret {ref.secret} could not be read ({why}); re-run discover "
                "with get/list permission on secrets"
            )
        elif key in lookup.missing:
            if ref.optional:
                builder.note(ref.secret, "envFrom", "optional Secret not found; no keys known")
            else:
                builder.note(ref.secret, "envFrom", "Secret not found in the cluster")
                ctx.warnings.append(
                    f"{where}: envFrom Secret {ref.secret} does not exist (the pods cannot "
                    "start until it does); recorded without fields"
                )
        elif key in lookup.keys and not lookup.keys[key]:
            builder.note(ref.secret, "envFrom", "the Secret has no keys")

    # Vault Agent
    for agent in agents:
        if not _AGENT_NAME_RE.fullmatch(agent.name):
            skip_reasons.append(
                f"Vault Agent annotation name {_shown(agent.name)} is not a usable source name"
            )
            continue
        source = f"vault-agent:{agent.name}"
        path, note = kv2_path(agent.path)
        if path is None:
            skip_reasons.append(f"Vault Agent secret {agent.name!r}: path {note}")
            continue
        # The rule book's tenant scope: cluster content (an annotation anyone who can edit
        # the Deployment controls) must never widen this tenant's policy. The entry is kept
        # for the reviewer, the workload skipped; only 'shared: true' can let it through.
        plan_mount = ctx.template.rendered_mount()
        if path.partition("/data/")[0] != plan_mount:
            skip_reasons.append(
                f"Vault Agent secret {agent.name!r}: path {path} is outside the plan's KV "
                f"mount {plan_mount!r} (if intended, a reviewer adds it marked 'shared: true')"
            )
            continue
        outside = None
        if not ctx.template.scope(ns).fullmatch(path):
            outside = (
                f"outside namespace {ns}'s scope under the path template {ctx.template.template!r}"
            )
        agent_paths[source] = path
        builder.touch(source, "vaultAgent")
        if note:
            builder.note(source, "vaultAgent", note)
        if outside is not None:
            builder.note(source, "vaultAgent", f"not granted: {outside}")
            skip_reasons.append(
                f"Vault Agent secret {agent.name!r}: path {path} is {outside}; a namespace "
                "never gains another tenant's paths (if intended, a reviewer marks the secret "
                "'shared: true' and sets the status to pending)"
            )
        builder.note(
            source,
            "vaultAgent",
            f"Vault Agent renders it as file /vault/secrets/{agent.name}; add the fields to "
            "expose as env vars",
        )
    if agent_paths:
        if str(annotations.get(VAULT_AGENT_INJECT, "")).lower() != "true":
            reasons.append(f'{VAULT_AGENT_INJECT} is not "true": the agent paths are inactive')
        reasons.append(
            "uses the Vault Agent injector (files under /vault/secrets): the application must "
            "read env vars instead, and the fields must be filled in before protect"
        )

    # files
    file_entries: list[dict[str, Any]] = []
    for use in files:
        problem = secret_name_problem(use.secret)
        if problem is not None or not _SUBDOMAIN_RE.fullmatch(use.volume):
            skip_reasons.append(f"volume {_shown(use.volume)}: {problem or 'invalid name'}")
            continue
        entry: dict[str, Any] = {"source": use.secret, "volume": use.volume}
        paths = [p for p in use.mount_paths if p.isprintable() and len(p) <= 1024]
        if paths:
            entry["mountPaths"] = paths
        file_entries.append(entry)
    secrets_in_env = bool(builder.groups)
    if file_entries:
        names = ", ".join(sorted({e["source"] for e in file_entries}))
        if not secrets_in_env:
            skip_reasons.append(
                f"uses Secrets only as files ({names}); env injection cannot replace files"
            )
        else:
            reasons.append(f"also mounts Secrets as files ({names}); those stay Kubernetes Secrets")

    def vault_path(source: str, via: str) -> str:
        if via == "vaultAgent":
            return agent_paths[source]
        rendered, note = ctx.template.render_fitted(ns, source)
        if rendered is None:  # only an over-long path gets here: names were validated
            raise _PathTooLongError(source)
        if note is not None:
            builder.note(source, via, note)
            ctx.warnings.append(f"{ns}/{source}: {note}")
        return rendered

    try:
        secrets = builder.build(vault_path)
    except _PathTooLongError as exc:
        secrets = []
        skip_reasons.append(f"the vault path of Secret {exc.args[0]} would break the plan rules")

    service_account = (template.get("spec") or {}).get("serviceAccountName") or "default"
    entry_out: dict[str, Any] = {"kind": str(workload.kind), "name": workload.name}
    if workload.replicas is not None:
        entry_out["replicas"] = workload.replicas
    if skip_reasons:
        status = WorkloadStatus.SKIPPED
        reason = "; ".join(dict.fromkeys(skip_reasons + reasons))
        ctx.skipped.append(
            SkippedWorkload(ns, str(workload.kind), workload.name, "; ".join(skip_reasons), True)
        )
    else:
        status = WorkloadStatus.PENDING
        reason = "; ".join(reasons)
    entry_out["status"] = str(status)
    entry_out["secrets"] = secrets
    if isinstance(service_account, str) and _SUBDOMAIN_RE.fullmatch(service_account):
        entry_out["serviceAccount"] = service_account
    if reason:
        entry_out["reason"] = _one_line(reason)
    if file_entries:
        entry_out["secretFiles"] = file_entries
    # where a mapped variable is read besides the process env: finalize keeps those references
    mapped = {env for ref in secrets for env in (ref.get("fields") or {}).values()}
    uses = env_uses(
        template, migrated_by_container(c for c in consumptions if c.usable and c.env in mapped)
    )
    if uses:
        import msgspec  # noqa: PLC0415

        entry_out["envUses"] = [msgspec.to_builtins(use) for use in uses]
    return entry_out


class _PathTooLongError(Exception):
    pass


def _one_line(text: str, limit: int = 4000) -> str:
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _path_template(options: DiscoverOptions, plan_name: str) -> PathTemplate:
    """The naming of a run (``{cluster}`` defaults to the plan name), checked against
    ``--kv-mount``."""
    template = PathTemplate(
        options.path_template,
        mount=options.kv_mount or DEFAULT_KV_MOUNT,
        cluster=options.cluster_name or plan_name,
    )
    if options.kv_mount is not None and template.rendered_mount() != options.kv_mount:
        raise ConfigError(
            f"path template {options.path_template!r} puts paths in mount "
            f"{template.rendered_mount()!r}, not in --kv-mount {options.kv_mount!r}"
        )
    return template


def build_plan(
    workloads: Iterable[ScannedWorkload],
    lookup: SecretLookup,
    *,
    options: DiscoverOptions,
    plan_name: str,
    cluster: str,
    unreadable: Sequence[str] = (),
    namespaces_scanned: int | None = None,
    warnings: Sequence[str] = (),
) -> DiscoveryResult:
    """Turn scanned workloads into a validated, deterministic plan. Pure."""
    options.validate()
    name = options.name or plan_name
    if not _PLAN_NAME_RE.fullmatch(name):
        raise ConfigError(f"plan name {name!r} is not valid; pass --name NAME")
    template = _path_template(options, name)
    ctx = _Context(options=options, template=template, warnings=list(warnings))
    excluded = options.excluded()
    by_namespace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen_namespaces: set[str] = set()
    scanned = 0
    ordered = sorted(
        workloads, key=lambda w: (w.namespace, _KIND_ORDER[WorkloadKind(w.kind)], w.name)
    )
    previous: tuple[str, str, str] | None = None
    for workload in ordered:
        ident = (workload.namespace, str(workload.kind), workload.name)
        if ident == previous:
            continue
        previous = ident
        scanned += 1
        seen_namespaces.add(workload.namespace)
        if workload.namespace in excluded:
            ctx.skipped.append(SkippedWorkload(*ident, reason="excluded namespace", in_plan=False))
            continue
        if not _LABEL_RE.fullmatch(workload.namespace) or not _SUBDOMAIN_RE.fullmatch(
            workload.name
        ):
            ctx.warnings.append(f"{_shown(workload.name)}: invalid name from the API; ignored")
            continue
        entry = _workload_entry(workload, lookup, ctx)
        if entry is not None:
            by_namespace[workload.namespace].append(entry)

    created = (options.now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    metadata: dict[str, Any] = {"name": name, "cluster": _one_line(cluster), "createdAt": created}
    if options.created_by:
        metadata["createdBy"] = _one_line(options.created_by, 256)
    if options.auth_mount:
        metadata["authMount"] = options.auth_mount
    if options.kv_mount:
        metadata["kvMount"] = options.kv_mount
    metadata["pathTemplate"] = options.path_template
    if template.uses_cluster and template.cluster != name:
        metadata["pathCluster"] = template.cluster
    unread = list(dict.fromkeys(_one_line(u, 1000) for u in unreadable))
    if unread:
        metadata["unread"] = unread
    data = {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": metadata,
        "tenants": [
            {"name": ns, "namespace": ns, "workloads": by_namespace[ns]}
            for ns in sorted(by_namespace)
        ],
    }
    import msgspec  # noqa: PLC0415 - keep `import cloudtaser.target.discover.build` light

    try:
        plan = msgspec.convert(data, MigrationPlan, from_attributes=False)
    except (msgspec.ValidationError, ValueError) as exc:  # a bug: every name was checked
        raise PlanError(f"discovery produced an invalid plan: {exc}", source="discover") from exc
    violation = rule_problem(plan)
    if violation is not None:  # a bug as well: discover writes only what plan validate accepts
        raise PlanError(f"discovery produced an invalid plan: {violation[1]}", source="discover")

    paths: set[str] = set()
    pending = skipped = workloads_in_plan = 0
    for _tenant, wl in plan.iter_workloads():
        workloads_in_plan += 1
        if wl.effective_status is WorkloadStatus.SKIPPED:
            skipped += 1
        else:
            pending += 1
        paths.update(s.vault_path for s in wl.secrets)
    not_in_plan: dict[str, int] = defaultdict(int)
    for skip in ctx.skipped:
        if not skip.in_plan:
            not_in_plan[skip.reason] += 1
    summary = DiscoverySummary(
        namespaces_scanned=namespaces_scanned
        if namespaces_scanned is not None
        else len(seen_namespaces),
        workloads_scanned=scanned,
        tenants=len(plan.tenants),
        workloads=workloads_in_plan,
        pending=pending,
        skipped=skipped,
        secrets=len(paths),
        not_in_plan=dict(sorted(not_in_plan.items())),
    )
    return DiscoveryResult(
        plan=plan,
        warnings=tuple(dict.fromkeys(ctx.warnings)),
        skipped=tuple(ctx.skipped),
        unreadable=tuple(unread),
        summary=summary,
    )


# --- cluster I/O ---------------------------------------------------------------------------


_RESOURCES: Final = {
    WorkloadKind.DEPLOYMENT: ("Deployment", "deployments"),
    WorkloadKind.STATEFUL_SET: ("StatefulSet", "statefulsets"),
    WorkloadKind.DAEMON_SET: ("DaemonSet", "daemonsets"),
}


def _selector_labels(selector: str | None) -> Any:
    """lightkube takes selectors as pairs; hand it the user's raw selector string."""
    if not selector:
        return None
    from lightkube import operators  # noqa: PLC0415

    class _Raw(operators.Operator[str]):
        def encode(self, key: str) -> str:
            return str(self.value)

    return [("", _Raw("raw", "", selector.strip()))]


def _forbidden(exc: ClusterError) -> bool:
    return isinstance(exc, ClusterForbiddenError)


def _list(
    client: Client,
    resource: Any,
    *,
    namespace: str,
    action: str,
    labels: Any = None,
    selector: str | None = None,
) -> Iterator[Any]:
    from cloudtaser.target.kube.session import api_errors  # noqa: PLC0415

    try:
        with api_errors(action):
            yield from client.list(
                resource, namespace=namespace, chunk_size=CHUNK_SIZE, labels=labels
            )
    except ClusterInvalidError as exc:
        if selector:
            raise ConfigError(f"the API server rejected --selector {selector!r}: {exc}") from None
        raise


def _scanned(kind: WorkloadKind, obj: Any) -> ScannedWorkload:
    import msgspec  # noqa: PLC0415

    spec = obj.spec
    replicas = None
    if kind is not WorkloadKind.DAEMON_SET:
        replicas = spec.replicas if spec.replicas is not None else 1
    return ScannedWorkload(
        namespace=str(obj.metadata.namespace),
        kind=kind,
        name=str(obj.metadata.name),
        template=msgspec.to_builtins(spec.template),
        replicas=replicas,
    )


def _list_namespaces(client: Client) -> list[str]:
    from lightkube.resources.core_v1 import Namespace  # noqa: PLC0415

    from cloudtaser.target.kube.session import api_errors  # noqa: PLC0415

    with api_errors("list namespaces (needed because the cluster-wide list was forbidden)"):
        return sorted(
            str(ns.metadata.name)
            for ns in client.list(Namespace, chunk_size=CHUNK_SIZE)
            if ns.metadata is not None and ns.metadata.name
        )


def _scan_workloads(
    client: Client,
    options: DiscoverOptions,
    progress: Progress,
    unreadable: list[str],
    warnings: list[str],
) -> tuple[list[ScannedWorkload], int | None]:
    from lightkube.resources import apps_v1  # noqa: PLC0415

    labels = _selector_labels(options.selector)
    excluded = options.excluded()
    out: list[ScannedWorkload] = []
    namespaces: list[str] | None = None
    if options.namespaces:
        namespaces = sorted(set(options.namespaces))
        warnings.extend(
            f"namespace {ns} is excluded from discovery (system namespace or "
            "--exclude-namespace); not scanned"
            for ns in namespaces
            if ns in excluded
        )
        namespaces = [ns for ns in namespaces if ns not in excluded]
    first_error: ClusterError | None = None
    all_namespaces: list[str] | None = None
    attempts = successes = 0
    # the live counter counts list calls: one per kind and scope (all namespaces, or each
    # chosen namespace; a forbidden cluster-wide list turns into one per namespace)
    lists = Counter(progress, 0, "listed {plural} in {where}", milestones=False)
    kinds = list(_RESOURCES.items())
    for index, (kind, (res_name, plural)) in enumerate(kinds):
        resource = getattr(apps_v1, res_name)
        scopes: list[str] = namespaces if namespaces is not None else ["*"]
        if namespaces is None:
            progress(f"listing {plural} in all namespaces")
        else:
            progress(f"listing {plural} in {len(namespaces)} namespace(s)")
        count = 0
        pending_scopes = list(scopes)
        while pending_scopes:
            ns = pending_scopes.pop(0)
            where = "all namespaces" if ns == "*" else f"namespace {ns}"
            attempts += 1
            try:
                for obj in _list(
                    client,
                    resource,
                    namespace=ns,
                    action=f"list {plural}.apps in {where}",
                    labels=labels,
                    selector=options.selector,
                ):
                    out.append(_scanned(kind, obj))
                    count += 1
                    if count % 1000 == 0:
                        progress(f"  {count} {plural} so far")
                successes += 1
                later = (len(kinds) - index - 1) * len(scopes)
                lists.advance(remaining=len(pending_scopes) + later, plural=plural, where=where)
            except ClusterError as exc:
                if not _forbidden(exc):
                    raise
                first_error = first_error or exc
                if ns == "*":
                    # fall back to one list per namespace, if we may list namespaces
                    if all_namespaces is None:
                        try:
                            all_namespaces = _list_namespaces(client)
                        except ClusterError as ns_exc:
                            if not _forbidden(ns_exc):
                                raise
                            raise ClusterAuthError(
                                f"cannot list {plural}.apps in all namespaces: permission denied "
                                f"(403). discover needs 'list {plural}' in API group apps "
                                "cluster-wide, or 'list namespaces' to fall back to "
                                "per-namespace lists, or --namespace NS for namespaces you may "
                                "read",
                                status=403,
                            ) from exc
                    progress(f"listing {plural} cluster-wide is forbidden; listing per namespace")
                    pending_scopes = [n for n in all_namespaces if n not in excluded]
                    continue
                unreadable.append(f"list {plural}.apps in namespace {ns}: permission denied")
                lists.skip()
        progress(f"found {count} {plural}")
    if attempts and not successes and first_error is not None:
        raise first_error
    scanned = namespaces if namespaces is not None else all_namespaces
    return out, (len([n for n in scanned if n not in excluded]) if scanned is not None else None)


def _keys_of(secret: Any) -> tuple[str, ...]:
    """The key names of a Secret object; the values are not touched."""
    data = getattr(secret, "data", None) or {}
    return tuple(sorted(str(k) for k in data))


def _read_secret_keys(
    client: Client,
    needed: Mapping[str, set[str]],
    *,
    cluster_wide: bool,
    progress: Progress,
) -> SecretLookup:
    """Read the key names of the ``needed`` Secrets ({namespace: {name}}), cheapest way first.

    Few Secrets: one GET each. Many, in few namespaces (or when namespaces were chosen): one
    paginated list per namespace. Many across many namespaces: one cluster-wide paginated list.
    When a list is forbidden, fall back to the narrower form (namespace lists, then GETs) so a
    user allowed to ``get`` only named Secrets still gets a complete plan.
    """
    from lightkube.resources.core_v1 import Secret  # noqa: PLC0415

    from cloudtaser.target.kube.session import api_errors  # noqa: PLC0415

    keys: dict[tuple[str, str], tuple[str, ...]] = {}
    missing: set[tuple[str, str]] = set()
    unreadable: dict[tuple[str, str], str] = {}
    total = sum(len(v) for v in needed.values())
    if not total:
        return SecretLookup()
    progress(f"reading the key names of {total} Secret(s) in {len(needed)} namespace(s)")
    secrets_read = Counter(progress, total, "read {done}/{total} Secrets ({where})", min_step=200)

    def settled(count: int, where: str) -> None:
        """``count`` more Secrets answered (keys read, missing or unreadable)."""
        secrets_read.advance(count, where=where)

    def get_each(ns: str, names: Iterable[str]) -> None:
        for name in sorted(names):
            try:
                try:
                    with api_errors(f"get secret {ns}/{name}"):
                        obj = client.get(Secret, name=name, namespace=ns)
                except ClusterNotFoundError:
                    missing.add((ns, name))
                    continue
                keys[(ns, name)] = _keys_of(obj)
                del obj
            except ClusterError as exc:
                if not _forbidden(exc):
                    raise
                unreadable[(ns, name)] = f"permission denied: get secrets in namespace {ns}"
            finally:
                settled(1, f"namespace {ns}")

    def take(objs: Iterable[Any], wanted: Mapping[str, set[str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for obj in objs:
            ident = (str(obj.metadata.namespace), str(obj.metadata.name))
            if ident[1] in wanted.get(ident[0], ()):
                keys[ident] = _keys_of(obj)
                found.add(ident)
        return found

    def list_namespace(ns: str, names: set[str]) -> None:
        try:
            with api_errors(f"list secrets in namespace {ns}"):
                found = take(client.list(Secret, namespace=ns, chunk_size=CHUNK_SIZE), {ns: names})
        except ClusterError as exc:
            if not _forbidden(exc):
                raise
            get_each(ns, names)
            return
        missing.update((ns, n) for n in names if (ns, n) not in found)
        settled(len(names), f"namespace {ns}")

    if total <= GET_SECRETS_LIMIT:
        for ns in sorted(needed):
            get_each(ns, needed[ns])
    elif not cluster_wide or len(needed) <= GET_SECRETS_LIMIT:
        for ns in sorted(needed):
            list_namespace(ns, needed[ns])
    else:
        try:
            with api_errors("list secrets in all namespaces"):
                found = take(client.list(Secret, namespace="*", chunk_size=CHUNK_SIZE), needed)
            for ns, names in needed.items():
                missing.update((ns, n) for n in names if (ns, n) not in found)
            settled(total, "all namespaces")
        except ClusterError as exc:
            if not _forbidden(exc):
                raise
            progress("listing secrets cluster-wide is forbidden; reading per namespace")
            for ns in sorted(needed):
                list_namespace(ns, needed[ns])
    return SecretLookup(keys=keys, missing=frozenset(missing), unreadable=unreadable)


def discover(
    session: Any,
    options: DiscoverOptions,
    *,
    progress: Progress | None = None,
) -> DiscoveryResult:
    """Scan the cluster behind ``session`` (a :class:`cloudtaser.target.kube.session.KubeSession`).

    Raises :class:`ConfigError` for bad options, :class:`ClusterError` (and subclasses) when
    the cluster cannot be read at all. Partial permission problems (403 on some namespaces or
    on Secrets) do not raise: they are listed in :attr:`DiscoveryResult.unreadable` and the
    affected workloads are skipped with a reason.
    """
    report = progress or _noop
    options.validate()
    plan_name = options.name or default_plan_name(session.context, session.cluster_name)
    _path_template(options, plan_name)  # refuse bad naming before talking to the cluster
    unreadable: list[str] = []
    warnings: list[str] = []
    workloads, namespaces_scanned = _scan_workloads(
        session.client, options, report, unreadable, warnings
    )

    excluded = options.excluded()
    needed: dict[str, set[str]] = defaultdict(set)
    for workload in workloads:
        if workload.namespace in excluded:
            continue
        if _already_protected(workload.template):
            continue
        for ref in env_refs_from(workload.template):
            if secret_name_problem(ref.secret) is None:
                needed[workload.namespace].add(ref.secret)
    lookup = _read_secret_keys(
        session.client, needed, cluster_wide=not options.namespaces, progress=report
    )
    for (ns, name), why in sorted(lookup.unreadable.items()):
        unreadable.append(f"keys of Secret {ns}/{name}: {why}")
    return build_plan(
        workloads,
        lookup,
        options=options,
        plan_name=plan_name,
        cluster=session.server,
        unreadable=unreadable,
        namespaces_scanned=namespaces_scanned,
        warnings=warnings,
    )
