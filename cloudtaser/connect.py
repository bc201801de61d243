"""``target connect``: let one cluster's ServiceAccount JWTs log in to the vault.

Cluster side (lightkube, through a :class:`~cloudtaser.kube.KubeSession`):

* a dedicated namespace (default ``cloudtaser-system``) with the token-reviewer ServiceAccount
  (``cloudtaser-token-reviewer``) and a self-test ServiceAccount (``cloudtaser-connect-selftest``);
* a ClusterRoleBinding ``cloudtaser-token-reviewer-<namespace>`` to ``system:auth-delegator``,
  checked afterwards with a SubjectAccessReview (``can the reviewer create tokenreviews?``);
* a reviewer token from the TokenRequest API with a bounded lifetime, requested only when the
  vault actually needs a new one;
* the API host (kubeconfig ``server``, overridable because the *vault* must reach it) and CA
  (kubeconfig, else the ``kube-root-ca.crt`` ConfigMap), the optional issuer, and the cluster's
  identity: the UID of the ``kube-system`` namespace.

Vault side (:class:`~cloudtaser.openbao.OpenBaoClient`): enable the Kubernetes auth method at the
chosen mount (one mount per cluster) and write ``auth/<mount>/config`` with ``kubernetes_host``,
``kubernetes_ca_cert``, ``token_reviewer_jwt`` and ``disable_local_ca_jwt=true``.

Idempotency vs rotation. OpenBao never returns ``token_reviewer_jwt`` and *clears* it when the
config is written without one, so the token cannot be compared and every config write must carry
one. connect therefore records, in the auth mount's **description** (visible in
``bao auth list``; no credential), the cluster identity, the reviewer and the reviewer token's
expiry. A run compares the config read back plus that record, and writes (with a fresh token)
only when a field differs, the reviewer changed, ``--rotate-reviewer-token`` is given, or less
than half of the requested lifetime is left. Otherwise nothing is requested or written.
Rotation = re-run connect (e.g. from a scheduled CI job) more often than every lifetime/2.

The record also protects clusters from each other: a mount that is connected to another cluster
(different ``kube-system`` UID) or that cloudtaser did not configure is never overwritten
without ``force``.

Self-test: a role ``cloudtaser_connect_selftest`` (kept; the underscore keeps it out of
apply-plan's ``cloudtaser-<plan>-<tenant>`` namespace) bound to the self-test ServiceAccount
only, with no policies and batch tokens of 60 s, and a real login with a fresh short-lived
token of that ServiceAccount. OpenBao answers every failed TokenReview with a bare
"permission denied", so the reason is found by elimination from this side: the role binding
and audience (from the login error text), a SubjectAccessReview for the reviewer, the recorded
reviewer token expiry, and a TLS probe of ``kubernetes_host`` with the configured CA.

Air-gap split: :func:`export_connection` (cluster only) returns a :class:`ClusterConnection`
that :func:`write_connection_file` saves; :func:`import_connection` (vault only) configures the
mount from it. Without an explicit opt-in the file holds no credential: the vault then uses
each client's own JWT as the reviewer, which needs every workload ServiceAccount bound to
``system:auth-delegator`` (:func:`export_connection` binds the plan's ServiceAccounts when
given them) and tokens valid for the API server's audience.

Pure library: no printing; progress goes to an optional callback. Tokens never appear in a
message, a repr or the progress stream.
"""

from __future__ import annotations

import enum
import getpass
import os
import re
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from cloudtaser.config import warn_if_exposed
from cloudtaser.errors import ClusterError, ConfigError, OperationError
from cloudtaser.kube import api_errors
from cloudtaser.naming import reserved_mount, usable_mount, valid_role_name

if TYPE_CHECKING:
    from cloudtaser.kube import KubeSession
    from cloudtaser.openbao import OpenBaoClient

__all__ = [
    "AUTH_DELEGATOR",
    "DEFAULT_NAMESPACE",
    "DEFAULT_REVIEWER",
    "DEFAULT_REVIEWER_TTL",
    "SELFTEST_ROLE",
    "SELFTEST_SERVICE_ACCOUNT",
    "Action",
    "ClusterConnection",
    "ConnectOptions",
    "ConnectResult",
    "ReviewerMode",
    "SelfTest",
    "Step",
    "check_connection",
    "connect",
    "export_connection",
    "import_connection",
    "read_connection_file",
    "validate_auth_mount",
    "write_connection_file",
]

Progress = Callable[[str], None]

DEFAULT_NAMESPACE: Final = "cloudtaser-system"
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
KUBERNETES_AUTH_TYPE: Final = "kubernetes"
#: Auth mount names that are never a cluster's Kubernetes auth method.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_RECORD_VALUE = re.compile(r"[^A-Za-z0-9._:/@+-]")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)


