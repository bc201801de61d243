"""The runtime wrapper: log in, fetch the secrets, build the child environment, exec.

This is what the injected wrapper does in a pod (``cloudtaser wrap -- CMD ARGS...``):

1. read its configuration from the environment (:func:`config_from_env`), names as the runtime
   uses them:

   ==============================  ==========================================================
   ``VAULT_ADDR``                  vault URL with scheme and port (required; ``BAO_ADDR`` too)
   ``VAULT_AUTH_METHOD``           ``kubernetes`` (default) or ``token``
   ``VAULT_AUTH_ROLE``             the Kubernetes-auth role (required for ``kubernetes``)
   ``VAULT_AUTH_MOUNT_PATH``       default ``auth/kubernetes`` (``auth/`` prefix optional)
   ``VAULT_TOKEN``                 the vault token (only for ``token``; ``BAO_TOKEN`` too)
   ``VAULT_NAMESPACE``             vault namespace (optional; ``BAO_NAMESPACE`` too)
   ``VAULT_CACERT``                CA bundle file for the vault's TLS certificate (optional)
   ``VAULT_SKIP_VERIFY``           ``true`` disables TLS verification (never in production)
   ``CLOUDTASER_SECRET_PATHS``     the ``cloudtaser.io/secret-paths`` annotation value
   ``CLOUDTASER_ENV_MAP``          the ``cloudtaser.io/env-map`` annotation value
   ``CLOUDTASER_SA_TOKEN_PATH``    default ``/var/run/secrets/kubernetes.io/serviceaccount/token``
   ==============================  ==========================================================

2. log in (Kubernetes auth with the ServiceAccount JWT, read from the file at every start, or
   the given token), read each KV v2 path once (``<mount>/data/<path>``), pick the mapped fields;
3. fail closed: a missing path, a missing or null field, an unreadable token file, a refused
   login or an unusable value stops the start with a message that names the path and field,
   never a value; nothing is executed;
4. revoke its own vault token (the application never needs it; best effort);
5. build the child environment (:func:`build_child_env`): the inherited environment minus every
   ``CLOUDTASER_*`` variable and every vault token (``VAULT_TOKEN``, ``BAO_TOKEN``), plus the
   secrets;
6. ``os.execvpe`` the command with that environment (:func:`exec_command`).

Why exec keeps secrets out of the wrapper's own environment and command line: the secrets are
only ever held in a Python dict that is handed to ``execve`` as the *new* program's
environment. ``os.environ`` (and so ``/proc/<pid>/environ`` of the wrapper as started) is
never modified, and the command line is the user's own ``CMD ARGS``. ``execve`` replaces the
wrapper's process image with the command: same PID, so the command's exit code and the signals
it receives are its own (no forwarding needed, no parent left behind holding a copy of the
secrets); the secrets exist only in the exec'd program's environment.

Library functions raise :class:`~cloudtaser.errors.CloudtaserError` subclasses and never print;
:func:`prepare` is the whole flow up to (not including) the exec, for tests and embedding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from cloudtaser.errors import ConfigError, OperationError, VaultAuthError, VaultHTTPError
from cloudtaser.naming import usable_mount, valid_role_name

if TYPE_CHECKING:
    from cloudtaser.openbao import OpenBaoClient

__all__ = [
    "DEFAULT_AUTH_MOUNT_PATH",
    "DEFAULT_SA_TOKEN_PATH",
    "ENV_ENV_MAP",
    "ENV_SA_TOKEN_PATH",
    "ENV_SECRET_PATHS",
    "STRIPPED_PREFIX",
    "WrapperConfig",
    "build_child_env",
    "config_from_env",
    "exec_command",
    "fetch_secrets",
    "parse_mapping",
    "prepare",
]

ENV_ADDR: Final = "VAULT_ADDR"
ENV_AUTH_METHOD: Final = "VAULT_AUTH_METHOD"
ENV_AUTH_ROLE: Final = "VAULT_AUTH_ROLE"
ENV_AUTH_MOUNT_PATH: Final = "VAULT_AUTH_MOUNT_PATH"
ENV_SKIP_VERIFY: Final = "VAULT_SKIP_VERIFY"
ENV_CACERT: Final = "VAULT_CACERT"
ENV_NAMESPACE: Final = "VAULT_NAMESPACE"
ENV_TOKEN: Final = "VAULT_TOKEN"  # noqa: S105 - a variable name
ENV_SECRET_PATHS: Final = "CLOUDTASER_SECRET_PATHS"  # noqa: S105 - a variable name
ENV_ENV_MAP: Final = "CLOUDTASER_ENV_MAP"
ENV_SA_TOKEN_PATH: Final = "CLOUDTASER_SA_TOKEN_PATH"  # noqa: S105 - a variable name

DEFAULT_AUTH_MOUNT_PATH: Final = "auth/kubernetes"
DEFAULT_SA_TOKEN_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105
#: Every variable with this prefix is removed from the child's environment.
STRIPPED_PREFIX: Final = "CLOUDTASER_"
#: Vault tokens are removed from the child's environment as well.
STRIPPED_NAMES: Final = frozenset({"VAULT_TOKEN", "BAO_TOKEN"})
AUTH_METHODS: Final = ("kubernetes", "token")

_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"", "0", "false", "no", "off", "f", "n"})
_MAX_TOKEN_FILE = 64 * 1024


@dataclass(frozen=True)
class WrapperConfig:
    """The wrapper's resolved configuration. ``repr`` never shows the token."""

    address: str
    auth_method: str
    auth_mount: str
    #: ``[(vault path, {field: ENV})]`` in annotation order.
    mapping: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    role: str | None = None
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    ca_cert: str | None = None
    verify_tls: bool = True
    sa_token_path: str = DEFAULT_SA_TOKEN_PATH
    timeout: float = 30.0


