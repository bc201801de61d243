"""Issue 18, finding 7: every command applies the same mount and segment rules (one rule book:
``naming.usable_mount`` / ``reserved_mount`` and the plan patterns built on ``naming``'s
segment rule)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloudtaser import plan as planlib
from cloudtaser.connect import validate_auth_mount
from cloudtaser.contract import ContractError, parse_auth_path
from cloudtaser.errors import ConfigError, PlanError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload, WorkloadKind
from cloudtaser.source.grants import build_grants
from cloudtaser.source.preflight import validate_kv_path
from cloudtaser.target.annotations import AnnotationError, build_annotations
from cloudtaser.target.discover.build import build_plan
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.podspec import kv2_path

ROOT = Path(__file__).resolve().parents[2]

BAD_MOUNTS = [
    "SYS",
    "Sys/x",
    "token",
    "TOKEN",
    "../sys",
    "kubernetes/../../sys",
    ".db",
    "...",
    "a/.b",
]
BAD_PATHS = ["SYS/data/x", "Auth/data/x", "secret/data/.db", "secret/data/...", "secret/data/a/.b"]


def _plan(auth_mount: str = "kubernetes", path: str = "secret/data/t/x") -> MigrationPlan:
    # built in code: skips the loader, as a library caller could
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="p", auth_mount=auth_mount),
        tenants=[
            Tenant(
                name="t",
                namespace="t",
                workloads=[
                    Workload(
                        kind=WorkloadKind.DEPLOYMENT,
                        name="w",
                        secrets=[SecretRef(source="s", vault_path=path, fields={"k": "K"})],
                    )
                ],
            )
        ],
    )


def _plan_text(auth: str = "kubernetes", path: str = "secret/data/t/x") -> str:
    return (
        "apiVersion: cloudtaser.io/v1\nkind: MigrationPlan\n"
        f"metadata: {{name: p, authMount: '{auth}'}}\n"
        "tenants:\n- name: t\n  namespace: t\n  workloads:\n  - kind: Deployment\n    name: w\n"
        f"    secrets: [{{source: s, vaultPath: '{path}', fields: {{k: K}}}}]\n"
    )


@pytest.mark.parametrize("mount", BAD_MOUNTS)
def test_bad_auth_mount_is_refused_by_every_command(mount: str) -> None:
    with pytest.raises(PlanError):
        planlib.loads(_plan_text(auth=mount))  # plan validate / every loader
    with pytest.raises(PlanError):
        build_grants(_plan(auth_mount=mount))  # apply-plan
    with pytest.raises(AnnotationError):
        build_annotations(_plan(auth_mount=mount), *_first(), "https://v:8200")  # protect
    with pytest.raises(ConfigError):
        validate_auth_mount(mount)  # connect
    assert _wrapper_refuses("CLOUDTASER_VAULT_AUTH_MOUNT_PATH", f"auth/{mount}")  # the Go wrapper
    with pytest.raises(ContractError):
        parse_auth_path(f"auth/{mount}")  # the Python side of the same contract
    with pytest.raises(ConfigError):
        DiscoverOptions(auth_mount=mount).validate()  # discover
    with pytest.raises(ConfigError):
        DiscoverOptions(kv_mount=mount).validate()


def _wrapper_refuses(variable: str, value: str) -> bool:
    """The Go wrapper's side of the rule: a refusal case in the shared contract vectors, which
    `go test ./runtime/internal/contract` runs against the wrapper's parser."""
    cases = json.loads((ROOT / "spec/contract/wrapper-env.json").read_text())["cases"]
    return any(c["input"]["env"].get(variable) == value and "error" in c for c in cases)


def _first(plan: MigrationPlan | None = None) -> tuple[Tenant, Workload]:
    plan = plan or _plan()
    return plan.tenants[0], plan.tenants[0].workloads[0]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_vault_path_is_refused_by_every_command(path: str) -> None:
    with pytest.raises(PlanError):
        planlib.loads(_plan_text(path=path))
    with pytest.raises(PlanError):
        validate_kv_path(path)
    with pytest.raises(PlanError):
        build_grants(_plan(path=path))
    bad = _plan(path=path)
    with pytest.raises(AnnotationError):
        build_annotations(bad, *_first(bad), "https://v:8200")
    assert kv2_path(path)[0] is None  # discover never records it
    assert _wrapper_refuses("CLOUDTASER_SECRET_PATHS", path)  # the Go wrapper


def test_good_names_pass_everywhere() -> None:
    for mount in ("kubernetes", "k8s/eu-prod", "tokens", "sys1"):
        planlib.loads(_plan_text(auth=mount))
        assert validate_auth_mount(mount) == mount
    plan = _plan(auth_mount="k8s/eu", path="secret/data/t/a.b")
    assert (
        build_annotations(plan, *_first(plan), "https://v:8200")["cloudtaser.io/vault-auth-path"]
        == "auth/k8s/eu"
    )


def test_one_tenants_bad_agent_path_skips_only_that_workload_at_discover() -> None:
    def agent(ns: str, path: str) -> ScannedWorkload:
        annotations = {"vault.hashicorp.com/agent-inject-secret-x": path}
        template: dict[str, Any] = {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "c"}]},
        }
        return ScannedWorkload(ns, WorkloadKind.DEPLOYMENT, "app", template, 1)

    result = build_plan(
        [agent("bad", "SYS/data/bad/x"), agent("bad2", "secret/data/bad2/" + "a" * 200),
         agent("good", "secret/data/good/x")],
        SecretLookup(),
        options=DiscoverOptions(),
        plan_name="p",
        cluster="c",
    )  # fmt: skip
    statuses = {t.namespace: t.workloads[0].effective_status.value for t in result.plan.tenants}
    assert statuses == {"bad": "skipped", "bad2": "skipped", "good": "pending"}
    plan = planlib.loads(planlib.dumps(result.plan))  # the plan round-trips...
    grants, _ = build_grants(plan)  # ...and apply-plan serves everyone else
    assert [g.tenant for g in grants] == ["good"]
    assert msgspec.to_builtins(plan)  # no exception anywhere
