"""The contract between ``target protect`` and the runtime (injector + wrapper), stdlib only.

The Go runtime implements the same contract; both languages run the JSON test vectors in
``spec/contract/`` against their implementation. Everything here is pure and depends on the
standard library and the rule book (:mod:`cloudtaser.plan.rules`, itself stdlib only) — no
msgspec, yaml or client import (an import-linter contract enforces it).

Pod-template annotations
========================

=================================  ==============================================================
key                                value
=================================  ==============================================================
``cloudtaser.io/inject``           ``"true"`` (also written as a pod-template *label*, because the
                                   webhook's default ``objectSelector`` matches labels)
``cloudtaser.io/vault-address``    the vault URL the pods reach (``https://host:8200``)
``cloudtaser.io/vault-role``       the tenant's Kubernetes-auth role (``rules.role_name``)
``cloudtaser.io/secret-paths``     KV v2 API paths, plan order, joined by ``,``
``cloudtaser.io/env-map``          ``field=ENV`` pairs joined by ``,``; one group per secret path,
                                   groups joined by ``;`` (same order as ``secret-paths``)
``cloudtaser.io/vault-auth-path``  ``auth/<mount>``; written only when the plan's auth mount is
                                   not what the injector applies without it (``kubernetes``
                                   or its default; see "Cluster defaults")
``cloudtaser.io/restartedAt``      restart marker: RFC 3339 UTC time of the protect run that
                                   patched the workload (our own key, so GitOps tools can ignore it)
``cloudtaser.io/vault-auth-       ``kubernetes`` (the default) or ``jwt``; written only when the
method``                           pods' method differs from what the injector would apply
``cloudtaser.io/vault-namespace``  the vault namespace (``X-Vault-Namespace``), rule book paths
                                   (:func:`cloudtaser.plan.rules.vault_namespace_problem`)
``cloudtaser.io/accept-dangerous-  loader / interpreter variables (``rules.DANGEROUS_ENV``) the
env``                              reviewed plan accepts as env-map targets, sorted, joined by
                                   ``,``; written only when the workload accepts some. An env-map
                                   target that is dangerous and not named here is refused, a
                                   reserved one (``CLOUDTASER_*``) always
``cloudtaser.io/secret-files``     the Secret volumes the pods read, served from the vault:
                                   compact JSON, one ``{volume, defaultMode, files: [{key, path,
                                   file, mode?, encoding?, optional?}]}`` per volume in the pod
                                   spec's order (:func:`format_secret_files`,
                                   :func:`parse_secret_files`, docs/secret-files.md); a pod may
                                   carry it without ``secret-paths``
=================================  ==============================================================

Wrapper environment
===================

The wrapper reads only ``CLOUDTASER_*`` variables, which the injector writes on every wrapped
container after the container's own entries (``env`` wins over ``envFrom`` and the image's
ENV) and which a pod may not set itself: the app's ``VAULT_*``/``BAO_*``, proxy and trust-store
variables never steer the wrapper (issue 28, finding 7; docs/security.md). The CLI's own
``VAULT_*``/``BAO_*`` resolution (:func:`vault_env`, :mod:`cloudtaser.config`) is unrelated.
The names are the Go runtime's (``runtime/internal/contract/wrapperenv.go``, run against
``spec/contract/wrapper-env.json``); Python never builds or reads them, so it declares no
constants for them:

====================================  ============================================================
``CLOUDTASER_VAULT_ADDR``             vault URL with scheme and port (required)
``CLOUDTASER_VAULT_AUTH_METHOD``      ``kubernetes`` (default), ``jwt`` or ``token``
``CLOUDTASER_VAULT_AUTH_ROLE``        the role (required for ``kubernetes`` and ``jwt``)
``CLOUDTASER_VAULT_AUTH_MOUNT_PATH``  default ``auth/kubernetes`` (``auth/`` prefix optional)
``CLOUDTASER_VAULT_TOKEN``            the vault token (only for ``token``)
``CLOUDTASER_VAULT_NAMESPACE``        vault namespace, sent as ``X-Vault-Namespace`` (optional)
``CLOUDTASER_VAULT_CACERT``           CA bundle file (optional)
``CLOUDTASER_VAULT_SKIP_VERIFY``      a boolean (:func:`parse_bool`); true disables TLS checks
``CLOUDTASER_SECRET_PATHS``           the ``cloudtaser.io/secret-paths`` value
``CLOUDTASER_ENV_MAP``                the ``cloudtaser.io/env-map`` value
``CLOUDTASER_SA_TOKEN_PATH``          default: the ServiceAccount token of the pod
``CLOUDTASER_ACCEPT_DANGEROUS_ENV``   the ``cloudtaser.io/accept-dangerous-env`` value
====================================  ============================================================

Cluster defaults
================

An injector installed with cluster defaults (``target install --default-vault-address`` ...,
:class:`InjectorDefaults`, recorded on its MutatingWebhookConfiguration as the
:data:`INJECTOR_DEFAULTS` annotation) applies them to a pod whose ``vault-address``,
``vault-auth-path``, ``vault-auth-method`` or ``vault-namespace`` annotation is absent; a
present annotation wins (its address still within the allow-list). :func:`parse_annotations`
takes them as the injector does.

The child process gets the parent environment minus every ``CLOUDTASER_*`` variable and every
vault token (``VAULT_TOKEN``, ``BAO_TOKEN``), plus the fetched secrets (:func:`build_child_env`).

Values
======

Booleans: case-insensitive, blanks trimmed; true = ``1|true|yes|on``, false = ``0|false|no|off``
or empty/unset; anything else is an error naming the variable. Durations: Go
``time.ParseDuration`` syntax (``500ms``, ``30s``, ``2m``, ``1h30m``) or a bare non-negative
integer meaning seconds; negative or unparsable is an error naming the variable.

Every refusal is a :class:`ContractError` with a stable ``code`` (the vectors' ``error``);
messages are free text and never hold a secret value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cloudtaser.plan import rules

__all__ = [
    "ACCEPT_DANGEROUS_ENV",
    "AUTH_METHOD",
    "AUTH_METHODS",
    "AUTH_METHOD_JWT",
    "AUTH_METHOD_KUBERNETES",
    "AUTH_PATH",
    "BASE64",
    "BIN_MOUNT_PATH",
    "BIN_VOLUME",
    "DEFAULT_FILE_MODE",
    "ENV_MAP",
    "FILES_INIT_CONTAINER",
    "INIT_CONTAINER",
    "INJECT",
    "INJECTED_ANNOTATION",
    "INJECTOR_DEFAULTS",
    "INJECTOR_WEBHOOK_CONFIGURATION",
    "INJECTOR_WEBHOOK_NAME",
    "INJECT_LABEL",
    "MANAGED_KEYS",
    "PREFIX",
    "RESTARTED_AT",
    "SECRET_FILES",
    "SECRET_PATHS",
    "STRIPPED_NAMES",
    "STRIPPED_PREFIX",
    "TOKEN_MOUNT_PATH",
    "TOKEN_VOLUME",
    "VAULT_ADDRESS",
    "VAULT_NAMESPACE",
    "VAULT_ROLE",
    "WRAPPER_LOG_PREFIX",
    "WRAPPER_PATH",
    "ContractError",
    "InjectorDefaults",
    "build_child_env",
    "check_dangerous_targets",
    "expand",
    "expand_env",
    "format_accept_dangerous_env",
    "format_auth_path",
    "format_env_map",
    "format_secret_files",
    "format_secret_paths",
    "optional_duration",
    "parse_accept_dangerous_env",
    "parse_annotations",
    "parse_auth_method",
    "parse_auth_path",
    "parse_bool",
    "parse_duration",
    "parse_env_map",
    "parse_injector_defaults",
    "parse_mapping",
    "parse_secret_files",
    "parse_secret_paths",
    "parse_vault_address",
    "parse_vault_namespace",
    "references",
    "restart_marker",
    "vault_env",
]

# --- annotation keys --------------------------------------------------------------------------

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
#: Comma-separated loader / interpreter variables (``plan.rules.DANGEROUS_ENV``) the reviewed
#: plan accepts as targets of a vault field (``acceptedDangerousEnv``); the injector denies
#: an env-map target of that list that this annotation does not name.
ACCEPT_DANGEROUS_ENV: Final = "cloudtaser.io/accept-dangerous-env"
#: How the wrapper logs in: ``kubernetes`` (default) or ``jwt`` (the same login body, sent to
#: a ``jwt`` auth mount that validates tokens offline with the cluster's public keys; issue 31).
AUTH_METHOD: Final = "cloudtaser.io/vault-auth-method"
#: The vault (OpenBao/Enterprise) namespace the wrapper sends as ``X-Vault-Namespace``.
VAULT_NAMESPACE: Final = "cloudtaser.io/vault-namespace"
#: The Secrets a workload reads as files, as the wrapper renders them into memory volumes
#: (compact JSON, docs/secret-files.md; issue 29).
SECRET_FILES: Final = "cloudtaser.io/secret-files"  # noqa: S105 - a key name

#: Every annotation key protect may write; exactly these are removed by unprotect.
MANAGED_KEYS: Final = (
    INJECT,
    VAULT_ADDRESS,
    VAULT_ROLE,
    SECRET_PATHS,
    ENV_MAP,
    AUTH_PATH,
    RESTARTED_AT,
    ACCEPT_DANGEROUS_ENV,
    AUTH_METHOD,
    VAULT_NAMESPACE,
    SECRET_FILES,
)

# --- the injected pod (docs/protect.md "Proven injected"; runtime/internal/inject) ---------------

#: Pod annotation the injector adds (value: the runtime version).
INJECTED_ANNOTATION: Final = "cloudtaser.io/injected"
#: The init container the injector inserts first; it installs the runtime into BIN_VOLUME.
INIT_CONTAINER: Final = "cloudtaser-init"
#: The init container that renders ``cloudtaser.io/secret-files`` into memory volumes (after
#: INIT_CONTAINER); its termination message reports volume names and file counts, never content.
FILES_INIT_CONTAINER: Final = "cloudtaser-files"
BIN_VOLUME: Final = "cloudtaser-bin"
TOKEN_VOLUME: Final = "cloudtaser-token"  # noqa: S105 - a volume name
BIN_MOUNT_PATH: Final = "/cloudtaser/bin"
TOKEN_MOUNT_PATH: Final = "/var/run/secrets/cloudtaser"  # noqa: S105 - a path
#: ``command[0]`` of every wrapped container.
WRAPPER_PATH: Final = "/cloudtaser/bin/cloudtaser-runtime"
#: Prefix of every line the wrapper writes to stderr (never a value).
WRAPPER_LOG_PREFIX: Final = "cloudtaser-runtime: "
#: The MutatingWebhookConfiguration ``target install`` creates, and its webhook.
INJECTOR_WEBHOOK_CONFIGURATION: Final = "cloudtaser-injector"
INJECTOR_WEBHOOK_NAME: Final = "inject.cloudtaser.io"
#: Annotation of that MutatingWebhookConfiguration: the injector's cluster defaults as compact
#: JSON (``{"address":…,"authMethod":…,"authMount":…,"namespace":…}``, only the ones set);
#: ``target install`` writes it with the same values it passes as ``--default-*`` flags, so
#: protect and ``install --check`` read them with one request (:func:`parse_injector_defaults`).
INJECTOR_DEFAULTS: Final = "cloudtaser.io/injector-defaults"

#: The auth methods a pod may log in with (the same login body; the vault checks the token by
#: TokenReview, or offline with the cluster's public keys).
AUTH_METHOD_KUBERNETES: Final = "kubernetes"
AUTH_METHOD_JWT: Final = "jwt"
AUTH_METHODS: Final = (AUTH_METHOD_KUBERNETES, AUTH_METHOD_JWT)

PATH_SEPARATOR: Final = ","
GROUP_SEPARATOR: Final = ";"
PAIR_SEPARATOR: Final = ","
KEY_VALUE_SEPARATOR: Final = "="

# --- the child's environment (the wrapper's own variables are runtime/internal/contract's) -----

#: Every variable with this prefix is removed from the child's environment.
STRIPPED_PREFIX: Final = "CLOUDTASER_"
#: Vault tokens are removed from the child's environment as well.
STRIPPED_NAMES: Final = frozenset({"VAULT_TOKEN", "BAO_TOKEN"})

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})
_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class ContractError(ValueError):
    """A contract value (built or parsed) violates its format. ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- values -------------------------------------------------------------------------------------


