"""The values of target connect: options, results, the connection, pure validation (the
cluster's public signing keys included: JWK to PEM) and the credential-free record kept in the
auth mount description.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cloudtaser.changes import Action
from cloudtaser.errors import ConfigError
from cloudtaser.plan.model import WorkloadStatus
from cloudtaser.plan.rules import (
    DEFAULT_AUTH_MOUNT,
    RUNTIME_NAMESPACE,
    is_dns_label,
    is_dns_subdomain,
    reserved_mount,
    usable_mount,
)

if TYPE_CHECKING:
    from cloudtaser.plan.model import MigrationPlan

DEFAULT_REVIEWER: Final = "cloudtaser-token-reviewer"
SELFTEST_SERVICE_ACCOUNT: Final = "cloudtaser-connect-selftest"
SELFTEST_ROLE: Final = "cloudtaser_connect_selftest"
SELFTEST_AUDIENCE: Final = "cloudtaser-connect-selftest"
AUTH_DELEGATOR: Final = "system:auth-delegator"
DEFAULT_REVIEWER_TTL: Final = 24 * 3600
#: The TokenRequest API refuses less than 10 minutes.
MIN_TOKEN_SECONDS: Final = 600
MAX_REVIEWER_TTL: Final = 366 * 24 * 3600
MANAGED_LABELS: Final = {"app.kubernetes.io/managed-by": "cloudtaser"}
DESCRIPTION_PREFIX: Final = "cloudtaser target connect"
FILE_API_VERSION: Final = "cloudtaser.io/v1"
FILE_KIND: Final = "ClusterConnection"
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_RECORD_VALUE = re.compile(r"[^A-Za-z0-9._:/@+-]")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)


class AuthMethod(enum.StrEnum):
    """How the vault checks a pod's ServiceAccount token (the plan's ``metadata.authMethod``)."""

    #: The vault's ``kubernetes`` method: a TokenReview call to the API server at every login.
    KUBERNETES = "kubernetes"
    #: The vault's ``jwt`` method with the cluster's public signing keys: checked offline, the
    #: vault never reaches the cluster.
    JWT = "jwt"


class ReviewerMode(enum.StrEnum):
    """Which JWT the vault presents to the TokenReview API."""

    #: A dedicated reviewer ServiceAccount's token (stored in the vault, rotated by re-running).
    TOKEN = "token"  # noqa: S105 - a mode name, not a credential
    #: Each logging-in client's own JWT (no stored credential; every client SA needs
    #: ``system:auth-delegator`` and API-audience tokens).
    CLIENT_JWT = "client-jwt"
    #: ``jwt`` auth: the vault reviews no token with the cluster at all.
    NONE = "none"


@dataclass(frozen=True)
class Step:
    """One object connect looked at and what it did (or would do) to it."""

    side: str  # "cluster" | "vault"
    kind: str
    name: str
    action: Action
    detail: str = ""


@dataclass(frozen=True)
class SelfTest:
    """The outcome of a real login through the configured mount.

    ``reason`` is a stable code: ``ok``, ``role-missing``, ``role-not-bound``,
    ``audience-mismatch``, ``not-configured``, ``reviewer-forbidden``, ``reviewer-token-invalid``,
    ``ca-mismatch``, ``host-unreachable``, jwt mode's ``issuer-mismatch`` and
    ``unknown-signing-key``, or ``unknown``.
    """

    ok: bool
    reason: str
    message: str
    role: str
    service_account: str


@dataclass(frozen=True)
class ClusterConnection:
    """What the vault needs to know about one cluster (the content of the hand-off file).

    ``reviewer_token`` is the only credential; it is never part of the repr.
    """

    cluster: str
    cluster_id: str
    auth_mount: str
    #: Empty in ``jwt`` mode: the vault needs no way to the API server.
    kubernetes_host: str
    kubernetes_ca_pem: str
    reviewer_mode: ReviewerMode
    issuer: str | None = None
    auth_method: AuthMethod = AuthMethod.KUBERNETES
    #: ``jwt`` mode: the cluster's public signing keys (PEM, sorted), from ``/openid/v1/jwks``.
    jwt_keys: tuple[str, ...] = ()
    #: ``namespace/name`` of the reviewer ServiceAccount (token mode).
    reviewer: str | None = None
    reviewer_token: str | None = field(default=None, repr=False)
    reviewer_expires: datetime | None = None
    #: Where the CA came from: ``kubeconfig``, ``configmap`` or ``file``.
    ca_source: str = "kubeconfig"
    created_at: datetime | None = None
    created_by: str | None = None


@dataclass(frozen=True)
class ConnectOptions:
    """Everything ``target connect`` can be told (validated by :meth:`validated`)."""

    auth_mount: str = DEFAULT_AUTH_MOUNT
    auth_method: AuthMethod = AuthMethod.KUBERNETES
    namespace: str = RUNTIME_NAMESPACE
    reviewer_service_account: str = DEFAULT_REVIEWER
    reviewer_mode: ReviewerMode = ReviewerMode.TOKEN
    reviewer_token_ttl: int = DEFAULT_REVIEWER_TTL
    #: Overrides the kubeconfig's server: the address the *vault* uses to reach the API server.
    kubernetes_host: str | None = None
    #: Overrides the CA (PEM text), e.g. read from ``--kubernetes-ca-file``.
    kubernetes_ca_pem: str | None = None
    issuer: str | None = None
    rotate: bool = False
    force: bool = False
    dry_run: bool = False
    self_test: bool = True
    #: Do not create ClusterRoleBindings (the platform team manages RBAC); still checked.
    skip_rbac: bool = False
    #: ``(namespace, service account)`` pairs to bind to auth-delegator in client-JWT mode.
    client_reviewers: tuple[tuple[str, str], ...] = ()

    def validated(self) -> ConnectOptions:
        """Return the options with checked values, or raise :class:`ConfigError`."""
        mount = validate_auth_mount(self.auth_mount)
        if not is_dns_label(self.namespace):
            raise ConfigError(f"--namespace {self.namespace[:80]!r} is not a DNS label")
        if not is_dns_subdomain(self.reviewer_service_account):
            raise ConfigError(
                f"reviewer ServiceAccount {self.reviewer_service_account[:80]!r} is not a valid "
                "name"
            )
        if not MIN_TOKEN_SECONDS <= self.reviewer_token_ttl <= MAX_REVIEWER_TTL:
            raise ConfigError(
                "--reviewer-token-ttl must be between 10 minutes (the TokenRequest minimum) and "
                "one year"
            )
        host = _validate_host(self.kubernetes_host) if self.kubernetes_host else None
        ca = (
            _validate_ca(self.kubernetes_ca_pem, "--kubernetes-ca-file")
            if self.kubernetes_ca_pem
            else None
        )
        issuer = _validate_issuer(self.issuer) if self.issuer else None
        for ns, sa in self.client_reviewers:
            if not _valid_service_account(ns, sa):
                raise ConfigError(f"ServiceAccount {ns[:63]}/{sa[:80]} is not a valid name")
        reviewer_mode = self.reviewer_mode
        if self.auth_method is AuthMethod.JWT:
            if host or ca:
                raise ConfigError(
                    "--kubernetes-host and --kubernetes-ca-file have no use with --auth-method "
                    "jwt: the vault never reaches the API server"
                )
            reviewer_mode = ReviewerMode.NONE
        elif reviewer_mode is ReviewerMode.NONE:
            raise ConfigError("reviewer mode 'none' is only for --auth-method jwt")
        return replace(
            self,
            auth_mount=mount,
            kubernetes_host=host,
            kubernetes_ca_pem=ca,
            issuer=issuer,
            reviewer_mode=reviewer_mode,
        )


@dataclass
class ConnectResult:
    """The outcome of one connect / import / check run."""

    auth_mount: str
    cluster: str
    kubernetes_host: str
    reviewer_mode: ReviewerMode
    dry_run: bool
    auth_method: AuthMethod = AuthMethod.KUBERNETES
    steps: list[Step] = field(default_factory=list)
    self_test: SelfTest | None = None
    reviewer_expires: datetime | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when something was (or, in a dry run, would be) created or updated."""
        return any(s.action is not Action.UNCHANGED for s in self.steps)


