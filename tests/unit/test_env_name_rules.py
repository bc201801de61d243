"""Issue 30, item 6: environment variable names follow the cluster's rule (``metadata.
envNameRule``), so envFrom keys such as ``tls.crt`` that the kubelet passes are mapped, verified
and delivered like any other field; names the env-map annotation cannot carry are refused with
the reason. The vectors at and over every limit are ``spec/contract/rules.json``
(``test_contract_rules.py``, and ``go test`` for names.go)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.contract import ContractError
from cloudtaser.errors import PlanError
from cloudtaser.plan import WorkloadKind, WorkloadStatus, rules
from cloudtaser.target.discover.build import DiscoveryResult, build_plan
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.engine.consumption import live_triples

NOW = datetime(2026, 5, 16, 10, 0, 0, tzinfo=UTC)
TLS_KEYS = ("ca.crt", "tls.crt", "tls.key")


@pytest.mark.parametrize(
    ("major", "minor", "rule"),
    [
        ("1", "31", "kubernetes"),
        ("1", "32", "relaxed"),
        ("1", "34", "relaxed"),
        ("1", "36", "relaxed"),
        ("1", "33+", "relaxed"),  # managed clusters report "33+"
        ("1", "29", "kubernetes"),
        ("", "", "kubernetes"),
        ("2", "0", "relaxed"),
    ],
)
def test_the_rule_follows_the_api_servers_version(major: str, minor: str, rule: str) -> None:
    assert rules.env_name_rule_for(major, minor) == rule


@pytest.mark.parametrize(
    ("name", "identifier", "kubernetes", "relaxed"),
    [
        ("DB_PASSWORD", True, True, True),
        ("tls.crt", False, True, True),
        ("config-json", False, True, True),
        ("1password", False, False, True),
        ("..data", False, False, True),
        ("my var", False, False, True),
        ("a,b", False, False, False),
        ("a;b", False, False, False),
        ("a=b", False, False, False),
        ("a$(B)", False, False, False),
        (" lead", False, False, False),
        ("A" * rules.MAX_ENV_VAR, True, True, True),
        ("A" * (rules.MAX_ENV_VAR + 1), False, False, False),
    ],
)
def test_each_rule_at_and_over_its_limits(
    name: str, identifier: bool, kubernetes: bool, relaxed: bool
) -> None:
    got = [rules.is_env_name(name, rule) for rule in rules.ENV_NAME_RULES]
    assert got == [identifier, kubernetes, relaxed]


def test_an_uncarriable_name_says_why() -> None:
    problem = rules.env_name_problem("A,tls.crt", "relaxed")
    assert problem is not None
    assert "env-map annotation cannot carry it" in problem


def _plan(rule: str | None, env: str) -> str:
    meta = f"  envNameRule: {rule}\n" if rule else ""
    return (
        "apiVersion: cloudtaser.io/v1\nkind: MigrationPlan\nmetadata:\n  name: p\n"
        f"{meta}tenants:\n- name: web\n  namespace: web\n  workloads:\n"
        "  - kind: Deployment\n    name: ingress\n    secrets:\n    - source: tls\n"
        "      vaultPath: secret/data/web/tls\n      via: envFrom\n"
        f"      fields:\n        tls.crt: '{env}'\n"
    )


def test_a_plan_maps_tls_crt_only_under_a_rule_that_passes_it() -> None:
    loaded = planlib.loads(_plan("relaxed", "tls.crt"))
    assert loaded.metadata.env_name_rule == "relaxed"
    assert planlib.loads(_plan("kubernetes", "tls.crt")).tenants[0].workloads[0].secrets
    with pytest.raises(PlanError, match=r"fields\.tls\.crt.*portable identifier"):
        planlib.loads(_plan(None, "tls.crt"))  # a plan without the field: the old rule


def test_a_plan_refuses_a_name_its_rule_refuses_or_the_annotation_cannot_carry() -> None:
    with pytest.raises(PlanError, match="not a Kubernetes environment variable name"):
        planlib.loads(_plan("kubernetes", "1password"))
    with pytest.raises(PlanError):
        planlib.loads(_plan("relaxed", "a,b"))  # the schema's pattern already refuses it
    with pytest.raises(PlanError):
        planlib.loads(_plan("strict", "tls.crt"))  # not a rule


def _ingress(env_from: list[dict[str, Any]]) -> ScannedWorkload:
    """ingress-nginx-like: the controller reads its TLS Secret with envFrom."""
    container = {"name": "controller", "envFrom": env_from}
    template = {"metadata": {}, "spec": {"containers": [container]}}
    return ScannedWorkload("ingress", WorkloadKind.DEPLOYMENT, "controller", template, 1)


def _build(workload: ScannedWorkload, env_names: Any) -> DiscoveryResult:
    lookup = SecretLookup(keys={("ingress", "tls"): TLS_KEYS}, env_names=env_names)
    return build_plan(
        [workload],
        lookup,
        options=DiscoverOptions(now=NOW),
        plan_name="p",
        cluster="https://k",
    )


def test_discover_maps_every_key_the_cluster_passes_and_records_its_rule() -> None:
    result = _build(_ingress([{"secretRef": {"name": "tls"}}]), "relaxed")
    (_tenant, workload) = next(result.plan.iter_workloads())
    assert result.plan.metadata.env_name_rule == "relaxed"
    assert workload.effective_status is WorkloadStatus.PENDING
    assert workload.secrets[0].fields == {k: k for k in TLS_KEYS}
    assert workload.secrets[0].note is None
    # the plan round-trips through the loader (every command's check)
    assert planlib.loads(planlib.dumps(result.plan)) == result.plan


def test_discover_without_the_clusters_rule_keeps_the_old_portable_rule() -> None:
    # (the old code's behaviour: the Secret can then never go, finalize refuses the envFrom)
    result = _build(_ingress([{"secretRef": {"name": "tls"}}]), None)
    (_tenant, workload) = next(result.plan.iter_workloads())
    assert result.plan.metadata.env_name_rule is None
    assert workload.secrets[0].fields == {}
    assert "tls.crt" in (workload.secrets[0].note or "")


def test_a_prefix_the_annotation_cannot_carry_leaves_the_keys_out_with_a_note() -> None:
    result = _build(_ingress([{"secretRef": {"name": "tls"}, "prefix": "X,"}]), "relaxed")
    (_tenant, workload) = next(result.plan.iter_workloads())
    assert workload.secrets[0].fields == {}
    assert "cannot carry it" in (workload.secrets[0].note or "")
    assert any("cannot carry it" in w for w in result.warnings)


def test_drift_reads_live_names_with_the_plans_rule() -> None:
    template = _ingress([{"secretRef": {"name": "tls"}}]).template
    relaxed = live_triples(template, lambda _n: list(TLS_KEYS), env_names="relaxed")
    assert relaxed == {("tls", k, k) for k in TLS_KEYS}
    assert live_triples(template, lambda _n: list(TLS_KEYS)) == set()


def test_the_annotations_carry_tls_crt_to_the_child_environment() -> None:
    value = contract.format_env_map([{"tls.crt": "tls.crt", "ca.crt": "ca.crt"}])
    assert contract.parse_env_map(value) == [{"tls.crt": "tls.crt", "ca.crt": "ca.crt"}]
    child = contract.build_child_env({"PATH": "/bin"}, {"tls.crt": "CANARY"})
    assert child["tls.crt"] == "CANARY"
    with pytest.raises(ContractError) as info:
        contract.parse_env_map("a=X$Y")
    assert info.value.code == "bad-env-name"
