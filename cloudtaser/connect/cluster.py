"""The cluster side of target connect (Kubernetes only): reviewer ServiceAccount, system:auth-
delegator binding checked by SubjectAccessReview, TokenRequest, cluster identity and CA; in jwt
mode the issuer and the public signing keys (the API server's OIDC discovery documents).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from cloudtaser.changes import Action
from cloudtaser.config import local_actor
from cloudtaser.connect.model import (
    AUTH_DELEGATOR,
    MANAGED_LABELS,
    SELFTEST_SERVICE_ACCOUNT,
    AuthMethod,
    ClusterConnection,
    ConnectOptions,
    ReviewerMode,
    Step,
    _parse_time,
    _record_value,
    _validate_ca,
    _validate_host,
    _validate_issuer,
    jwks_public_pems,
)
from cloudtaser.errors import (
    ClusterConflictError,
    ClusterError,
    ConfigError,
    OperationError,
)
from cloudtaser.progress import Progress
from cloudtaser.target.kube import api
from cloudtaser.target.kube.api import get_object, get_path
from cloudtaser.target.kube.errors import api_errors
from cloudtaser.target.kube.identity import cluster_identity
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.target.kube.session import KubeSession


def _create(session: KubeSession, body: dict[str, Any]) -> None:
    # created meanwhile by a concurrent run: fine
    with contextlib.suppress(ClusterConflictError):
        api.create(session, body)


def _ensure_namespace(session: KubeSession, name: str, *, dry_run: bool) -> Step:
    if get_object(session, "Namespace", name, None) is not None:
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
    shown = f"{namespace}/{name}"
    if get_object(session, "ServiceAccount", name, namespace) is not None:
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
    wanted = [
        {"kind": "ServiceAccount", "name": sa, "namespace": ns} for ns, sa in sorted(set(subjects))
    ]
    data = get_object(session, "ClusterRoleBinding", name, None)
    if data is None:
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
    if any(labels.get(k) != v for k, v in MANAGED_LABELS.items()) and not force:
        raise OperationError(
            f"ClusterRoleBinding {name} exists with other subjects and was not created by "
            "cloudtaser; pass --force to replace its subjects"
        )
    if not dry_run:
        api.merge_patch(session, "ClusterRoleBinding", name, {"subjects": wanted})
    return Step("cluster", "ClusterRoleBinding", name, Action.UPDATE, "subjects")


def can_review_tokens(session: KubeSession, namespace: str, service_account: str) -> bool:
    """SubjectAccessReview: may ``namespace/service_account`` create tokenreviews?"""
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
    answer = api.create(
        session, body, action="create a SubjectAccessReview (needs create on subjectaccessreviews)"
    )
    return bool(dig(answer, "status", "allowed"))


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
    if options.kubernetes_ca_pem:
        return options.kubernetes_ca_pem, "file"
    if session.ca_pem:
        return _validate_ca(session.ca_pem, f"kubeconfig CA of context {session.context}"), (
            "kubeconfig"
        )
    for namespace in (options.namespace, "kube-system", "default"):
        data = dig(get_object(session, "ConfigMap", "kube-root-ca.crt", namespace), "data")
        if data and data.get("ca.crt"):
            return _validate_ca(data["ca.crt"], "ConfigMap kube-root-ca.crt"), "configmap"
    raise ConfigError(
        "no cluster CA: the kubeconfig has none and no kube-root-ca.crt ConfigMap was found; "
        "pass --kubernetes-ca-file FILE"
    )


#: The API server's OIDC discovery documents (readable by every ServiceAccount through the
#: ``system:service-account-issuer-discovery`` ClusterRole). The JWKS is read from the API
#: server's own path, not from the discovery's ``jwks_uri`` (an issuer URL this machine may
#: not reach).
OPENID_CONFIGURATION: Final = "/.well-known/openid-configuration"
JWKS_PATH: Final = "/openid/v1/jwks"


def signing_facts(
    session: KubeSession, *, issuer: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """``(issuer, public keys as PEM)`` of the cluster's ServiceAccount tokens. ``issuer``
    (``--issuer``), when given, must be the one the API server announces."""
    discovery = get_path(
        session, OPENID_CONFIGURATION, action=f"read {OPENID_CONFIGURATION} (the token issuer)"
    )
    announced = discovery.get("issuer")
    if not isinstance(announced, str) or not announced:
        raise ClusterError(
            f"the API server's {OPENID_CONFIGURATION} names no issuer; is ServiceAccount issuer "
            "discovery enabled (--service-account-issuer)?"
        )
    announced = _validate_issuer(announced)
    if issuer and issuer != announced:
        raise ConfigError(
            f"--issuer {issuer[:120]} is not the cluster's issuer {announced[:120]} (from "
            f"{OPENID_CONFIGURATION}); drop --issuer"
        )
    jwks = get_path(
        session,
        JWKS_PATH,
        action=f"read {JWKS_PATH} (the token signing keys)",
        accept="application/jwk-set+json, application/json",
    )
    return announced, jwks_public_pems(jwks)


def _cluster_facts(
    session: KubeSession, options: ConnectOptions, *, progress: Progress
) -> ClusterConnection:
    progress(f"reading cluster facts of context {session.context}")
    cluster_id = cluster_identity(session)
    if options.auth_method is AuthMethod.JWT:
        progress(f"reading the token issuer and signing keys ({JWKS_PATH})")
        issuer, keys = signing_facts(session, issuer=options.issuer)
        return ClusterConnection(
            cluster=session.cluster_name,
            cluster_id=cluster_id,
            auth_mount=options.auth_mount,
            kubernetes_host="",
            kubernetes_ca_pem="",
            reviewer_mode=ReviewerMode.NONE,
            issuer=issuer,
            auth_method=AuthMethod.JWT,
            jwt_keys=keys,
            ca_source="",
            created_at=datetime.now(UTC).replace(microsecond=0),
            created_by=_who(),
        )
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
    return _record_value(local_actor())


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
    """Namespace, ServiceAccounts and bindings; then prove the reviewer may review tokens.

    jwt mode needs nothing in the cluster but the self-test's ServiceAccount (and its
    namespace): no reviewer, no binding, no extra RBAC for any workload."""
    ns = options.namespace
    if options.auth_method is AuthMethod.JWT and not with_selftest:
        return []
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
    elif options.reviewer_mode is ReviewerMode.CLIENT_JWT:
        subjects = list(options.client_reviewers)
        if with_selftest:
            subjects.append((ns, SELFTEST_SERVICE_ACCOUNT))
        name = _client_binding_name(options)
    else:  # jwt: the vault reviews nothing, so nobody needs system:auth-delegator
        subjects, name = [], ""
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
