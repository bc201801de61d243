"""A small OCI-distribution client: an image's ENTRYPOINT and CMD, read from its registry from
the operator's machine (``target protect --pin-entrypoints``), and the one image-reference rule.

What it speaks (the distribution spec, as Docker Hub, GHCR, Harbor, Quay, ECR and ``crane
registry serve`` answer it):

* The rules it shares with the injector's lookup (Go, ``runtime/internal/registry``, on
  go-containerregistry), both tested against the vectors in ``spec/contract/registry-*.json``:
  reference parsing (:func:`parse_reference`: a first path part without ``.`` or ``:`` and not
  ``localhost`` means Docker Hub, API host ``registry-1.docker.io``, where a single name gets
  ``library/``; the tag defaults to ``latest``; a digest wins over a tag; the distribution
  grammar, ports 1-65535 and at most 1,024 characters), the platform entry of an index
  (:func:`choose_manifest`) and which mirror settings are valid (:func:`mirrors_problem`).
* ``GET /v2/<name>/manifests/<ref>`` with ``Accept:`` the OCI index, Docker manifest list, OCI
  manifest and Docker v2 manifest media types. An index is resolved to one platform
  (``linux/amd64`` unless told otherwise), then the manifest's config blob gives
  ``config.Entrypoint`` / ``config.Cmd``. Every manifest and blob fetched by digest is checked
  against that digest.
* Auth: no ``/v2/`` ping (Harbor refuses unauthenticated pings). A 401 carries
  ``WWW-Authenticate``: ``Bearer realm=…,service=…,scope=…`` → one token request to the realm
  (with Basic credentials when the docker config has some for the host) → the request again
  with ``Authorization: Bearer``; a ``Basic`` challenge → the request again with Basic
  credentials. Tokens are kept per repository for the run. Credentials come from a docker
  ``config.json`` (``auths``: ``auth``, ``username``/``password`` or ``identitytoken``); a
  ``credsStore``/``credHelpers`` entry is not run (reported when a lookup then fails).
* Transport: TLS verification always on (``ca_bundle`` may name extra CAs); plain HTTP only for
  ``localhost``, ``127.0.0.1`` and ``[::1]``. Redirects (blob storage) are followed by
  ``requests``, which drops the ``Authorization`` header on a host change. Bodies are capped
  (manifests 4 MiB, configs 8 MiB, token answers 1 MiB); every request has a timeout.

Nothing here prints; errors are :class:`~cloudtaser.errors.RegistryError` with a message that
names the image and what to do, never a credential or token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import requests

from cloudtaser.errors import ConfigError, RegistryError
from cloudtaser.sanitize import printable, shown

__all__ = [
    "DEFAULT_PLATFORM",
    "Credentials",
    "ImageConfig",
    "ImageRef",
    "RegistryClient",
    "canonical_registry",
    "choose_manifest",
    "load_docker_config",
    "mirror_problem",
    "mirrors_problem",
    "parse_platform",
    "parse_reference",
    "pin_commands",
    "registry_host_problem",
]

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_API: Final = "registry-1.docker.io"
DEFAULT_PLATFORM: Final = "linux/amd64"

MEDIA_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT: Final = ", ".join(
    (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
)
_INDEX_TYPES: Final = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
MAX_CONFIG_BYTES: Final = 8 * 1024 * 1024
MAX_TOKEN_BYTES: Final = 1024 * 1024
#: Entries of ENTRYPOINT + CMD accepted (a real image has a handful).
MAX_ARGV: Final = 1024
MAX_ARG_CHARS: Final = 64 * 1024
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})

# distribution/reference grammar (ASCII only), as runtime/internal/registry/reference.go has it
_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: the digests go-containerregistry reads (go-digest's algorithms)
_DIGEST_RE: Final = re.compile(r"sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}")
_HOST_LABEL: Final = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST_RE: Final = re.compile(
    rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
)
_PLATFORM_RE: Final = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")
MAX_NAME_CHARS: Final = 255


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``registry`` as written (``docker.io`` for Docker Hub),
    ``repository`` (``library/busybox``), a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What the manifest endpoint is asked for: the digest if any, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def registry_host_problem(host: str) -> str | None:
    """``None`` when ``host`` is a registry host (``name[:port]``, ``[v6]:port``), else why."""
    if not host or not _HOST_RE.fullmatch(host):
        return f"{shown(host, limit=80)} is not a registry host (e.g. registry.corp:5000)"
    port = re.search(r":([0-9]+)$", host)
    if port and not 0 < int(port.group(1)) < 65536:
        return f"{shown(host, limit=80)}: port {port.group(1)} is out of range"
    return None


def mirror_problem(mirror: str) -> str | None:
    """``None`` for a registry mirror the injector accepts: ``[http://|https://]host[:port]``
    optionally followed by ``/path`` (a repository prefix); ``http://`` means plain HTTP."""
    rest = mirror.removeprefix("http://").removeprefix("https://").rstrip("/")
    host, _, prefix = rest.partition("/")
    problem = registry_host_problem(host)
    if problem:
        return problem
    if prefix and not _NAME_RE.fullmatch(prefix):
        return f"{shown(prefix, limit=80)} is not a repository path prefix"
    return None


def canonical_registry(host: str) -> str:
    """One spelling per registry, for comparing hosts: host names are case-insensitive, and
    ``docker.io``, ``index.docker.io`` and ``registry-1.docker.io`` are Docker Hub."""
    host = host.lower()
    return DOCKER_HUB if host in {DOCKER_HUB, "index.docker.io", DOCKER_HUB_API} else host


def mirrors_problem(mirrors: Iterable[tuple[str, str]]) -> str | None:
    """``None`` for ``(registry, mirror)`` pairs the injector accepts (its ``--mirror
    REGISTRY=MIRROR`` flags), else why: each registry a registry host, each mirror valid
    (:func:`mirror_problem`), and no registry given twice in any spelling (the injector refuses
    a second mirror for one registry rather than pick one)."""
    seen: set[str] = set()
    for registry, mirror in mirrors:
        problem = registry_host_problem(registry)
        if problem:
            return f"--mirror registry: {problem}"
        problem = mirror_problem(mirror)
        if problem:
            return f"--mirror {registry}=...: {problem} (a mirror is [http://]HOST[:PORT][/PATH])"
        key = canonical_registry(registry)
        if key in seen:
            return f"--mirror {registry}=...: a mirror for {key} is given twice"
        seen.add(key)
    return None


def parse_reference(text: str) -> ImageRef:
    """Parse an image reference (``busybox``, ``ghcr.io/org/app:1.2``, ``reg:5000/a@sha256:…``)
    or raise :class:`~cloudtaser.errors.ConfigError` naming what is wrong."""
    what = f"image {shown(text, limit=120)}"
    if not text or text != text.strip() or any(c.isspace() or ord(c) < 32 for c in text):
        raise ConfigError(f"{what} is empty or contains blanks or control characters")
    if len(text) > 1024:
        raise ConfigError(f"{what} is too long")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.fullmatch(digest):
            raise ConfigError(f"{what}: the digest must be sha256:<64 hex> (or sha512)")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.fullmatch(tag):
            raise ConfigError(f"{what}: tag {shown(tag, limit=60)} is not a valid tag")
    first, sep, remainder = rest.partition("/")
    # go-containerregistry's split: an upper-case first part without "." or ":" is not a host
    # (the kubelet's parser would take "Acme/app" for one; the injector refuses it, so do we)
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, name = first, remainder
        problem = registry_host_problem(registry)
        if problem:
            raise ConfigError(f"{what}: {problem}")
    else:
        registry, name = DOCKER_HUB, rest
    if registry in {DOCKER_HUB, "index.docker.io"}:
        registry = DOCKER_HUB
        if "/" not in name:
            name = f"library/{name}"
    if not _NAME_RE.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise ConfigError(
            f"{what}: repository {shown(name, limit=80)} is not valid (lower-case letters, "
            "digits and . _ - separators, at most 255 characters)"
        )
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry, repository=name, tag=tag, digest=digest)


