"""How a pod template consumes Kubernetes Secrets: pure reading of pod specs, shared by
``discover`` (what to put in the plan) and ``protect`` (the drift check before a patch).

``env`` entries with ``secretKeyRef``, ``envFrom`` with ``secretRef`` (expanded to the
Secret's keys, with the prefix), secret and projected volumes (files, which the runtime
renders from the vault into memory volumes: docs/secret-files.md) and the Vault Agent
injector's ``agent-inject-secret-*`` annotations. Every name is checked against the rule
book; a name that breaks it is reported as a problem, never passed on.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cloudtaser.contract import INJECT
from cloudtaser.plan.rules import (
    DNS_SUBDOMAIN,
    FIELD_NAME,
    MAX_SEGMENT_CHARS,
    MAX_VAULT_PATH,
    env_name_problem,
    reserved_mount,
    safe_segment,
    shown,
)

__all__ = [
    "OS_LABEL",
    "VAULT_AGENT_INJECT",
    "VAULT_AGENT_SECRET_PREFIX",
    "EnvConsumption",
    "EnvFromRef",
    "SecretFileUse",
    "SecretKeys",
    "VaultAgentSecret",
    "VolumeItem",
    "VolumeMountUse",
    "consumed_env",
    "env_consumptions",
    "env_refs_from",
    "is_protected",
    "kv2_path",
    "secret_files",
    "secret_name_problem",
    "template_annotations",
    "vault_agent_paths",
    "windows_reason",
]

#: The HashiCorp Vault Agent injector's switch annotation (``"true"`` activates it).
VAULT_AGENT_INJECT: Final = "vault.hashicorp.com/agent-inject"
#: Prefix of the HashiCorp Vault Agent injector's per-secret annotations.
VAULT_AGENT_SECRET_PREFIX: Final = "vault.hashicorp.com/agent-inject-secret-"  # noqa: S105
#: The node label that names a node's operating system (and ``spec.os.name``'s values).
OS_LABEL: Final = "kubernetes.io/os"
#: Key names of a Secret, or None when the Secret is missing or could not be read.
SecretKeys = Callable[[str], Sequence[str] | None]

# Always used with ``fullmatch``: the plan patterns end in ``$``, which also matches before a
# trailing newline.
_FIELD_RE: Final = re.compile(FIELD_NAME)
_SUBDOMAIN_RE: Final = re.compile(DNS_SUBDOMAIN)


@dataclass(frozen=True, order=True)
class EnvConsumption:
    """One environment variable fed from a Secret key.

    ``usable`` is False when the names cannot go into a plan (an env var name the cluster's
    env-name rule refuses or the env-map annotation cannot carry, a key that is not a valid
    field, a Secret name that is not a DNS subdomain); ``problem`` then says why. The kubelet
    itself skips envFrom keys its rule refuses, so such keys are not part of
    :func:`consumed_env` (:func:`cloudtaser.plan.rules.env_name_problem`).
    """

    secret: str
    key: str
    env: str
    via: Literal["env", "envFrom"]
    container: str
    init: bool = False
    optional: bool = False
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class EnvFromRef:
    """An ``envFrom[].secretRef`` (the keys come from the Secret)."""

    secret: str
    prefix: str
    optional: bool
    container: str
    init: bool


@dataclass(frozen=True)
class VolumeItem:
    """One ``items[]`` entry of a secret volume (or projected secret source)."""

    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class VolumeMountUse:
    """One ``volumeMounts[]`` entry naming a Secret volume."""

    container: str
    init: bool
    mount_path: str
    sub_path: str | None = None
    read_only: bool = False


@dataclass(frozen=True)
class SecretFileUse:
    """A Secret mounted as files through a secret or projected volume (one per Secret of the
    volume)."""

    secret: str
    volume: str
    mount_paths: tuple[str, ...]
    optional: bool = False
    #: ``items`` of the source; None: every key of the Secret, each as a file of its name.
    items: tuple[VolumeItem, ...] | None = None
    #: The volume's ``defaultMode`` (None: Kubernetes' 0o644).
    default_mode: int | None = None
    #: A ``projected`` volume rather than a ``secret`` volume.
    projected: bool = False
    #: The other kinds of source of a projected volume (``configMap``, ``downwardAPI``,
    #: ``serviceAccountToken``, ...): such a mixed volume cannot be served from the vault.
    mixed_with: tuple[str, ...] = ()
    mounts: tuple[VolumeMountUse, ...] = ()


@dataclass(frozen=True, order=True)
class VaultAgentSecret:
    """One ``vault.hashicorp.com/agent-inject-secret-<name>: <path>`` annotation."""

    name: str
    path: str


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], bool]]:
    for key, init in (("initContainers", True), ("containers", False)):
        for container in spec.get(key) or ():
            if isinstance(container, Mapping):
                yield container, init


def template_annotations(pod_template: Mapping[str, Any]) -> Mapping[str, Any]:
    return (pod_template.get("metadata") or {}).get("annotations") or {}


def is_protected(pod_template: Mapping[str, Any]) -> bool:
    """True when ``protect`` already marked the pod template (``cloudtaser.io/inject: "true"``)."""
    return str(template_annotations(pod_template).get(INJECT, "")).lower() == "true"


def secret_name_problem(secret: str) -> str | None:
    if not isinstance(secret, str) or not secret:
        return "the Secret reference has no name"
    if len(secret) > 253 or not _SUBDOMAIN_RE.fullmatch(secret):
        return f"Secret name {shown(secret)} is not a valid Kubernetes name"
    return None


def _env_from_refs(container: Mapping[str, Any], init: bool) -> Iterator[EnvFromRef]:
    """The ``envFrom[].secretRef`` entries of one container."""
    cname = str(container.get("name") or "")
    for source in container.get("envFrom") or ():
        ref = source.get("secretRef") if isinstance(source, Mapping) else None
        if isinstance(ref, Mapping):
            yield EnvFromRef(
                secret=str(ref.get("name") or ""),
                prefix=str(source.get("prefix") or ""),
                optional=bool(ref.get("optional")),
                container=cname,
                init=init,
            )


def env_refs_from(pod_template: Mapping[str, Any]) -> list[EnvFromRef]:
    """Every ``envFrom[].secretRef`` of the containers and init containers."""
    spec = pod_template.get("spec") or {}
    return [ref for container, init in _containers(spec) for ref in _env_from_refs(container, init)]


def env_consumptions(
    pod_template: Mapping[str, Any], secret_keys: SecretKeys, *, env_names: str | None = None
) -> list[EnvConsumption]:
    """Every env var a pod template feeds from a Secret, in container order.

    ``env[].valueFrom.secretKeyRef`` gives one entry; ``envFrom[].secretRef`` one per key that
    ``secret_keys(name)`` returns (none when it returns None), named ``prefix + key``. Names
    are checked with the env-name rule ``env_names`` (the plan's ``metadata.envNameRule``;
    None: the plan default, ``identifier``).
    """
    spec = pod_template.get("spec") or {}
    out: list[EnvConsumption] = []
    for container, init in _containers(spec):
        cname = str(container.get("name") or "")
        for entry in container.get("env") or ():
            if not isinstance(entry, Mapping):
                continue
            value_from = entry.get("valueFrom")
            ref = value_from.get("secretKeyRef") if isinstance(value_from, Mapping) else None
            if not isinstance(ref, Mapping):
                continue
            secret = str(ref.get("name") or "")
            key = str(ref.get("key") or "")
            env = str(entry.get("name") or "")
            problem = (
                secret_name_problem(secret)
                or _key_problem(key)
                or _env_problem(env, key, env_names)
            )
            out.append(
                EnvConsumption(
                    secret=secret,
                    key=key,
                    env=env,
                    via="env",
                    container=cname,
                    init=init,
                    optional=bool(ref.get("optional")),
                    problem=problem,
                )
            )
        for from_ref in _env_from_refs(container, init):
            keys = None if secret_name_problem(from_ref.secret) else secret_keys(from_ref.secret)
            for key in sorted(keys or ()):
                env = from_ref.prefix + key
                out.append(
                    EnvConsumption(
                        secret=from_ref.secret,
                        key=key,
                        env=env,
                        via="envFrom",
                        container=cname,
                        init=init,
                        optional=from_ref.optional,
                        problem=_key_problem(key) or _env_problem(env, key, env_names),
                    )
                )
    return out


def _key_problem(key: str) -> str | None:
    if len(key) > 253 or not _FIELD_RE.fullmatch(key):  # refuses '', '.' and '..'
        return f"Secret key {shown(key)} is not a valid vault field name"
    return None


def _env_problem(env: str, key: str, rule: str | None) -> str | None:
    problem = env_name_problem(env, rule)
    return None if problem is None else f"{problem} (from key {shown(key)})"


def consumed_env(
    pod_template: Mapping[str, Any], secret_keys: SecretKeys, *, env_names: str | None = None
) -> set[tuple[str, str, str]]:
    """``(secret name, key, env var name)`` for every env var a pod template takes from a Secret.

    Covers ``env[].valueFrom.secretKeyRef`` and ``envFrom[].secretRef`` (``prefix`` applied)
    in containers and init containers. ``pod_template`` is the plain-dict API form of
    ``spec.template``; ``secret_keys(name)`` returns a Secret's key names, or None when the
    Secret is missing (its envFrom then contributes nothing). Entries whose names cannot go
    into a plan under the env-name rule ``env_names`` (see :class:`EnvConsumption`) are left
    out, exactly as discovery leaves them out of the plan, so ``protect`` and ``discover`` agree.
    """
    return {
        (c.secret, c.key, c.env)
        for c in env_consumptions(pod_template, secret_keys, env_names=env_names)
        if c.usable
    }


def _items(raw: Any) -> tuple[VolumeItem, ...] | None:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        return None
    return tuple(
        VolumeItem(
            key=str(item.get("key") or ""),
            path=str(item.get("path") or ""),
            mode=item.get("mode") if type(item.get("mode")) is int else None,
        )
        for item in raw
        if isinstance(item, Mapping)
    )


def _mode(raw: Any) -> int | None:
    return raw if type(raw) is int else None


def _volume_mounts(spec: Mapping[str, Any]) -> dict[str, list[VolumeMountUse]]:
    mounts: dict[str, list[VolumeMountUse]] = defaultdict(list)
    for container, init in _containers(spec):
        for mount in container.get("volumeMounts") or ():
            if isinstance(mount, Mapping) and mount.get("name") and mount.get("mountPath"):
                mounts[str(mount["name"])].append(
                    VolumeMountUse(
                        container=str(container.get("name") or ""),
                        init=init,
                        mount_path=str(mount["mountPath"]),
                        sub_path=str(mount["subPath"]) if mount.get("subPath") else None,
                        read_only=bool(mount.get("readOnly")),
                    )
                )
    return mounts


def secret_files(pod_template: Mapping[str, Any]) -> list[SecretFileUse]:
    """Secrets mounted as files (secret volumes and projected volumes), in the pod spec's
    volume order (a projected volume: one entry per Secret source, in source order).

    ``mount_paths`` lists ``<container>:<mountPath>`` of every container and init container
    that mounts the volume, sorted; ``mounts`` the same mounts in full, in container order.
    """
    spec = pod_template.get("spec") or {}
    mounts = _volume_mounts(spec)
    out: list[SecretFileUse] = []
    for volume in spec.get("volumes") or ():
        if not isinstance(volume, Mapping):
            continue
        vname = str(volume.get("name") or "")
        used = tuple(mounts.get(vname, ()))
        paths = tuple(sorted({f"{m.container}:{m.mount_path}" for m in used}))
        secret = volume.get("secret")
        if isinstance(secret, Mapping):
            out.append(
                SecretFileUse(
                    secret=str(secret.get("secretName") or ""),
                    volume=vname,
                    mount_paths=paths,
                    optional=bool(secret.get("optional")),
                    items=_items(secret.get("items")),
                    default_mode=_mode(secret.get("defaultMode")),
                    mounts=used,
                )
            )
        projected = volume.get("projected")
        if isinstance(projected, Mapping):
            sources = [s for s in projected.get("sources") or () if isinstance(s, Mapping)]
            others = tuple(sorted({str(k) for s in sources for k in s if k != "secret"}))
            for source in sources:
                psecret = source.get("secret")
                if isinstance(psecret, Mapping):
                    out.append(
                        SecretFileUse(
                            secret=str(psecret.get("name") or ""),
                            volume=vname,
                            mount_paths=paths,
                            optional=bool(psecret.get("optional")),
                            items=_items(psecret.get("items")),
                            default_mode=_mode(projected.get("defaultMode")),
                            projected=True,
                            mixed_with=others,
                            mounts=used,
                        )
                    )
    return out


def vault_agent_paths(pod_template: Mapping[str, Any]) -> list[VaultAgentSecret]:
    """The Vault Agent injector's ``agent-inject-secret-<name>: <path>`` annotations, sorted."""
    annotations = template_annotations(pod_template)
    return sorted(
        VaultAgentSecret(name=key[len(VAULT_AGENT_SECRET_PREFIX) :], path=str(value))
        for key, value in annotations.items()
        if isinstance(key, str) and key.startswith(VAULT_AGENT_SECRET_PREFIX)
    )