# --- validation (pure) --------------------------------------------------------------------------


def _valid_service_account(namespace: str, name: str) -> bool:
    """A ServiceAccount's namespace (DNS label) and name (DNS subdomain)."""
    return is_dns_label(namespace) and is_dns_subdomain(name)


def validate_auth_mount(mount: str) -> str:
    """An auth mount path (``kubernetes``, ``k8s/eu-prod``) without ``auth/``; or ConfigError."""
    mount = mount.strip().strip("/")
    mount = mount.removeprefix("auth/")
    if reserved_mount(mount):
        raise ConfigError(f"auth mount {mount[:80]!r} is reserved by the vault")
    if not usable_mount(mount):  # the rule book: same rule for every command
        raise ConfigError(
            f"auth mount {mount[:80]!r} is not a safe mount path (letters, digits, '.', '_', "
            "'-', segments separated by '/', none starting with '.')"
        )
    return mount


def _validate_host(host: str) -> str:
    host = host.strip()
    parts = urlsplit(host)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(
            f"Kubernetes API host {host[:120]!r} is not an https URL with a host "
            "(e.g. https://10.0.0.1:6443)"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("the Kubernetes API host must not carry credentials, query or fragment")
    if any(c.isspace() or ord(c) < 32 for c in host):
        raise ConfigError("the Kubernetes API host contains blanks or control characters")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"Kubernetes API host {host[:120]!r} has an invalid port") from None
    return host.rstrip("/")


