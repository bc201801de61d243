"""One workload's plan entry: how its pod template's Secret consumption becomes a plan
:class:`~cloudtaser.plan.model.Workload`. Pure.

:func:`workload_entry` reads the pod template once (:mod:`cloudtaser.target.podspec`), then
runs the steps of :data:`_STEPS` in order, each adding to one :class:`_Findings`: the field
mappings of ``env``/``envFrom``, the notes on ``secretKeyRef`` keys, the ``envFrom`` Secrets'
keys, the Vault Agent paths, the Secrets mounted as files (their keys, file paths, modes
and binary marks: migrated to memory volumes), and last the vault path of every
Secret. A workload that does not belong in the plan is a :class:`LeftOut` with its reason;
one that does is an :class:`Entry`, skipped (``skip_reason`` set) or pending.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from cloudtaser.plan import rules
from cloudtaser.plan.model import (
    FileMount,
    SecretFile,
    SecretFileKey,
    SecretRef,
    Workload,
    WorkloadKind,
    WorkloadStatus,
)
from cloudtaser.plan.rules import DNS_SUBDOMAIN, shown
from cloudtaser.plan.store import one_line
from cloudtaser.target.consumers import env_uses, migrated_by_container
from cloudtaser.target.discover.naming import PathTemplate
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.podspec import (
    VAULT_AGENT_INJECT,
    EnvConsumption,
    EnvFromRef,
    SecretFileUse,
    VaultAgentSecret,
    env_consumptions,
    env_refs_from,
    is_protected,
    kv2_path,
    secret_files,
    secret_name_problem,
    template_annotations,
    vault_agent_paths,
    windows_reason,
)

__all__ = [
    "ALREADY_PROTECTED",
    "COVERED_BY_CRONJOB",
    "NO_SECRETS",
    "Entry",
    "LeftOut",
    "workload_entry",
]

#: Why a workload ``protect`` already marked is left out of the plan.
ALREADY_PROTECTED: Final = 'already protected (cloudtaser.io/inject: "true")'
#: Why a workload without Secret consumption is left out of the plan.
NO_SECRETS: Final = "uses no Secrets"
#: Why a Job a CronJob created is left out of the plan: its CronJob's entry covers it.
COVERED_BY_CRONJOB: Final = "a Job of a CronJob (covered through its CronJob)"
#: Why a standalone Job is skipped: its pod template is immutable.
_JOB_IMMUTABLE: Final = (
    "a standalone Job (no CronJob owns it): its pod template is immutable, so it cannot be "
    "protected"
)

#: How a plan secret reaches the workload (``SecretRef.via``).
Via = Literal["env", "envFrom", "vaultAgent"]

_VIA_ORDER: Final[Mapping[Via, int]] = {"env": 0, "envFrom": 1, "vaultAgent": 2}
# Always used with ``fullmatch``: the plan patterns end in ``$``, which also matches before a
# trailing newline.
_SUBDOMAIN_RE: Final = re.compile(DNS_SUBDOMAIN)
_AGENT_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
#: Longest plan reason discover writes (the plan's ``OneLine`` allows 4096).
_MAX_REASON: Final = 4000


@dataclass(frozen=True)
class LeftOut:
    """The workload does not belong in the plan, and why."""

    reason: str


@dataclass(frozen=True)
class Entry:
    """The workload's plan entry, with what a reviewer should hear about it."""

    workload: Workload
    #: Why the workload is written with ``status: skipped``; None when it is pending.
    skip_reason: str | None
    warnings: tuple[str, ...]


# --- the field mappings of one workload, grouped per (source, via) ------------------------