def parse_platform(text: str) -> tuple[str, str, str | None]:
    """``linux/amd64`` or ``linux/arm64/v8`` → (os, architecture, variant)."""
    if not _PLATFORM_RE.fullmatch(text):
        raise ConfigError(
            f"platform {shown(text, limit=60)} is not OS/ARCH[/VARIANT] (e.g. linux/amd64)"
        )
    parts = text.split("/")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def choose_manifest(
    entries: Sequence[object], platform: tuple[str, str, str | None]
) -> Mapping[str, Any] | None:
    """The entry of an index's ``manifests`` for ``platform`` (os, architecture, variant), or
    ``None``: the first entry of that os/architecture with the variant asked for, else (no
    variant asked, or none with it) the first entry of that os/architecture. Entries without a
    platform, with an ``unknown`` os or architecture, or annotated as attestation manifests are
    never chosen. (The variant falls back because only ENTRYPOINT and CMD are read, the same in
    every variant of one image; ``linux/arm64`` is often listed without ``v8``.)"""
    want_os, want_arch, want_variant = platform
    first: Mapping[str, Any] | None = None
    for entry in entries:
        if not isinstance(entry, dict) or not _platform_entry(entry):
            continue
        plat = entry["platform"]
        if plat.get("os") != want_os or plat.get("architecture") != want_arch:
            continue
        if not want_variant or plat.get("variant") == want_variant:
            return entry
        if first is None:
            first = entry
    return first


