"""The cluster side: a lightkube client built from a :class:`ClusterTarget`, and the one place
where lightkube / httpx2 exceptions become cloudtaser errors.

Workflow modules (``discover``, ``protect``, ``connect``) receive a :class:`KubeSession` and
never build clients themselves, so the same code runs against any API server.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cloudtaser.config import ClusterTarget
from cloudtaser.errors import (
    ClusterAuthError,
    ClusterConflictError,
    ClusterError,
    ClusterForbiddenError,
    ClusterInvalidError,
    ClusterNotFoundError,
    ClusterUnreachableError,
    ConfigError,
)
from cloudtaser.sanitize import printable, shown

if TYPE_CHECKING:
    from lightkube import AsyncClient, Client, KubeConfig

__all__ = ["FIELD_MANAGER", "KubeSession", "api_errors", "connect", "load_kubeconfig"]

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

    def async_client(self) -> AsyncClient:
        """A new ``lightkube.AsyncClient`` for the same cluster and credentials (the caller
        closes it). For concurrent requests from one event loop: lightkube clients must not
        be shared between threads."""
        import httpx2  # noqa: PLC0415
        from lightkube import AsyncClient  # noqa: PLC0415

        if self.config is None:
            raise ConfigError("this cluster session was built without a kubeconfig")
        return AsyncClient(
            config=self.config,
            timeout=httpx2.Timeout(self.timeout),
            field_manager=FIELD_MANAGER,
            trust_env=False,
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
    import base64  # noqa: PLC0415

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
    import httpx2  # noqa: PLC0415
    from lightkube import Client, KubeConfig  # noqa: PLC0415
    from lightkube.core.exceptions import ConfigError as LkConfigError  # noqa: PLC0415

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
        logging.getLogger("cloudtaser.target.kube").warning(
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
    for key in ("clusters", "contexts", "users"):
        plain[key] = []
        for original in merged[key]:
            entry = {k: v for k, v in original.items() if k != "_base"}
            inner_key = key[:-1]
            inner = dict(entry.get(inner_key) or {})
            for field in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
                if isinstance(inner.get(field), str):
                    inner[field] = _resolve_path(original, inner[field])
            if key == "users" and isinstance(inner.get("token"), str):
                # kubectl trims a token's surrounding whitespace: YAML's block form
                # (``token: |``) ends it with a newline, which no HTTP header may hold.
                inner["token"] = inner["token"].strip()
            if key == "users" and original["name"] == user_name:
                inner = _usable_user(inner, user_name)
            entry[inner_key] = inner
            plain[key].append(entry)
    try:
        config = KubeConfig.from_dict(plain, fname=target.kubeconfig[0])
        client = Client(
            config=config,
            timeout=httpx2.Timeout(timeout),
            field_manager=FIELD_MANAGER,
            trust_env=False,
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
    )


_BY_STATUS: dict[int, type[ClusterError]] = {
    400: ClusterInvalidError,
    404: ClusterNotFoundError,
    409: ClusterConflictError,
    422: ClusterInvalidError,
}


def _valid_server(server: str) -> bool:
    from urllib.parse import urlsplit  # noqa: PLC0415

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


def _usable_user(user: dict[str, Any], name: str) -> dict[str, Any]:
    """Check the context's user before any request: a missing ``tokenFile`` or a broken
    ``exec`` plugin is a configuration problem (exit 2), never a crash. An ``exec`` plugin is
    run here, once per command, in every API version kubectl supports (lightkube alone lacks
    ``client.authentication.k8s.io/v1``, which the cloud providers' plugins emit); its token
    replaces the ``exec`` entry."""
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
        return user
    token = _run_exec_plugin(exec_spec, name)
    return {k: v for k, v in user.items() if k != "exec"} | {"token": token}


def _run_exec_plugin(spec: Any, name: str) -> str:
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    where = f"kubeconfig user {name!r}: exec plugin"
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
        said = shown(proc.stderr.decode("utf-8", "replace").strip(), limit=300)
        raise ConfigError(
            f"{where}: {shown_cmd!r} failed (exit {proc.returncode})"
            + (f": {said}" if said else "")
        )
    if len(proc.stdout) > _EXEC_MAX_OUTPUT:
        raise ConfigError(f"{where}: {shown_cmd!r} printed more than 1 MiB")
    try:
        doc = json.loads(proc.stdout)
    except (ValueError, RecursionError):
        raise ConfigError(
            f"{where}: {shown_cmd!r} did not print an ExecCredential JSON document"
        ) from None
    status = doc.get("status") if isinstance(doc, dict) else None
    token = status.get("token") if isinstance(status, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise ConfigError(
            f"{where}: {shown_cmd!r} printed no status.token (client certificates from exec "
            "plugins are not supported)"
        )
    token = token.strip()
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(f"{where}: {shown_cmd!r} printed a token that is not a header value")
    return token


@contextlib.contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Translate lightkube / httpx2 failures of ``action`` (e.g. "list deployments in ns x").

    401 → :class:`ClusterAuthError` (credentials), 403 → :class:`ClusterForbiddenError`
    naming the missing permission, 404 → :class:`ClusterNotFoundError`, 409 →
    :class:`ClusterConflictError`, 400/422 → :class:`ClusterInvalidError`, other statuses →
    :class:`ClusterError` with ``status``, transport failures →
    :class:`ClusterUnreachableError`. Callers catch these types; none looks at a status code.
    """
    import httpx2  # noqa: PLC0415
    from lightkube import ApiError  # noqa: PLC0415

    try:
        yield
    except ApiError as exc:
        code = getattr(exc.status, "code", None) or exc.response.status_code
        reason = shown(str(getattr(exc.status, "message", None) or code))
        if code == 401:
            raise ClusterAuthError(
                f"cannot {action}: the API server rejected the credentials (401); refresh the "
                "kubeconfig's token or certificate",
                status=401,
            ) from exc
        if code == 403:
            raise ClusterForbiddenError(
                f"cannot {action}: permission denied (403): {reason}", status=403
            ) from exc
        typed = _BY_STATUS.get(code, ClusterError)
        raise typed(f"cannot {action}: {reason} ({code})", status=code) from exc
    except httpx2.TimeoutException as exc:
        raise ClusterUnreachableError(f"cannot {action}: the API server timed out") from exc
    except httpx2.TransportError as exc:
        # The library may quote the request it could not send ("Illegal header value
        # b'Bearer eyJ…'"): never copy its text without scrubbing credentials.
        detail = shown(str(exc)) or type(exc).__name__
        raise ClusterUnreachableError(
            f"cannot {action}: cannot reach the API server ({detail})"
        ) from exc