class _SecretRefBuilder:
    """Collects field mappings per (source, via); splits when one key feeds two env vars."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, Via], list[dict[str, str]]] = {}
        self.optional: set[tuple[str, Via]] = set()
        self.notes: dict[tuple[str, Via], list[str]] = defaultdict(list)

    def touch(self, source: str, via: Via) -> None:
        self.groups.setdefault((source, via), [])

    def add(self, source: str, via: Via, key: str, env: str) -> None:
        dicts = self.groups.setdefault((source, via), [])
        for mapping in dicts:
            if mapping.get(key) == env:
                return
        for mapping in dicts:
            if key not in mapping:
                mapping[key] = env
                return
        dicts.append({key: env})

    def note(self, source: str, via: Via, text: str) -> None:
        if text not in self.notes[(source, via)]:
            self.notes[(source, via)].append(text)

    def ordered(self) -> list[tuple[str, Via]]:
        """The groups in plan order: by source, then ``env``, ``envFrom``, ``vaultAgent``."""
        return sorted(self.groups, key=lambda k: (k[0], _VIA_ORDER[k[1]]))

    def build(self, vault_paths: Mapping[tuple[str, Via], str]) -> list[SecretRef]:
        out: list[SecretRef] = []
        for group in self.ordered():
            source, via = group
            for mapping in self.groups[group] or [{}]:
                notes = self.notes.get(group)
                out.append(
                    SecretRef(
                        source=source,
                        vault_path=vault_paths[group],
                        fields={k: mapping[k] for k in sorted(mapping)},
                        via=via,
                        optional=group in self.optional,
                        note="; ".join(notes) if notes else None,
                    )
                )
        return out


# --- the steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reads:
    """What the steps read: the workload, its pod template's Secret consumption, the Secret
    keys discovery read, and the run's naming."""

    workload: ScannedWorkload
    lookup: SecretLookup
    naming: PathTemplate
    consumptions: list[EnvConsumption]
    from_refs: list[EnvFromRef]
    files: list[SecretFileUse]
    agents: list[VaultAgentSecret]

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    @property
    def uses_secrets(self) -> bool:
        return bool(self.consumptions or self.from_refs or self.files or self.agents)


@dataclass
class _Findings:
    """What the steps found so far."""

    refs: _SecretRefBuilder = field(default_factory=_SecretRefBuilder)
    #: Why the workload must be skipped (any entry makes it ``skipped``).
    skip_reasons: list[str] = field(default_factory=list)
    #: Notes for the reviewer that do not skip the workload.
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: ``vault-agent:<name>`` -> the annotation's KV v2 path.
    agent_paths: dict[str, str] = field(default_factory=dict)
    secret_files: list[SecretFile] = field(default_factory=list)
    secrets: list[SecretRef] = field(default_factory=list)


def _map_env(reads: _Reads, found: _Findings) -> None:
    """``env`` and ``envFrom`` variables: one field mapping each, unless a name is unusable, two
    Secret keys feed one variable, or the variable is dangerous."""
    feeders: dict[str, list[EnvConsumption]] = defaultdict(list)
    for item in reads.consumptions:
        if not item.usable:
            if secret_name_problem(item.secret) is not None:
                found.skip_reasons.append(f"{item.problem} (container {item.container})")
            else:
                found.refs.touch(item.secret, item.via)
                found.refs.note(item.secret, item.via, f"not migrated: {item.problem}")
                found.warnings.append(
                    f"{reads.workload.where}: {item.problem}; left out of the plan"
                )
            continue
        feeders[item.env].append(item)
    conflicts: set[str] = set()
    for env, items in feeders.items():
        distinct = sorted({(i.secret, i.key) for i in items})
        if len(distinct) > 1:
            conflicts.add(env)
            sources = " and ".join(f"{s}.{k}" for s, k in distinct)
            found.skip_reasons.append(f"environment variable {env} is fed by {sources}")
    for env in sorted(feeders):
        # a loader / interpreter target is a reviewer's decision (rules.dangerous_env_problem)
        dangerous = rules.dangerous_env_problem(env)
        if dangerous is not None:
            accept = "" if rules.is_reserved_env(env) else " and set the status to pending"
            found.skip_reasons.append(f"environment variable {dangerous}{accept}")
        items = feeders[env]
        first = items[0]
        if env in conflicts:
            # keep the first mapping only, so the plan stays valid; the workload is skipped
            found.refs.add(first.secret, first.via, first.key, env)
            continue
        # One Secret key reaching one variable through both env and envFrom: the kubelet lets
        # env win (same value either way), so the mapping is recorded once, on the env route;
        # the envFrom route stays recorded, with a note, and keeps its other keys.
        routes = {i.via for i in items}
        for item in items:
            if item.via == "envFrom" and "env" in routes:
                found.refs.touch(item.secret, item.via)
                found.refs.note(
                    item.secret, item.via, f"{env} is also set by env from the same key (env wins)"
                )
                continue
            found.refs.add(item.secret, item.via, item.key, env)
            if item.optional:
                found.refs.optional.add((item.secret, item.via))