def parse_mapping(secret_paths: str, env_map: str) -> list[tuple[str, dict[str, str]]]:
    """Pair the secret-paths and env-map values (the annotation formats) group by group.

    Delegates to :func:`cloudtaser.annotations.parse_mapping`; a format error becomes a
    :class:`ConfigError` naming the variable.
    """
    from cloudtaser.annotations import AnnotationError  # noqa: PLC0415
    from cloudtaser.annotations import parse_mapping as parse  # noqa: PLC0415

    try:
        pairs = parse(secret_paths, env_map)
    except AnnotationError as exc:
        raise ConfigError(f"{ENV_SECRET_PATHS} / {ENV_ENV_MAP}: {exc}") from None
    for path, group in pairs:
        if not group:
            raise ConfigError(f"{ENV_ENV_MAP}: no field is mapped for {path}")
    return pairs


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {value[:20]!r}")


def _auth_mount(value: str) -> str:
    mount = value.strip().lstrip("/").removeprefix("auth/").strip("/")
    if not usable_mount(mount):  # the rule book (naming), reserved mounts in any case
        raise ConfigError(
            f"{ENV_AUTH_MOUNT_PATH} {value[:80]!r} is not an auth mount path such as "
            "auth/kubernetes"
        )
    return mount


def config_from_env(environ: Mapping[str, str]) -> WrapperConfig:
    """Resolve the wrapper configuration from ``environ`` (see the module docstring)."""
    from cloudtaser.config import (  # noqa: PLC0415
        header_safe_token,
        valid_vault_namespace,
        validate_vault_address,
    )

    address = environ.get(ENV_ADDR) or environ.get("BAO_ADDR")
    if not address:
        raise ConfigError(f"{ENV_ADDR} is not set: the wrapper does not know the vault address")
    address = validate_vault_address(address, what=ENV_ADDR)
    method = (environ.get(ENV_AUTH_METHOD) or "kubernetes").strip().lower()
    if method not in AUTH_METHODS:
        raise ConfigError(f"{ENV_AUTH_METHOD} must be kubernetes or token, not {method[:20]!r}")
    mount = _auth_mount(environ.get(ENV_AUTH_MOUNT_PATH) or DEFAULT_AUTH_MOUNT_PATH)
    role = (environ.get(ENV_AUTH_ROLE) or "").strip() or None
    token = environ.get(ENV_TOKEN) or environ.get("BAO_TOKEN") or None
    if method == "kubernetes":
        if role is None:
            raise ConfigError(f"{ENV_AUTH_ROLE} is not set (the vault role of this workload)")
        if not valid_role_name(role):
            raise ConfigError(f"{ENV_AUTH_ROLE} {role[:80]!r} is not a valid role name")
    elif token is None:
        raise ConfigError(f"{ENV_AUTH_METHOD}=token but {ENV_TOKEN} is not set")
    if token is not None and not header_safe_token(token):
        raise ConfigError(f"{ENV_TOKEN} contains blanks, control or non-ASCII characters")
    secret_paths = environ.get(ENV_SECRET_PATHS, "")
    env_map = environ.get(ENV_ENV_MAP, "")
    if not secret_paths.strip():
        raise ConfigError(f"{ENV_SECRET_PATHS} is not set: there are no secrets to fetch")
    mapping = parse_mapping(secret_paths, env_map)
    namespace = (environ.get(ENV_NAMESPACE) or environ.get("BAO_NAMESPACE") or "").strip("/")
    if namespace and not valid_vault_namespace(namespace):
        raise ConfigError(f"{ENV_NAMESPACE} {namespace[:80]!r} is not a valid namespace path")
    ca_cert = environ.get(ENV_CACERT) or environ.get("BAO_CACERT") or None
    if ca_cert is not None and not Path(ca_cert).is_file():
        raise ConfigError(f"{ENV_CACERT} {ca_cert} does not exist")
    skip = _flag(environ, ENV_SKIP_VERIFY) or _flag(environ, "BAO_SKIP_VERIFY")
    return WrapperConfig(
        address=address,
        auth_method=method,
        auth_mount=mount,
        mapping=tuple((path, tuple(group.items())) for path, group in mapping),
        role=role if method == "kubernetes" else None,
        token=token if method == "token" else None,
        namespace=namespace or None,
        ca_cert=ca_cert,
        verify_tls=not skip,
        sa_token_path=environ.get(ENV_SA_TOKEN_PATH) or DEFAULT_SA_TOKEN_PATH,
    )