def vault_env(environ: Mapping[str, str], suffix: str) -> str | None:
    """``VAULT_<suffix>``, else ``BAO_<suffix>``, else None (an empty value counts as unset)."""
    return environ.get(f"VAULT_{suffix}") or environ.get(f"BAO_{suffix}") or None


def parse_bool(name: str, value: str | None) -> bool:
    """A boolean environment / annotation value (see the module docstring)."""
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ContractError(
        "bad-bool",
        f"{name} must be true or false (1/true/yes/on or 0/false/no/off), not {text[:20]!r}",
    )


#: Go's largest ``time.Duration`` (2^63-1 ns), in seconds.
MAX_DURATION_SECONDS: Final = (2**63 - 1) / 1e9


def optional_duration(name: str, value: str | None) -> float | None:
    """Like :func:`parse_duration`, with an empty or unset value meaning "the default" (None)."""
    if value is None or not value.strip():
        return None
    return parse_duration(name, value)


def parse_duration(name: str, value: str) -> float:
    """Seconds from a Go duration (``1h30m``, ``500ms``) or a bare non-negative integer."""
    seconds = _duration(name, value)
    if seconds > MAX_DURATION_SECONDS:
        raise ContractError("bad-duration", f"{name} {value[:40]!r} is out of range")
    return seconds


