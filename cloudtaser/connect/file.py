"""The connection file of the split form (credential-free unless a reviewer token is asked for):
write atomically, read strictly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.config import warn_if_exposed
from cloudtaser.errors import (
    ConfigError,
)
from cloudtaser.fileio import atomic_write

if TYPE_CHECKING:
    pass

from cloudtaser.connect.model import (
    _JWT,
    FILE_API_VERSION,
    FILE_KIND,
    ClusterConnection,
    ReviewerMode,
    _iso,
    _parse_time,
    _record_value,
    _validate_ca,
    _validate_host,
    _validate_issuer,
    validate_auth_mount,
)

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
    try:
        atomic_write(path, text.encode("utf-8"), mode=0o600)
    except OSError as exc:
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
