"""No unsigned back door through ``finalizedRefs`` (issue 28, finding 3).

``finalizedRefs`` is run state: approvals do not sign it, and ``target unprotect`` puts back
whatever it lists. So every plan load refuses an entry that is not one of the workload's
reviewed mappings, while every plan ``target finalize`` itself writes (``finalize_edit``, with
and without envFrom prefixes) still loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import plan as planlib
from cloudtaser.cli import main
from cloudtaser.errors import PlanError
from cloudtaser.plan import FinalizedRef, SecretRef, Workload
from cloudtaser.plan.canonical import plan_digest
from cloudtaser.target.engine.secret_refs import finalize_edit

KEYS: dict[str, list[str]] = {
    "db": ["password", "username"],
    "api": ["token"],
    "admin": ["root-password"],
}


def secrets() -> list[SecretRef]:
    return [
        SecretRef(
            source="db",
            vault_path="secret/data/payments/db",
            fields={"password": "DB_PASSWORD", "username": "DB_USER"},
            via="env",
        ),
        SecretRef(
            source="api",
            vault_path="secret/data/payments/api",
            fields={"token": "API_token"},
            via="envFrom",
        ),
    ]


def plan_with(refs: list[FinalizedRef], workload_secrets: list[SecretRef] | None = None) -> str:
    workload = Workload(
        kind=planlib.WorkloadKind.DEPLOYMENT,
        name="web",
        status=planlib.WorkloadStatus.MIGRATED,
        secrets=workload_secrets if workload_secrets is not None else secrets(),
        finalized_refs=refs,
    )
    plan = planlib.MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=planlib.PlanMetadata(name="prod-eu"),
        tenants=[planlib.Tenant(name="payments", namespace="payments", workloads=[workload])],
    )
    return planlib.dumps(plan)


def env_ref(secret: str, key: str, env: str, container: str = "app") -> FinalizedRef:
    return FinalizedRef(container=container, via="env", secret=secret, key=key, env=env)


def from_ref(secret: str, prefix: str | None = None) -> FinalizedRef:
    return FinalizedRef(container="app", via="envFrom", secret=secret, prefix=prefix)


def refused(text: str) -> PlanError:
    with pytest.raises(PlanError) as info:
        planlib.loads(text)
    return info.value


# --- what finalize writes loads -----------------------------------------------------------


def container(**fields: Any) -> dict[str, Any]:
    return {"name": fields.pop("name", "app"), **fields}


def key_ref(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def test_the_references_finalize_records_load_again() -> None:
    template = {
        "spec": {
            "initContainers": [
                container(name="migrate", env=[key_ref("DB_PASSWORD", "db", "password")])
            ],
            "containers": [
                container(
                    env=[
                        key_ref("DB_PASSWORD", "db", "password"),
                        key_ref("DB_USER", "db", "username"),
                    ],
                    envFrom=[{"prefix": "API_", "secretRef": {"name": "api"}}],
                )
            ],
        }
    }
    workload = Workload(kind=planlib.WorkloadKind.DEPLOYMENT, name="web", secrets=secrets())
    edit = finalize_edit(template, workload, KEYS.get)
    assert edit.problems == []
    assert {r.via for r in edit.refs} == {"env", "envFrom"}
    assert any(r.prefix == "API_" for r in edit.refs)
    loaded = planlib.loads(plan_with(edit.refs))
    assert loaded.tenants[0].workloads[0].finalized_refs == edit.refs


def test_an_env_from_secret_used_with_two_prefixes_loads_after_finalize() -> None:
    # discover splits one Secret used under two prefixes into entries whose fields may mix
    # the prefixes (one key feeds two variables); finalize records one envFrom per prefix.
    from datetime import UTC, datetime

    from cloudtaser.target.discover.build import build_plan
    from cloudtaser.target.discover.options import DiscoverOptions
    from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup

    template = {
        "metadata": {},
        "spec": {
            "containers": [
                container(name="a", envFrom=[{"secretRef": {"name": "mix"}}]),
                container(name="b", envFrom=[{"prefix": "X_", "secretRef": {"name": "mix"}}]),
            ]
        },
    }
    keys = {"mix": ("A", "b")}
    result = build_plan(
        [ScannedWorkload("payments", planlib.WorkloadKind.DEPLOYMENT, "web", template, 1)],
        SecretLookup(keys={("payments", "mix"): keys["mix"]}),
        options=DiscoverOptions(now=datetime(2026, 5, 16, tzinfo=UTC)),
        plan_name="prod-eu",
        cluster="c",
    )
    (_tenant, workload), *_ = result.plan.iter_workloads()
    assert workload.effective_status is planlib.WorkloadStatus.PENDING, workload.reason
    edit = finalize_edit(template, workload, lambda n: list(keys.get(n, ())))
    assert edit.problems == []
    assert sorted((r.container, r.prefix or "") for r in edit.refs) == [("a", ""), ("b", "X_")]
    workload.finalized_refs = edit.refs
    planlib.loads(planlib.dumps(result.plan))


def test_a_plan_without_via_still_loads_its_finalized_references() -> None:
    plain = [
        SecretRef(source="db", vault_path="secret/data/payments/db", fields={"password": "PW"}),
        SecretRef(
            source="api", vault_path="secret/data/payments/api", fields={"token": "API_token"}
        ),
    ]
    planlib.loads(plan_with([env_ref("db", "password", "PW"), from_ref("api", "API_")], plain))


def test_finalized_refs_are_not_reviewed_content_which_is_why_they_are_checked() -> None:
    honest = planlib.loads(plan_with([env_ref("db", "password", "DB_PASSWORD")]))
    other = planlib.loads(plan_with([env_ref("db", "username", "DB_USER")]))
    assert plan_digest(honest) == plan_digest(other)


# --- forged entries are refused ------------------------------------------------------------


def test_another_secrets_root_password_as_log_banner_is_refused() -> None:
    error = refused(
        plan_with(
            [
                env_ref("db", "password", "DB_PASSWORD"),
                env_ref("admin", "root-password", "LOG_BANNER"),
            ]
        )
    )
    text = str(error)
    assert error.location == "$.tenants[0].workloads[0].finalizedRefs[1]"
    for part in ("tenant payments", "Deployment web", "LOG_BANNER", "admin", "root-password"):
        assert part in text, part
    assert "edited after finalize" in text
    assert "Restore the plan file" in text
    assert "remove the entry" in text


@pytest.mark.parametrize(
    "ref",
    [
        env_ref("db", "password", "LOG_BANNER"),  # reviewed key, another variable
        env_ref("db", "admin-password", "DB_PASSWORD"),  # reviewed variable, another key
        env_ref("api", "password", "DB_PASSWORD"),  # another reviewed Secret
        env_ref("db", "token", "API_token"),
    ],
    ids=["other-env", "other-key", "other-secret", "crossed"],
)
def test_an_env_entry_must_be_an_exact_reviewed_pair(ref: FinalizedRef) -> None:
    refused(plan_with([ref]))


def test_an_env_from_of_an_unrelated_secret_is_refused() -> None:
    error = refused(plan_with([from_ref("admin")]))
    assert "envFrom of Secret admin" in str(error)
    assert "edited after finalize" in str(error)


@pytest.mark.parametrize("prefix", [None, "LD_", "API", "API_t"])
def test_an_env_from_with_a_prefix_nobody_reviewed_is_refused(prefix: str | None) -> None:
    refused(plan_with([from_ref("api", prefix)]))


def test_an_env_from_of_a_secret_reviewed_only_as_secret_key_refs_is_refused() -> None:
    # db is reviewed as two secretKeyRefs; an envFrom would bring every key of it
    refused(plan_with([from_ref("db", "DB_")]))
    refused(plan_with([from_ref("db")]))


def test_an_env_from_of_a_secret_with_no_reviewed_field_is_refused() -> None:
    empty = [SecretRef(source="api", vault_path="secret/data/payments/api", via="envFrom")]
    refused(plan_with([from_ref("api")], empty))


def test_unprotect_refuses_a_forged_plan_with_exit_2_before_touching_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(plan_with([env_ref("admin", "root-password", "LOG_BANNER")]))
    before = path.read_bytes()
    kubeconfig = tmp_path / "kubeconfig"  # a cluster nobody listens for: never reached
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "canary-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    code = main(
        [
            "target",
            "unprotect",
            "--plan",
            str(path),
            "--kubeconfig",
            str(kubeconfig),
            "--yes",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "LOG_BANNER" in err
    assert "Traceback" not in err
    assert path.read_bytes() == before  # nothing recorded


def test_plan_validate_refuses_a_forged_entry(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(plan_with([from_ref("admin")]))
    assert main(["plan", "validate", str(path)]) == 2
    path.write_text(plan_with([from_ref("api", "API_")]))
    assert main(["plan", "validate", str(path)]) == 0