def _duration(name: str, value: str) -> float:
    text = value.strip()
    if text.isdigit() and text.isascii():
        return float(int(text))
    rest = text
    if rest.startswith("+"):
        rest = rest[1:]
    if rest.startswith("-") or not rest:
        raise ContractError(
            "bad-duration",
            f"{name} {value[:40]!r} is not a non-negative duration (e.g. 30, 30s, 2m, 1h30m)",
        )
    if rest == "0":
        return 0.0
    total = 0.0
    position = 0
    while position < len(rest):
        match = _DURATION_PART.match(rest, position)
        if match is None:
            raise ContractError(
                "bad-duration",
                f"{name} {value[:40]!r} is not a duration (e.g. 30, 30s, 2m, 1h30m)",
            )
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        position = match.end()
    return total


# --- secret-paths / env-map -----------------------------------------------------------------


def _check_path(path: str) -> str:
    problem = rules.vault_path_problem(path)
    if problem is not None:
        raise ContractError(
            "unsafe-path",
            f"{rules.shown(path)} is not a safe KV v2 path (<mount>/data/<path>): {problem}",
        )
    return path


def _check_field(field: str) -> str:
    if not rules.is_field_name(field):  # refuses '', '.' and '..'
        raise ContractError("bad-field", f"{rules.shown(field)} is not a valid vault field name")
    return field