def _validate_issuer(issuer: str) -> str:
    issuer = issuer.strip()
    if (
        not issuer
        or len(issuer) > 1024
        or any(c.isspace() or ord(c) < 32 or c in "\"'" for c in issuer)
    ):
        raise ConfigError("--issuer must be one printable word (the API server's issuer URL)")
    return issuer


def _validate_ca(pem: str | None, what: str) -> str:
    """Normalise a PEM bundle (certificates only, every line ending in ``\\n``)."""
    if not pem or not pem.strip():
        raise ConfigError(f"{what}: no CA certificate")
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise ConfigError(f"{what}: no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    normalised = "".join(
        "\n".join(line.strip() for line in block.splitlines() if line.strip()) + "\n"
        for block in blocks
    )
    try:
        ssl.create_default_context(cadata=normalised)
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{what}: the PEM certificate(s) cannot be parsed") from None
    return normalised


def _same_pem(a: str | None, b: str | None) -> bool:
    def norm(text: str | None) -> list[str]:
        return [line.strip() for line in (text or "").splitlines() if line.strip()]

    return norm(a) == norm(b)


def _record_value(text: str) -> str:
    return _RECORD_VALUE.sub("_", text)[:200]


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


# --- the cluster's public signing keys (jwt mode) ----------------------------------------------

#: JWK ``crv`` -> (curve, the JWS algorithm a key on it signs with).
_CURVES: Final[Mapping[str, tuple[type[ec.EllipticCurve], str]]] = {
    "P-256": (ec.SECP256R1, "ES256"),
    "P-384": (ec.SECP384R1, "ES384"),
    "P-521": (ec.SECP521R1, "ES512"),
}
#: cryptography's curve name -> the JWS algorithm.
_ALG_OF_CURVE: Final[Mapping[str, str]] = {
    "secp256r1": "ES256",
    "secp384r1": "ES384",
    "secp521r1": "ES512",
}
#: Fewer bits than this is not a signing key a cluster should have.
MIN_RSA_BITS: Final = 2048
#: A JWKS holds a handful of keys (more during rotations); anything past this is not one.
MAX_KEYS: Final = 32


def _b64url_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or len(value) > 2048 or not _B64URL.fullmatch(value):
        raise ConfigError(f"{what} is not a base64url number")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is not a base64url number") from None
    return int.from_bytes(raw, "big")


def jwk_public_pem(jwk: Mapping[str, Any]) -> str:
    """One JSON Web Key (RFC 7517/7518: ``kty`` RSA with ``n``/``e``, or EC with
    ``crv``/``x``/``y``) as a PEM public key (SubjectPublicKeyInfo), or :class:`ConfigError`."""
    kty = jwk.get("kty")
    kid = str(jwk.get("kid") or "?")[:80]
    what = f"signing key {kid!r}"
    try:
        public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        if kty == "RSA":
            public = rsa.RSAPublicNumbers(
                _b64url_int(jwk.get("e"), f"{what}: e"), _b64url_int(jwk.get("n"), f"{what}: n")
            ).public_key()
        elif kty == "EC":
            curve = _CURVES.get(str(jwk.get("crv")))
            if curve is None:
                raise ConfigError(f"{what}: unsupported curve {str(jwk.get('crv'))[:20]!r}")
            public = ec.EllipticCurvePublicNumbers(
                _b64url_int(jwk.get("x"), f"{what}: x"),
                _b64url_int(jwk.get("y"), f"{what}: y"),
                curve[0](),
            ).public_key()
        else:
            raise ConfigError(f"{what}: unsupported key type {str(kty)[:20]!r} (RSA or EC)")
    except ValueError as exc:  # not on the curve, exponent out of range, ...
        raise ConfigError(f"{what} is not a valid public key ({exc})") from None
    return _public_pem(public, what)


def _public_pem(public: Any, what: str) -> str:
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{what}: an RSA key of {public.key_size} bits is too weak")
    elif not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in (
        _ALG_OF_CURVE
    ):
        raise ConfigError(f"{what}: only RSA and EC P-256/P-384/P-521 keys are supported")
    pem: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def jwks_public_pems(jwks: Mapping[str, Any]) -> tuple[str, ...]:
    """Every signing key of a JWK Set (``/openid/v1/jwks``) as PEM, deduplicated and sorted
    (so two reads of the same set compare equal); a set without one is a ConfigError."""
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ConfigError("the cluster's JWKS (/openid/v1/jwks) holds no key")
    if len(keys) > MAX_KEYS:
        raise ConfigError(f"the cluster's JWKS holds {len(keys)} keys (at most {MAX_KEYS})")
    pems = {
        jwk_public_pem(jwk)
        for jwk in keys
        if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig"
    }
    if not pems:
        raise ConfigError("the cluster's JWKS (/openid/v1/jwks) holds no signing key")
    return tuple(sorted(pems))