def kv2_path(path: str) -> tuple[str | None, str | None]:
    """Turn a Vault Agent secret path into a plan ``vaultPath``: ``(path, note)`` or
    ``(None, problem)``.

    ``<mount>/data/<path>`` (the KV v2 API path) is kept; ``<mount>/<path>`` (the logical path
    the ``kv`` CLI shows) becomes ``<mount>/data/<path>``, with a note that KV v2 was assumed.
    Anything with characters outside ``[A-Za-z0-9._-/]``, ``.``/``..`` segments, globs or
    empty segments is refused.
    """
    cleaned = path.strip().strip("/")
    segments = cleaned.split("/")
    if not cleaned or len(cleaned) > 500 or not all(safe_segment(s) for s in segments):
        return None, (
            "is not a safe KV path (only letters, digits, '.', '_', '-' and '/' separated "
            "segments, no '.' or '..')"
        )
    if reserved_mount(cleaned):
        return None, "points into a reserved vault mount (sys, auth, identity, cubbyhole, token)"
    if any(len(s) > MAX_SEGMENT_CHARS for s in segments):
        return None, f"has a segment longer than {MAX_SEGMENT_CHARS} characters"
    if len(segments) >= 3 and segments[1] == "data":
        return cleaned, None
    if len(segments) >= 2:
        converted = "/".join([segments[0], "data", *segments[1:]])
        if len(converted) > MAX_VAULT_PATH:
            return None, "is too long"
        return converted, f"converted from {cleaned!r} assuming a KV v2 mount"
    return None, "names a mount but no secret"


