"""The connection file of the split form (credential-free unless a reviewer token is asked for):
write atomically, read strictly.

The file is loaded like the plan: yaml-rs through :func:`cloudtaser.plan.yamlio.parse_mapping`
(no anchors, aliases or duplicate keys), then msgspec into :class:`ConnectionFile` (unknown
fields refused, errors with their location, ``$.reviewer.mode``), then the same value rules
``target connect`` applies to its flags. It is written with the plan's emitter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

import msgspec

from cloudtaser.config import warn_if_exposed
from cloudtaser.connect.model import (
    _JWT,
    FILE_API_VERSION,
    FILE_KIND,
    AuthMethod,
    ClusterConnection,
    ReviewerMode,
    _iso,
    _parse_time,
    _record_value,
    _validate_ca,
    _validate_host,
    _validate_issuer,
    validate_auth_mount,
    validate_public_keys,
)
from cloudtaser.errors import ConfigError, PlanError
from cloudtaser.fileio import atomic_write
from cloudtaser.plan.yamlio import convert, emit, parse_mapping

__all__ = [
    "ConnectionFile",
    "FileMetadata",
    "FileReviewer",
    "read_connection_file",
    "write_connection_file",
]

#: A connection file is a few kilobytes; anything past this is not one.
MAX_FILE_BYTES: Final = 1024 * 1024
_CLUSTER_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_SERVICE_ACCOUNT = re.compile(r"[a-z0-9-]{1,63}/[a-z0-9.-]{1,253}")
_MAX_JWT: Final = 16384


class _Base(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """The conventions of the plan's Structs (:mod:`cloudtaser.plan.model`)."""


class FileMetadata(_Base, kw_only=True):
    """Which cluster the file describes, and who wrote it when."""

    cluster: str
    #: The UID of the cluster's ``kube-system`` namespace.
    cluster_id: str
    created_at: str | None = None
    created_by: str | None = None


class FileReviewer(_Base, kw_only=True):
    """Which JWT the vault presents to the TokenReview API."""

    mode: ReviewerMode
    #: ``namespace/name`` of the reviewer ServiceAccount (token mode).
    service_account: str | None = None
    #: The reviewer token (token mode, ``--include-reviewer-token`` only): a credential.
    token: str | None = None
    expires_at: str | None = None

    def __repr__(self) -> str:
        shown = "<redacted>" if self.token else None
        return f"FileReviewer(mode={self.mode!r}, token={shown})"


class ConnectionFile(_Base, kw_only=True):
    """The file ``target connect --export`` writes and ``source connect --import`` reads."""

    api_version: str
    kind: str
    metadata: FileMetadata
    auth_mount: str
    #: ``kubernetes`` (absent) or ``jwt``.
    auth_method: AuthMethod | None = None
    #: ``kubernetes`` only: the API server as the vault reaches it, and its CA.
    kubernetes_host: str | None = None
    kubernetes_ca_cert: str | None = None
    #: Where the CA came from: ``kubeconfig``, ``configmap`` or ``file``.
    ca_source: str | None = None
    #: ``kubernetes`` only.
    reviewer: FileReviewer | None = None
    issuer: str | None = None
    #: ``jwt`` only: the cluster's public signing keys (PEM), from ``/openid/v1/jwks``.
    jwt_validation_pubkeys: list[str] | None = None


def connection_document(conn: ClusterConnection) -> ConnectionFile:
    """The document of a connection file (the token only if ``conn`` carries one; in jwt mode
    only the cluster's identity, issuer and public keys)."""
    if conn.auth_method is AuthMethod.JWT:
        return ConnectionFile(
            api_version=FILE_API_VERSION,
            kind=FILE_KIND,
            metadata=_file_metadata(conn),
            auth_mount=conn.auth_mount,
            auth_method=AuthMethod.JWT,
            issuer=conn.issuer,
            jwt_validation_pubkeys=list(conn.jwt_keys),
        )
    return ConnectionFile(
        api_version=FILE_API_VERSION,
        kind=FILE_KIND,
        metadata=_file_metadata(conn),
        auth_mount=conn.auth_mount,
        kubernetes_host=conn.kubernetes_host,
        kubernetes_ca_cert=conn.kubernetes_ca_pem,
        ca_source=conn.ca_source,
        reviewer=FileReviewer(
            mode=conn.reviewer_mode,
            service_account=conn.reviewer or None,
            token=conn.reviewer_token or None,
            expires_at=_iso(conn.reviewer_expires) if conn.reviewer_expires else None,
        ),
        issuer=conn.issuer or None,
    )


def _file_metadata(conn: ClusterConnection) -> FileMetadata:
    return FileMetadata(
        cluster=conn.cluster,
        cluster_id=conn.cluster_id,
        created_at=_iso(conn.created_at) if conn.created_at else None,
        created_by=conn.created_by or None,
    )


_HEADER = """\
# cloudtaser cluster connection: hand this file to the vault side and run
#   cloudtaser source connect --import FILE
# It holds {what}{cred}.
"""


