"""Pure parts of target connect: option validation, the description record, config comparison,
and the connection file (write/read round trip, strict reading). No server needed."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloudtaser.connect import (
    ClusterConnection,
    ConnectOptions,
    ReviewerMode,
    read_connection_file,
    validate_auth_mount,
    write_connection_file,
)
from cloudtaser.connect.model import _Record
from cloudtaser.connect.vault import _config_differences, _desired_config
from cloudtaser.errors import ConfigError


def _ca_pem() -> str:
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "unit-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CA = _ca_pem()


def _conn(**kw: object) -> ClusterConnection:
    base: dict[str, object] = {
        "cluster": "prod-eu",
        "cluster_id": "0ad50c05-1153-4508-9237-4cb2912e2c23",
        "auth_mount": "k8s-prod",
        "kubernetes_host": "https://10.0.0.1:6443",
        "kubernetes_ca_pem": CA,
        "reviewer_mode": ReviewerMode.CLIENT_JWT,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    base.update(kw)
    return ClusterConnection(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [("kubernetes", "kubernetes"), ("auth/k8s-prod/", "k8s-prod"), ("k8s/eu-1", "k8s/eu-1")],
)
def test_auth_mount_is_normalised(given: str, expected: str) -> None:
    assert validate_auth_mount(given) == expected


@pytest.mark.parametrize("bad", ["", "../sys", "a/../b", "token", "sys/x", "a b", "x*", 'a"b'])
def test_unsafe_or_reserved_auth_mounts_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError):
        validate_auth_mount(bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kubernetes_host", "http://10.0.0.1:6443", "https URL"),
        ("kubernetes_host", "https://user:pw@h:6443", "credentials"),
        ("reviewer_token_ttl", 60, "10 minutes"),
        ("namespace", "Not_A_Label", "DNS label"),
        ("kubernetes_ca_pem", "hello", "no PEM certificate"),
    ],
)
def test_options_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConnectOptions(**{field: value}).validated()  # type: ignore[arg-type]


def test_record_round_trip_and_foreign_descriptions() -> None:
    expires = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    record = _Record("prod;eu=1", "uid-1", "token:cloudtaser-system/rev", expires)
    parsed = _Record.parse(record.render())
    assert parsed == _Record("prod_eu_1", "uid-1", "token:cloudtaser-system/rev", expires)
    assert _Record.parse("enabled by hand") is None
    assert _Record.parse("cloudtaser target connect; cluster=x") is None


def test_config_comparison_ignores_pem_whitespace_and_sees_real_changes() -> None:
    conn = _conn()
    desired = _desired_config(conn)
    current = {**desired, "kubernetes_ca_cert": CA.replace("\n", "\r\n") + "\n"}
    assert _config_differences(current, desired) == []
    assert _config_differences(None, desired) == ["not configured"]
    moved = {**current, "kubernetes_host": "https://10.0.0.2:6443"}
    assert _config_differences(moved, desired) == ["kubernetes_host"]
    assert _config_differences({**current, "pem_keys": ["k"]}, desired)


def test_connection_file_round_trip_without_credential(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    write_connection_file(path, _conn())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "no credential" in text
    assert "token:" not in text
    back = read_connection_file(path)
    assert back.kubernetes_host == "https://10.0.0.1:6443"
    assert back.reviewer_mode is ReviewerMode.CLIENT_JWT
    assert back.reviewer_token is None
    assert back.cluster_id == _conn().cluster_id


def test_connection_file_with_token_keeps_it_out_of_repr(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    conn = _conn(
        reviewer_mode=ReviewerMode.TOKEN,
        reviewer="cloudtaser-system/cloudtaser-token-reviewer",
        reviewer_token=jwt,
        reviewer_expires=datetime(2026, 1, 3, tzinfo=UTC),
    )
    write_connection_file(path, conn)
    assert "REVIEWER TOKEN" in path.read_text()
    back = read_connection_file(path)
    assert back.reviewer_token == jwt
    assert jwt not in repr(back)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "MigrationPlan"}, "expected apiVersion"),
        ({"surprise": 1}, "unknown field"),
        ({"authMount": "../sys"}, "safe mount path"),
        ({"kubernetesHost": "https://h:6443/?x=1"}, "query"),
        ({"kubernetesCaCert": "not a cert"}, "PEM"),
        ({"reviewer": {"mode": "client-jwt", "token": "a.b.c"}}, "only allowed"),
        ({"reviewer": {"mode": "token", "token": "not a jwt"}}, "not a JWT"),
        ({"reviewer": {"mode": "magic"}}, "reviewer.mode"),
        ({"metadata": {"cluster": "x", "clusterId": "a b"}}, "clusterId"),
    ],
)
def test_tampered_connection_files_are_rejected(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "c.yaml"
    write_connection_file(path, _conn())
    doc = yaml.safe_load(path.read_text())
    doc.update(change)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        read_connection_file(path)


def test_plan_selection_takes_the_plans_mount_and_active_service_accounts() -> None:
    from cloudtaser import plan as planlib
    from cloudtaser.connect import plan_selection

    plan = planlib.loads(
        """\
apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata: {name: prod, authMount: k8s-prod}
tenants:
- name: a
  namespace: a
  workloads:
  - {kind: Deployment, name: api, serviceAccount: api,
     secrets: [{source: db, vaultPath: secret/data/a/db, fields: {pw: PW}}]}
  - {kind: Deployment, name: web,
     secrets: [{source: db, vaultPath: secret/data/a/db, fields: {pw: PW2}}]}
  - {kind: Deployment, name: old, serviceAccount: old, status: skipped,
     secrets: [{source: db, vaultPath: secret/data/a/db}]}
"""
    )
    assert plan_selection(plan, None) == ("k8s-prod", (("a", "api"), ("a", "default")))
    assert plan_selection(plan, "k8s-prod")[0] == "k8s-prod"
    with pytest.raises(ConfigError, match="differs from the plan"):
        plan_selection(plan, "other")