def validate_public_keys(pems: Iterable[str], what: str) -> tuple[str, ...]:
    """PEM public keys re-serialised (the vault's and the file's formatting aside), sorted."""
    out = set()
    for index, pem in enumerate(pems):
        where = f"{what}[{index}]"
        try:
            public = serialization.load_pem_public_key(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError, TypeError):
            raise ConfigError(f"{where} is not a PEM public key") from None
        out.add(_public_pem(public, where))
    if not out:
        raise ConfigError(f"{what}: no public key")
    if len(out) > MAX_KEYS:
        raise ConfigError(f"{what}: {len(out)} keys (at most {MAX_KEYS})")
    return tuple(sorted(out))


def key_algorithms(pems: Iterable[str]) -> list[str]:
    """The JWS algorithms ``pems`` verify (``jwt_supported_algs``): RS256 for RSA (what the
    API server signs with), ES256/384/512 by curve; sorted."""
    algs = set()
    for pem in pems:
        public = serialization.load_pem_public_key(pem.encode("ascii"))
        if isinstance(public, ec.EllipticCurvePublicKey):
            algs.add(_ALG_OF_CURVE[public.curve.name])
        else:
            algs.add("RS256")
    return sorted(algs)


# --- the record in the mount description ---------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    """What connect remembers in ``sys/auth/<mount>`` ``description`` (no credential)."""

    cluster: str
    cluster_id: str
    reviewer: str  # "token:<ns>/<sa>" | "client-jwt" | "none" (jwt)
    expires: datetime | None
    auth: AuthMethod = AuthMethod.KUBERNETES

    def render(self) -> str:
        parts = [
            DESCRIPTION_PREFIX,
            f"cluster={_record_value(self.cluster)}",
            f"cluster-id={_record_value(self.cluster_id)}",
        ]
        if self.auth is AuthMethod.JWT:
            parts.append(f"auth={self.auth}")
        else:
            parts.append(f"reviewer={_record_value(self.reviewer)}")
        if self.expires is not None:
            parts.append(f"reviewer-expires={_iso(self.expires)}")
        return "; ".join(parts)

    @classmethod
    def parse(cls, description: str) -> _Record | None:
        if not description.startswith(DESCRIPTION_PREFIX):
            return None
        values: dict[str, str] = {}
        for part in description.split(";")[1:]:
            key, sep, value = part.strip().partition("=")
            if sep:
                values[key] = value
        if "cluster-id" not in values:
            return None
        jwt = values.get("auth") == AuthMethod.JWT
        return cls(
            cluster=values.get("cluster", ""),
            cluster_id=values["cluster-id"],
            reviewer="none" if jwt else values.get("reviewer", ""),
            expires=_parse_time(values.get("reviewer-expires")),
            auth=AuthMethod.JWT if jwt else AuthMethod.KUBERNETES,
        )


def _reviewer_label(conn: ClusterConnection) -> str:
    if conn.reviewer_mode is ReviewerMode.CLIENT_JWT:
        return "client-jwt"
    if conn.reviewer_mode is ReviewerMode.NONE:
        return "none"
    return f"token:{conn.reviewer}"


def plan_auth_method(plan: MigrationPlan) -> AuthMethod:
    """The plan's ``metadata.authMethod`` (absent: ``kubernetes``)."""
    return AuthMethod(plan.metadata.auth_method or AuthMethod.KUBERNETES)


def plan_selection(
    plan: MigrationPlan, auth_mount: str | None, auth_method: AuthMethod | None = None
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What ``--plan`` selects for connect: the auth mount (``auth_mount`` must agree with the
    plan's ``metadata.authMount`` when both are given, ``auth_method`` with its
    ``metadata.authMethod``) and the (namespace, ServiceAccount) pairs of every active workload
    with secrets, sorted (the client-JWT reviewers)."""
    if auth_mount and auth_mount != plan.auth_mount:
        raise ConfigError(
            f"--auth-mount {auth_mount} differs from the plan's metadata.authMount "
            f"{plan.auth_mount}; use one of them"
        )
    if auth_method is not None and auth_method is not plan_auth_method(plan):
        raise ConfigError(
            f"--auth-method {auth_method} differs from the plan's metadata.authMethod "
            f"{plan_auth_method(plan)}; record the method in the plan (target discover "
            "--auth-method) and give the plan alone"
        )
    reviewers = sorted(
        {
            (tenant.namespace, workload.service_account or "default")
            for tenant, workload in plan.iter_workloads()
            if workload.effective_status is not WorkloadStatus.SKIPPED and workload.vault_reads()
        }
    )
    return auth_mount or plan.auth_mount, tuple(reviewers)