def write_connection_file(path: str | os.PathLike[str], conn: ClusterConnection) -> None:
    """Write atomically (temp file, fsync, rename), mode 0600."""
    cred = (
        " and a REVIEWER TOKEN (a credential: keep it secret, delete it after import)"
        if conn.reviewer_token
        else ", and no credential"
    )
    what = (
        "the cluster's token issuer and public signing keys (jwt auth)"
        if conn.auth_method is AuthMethod.JWT
        else "the cluster's API address and CA"
    )
    text = _HEADER.format(what=what, cred=cred) + emit(
        msgspec.to_builtins(connection_document(conn))
    )
    try:
        atomic_write(path, text.encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def read_connection_file(path: str | os.PathLike[str]) -> ClusterConnection:
    """Read and validate a connection file; every problem is one :class:`ConfigError`."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read connection file {where}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: too large for a connection file")
    try:
        data = parse_mapping(text, source=where, kind=FILE_KIND, what="a connection file")
        if data.get("apiVersion") != FILE_API_VERSION or data.get("kind") != FILE_KIND:
            raise ConfigError(
                f"{where}: expected apiVersion {FILE_API_VERSION} and kind {FILE_KIND} (written "
                "by 'cloudtaser target connect --export')"
            )
        doc = convert(data, ConnectionFile, source=where)
    except PlanError as exc:  # the plan's loader: same messages, a connection file's error
        raise ConfigError(str(exc)) from None
    try:
        return _connection(doc, path)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


def _connection(doc: ConnectionFile, path: str | os.PathLike[str]) -> ClusterConnection:
    """The connection a well-formed file describes, after the value rules ``target connect``
    applies to its flags (mount, host, CA, issuer)."""
    where = str(path)
    meta, reviewer = doc.metadata, doc.reviewer
    cluster_id = _non_blank(meta.cluster_id, "metadata.clusterId", where)
    if not _CLUSTER_ID.fullmatch(cluster_id):
        raise ConfigError(f"{where}: metadata.clusterId is not a UID")
    if doc.auth_method is AuthMethod.JWT:
        return _jwt_connection(doc, where, cluster_id)
    if reviewer is None or doc.kubernetes_host is None or doc.kubernetes_ca_cert is None:
        raise ConfigError(
            f"{where}: a kubernetes connection needs kubernetesHost, kubernetesCaCert and reviewer"
        )
    if doc.jwt_validation_pubkeys is not None:
        raise ConfigError(f"{where}: jwtValidationPubkeys is only allowed with authMethod jwt")
    if reviewer.mode is ReviewerMode.NONE:
        raise ConfigError(f"{where}: reviewer mode 'none' is only for authMethod jwt")
    token = reviewer.token
    if token is not None:
        warn_if_exposed(path, "the connection file (it holds a reviewer token)")
        if reviewer.mode is not ReviewerMode.TOKEN:
            raise ConfigError(f"{where}: reviewer.token is only allowed with mode 'token'")
        if len(token) > _MAX_JWT or not _JWT.fullmatch(token):
            raise ConfigError(f"{where}: reviewer.token is not a JWT")
    account = reviewer.service_account
    if account is not None and not _SERVICE_ACCOUNT.fullmatch(account):
        raise ConfigError(f"{where}: reviewer.serviceAccount must be NAMESPACE/NAME")
    return ClusterConnection(
        cluster=_record_value(_non_blank(meta.cluster, "metadata.cluster", where)),
        cluster_id=cluster_id,
        auth_mount=validate_auth_mount(_non_blank(doc.auth_mount, "authMount", where)),
        kubernetes_host=_validate_host(_non_blank(doc.kubernetes_host, "kubernetesHost", where)),
        kubernetes_ca_pem=_validate_ca(
            _non_blank(doc.kubernetes_ca_cert, "kubernetesCaCert", where),
            f"{where}: kubernetesCaCert",
        ),
        reviewer_mode=reviewer.mode,
        issuer=_validate_issuer(doc.issuer) if doc.issuer else None,
        reviewer=account,
        reviewer_token=token,
        reviewer_expires=_parse_time(reviewer.expires_at),
        ca_source=(doc.ca_source or "file")[:32],
        created_at=_parse_time(meta.created_at),
        created_by=_record_value(meta.created_by or "") or None,
    )


def _jwt_connection(doc: ConnectionFile, where: str, cluster_id: str) -> ClusterConnection:
    """A jwt connection: identity, issuer and public keys, nothing that reaches the cluster."""
    extra = [
        name
        for name, value in (
            ("kubernetesHost", doc.kubernetes_host),
            ("kubernetesCaCert", doc.kubernetes_ca_cert),
            ("caSource", doc.ca_source),
            ("reviewer", doc.reviewer),
        )
        if value is not None
    ]
    if extra:
        raise ConfigError(
            f"{where}: {', '.join(extra)} not allowed with authMethod jwt (the vault never "
            "reaches the cluster)"
        )
    if not doc.issuer or not doc.jwt_validation_pubkeys:
        raise ConfigError(f"{where}: authMethod jwt needs issuer and jwtValidationPubkeys")
    meta = doc.metadata
    return ClusterConnection(
        cluster=_record_value(_non_blank(meta.cluster, "metadata.cluster", where)),
        cluster_id=cluster_id,
        auth_mount=validate_auth_mount(_non_blank(doc.auth_mount, "authMount", where)),
        kubernetes_host="",
        kubernetes_ca_pem="",
        reviewer_mode=ReviewerMode.NONE,
        issuer=_validate_issuer(doc.issuer),
        auth_method=AuthMethod.JWT,
        jwt_keys=validate_public_keys(doc.jwt_validation_pubkeys, "jwtValidationPubkeys"),
        ca_source="",
        created_at=_parse_time(meta.created_at),
        created_by=_record_value(meta.created_by or "") or None,
    )


def _non_blank(value: str, name: str, where: str) -> str:
    if not value.strip():
        raise ConfigError(f"{where}: {name} must be a non-empty string")
    return value
