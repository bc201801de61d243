"""A small OpenBao / HashiCorp Vault client on plain ``requests``.

One :class:`requests.Session` per client: keep-alive, a connection pool sized for the
concurrency the caller asks for, and the headers every request carries (``X-Vault-Token``,
``X-Vault-Request: true``, ``X-Vault-Namespace``). It is safe to share one client between the
threads of a :class:`concurrent.futures.ThreadPoolExecutor`.

Retry policy (decided here, documented in ``docs/source-commands.md``):

* **429** (rate-limit quota) and **connection failures before anything was sent** are retried
  for every request: the server did not act on it.
* **412, 5xx (except 501) and read time-outs** are retried only for *idempotent* requests:
  ``GET``/``LIST``/``HEAD``, and writes that replace an object with the same body every time
  (ACL policies, Kubernetes-auth roles, ``sys/capabilities-self``). Logins and mount enabling are
  not idempotent and are never retried on those.
* TLS failures (untrusted or mismatched certificate) are never retried.
* Back-off is exponential with full jitter (``base * 2**attempt``, capped); a ``Retry-After``
  header (integer seconds, as OpenBao sends it) is honoured up to a ceiling.
* ``307``/``308`` (a standby that cannot forward) is followed by hand keeping method and body,
  at most a few hops, never from https to http.

Every error status is translated in exactly one place (:meth:`OpenBaoClient._raise_for`) from the
server's ``{"errors": [...]}`` into :mod:`cloudtaser.errors`, with method, path and status; 403
and 503/sealed get plain-words explanations. The token never appears in a message, a log line
or a repr. ``requests`` is imported only by this module.

Why one module of this size: it is one concept, the vault client: transport, the retry
policy written below, the single translation of HTTP errors and the typed helpers that use
them belong together (the same size rule as nox's sessions.py).
"""

from __future__ import annotations

import json as jsonlib  # `json` is the request-body parameter of the methods below
import logging
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from cloudtaser import __version__
from cloudtaser.config import VaultTarget
from cloudtaser.errors import (
    VaultAuthError,
    VaultError,
    VaultHTTPError,
    VaultSealedError,
    VaultUnreachableError,
)
from cloudtaser.sanitize import printable, scrub_credentials, shown

__all__ = [
    "KvMount",
    "OpenBaoClient",
    "Reply",
    "RetryPolicy",
    "SubkeysResult",
]

log = logging.getLogger("cloudtaser.source.openbao")

_IDEMPOTENT_METHODS: Final = frozenset({"GET", "LIST", "HEAD"})
_MAX_REDIRECTS: Final = 3
_MAX_ERROR_CHARS: Final = 300
#: How many ``errors`` of one answer are shown (a hostile server may send 200,000).
_MAX_ERRORS_SHOWN: Final = 10
#: The largest answer body read from a vault (documented in docs/source-commands.md). A LIST of
#: 100,000 keys is about 5 MiB; anything past this is refused, never buffered.
MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
_READ_CHUNK: Final = 64 * 1024
#: Path characters sent unescaped; everything else is percent-encoded.
_PATH_SAFE: Final = "/-._~"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up. ``max_attempts`` counts the first try."""

    max_attempts: int = 8
    backoff_base: float = 0.1
    backoff_cap: float = 8.0
    retry_after_cap: float = 60.0
    #: Total time budget for one logical request, retries included.
    deadline: float = 180.0

    #: A 429 means "slow down", not "failed": it is retried until ``deadline`` or this many tries.
    max_rate_limited_attempts: int = 60
    #: Total time for one HTTP exchange (connect, send, headers and the whole body): a server
    #: that drips its answer cannot hold a request longer than this.
    exchange_deadline: float = 60.0
    #: Total time for every request of one client (one command), or None for no limit.
    command_deadline: float | None = None

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based).

        Exponential back-off with jitter; a ``Retry-After`` is a floor (OpenBao rounds it to
        whole seconds, often 0 or 1, which alone would let many threads stampede again).
        """
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        backoff = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap) + backoff
        return backoff


