"""The vault side of target connect (OpenBao only): enable and configure the cluster's auth mount
(``kubernetes``, or ``jwt`` with the cluster's public keys), the connect record, the self-test
role.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.changes import Action
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
    _iso,
    _Record,
    _reviewer_label,
    _same_pem,
    key_algorithms,
    validate_public_keys,
)
from cloudtaser.errors import ConfigError, OperationError
from cloudtaser.plan.rules import JWT_AUTH_TYPE, KUBERNETES_AUTH_TYPE
from cloudtaser.progress import Progress
from cloudtaser.source.grants import claims_normalised, jwt_role_binding
from cloudtaser.source.preflight import is_auth_type, is_kubernetes_auth

if TYPE_CHECKING:
    from cloudtaser.source.openbao import OpenBaoClient

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
    if conn.auth_method is AuthMethod.JWT:
        _configure_jwt(client, conn, result, options=options, progress=progress)
        return
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
        if not is_kubernetes_auth(mtype):
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


#: What a jwt mount's config may hold that lets the vault reach out (connect never sets them,
#: and removes them: the vault of a jwt connection reaches nothing).
_REACHING_FIELDS: Final = ("oidc_discovery_url", "jwks_url")


def _desired_jwt_config(conn: ClusterConnection) -> dict[str, Any]:
    """``auth/<mount>/config`` of a jwt connection: the cluster's keys and issuer only."""
    return {
        "jwt_validation_pubkeys": list(conn.jwt_keys),
        "bound_issuer": conn.issuer or "",
        "jwt_supported_algs": key_algorithms(conn.jwt_keys),
    }


def _jwt_config_differences(
    current: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> list[str]:
    """What differs, keys counted (``keys: +1 -0``) so a rotation shows as one."""
    if not current:
        return ["not configured"]
    diffs = []
    try:
        have = set(validate_public_keys(current.get("jwt_validation_pubkeys") or [], "config"))
    except ConfigError:
        have = set()
    want = set(desired["jwt_validation_pubkeys"])
    if have != want:
        diffs.append(f"keys: +{len(want - have)} -{len(have - want)}")
    if (current.get("bound_issuer") or "") != desired["bound_issuer"]:
        diffs.append("bound_issuer")
    if sorted(current.get("jwt_supported_algs") or []) != desired["jwt_supported_algs"]:
        diffs.append("jwt_supported_algs")
    diffs += [f"{key} (removed)" for key in _REACHING_FIELDS if current.get(key)]
    return diffs


def _configure_jwt(
    client: OpenBaoClient,
    conn: ClusterConnection,
    result: ConnectResult,
    *,
    options: ConnectOptions,
    progress: Progress,
) -> None:
    """One jwt mount per cluster: enable it if absent, write the cluster's keys and issuer.

    The mount's record names the cluster (kube-system UID); a mount recorded for another
    cluster, or configured by someone else, is refused (``force`` re-points it: the keys are
    then *replaced*, never merged, so a mount never trusts two clusters' keys). The keys are
    exactly the cluster's JWKS, so re-running picks up a rotation: during the overlap the JWKS
    holds the old and the new key, and so does the mount.
    """
    mount = conn.auth_mount
    steps = result.steps
    progress(f"reading auth/{mount} on the vault")
    existing = _auth_table(client).get(mount)
    record = None
    current: dict[str, Any] | None = None
    if existing is not None:
        mtype = str(existing.get("type", ""))
        if not is_auth_type(mtype, JWT_AUTH_TYPE):
            raise OperationError(
                f"auth/{mount} is a {mtype!r} auth method, not jwt; choose another --auth-mount "
                "(one jwt mount per cluster)"
            )
        record = _Record.parse(str(existing.get("description") or ""))
        current = client.read(f"auth/{mount}/config") or None
        if record is not None and record.cluster_id != conn.cluster_id and not options.force:
            raise OperationError(
                f"auth/{mount} already holds the signing keys of another cluster "
                f"({record.cluster}, kube-system UID {record.cluster_id}); a jwt mount serves "
                "exactly one cluster (several clusters share issuers and ServiceAccount names, "
                "so one mount would let a pod of one log in as the other's): pass --auth-mount "
                "NAME (and record it in the plan's metadata.authMount), or --force to re-point "
                "it at this cluster"
            )
        if record is None and current and not options.force:
            raise OperationError(
                f"auth/{mount} is already configured but not by cloudtaser target connect; "
                "pass --auth-mount NAME for a mount of this cluster's own, or --force to take "
                "it over"
            )
    desired = _desired_jwt_config(conn)
    diffs = _jwt_config_differences(current, desired)
    if record is not None and (
        record.cluster_id != conn.cluster_id or record.auth != conn.auth_method
    ):
        diffs.append("re-pointed at this cluster")
    steps.append(
        Step(
            "vault",
            "auth-mount",
            f"auth/{mount}",
            Action.CREATE if existing is None else Action.UNCHANGED,
            JWT_AUTH_TYPE if existing is None else "",
        )
    )
    if not diffs and record is not None:
        steps.append(Step("vault", "auth-config", f"auth/{mount}/config", Action.UNCHANGED))
        return
    detail = ", ".join(diffs) or "record"
    action = Action.CREATE if not current else Action.UPDATE
    steps.append(Step("vault", "auth-config", f"auth/{mount}/config", action, detail))
    if options.dry_run:
        return
    new_record = _Record(
        cluster=conn.cluster,
        cluster_id=conn.cluster_id,
        reviewer="none",
        expires=None,
        auth=AuthMethod.JWT,
    )
    if existing is None:
        progress(f"enabling the jwt auth method at auth/{mount}")
        client.enable_auth(mount, JWT_AUTH_TYPE, description=new_record.render())
    else:  # the record first: should the config write fail, the cluster the mount served
        # before cannot silently take it back (its connect is refused), and a re-run completes
        client.write(
            f"sys/auth/{mount}/tune", {"description": new_record.render()}, idempotent=True
        )
    progress(f"writing auth/{mount}/config ({detail})")
    # a full write: whatever the config held before (a discovery or JWKS URL) is gone
    reply = client.write(f"auth/{mount}/config", desired, idempotent=True)
    result.warnings.extend(reply.warnings)


def _selftest_role_fields(conn: ClusterConnection, namespace: str) -> dict[str, Any]:
    if conn.auth_method is AuthMethod.JWT:
        return jwt_role_binding(namespace, [SELFTEST_SERVICE_ACCOUNT], SELFTEST_AUDIENCE) | {
            "token_policies": [],
            "token_no_default_policy": True,
            "token_type": "batch",
            "token_ttl": 60,
            "token_max_ttl": 60,
        }
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
        elif isinstance(value, dict):  # bound_claims
            if claims_normalised(have) != claims_normalised(value):
                return False
        elif key == "token_type":
            if str(have) != value:
                return False
        elif have != value:
            return False
    return (current.get("audience") or "") == (desired.get("audience") or "")