def _check_env(env: str) -> str:
    """A name the annotations may carry: the rule book's widest env-name rule (``relaxed``:
    printable ASCII without ``=``, ``,``, ``;`` or blanks at either end); the plan's own rule
    (``metadata.envNameRule``) is narrower or the same, and protect writes only from it."""
    if not rules.is_env_name(env, "relaxed"):
        raise ContractError(
            "bad-env-name", f"{rules.shown(env)} is not a valid environment variable name"
        )
    return env


def format_secret_paths(paths: Sequence[str]) -> str:
    """``secret/data/a,secret/data/b`` (each path validated)."""
    return PATH_SEPARATOR.join(_check_path(p) for p in paths)


def format_env_map(groups: Sequence[Mapping[str, str]]) -> str:
    """``f1=ENV1,f2=ENV2;f3=ENV3`` (names validated; insertion order kept)."""
    parts = []
    seen_env: set[str] = set()
    for group in groups:
        if not group:
            raise ContractError("empty-group", "an env-map group must map at least one field")
        for env in group.values():
            if env in seen_env:
                raise ContractError(
                    "duplicate-env", f"env-map: environment variable {env!r} is fed twice"
                )
            seen_env.add(env)
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
                raise ContractError(
                    "bad-pair",
                    f"env-map group {index + 1}: {rules.shown(pair)} is not a field=ENV_VAR pair",
                )
            field, env = _check_field(field.strip()), _check_env(env.strip())
            if field in group:
                raise ContractError(
                    "duplicate-field", f"env-map group {index + 1}: field {field!r} given twice"
                )
            if env in seen_env:
                raise ContractError(
                    "duplicate-env", f"env-map: environment variable {env!r} is fed twice"
                )
            seen_env.add(env)
            group[field] = env
        groups.append(group)
    return groups


def parse_mapping(secret_paths: str, env_map: str) -> list[tuple[str, dict[str, str]]]:
    """Pair the ``secret-paths`` and ``env-map`` values: ``[(path, {field: ENV})]``."""
    paths = parse_secret_paths(secret_paths)
    groups = parse_env_map(env_map)
    if len(paths) != len(groups):
        raise ContractError(
            "mapping-mismatch",
            f"secret-paths names {len(paths)} path(s) but env-map has {len(groups)} group(s); "
            "they must match one to one",
        )
    return list(zip(paths, groups, strict=True))


# --- accepted dangerous targets --------------------------------------------------------------


# --- cloudtaser.io/secret-files (docs/secret-files.md; spec/contract/secret-files.json) ---------