@dataclass(frozen=True)
class Reply:
    """A decoded answer: HTTP status and JSON body (``None`` for 204 or a non-JSON body)."""

    status: int
    body: Any
    headers: Mapping[str, str]
    #: How many times the request was sent (retries included) before this answer.
    attempts: int = 1

    @property
    def data(self) -> Any:
        """The ``data`` member of the body, or ``None``."""
        return self.body.get("data") if isinstance(self.body, dict) else None

    @property
    def warnings(self) -> list[str]:
        """Server warnings of a successful answer (surface them to the user)."""
        found = self.body.get("warnings") if isinstance(self.body, dict) else None
        return [str(w) for w in found] if isinstance(found, list) else []


@dataclass(frozen=True)
class KvMount:
    """A secrets-engine mount as ``sys/internal/ui/mounts`` describes it."""

    path: str
    type: str
    version: int | None

    @property
    def is_kv2(self) -> bool:
        """True for a KV version 2 engine."""
        return self.type in {"kv", "generic"} and self.version == 2


@dataclass(frozen=True)
class SubkeysResult:
    """What ``<mount>/subkeys/<path>`` says about a secret's latest version (no values).

    ``keys`` is ``None`` when the latest version is deleted or destroyed.
    """

    version: int | None
    keys: frozenset[str] | None
    deletion_time: str
    destroyed: bool