def _windows_terms(affinity: Any) -> bool:
    """True when a required node affinity lets the pods run only on Windows nodes: every
    ``nodeSelectorTerms`` entry (the terms are ORed) requires ``kubernetes.io/os`` In only
    ``windows``."""
    node = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = (
        node.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node, Mapping)
        else None
    )
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    if not isinstance(terms, list) or not terms:
        return False

    def windows_only(term: Any) -> bool:
        expressions = term.get("matchExpressions") if isinstance(term, Mapping) else None
        return isinstance(expressions, list) and any(
            isinstance(e, Mapping)
            and e.get("key") == OS_LABEL
            and e.get("operator") == "In"
            and e.get("values") == ["windows"]
            for e in expressions
        )

    return all(windows_only(term) for term in terms)


def windows_reason(pod_template: Mapping[str, Any]) -> str | None:
    """Why the pods run on Windows nodes (the runtime is a Linux binary: the wrapper cannot
    start there), or None: ``spec.os.name: windows``, ``nodeSelector kubernetes.io/os:
    windows``, or a required node affinity that admits only Windows nodes."""
    spec = pod_template.get("spec") or {}
    if not isinstance(spec, Mapping):
        return None
    os_spec = spec.get("os")
    os_name = os_spec.get("name") if isinstance(os_spec, Mapping) else None
    selector = spec.get("nodeSelector")
    selector = selector if isinstance(selector, Mapping) else {}
    if str(os_name).lower() == "windows":
        how = "spec.os.name: windows"
    elif str(selector.get(OS_LABEL, "")).lower() == "windows":
        how = f"nodeSelector {OS_LABEL}: windows"
    elif _windows_terms(spec.get("affinity")):
        how = f"a required node affinity on {OS_LABEL} In [windows]"
    else:
        return None
    return (
        f"runs on Windows nodes ({how}): the cloudtaser runtime is a Linux binary and cannot "
        "wrap its containers; its Secrets stay Kubernetes Secrets"
    )
