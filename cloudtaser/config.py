"""Configuration resolved once, at the edge, into frozen values.

Precedence everywhere: flag > environment > default. Among the environment variables,
``VAULT_*`` comes first and ``BAO_*`` is the fallback, like the vault CLI and the runtime
wrapper (one implementation: :func:`cloudtaser.contract.vault_env`). Booleans follow the
contract's :func:`~cloudtaser.contract.parse_bool` (an unknown value is an error naming the
variable). Only this module (called by the CLI with ``os.environ``) reads environment
variables; everything deeper receives these frozen values. The token is kept out of every repr.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloudtaser import contract
from cloudtaser.errors import ConfigError
from cloudtaser.plan import rules

__all__ = ["ClusterTarget", "VaultTarget", "resolve_cluster_target", "resolve_vault_target"]


def env_flag(env: Mapping[str, str], suffix: str) -> bool:
    """``VAULT_<suffix>`` (else ``BAO_<suffix>``) as a contract boolean; unknown = ConfigError."""
    name = f"VAULT_{suffix}" if env.get(f"VAULT_{suffix}") else f"BAO_{suffix}"
    try:
        return contract.parse_bool(name, env.get(name))
    except contract.ContractError as exc:
        raise ConfigError(str(exc)) from None


def local_actor() -> str:
    """Who runs this command, for plan history, ``createdBy`` and connect records:
    ``user@host``, printable, at most 200 characters (the one actor string)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    text = f"{user}@{socket.gethostname()}"
    return "".join(c for c in text if c.isprintable())[:200] or "unknown"


def validate_vault_address(address: str, *, what: str = "vault address") -> str:
    """Return ``address`` without a trailing slash, or raise :class:`ConfigError`."""
    try:  # one rule, the runtime contract's
        return contract.parse_vault_address(what, address)
    except contract.ContractError as exc:
        raise ConfigError(str(exc)) from None