_VOLUME_KEYS: Final = ("volume", "defaultMode", "files")
_FILE_KEYS: Final = ("file", "path", "key", "mode", "encoding", "optional")
#: The one binary encoding: the vault field holds the base64 of the file's bytes.
BASE64: Final = "base64"
#: Kubernetes' ``defaultMode`` of a secret volume that sets none (0o644).
DEFAULT_FILE_MODE: Final = 0o644


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object(raw: Any, where: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ContractError("bad-secret-files", f"{where} is not a JSON object")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ContractError(
            "bad-secret-files", f"{where} has an unknown key {rules.shown(unknown[0], 40)}"
        )
    return raw


def _required(raw: Mapping[str, Any], where: str, keys: Sequence[str]) -> None:
    for key in keys:
        if key not in raw:
            raise ContractError("bad-secret-files", f"{where} has no {key}")


def _mode(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= rules.MAX_FILE_MODE:
        raise ContractError(
            "bad-file-mode", f"{where} is not a file mode (an integer 0..511, 0o777)"
        )
    return value


def _secret_file(raw: Any, where: str, default_mode: int) -> dict[str, Any]:
    m = _object(raw, where, _FILE_KEYS)
    _required(m, where, ("file", "path", "key"))
    file, path, key = m["file"], m["path"], m["key"]
    if not isinstance(file, str) or rules.file_path_problem(file) is not None:
        raise ContractError(
            "bad-file-path",
            f"{where}: file is not a relative path of [A-Za-z0-9._-] segments (none empty, "
            f"'.' or starting with '..', at most {rules.MAX_FILE_PATH} characters)",
        )
    if not isinstance(path, str) or rules.vault_path_problem(path) is not None:
        raise ContractError(
            "unsafe-path", f"{where}: path is not a safe KV v2 path (<mount>/data/<path>)"
        )
    if not isinstance(key, str) or not rules.is_field_name(key):
        raise ContractError("bad-field", f"{where}: key is not a valid vault field name")
    mode = _mode(m["mode"], f"{where}.mode") if "mode" in m else default_mode
    if "encoding" in m and m["encoding"] != BASE64:
        raise ContractError("bad-encoding", f"{where}: encoding can only be {BASE64!r}")
    optional = m.get("optional", False)
    if type(optional) is not bool:
        raise ContractError("bad-secret-files", f"{where}: optional is not true or false")
    return {
        "file": file,
        "path": path,
        "key": key,
        "mode": mode,
        "base64": "encoding" in m,
        "optional": optional,
    }


def _secret_files_volume(raw: Any, where: str) -> dict[str, Any]:
    m = _object(raw, where, _VOLUME_KEYS)
    _required(m, where, _VOLUME_KEYS)
    volume = m["volume"]
    if not isinstance(volume, str) or not rules.is_dns_label(volume):
        raise ContractError(
            "bad-volume-name", f"{where}: volume is not a pod volume name (a DNS label)"
        )
    default_mode = _mode(m["defaultMode"], f"{where}.defaultMode")
    files = m["files"]
    if not isinstance(files, list) or not files:
        raise ContractError("bad-secret-files", f"{where}: files is not a non-empty list")
    if len(files) > rules.MAX_SECRET_FILES:
        raise ContractError(
            "too-many-files",
            f"{where} has {len(files)} files, more than the {rules.MAX_SECRET_FILES} allowed",
        )
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, raw_file in enumerate(files):
        file = _secret_file(raw_file, f"{where}.files[{index}]", default_mode)
        if file["file"] in seen:
            raise ContractError(
                "duplicate-file",
                f"{where}.files[{index}]: file {rules.shown(file['file'])} is listed twice in "
                f"volume {volume}",
            )
        seen.add(file["file"])
        checked.append(file)
    for file in checked:
        parts = file["file"].split("/")
        for end in range(1, len(parts)):
            directory = "/".join(parts[:end])
            if directory in seen:
                raise ContractError(
                    "file-prefix",
                    f"{where}: file {rules.shown(directory)} is also the directory of "
                    f"{rules.shown(file['file'])}",
                )
    return {"volume": volume, "defaultMode": default_mode, "files": checked}


def parse_secret_files(value: str) -> list[dict[str, Any]]:
    """A ``cloudtaser.io/secret-files`` value as the injector reads it: one
    ``{volume, defaultMode, files}`` per volume, in order, each file
    ``{file, path, key, mode, base64, optional}`` with its effective mode. An empty or blank
    value is no files. Refusals carry the codes of ``spec/contract/secret-files.json``
    (the Go twin is ``contract.ParseSecretFiles``)."""
    if not value.strip():
        return []
    if len(value.encode("utf-8")) > rules.MAX_SECRET_FILES_ANNOTATION:
        raise ContractError(
            "secret-files-too-long",
            f"{SECRET_FILES} is longer than the {rules.MAX_SECRET_FILES_ANNOTATION} bytes allowed",
        )
    try:
        raw = json.loads(value, parse_constant=_no_constant)
    except ValueError as exc:
        raise ContractError("bad-secret-files", f"{SECRET_FILES} is not JSON") from exc
    if not isinstance(raw, list):
        raise ContractError("bad-secret-files", f"{SECRET_FILES} is not a JSON list of volumes")
    if not raw:
        raise ContractError(
            "bad-secret-files", f"{SECRET_FILES} lists no volume (leave it out instead)"
        )
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, raw_volume in enumerate(raw):
        volume = _secret_files_volume(raw_volume, f"{SECRET_FILES}[{index}]")
        if volume["volume"] in seen:
            raise ContractError(
                "duplicate-volume",
                f"{SECRET_FILES}[{index}]: volume {volume['volume']!r} is listed twice",
            )
        seen.add(volume["volume"])
        out.append(volume)
    return out


def format_secret_files(volumes: Sequence[Mapping[str, Any]]) -> str:
    """The ``cloudtaser.io/secret-files`` value of ``volumes`` (the annotation's own shape:
    ``{volume, defaultMode, files: [{key, path, file, mode?, encoding?, optional?}]}``, in the
    pod spec's volume order): compact JSON with sorted keys, refused with the same codes as
    :func:`parse_secret_files` when the injector would refuse it."""
    text = json.dumps(list(volumes), separators=(",", ":"), sort_keys=True)
    parse_secret_files(text)
    return text


def format_accept_dangerous_env(names: Sequence[str]) -> str:
    """``LD_PRELOAD,PATH``: the accepted names sorted, each once (names validated; which names
    may stand there is :func:`check_dangerous_targets`' question)."""
    return PAIR_SEPARATOR.join(sorted({_check_env(name) for name in names}))


def parse_accept_dangerous_env(value: str) -> frozenset[str]:
    """The names of :func:`format_accept_dangerous_env`; blanks around names are tolerated.
    Which names may stand there is :func:`check_dangerous_targets`' question."""
    if not value.strip():
        return frozenset()
    return frozenset(_check_env(part.strip()) for part in value.split(PAIR_SEPARATOR))


def check_dangerous_targets(
    mapping: Sequence[tuple[str, Mapping[str, str]]], accepted: frozenset[str]
) -> None:
    """The plan's rule on the annotations (:func:`cloudtaser.plan.rules.dangerous_env_problem`),
    as the injector applies it (spec/contract/dangerous-env-annotations.json, run by both
    languages): an env-map target that is reserved is refused (``reserved-env``), accepted or
    not; one that is dangerous and not in ``accepted`` too (``dangerous-env``). An accepted
    name that is no target opens nothing, so the annotation admits it; the plan, where a
    reviewer's typo must not pass, refuses it at load
    (:func:`~cloudtaser.plan.rules.accepted_dangerous_env_problem`)."""
    for path, fields in mapping:
        for field, env in fields.items():
            problem = rules.dangerous_env_problem(env, accepted)
            if problem is not None:
                raise ContractError(
                    "reserved-env" if rules.is_reserved_env(env) else "dangerous-env",
                    f"{rules.shown(path)} field {rules.shown(field)}: {problem} "
                    f"({ACCEPT_DANGEROUS_ENV} on the pod template)",
                )


# --- auth path ---------------------------------------------------------------------------------


def format_auth_path(mount: str) -> str:
    """``auth/<mount>`` for the ``vault-auth-path`` annotation (mount checked by the rule book)."""
    problem = rules.auth_mount_problem(mount)
    if problem is not None:
        raise ContractError("bad-auth-mount", problem)
    return f"auth/{mount}"


def parse_auth_path(value: str) -> str:
    """The mount of ``auth/<mount>`` (the ``auth/`` prefix and slashes around are optional)."""
    mount = value.strip().lstrip("/").removeprefix("auth/").strip("/")
    problem = rules.auth_mount_problem(mount)
    if problem is not None:
        raise ContractError(
            "bad-auth-mount",
            f"{rules.shown(value)} is not an auth mount path such as auth/kubernetes",
        )
    return mount


def parse_auth_method(what: str, value: str) -> str:
    """``kubernetes`` or ``jwt`` (blanks and case ignored); ``bad-auth-method`` otherwise."""
    method = value.strip().lower()
    if method not in AUTH_METHODS:
        raise ContractError(
            "bad-auth-method", f"{what} must be kubernetes or jwt, not {rules.shown(value, 20)}"
        )
    return method


def parse_vault_namespace(what: str, value: str) -> str:
    """A vault namespace path without surrounding blanks and slashes (the rule book's
    :func:`~cloudtaser.plan.rules.vault_namespace_problem`); ``bad-namespace`` otherwise."""
    namespace = value.strip().strip("/")
    problem = rules.vault_namespace_problem(namespace)
    if problem is not None:
        raise ContractError(
            "bad-namespace",
            f"{what} {rules.shown(value)} is not a vault namespace path such as team-a or "
            f"eu/prod: {problem}",
        )
    return namespace


@dataclass(frozen=True)
class InjectorDefaults:
    """An injector's cluster defaults (normalised; ``None`` = not set: the built-in default).

    The Go twin is ``contract.Defaults`` (runtime/internal/contract/annotations.go); the
    vectors' ``input.defaults`` and the :data:`INJECTOR_DEFAULTS` annotation use the JSON
    names of :meth:`to_json`.
    """

    address: str | None = None
    auth_mount: str | None = None
    auth_method: str | None = None
    namespace: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        address: str | None = None,
        auth_mount: str | None = None,
        auth_method: str | None = None,
        namespace: str | None = None,
        flag: str = "--default-",
    ) -> InjectorDefaults:
        """Validate and normalise with the annotations' own rules; messages name ``flag``."""
        return cls(
            address=parse_vault_address(f"{flag}vault-address", address) if address else None,
            auth_mount=parse_auth_path(auth_mount) if auth_mount else None,
            auth_method=parse_auth_method(f"{flag}auth-method", auth_method)
            if auth_method
            else None,
            namespace=parse_vault_namespace(f"{flag}vault-namespace", namespace)
            if namespace
            else None,
        )

    def to_json(self) -> dict[str, str]:
        """``{"address", "authMethod", "authMount", "namespace"}``, only the ones set."""
        out = {
            "address": self.address,
            "authMethod": self.auth_method,
            "authMount": self.auth_mount,
            "namespace": self.namespace,
        }
        return {key: value for key, value in out.items() if value}

    @property
    def any(self) -> bool:
        """True when at least one default is set."""
        return bool(self.to_json())

    def effective(self) -> dict[str, str | None]:
        """What a pod without the four annotations gets: address (None: no default, the pod
        is refused), auth mount, auth method, namespace (None: none)."""
        return {
            VAULT_ADDRESS: self.address,
            AUTH_PATH: self.auth_mount or rules.DEFAULT_AUTH_MOUNT,
            AUTH_METHOD: self.auth_method or AUTH_METHOD_KUBERNETES,
            VAULT_NAMESPACE: self.namespace,
        }


def parse_injector_defaults(value: str) -> InjectorDefaults:
    """The :data:`INJECTOR_DEFAULTS` annotation (compact JSON) read back and validated;
    ``bad-injector-defaults`` when it is not an object of the four known string keys."""
    try:
        raw = json.loads(value)
    except ValueError as exc:
        raise ContractError(
            "bad-injector-defaults", f"{INJECTOR_DEFAULTS} is not JSON: {exc}"
        ) from exc
    known = {"address", "authMethod", "authMount", "namespace"}
    if (
        not isinstance(raw, dict)
        or not set(raw) <= known
        or not all(isinstance(v, str) for v in raw.values())
    ):
        raise ContractError(
            "bad-injector-defaults",
            f"{INJECTOR_DEFAULTS} must be a JSON object with string values for "
            + ", ".join(sorted(known)),
        )
    return InjectorDefaults.parse(
        address=raw.get("address"),
        auth_mount=raw.get("authMount"),
        auth_method=raw.get("authMethod"),
        namespace=raw.get("namespace"),
        flag=f"{INJECTOR_DEFAULTS} ",
    )


def restart_marker(at: datetime | None = None) -> str:
    """The restart marker value: RFC 3339 UTC, seconds precision (``2026-01-02T03:04:05Z``)."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- child environment -------------------------------------------------------------------------


def build_child_env(parent: Mapping[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: ``parent`` minus ``CLOUDTASER_*`` and vault tokens, plus
    ``secrets`` (which win over inherited values of the same name)."""
    for name, value in secrets.items():
        _check_env(name)
        if "\x00" in value:
            raise ContractError("nul-in-value", f"the value for {name} contains a NUL byte")
    child = {
        key: value
        for key, value in parent.items()
        if not key.startswith(STRIPPED_PREFIX) and key not in STRIPPED_NAMES
    }
    child.update(secrets)
    return child


# --- $(VAR) expansion: the kubelet's rules (spec/contract/var-expansion.json) ------------------
#
# Kubernetes expands ``$(NAME)`` in a container's ``command``, ``args`` and env values
# (k8s.io/kubernetes ``third_party/forked/golang/expansion``, ``expand.go``): ``$$`` is one
# literal ``$``; ``$(`` up to the first ``)`` is a reference, replaced by the variable's value
# when it is defined (the value is never expanded again) and kept literally when it is not; a
# ``$(`` without a ``)`` after it, a ``$`` before any other character and a trailing ``$`` stay
# as they are. Env values are expanded in definition order: a value sees the variables defined
# before the env list (``envFrom``, service links) and the entries before it, never a later one.
# The Go runtime's twin (``contract.Expand``/``ExpandEnv``) is what the wrapper applies; both
# run the shared vectors. Python uses it to find references precisely (discover's envUses).


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """``text`` with its ``$(NAME)`` references expanded by the kubelet's rules; ``lookup``
    returns a variable's value, or None when it is not defined (the reference stays)."""
    if "$" not in text:
        return text
    out: list[str] = []
    cursor = 0
    while cursor < len(text):
        char = text[cursor]
        if char != "$" or cursor + 1 == len(text):
            out.append(char)
            cursor += 1
            continue
        following = text[cursor + 1]
        if following == "$":  # the escape: one literal "$"
            out.append("$")
            cursor += 2
        elif following == "(":
            close = text.find(")", cursor + 2)
            if close == -1:  # unterminated: literal, scanning goes on after the "("
                out.append("$(")
                cursor += 2
                continue
            name = text[cursor + 2 : close]
            value = lookup(name)
            out.append(f"$({name})" if value is None else value)
            cursor = close + 1
        else:  # "$" before anything else: both characters as they are
            out.append(char + following)
            cursor += 2
    return "".join(out)


def references(text: str) -> list[str]:
    """The names :func:`expand` would look up in ``text``, in order (repeats kept)."""
    found: list[str] = []
    expand(text, found.append)
    return found


def expand_env(context: Mapping[str, str], entries: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The final value of every variable: ``context`` (defined before the env list), then each
    ``(name, value)`` entry in order, its value expanded with what is defined so far (a later
    entry of the same name replaces the earlier one)."""
    defined = dict(context)
    for name, value in entries:
        defined[name] = expand(value, defined.get)
    return defined


# --- a whole pod's annotations (what the injector reads) ------------------------------------


_HOST_CHARS: Final = re.compile(r"[A-Za-z0-9._-]+")
_IPV6_CHARS: Final = re.compile(r"[0-9A-Fa-f:.]+")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MAX_PORT: Final = 65535


def parse_vault_address(what: str, value: str) -> str:
    """An http(s) URL with a host, no credentials, query, fragment or blanks; without a
    trailing slash. ``addr-credentials`` / ``bad-addr``; messages never echo credentials.

    The steps, in order (the Go runtime's ``ValidateAddress`` takes the same ones, and
    ``spec/contract/rules.json`` holds the vectors both run): anything before an ``@`` in the
    authority is a credential; every character is printable ASCII other than blank, ``?`` and
    ``#``; the scheme is http or https; the host is letters, digits, ``.``, ``_``, ``-`` (or an
    IPv6 literal in brackets); a port, when given, is digits up to 65535; every ``%`` of the
    path starts a valid escape. So an address protect writes is one the injector accepts.
    """
    address = value.strip()
    scheme, found, rest = address.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if found and "@" in authority:  # checked first: later messages echo the address
        raise ContractError("addr-credentials", f"{what} must not carry credentials in the URL")
    if any(c <= " " or c >= "\x7f" or c in "?#" for c in address):
        raise ContractError(
            "bad-addr",
            f"{what} has a query, fragment, blank or a character other than printable ASCII "
            "(not shown: a query may hold a credential)",
        )
    if (
        not found
        or scheme.lower() not in {"http", "https"}
        or not _valid_authority(authority)
        or _BAD_ESCAPE.search(rest[len(authority) :]) is not None
    ):
        raise ContractError(
            "bad-addr",
            f"{what} {rules.shown(address)} is not an http(s) URL with a host, e.g. "
            "https://vault.example.com:8200",
        )
    return address.rstrip("/")


def _valid_authority(authority: str) -> bool:
    """``host[:port]``: a host name of letters, digits, '.', '_', '-' or a bracketed IPv6
    literal; the port, when given, digits up to 65535."""
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or _IPV6_CHARS.fullmatch(host) is None:
            return False
        if not after:
            return True
        if not after.startswith(":"):
            return False
        port = after[1:]
    else:
        host, colon, port = authority.partition(":")
        if _HOST_CHARS.fullmatch(host) is None:
            return False
        if not colon:
            return True
    return _PORT.fullmatch(port) is not None and int(port) <= _MAX_PORT


def parse_annotations(
    annotations: Mapping[str, str], defaults: InjectorDefaults | None = None
) -> dict[str, Any]:
    """A pod's annotations as the injector reads them: ``{"inject": False}``, or the address,
    role, auth mount, the ordered ``[{path, fields}]`` mapping, and ``authMethod`` (only when
    not ``kubernetes``) and ``namespace`` (only when set). ``defaults``, an injector's cluster
    defaults, stand in for absent (or blank) address, auth-path, auth-method and namespace
    annotations. Refusals carry the codes of ``spec/contract/annotations.json``."""
    if not parse_bool(INJECT, annotations.get(INJECT, "")):
        return {"inject": False}
    defaults = defaults or InjectorDefaults()
    address = annotations.get(VAULT_ADDRESS, "")
    if address.strip():
        address = parse_vault_address(VAULT_ADDRESS, address)
    elif defaults.address:
        address = defaults.address
    else:
        raise ContractError(
            "missing-addr", f"{VAULT_ADDRESS} is not set and the injector has no default address"
        )
    role = annotations.get(VAULT_ROLE, "").strip()
    if not role:
        raise ContractError("missing-role", f"{VAULT_ROLE} is not set")
    if not rules.valid_role_name(role):
        raise ContractError("bad-role", f"{VAULT_ROLE} {rules.shown(role)} is not a valid role")
    mount = (
        parse_auth_path(annotations[AUTH_PATH])
        if AUTH_PATH in annotations
        else defaults.auth_mount or rules.DEFAULT_AUTH_MOUNT
    )
    method = defaults.auth_method or AUTH_METHOD_KUBERNETES
    if annotations.get(AUTH_METHOD, "").strip():
        method = parse_auth_method(AUTH_METHOD, annotations[AUTH_METHOD])
    namespace = defaults.namespace
    if annotations.get(VAULT_NAMESPACE, "").strip():
        namespace = parse_vault_namespace(VAULT_NAMESPACE, annotations[VAULT_NAMESPACE])
    files = parse_secret_files(annotations[SECRET_FILES]) if SECRET_FILES in annotations else []
    if not annotations.get(SECRET_PATHS, "").strip() and not files:
        raise ContractError("missing-secret-paths", f"{SECRET_PATHS} is not set")
    pairs = parse_mapping(annotations.get(SECRET_PATHS, ""), annotations.get(ENV_MAP, ""))
    accepted = parse_accept_dangerous_env(annotations.get(ACCEPT_DANGEROUS_ENV, ""))
    check_dangerous_targets(pairs, accepted)
    parsed: dict[str, Any] = {
        "inject": True,
        "address": address,
        "role": role,
        "authMount": mount,
        "mapping": [{"path": path, "fields": fields} for path, fields in pairs],
        **({"secretFiles": files} if files else {}),
    }
    if method != AUTH_METHOD_KUBERNETES:
        parsed["authMethod"] = method
    if namespace:
        parsed["namespace"] = namespace
    return parsed
