"""The self-test of target connect: a real login with a ServiceAccount JWT, and a diagnosis of why
it failed (TLS, issuer, audience, binding).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cloudtaser.connect.cluster import can_review_tokens, request_token
from cloudtaser.connect.model import (
    AUTH_DELEGATOR,
    MIN_TOKEN_SECONDS,
    AuthMethod,
    ClusterConnection,
    ReviewerMode,
    SelfTest,
    _iso,
)
from cloudtaser.progress import Progress
from cloudtaser.target.kube.api import get_object

if TYPE_CHECKING:
    from cloudtaser.source.openbao import OpenBaoClient
    from cloudtaser.target.kube.session import KubeSession

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
    if "invalid role name" in text or "could not be found" in text:
        return fail("role-missing", f"role {role!r} does not exist on auth/{mount}")
    if "not authorized" in text or "does not match any associated bound claim" in text:
        return fail(
            "role-not-bound",
            f"role not bound: role {role!r} does not bind ServiceAccount {who} ({said})",
        )
    if "audience" in text:
        return fail("audience-mismatch", f"the token's audience does not match role {role!r}")
    if "not configured" in text or "could not load backend configuration" in text:
        return fail("not-configured", f"auth/{mount} has no config ({said})")
    if conn.auth_method is AuthMethod.JWT:
        return _diagnose_jwt(text, said, mount=mount, fail=fail)
    if status != 403 or text.strip() != "permission denied":
        return fail("unknown", f"login through auth/{mount} failed: {said}")

    # A bare "permission denied": OpenBao's TokenReview call failed. Eliminate from here.
    config = client.read(f"auth/{mount}/config") or {}
    host = str(config.get("kubernetes_host") or conn.kubernetes_host)
    ca_pem = str(config.get("kubernetes_ca_cert") or conn.kubernetes_ca_pem)
    if conn.reviewer_mode is ReviewerMode.TOKEN and conn.reviewer:
        rns, _, rsa = conn.reviewer.partition("/")
        if get_object(session, "ServiceAccount", rsa, rns) is None:
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


def _diagnose_jwt(
    text: str, said: str, *, mount: str, fail: Callable[[str, str], SelfTest]
) -> SelfTest:
    """The jwt method says why (it checks offline), so its error text is the diagnosis."""
    if "issuer" in text:
        return fail(
            "issuer-mismatch",
            f"the token's issuer is not the one auth/{mount} is bound to: the cluster's issuer "
            "changed, or the mount belongs to another cluster; re-run 'cloudtaser target "
            "connect'",
        )
    if "signature" in text or "no known key" in text:
        return fail(
            "unknown-signing-key",
            f"the token is signed with a key auth/{mount} does not hold (a signing-key "
            "rotation, or another cluster's token): re-run 'cloudtaser target connect' to copy "
            "the cluster's current keys",
        )
    return fail("unknown", f"login through auth/{mount} failed: {said}")


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
