"""Dangerous targets are a reviewer's decision (issue 28, finding 8).

A vault field mapped to a loader / interpreter variable (``LD_PRELOAD``, ``PATH``,
``NODE_OPTIONS``, ...) lets whoever can write the tenant's vault path run code in the pod. The
rule book (:mod:`cloudtaser.plan.rules`) holds the list once, equal to
``spec/contract/dangerous-env.json`` (the Go injector checks its own list against the same
file); every plan load refuses such a mapping unless the workload's signed
``acceptedDangerousEnv`` lists it; the runtime's own ``CLOUDTASER_*`` names never pass;
``protect`` writes the accepted names into ``cloudtaser.io/accept-dangerous-env``; discover
writes such a workload ``skipped`` with the way to accept it, so its plan always loads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.cli import main
from cloudtaser.contract import ContractError
from cloudtaser.errors import PlanError
from cloudtaser.plan import rules
from cloudtaser.target import annotations as ann
from cloudtaser.target.discover.build import build_plan
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.protect import build_patch, build_removal_patch

SPEC = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "contract" / "dangerous-env.json").read_text()
)
ADDRESS = "https://vault.example:8200"
NOW = datetime(2026, 5, 16, 10, 0, 0, tzinfo=UTC)


# --- the list is the shared one ------------------------------------------------------------


def test_the_rule_book_holds_exactly_the_shared_list() -> None:
    assert SPEC["formatVersion"] == 1
    assert set(SPEC) == {"formatVersion", "description", "names", "prefixes", "reserved", "cases"}
    assert sorted(rules.DANGEROUS_ENV) == SPEC["names"]
    assert len(SPEC["names"]) == len(set(SPEC["names"]))
    assert list(rules.DANGEROUS_ENV_PREFIXES) == SPEC["prefixes"]
    assert list(rules.RESERVED_ENV_PREFIXES) == SPEC["reserved"]
    # a reserved name is dangerous too (the injector denies it before it looks at the list)
    assert set(SPEC["reserved"]) <= set(SPEC["prefixes"])


@pytest.mark.parametrize("case", SPEC["cases"], ids=[c["env"] for c in SPEC["cases"]])
def test_every_shared_case(case: dict[str, Any]) -> None:
    env = case["env"]
    assert rules.is_dangerous_env(env) is case["dangerous"]
    problem = rules.dangerous_env_problem(env)
    assert (problem is not None) is case["dangerous"]
    if case["dangerous"] and not rules.is_reserved_env(env):
        assert rules.dangerous_env_problem(env, {env}) is None  # accepted: passes


def test_every_listed_name_and_prefix_is_dangerous_and_the_shared_cases_cover_each_prefix() -> None:
    for name in SPEC["names"]:
        assert rules.is_dangerous_env(name), name
    for prefix in SPEC["prefixes"]:
        assert rules.is_dangerous_env(prefix + "X"), prefix
        assert any(c["env"].startswith(prefix) and c["dangerous"] for c in SPEC["cases"]), prefix


def test_names_compare_case_sensitively_and_whole() -> None:
    for harmless in ("path", "Path", "PATHS", "MY_PATH", "LDAP_URL", "ENVIRONMENT", "XLD_PRELOAD"):
        assert not rules.is_dangerous_env(harmless), harmless
        assert rules.dangerous_env_problem(harmless) is None


def test_a_reserved_name_is_refused_even_when_accepted() -> None:
    problem = rules.dangerous_env_problem("CLOUDTASER_ENV_MAP", {"CLOUDTASER_ENV_MAP"})
    assert problem is not None
    assert "not even when accepted" in problem
    assert "reserved" in (rules.accepted_dangerous_env_problem("CLOUDTASER_X", {"CLOUDTASER_X"}))


def test_the_refusal_says_both_ways_out() -> None:
    problem = rules.dangerous_env_problem("LD_PRELOAD")
    assert problem is not None
    assert "LD_PRELOAD" in problem
    assert "rename the variable" in problem
    assert "acceptedDangerousEnv" in problem


@pytest.mark.parametrize(
    ("name", "mapped", "expect"),
    [
        ("LD_PRELOAD", {"LD_PRELOAD"}, None),
        ("PATH", {"LD_PRELOAD"}, "no vault field"),
        ("DB_PASSWORD", {"DB_PASSWORD"}, "not a dangerous variable"),
        ("path", {"path"}, "not a dangerous variable"),
        ("CLOUDTASER_SECRET_PATHS", {"CLOUDTASER_SECRET_PATHS"}, "never be accepted"),
    ],
)
def test_an_accepted_entry_must_accept_something(
    name: str, mapped: set[str], expect: str | None
) -> None:
    problem = rules.accepted_dangerous_env_problem(name, mapped)
    if expect is None:
        assert problem is None
    else:
        assert problem is not None
        assert expect in problem


# --- plan load (plan validate, apply-plan, protect, unprotect, finalize) ------------------------


def plan_data(
    fields: dict[str, str],
    *,
    accepted: list[str] | None = None,
    status: str | None = None,
    via: str = "env",
) -> dict[str, Any]:
    workload: dict[str, Any] = {
        "kind": "Deployment",
        "name": "api",
        "secrets": [
            {"source": "db", "vaultPath": "secret/data/payments/db", "via": via, "fields": fields}
        ],
    }
    if accepted is not None:
        workload["acceptedDangerousEnv"] = accepted
    if status is not None:
        workload["status"] = status
    return {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": {"name": "prod-eu"},
        "tenants": [{"name": "payments", "namespace": "payments", "workloads": [workload]}],
    }


def load(data: dict[str, Any]) -> planlib.MigrationPlan:
    return planlib.loads(json.dumps(data))  # JSON is YAML


def refusal(data: dict[str, Any]) -> PlanError:
    with pytest.raises(PlanError) as info:
        load(data)
    return info.value


def test_a_field_mapped_to_ld_preload_is_refused_naming_where_and_what_to_do() -> None:
    error = refusal(plan_data({"password": "DB_PASSWORD", "hook": "LD_PRELOAD"}))
    text = str(error)
    assert error.location == "$.tenants[0].workloads[0].secrets[0].fields.hook"
    for part in ("tenant payments", "Deployment api", "secret db", "'hook'", "LD_PRELOAD"):
        assert part in text, part
    assert "rename the variable" in text
    assert "acceptedDangerousEnv" in text


@pytest.mark.parametrize("env", ["PATH", "BASH_ENV", "NODE_OPTIONS", "DYLD_INSERT_LIBRARIES"])
def test_every_dangerous_name_is_refused_and_accepted_when_listed(env: str) -> None:
    refusal(plan_data({"x": env}))
    plan = load(plan_data({"x": env}, accepted=[env]))
    (_tenant, workload), *_ = plan.iter_workloads()
    assert workload.accepted_dangerous_env == [env]


def test_an_env_from_mapping_counts_with_its_prefix_applied() -> None:
    # envFrom of a Secret holding the key PRELOAD, with prefix LD_
    error = refusal(plan_data({"PRELOAD": "LD_PRELOAD"}, via="envFrom"))
    assert "LD_PRELOAD" in str(error)
    load(plan_data({"PRELOAD": "LD_PRELOAD"}, via="envFrom", accepted=["LD_PRELOAD"]))


def test_a_reserved_target_is_refused_even_when_accepted() -> None:
    error = refusal(plan_data({"x": "CLOUDTASER_ENV_MAP"}, accepted=["CLOUDTASER_ENV_MAP"]))
    assert "reserved" in str(error)
    assert "not even when accepted" in str(error)


@pytest.mark.parametrize(
    ("accepted", "expect"),
    [
        (["LD_PRELOAD", "PATH"], "'PATH' is accepted but no vault field"),
        (["LD_PRELOAD", "DB_PASSWORD"], "'DB_PASSWORD' is not a dangerous variable"),
        (["LD_PRELOAD", "LD_PRELOAD"], "listed twice"),
    ],
)
def test_an_accepted_entry_that_accepts_nothing_is_refused(
    accepted: list[str], expect: str
) -> None:
    error = refusal(plan_data({"password": "DB_PASSWORD", "hook": "LD_PRELOAD"}, accepted=accepted))
    assert expect in str(error)
    assert error.location == "$.tenants[0].workloads[0].acceptedDangerousEnv[1]"


def test_a_skipped_workload_may_hold_a_dangerous_mapping_but_not_a_bad_acceptance() -> None:
    load(plan_data({"hook": "LD_PRELOAD"}, status="skipped"))
    load(plan_data({"hook": "CLOUDTASER_X"}, status="skipped"))
    error = refusal(plan_data({"hook": "LD_PRELOAD"}, status="skipped", accepted=["PATH"]))
    assert "'PATH' is accepted but no vault field" in str(error)
    # un-skipping it (a run-state edit) does not get it past the rule
    refusal(plan_data({"hook": "LD_PRELOAD"}, status="pending"))
    refusal(plan_data({"hook": "LD_PRELOAD"}, status="migrated"))


def test_a_vault_agent_secret_with_fields_is_held_to_the_rule_as_well() -> None:
    data = plan_data({"x": "PYTHONPATH"})
    data["tenants"][0]["workloads"][0]["secrets"][0].update(
        {"source": "vault-agent:cfg", "via": "vaultAgent"}
    )
    refusal(data)


def test_plan_validate_refuses_with_exit_2_and_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan_data({"hook": "LD_PRELOAD"})))
    assert main(["plan", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "LD_PRELOAD" in err
    assert "acceptedDangerousEnv" in err
    assert "Traceback" not in err
    path.write_text(json.dumps(plan_data({"hook": "LD_PRELOAD"}, accepted=["LD_PRELOAD"])))
    assert main(["plan", "validate", str(path)]) == 0


def test_the_accepted_list_is_reviewed_content() -> None:
    from cloudtaser.plan.canonical import plan_digest

    before = load(plan_data({"hook": "LD_PRELOAD"}, status="skipped"))
    after = load(plan_data({"hook": "LD_PRELOAD"}, status="skipped", accepted=["LD_PRELOAD"]))
    assert plan_digest(before) != plan_digest(after)


# --- protect: the annotation -----------------------------------------------------------------


def annotations_for(plan: planlib.MigrationPlan) -> dict[str, str]:
    tenant, workload = next(plan.iter_workloads())
    return ann.build_annotations(plan, tenant, workload, ADDRESS)


def test_protect_writes_the_accepted_names_sorted() -> None:
    plan = load(
        plan_data(
            {"a": "PATH", "b": "LD_PRELOAD", "c": "DB_PASSWORD"}, accepted=["PATH", "LD_PRELOAD"]
        )
    )
    built = annotations_for(plan)
    assert built[ann.ACCEPT_DANGEROUS_ENV] == "LD_PRELOAD,PATH"
    # what protect writes is what the injector accepts
    assert contract.parse_annotations(built)["inject"] is True


def test_protect_writes_no_acceptance_when_nothing_is_accepted() -> None:
    built = annotations_for(load(plan_data({"password": "DB_PASSWORD"})))
    assert ann.ACCEPT_DANGEROUS_ENV not in built


def test_protect_refuses_a_dangerous_target_even_past_the_loader() -> None:
    plan = load(plan_data({"hook": "LD_PRELOAD"}, accepted=["LD_PRELOAD"]))
    tenant, workload = next(plan.iter_workloads())
    workload.accepted_dangerous_env = []  # what a caller that skips the loader could pass
    with pytest.raises(ann.AnnotationError) as info:
        ann.build_annotations(plan, tenant, workload, ADDRESS)
    assert info.value.code == "dangerous-env"
    assert "LD_PRELOAD" in str(info.value)


def test_a_stale_acceptance_is_removed_by_protect_and_unprotect() -> None:
    intended = annotations_for(load(plan_data({"password": "DB_PASSWORD"})))
    live = {**intended, ann.ACCEPT_DANGEROUS_ENV: "LD_PRELOAD"}
    assert not ann.matches_intended(live, intended)
    patch = build_patch(intended, "2026-01-01T00:00:00Z", "7", live)
    assert patch["spec"]["template"]["metadata"]["annotations"][ann.ACCEPT_DANGEROUS_ENV] is None
    obj = {"spec": {"template": {"metadata": {"annotations": live}}}}
    removal = build_removal_patch(obj, "Deployment")
    assert removal is not None
    assert removal["spec"]["template"]["metadata"]["annotations"][ann.ACCEPT_DANGEROUS_ENV] is None


# --- the annotations as the runtime reads them (Python-only cases; the shared ones are in
# --- spec/contract/annotations.json) -----------------------------------------------------


def pod(env_map: str, accept: str | None = None) -> dict[str, str]:
    out = {
        contract.INJECT: "true",
        contract.VAULT_ADDRESS: ADDRESS,
        contract.VAULT_ROLE: "cloudtaser-prod-payments",
        contract.SECRET_PATHS: "secret/data/payments/db",
        contract.ENV_MAP: env_map,
    }
    if accept is not None:
        out[contract.ACCEPT_DANGEROUS_ENV] = accept
    return out


@pytest.mark.parametrize(
    ("env_map", "accept", "code"),
    [
        ("hook=LD_PRELOAD", None, "dangerous-env"),
        ("hook=LD_PRELOAD", "PATH", "dangerous-env"),
        ("hook=CLOUDTASER_ENV_MAP", "CLOUDTASER_ENV_MAP", "reserved-env"),
        # an accepted name that is no target opens nothing: the injector admits it (the plan
        # loader refuses it, tests above)
        ("hook=LD_PRELOAD", "LD_PRELOAD,PATH", None),
        ("pw=DB_PASSWORD", "DB_PASSWORD", None),
        ("pw=DB_PASSWORD", "not=a name", "bad-env-name"),
        ("hook=LD_PRELOAD", "LD_PRELOAD", None),
        ("hook=LD_PRELOAD,p=PATH", " PATH , LD_PRELOAD ", None),
        ("path=path", None, None),
    ],
)
def test_the_runtime_contract_applies_the_same_rule(
    env_map: str, accept: str | None, code: str | None
) -> None:
    if code is None:
        assert contract.parse_annotations(pod(env_map, accept))["inject"] is True
        return
    with pytest.raises(ContractError) as info:
        contract.parse_annotations(pod(env_map, accept))
    assert info.value.code == code, str(info.value)


def test_format_accept_dangerous_env_sorts_and_dedupes() -> None:
    assert contract.format_accept_dangerous_env(["PATH", "LD_PRELOAD", "PATH"]) == "LD_PRELOAD,PATH"
    assert contract.parse_accept_dangerous_env("") == frozenset()
    with pytest.raises(ContractError):
        contract.format_accept_dangerous_env(["A,B"])


# --- discover: never writes a plan that fails to load ----------------------------------------


def discover(container: dict[str, Any], keys: dict[str, tuple[str, ...]] | None = None) -> Any:
    template = {"metadata": {}, "spec": {"containers": [{"name": "app", **container}]}}
    workload = ScannedWorkload("payments", planlib.WorkloadKind.DEPLOYMENT, "api", template, 1)
    lookup = SecretLookup(keys={("payments", k): v for k, v in (keys or {}).items()})
    return build_plan(
        [workload],
        lookup,
        options=DiscoverOptions(now=NOW, created_by="alice"),
        plan_name="prod-eu",
        cluster="https://10.0.0.1:6443",
    )


def env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def test_discover_skips_a_dangerous_target_and_says_how_to_accept_it() -> None:
    result = discover({"env": [env("DB_PASSWORD", "db", "password"), env("LD_PRELOAD", "db", "h")]})
    reloaded = planlib.loads(planlib.dumps(result.plan))  # plan validate
    (_tenant, workload), *_ = reloaded.iter_workloads()
    assert workload.effective_status is planlib.WorkloadStatus.SKIPPED
    assert workload.reason is not None
    assert "LD_PRELOAD" in workload.reason
    assert "acceptedDangerousEnv" in workload.reason
    assert "status to pending" in workload.reason
    assert workload.accepted_dangerous_env == []  # never discover's decision
    # the reviewer's way: accept it and un-skip it; then every command takes the plan
    workload.accepted_dangerous_env = ["LD_PRELOAD"]
    workload.status = planlib.WorkloadStatus.PENDING
    accepted = planlib.loads(planlib.dumps(reloaded))
    assert annotations_for(accepted)[ann.ACCEPT_DANGEROUS_ENV] == "LD_PRELOAD"


def test_discover_skips_an_env_from_that_lands_on_a_dangerous_name() -> None:
    result = discover(
        {"envFrom": [{"prefix": "LD_", "secretRef": {"name": "libs"}}]},
        keys={"libs": ("PRELOAD",)},
    )
    (_tenant, workload), *_ = result.plan.iter_workloads()
    assert workload.effective_status is planlib.WorkloadStatus.SKIPPED
    assert workload.secrets[0].fields == {"PRELOAD": "LD_PRELOAD"}
    assert "LD_PRELOAD" in (workload.reason or "")


def test_discover_says_a_reserved_target_can_only_be_renamed() -> None:
    result = discover({"env": [env("CLOUDTASER_ENV_MAP", "db", "m")]})
    (_tenant, workload), *_ = result.plan.iter_workloads()
    assert workload.effective_status is planlib.WorkloadStatus.SKIPPED
    reason = workload.reason or ""
    assert "rename the variable" in reason
    assert "status to pending" not in reason


def test_discover_leaves_ordinary_names_pending() -> None:
    result = discover({"env": [env("PATHS", "db", "p"), env("LDAP_PASSWORD", "db", "l")]})
    (_tenant, workload), *_ = result.plan.iter_workloads()
    assert workload.effective_status is planlib.WorkloadStatus.PENDING, workload.reason
