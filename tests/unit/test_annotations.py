"""The pod-template annotation contract: builder and parsers (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

import cloudtaser.target.annotations as ann
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload


def _plan(
    *, auth_mount: str | None = None, secrets: list[SecretRef] | None = None
) -> MigrationPlan:
    workload = Workload(
        kind="Deployment",
        name="api",
        secrets=secrets
        if secrets is not None
        else [
            SecretRef(
                source="db",
                vault_path="secret/data/payments/db",
                fields={"password": "PGPASSWORD", "username": "PGUSER"},
            ),
            SecretRef(
                source="stripe",
                vault_path="secret/data/payments/stripe",
                fields={"api_key": "API_KEY"},
            ),
        ],
    )
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="prod-eu", auth_mount=auth_mount),
        tenants=[Tenant(name="payments", namespace="payments", workloads=[workload])],
    )


def _build(plan: MigrationPlan, address: str = "https://vault.example.com:8200") -> dict[str, str]:
    tenant = plan.tenants[0]
    return ann.build_annotations(plan, tenant, tenant.workloads[0], address)


def test_build_annotations_writes_the_documented_keys_and_formats() -> None:
    built = _build(_plan())
    assert built == {
        "cloudtaser.io/inject": "true",
        "cloudtaser.io/vault-address": "https://vault.example.com:8200",
        "cloudtaser.io/vault-role": "cloudtaser-prod-eu-payments",
        "cloudtaser.io/secret-paths": "secret/data/payments/db,secret/data/payments/stripe",
        "cloudtaser.io/env-map": "password=PGPASSWORD,username=PGUSER;api_key=API_KEY",
    }
    assert ann.RESTARTED_AT not in built


def test_auth_path_written_only_for_a_non_default_mount() -> None:
    assert ann.AUTH_PATH not in _build(_plan(auth_mount="kubernetes"))
    assert _build(_plan(auth_mount="k8s-prod-eu"))[ann.AUTH_PATH] == "auth/k8s-prod-eu"


def test_secrets_without_fields_are_left_out_keeping_paths_and_groups_aligned() -> None:
    plan = _plan(
        secrets=[
            SecretRef(source="empty", vault_path="secret/data/x/empty", fields={}),
            SecretRef(source="db", vault_path="secret/data/x/db", fields={"pw": "PW"}),
        ]
    )
    built = _build(plan)
    assert built[ann.SECRET_PATHS] == "secret/data/x/db"
    assert built[ann.ENV_MAP] == "pw=PW"


def test_a_workload_with_nothing_to_inject_is_refused() -> None:
    with pytest.raises(ann.AnnotationError, match="nothing to inject"):
        _build(_plan(secrets=[SecretRef(source="e", vault_path="secret/data/e", fields={})]))


@pytest.mark.parametrize(
    "address", ["ftp://x", "https://a b", "https://x,y", "https://x;y", "https://x\n"]
)
def test_unsafe_vault_addresses_never_reach_an_annotation(address: str) -> None:
    with pytest.raises(ann.AnnotationError):
        _build(_plan(), address)


def test_parsers_invert_the_builder() -> None:
    built = _build(_plan())
    mapping = ann.parse_mapping(built[ann.SECRET_PATHS], built[ann.ENV_MAP])
    assert mapping == [
        ("secret/data/payments/db", {"password": "PGPASSWORD", "username": "PGUSER"}),
        ("secret/data/payments/stripe", {"api_key": "API_KEY"}),
    ]


def test_parse_env_map_reads_the_crd_example_and_tolerates_blanks() -> None:
    assert ann.parse_env_map("password=PGPASSWORD,username=PGUSER;api_key=API_KEY") == [
        {"password": "PGPASSWORD", "username": "PGUSER"},
        {"api_key": "API_KEY"},
    ]
    assert ann.parse_env_map(" a = A , b=B ; c=C ") == [{"a": "A", "b": "B"}, {"c": "C"}]
    assert ann.parse_env_map("") == []
    assert ann.parse_secret_paths(" secret/data/a , secret/data/b ") == [
        "secret/data/a",
        "secret/data/b",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("password", "not a field=ENV_VAR pair"),
        ("a=A,,b=B", "not a field=ENV_VAR pair"),
        ("a=1$BAD", "environment variable"),
        ("a=A,a=B", "given twice"),
        ("a=A;b=A", "fed twice"),
        ("../x=A", "field name"),
    ],
)
def test_parse_env_map_rejects_malformed_values(value: str, message: str) -> None:
    with pytest.raises(ann.AnnotationError, match=message):
        ann.parse_env_map(value)


@pytest.mark.parametrize(
    "value", ["secret/data/../x", "secret/meta/x", "secret/data/*", "secret/data/a b", "/x"]
)
def test_parse_secret_paths_rejects_unsafe_paths(value: str) -> None:
    with pytest.raises(ann.AnnotationError):
        ann.parse_secret_paths(value)


def test_parse_mapping_requires_one_group_per_path() -> None:
    with pytest.raises(ann.AnnotationError, match="one to one"):
        ann.parse_mapping("secret/data/a,secret/data/b", "x=X")


def test_matches_intended_ignores_the_restart_marker_but_not_stale_keys() -> None:
    intended = _build(_plan())
    live = {**intended, ann.RESTARTED_AT: "2020-01-01T00:00:00Z", "other/annotation": "kept"}
    assert ann.matches_intended(live, intended)
    assert not ann.matches_intended({**live, ann.VAULT_ADDRESS: "https://other"}, intended)
    assert not ann.matches_intended({**live, ann.AUTH_PATH: "auth/old"}, intended)
    assert not ann.matches_intended(None, intended)


def test_restart_marker_is_rfc3339_utc() -> None:
    at = datetime(2026, 1, 2, 4, 4, 5, 123, tzinfo=timezone(timedelta(hours=1)))
    assert ann.restart_marker(at) == "2026-01-02T03:04:05Z"
    assert ann.restart_marker().endswith("Z")
    assert datetime.now(UTC).year >= 2024