def _platform_entry(entry: Mapping[str, Any]) -> bool:
    """Whether an index entry names a real platform (not an attestation manifest)."""
    plat = entry.get("platform")
    if not isinstance(plat, dict) or "unknown" in (plat.get("os"), plat.get("architecture")):
        return False
    annotations = entry.get("annotations")
    return not (
        isinstance(annotations, dict)
        and annotations.get("vnd.docker.reference.type") == "attestation-manifest"
    )


def _platform_of(entry: Mapping[str, Any]) -> str:
    plat = entry["platform"]
    text = f"{plat.get('os', '')}/{plat.get('architecture', '')}"
    return text + (f"/{plat['variant']}" if plat.get("variant") else "")


# --- credentials ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Registry credentials of one host; ``repr`` never shows them."""

    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "Credentials(<set>)"


@dataclass(frozen=True)
class DockerConfig:
    """What a docker ``config.json`` says: credentials per host, and hosts left to a helper."""

    auths: Mapping[str, Credentials] = field(default_factory=dict, repr=False)
    helpers: frozenset[str] = frozenset()
    creds_store: bool = False

    def for_host(self, host: str) -> Credentials | None:
        keys = {host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"{host}/v1/"}
        if host in {DOCKER_HUB, DOCKER_HUB_API, "index.docker.io"}:
            keys |= {"https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB}
        for key, creds in self.auths.items():
            if key in keys or _config_host(key) in keys:
                return creds
        return None


def _config_host(key: str) -> str:
    return urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]


def load_docker_config(path: Path) -> DockerConfig:
    """Read a docker ``config.json`` (absent file: no credentials). Malformed entries are a
    :class:`ConfigError` naming the file and host, never the secret."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DockerConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read docker config {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ConfigError(f"docker config {path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"docker config {path} is not a JSON object")
    auths: dict[str, Credentials] = {}
    for host, entry in (data.get("auths") or {}).items():
        where = f"docker config {path}: auths[{printable(str(host), limit=100)!r}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} is not an object")
        if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
            auths[str(host)] = Credentials(identity_token=entry["identitytoken"])
            continue
        user, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise ConfigError(f"{where}.auth is not base64 of user:password") from None
            user, sep, password = decoded.partition(":")
            if not sep:
                raise ConfigError(f"{where}.auth is not base64 of user:password")
        if isinstance(user, str) and isinstance(password, str) and user:
            auths[str(host)] = Credentials(username=user, password=password)
    helpers = frozenset(str(h) for h in (data.get("credHelpers") or {}))
    return DockerConfig(auths=auths, helpers=helpers, creds_store=bool(data.get("credsStore")))


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """What the image says it runs: ``entrypoint`` and ``cmd`` (each possibly empty), and the
    digest of the platform manifest they came from."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    manifest_digest: str


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for key, quoted, bare in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]*))', rest):
        params[key.lower()] = quoted or bare
    return scheme.lower(), params