def read_sa_token(path: str) -> str:
    """The ServiceAccount JWT, read fresh from ``path`` (projected tokens rotate)."""
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(_MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the ServiceAccount token {path}: {exc.strerror}; is a token mounted "
            f"(automountServiceAccountToken) or {ENV_SA_TOKEN_PATH} set?"
        ) from None
    if len(raw) > _MAX_TOKEN_FILE:
        raise ConfigError(f"the ServiceAccount token file {path} is too large")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the ServiceAccount token file {path} is not a JWT") from None
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise ConfigError(f"the ServiceAccount token file {path} is empty or not a JWT")
    return token


def _env_value(value: Any, where: str) -> str:
    """A vault field as an environment string; refuses what cannot be one (no value shown)."""
    if value is None:
        raise OperationError(f"{where} is null in the vault; refusing to start")
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if "\x00" in text:
        raise OperationError(f"{where} contains a NUL byte and cannot be an environment value")
    return text


def login(client: OpenBaoClient, config: WrapperConfig) -> None:
    """Log ``client`` in (Kubernetes auth) or keep its token (token auth)."""
    if config.auth_method != "kubernetes":
        return
    if config.role is None:
        raise ConfigError(f"{ENV_AUTH_ROLE} is not set (the vault role of this workload)")
    jwt = read_sa_token(config.sa_token_path)
    try:
        client.login_kubernetes(config.auth_mount, config.role, jwt)
    except VaultHTTPError as exc:
        said = "; ".join(exc.errors) or f"HTTP {exc.status}"
        hint = ""
        if "not authorized" in said:
            hint = ": the role does not bind this pod's namespace/ServiceAccount"
        elif "audience" in said:
            hint = ": the token's audience does not match the role's"
        elif "invalid role name" in said:
            hint = ": no such role on this mount"
        elif said == "permission denied":
            hint = (
                ": the vault could not verify the token with the cluster (run "
                "'cloudtaser target connect --check' to find out why)"
            )
        raise VaultAuthError(
            f"login to auth/{config.auth_mount} with role {config.role!r} was refused "
            f"({said}){hint}",
            status=exc.status,
            path=exc.path,
            errors=exc.errors,
            method=exc.method,
        ) from None


