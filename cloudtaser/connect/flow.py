"""The target connect workflows: connect, check_connection, export_connection and import_connection
(the split form).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from cloudtaser.connect.cluster import (
    _cluster_facts,
    _prepare_cluster,
    request_token,
)
from cloudtaser.connect.model import (
    SELFTEST_AUDIENCE,
    SELFTEST_ROLE,
    SELFTEST_SERVICE_ACCOUNT,
    AuthMethod,
    ClusterConnection,
    ConnectOptions,
    ConnectResult,
    ReviewerMode,
    Step,
    _Record,
    _valid_service_account,
)
from cloudtaser.connect.selftest import _self_test
from cloudtaser.connect.vault import _auth_table, _configure_vault, _ensure_selftest_role
from cloudtaser.errors import ConfigError, OperationError
from cloudtaser.plan.rules import valid_role_name
from cloudtaser.progress import Progress
from cloudtaser.target.kube.identity import cluster_identity

if TYPE_CHECKING:
    from cloudtaser.source.openbao import OpenBaoClient
    from cloudtaser.target.kube.session import KubeSession

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
        auth_method=conn.auth_method,
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
        # client-JWT review: the login JWT is the TokenReview bearer, so the API's audience
        audience=None if conn.reviewer_mode is ReviewerMode.CLIENT_JWT else SELFTEST_AUDIENCE,
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
    method = record.auth if record is not None else options.auth_method
    reviewer = f"{options.namespace}/{options.reviewer_service_account}"
    if method is AuthMethod.JWT:
        mode, reviewer = ReviewerMode.NONE, ""
    elif record is not None:
        if record.reviewer == "client-jwt":
            mode, reviewer = ReviewerMode.CLIENT_JWT, ""
        elif record.reviewer.startswith("token:"):
            mode, reviewer = ReviewerMode.TOKEN, record.reviewer.removeprefix("token:")
    config = client.read(f"auth/{mount}/config") or {}
    jwt = method is AuthMethod.JWT
    conn = ClusterConnection(
        cluster=session.cluster_name,
        cluster_id=record.cluster_id if record else "",
        auth_mount=mount,
        kubernetes_host="" if jwt else str(config.get("kubernetes_host") or session.server),
        kubernetes_ca_pem="" if jwt else str(config.get("kubernetes_ca_cert") or ""),
        reviewer_mode=mode,
        reviewer=reviewer or None,
        issuer=str(config.get("bound_issuer") or "") or None if jwt else None,
        auth_method=method,
    )
    if record is not None and record.cluster_id != cluster_identity(session):
        raise OperationError(
            f"auth/{mount} is connected to another cluster ({record.cluster}); pass the "
            "--auth-mount of this cluster"
        )
    result = _new_result(conn, dry_run=False, reviewer_expires=record.expires if record else None)
    role_data = client.role_read(mount, role) or {}
    audiences = role_data.get("bound_audiences") if jwt else [role_data.get("audience")]
    audience = str((audiences or [""])[0] or "")
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
    if options.auth_method is AuthMethod.JWT:
        if include_reviewer_token:
            raise ConfigError("--include-reviewer-token has no use with --auth-method jwt")
        mode = ReviewerMode.NONE
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
    options = replace(
        options, reviewer_mode=conn.reviewer_mode, auth_method=conn.auth_method
    ).validated()
    if options.auth_mount != conn.auth_mount:
        conn = replace(conn, auth_mount=options.auth_mount)
    if conn.reviewer_mode is ReviewerMode.TOKEN and conn.reviewer_token is None:
        raise ConfigError(
            "the connection file says reviewer mode 'token' but holds no reviewer token"
        )
    result = _new_result(conn, dry_run=options.dry_run)
    _configure_vault(client, conn, result, options=options, token_source=None, progress=say)
    return result