class RegistryClient:
    """Reads image configs. Thread-safe for lookups from one run; ``close()`` when done.

    ``docker_config``: credentials per host. ``platform``: what an index is resolved to.
    ``ca_bundle``: a CA file for private registries (else the system trust store).
    """

    def __init__(
        self,
        *,
        docker_config: DockerConfig | None = None,
        platform: str = DEFAULT_PLATFORM,
        ca_bundle: str | None = None,
        timeout: float = 20.0,
        session: requests.Session | None = None,
    ) -> None:
        self.config = docker_config or DockerConfig()
        self.platform = parse_platform(platform)
        self.timeout = timeout
        self._verify: bool | str = ca_bundle or True
        self._http = session or requests.Session()
        self._http.trust_env = False  # no proxy or netrc credentials sneaking in
        self._tokens: dict[tuple[str, str], str] = {}
        self._cache: dict[str, ImageConfig] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public --

    def image_config(self, image: str) -> ImageConfig:
        """ENTRYPOINT and CMD of ``image`` for the client's platform (cached per reference)."""
        ref = parse_reference(image)
        key = str(ref)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        body, media, digest = self._manifest(ref, ref.reference)
        doc = _json(body, f"the manifest of {ref}")
        media = str(doc.get("mediaType") or media)
        if media in _INDEX_TYPES or (not media and "manifests" in doc):
            chosen = self._choose(ref, doc)
            body, media, digest = self._manifest(ref, chosen)
            doc = _json(body, f"the {self._platform_text()} manifest of {ref}")
            if str(doc.get("mediaType") or media) in _INDEX_TYPES:
                raise RegistryError(f"{ref}: an index points to another index; not supported")
        config_desc = doc.get("config")
        if not isinstance(config_desc, dict) or not isinstance(config_desc.get("digest"), str):
            raise RegistryError(
                f"{ref}: the manifest has no config descriptor (media type "
                f"{printable(media, limit=80)!r}); is it an image?"
            )
        config_digest = config_desc["digest"]
        if not _DIGEST_RE.fullmatch(config_digest):
            raise RegistryError(f"{ref}: the manifest's config digest is malformed")
        blob = self._get(ref, f"blobs/{config_digest}", "*/*", MAX_CONFIG_BYTES).content
        _check_digest(blob, config_digest, f"the config of {ref}")
        conf = _json(blob, f"the config of {ref}").get("config") or {}
        if not isinstance(conf, dict):
            raise RegistryError(f"{ref}: the image config's 'config' is not an object")
        result = ImageConfig(
            entrypoint=_argv(conf.get("Entrypoint"), f"{ref}: Entrypoint"),
            cmd=_argv(conf.get("Cmd"), f"{ref}: Cmd"),
            manifest_digest=digest,
        )
        with self._lock:
            self._cache[key] = result
        return result

    # -- internals --

    def _platform_text(self) -> str:
        os_, arch, variant = self.platform
        return f"{os_}/{arch}" + (f"/{variant}" if variant else "")

    def _choose(self, ref: ImageRef, index: Mapping[str, Any]) -> str:
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError(f"{ref}: the index has no manifests list")
        chosen = choose_manifest(entries, self.platform)
        if chosen is None:
            seen = [
                _platform_of(entry)
                for entry in entries
                if isinstance(entry, dict) and _platform_entry(entry)
            ]
            listed = ", ".join(printable(s, limit=40) for s in seen[:10]) or "none"
            raise RegistryError(
                f"{ref} has no {self._platform_text()} image (platforms: {listed}); pass "
                "--platform or set the container's command explicitly"
            )
        digest = chosen.get("digest")
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            raise RegistryError(
                f"{ref}: the index entry for {self._platform_text()} has a malformed digest"
            )
        return digest

    def _manifest(self, ref: ImageRef, reference: str) -> tuple[bytes, str, str]:
        resp = self._get(ref, f"manifests/{reference}", ACCEPT, MAX_MANIFEST_BYTES)
        body = resp.content
        computed = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha"):
            _check_digest(body, reference, f"the manifest of {ref}")
            digest = reference
        else:
            digest = computed
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return body, media, digest

    def _base(self, ref: ImageRef) -> str:
        host = ref.api_host
        hostname = urlsplit(f"//{host}").hostname or ""
        scheme = "http" if hostname in LOOPBACK_HOSTS else "https"
        return f"{scheme}://{host}/v2/{ref.repository}/"

    def _get(self, ref: ImageRef, path: str, accept: str, limit: int) -> requests.Response:
        url = self._base(ref) + path
        headers = {"Accept": accept}
        token_key = (ref.api_host, ref.repository)
        for attempt in range(2):
            with self._lock:
                token = self._tokens.get(token_key)
            if token:
                headers["Authorization"] = token
            try:
                resp = self._http.get(
                    url, headers=headers, timeout=self.timeout, verify=self._verify, stream=True
                )
            except requests.exceptions.SSLError:
                raise RegistryError(
                    f"{ref}: TLS verification of {ref.api_host} failed (a private CA? pass "
                    "--registry-ca FILE)"
                ) from None
            except requests.exceptions.Timeout:
                raise RegistryError(
                    f"{ref}: {ref.api_host} did not answer within {self.timeout:g} s"
                ) from None
            except requests.exceptions.RequestException as exc:
                raise RegistryError(
                    f"{ref}: cannot reach {ref.api_host} ({type(exc).__name__})"
                ) from None
            if resp.status_code == 401 and attempt == 0:
                header = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                auth = self._authorize(ref, header)
                with self._lock:
                    self._tokens[token_key] = auth
                continue
            if resp.status_code != 200:
                resp.close()
                raise RegistryError(self._status_message(ref, path, resp.status_code))
            return _read_capped(resp, limit, f"{ref}: {path.split('/', maxsplit=1)[0][:-1]}")
        raise RegistryError(
            f"{ref}: {ref.api_host} refused the credentials (401 after authenticating); check "
            "the docker config or set the container's command explicitly"
        )

    def _status_message(self, ref: ImageRef, path: str, status: int) -> str:
        what = "manifest" if path.startswith("manifests/") else "config blob"
        if status == 404:
            return (
                f"{ref}: {what} not found on {ref.api_host} (404): is the image pushed, the "
                "name and tag right?"
            )
        if status == 403:
            return f"{ref}: access to the {what} denied by {ref.api_host} (403)"
        if status == 429:
            return f"{ref}: {ref.api_host} is rate limiting (429); try again later or log in"
        return f"{ref}: {ref.api_host} answered {status} for the {what}"

    def _authorize(self, ref: ImageRef, header: str) -> str:
        """The ``Authorization`` value answering a 401's challenge."""
        creds = self.config.for_host(ref.registry) or self.config.for_host(ref.api_host)
        scheme, params = _challenge(header)
        if scheme == "basic":
            if creds is None or creds.username is None:
                raise RegistryError(self._no_creds(ref))
            raw = f"{creds.username}:{creds.password or ''}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(
                f"{ref}: {ref.api_host} asked for authentication this client does not speak "
                f"({printable(scheme, limit=20) or 'no challenge'}); set the container's "
                "command explicitly"
            )
        return "Bearer " + self._token(ref, params, creds)

    def _no_creds(self, ref: ImageRef) -> str:
        helper = ref.registry in self.config.helpers or self.config.creds_store
        extra = (
            " (the docker config names a credential helper; this client does not run helpers: "
            "`docker login` with a plain auths entry, or set the container's command)"
            if helper
            else ""
        )
        return f"{ref}: {ref.api_host} needs credentials and the docker config has none{extra}"

    def _token(self, ref: ImageRef, params: Mapping[str, str], creds: Credentials | None) -> str:
        realm = params["realm"]
        parts = urlsplit(realm)
        realm_host = parts.hostname or ""
        if parts.scheme != "https" and not (
            parts.scheme == "http" and realm_host in LOOPBACK_HOSTS
        ):
            raise RegistryError(
                f"{ref}: the token realm {printable(realm, limit=100)!r} is not https; refused "
                "(credentials would travel in clear)"
            )
        query: dict[str, str] = {
            "scope": params.get("scope") or f"repository:{ref.repository}:pull"
        }
        if params.get("service"):
            query["service"] = params["service"]
        auth = None
        if creds is not None and creds.username is not None:
            auth = (creds.username, creds.password or "")
        try:
            if creds is not None and creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "cloudtaser",
                    **query,
                }
                resp = self._http.post(
                    realm, data=form, timeout=self.timeout, verify=self._verify, stream=True
                )
            else:
                resp = self._http.get(
                    realm,
                    params=query,
                    auth=auth,
                    timeout=self.timeout,
                    verify=self._verify,
                    stream=True,
                )
        except requests.exceptions.RequestException as exc:
            raise RegistryError(
                f"{ref}: cannot reach the token service of {ref.api_host} ({type(exc).__name__})"
            ) from None
        if resp.status_code in {401, 403}:
            resp.close()
            raise RegistryError(
                f"{ref}: the token service of {ref.api_host} refused "
                + ("the credentials" if auth or creds else "anonymous access")
                + f" ({resp.status_code})"
                + ("" if auth or creds else "; " + self._no_creds(ref).split(": ", 1)[1])
            )
        if resp.status_code != 200:
            resp.close()
            raise RegistryError(
                f"{ref}: the token service of {ref.api_host} answered {resp.status_code}"
            )
        body = _json(_read_capped(resp, MAX_TOKEN_BYTES, f"{ref}: token").content, "token")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token or not _header_safe(token):
            raise RegistryError(f"{ref}: the token service of {ref.api_host} gave no usable token")
        return token


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value and len(value) < 65536