def _check_key_refs(reads: _Reads, found: _Findings) -> None:
    """``secretKeyRef`` checks where the Secret's keys are known (it was read for envFrom)."""
    ns, lookup = reads.namespace, reads.lookup
    for item in reads.consumptions:
        if item.via != "env" or not item.usable:
            continue
        if (ns, item.secret) in lookup.missing:
            found.refs.note(item.secret, "env", "Secret not found in the cluster")
        elif (ns, item.secret) in lookup.keys and item.key not in lookup.keys[(ns, item.secret)]:
            found.refs.note(item.secret, "env", f"key {item.key!r} not found in the Secret")


def _map_env_from(reads: _Reads, found: _Findings) -> None:
    """``envFrom`` Secrets: recorded even without keys, with a note on why none are known."""
    ns, lookup = reads.namespace, reads.lookup
    for ref in reads.from_refs:
        problem = secret_name_problem(ref.secret)
        if problem is not None:
            found.skip_reasons.append(f"envFrom: {problem} (container {ref.container})")
            continue
        if ref.optional:
            found.refs.optional.add((ref.secret, "envFrom"))
        found.refs.touch(ref.secret, "envFrom")
        key = (ns, ref.secret)
        if key in lookup.unreadable:
            why = lookup.unreadable[key]
            found.refs.note(ref.secret, "envFrom", f"keys unknown: {why}")
            found.skip_reasons.append(
                f"the keys of Secret {ref.secret} could not be read ({why}); re-run discover "
                "with get/list permission on secrets"
            )
        elif key in lookup.missing:
            if ref.optional:
                found.refs.note(ref.secret, "envFrom", "optional Secret not found; no keys known")
            else:
                found.refs.note(ref.secret, "envFrom", "Secret not found in the cluster")
                found.warnings.append(
                    f"{reads.workload.where}: envFrom Secret {ref.secret} does not exist (the "
                    "pods cannot start until it does); recorded without fields"
                )
        elif key in lookup.keys and not lookup.keys[key]:
            found.refs.note(ref.secret, "envFrom", "the Secret has no keys")


def _map_vault_agent(reads: _Reads, found: _Findings) -> None:
    """Vault Agent annotations: the KV v2 path, inside the plan's mount and the tenant's scope,
    recorded without fields for a reviewer to fill in."""
    ns, naming = reads.namespace, reads.naming
    for agent in reads.agents:
        if not _AGENT_NAME_RE.fullmatch(agent.name):
            found.skip_reasons.append(
                f"Vault Agent annotation name {shown(agent.name)} is not a usable source name"
            )
            continue
        source = f"vault-agent:{agent.name}"
        path, note = kv2_path(agent.path)
        if path is None:
            found.skip_reasons.append(f"Vault Agent secret {agent.name!r}: path {note}")
            continue
        # The rule book's tenant scope: cluster content (an annotation anyone who can edit
        # the Deployment controls) must never widen this tenant's policy. The entry is kept
        # for the reviewer, the workload skipped; only 'shared: true' can let it through.
        plan_mount = naming.rendered_mount()
        if path.partition("/data/")[0] != plan_mount:
            found.skip_reasons.append(
                f"Vault Agent secret {agent.name!r}: path {path} is outside the plan's KV "
                f"mount {plan_mount!r} (if intended, a reviewer adds it marked 'shared: true')"
            )
            continue
        outside = None
        if not naming.scope(ns).fullmatch(path):
            outside = f"outside namespace {ns}'s scope under the path template {naming.template!r}"
        found.agent_paths[source] = path
        found.refs.touch(source, "vaultAgent")
        if note:
            found.refs.note(source, "vaultAgent", note)
        if outside is not None:
            found.refs.note(source, "vaultAgent", f"not granted: {outside}")
            found.skip_reasons.append(
                f"Vault Agent secret {agent.name!r}: path {path} is {outside}; a namespace "
                "never gains another tenant's paths (if intended, a reviewer marks the secret "
                "'shared: true' and sets the status to pending)"
            )
        found.refs.note(
            source,
            "vaultAgent",
            f"Vault Agent renders it as file /vault/secrets/{agent.name}; add the fields to "
            "expose as env vars",
        )
    if found.agent_paths:
        annotations = template_annotations(reads.workload.template)
        if str(annotations.get(VAULT_AGENT_INJECT, "")).lower() != "true":
            found.reasons.append(
                f'{VAULT_AGENT_INJECT} is not "true": the agent paths are inactive'
            )
        found.reasons.append(
            "uses the Vault Agent injector (files under /vault/secrets): the application must "
            "read env vars instead, and the fields must be filled in before protect"
        )