def warn_if_exposed(path: str | os.PathLike[str], what: str) -> bool:
    """Log a warning (and return True) when ``path``, which holds a credential, is readable
    or writable by its group or by others. Never reads the content."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return False
    logging.getLogger("cloudtaser.config").warning(
        "%s %s is accessible by its group or by other users (mode %s); anyone who can read it "
        "has the credential: chmod 600 %s",
        what,
        os.fspath(path),
        oct(stat.S_IMODE(mode)),
        os.fspath(path),
    )
    return True


def warn_token_flag() -> None:
    """``--token`` on the command line is visible to every user of the machine (``ps``)."""
    logging.getLogger("cloudtaser.config").warning(
        "--token puts the vault token on the command line, where every user of this machine "
        "can read it (ps, /proc) and the shell history keeps it; use --token-file FILE (mode "
        "600) or the BAO_TOKEN / VAULT_TOKEN environment variable instead"
    )


def header_safe_token(token: str) -> bool:
    """A token is sent as an HTTP header: printable ASCII without blanks, nothing else."""
    return token.isascii() and token.isprintable() and not any(c.isspace() for c in token)


def valid_vault_namespace(namespace: str) -> bool:
    """A vault namespace path (sent as ``X-Vault-Namespace``): the rule book's
    (:func:`cloudtaser.plan.rules.valid_vault_namespace`)."""
    return rules.valid_vault_namespace(namespace)


@dataclass(frozen=True)
class VaultTarget:
    """Where and how to reach an OpenBao / Vault server. ``repr`` never shows the token."""

    address: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    ca_cert: str | None = None
    verify_tls: bool = True
    timeout: float = 30.0
    #: Follow 307/308 redirects to another origin (host or port). Off by default: the token
    #: (or a login's JWT) would go with the request to wherever the server points.
    cross_origin_redirects: bool = False
    #: Where ``address`` came from, as a message names it: ``--openbao-addr``,
    #: ``VAULT_ADDR`` or ``BAO_ADDR`` (what the user set, never the other one).
    address_source: str = "--openbao-addr"

    def __repr__(self) -> str:
        token = "<set>" if self.token else "<unset>"
        return (
            f"VaultTarget(address={self.address!r}, token={token}, namespace={self.namespace!r}, "
            f"ca_cert={self.ca_cert!r}, verify_tls={self.verify_tls})"
        )

    @property
    def tls_insecure(self) -> bool:
        """True when TLS verification was explicitly disabled for an https address."""
        return not self.verify_tls and self.address.startswith("https:")


def resolve_vault_target(
    *,
    address: str | None = None,
    token: str | None = None,
    token_file: str | None = None,
    namespace: str | None = None,
    ca_cert: str | None = None,
    skip_verify: bool | None = None,
    timeout: float = 30.0,
    require_token: bool = True,
    cross_origin_redirects: bool = False,
    environ: Mapping[str, str] | None = None,
) -> VaultTarget:
    """Resolve flags and environment into a :class:`VaultTarget`.

    Address: flag, ``VAULT_ADDR``, ``BAO_ADDR``. Token: ``--token``, ``--token-file``,
    ``VAULT_TOKEN``, ``BAO_TOKEN``, then ``~/.vault-token`` (what ``bao login`` / ``vault
    login`` write, read last as the vault CLI's default token helper does). Namespace: flag,
    ``VAULT_NAMESPACE``, ``BAO_NAMESPACE``.
    CA bundle: flag, ``VAULT_CACERT``, ``BAO_CACERT``. Skip-verify: flag,
    ``VAULT_SKIP_VERIFY``, ``BAO_SKIP_VERIFY`` (a boolean; anything else is an error).
    """
    env = os.environ if environ is None else environ
    source = "--openbao-addr"
    if not address:
        address = contract.vault_env(env, "ADDR")
        source = _env_name(env, ("VAULT_ADDR", "BAO_ADDR"), address)
    if not address:
        raise ConfigError("no vault address: pass --openbao-addr URL or set VAULT_ADDR / BAO_ADDR")
    address = validate_vault_address(address, what=f"the vault address ({source})")
    if token is not None:
        warn_token_flag()
    if token is None and token_file:
        warn_if_exposed(token_file, "the token file")
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty")
    token = token or contract.vault_env(env, "TOKEN") or _token_helper_file(env)
    if token is not None and not header_safe_token(token):
        raise ConfigError("the vault token contains blanks, control or non-ASCII characters")
    if require_token and not token:
        raise ConfigError(
            "no vault token: pass --token-file FILE (keeps it out of shell history), --token, "
            "set VAULT_TOKEN / BAO_TOKEN, or run 'bao login' (writes ~/.vault-token)"
        )
    namespace = namespace or contract.vault_env(env, "NAMESPACE")
    if namespace is not None:
        namespace = namespace.strip("/")
        if not valid_vault_namespace(namespace):
            raise ConfigError(f"vault namespace {namespace!r} is not a valid namespace path")
    ca_cert = ca_cert or contract.vault_env(env, "CACERT")
    if ca_cert is not None and not Path(ca_cert).exists():
        raise ConfigError(f"CA bundle {ca_cert} does not exist")
    if skip_verify is None:
        skip_verify = env_flag(env, "SKIP_VERIFY")
    return VaultTarget(
        address=address,
        token=token,
        namespace=namespace,
        ca_cert=ca_cert,
        verify_tls=not skip_verify,
        timeout=timeout,
        cross_origin_redirects=cross_origin_redirects,
        address_source=source,
    )


def _env_name(env: Mapping[str, str], names: tuple[str, ...], value: str | None) -> str:
    """Which of ``names`` holds ``value`` (the one :func:`cloudtaser.contract.vault_env`
    chose), so a message names the variable the user actually set."""
    return next((name for name in names if value and env.get(name) == value), names[0])


def token_helper_path(env: Mapping[str, str]) -> Path | None:
    """``$HOME/.vault-token``: where ``bao login`` and ``vault login`` store the token
    (``None`` without ``HOME`` in the environment)."""
    home = env.get("HOME")
    return Path(home) / ".vault-token" if home else None


def _token_helper_file(env: Mapping[str, str]) -> str | None:
    """The token ``bao login`` left in ``~/.vault-token``, or None (absent or empty)."""
    path = token_helper_path(env)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if text:
        warn_if_exposed(path, "the token file")
    return text or None


@dataclass(frozen=True)
class ClusterTarget:
    """Which cluster to talk to: a kubeconfig file (or ``KUBECONFIG`` list) and a context."""

    kubeconfig: tuple[str, ...] = ()
    context: str | None = None


def resolve_cluster_target(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterTarget:
    """kubectl semantics: ``--kubeconfig``, else ``KUBECONFIG`` (a path list), else the default.

    The default is ``~/.kube/config``.
    """
    env = os.environ if environ is None else environ
    if kubeconfig:
        paths: tuple[str, ...] = (kubeconfig,)
    elif env.get("KUBECONFIG"):
        paths = tuple(p for p in env["KUBECONFIG"].split(os.pathsep) if p)
    else:
        home = env.get("HOME") or str(Path.home())
        paths = (str(Path(home) / ".kube" / "config"),)
    existing = tuple(p for p in paths if Path(p).is_file())
    if not existing:
        raise ConfigError(
            f"no kubeconfig found (looked at {', '.join(paths)}); pass --kubeconfig PATH or set "
            "KUBECONFIG"
        )
    return ClusterTarget(kubeconfig=existing, context=context or None)