def _read_capped(resp: requests.Response, limit: int, what: str) -> requests.Response:
    """Read at most ``limit`` bytes of ``resp`` into ``resp._content`` (else RegistryError)."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        resp.close()
        raise RegistryError(f"{what} is larger than {limit // 1024} KiB; refused")
    chunks = []
    size = 0
    too_big = False
    try:
        for chunk in resp.iter_content(65536):
            size += len(chunk)
            if size > limit:
                too_big = True
                break
            chunks.append(chunk)
    except requests.exceptions.RequestException as exc:
        raise RegistryError(
            f"{what}: the connection broke while reading ({type(exc).__name__})"
        ) from None
    finally:
        resp.close()
    if too_big:
        raise RegistryError(f"{what} is larger than {limit // 1024} KiB; refused")
    resp._content = b"".join(chunks)
    return resp


def _check_digest(body: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    computed = hashlib.new(algorithm, body).hexdigest()
    if computed != expected:
        raise RegistryError(f"{what} does not match its digest {digest[:19]}…; refused")


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise RegistryError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return data


def _argv(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryError(f"{what} is not a list of strings")
    if len(value) > MAX_ARGV or any(len(v) > MAX_ARG_CHARS or "\x00" in v for v in value):
        raise RegistryError(f"{what} is too long or contains a NUL byte")
    return tuple(value)


# --- pinning (protect --pin-entrypoints) -----------------------------------------------------

#: ``lookup(image) -> ImageConfig`` (a :class:`RegistryClient`'s ``image_config``).
Lookup = Callable[[str], ImageConfig]


def pin_commands(pod_spec: Mapping[str, Any], lookup: Lookup) -> list[dict[str, Any]]:
    """Strategic-merge entries (``{name, command[, args]}``) that make every container of
    ``pod_spec.containers`` without a ``command`` state explicitly what it runs today, by the
    Kubernetes rules: with no ``command`` the image ENTRYPOINT runs, followed by the
    container's ``args`` or, when it has none, the image CMD. Containers that already have a
    ``command`` (and init containers, which the injector does not wrap) are left out.

    An image with neither ENTRYPOINT nor CMD for a container without args runs nothing: a
    :class:`RegistryError` (the container cannot be pinned, nor injected)."""
    entries: list[dict[str, Any]] = []
    for container in pod_spec.get("containers") or []:
        if not isinstance(container, Mapping) or container.get("command"):
            continue
        name, image = container.get("name"), container.get("image")
        if not isinstance(name, str) or not isinstance(image, str) or not image:
            raise RegistryError(f"container {printable(str(name), limit=60)!r} has no image")
        config = lookup(image)
        # Kubernetes expands $(VAR) in command/args and turns $$ into $; the image's words are
        # literal, so every $ from the image is doubled (the container's own args are not).
        entrypoint = [_literal(word) for word in config.entrypoint]
        cmd = [_literal(word) for word in config.cmd]
        args = [str(a) for a in container.get("args") or []]
        entry: dict[str, Any] = {"name": name}
        if entrypoint:
            entry["command"] = entrypoint
            if not args and cmd:
                entry["args"] = cmd
        else:
            argv = args or cmd
            if not argv:
                raise RegistryError(
                    f"container {name!r}: image {printable(image, limit=120)} has neither "
                    "ENTRYPOINT nor CMD and the container no args: it runs nothing"
                )
            entry["command"] = argv  # with no ENTRYPOINT the args (or CMD) are the command
            if args:
                entry["args"] = None  # moved into command
        entries.append(entry)
    return entries


def _literal(word: str) -> str:
    """``word`` as Kubernetes must see it in command/args to run it unchanged."""
    return word.replace("$", "$$")