def _file_keys(reads: _Reads, use: SecretFileUse) -> tuple[list[SecretFileKey], str | None]:
    """The files one Secret gives a volume (key names, file paths, modes, binary marks), or
    why the volume cannot be served from the vault."""
    lookup, ident = reads.lookup, (reads.namespace, use.secret)
    if use.mixed_with:
        return [], (
            f"the projected volume also holds {', '.join(use.mixed_with)} source(s), which the "
            "vault does not serve"
        )
    if not rules.is_dns_label(use.volume):
        return [], f"volume name {shown(use.volume)} is not a DNS label"
    if use.default_mode is not None and not 0 <= use.default_mode <= rules.MAX_FILE_MODE:
        return [], f"defaultMode {use.default_mode} is out of range"
    if use.items is not None:
        pairs = [(i.key, i.path, i.mode) for i in use.items]
    elif ident in lookup.unreadable:
        return [], f"the keys of Secret {use.secret} could not be read ({lookup.unreadable[ident]})"
    elif ident not in lookup.keys:
        return [], f"Secret {use.secret} not found in the cluster: its keys are unknown"
    else:
        pairs = [(key, key, None) for key in lookup.keys[ident]]
    if not pairs:
        return [], f"Secret {use.secret} has no keys"
    binary = lookup.binary.get(ident, frozenset())
    out: list[SecretFileKey] = []
    for key, path, mode in pairs:
        if not rules.is_field_name(key):
            return [], f"key {shown(key)} is not a valid vault field name"
        problem = rules.file_path_problem(path)
        if problem is not None:
            return [], f"file {shown(path)} {problem}"
        if mode is not None and not 0 <= mode <= rules.MAX_FILE_MODE:
            return [], f"the mode of file {path} is out of range"
        encoding: Literal["base64"] | None = "base64" if key in binary else None
        out.append(SecretFileKey(key=key, file=path, mode=mode, encoding=encoding))
    return out, None


def _file_mounts(use: SecretFileUse) -> list[FileMount]:
    """The mounts of a Secret volume that fit the plan (a container name that is not a DNS
    label, or a path with control characters, is left out of the record, never passed on)."""
    return [
        FileMount(
            container=m.container,
            init=m.init,
            mount_path=m.mount_path,
            sub_path=m.sub_path,
            read_only=m.read_only,
        )
        for m in use.mounts
        if rules.is_dns_label(m.container)
        and all(p.isprintable() and 0 < len(p) <= 1024 for p in (m.mount_path, m.sub_path or "x"))
    ]