def _errors_of(body: Any) -> list[str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    out = []
    for item in errors[:_MAX_ERRORS_SHOWN]:
        text = " ".join(str(item)[: _MAX_ERROR_CHARS * 4].split())  # "1 error occurred:\n\t* …"
        # server text reaches the terminal: credentials scrubbed, control characters escaped
        out.append(shown(text, limit=_MAX_ERROR_CHARS))
    if len(errors) > _MAX_ERRORS_SHOWN:
        out.append(f"(and {len(errors) - _MAX_ERRORS_SHOWN} more errors not shown)")
    return out


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: rare from a vault; fall back to our own back-off
    return max(0.0, seconds)


class OpenBaoClient:
    """A connection to one OpenBao / Vault server (one namespace, one token)."""

    def __init__(
        self,
        target: VaultTarget,
        *,
        pool_size: int = 16,
        retry: RetryPolicy | None = None,
        token: str | None = None,
    ) -> None:
        self._address = target.address.rstrip("/")
        self._address_source = target.address_source
        self._namespace = target.namespace
        self._cross_origin_redirects = target.cross_origin_redirects
        self._timeout = (min(10.0, target.timeout), target.timeout)
        self._retry = retry or RetryPolicy()
        self._command_ends = (
            time.monotonic() + self._retry.command_deadline
            if self._retry.command_deadline is not None
            else None
        )
        self._token = token if token is not None else target.token
        self._warned_rate_limit = False
        self._lock = threading.Lock()
        self._requests_sent = 0
        session = requests.Session()
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=max(pool_size, 4), max_retries=0, pool_block=True
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(
            {
                "X-Vault-Request": "true",
                # names us in the vault's audit log (when it audits this header)
                "User-Agent": f"cloudtaser/{__version__}",
                "Accept": "application/json",
                # no compression: the body cap below counts what is really held in memory
                "Accept-Encoding": "identity",
            }
        )
        session.trust_env = False  # no .netrc, no proxy surprises for a vault address
        if target.ca_cert:
            session.verify = target.ca_cert
        else:
            session.verify = target.verify_tls
        self._session = session

    # --- plumbing ------------------------------------------------------------------------

    def __repr__(self) -> str:
        token = "<set>" if self._token else "<unset>"
        return (
            f"OpenBaoClient(address={self._address!r}, namespace={self._namespace!r}, "
            f"token={token})"
        )

    def __enter__(self) -> OpenBaoClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    @property
    def address(self) -> str:
        """The server address (no credentials)."""
        return self._address

    @property
    def namespace(self) -> str | None:
        """The vault namespace every request is scoped to, if any."""
        return self._namespace

    @property
    def requests_sent(self) -> int:
        """How many HTTP requests went out (retries and redirects included)."""
        return self._requests_sent

    def _headers(self, *, auth: bool) -> dict[str, str]:
        headers: dict[str, str] = {}
        if auth and self._token:
            headers["X-Vault-Token"] = self._token
        if self._namespace:
            headers["X-Vault-Namespace"] = self._namespace
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        ok: Iterable[int] = (),
        auth: bool = True,
    ) -> Reply:
        """Send one API request with retries; raise a :class:`VaultError` on an error status.

        ``path`` is the API path without ``/v1/``. ``ok`` lists error statuses the caller
        handles itself (typically 404). ``idempotent`` defaults to True for GET/LIST/HEAD.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        path = path.strip("/")
        url = f"{self._address}/v1/{quote(path, safe=_PATH_SAFE)}"
        wire_method, wire_params = method, dict(params or {})
        if method == "LIST":  # proxies and older servers know GET ?list=true better
            wire_method, wire_params = "GET", {**wire_params, "list": "true"}
        reply = self._send_with_retries(
            wire_method,
            url,
            json=json,
            params=wire_params,
            idempotent=idempotent,
            auth=auth,
            shown=f"{method} {path}",
        )
        ok_set = set(ok)
        if reply.status >= 400 and reply.status not in ok_set:
            self._raise_for(reply, method=method, path=path)
        return reply

    def _send_with_retries(
        self,
        method: str,
        url: str,
        *,
        json: Any,
        params: Mapping[str, str],
        idempotent: bool,
        auth: bool,
        shown: str,
    ) -> Reply:
        policy = self._retry
        started = time.monotonic()
        ends = started + policy.deadline
        if self._command_ends is not None:
            ends = min(ends, self._command_ends)
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                reply = self._send_following_redirects(
                    method,
                    url,
                    json=json,
                    params=params,
                    auth=auth,
                    ends=min(ends, time.monotonic() + policy.exchange_deadline),
                )
            except requests.exceptions.SSLError as exc:
                # An untrusted or mismatched certificate does not heal by retrying.
                raise self._unreachable(exc) from exc
            except requests.exceptions.ConnectionError as exc:
                # ConnectTimeout is a ConnectionError: nothing reached the server.
                sent = not isinstance(exc, requests.exceptions.ConnectTimeout) and _maybe_sent(exc)
                retryable = idempotent or not sent
                error: Exception = exc
                reason = "connection failed"
            except requests.exceptions.Timeout as exc:  # ReadTimeout: the server may have acted
                if time.monotonic() >= ends - 0.05:
                    raise self._deadline_passed() from exc
                retryable = idempotent
                error = exc
                reason = "timed out"
            except requests.exceptions.RequestException as exc:
                raise self._unreachable(exc) from exc
            else:
                status = reply.status
                if status == 429:
                    retryable, reason = True, "rate limited (429)"
                    retry_after = _retry_after(reply.headers)
                    if not self._warned_rate_limit:
                        self._warned_rate_limit = True
                        log.warning(
                            "the vault is rate-limiting requests (HTTP 429); slowing down and "
                            "retrying"
                        )
                elif status == 503 and any("sealed" in e.lower() for e in _errors_of(reply.body)):
                    return reply  # sealed: an operator must unseal; waiting will not help
                elif idempotent and (status == 412 or (status >= 500 and status != 501)):
                    retryable, reason = True, f"HTTP {status}"
                    retry_after = _retry_after(reply.headers)
                else:
                    return reply
                limit = policy.max_rate_limited_attempts if status == 429 else policy.max_attempts
                if attempt >= limit or not retryable:
                    return replace(reply, attempts=attempt)  # translated by the caller
                delay = policy.delay(attempt, retry_after)
                if time.monotonic() + delay > ends:
                    return replace(reply, attempts=attempt)
                log.debug("%s: %s; retry %d in %.2fs", shown, reason, attempt, delay)
                time.sleep(delay)
                continue
            if not retryable or attempt >= policy.max_attempts:
                raise self._unreachable(error) from error
            delay = policy.delay(attempt, None)
            if time.monotonic() + delay > ends:
                raise self._unreachable(error) from error
            log.info("%s: %s; retry %d in %.2fs", shown, reason, attempt, delay)
            time.sleep(delay)

    def _send_following_redirects(
        self,
        method: str,
        url: str,
        *,
        json: Any,
        params: Mapping[str, str],
        auth: bool,
        ends: float,
    ) -> Reply:
        headers = self._headers(auth=auth)
        for _hop in range(_MAX_REDIRECTS + 1):
            remaining = ends - time.monotonic()
            if remaining <= 0:
                raise self._deadline_passed()
            with self._lock:
                self._requests_sent += 1
            response = self._session.request(
                method,
                url,
                json=json,
                params=params or None,
                headers=headers,
                timeout=(min(self._timeout[0], remaining), min(self._timeout[1], remaining)),
                allow_redirects=False,
                stream=True,  # the body is read by _read_body: capped and against the deadline
            )
            if response.status_code in (307, 308) and "Location" in response.headers:
                target = urljoin(url, response.headers["Location"])
                if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                    response.close()
                    raise VaultError(
                        f"the vault at {self._address} redirected to a non-https address; "
                        "refusing to send the token there"
                    )
                if not self._cross_origin_redirects and _origin(target) != _origin(url):
                    response.close()
                    raise VaultError(
                        f"the vault at {self._address} redirected to another origin "
                        f"({printable(_origin_text(target), limit=200)}); refusing to send the "
                        "token there. Point --openbao-addr at the active node, or pass "
                        "--allow-cross-origin-redirects if that host is trusted"
                    )
                log.debug("following %s redirect to %s", response.status_code, target)
                response.close()
                url, params = target, {}  # Location already carries the query string
                continue
            try:
                body = self._read_body(response, ends)
            finally:
                response.close()
            return _decode(response, body)
        raise VaultError(
            f"the vault at {self._address} redirected more than {_MAX_REDIRECTS} times; "
            "point --openbao-addr at the active node"
        )

    def _read_body(self, response: requests.Response, ends: float) -> bytes:
        """The whole body, at most :data:`MAX_RESPONSE_BYTES`, finished before ``ends``."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise self._too_large()
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                remaining = ends - time.monotonic()
                if remaining <= 0:
                    raise self._deadline_passed()
                _set_read_timeout(raw, min(remaining, self._timeout[1]))
                chunk = raw.read1(_READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise self._too_large()
                chunks.append(chunk)
        except urllib3.exceptions.ReadTimeoutError as exc:
            if ends - time.monotonic() <= 0.05:
                raise self._deadline_passed() from None
            raise requests.exceptions.ReadTimeout(str(exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.exceptions.ConnectionError(type(exc).__name__) from None
        return b"".join(chunks)

    def _too_large(self) -> VaultError:
        return VaultError(
            f"the vault at {self._address} sent an answer larger than "
            f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; refusing to read it (a vault never "
            "answers this much: check the address)"
        )

    def _deadline_passed(self) -> VaultUnreachableError:
        return VaultUnreachableError(
            f"the vault at {self._address} did not complete its answer within the deadline "
            f"({self._retry.exchange_deadline:g} s per request, {self._retry.deadline:g} s with "
            "retries"
            + (
                f", {self._retry.command_deadline:g} s per command"
                if self._retry.command_deadline is not None
                else ""
            )
            + "); check the address, the network path and the server's load"
        )

    def _unreachable(self, exc: Exception) -> VaultUnreachableError:
        if isinstance(exc, requests.exceptions.SSLError):
            return VaultUnreachableError(
                f"TLS handshake with the vault at {self._address} failed: the certificate is "
                "not trusted or does not match the host; pass --ca-cert FILE with the CA that "
                "signed it (or set VAULT_CACERT)"
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return VaultUnreachableError(
                f"the vault at {self._address} did not answer in time; check the address, "
                "the network path and the server's load"
            )
        return VaultUnreachableError(
            f"cannot reach the vault at {self._address}: connection failed; check "
            f"{self._address_source}, that the server runs and that this machine can reach it"
        )

    def _raise_for(self, reply: Reply, *, method: str, path: str) -> NoReturn:
        """Translate an error answer into the exception tree. The one place that does it."""
        status = reply.status
        errors = _errors_of(reply.body)
        said = f": {'; '.join(errors)}" if errors else ""
        where = f"{method} {path}"
        ns = f" in namespace {self._namespace!r}" if self._namespace else ""
        if status in (401, 403):
            raise VaultAuthError(
                f"permission denied for {where}{ns} (HTTP {status}){said}. The token is invalid "
                "or expired, or none of its policies grants the capability this path needs; "
                "check it with 'bao token capabilities <path>' and see docs/source-commands.md "
                "for the policy the operator needs",
                status=status,
                path=path,
                errors=errors,
                method=method,
            )
        if status == 503:
            sealed = any("sealed" in e.lower() for e in errors)
            what = (
                "is sealed: it cannot serve any request until an operator unseals it "
                "('bao operator unseal')"
                if sealed
                else "is unavailable (sealed, in maintenance or without an active node)"
            )
            raise VaultSealedError(
                f"the vault at {self._address} {what}; {where} was not performed{said}",
                status=status,
                path=path,
                errors=errors,
                method=method,
            )
        if status == 429:
            message = (
                f"the vault kept rate-limiting {where} (HTTP 429) after {reply.attempts} "
                f"attempt{'s' if reply.attempts != 1 else ''}{said}; retry later, lower "
                "--concurrency or "
                "ask the vault team to raise the rate-limit quota"
            )
        elif status == 404:
            message = f"{where}{ns}: not found (HTTP 404){said}"
        else:
            message = f"{where}{ns} failed (HTTP {status}){said}"
        raise VaultHTTPError(
            scrub_credentials(message, [self._token]),
            status=status,
            path=path,
            errors=errors,
            method=method,
        )

    # --- generic operations -----------------------------------------------------------------

    def read(self, path: str) -> dict[str, Any] | None:
        """``GET path``: the ``data`` member, or ``None`` when the path does not exist (404)."""
        reply = self.request("GET", path, ok=(404,))
        if reply.status == 404:
            return None
        data = reply.data
        return data if isinstance(data, dict) else {}

    def list_names(self, path: str) -> set[str]:
        """``LIST path``: the ``keys`` below it (empty when there are none: 404)."""
        reply = self.request("LIST", path, ok=(404,))
        data = reply.data if reply.status != 404 else None
        keys = data.get("keys") if isinstance(data, dict) else None
        return {str(k) for k in keys} if isinstance(keys, list) else set()

    def write(self, path: str, data: Mapping[str, Any], *, idempotent: bool = False) -> Reply:
        """``POST path`` with a JSON body. Pass ``idempotent=True`` for full-replacement writes."""
        return self.request("POST", path, json=dict(data), idempotent=idempotent)

    # --- sys ------------------------------------------------------------------------------

    def mount_info(self, path: str) -> KvMount | None:
        """Resolve the mount owning ``path`` via ``sys/internal/ui/mounts/<path>``.

        Works with only path capabilities on the mount. Returns ``None`` when the server says
        403 with its "preflight capability check" message: the mount does not exist *or* the
        token has no capability anywhere under it (OpenBao does not tell them apart).
        """
        reply = self.request("GET", f"sys/internal/ui/mounts/{path.strip('/')}", ok=(403, 404))
        if reply.status == 404:  # very old server: no such endpoint; KV v1 assumed by the CLIs
            return None
        if reply.status == 403:
            if any("preflight capability check" in e for e in _errors_of(reply.body)):
                return None
            self._raise_for(reply, method="GET", path=f"sys/internal/ui/mounts/{path}")
        data = reply.data if isinstance(reply.data, dict) else {}
        options = data.get("options")
        raw_version = options.get("version") if isinstance(options, dict) else None
        try:
            version = int(raw_version) if raw_version is not None else None
        except (TypeError, ValueError):
            version = None
        if version is None and data.get("type") == "kv":
            version = 1
        return KvMount(
            path=str(data.get("path", "")).strip("/"),
            type=str(data.get("type", "")),
            version=version,
        )

    def auth_mounts(self) -> dict[str, str]:
        """``GET sys/auth``: auth mount path (no trailing slash) → method type."""
        reply = self.request("GET", "sys/auth")
        body = reply.data if isinstance(reply.data, dict) else reply.body
        out: dict[str, str] = {}
        if isinstance(body, dict):
            for key, value in body.items():
                if key.endswith("/") and isinstance(value, dict):
                    out[key.rstrip("/")] = str(value.get("type", ""))
        return out

    def enable_auth(self, mount: str, method_type: str, *, description: str = "") -> None:
        """``POST sys/auth/<mount>`` (needs ``sudo``). Not idempotent: never retried on 5xx."""
        self.request(
            "POST",
            f"sys/auth/{mount}",
            json={"type": method_type, "description": description},
            idempotent=False,
        )

    def capabilities_self(self, paths: Sequence[str]) -> dict[str, frozenset[str]]:
        """``POST sys/capabilities-self``: the token's capabilities on each path (read-only)."""
        out: dict[str, frozenset[str]] = {}
        chunk = 500
        for start in range(0, len(paths), chunk):
            part = list(paths[start : start + chunk])
            reply = self.request(
                "POST", "sys/capabilities-self", json={"paths": part}, idempotent=True
            )
            data = reply.data if isinstance(reply.data, dict) else reply.body
            for path in part:
                caps = data.get(path) if isinstance(data, dict) else None
                if caps is None and len(part) == 1 and isinstance(data, dict):
                    caps = data.get("capabilities")
                out[path] = (
                    frozenset(str(c) for c in caps) if isinstance(caps, list) else frozenset()
                )
        return out

    def policy_read(self, name: str) -> str | None:
        """The HCL of ACL policy ``name``, or ``None`` when it does not exist."""
        data = self.read(f"sys/policies/acl/{name}")
        if data is None:
            return None
        policy = data.get("policy")
        return str(policy) if policy is not None else ""

    def policy_write(self, name: str, hcl: str) -> None:
        """Create or replace ACL policy ``name`` (idempotent: same body, same result)."""
        self.request("POST", f"sys/policies/acl/{name}", json={"policy": hcl}, idempotent=True)

    def policy_delete(self, name: str) -> None:
        """Delete ACL policy ``name`` (idempotent: deleting an absent policy succeeds)."""
        self.request("DELETE", f"sys/policies/acl/{name}", idempotent=True, ok=(404,))

    def role_delete(self, mount: str, name: str) -> None:
        """Delete a Kubernetes-auth role (idempotent)."""
        self.request("DELETE", f"auth/{mount}/role/{name}", idempotent=True, ok=(404,))

    def role_read(self, mount: str, name: str) -> dict[str, Any] | None:
        """A role on ``auth/<mount>`` (Kubernetes or jwt auth), or ``None`` when it does not
        exist."""
        return self.read(f"auth/{mount}/role/{name}")

    def role_write(self, mount: str, name: str, fields: Mapping[str, Any]) -> list[str]:
        """Create or update a role (Kubernetes or jwt auth); returns the server's warnings."""
        reply = self.request(
            "POST", f"auth/{mount}/role/{name}", json=dict(fields), idempotent=True
        )
        return reply.warnings

    # --- KV v2 ----------------------------------------------------------------------------

    def kv2_subkeys(self, mount: str, path: str, *, depth: int = 1) -> SubkeysResult | None:
        """``GET <mount>/subkeys/<path>``: key names of the latest version, never values.

        ``None`` when the secret was never written (404 without a body); a result with
        ``keys=None`` when the latest version is deleted or destroyed (404 with metadata).
        """
        reply = self.request(
            "GET", f"{mount}/subkeys/{path}", params={"depth": str(depth)}, ok=(404,)
        )
        data = reply.data
        if not isinstance(data, dict):
            return None
        meta = data.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        subkeys = data.get("subkeys")
        version = meta.get("version")
        return SubkeysResult(
            version=int(version) if isinstance(version, int) else None,
            keys=frozenset(str(k) for k in subkeys) if isinstance(subkeys, dict) else None,
            deletion_time=str(meta.get("deletion_time") or ""),
            destroyed=bool(meta.get("destroyed")),
        )

    # --- auth -----------------------------------------------------------------------------

    def login_kubernetes(self, mount: str, role: str, jwt: str) -> str:
        """Log in with a ServiceAccount JWT; return the client token (never logged).

        The token is also used for this client's later requests. Not retried on 5xx (a login
        creates a token), only on 429 and connection failures before sending.
        """
        reply = self.request(
            "POST",
            f"auth/{mount}/login",
            json={"role": role, "jwt": jwt},
            idempotent=False,
            auth=False,
        )
        auth = reply.body.get("auth") if isinstance(reply.body, dict) else None
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise VaultError(f"login on auth/{mount} with role {role!r} returned no client token")
        self._token = token
        return token


def _maybe_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether a failed request may have reached the server (then only idempotent ones retry)."""
    text = str(exc).lower()
    never_sent = ("connection refused", "name or service not known", "failed to establish")
    return not any(marker in text for marker in never_sent)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = 443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _set_read_timeout(raw: Any, seconds: float) -> None:
    """Bound the next socket read of a streamed urllib3 response by ``seconds``."""
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _decode(response: requests.Response, content: bytes) -> Reply:
    try:
        body: Any = jsonlib.loads(content) if content else None
    except (ValueError, RecursionError):
        body = None
    return Reply(status=response.status_code, body=body, headers=response.headers)
