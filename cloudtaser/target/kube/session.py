"""The cluster side: a lightkube client built from a :class:`ClusterTarget` (kubeconfig merge,
exec credential plugins, client certificates). lightkube / httpx2 exceptions become cloudtaser
errors in :mod:`cloudtaser.target.kube.errors`.

Workflow modules (``discover``, ``protect``, ``connect``) receive a :class:`KubeSession` and
never build clients themselves, so the same code runs against any API server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2
import yaml
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.models import User
from lightkube.core.exceptions import ConfigError as LkConfigError

from cloudtaser.config import ClusterTarget
from cloudtaser.errors import ConfigError
from cloudtaser.sanitize import printable, shown

if TYPE_CHECKING:
    from lightkube.config.kubeconfig import SingleConfig

__all__ = [
    "FIELD_MANAGER",
    "ExecCredential",
    "KubeSession",
    "connect",
    "load_kubeconfig",
    "parse_exec_credential",
]

#: Every write carries this field manager, so our changes are identifiable in managedFields.
FIELD_MANAGER = "cloudtaser"


@dataclass(frozen=True)
class KubeSession:
    """A connected cluster: the lightkube client and what the kubeconfig said about it."""

    client: Client
    context: str
    cluster_name: str
    server: str
    #: PEM of the cluster CA from the kubeconfig, when it carries one (data or file).
    ca_pem: str | None
    #: The resolved kubeconfig, for more clients of the same cluster (:meth:`async_client`).
    config: KubeConfig | None = None
    timeout: float = 30.0
    #: TLS context holding a client certificate from an exec plugin (lightkube's kubeconfig
    #: model has no place for it); every client of this session connects with it.
    tls: ssl.SSLContext | None = field(default=None, repr=False)

    def async_client(self) -> AsyncClient:
        """A new ``lightkube.AsyncClient`` for the same cluster and credentials (the caller
        closes it). For concurrent requests from one event loop: lightkube clients must not
        be shared between threads."""

        if self.config is None:
            raise ConfigError("this cluster session was built without a kubeconfig")
        return AsyncClient(
            config=self.config,
            timeout=httpx2.Timeout(self.timeout),
            field_manager=FIELD_MANAGER,
            trust_env=False,
            transport=None if self.tls is None else httpx2.AsyncHTTPTransport(verify=self.tls),
        )

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

    def __enter__(self) -> KubeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_kubeconfig(paths: tuple[str, ...]) -> dict[str, Any]:
    """Merge kubeconfig files like kubectl does for ``KUBECONFIG=a:b`` (first one wins)."""
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    seen: dict[str, set[str]] = {"clusters": set(), "contexts": set(), "users": set()}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
            data = yaml.safe_load(text) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
        except yaml.YAMLError:
            raise ConfigError(f"kubeconfig {path} is not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"kubeconfig {path} is not a kubeconfig mapping")
        base = str(Path(path).resolve().parent)
        for key in ("clusters", "contexts", "users"):
            entries = data.get(key) or []
            if not isinstance(entries, list):
                raise ConfigError(f"kubeconfig {path}: {key} is not a list")
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise ConfigError(f"kubeconfig {path}: an entry of {key} has no name")
                if not isinstance(entry.get(key[:-1]) or {}, dict):
                    raise ConfigError(
                        f"kubeconfig {path}: {key[:-1]} {entry['name']!r} is not a mapping"
                    )
                if entry["name"] in seen[key]:
                    continue
                seen[key].add(entry["name"])
                merged[key].append({**entry, "_base": base})
        if "current-context" not in merged and data.get("current-context"):
            merged["current-context"] = data["current-context"]
    return merged


def _resolve_path(entry: dict[str, Any], value: str) -> str:
    path = Path(value)
    return str(path if path.is_absolute() else Path(entry["_base"]) / path)


def _ca_pem(cluster_entry: dict[str, Any]) -> str | None:

    cluster = cluster_entry.get("cluster") or {}
    if cluster.get("certificate-authority-data"):
        try:
            return base64.b64decode(cluster["certificate-authority-data"]).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(
                f"kubeconfig cluster {cluster_entry['name']!r}: certificate-authority-data is "
                "not base64 PEM"
            ) from None
    if cluster.get("certificate-authority"):
        path = _resolve_path(cluster_entry, cluster["certificate-authority"])
        try:
            return Path(path).read_text(encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"cannot read cluster CA {path}: {exc.strerror}") from None
    return None


def connect(target: ClusterTarget, *, timeout: float = 30.0) -> KubeSession:
    """Build a lightkube client for ``target``. No request is sent yet."""

    merged = load_kubeconfig(target.kubeconfig)
    context = target.context or merged.get("current-context")
    if not context:
        raise ConfigError("the kubeconfig has no current-context; pass --context NAME")
    contexts = {c["name"]: c for c in merged["contexts"]}
    if context not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise ConfigError(f"context {context!r} not found in the kubeconfig (known: {known})")
    ctx = contexts[context].get("context") or {}
    clusters = {c["name"]: c for c in merged["clusters"]}
    cluster_name = ctx.get("cluster")
    if not isinstance(cluster_name, str) or cluster_name not in clusters:
        raise ConfigError(
            f"context {context!r} names cluster {cluster_name!r}, which is not defined"
        )
    cluster_entry = clusters[cluster_name]
    cluster = cluster_entry.get("cluster") or {}
    server = cluster.get("server")
    if not isinstance(server, str) or not _valid_server(server):
        raise ConfigError(
            f"cluster {cluster_name!r} has no valid http(s) server URL in the kubeconfig "
            "(e.g. https://10.0.0.1:6443 or https://[::1]:6443)"
        )
    ca_pem = _ca_pem(cluster_entry)
    user_name = ctx.get("user")
    if cluster.get("insecure-skip-tls-verify"):
        logging.getLogger("cloudtaser.target.kube.session").warning(
            "TLS verification of the API server %s is DISABLED by the kubeconfig "
            "(insecure-skip-tls-verify: true in cluster %r); anyone on the network path can "
            "impersonate the cluster and read the credentials. Put the cluster CA into the "
            "kubeconfig instead.",
            server,
            cluster_name,
        )

    # lightkube resolves relative file paths against the file it was loaded from; with several
    # merged files we make them absolute first.
    plain: dict[str, Any] = {"current-context": context}
    credential: ExecCredential | None = None
    for key in ("clusters", "contexts", "users"):
        plain[key] = []
        for original in merged[key]:
            entry = {k: v for k, v in original.items() if k != "_base"}
            inner_key = key[:-1]
            inner = dict(entry.get(inner_key) or {})
            for name in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
                if isinstance(inner.get(name), str):
                    inner[name] = _resolve_path(original, inner[name])
            if key == "users" and isinstance(inner.get("token"), str):
                # kubectl trims a token's surrounding whitespace: YAML's block form
                # (``token: |``) ends it with a newline, which no HTTP header may hold.
                inner["token"] = inner["token"].strip()
            if key == "users" and original["name"] == user_name:
                inner, credential = _usable_user(inner, user_name)
            entry[inner_key] = inner
            plain[key].append(entry)
    try:
        config = KubeConfig.from_dict(plain, fname=target.kubeconfig[0])
        tls = None
        single = config.get()
        if credential is not None and credential.has_certificate and single is not None:
            tls = _client_tls(single, credential, f"kubeconfig user {user_name!r}: exec plugin")
        client = Client(
            config=config,
            timeout=httpx2.Timeout(timeout),
            field_manager=FIELD_MANAGER,
            trust_env=False,
            transport=None if tls is None else httpx2.HTTPTransport(verify=tls),
        )
    except (LkConfigError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"kubeconfig context {context!r} is not usable: {shown(str(exc))}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"kubeconfig context {context!r}: {exc.strerror}: {exc.filename}"
        ) from None
    return KubeSession(
        client=client,
        context=context,
        cluster_name=str(cluster_name),
        server=server,
        ca_pem=ca_pem,
        config=config,
        timeout=timeout,
        tls=tls,
    )


def _valid_server(server: str) -> bool:

    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


#: Exec credential plugin API versions we speak (kubectl's client-go speaks the same three).
_EXEC_VERSIONS = frozenset(
    {
        "client.authentication.k8s.io/v1",
        "client.authentication.k8s.io/v1beta1",
        "client.authentication.k8s.io/v1alpha1",
    }
)
#: How long an exec credential plugin may run, and how much it may print.
_EXEC_TIMEOUT = 60.0
_EXEC_MAX_OUTPUT = 1024 * 1024


#: A user's own client certificate, which an exec plugin's certificate may not be mixed with.
_USER_CERT_FIELDS = (
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
)


@dataclass(frozen=True)
class ExecCredential:
    """The ``status`` of the ExecCredential an exec plugin printed: a bearer token, a client
    certificate (PEM, intermediates allowed) with its private key (PEM), or both.

    The key and the token never appear in a repr. ``expirationTimestamp`` is not kept: the
    plugin runs once per command (as for tokens), so there is nothing to refresh."""

    token: str | None = field(default=None, repr=False)
    client_certificate_pem: str | None = None
    client_key_pem: str | None = field(default=None, repr=False)

    @property
    def has_certificate(self) -> bool:
        return self.client_certificate_pem is not None


def _usable_user(user: dict[str, Any], name: str) -> tuple[dict[str, Any], ExecCredential | None]:
    """Check the context's user before any request: a missing ``tokenFile`` or a broken
    ``exec`` plugin is a configuration problem (exit 2), never a crash. An ``exec`` plugin is
    run here, once per command, in every API version kubectl supports (lightkube alone lacks
    ``client.authentication.k8s.io/v1``, which the cloud providers' plugins emit, and client
    certificates, which Teleport's ``tsh`` and IdP plugins return); its token replaces the
    ``exec`` entry, and its client certificate is returned for :func:`_client_tls`."""
    token_file = user.get("tokenFile")
    if isinstance(token_file, str):
        try:
            content = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"kubeconfig user {name!r}: cannot read tokenFile {token_file}: {exc.strerror}"
            ) from None
        if not content:
            raise ConfigError(f"kubeconfig user {name!r}: tokenFile {token_file} is empty")
    exec_spec = user.get("exec")
    if exec_spec is None or user.get("token") or isinstance(token_file, str):
        return user, None
    where = f"kubeconfig user {name!r}: exec plugin"
    output = _run_exec_plugin(exec_spec, where)
    command = printable(exec_spec["command"], limit=200)  # a string: checked by the run
    credential = parse_exec_credential(output, where=f"{where} {command!r}")
    if credential.has_certificate and any(user.get(f) for f in _USER_CERT_FIELDS):
        # client-go refuses this too: which certificate would be meant?
        raise ConfigError(
            f"{where} returned a client certificate, and the user also sets client-certificate"
            "/client-key: keep one of the two"
        )
    usable = {k: v for k, v in user.items() if k != "exec"}
    if credential.token is not None:
        usable["token"] = credential.token
    return usable, credential


def _run_exec_plugin(spec: Any, where: str) -> bytes:
    """Run the plugin ``spec`` names (non-interactive, 60 s, 1 MiB) and return its stdout."""

    if not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
        raise ConfigError(f"{where}: 'exec' needs a command")
    version = spec.get("apiVersion")
    if version not in _EXEC_VERSIONS:
        raise ConfigError(
            f"{where}: apiVersion {printable(str(version), limit=80)!r} is not supported (use "
            "client.authentication.k8s.io/v1 or v1beta1)"
        )
    args = spec.get("args") or []
    env_list = spec.get("env") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: args must be a list of strings")
    if not isinstance(env_list, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("value"), str)
        for e in env_list
    ):
        raise ConfigError(f"{where}: env must be a list of {{name, value}} strings")
    env = dict(os.environ) | {e["name"]: e["value"] for e in env_list}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    command = spec["command"]
    shown_cmd = printable(command, limit=200)
    try:
        proc = subprocess.run(  # the user's own kubeconfig names the plugin
            [command, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_EXEC_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        hint = spec.get("installHint")
        extra = f" ({printable(hint, limit=300)})" if isinstance(hint, str) else ""
        raise ConfigError(f"{where}: command {shown_cmd!r} not found{extra}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{where}: {shown_cmd!r} did not finish within {_EXEC_TIMEOUT:g} s"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot run {shown_cmd!r}: {exc.strerror}") from None
    if proc.returncode != 0:
        stderr = _PEM_BLOCK.sub("[PEM block removed]", proc.stderr.decode("utf-8", "replace"))
        said = shown(stderr.strip(), limit=300)
        raise ConfigError(
            f"{where}: {shown_cmd!r} failed (exit {proc.returncode})"
            + (f": {said}" if said else "")
        )
    if len(proc.stdout) > _EXEC_MAX_OUTPUT:
        raise ConfigError(f"{where}: {shown_cmd!r} printed more than 1 MiB")
    return proc.stdout


#: A PEM block (a key a failing plugin may print on stderr), to its END line or the text's end.
_PEM_BLOCK = re.compile(r"-----BEGIN [^-\n]{1,64}-----.*?(?:-----END [^-\n]{1,64}-----|\Z)", re.S)


def parse_exec_credential(output: bytes, *, where: str) -> ExecCredential:
    """Check the ExecCredential JSON a plugin printed, as client-go does: ``status.token``,
    or ``status.clientCertificateData`` with ``status.clientKeyData`` (PEM, the key unencrypted
    and matching the certificate), or both. Messages name the field, never its content."""

    try:
        doc = json.loads(output)
    except (ValueError, RecursionError):
        raise ConfigError(f"{where} did not print an ExecCredential JSON document") from None
    status = doc.get("status") if isinstance(doc, dict) else None
    if not isinstance(status, dict):
        raise ConfigError(f"{where} printed an ExecCredential without status")
    token = status.get("token")
    cert = status.get("clientCertificateData")
    key = status.get("clientKeyData")
    for field_name, value in (
        ("token", token),
        ("clientCertificateData", cert),
        ("clientKeyData", key),
    ):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: status.{field_name} is not a string")
    token = token.strip() if token else None
    cert = cert or None
    key = key or None
    if token is None and cert is None and key is None:
        raise ConfigError(
            f"{where} printed no status.token and no client certificate "
            "(status.clientCertificateData with status.clientKeyData)"
        )
    if (cert is None) != (key is None):
        given, missing = (
            ("clientCertificateData", "clientKeyData")
            if key is None
            else ("clientKeyData", "clientCertificateData")
        )
        raise ConfigError(
            f"{where} printed status.{given} without status.{missing}: a client certificate "
            "needs both"
        )
    if token is not None and (not token.isascii() or not token.isprintable() or " " in token):
        raise ConfigError(f"{where} printed a token that is not a header value")
    if cert is not None and key is not None:
        _check_certificate_pair(cert, key, where)
    return ExecCredential(token=token, client_certificate_pem=cert, client_key_pem=key)


def _check_certificate_pair(cert_pem: str, key_pem: str, where: str) -> None:
    """The certificate (chain) parses, the key is an unencrypted PEM key, and they match."""

    try:
        chain = x509.load_pem_x509_certificates(cert_pem.encode("utf-8"))
    except ValueError:
        raise ConfigError(
            f"{where}: status.clientCertificateData is not a PEM certificate"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode("utf-8"), password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise ConfigError(
            f"{where}: status.clientKeyData is an encrypted private key; the plugin must "
            "return it unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: status.clientKeyData is not a PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if chain[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise ConfigError(
            f"{where}: status.clientKeyData is not the key of the certificate in "
            "status.clientCertificateData (the first certificate must be the client's own)"
        )


def _client_tls(single: SingleConfig, credential: ExecCredential, where: str) -> ssl.SSLContext:
    """The TLS context lightkube would build for this cluster (its CA, or no verification when
    the kubeconfig says so), with the plugin's client certificate loaded into it.

    Python's ``ssl`` loads a key only from a path: it gets ``/proc/self/fd/N`` of an anonymous
    in-memory file (``memfd_create``), which never touches a disk and is closed right after
    loading; where that is not available, a 0600 file in a fresh 0700 directory, removed right
    after loading. The key then lives only inside the context (OpenSSL's memory)."""

    user = single.user or User()
    context = verify_cluster(single.cluster, user, single.abs_file, trust_env=False)
    blobs = (
        (credential.client_certificate_pem or "").encode("utf-8"),
        (credential.client_key_pem or "").encode("utf-8"),
    )
    try:
        with _private_files(blobs) as (cert_path, key_path):
            # never OpenSSL's interactive prompt: an encrypted key fails (checked before, too)
            context.load_cert_chain(cert_path, key_path, password=b"")
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{where}: the client certificate and key could not be loaded "
            f"({exc.reason or exc.library or 'SSL error'})"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot hand the client certificate to TLS: {exc.strerror}"
        ) from None
    return context


@contextlib.contextmanager
def _private_files(blobs: tuple[bytes, ...]) -> Iterator[list[str]]:
    """Paths with ``blobs`` as content, readable only by this process's user, gone on exit:
    in-memory files where the platform has them, else 0600 files in a 0700 directory."""

    fds: list[int] = []
    try:
        if _memfd_files(blobs, fds):
            yield [f"/proc/self/fd/{fd}" for fd in fds]
            return
    finally:
        for fd in fds:
            os.close(fd)
    with _private_dir_files(blobs) as paths:
        yield paths


def _memfd_files(blobs: tuple[bytes, ...], fds: list[int]) -> bool:
    """Write each blob to a new anonymous in-memory file (its fd appended to ``fds``, which
    the caller closes); False when the platform has no ``memfd_create`` or ``/proc/self/fd``."""

    if not hasattr(os, "memfd_create") or not Path("/proc/self/fd").is_dir():
        return False
    try:
        for blob in blobs:
            fds.append(os.memfd_create("cloudtaser-credential", os.MFD_CLOEXEC))
            _write_all(fds[-1], blob)
    except OSError:  # e.g. a seccomp filter without memfd_create
        return False
    return True


@contextlib.contextmanager
def _private_dir_files(blobs: tuple[bytes, ...]) -> Iterator[list[str]]:

    with tempfile.TemporaryDirectory(prefix="cloudtaser-") as tmp:  # mkdtemp: mode 0700
        paths = []
        for i, blob in enumerate(blobs):
            path = str(Path(tmp) / f"{i}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _write_all(fd, blob)
            finally:
                os.close(fd)
            paths.append(path)
        yield paths


def _write_all(fd: int, data: bytes) -> None:

    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