def _map_files(reads: _Reads, found: _Findings) -> None:
    """Secrets mounted as files: every key (or the volume's ``items``) becomes a file the
    runtime renders from the vault path of the Secret (the same path as its env use). A
    volume is migrated whole or not at all: one that cannot be (a projected volume mixing
    other sources, unknown keys, a name outside the rules) stays a Kubernetes Secret, with the
    reason; a workload left with nothing to migrate is skipped."""
    ns = reads.namespace
    entries: list[tuple[SecretFileUse, SecretFile, str | None]] = []
    for use in reads.files:
        problem = secret_name_problem(use.secret)
        if problem is not None or not _SUBDOMAIN_RE.fullmatch(use.volume):
            found.skip_reasons.append(f"volume {shown(use.volume)}: {problem or 'invalid name'}")
            continue
        files, why = _file_keys(reads, use)
        vault_path = None
        if why is None:
            vault_path, note = reads.naming.render_fitted(ns, use.secret)
            if vault_path is None:
                why = f"the vault path of Secret {use.secret} would break the plan rules"
            elif note is not None:
                found.warnings.append(f"{ns}/{use.secret}: {note}")
        entry = SecretFile(
            source=use.secret,
            volume=use.volume,
            vault_path=vault_path if why is None else None,
            files=files if why is None else [],
            default_mode=use.default_mode,
            optional=use.optional,
            projected=use.projected,
            mounts=_file_mounts(use),
        )
        entries.append((use, entry, why))
    seen: dict[str, set[str]] = defaultdict(set)
    kept: dict[str, str] = {}
    for use, entry, problem in entries:
        why = problem
        if why is None:
            twice = sorted(seen[use.volume] & {f.file for f in entry.files})
            seen[use.volume].update(f.file for f in entry.files)
            if twice:
                why = f"file {twice[0]} comes from two Secrets"
        if why is not None:
            kept.setdefault(use.volume, f"volume {use.volume} (Secret {use.secret}): {why}")
    for _use, entry, _why in entries:
        if entry.volume in kept:  # whole or not at all
            entry.vault_path, entry.files = None, []
        found.secret_files.append(entry)
    if kept:
        why = "; ".join(kept.values())
        if not found.refs.groups and not any(f.migrated for f in found.secret_files):
            found.skip_reasons.append(f"reads Secrets as files the vault cannot serve: {why}")
        else:
            found.reasons.append(f"keeps Secret volume(s) as Kubernetes Secrets: {why}")


def _render_vault_paths(reads: _Reads, found: _Findings) -> None:
    """The vault path of every Secret (the run's naming; a Vault Agent secret keeps its
    annotation's path). A path that would break the plan rules skips the workload and leaves
    its secrets out."""
    ns = reads.namespace
    paths: dict[tuple[str, Via], str] = {}
    for source, via in found.refs.ordered():
        if via == "vaultAgent":
            paths[(source, via)] = found.agent_paths[source]
            continue
        rendered, note = reads.naming.render_fitted(ns, source)
        if rendered is None:  # only an over-long path gets here: names were validated
            found.skip_reasons.append(
                f"the vault path of Secret {source} would break the plan rules"
            )
            return
        if note is not None:
            found.refs.note(source, via, note)
            found.warnings.append(f"{ns}/{source}: {note}")
        paths[(source, via)] = rendered
    found.secrets = found.refs.build(paths)


def _skip_windows(reads: _Reads, found: _Findings) -> None:
    """Pods pinned to Windows nodes: the Linux wrapper cannot run there, so skipped with the
    reason (their Secret consumption is still recorded for the reviewer)."""
    reason = windows_reason(reads.workload.template)
    if reason is not None:
        found.skip_reasons.append(reason)


def _standalone_job(reads: _Reads, found: _Findings) -> None:
    """A Job no CronJob owns: recorded for review, skipped with what to do (a running one
    is reported as such: it reads its Secrets until it finishes)."""
    workload = reads.workload
    if workload.kind is not WorkloadKind.JOB:
        return
    if workload.running:
        found.skip_reasons.append(
            f"{_JOB_IMMUTABLE}; it is still running and reads its Secrets until it finishes: "
            "let it finish, run this work from a protected CronJob (or Deployment) next time, "
            "then delete the Job"
        )
        found.warnings.append(
            f"{workload.where}: a standalone Job still running: its Secrets stay in use until "
            "it finishes (it cannot be protected)"
        )
    else:
        found.skip_reasons.append(
            f"{_JOB_IMMUTABLE}; it has finished and reads nothing any more: delete it when its "
            "record is no longer needed, and run this work from a protected CronJob next time"
        )


