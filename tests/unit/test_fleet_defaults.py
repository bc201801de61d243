"""Cluster defaults (issue 31): what install records and passes to the injector, and what
protect then writes (pure, no server). The real path is tests/integration/test_fleet_defaults.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

import cloudtaser.target.annotations as ann
from cloudtaser import contract
from cloudtaser.contract import ContractError, InjectorDefaults
from cloudtaser.errors import ConfigError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from cloudtaser.target.install import manifests

VAULT = "https://vault.corp:8200"
EU = InjectorDefaults.parse(
    address=VAULT, auth_mount="auth/jwt-eu", auth_method="jwt", namespace="/eu/prod/"
)
CLUSTER_KEYS = (
    contract.VAULT_ADDRESS,
    contract.AUTH_PATH,
    contract.AUTH_METHOD,
    contract.VAULT_NAMESPACE,
)


def _plan(*, auth_mount: str | None = None, auth_method: str | None = None) -> MigrationPlan:
    workload = Workload(
        kind="Deployment",
        name="api",
        secrets=[SecretRef(source="db", vault_path="secret/data/shop/db", fields={"pw": "DB_PW"})],
    )
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="shop", auth_mount=auth_mount, auth_method=auth_method),  # type: ignore[arg-type]
        tenants=[Tenant(name="shop", namespace="shop", workloads=[workload])],
    )


def _build(plan: MigrationPlan, address: str | None, **kw: Any) -> dict[str, str]:
    tenant = plan.tenants[0]
    return ann.build_annotations(plan, tenant, tenant.workloads[0], address, **kw)


def test_defaults_are_normalised_with_the_annotation_rules() -> None:
    assert EU.to_json() == {
        "address": VAULT,
        "authMethod": "jwt",
        "authMount": "jwt-eu",
        "namespace": "eu/prod",
    }
    for bad in (
        {"address": "https://u:p@vault"},
        {"auth_mount": "auth/sys"},
        {"auth_method": "token"},
        {"namespace": "eu/../x"},
        {"namespace": "root"},
    ):
        with pytest.raises(ContractError):
            InjectorDefaults.parse(**bad)


def test_the_recorded_annotation_reads_back_and_a_tampered_one_is_refused() -> None:
    objects = manifests.build_objects(
        manifests.InstallOptions(
            image="reg/rt:1", allowed_vault_addresses=(VAULT,), audience="vault", defaults=EU
        ).validated()
    )
    mwc = next(o for o in objects if o["kind"] == "MutatingWebhookConfiguration")
    raw = mwc["metadata"]["annotations"][contract.INJECTOR_DEFAULTS]
    assert raw == json.dumps(EU.to_json(), separators=(",", ":"), sort_keys=True)
    assert contract.parse_injector_defaults(raw) == EU
    for tampered in ('{"address": 1}', '{"other": "x"}', "[]", "{", '{"namespace": "a b"}'):
        with pytest.raises(ContractError):
            contract.parse_injector_defaults(tampered)


def test_install_passes_the_defaults_as_inject_flags_and_reads_them_back() -> None:
    opts = manifests.InstallOptions(
        image="reg/rt:1",
        allowed_vault_addresses=(VAULT,),
        audience="vault",
        defaults=EU,
        jwt_token_expiration=900,
    ).validated()
    args = manifests.inject_args(opts)
    tail = args[args.index("--default-vault-address") :]
    assert tail == [
        "--default-vault-address", VAULT, "--default-auth-method", "jwt",
        "--default-auth-path", "auth/jwt-eu", "--default-vault-namespace", "eu/prod",
        "--jwt-token-expiration", "900",
    ]  # fmt: skip
    assert manifests.defaults_from_args(args) == EU
    plain = manifests.InstallOptions(
        image="reg/rt:1", allowed_vault_addresses=(VAULT,), audience="vault"
    ).validated()
    assert not any(a.startswith("--default-") for a in manifests.inject_args(plain))
    mwc = next(
        o for o in manifests.build_objects(plain) if o["kind"] == "MutatingWebhookConfiguration"
    )
    assert "annotations" not in mwc["metadata"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"defaults": InjectorDefaults.parse(address="https://other:8200")}, "must itself be"),
        ({"jwt_token_expiration": 599}, "--jwt-token-expiration"),
        ({"jwt_token_expiration": 2**32 + 1}, "--jwt-token-expiration"),
    ],
)
def test_bad_defaults_are_a_config_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        manifests.InstallOptions(
            image="reg/rt:1", allowed_vault_addresses=(VAULT,), audience="vault", **change
        ).validated()


def test_without_defaults_protect_writes_every_value_the_pods_need() -> None:
    built = _build(_plan(auth_mount="jwt-eu", auth_method="jwt"), VAULT, vault_namespace="eu")
    assert {k: built.get(k) for k in CLUSTER_KEYS} == {
        contract.VAULT_ADDRESS: VAULT,
        contract.AUTH_PATH: "auth/jwt-eu",
        contract.AUTH_METHOD: "jwt",
        contract.VAULT_NAMESPACE: "eu",
    }
    # the defaults of the built-in injector are still not written
    assert not set(CLUSTER_KEYS[1:]) & set(_build(_plan(), VAULT))


def test_with_matching_defaults_protect_writes_nothing_cluster_specific() -> None:
    plan = _plan(auth_mount="jwt-eu", auth_method="jwt")
    for address in (VAULT, None):  # given and equal, or left to the injector
        built = _build(plan, address, defaults=EU)
        assert not set(CLUSTER_KEYS) & set(built), built
        assert set(built) == {
            contract.INJECT, contract.VAULT_ROLE, contract.SECRET_PATHS, contract.ENV_MAP,
        }  # fmt: skip
    written, left = ann.cluster_annotations(plan, None, defaults=EU)
    assert (written, left) == ({}, ["address", "authMethod", "authMount", "namespace"])
    # and what the injector will make of it is what the plan needs (the shared contract)
    parsed = contract.parse_annotations(_build(plan, None, defaults=EU), EU)
    assert (parsed["address"], parsed["authMount"], parsed["authMethod"]) == (
        VAULT,
        "jwt-eu",
        "jwt",
    )
    assert parsed["namespace"] == "eu/prod"


def test_a_value_that_differs_from_the_default_is_written_so_the_pod_overrides_it() -> None:
    plan = _plan()  # auth/kubernetes, kubernetes method: not what the injector defaults to
    built = _build(plan, "https://vault.corp:8200", defaults=EU, vault_namespace="team-a")
    assert {k: built.get(k) for k in CLUSTER_KEYS} == {
        contract.VAULT_ADDRESS: None,  # the same address as the default: left out
        contract.AUTH_PATH: "auth/kubernetes",
        contract.AUTH_METHOD: "kubernetes",
        contract.VAULT_NAMESPACE: "team-a",
    }
    parsed = contract.parse_annotations(built, EU)
    assert (parsed["authMount"], parsed.get("authMethod"), parsed["namespace"]) == (
        "kubernetes",
        None,
        "team-a",
    )


def test_no_address_anywhere_is_refused() -> None:
    with pytest.raises(ann.AnnotationError, match="--vault-address"):
        _build(_plan(), None)
    with pytest.raises(ann.AnnotationError, match="--vault-address"):
        _build(_plan(), None, defaults=InjectorDefaults.parse(auth_method="jwt"))