def fetch_secrets(client: OpenBaoClient, config: WrapperConfig) -> dict[str, str]:
    """Read every mapped path once and return ``{ENV: value}``; fail closed on anything missing.

    ``client`` must already be logged in. Error messages name paths and fields, never values.
    """
    from cloudtaser.plan import split_vault_path  # noqa: PLC0415

    out: dict[str, str] = {}
    cache: dict[str, dict[str, Any]] = {}
    for path, group in config.mapping:
        if path not in cache:
            mount, rest = split_vault_path(path)
            try:
                data = client.kv2_read_data(mount, rest)
            except VaultAuthError as exc:
                raise VaultAuthError(
                    f"permission denied reading {path} (HTTP {exc.status}): the role's policy "
                    "does not grant read on it",
                    status=exc.status,
                    path=exc.path,
                    errors=exc.errors,
                    method=exc.method,
                ) from None
            if data is None:
                raise OperationError(
                    f"secret {path} does not exist in the vault (never written, or its latest "
                    "version is deleted or destroyed); refusing to start"
                )
            cache[path] = data
        data = cache[path]
        missing = [f for f, _env in group if f not in data]
        if missing:
            raise OperationError(
                f"secret {path} has no field(s) {', '.join(repr(f) for f in missing)}; refusing "
                "to start"
            )
        for field_name, env in group:
            out[env] = _env_value(data[field_name], f"field {field_name!r} of {path}")
    return out


def build_child_env(environ: Mapping[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: ``environ`` without ``CLOUDTASER_*`` and vault tokens, plus
    ``secrets`` (which win over inherited variables of the same name). Pure."""
    child = {
        k: v
        for k, v in environ.items()
        if not k.startswith(STRIPPED_PREFIX) and k not in STRIPPED_NAMES
    }
    child.update(secrets)
    return child


def _revoke(client: OpenBaoClient) -> None:
    """Best effort: the token is not needed once the secrets are read."""
    try:
        client.request("POST", "auth/token/revoke-self", idempotent=True)
    except Exception:  # noqa: BLE001 - a failed revoke must not stop the start
        import logging  # noqa: PLC0415

        logging.getLogger("cloudtaser.wrapper").info(
            "could not revoke the wrapper's vault token; it expires with its TTL"
        )


def prepare(environ: Mapping[str, str], *, client: OpenBaoClient | None = None) -> dict[str, str]:
    """Everything before the exec: configure, log in, fetch, revoke, build the child env.

    The token of a Kubernetes-auth login is revoked whether or not the fetch succeeded."""
    config = config_from_env(environ)
    own = client is None
    if client is None:
        from cloudtaser.config import VaultTarget  # noqa: PLC0415
        from cloudtaser.openbao import OpenBaoClient, RetryPolicy  # noqa: PLC0415

        target = VaultTarget(
            address=config.address,
            token=config.token,
            namespace=config.namespace,
            ca_cert=config.ca_cert,
            verify_tls=config.verify_tls,
            timeout=config.timeout,
        )
        client = OpenBaoClient(
            target, pool_size=4, retry=RetryPolicy(deadline=60.0, command_deadline=120.0)
        )
    try:
        login(client, config)
        try:
            secrets = fetch_secrets(client, config)
        finally:  # also when a secret is missing: the start fails, the token is of no use
            if config.auth_method == "kubernetes":
                _revoke(client)
    finally:
        if own:
            client.close()
    return build_child_env(environ, secrets)


def exec_command(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with ``argv`` (PATH lookup) running in ``env``.

    Raises :class:`ConfigError` when there is no command, ``FileNotFoundError`` /
    ``PermissionError`` when it cannot be executed (the CLI maps them to 127 / 126).
    """
    if not argv:
        raise ConfigError("no command to run: cloudtaser wrap -- COMMAND [ARGS...]")
    os.execvpe(argv[0], list(argv), dict(env))  # noqa: S606 - exec of the user's own command