#: The steps, in order: each may add mappings, notes, skip reasons and warnings.
_STEPS: Final[tuple[Callable[[_Reads, _Findings], None], ...]] = (
    _map_env,
    _check_key_refs,
    _map_env_from,
    _map_vault_agent,
    _map_files,
    _render_vault_paths,
    _skip_windows,
    _standalone_job,
)


def _read(workload: ScannedWorkload, lookup: SecretLookup, naming: PathTemplate) -> _Reads:
    template = workload.template
    return _Reads(
        workload=workload,
        lookup=lookup,
        naming=naming,
        consumptions=env_consumptions(
            template, lookup.for_namespace(workload.namespace), env_names=lookup.env_names
        ),
        from_refs=env_refs_from(template),
        files=secret_files(template),
        agents=vault_agent_paths(template),
    )


def _entry(reads: _Reads, found: _Findings) -> Entry:
    """The plan's ``Workload`` from what the steps found."""
    workload, template = reads.workload, reads.workload.template
    skip_reason = "; ".join(found.skip_reasons) if found.skip_reasons else None
    if found.skip_reasons:
        status = WorkloadStatus.SKIPPED
        reason = "; ".join(dict.fromkeys(found.skip_reasons + found.reasons))
    else:
        status = WorkloadStatus.PENDING
        reason = "; ".join(found.reasons)
    service_account = _service_account(template)
    # where a mapped variable is read besides the process env: finalize keeps those references
    mapped = {env for ref in found.secrets for env in ref.fields.values()}
    uses = env_uses(
        template,
        migrated_by_container(c for c in reads.consumptions if c.usable and c.env in mapped),
    )
    return Entry(
        workload=Workload(
            kind=WorkloadKind(workload.kind),
            name=workload.name,
            replicas=workload.replicas,
            status=status,
            secrets=_with_owners(found.secrets, reads),
            service_account=service_account,
            reason=one_line(reason, _MAX_REASON) if reason else None,
            secret_files=_files_with_owners(found.secret_files, reads),
            env_uses=uses,
            owner=workload.owner,
        ),
        skip_reason=skip_reason,
        warnings=tuple(found.warnings),
    )


def _with_owners(secrets: list[SecretRef], reads: _Reads) -> list[SecretRef]:
    """Each Secret's owner, when discover read it (:mod:`cloudtaser.target.owners`)."""
    owners = reads.lookup.owners
    return [
        msgspec.structs.replace(ref, owner=owners.get((reads.namespace, ref.source)))
        for ref in secrets
    ]


def _files_with_owners(files: list[SecretFile], reads: _Reads) -> list[SecretFile]:
    """Each Secret volume's owner, as :func:`_with_owners` for ``secrets[]``."""
    owners = reads.lookup.owners
    return [
        msgspec.structs.replace(entry, owner=owners.get((reads.namespace, entry.source)))
        for entry in files
    ]


def _service_account(template: Mapping[str, Any]) -> str | None:
    """The pods' ServiceAccount (``default`` when none is named); None when not a valid name."""
    name = (template.get("spec") or {}).get("serviceAccountName") or "default"
    return name if isinstance(name, str) and _SUBDOMAIN_RE.fullmatch(name) else None


def workload_entry(
    workload: ScannedWorkload, lookup: SecretLookup, naming: PathTemplate
) -> Entry | LeftOut:
    """The plan entry of one workload, or why it does not belong in the plan."""
    if workload.kind is WorkloadKind.JOB and (workload.controller or ("", ""))[0] == "CronJob":
        return LeftOut(COVERED_BY_CRONJOB)
    if is_protected(workload.template):
        return LeftOut(ALREADY_PROTECTED)
    reads = _read(workload, lookup, naming)
    if not reads.uses_secrets:
        return LeftOut(NO_SECRETS)
    found = _Findings()
    for step in _STEPS:
        step(reads, found)
    return _entry(reads, found)