class Action(enum.StrEnum):
    """What connect did (or, with ``dry_run``, would do) to one object."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


class ReviewerMode(enum.StrEnum):
    """Which JWT the vault presents to the TokenReview API."""

    #: A dedicated reviewer ServiceAccount's token (stored in the vault, rotated by re-running).
    TOKEN = "token"  # noqa: S105 - a mode name, not a credential
    #: Each logging-in client's own JWT (no stored credential; every client SA needs
    #: ``system:auth-delegator`` and API-audience tokens).
    CLIENT_JWT = "client-jwt"


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
    ``ca-mismatch``, ``host-unreachable`` or ``unknown``.
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
    kubernetes_host: str
    kubernetes_ca_pem: str
    reviewer_mode: ReviewerMode
    issuer: str | None = None
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

    auth_mount: str = "kubernetes"
    namespace: str = DEFAULT_NAMESPACE
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
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ConfigError(f"--namespace {self.namespace[:80]!r} is not a DNS label")
        if not _DNS_SUBDOMAIN.fullmatch(self.reviewer_service_account):
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
        return replace(
            self, auth_mount=mount, kubernetes_host=host, kubernetes_ca_pem=ca, issuer=issuer
        )


@dataclass
class ConnectResult:
    """The outcome of one connect / import / check run."""

    auth_mount: str
    cluster: str
    kubernetes_host: str
    reviewer_mode: ReviewerMode
    dry_run: bool
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
    return bool(_DNS_LABEL.fullmatch(namespace) and _DNS_SUBDOMAIN.fullmatch(name))


def validate_auth_mount(mount: str) -> str:
    """An auth mount path (``kubernetes``, ``k8s/eu-prod``) without ``auth/``; or ConfigError."""
    mount = mount.strip().strip("/")
    mount = mount.removeprefix("auth/")
    if reserved_mount(mount):
        raise ConfigError(f"auth mount {mount[:80]!r} is reserved by the vault")
    if not usable_mount(mount):  # the rule book (naming): same rule for every command
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


# --- the record in the mount description ---------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    """What connect remembers in ``sys/auth/<mount>`` ``description`` (no credential)."""

    cluster: str
    cluster_id: str
    reviewer: str  # "token:<ns>/<sa>" | "client-jwt"
    expires: datetime | None

    def render(self) -> str:
        parts = [
            DESCRIPTION_PREFIX,
            f"cluster={_record_value(self.cluster)}",
            f"cluster-id={_record_value(self.cluster_id)}",
            f"reviewer={_record_value(self.reviewer)}",
        ]
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
        return cls(
            cluster=values.get("cluster", ""),
            cluster_id=values["cluster-id"],
            reviewer=values.get("reviewer", ""),
            expires=_parse_time(values.get("reviewer-expires")),
        )


def _reviewer_label(conn: ClusterConnection) -> str:
    if conn.reviewer_mode is ReviewerMode.CLIENT_JWT:
        return "client-jwt"
    return f"token:{conn.reviewer}"


# --- cluster side -------------------------------------------------------------------------------


def _get(session: KubeSession, resource: Any, name: str, namespace: str | None = None) -> Any:
    where = f"{namespace}/{name}" if namespace else name
    try:
        with api_errors(f"read {resource.__name__} {where}"):
            return session.client.get(resource, name, namespace=namespace)
    except ClusterError as exc:
        if exc.status == 404:
            return None
        raise


def _create(session: KubeSession, body: dict[str, Any]) -> None:
    from lightkube import codecs  # noqa: PLC0415

    meta = body["metadata"]
    where = f"{meta.get('namespace')}/{meta['name']}" if meta.get("namespace") else meta["name"]
    try:
        with api_errors(f"create {body['kind']} {where}"):
            session.client.create(codecs.from_dict(body))
    except ClusterError as exc:
        if exc.status != 409:  # created meanwhile by a concurrent run: fine
            raise


def cluster_identity(session: KubeSession) -> str:
    """The UID of the ``kube-system`` namespace: stable and unique per cluster."""
    from lightkube.resources.core_v1 import Namespace  # noqa: PLC0415

    obj = _get(session, Namespace, "kube-system")
    uid = getattr(getattr(obj, "metadata", None), "uid", None) if obj is not None else None
    if not uid:
        raise ClusterError(
            "cannot identify the cluster: namespace kube-system has no UID (is this a "
            "Kubernetes API server?)"
        )
    return str(uid)


def _ensure_namespace(session: KubeSession, name: str, *, dry_run: bool) -> Step:
    from lightkube.resources.core_v1 import Namespace  # noqa: PLC0415

    if _get(session, Namespace, name) is not None:
        return Step("cluster", "Namespace", name, Action.UNCHANGED)
    if not dry_run:
        _create(
            session,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(MANAGED_LABELS)},
            },
        )
    return Step("cluster", "Namespace", name, Action.CREATE)


def _ensure_service_account(
    session: KubeSession, namespace: str, name: str, *, dry_run: bool
) -> Step:
    from lightkube.resources.core_v1 import ServiceAccount  # noqa: PLC0415

    shown = f"{namespace}/{name}"
    if _get(session, ServiceAccount, name, namespace) is not None:
        return Step("cluster", "ServiceAccount", shown, Action.UNCHANGED)
    if not dry_run:
        _create(
            session,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_LABELS)},
            },
        )
    return Step("cluster", "ServiceAccount", shown, Action.CREATE)


def _ensure_binding(
    session: KubeSession,
    name: str,
    subjects: Iterable[tuple[str, str]],
    *,
    dry_run: bool,
    force: bool,
) -> Step:
    """A ClusterRoleBinding ``name`` -> ``system:auth-delegator`` for exactly ``subjects``."""
    from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding  # noqa: PLC0415
    from lightkube.types import PatchType  # noqa: PLC0415

    wanted = [
        {"kind": "ServiceAccount", "name": sa, "namespace": ns} for ns, sa in sorted(set(subjects))
    ]
    current = _get(session, ClusterRoleBinding, name)
    if current is None:
        if not dry_run:
            _create(
                session,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": name, "labels": dict(MANAGED_LABELS)},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": AUTH_DELEGATOR,
                    },
                    "subjects": wanted,
                },
            )
        return Step("cluster", "ClusterRoleBinding", name, Action.CREATE, AUTH_DELEGATOR)
    data = current.to_dict()
    role = (data.get("roleRef") or {}).get("name")
    labels = (data.get("metadata") or {}).get("labels") or {}
    if role != AUTH_DELEGATOR:
        raise OperationError(
            f"ClusterRoleBinding {name} exists but binds {role!r}, not {AUTH_DELEGATOR}; "
            "delete it or choose another --namespace"
        )
    have = sorted(
        (s.get("namespace", ""), s.get("name", ""))
        for s in data.get("subjects") or []
        if s.get("kind") == "ServiceAccount"
    )
    if have == sorted(set(subjects)) and len(have) == len(data.get("subjects") or []):
        return Step("cluster", "ClusterRoleBinding", name, Action.UNCHANGED, AUTH_DELEGATOR)
    if labels.get("app.kubernetes.io/managed-by") != "cloudtaser" and not force:
        raise OperationError(
            f"ClusterRoleBinding {name} exists with other subjects and was not created by "
            "cloudtaser; pass --force to replace its subjects"
        )
    if not dry_run:
        with api_errors(f"update ClusterRoleBinding {name}"):
            session.client.patch(
                ClusterRoleBinding, name, {"subjects": wanted}, patch_type=PatchType.MERGE
            )
    return Step("cluster", "ClusterRoleBinding", name, Action.UPDATE, "subjects")


def can_review_tokens(session: KubeSession, namespace: str, service_account: str) -> bool:
    """SubjectAccessReview: may ``namespace/service_account`` create tokenreviews?"""
    from lightkube import codecs  # noqa: PLC0415

    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{service_account}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "group": "authentication.k8s.io",
                "resource": "tokenreviews",
                "verb": "create",
            },
        },
    }
    with api_errors("create a SubjectAccessReview (needs create on subjectaccessreviews)"):
        answer = session.client.create(codecs.from_dict(body))
    return bool(getattr(getattr(answer, "status", None), "allowed", False))


def _wait_can_review(session: KubeSession, namespace: str, sa: str, *, patience: float) -> bool:
    """RBAC changes reach the authorizer after a moment: poll briefly."""
    deadline = time.monotonic() + patience
    while True:
        if can_review_tokens(session, namespace, sa):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def request_token(
    session: KubeSession,
    namespace: str,
    service_account: str,
    *,
    seconds: int,
    audiences: Iterable[str] = (),
) -> tuple[str, datetime]:
    """TokenRequest for a ServiceAccount: ``(token, expiry)``. The token is never logged."""
    from lightkube.models.authentication_v1 import TokenRequestSpec  # noqa: PLC0415
    from lightkube.models.meta_v1 import ObjectMeta  # noqa: PLC0415
    from lightkube.resources.core_v1 import ServiceAccountToken  # noqa: PLC0415

    req = ServiceAccountToken(
        metadata=ObjectMeta(name=service_account, namespace=namespace),
        spec=TokenRequestSpec(audiences=list(audiences), expirationSeconds=seconds),
    )
    with api_errors(f"request a token for ServiceAccount {namespace}/{service_account}"):
        res = session.client.create(req, service_account, namespace=namespace)
    status = getattr(res, "status", None)
    token = getattr(status, "token", None)
    if not isinstance(token, str) or not token:
        raise ClusterError(f"the TokenRequest for {namespace}/{service_account} returned no token")
    expires = _parse_time(getattr(status, "expirationTimestamp", None))
    return token, expires or datetime.now(UTC) + timedelta(seconds=seconds)


def _cluster_ca(session: KubeSession, options: ConnectOptions) -> tuple[str, str]:
    """``(pem, source)``: the flag, the kubeconfig, else the ``kube-root-ca.crt`` ConfigMap."""
    from lightkube.resources.core_v1 import ConfigMap  # noqa: PLC0415

    if options.kubernetes_ca_pem:
        return options.kubernetes_ca_pem, "file"
    if session.ca_pem:
        return _validate_ca(session.ca_pem, f"kubeconfig CA of context {session.context}"), (
            "kubeconfig"
        )
    for namespace in (options.namespace, "kube-system", "default"):
        cm = _get(session, ConfigMap, "kube-root-ca.crt", namespace)
        data = getattr(cm, "data", None) if cm is not None else None
        if data and data.get("ca.crt"):
            return _validate_ca(data["ca.crt"], "ConfigMap kube-root-ca.crt"), "configmap"
    raise ConfigError(
        "no cluster CA: the kubeconfig has none and no kube-root-ca.crt ConfigMap was found; "
        "pass --kubernetes-ca-file FILE"
    )


def _cluster_facts(
    session: KubeSession, options: ConnectOptions, *, progress: Progress
) -> ClusterConnection:
    progress(f"reading cluster facts of context {session.context}")
    cluster_id = cluster_identity(session)
    host = options.kubernetes_host or _validate_host(session.server)
    ca_pem, ca_source = _cluster_ca(session, options)
    reviewer = (
        f"{options.namespace}/{options.reviewer_service_account}"
        if options.reviewer_mode is ReviewerMode.TOKEN
        else None
    )
    return ClusterConnection(
        cluster=session.cluster_name,
        cluster_id=cluster_id,
        auth_mount=options.auth_mount,
        kubernetes_host=host,
        kubernetes_ca_pem=ca_pem,
        reviewer_mode=options.reviewer_mode,
        issuer=options.issuer,
        reviewer=reviewer,
        ca_source=ca_source,
        created_at=datetime.now(UTC).replace(microsecond=0),
        created_by=_who(),
    )


def _who() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return _record_value(f"{user}@{socket.gethostname()}")


def _binding_name(options: ConnectOptions) -> str:
    return f"cloudtaser-token-reviewer-{options.namespace}"


def _client_binding_name(options: ConnectOptions) -> str:
    mount = re.sub(r"[^a-z0-9-]", "-", options.auth_mount.lower())
    return f"cloudtaser-client-reviewers-{mount}"[:253].rstrip("-")


def _prepare_cluster(
    session: KubeSession,
    options: ConnectOptions,
    *,
    with_selftest: bool,
    progress: Progress,
) -> list[Step]:
    """Namespace, ServiceAccounts and bindings; then prove the reviewer may review tokens."""
    ns = options.namespace
    steps = [_ensure_namespace(session, ns, dry_run=options.dry_run)]
    fresh_namespace = steps[0].action is Action.CREATE
    accounts: list[str] = []
    if options.reviewer_mode is ReviewerMode.TOKEN:
        accounts.append(options.reviewer_service_account)
    if with_selftest:
        accounts.append(SELFTEST_SERVICE_ACCOUNT)
    for sa in accounts:
        if fresh_namespace and options.dry_run:
            steps.append(Step("cluster", "ServiceAccount", f"{ns}/{sa}", Action.CREATE))
        else:
            steps.append(_ensure_service_account(session, ns, sa, dry_run=options.dry_run))

    if options.reviewer_mode is ReviewerMode.TOKEN:
        subjects = [(ns, options.reviewer_service_account)]
        name = _binding_name(options)
    else:
        subjects = list(options.client_reviewers)
        if with_selftest:
            subjects.append((ns, SELFTEST_SERVICE_ACCOUNT))
        name = _client_binding_name(options)
    if subjects and not options.skip_rbac:
        progress(f"binding {len(set(subjects))} ServiceAccount(s) to {AUTH_DELEGATOR}")
        steps.append(
            _ensure_binding(session, name, subjects, dry_run=options.dry_run, force=options.force)
        )

    # pre-flight: the reviewer must be allowed to call the TokenReview API
    if options.reviewer_mode is ReviewerMode.TOKEN:
        pending = any(s.action is not Action.UNCHANGED for s in steps[1:])
        if options.dry_run and pending:
            return steps  # nothing to ask yet: the objects do not exist
        sa = options.reviewer_service_account
        patience = 0.0 if options.dry_run else 10.0 if pending else 2.0
        if not _wait_can_review(session, ns, sa, patience=patience):
            raise OperationError(
                f"reviewer forbidden: ServiceAccount {ns}/{sa} may not create tokenreviews "
                f"(authentication.k8s.io), so the vault could not verify any login. Bind it to "
                f"ClusterRole {AUTH_DELEGATOR}"
                + (" (connect did not, because of --skip-rbac)" if options.skip_rbac else "")
            )
    return steps


# --- vault side -------------------------------------------------------------------------------


def _auth_table(client: OpenBaoClient) -> dict[str, dict[str, Any]]:
    reply = client.request("GET", "sys/auth")
    body = reply.data if isinstance(reply.data, dict) else reply.body
    out: dict[str, dict[str, Any]] = {}
    if isinstance(body, dict):
        for key, value in body.items():
            if key.endswith("/") and isinstance(value, dict):
                out[key.rstrip("/")] = value
    return out


def _desired_config(conn: ClusterConnection) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kubernetes_host": conn.kubernetes_host,
        "kubernetes_ca_cert": conn.kubernetes_ca_pem,
        "disable_local_ca_jwt": True,
    }
    if conn.issuer:
        config["issuer"] = conn.issuer
        config["disable_iss_validation"] = False
    else:
        config["issuer"] = ""
        config["disable_iss_validation"] = True
    return config


def _config_differences(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> list[str]:
    if current is None:
        return ["not configured"]
    diffs = []
    for key, value in desired.items():
        have = current.get(key)
        if key == "kubernetes_ca_cert":
            if not _same_pem(have, value):
                diffs.append(key)
        elif key == "issuer":
            if (have or "") != (value or ""):
                diffs.append(key)
        elif have != value:
            diffs.append(key)
    if current.get("pem_keys"):
        diffs.append("pem_keys (removed: connect manages the whole config)")
    return diffs


TokenSource = Callable[[], tuple[str, datetime]]


def _configure_vault(
    client: OpenBaoClient,
    conn: ClusterConnection,
    result: ConnectResult,
    *,
    options: ConnectOptions,
    token_source: TokenSource | None,
    progress: Progress,
) -> None:
    """Enable the mount if absent, compare the config, write it (with a token) if needed.

    Adds the steps and the vault's warnings to ``result`` and sets the reviewer token expiry
    now in force (token mode).
    """
    mount = conn.auth_mount
    steps = result.steps
    record_expires: datetime | None = None
    progress(f"reading auth/{mount} on the vault")
    table = _auth_table(client)
    existing = table.get(mount)
    record = None
    current_config: dict[str, Any] | None = None
    if existing is not None:
        mtype = str(existing.get("type", ""))
        if mtype != KUBERNETES_AUTH_TYPE:
            raise OperationError(
                f"auth/{mount} is a {mtype!r} auth method, not kubernetes; choose another "
                "--auth-mount"
            )
        record = _Record.parse(str(existing.get("description") or ""))
        record_expires = record.expires if record else None
        current_config = client.read(f"auth/{mount}/config")
        if record is not None and record.cluster_id != conn.cluster_id and not options.force:
            raise OperationError(
                f"auth/{mount} is already connected to another cluster ({record.cluster}, "
                f"kube-system UID {record.cluster_id}); each cluster needs its own auth mount: "
                "pass --auth-mount NAME (and record it in the plan's metadata.authMount), or "
                "--force to re-point it at this cluster"
            )
        if record is None and current_config and not options.force:
            raise OperationError(
                f"auth/{mount} is already configured (kubernetes_host "
                f"{current_config.get('kubernetes_host')!s}) but not by cloudtaser target "
                "connect; pass --auth-mount NAME for a mount of this cluster's own, or --force "
                "to take it over"
            )

    desired = _desired_config(conn)
    diffs = _config_differences(current_config, desired)
    wanted_reviewer = _reviewer_label(conn)
    now = datetime.now(UTC)
    rotate_reason = ""
    if record is None or record.reviewer != wanted_reviewer:
        rotate_reason = "reviewer changed" if record is not None else ""
    elif conn.reviewer_mode is ReviewerMode.TOKEN:
        if options.rotate:
            rotate_reason = "rotation requested"
        elif conn.reviewer_token is not None:  # import: the file brings a specific token
            if (
                record.expires is None
                or conn.reviewer_expires is None
                or abs((record.expires - conn.reviewer_expires).total_seconds()) > 1
            ):
                rotate_reason = "new reviewer token in the connection file"
        elif record.expires is None:
            rotate_reason = "reviewer token expiry unknown"
        elif record.expires - now < timedelta(seconds=options.reviewer_token_ttl / 2):
            left = max(0, int((record.expires - now).total_seconds()))
            rotate_reason = f"reviewer token expires in {left // 60} min"

    if existing is None:
        steps.append(
            Step("vault", "auth-mount", f"auth/{mount}", Action.CREATE, KUBERNETES_AUTH_TYPE)
        )
    else:
        steps.append(Step("vault", "auth-mount", f"auth/{mount}", Action.UNCHANGED))

    must_write = bool(diffs) or bool(rotate_reason) or record is None
    if not must_write:
        steps.append(Step("vault", "auth-config", f"auth/{mount}/config", Action.UNCHANGED))
        result.reviewer_expires = record_expires
        return

    detail = ", ".join([*diffs, *([rotate_reason] if rotate_reason else [])])
    action = Action.CREATE if current_config is None else Action.UPDATE
    steps.append(Step("vault", "auth-config", f"auth/{mount}/config", action, detail))
    if options.dry_run:
        result.reviewer_expires = record_expires
        return

    body = dict(desired)
    expires: datetime | None = None
    if conn.reviewer_mode is ReviewerMode.TOKEN:
        if conn.reviewer_token is not None:
            token, expires = conn.reviewer_token, conn.reviewer_expires
            if expires is not None and expires <= now:
                raise OperationError(
                    f"the reviewer token in the connection file expired at {_iso(expires)}; "
                    "export a new file on the cluster side"
                )
        elif token_source is not None:
            progress("requesting a reviewer token (TokenRequest API)")
            token, expires = token_source()
        else:  # pragma: no cover - guarded by the callers
            raise OperationError("no reviewer token available")
        body["token_reviewer_jwt"] = token
    new_record = _Record(
        cluster=conn.cluster, cluster_id=conn.cluster_id, reviewer=wanted_reviewer, expires=expires
    )
    if existing is None:
        progress(f"enabling the Kubernetes auth method at auth/{mount}")
        client.enable_auth(mount, KUBERNETES_AUTH_TYPE, description=new_record.render())
    progress(f"writing auth/{mount}/config ({detail or 'initial'})")
    reply = client.write(f"auth/{mount}/config", body, idempotent=True)
    result.warnings.extend(reply.warnings)
    if existing is not None:
        client.write(
            f"sys/auth/{mount}/tune", {"description": new_record.render()}, idempotent=True
        )
    result.reviewer_expires = expires


def _selftest_role_fields(conn: ClusterConnection, namespace: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "bound_service_account_names": [SELFTEST_SERVICE_ACCOUNT],
        "bound_service_account_namespaces": [namespace],
        "token_policies": [],
        "token_no_default_policy": True,
        "token_type": "batch",
        "token_ttl": 60,
        "token_max_ttl": 60,
    }
    # client-JWT mode: the login JWT itself calls the TokenReview API, so it must carry the API
    # server's own audience; a role audience would make the API server reject it as a bearer.
    if conn.reviewer_mode is ReviewerMode.TOKEN:
        fields["audience"] = SELFTEST_AUDIENCE
    return fields


def _ensure_selftest_role(
    client: OpenBaoClient, conn: ClusterConnection, namespace: str, *, dry_run: bool
) -> Step:
    mount = conn.auth_mount
    path = f"auth/{mount}/role/{SELFTEST_ROLE}"
    desired = _selftest_role_fields(conn, namespace)
    exists = not dry_run or mount in client.auth_mounts()
    current = client.role_read(mount, SELFTEST_ROLE) if exists else None
    if current is not None and _role_matches(current, desired):
        return Step("vault", "role", path, Action.UNCHANGED, "self-test")
    if not dry_run:
        client.role_write(mount, SELFTEST_ROLE, desired)
    return Step(
        "vault", "role", path, Action.CREATE if current is None else Action.UPDATE, "self-test"
    )


def _role_matches(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    for key, value in desired.items():
        have = current.get(key)
        if isinstance(value, list):
            if sorted(str(v) for v in have or []) != sorted(str(v) for v in value):
                return False
        elif key == "token_type":
            if str(have) != value:
                return False
        elif have != value:
            return False
    return (current.get("audience") or "") == (desired.get("audience") or "")


# --- self-test --------------------------------------------------------------------------------


def _probe_tls(host: str, ca_pem: str, *, timeout: float = 5.0) -> tuple[str, str]:
    """From this machine: ``("ok"|"unreachable"|"untrusted", detail)`` for ``host`` + CA."""
    parts = urlsplit(host)
    try:
        port = parts.port or 443
    except ValueError:
        port = 0
    hostname = parts.hostname
    if not hostname or not port:
        return "unreachable", "not an https URL with a host and a valid port"
    try:
        context = ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError):
        return "untrusted", "the configured CA cannot be parsed"
    try:
        with (
            socket.create_connection((hostname, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=hostname),
        ):
            return "ok", ""
    except ssl.SSLCertVerificationError as exc:
        return "untrusted", str(exc.verify_message or exc.reason or "verification failed")
    except ssl.SSLError as exc:
        return "untrusted", str(exc.reason or exc)
    except OSError as exc:
        return "unreachable", exc.strerror or type(exc).__name__


def _login(client: OpenBaoClient, mount: str, role: str, jwt: str) -> tuple[int, list[str]]:
    """A login whose answer is inspected, not raised; the returned token is dropped at once."""
    reply = client.request(
        "POST",
        f"auth/{mount}/login",
        json={"role": role, "jwt": jwt},
        idempotent=False,
        auth=False,
        ok=(400, 401, 403, 500),
    )
    errors = reply.body.get("errors") if isinstance(reply.body, dict) else None
    texts = [" ".join(str(e).split())[:300] for e in errors] if isinstance(errors, list) else []
    return reply.status, texts


def _diagnose(
    session: KubeSession,
    client: OpenBaoClient,
    conn: ClusterConnection,
    *,
    status: int,
    errors: list[str],
    role: str,
    service_account: str,
    reviewer_expires: datetime | None,
) -> SelfTest:
    said = "; ".join(errors) or f"HTTP {status}"
    who = service_account
    mount = conn.auth_mount

    def fail(reason: str, message: str) -> SelfTest:
        return SelfTest(False, reason, message, role, who)

    text = said.lower()
    if "invalid role name" in text:
        return fail("role-missing", f"role {role!r} does not exist on auth/{mount}")
    if "not authorized" in text:
        return fail(
            "role-not-bound",
            f"role not bound: role {role!r} does not bind ServiceAccount {who} ({said})",
        )
    if "audience" in text:
        return fail("audience-mismatch", f"the token's audience does not match role {role!r}")
    if "not configured" in text or "could not load backend configuration" in text:
        return fail("not-configured", f"auth/{mount} has no config ({said})")
    if status != 403 or text.strip() != "permission denied":
        return fail("unknown", f"login through auth/{mount} failed: {said}")

    # A bare "permission denied": OpenBao's TokenReview call failed. Eliminate from here.
    config = client.read(f"auth/{mount}/config") or {}
    host = str(config.get("kubernetes_host") or conn.kubernetes_host)
    ca_pem = str(config.get("kubernetes_ca_cert") or conn.kubernetes_ca_pem)
    if conn.reviewer_mode is ReviewerMode.TOKEN and conn.reviewer:
        from lightkube.resources.core_v1 import ServiceAccount  # noqa: PLC0415

        rns, _, rsa = conn.reviewer.partition("/")
        if _get(session, ServiceAccount, rsa, rns) is None:
            return fail(
                "reviewer-token-invalid",
                f"the reviewer ServiceAccount {conn.reviewer} no longer exists, so its token is "
                "invalid; re-run 'cloudtaser target connect'",
            )
        if not can_review_tokens(session, rns, rsa):
            return fail(
                "reviewer-forbidden",
                f"reviewer forbidden: ServiceAccount {conn.reviewer} may not create "
                f"tokenreviews; bind it to ClusterRole {AUTH_DELEGATOR} (re-running "
                "'cloudtaser target connect' recreates the binding)",
            )
        if reviewer_expires is not None and reviewer_expires <= datetime.now(UTC):
            return fail(
                "reviewer-token-invalid",
                f"the reviewer token expired at {_iso(reviewer_expires)}; re-run "
                "'cloudtaser target connect' to rotate it",
            )
    elif conn.reviewer_mode is ReviewerMode.CLIENT_JWT:
        sa_ns, _, sa_name = service_account.partition("/")
        if not can_review_tokens(session, sa_ns, sa_name):
            return fail(
                "reviewer-forbidden",
                f"reviewer forbidden: in client-JWT mode the logging-in ServiceAccount {who} is "
                f"its own reviewer and needs ClusterRole {AUTH_DELEGATOR}",
            )
    outcome, detail = _probe_tls(host, ca_pem)
    if outcome == "untrusted":
        return fail(
            "ca-mismatch",
            f"CA mismatch: the CA configured on auth/{mount} does not verify the API server at "
            f"{host} ({detail}); re-run connect (or pass --kubernetes-ca-file)",
        )
    if outcome == "unreachable":
        return fail(
            "host-unreachable",
            f"host unreachable: {host} does not answer from this machine either ({detail}); the "
            "vault cannot reach it: pass --kubernetes-host with an address the vault can reach",
        )
    return fail(
        "host-unreachable" if conn.reviewer_mode is ReviewerMode.TOKEN else "unknown",
        f"the vault's TokenReview call failed although the reviewer may review tokens and {host} "
        "answers with the configured CA from this machine: most likely the vault cannot reach "
        "that address (firewall, DNS or routing between the vault and the API server); if it "
        "can, the reviewer token may have been revoked: re-run with --rotate-reviewer-token",
    )


def _self_test(
    session: KubeSession,
    client: OpenBaoClient,
    conn: ClusterConnection,
    *,
    role: str,
    service_account: str,
    audience: str | None,
    reviewer_expires: datetime | None,
    progress: Progress,
) -> SelfTest:
    sa_ns, _, sa_name = service_account.partition("/")
    progress(f"self-test: logging in through auth/{conn.auth_mount} as {service_account}")
    jwt, _exp = request_token(
        session,
        sa_ns,
        sa_name,
        seconds=MIN_TOKEN_SECONDS,
        audiences=[audience] if audience else [],
    )
    status, errors = _login(client, conn.auth_mount, role, jwt)
    if status < 400:
        return SelfTest(
            True,
            "ok",
            f"{service_account} logged in through auth/{conn.auth_mount} with role {role!r}",
            role,
            service_account,
        )
    return _diagnose(
        session,
        client,
        conn,
        status=status,
        errors=errors,
        role=role,
        service_account=service_account,
        reviewer_expires=reviewer_expires,
    )


# --- workflows --------------------------------------------------------------------------------


def _noop(_message: str) -> None:
    return None


def _new_result(
    conn: ClusterConnection, *, dry_run: bool, reviewer_expires: datetime | None = None
) -> ConnectResult:
    return ConnectResult(
        auth_mount=conn.auth_mount,
        cluster=conn.cluster,
        kubernetes_host=conn.kubernetes_host,
        reviewer_mode=conn.reviewer_mode,
        dry_run=dry_run,
        reviewer_expires=reviewer_expires,
    )


def _reviewer_token(session: KubeSession, options: ConnectOptions) -> tuple[str, datetime]:
    """A fresh token of the reviewer ServiceAccount (TokenRequest API)."""
    return request_token(
        session,
        options.namespace,
        options.reviewer_service_account,
        seconds=options.reviewer_token_ttl,
    )


def connect(
    session: KubeSession,
    client: OpenBaoClient,
    options: ConnectOptions,
    *,
    progress: Progress | None = None,
) -> ConnectResult:
    """Configure the vault for the cluster of ``session`` and prove it with a real login."""
    say = progress or _noop
    options = options.validated()
    conn = _cluster_facts(session, options, progress=say)
    result = _new_result(conn, dry_run=options.dry_run)
    result.steps.extend(
        _prepare_cluster(session, options, with_selftest=options.self_test, progress=say)
    )
    _configure_vault(
        client,
        conn,
        result,
        options=options,
        token_source=lambda: _reviewer_token(session, options),
        progress=say,
    )
    if not options.self_test:
        return result
    result.steps.append(
        _ensure_selftest_role(client, conn, options.namespace, dry_run=options.dry_run)
    )
    if options.dry_run:
        return result
    result.self_test = _self_test(
        session,
        client,
        conn,
        role=SELFTEST_ROLE,
        service_account=f"{options.namespace}/{SELFTEST_SERVICE_ACCOUNT}",
        audience=SELFTEST_AUDIENCE if conn.reviewer_mode is ReviewerMode.TOKEN else None,
        reviewer_expires=result.reviewer_expires,
        progress=say,
    )
    return result


def check_connection(
    session: KubeSession,
    client: OpenBaoClient,
    options: ConnectOptions,
    *,
    role: str | None = None,
    service_account: str | None = None,
    progress: Progress | None = None,
) -> ConnectResult:
    """Only the self-test (nothing is created or written).

    By default it logs in as the self-test ServiceAccount with the self-test role; ``role`` and
    ``service_account`` (``namespace/name``) test a tenant's role instead (the role's
    ``audience``, if any, is requested for the token).
    """
    say = progress or _noop
    options = options.validated()
    if role is None:
        role = SELFTEST_ROLE
        service_account = f"{options.namespace}/{SELFTEST_SERVICE_ACCOUNT}"
    if not service_account or "/" not in service_account:
        raise ConfigError("--self-test-service-account must be NAMESPACE/NAME")
    if not _valid_service_account(*service_account.split("/", 1)):
        raise ConfigError(f"ServiceAccount {service_account[:120]!r} is not a valid name")
    if not valid_role_name(role):
        raise ConfigError(f"role name {role[:80]!r} is not valid")
    mount = options.auth_mount
    table = _auth_table(client)
    if mount not in table:
        raise OperationError(f"auth/{mount} does not exist; run 'cloudtaser target connect'")
    record = _Record.parse(str(table[mount].get("description") or ""))
    mode = options.reviewer_mode
    reviewer = f"{options.namespace}/{options.reviewer_service_account}"
    if record is not None:
        if record.reviewer == "client-jwt":
            mode, reviewer = ReviewerMode.CLIENT_JWT, ""
        elif record.reviewer.startswith("token:"):
            mode, reviewer = ReviewerMode.TOKEN, record.reviewer.removeprefix("token:")
    config = client.read(f"auth/{mount}/config") or {}
    conn = ClusterConnection(
        cluster=session.cluster_name,
        cluster_id=record.cluster_id if record else "",
        auth_mount=mount,
        kubernetes_host=str(config.get("kubernetes_host") or session.server),
        kubernetes_ca_pem=str(config.get("kubernetes_ca_cert") or ""),
        reviewer_mode=mode,
        reviewer=reviewer or None,
    )
    if record is not None and record.cluster_id != cluster_identity(session):
        raise OperationError(
            f"auth/{mount} is connected to another cluster ({record.cluster}); pass the "
            "--auth-mount of this cluster"
        )
    result = _new_result(conn, dry_run=False, reviewer_expires=record.expires if record else None)
    role_data = client.role_read(mount, role)
    audience = str(role_data.get("audience") or "") if role_data else ""
    result.self_test = _self_test(
        session,
        client,
        conn,
        role=role,
        service_account=service_account,
        audience=audience or None,
        reviewer_expires=result.reviewer_expires,
        progress=say,
    )
    return result


def export_connection(
    session: KubeSession,
    options: ConnectOptions,
    *,
    include_reviewer_token: bool = False,
    progress: Progress | None = None,
) -> tuple[ClusterConnection, list[Step]]:
    """Cluster side of the split form: objects, facts, and (only if asked) a reviewer token.

    Without ``include_reviewer_token`` the connection uses client-JWT review and binds
    ``options.client_reviewers`` to ``system:auth-delegator``.
    """
    say = progress or _noop
    mode = ReviewerMode.TOKEN if include_reviewer_token else ReviewerMode.CLIENT_JWT
    options = replace(options, reviewer_mode=mode).validated()
    conn = _cluster_facts(session, options, progress=say)
    steps = _prepare_cluster(session, options, with_selftest=False, progress=say)
    if include_reviewer_token and not options.dry_run:
        say("requesting a reviewer token (TokenRequest API) for the connection file")
        token, expires = _reviewer_token(session, options)
        conn = replace(conn, reviewer_token=token, reviewer_expires=expires)
    return conn, steps


def import_connection(
    client: OpenBaoClient,
    conn: ClusterConnection,
    options: ConnectOptions,
    *,
    progress: Progress | None = None,
) -> ConnectResult:
    """Vault side of the split form: enable/configure the mount from a connection file."""
    say = progress or _noop
    options = replace(options, reviewer_mode=conn.reviewer_mode).validated()
    if options.auth_mount != conn.auth_mount:
        conn = replace(conn, auth_mount=options.auth_mount)
    if conn.reviewer_mode is ReviewerMode.TOKEN and conn.reviewer_token is None:
        raise ConfigError(
            "the connection file says reviewer mode 'token' but holds no reviewer token"
        )
    result = _new_result(conn, dry_run=options.dry_run)
    _configure_vault(client, conn, result, options=options, token_source=None, progress=say)
    return result


# --- the connection file ------------------------------------------------------------------------


def connection_document(conn: ClusterConnection) -> dict[str, Any]:
    """The YAML document of a connection file (the token only if ``conn`` carries one)."""
    metadata: dict[str, Any] = {"cluster": conn.cluster, "clusterId": conn.cluster_id}
    if conn.created_at:
        metadata["createdAt"] = _iso(conn.created_at)
    if conn.created_by:
        metadata["createdBy"] = conn.created_by
    reviewer: dict[str, Any] = {"mode": str(conn.reviewer_mode)}
    if conn.reviewer:
        reviewer["serviceAccount"] = conn.reviewer
    if conn.reviewer_token:
        reviewer["token"] = conn.reviewer_token
    if conn.reviewer_expires:
        reviewer["expiresAt"] = _iso(conn.reviewer_expires)
    doc: dict[str, Any] = {
        "apiVersion": FILE_API_VERSION,
        "kind": FILE_KIND,
        "metadata": metadata,
        "authMount": conn.auth_mount,
        "kubernetesHost": conn.kubernetes_host,
        "kubernetesCaCert": conn.kubernetes_ca_pem,
        "caSource": conn.ca_source,
        "reviewer": reviewer,
    }
    if conn.issuer:
        doc["issuer"] = conn.issuer
    return doc


_HEADER = """\
# cloudtaser cluster connection: hand this file to the vault side and run
#   cloudtaser source connect --import FILE
# It holds the cluster's API address and CA{cred}.
"""


def write_connection_file(path: str | os.PathLike[str], conn: ClusterConnection) -> None:
    """Write atomically (temp file, fsync, rename), mode 0600."""
    import yaml  # noqa: PLC0415

    cred = (
        " and a REVIEWER TOKEN (a credential: keep it secret, delete it after import)"
        if conn.reviewer_token
        else ", and no credential"
    )
    text = _HEADER.format(cred=cred) + yaml.safe_dump(
        connection_document(conn), sort_keys=False, default_flow_style=False
    )
    target = Path(path)
    directory = target.parent if str(target.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(0o600)
        Path(tmp).replace(target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


_FILE_KEYS: Final = frozenset(
    {
        "apiVersion",
        "kind",
        "metadata",
        "authMount",
        "kubernetesHost",
        "kubernetesCaCert",
        "caSource",
        "issuer",
        "reviewer",
    }
)


def read_connection_file(path: str | os.PathLike[str]) -> ClusterConnection:
    """Read and validate a connection file; every problem is one :class:`ConfigError`."""
    import yaml  # noqa: PLC0415

    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read connection file {where}: {exc.strerror}") from None
    if len(text) > 1024 * 1024:
        raise ConfigError(f"{where}: too large for a connection file")
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        raise ConfigError(f"{where}: not valid YAML (or nested too deeply)") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a connection file (expected a mapping)")
    if not all(isinstance(key, str) for key in doc):
        raise ConfigError(f"{where}: every key of a connection file is a string")
    if doc.get("apiVersion") != FILE_API_VERSION or doc.get("kind") != FILE_KIND:
        raise ConfigError(
            f"{where}: expected apiVersion {FILE_API_VERSION} and kind {FILE_KIND} (written by "
            "'cloudtaser target connect --export')"
        )
    unknown = sorted(set(doc) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")

    def text_field(value: Any, name: str, *, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise ConfigError(f"{where}: {name} must be a non-empty string")
        return value

    metadata = doc.get("metadata") or {}
    reviewer = doc.get("reviewer") or {}
    if not isinstance(metadata, dict) or not isinstance(reviewer, dict):
        raise ConfigError(f"{where}: metadata and reviewer must be mappings")
    if not all(isinstance(key, str) for key in (*metadata, *reviewer)):
        raise ConfigError(f"{where}: every key of a connection file is a string")
    if doc.get("issuer") is not None and not isinstance(doc["issuer"], str):
        raise ConfigError(f"{where}: issuer must be a string (the API server's issuer URL)")
    extra = sorted(set(metadata) - {"cluster", "clusterId", "createdAt", "createdBy"}) + sorted(
        f"reviewer.{k}" for k in set(reviewer) - {"mode", "serviceAccount", "token", "expiresAt"}
    )
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, extra))}")
    try:
        mode = ReviewerMode(text_field(reviewer.get("mode"), "reviewer.mode"))
    except ValueError:
        raise ConfigError(f"{where}: reviewer.mode must be 'token' or 'client-jwt'") from None
    token = reviewer.get("token")
    if token is not None:
        warn_if_exposed(path, "the connection file (it holds a reviewer token)")
        if mode is not ReviewerMode.TOKEN:
            raise ConfigError(f"{where}: reviewer.token is only allowed with mode 'token'")
        if not isinstance(token, str) or len(token) > 16384 or not _JWT.fullmatch(token):
            raise ConfigError(f"{where}: reviewer.token is not a JWT")
    cluster_id = text_field(metadata.get("clusterId"), "metadata.clusterId")
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", cluster_id):
        raise ConfigError(f"{where}: metadata.clusterId is not a UID")
    sa = reviewer.get("serviceAccount")
    if sa is not None and (
        not isinstance(sa, str) or not re.fullmatch(r"[a-z0-9-]{1,63}/[a-z0-9.-]{1,253}", sa)
    ):
        raise ConfigError(f"{where}: reviewer.serviceAccount must be NAMESPACE/NAME")
    try:
        return ClusterConnection(
            cluster=_record_value(text_field(metadata.get("cluster"), "metadata.cluster")),
            cluster_id=cluster_id,
            auth_mount=validate_auth_mount(text_field(doc.get("authMount"), "authMount")),
            kubernetes_host=_validate_host(text_field(doc.get("kubernetesHost"), "kubernetesHost")),
            kubernetes_ca_pem=_validate_ca(
                text_field(doc.get("kubernetesCaCert"), "kubernetesCaCert"),
                f"{where}: kubernetesCaCert",
            ),
            reviewer_mode=mode,
            issuer=_validate_issuer(doc["issuer"]) if doc.get("issuer") else None,
            reviewer=sa,
            reviewer_token=token,
            reviewer_expires=_parse_time(reviewer.get("expiresAt")),
            ca_source=str(doc.get("caSource") or "file")[:32],
            created_at=_parse_time(metadata.get("createdAt")),
            created_by=_record_value(str(metadata.get("createdBy") or "")) or None,
        )
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
