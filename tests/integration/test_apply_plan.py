"""``source apply-plan`` against a real OpenBao dev server (audit log as the witness)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cloudtaser import plan as planlib
from cloudtaser.changes import Action
from cloudtaser.config import VaultTarget
from cloudtaser.errors import OperationError
from cloudtaser.source.openbao import OpenBaoClient
from cloudtaser.source.provision import apply_plan
from tests.integration.source_helpers import (
    enable_k8s_auth,
    plan_dict,
    policy_paths,
    run_cli,
    unique,
    workload,
    write_plan,
)
from tests.testenv.openbao import CLI_AGENT, BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.vault]


@pytest.fixture
def auth_mount(openbao: BaoServer) -> str:
    mount = unique("k8s")
    enable_k8s_auth(openbao, mount)
    return mount


def _writes(openbao: BaoServer, mark: int) -> list[tuple[str, str]]:
    """Writes after ``mark``, except ``sys/capabilities-self`` (a POST that only answers)."""
    writes = openbao.writes_since(mark, client=CLI_AGENT)
    return [w for w in writes if w[1] != "sys/capabilities-self"]


def _client(openbao: BaoServer) -> OpenBaoClient:
    return OpenBaoClient(VaultTarget(address=openbao.address, token=openbao.token))


def _two_tenant_plan(kv: str, auth: str, name: str) -> dict:
    return plan_dict(
        name,
        {
            "payments": [
                workload(
                    "api",
                    {f"{kv}/data/payments/db": {"user": "DB_USER"}, f"{kv}/data/shared/tls": {}},
                    sa="payments-api",
                    shared=frozenset({f"{kv}/data/shared/tls"}),  # a reviewer's decision
                ),
                workload("worker", {f"{kv}/data/payments/db": {"password": "DB_PW"}}),
                workload("legacy", {f"{kv}/data/payments/legacy": {}}, status="skipped"),
            ],
            "shop": [workload("web", {f"{kv}/data/shop/db": {"user": "U"}}, sa="web")],
        },
        auth_mount=auth,
    )


def test_apply_creates_per_tenant_policy_and_role_granting_exactly_the_plan_paths(
    openbao: BaoServer, kv_mount: str, auth_mount: str, tmp_path: Path
) -> None:
    name = unique("plan")
    plan_file = write_plan(tmp_path / "plan.yaml", _two_tenant_plan(kv_mount, auth_mount, name))
    before = hashlib.sha256(plan_file.read_bytes()).digest()

    result = run_cli(openbao, "source", "apply-plan", str(plan_file), "--audience", "openbao")
    assert result.returncode == 0, result.stderr
    assert "4 create" in result.stdout

    policy = f"cloudtaser-{name}-payments"
    hcl = openbao.api("GET", f"sys/policies/acl/{policy}").json()["data"]["policy"]
    assert hcl.startswith(f"# managed-by: cloudtaser; plan={name}; tenant=payments\n")
    assert policy_paths(hcl) == {
        f"{kv_mount}/data/payments/db": ["read"],
        f"{kv_mount}/data/shared/tls": ["read"],
    }  # not the skipped workload's path, not the other tenant's
    shop = openbao.api("GET", f"sys/policies/acl/cloudtaser-{name}-shop").json()["data"]
    assert policy_paths(shop["policy"]) == {f"{kv_mount}/data/shop/db": ["read"]}

    role = openbao.api("GET", f"auth/{auth_mount}/role/{policy}").json()["data"]
    assert sorted(role["bound_service_account_names"]) == ["default", "payments-api"]
    assert role["bound_service_account_namespaces"] == ["payments"]
    assert role["token_policies"] == [policy]
    assert role["token_ttl"] == 3600
    assert role["audience"] == "openbao"

    # what a pod of tenant payments can do with its token: read its paths, nothing else
    tenant_token = openbao.api(
        "POST", "auth/token/create", {"policies": [policy], "no_default_policy": True}
    ).json()["auth"]["client_token"]
    paths = [
        f"{kv_mount}/data/payments/db",
        f"{kv_mount}/data/payments/legacy",
        f"{kv_mount}/data/shop/db",
        f"{kv_mount}/metadata/payments/db",
        f"{kv_mount}/data/payments/db2",
        "sys/policies/acl/root",
    ]
    caps = openbao.api("POST", "sys/capabilities", {"token": tenant_token, "paths": paths}).json()[
        "data"
    ]
    assert caps[paths[0]] == ["read"]
    assert all(caps[p] == ["deny"] for p in paths[1:])
    assert hashlib.sha256(plan_file.read_bytes()).digest() == before


def test_second_run_reports_unchanged_and_performs_zero_writes(
    openbao: BaoServer, kv_mount: str, auth_mount: str, tmp_path: Path
) -> None:
    plan_file = write_plan(
        tmp_path / "plan.yaml", _two_tenant_plan(kv_mount, auth_mount, unique("plan"))
    )
    assert run_cli(openbao, "source", "apply-plan", str(plan_file)).returncode == 0
    mark = openbao.audit_mark()
    again = run_cli(openbao, "source", "apply-plan", str(plan_file), "--output", "json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert {o["action"] for o in report["objects"]} == {"unchanged"}
    assert report["summary"]["writes"] == 0
    # sys/capabilities-self is a POST (audited as "update") that only answers a question
    writes = openbao.writes_since(mark, client=CLI_AGENT)
    assert [w for w in writes if w[1] != "sys/capabilities-self"] == []
    ops = openbao.request_ops_since(mark)
    assert ("read", f"sys/policies/acl/cloudtaser-{report['plan']}-payments") in ops


def test_dry_run_shows_create_update_unchanged_and_writes_nothing(
    openbao: BaoServer, kv_mount: str, auth_mount: str, tmp_path: Path
) -> None:
    name = unique("plan")
    data = _two_tenant_plan(kv_mount, auth_mount, name)
    plan_file = write_plan(tmp_path / "plan.yaml", data)
    mark = openbao.audit_mark()
    dry = run_cli(openbao, "source", "apply-plan", str(plan_file), "--dry-run", "--output", "json")
    assert dry.returncode == 0, dry.stderr
    assert {o["action"] for o in json.loads(dry.stdout)["objects"]} == {"create"}
    assert _writes(openbao, mark) == []
    assert openbao.api("GET", f"sys/policies/acl/cloudtaser-{name}-shop").status_code == 404

    assert run_cli(openbao, "source", "apply-plan", str(plan_file)).returncode == 0
    data["tenants"][1]["workloads"][0]["secrets"].append(
        {"source": "new", "vaultPath": f"{kv_mount}/data/shop/new", "fields": {}}
    )
    write_plan(plan_file, data)
    mark = openbao.audit_mark()
    dry = run_cli(
        openbao, "source", "apply-plan", str(plan_file), "--dry-run", "--token-ttl", "30m"
    )
    assert dry.returncode == 0, dry.stderr
    lines = {
        line.split()[2]: line
        for line in dry.stdout.splitlines()
        if line.startswith(("pay", "shop"))
    }
    assert "would update" in lines[f"sys/policies/acl/cloudtaser-{name}-shop"]
    assert "unchanged" in lines[f"sys/policies/acl/cloudtaser-{name}-payments"]
    assert "token_ttl" in lines[f"auth/{auth_mount}/role/cloudtaser-{name}-payments"]
    assert "dry run, nothing written" in dry.stdout
    assert _writes(openbao, mark) == []


def test_two_plans_sharing_tenant_names_and_paths_never_overwrite_each_other(
    openbao: BaoServer, kv_mount: str, auth_mount: str, tmp_path: Path
) -> None:
    shared = f"{kv_mount}/data/payments/db"
    a, b = unique("cluster-a"), unique("cluster-b")
    plan_a = plan_dict(
        a, {"payments": [workload("api", {shared: {}}, sa="a")]}, auth_mount=auth_mount
    )
    plan_b = plan_dict(
        b, {"payments": [workload("api", {shared: {}}, sa="b")]}, auth_mount=auth_mount
    )
    with _client(openbao) as client:
        first = apply_plan(client, planlib.loads(json.dumps(plan_a)))
        second = apply_plan(client, planlib.loads(json.dumps(plan_b)))
        again = apply_plan(client, planlib.loads(json.dumps(plan_a)))
    assert {c.action for c in first.changes} == {Action.CREATE}
    assert {c.action for c in second.changes} == {Action.CREATE}
    assert {c.action for c in again.changes} == {Action.UNCHANGED}
    role_a = openbao.api("GET", f"auth/{auth_mount}/role/cloudtaser-{a}-payments").json()["data"]
    role_b = openbao.api("GET", f"auth/{auth_mount}/role/cloudtaser-{b}-payments").json()["data"]
    assert role_a["bound_service_account_names"] == ["a"]
    assert role_b["bound_service_account_names"] == ["b"]
    assert role_a["token_policies"] == [f"cloudtaser-{a}-payments"]


def test_refuses_to_overwrite_a_policy_cloudtaser_did_not_create_unless_forced(
    openbao: BaoServer, kv_mount: str, auth_mount: str, tmp_path: Path
) -> None:
    name = unique("plan")
    foreign = 'path "sys/*" {\n  capabilities = ["sudo", "read"]\n}\n'
    openbao.api_ok("POST", f"sys/policies/acl/cloudtaser-{name}-shop", {"policy": foreign})
    plan_file = write_plan(tmp_path / "plan.yaml", _two_tenant_plan(kv_mount, auth_mount, name))
    mark = openbao.audit_mark()
    refused = run_cli(openbao, "source", "apply-plan", str(plan_file))
    assert refused.returncode == 4
    assert f"sys/policies/acl/cloudtaser-{name}-shop" in refused.stderr
    assert "not created by cloudtaser" in refused.stderr
    assert "--force" in refused.stderr
    assert _writes(openbao, mark) == []  # refused before any write, other tenants too

    dry = run_cli(openbao, "source", "apply-plan", str(plan_file), "--dry-run")
    assert dry.returncode == 1
    assert "CONFLICT" in dry.stdout

    forced = run_cli(openbao, "source", "apply-plan", str(plan_file), "--force")
    assert forced.returncode == 0, forced.stderr
    hcl = openbao.api("GET", f"sys/policies/acl/cloudtaser-{name}-shop").json()["data"]["policy"]
    assert "sys/*" not in hcl


def test_missing_auth_mount_is_explained_or_enabled_on_request(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    mount = unique("k8s-missing")
    plan_file = write_plan(
        tmp_path / "plan.yaml", _two_tenant_plan(kv_mount, mount, unique("plan"))
    )
    mark = openbao.audit_mark()
    result = run_cli(openbao, "source", "apply-plan", str(plan_file))
    assert result.returncode == 4
    assert f"auth/{mount} does not exist" in result.stderr
    assert "cloudtaser target connect" in result.stderr
    assert "--enable-auth-mount" in result.stderr
    assert _writes(openbao, mark) == []

    dry = run_cli(
        openbao, "source", "apply-plan", str(plan_file), "--enable-auth-mount", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert f"sys/auth/{mount}" in dry.stdout
    assert _writes(openbao, mark) == []

    done = run_cli(openbao, "source", "apply-plan", str(plan_file), "--enable-auth-mount")
    assert done.returncode == 0, done.stderr
    auths = openbao.api("GET", "sys/auth").json()["data"]
    assert auths[f"{mount}/"]["type"] == "kubernetes"


def test_kv_v1_and_missing_kv_mounts_fail_preflight_before_any_write(
    openbao: BaoServer, auth_mount: str, tmp_path: Path
) -> None:
    v1 = unique("kv1")
    openbao.api_ok("POST", f"sys/mounts/{v1}", {"type": "kv", "options": {"version": "1"}})
    mark = openbao.audit_mark()
    with _client(openbao) as client:
        plan = planlib.loads(
            json.dumps(
                plan_dict(
                    unique("p"),
                    {"t": [workload("w", {f"{v1}/data/t/x": {}})]},
                    auth_mount=auth_mount,
                )
            )
        )
        with pytest.raises(OperationError, match="not KV version 2"):
            apply_plan(client, plan)
        plan = planlib.loads(
            json.dumps(
                plan_dict(
                    unique("p"),
                    {"t": [workload("w", {"nosuchkv/data/t/x": {}})]},
                    auth_mount=auth_mount,
                )
            )
        )
        with pytest.raises(OperationError, match="KV mount 'nosuchkv' does not exist"):
            apply_plan(client, plan)
    assert _writes(openbao, mark) == []
    openbao.disable_mount(v1)


HOSTILE_YAML = [
    "secret/data/../../sys/policies/acl/root",
    "secret/data/*",
    'secret/data/x"y',
    "sys/data/policies",
]


@pytest.mark.parametrize("path", HOSTILE_YAML)
def test_hostile_plan_file_is_rejected_before_any_request(
    openbao: BaoServer, auth_mount: str, tmp_path: Path, path: str
) -> None:
    data = plan_dict(unique("p"), {"t": [workload("w", {path: {}})]}, auth_mount=auth_mount)
    plan_file = write_plan(tmp_path / "plan.yaml", data)
    mark = openbao.audit_mark()
    result = run_cli(openbao, "source", "apply-plan", str(plan_file))
    assert result.returncode == 2
    assert "vaultPath" in result.stderr or "vault path" in result.stderr
    assert "Traceback" not in result.stderr
    assert openbao.requests_since(mark, client=CLI_AGENT) == []
