"""Faults on a real OpenBao: server stopped or sealed mid-apply, 429 quotas, missing capabilities,
and OpenBao namespaces."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.source_helpers import (
    REPO,
    enable_k8s_auth,
    plan_dict,
    run_cli,
    token_with_policy,
    unique,
    workload,
    write_plan,
)
from tests.testenv.openbao import CLI_AGENT, BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.vault]


def _big_plan(kv: str, auth: str, tenants: int, name: str | None = None) -> dict:
    return plan_dict(
        name or unique("big"),
        {
            f"t{i:04d}": [workload("app", {f"{kv}/data/t{i:04d}/db": {"k": "K"}})]
            for i in range(tenants)
        },
        auth_mount=auth,
    )


def _policy_writes(openbao: BaoServer, mark: int) -> int:
    writes = openbao.writes_since(mark, client=CLI_AGENT)
    return sum(1 for _op, p in writes if p.startswith("sys/policies/acl/"))


def _start_apply(openbao: BaoServer, plan_file: Path) -> subprocess.Popen[str]:
    env = openbao.env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudtaser",
            "source",
            "apply-plan",
            str(plan_file),
            "--concurrency",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _wait_for_writes(
    openbao: BaoServer, mark: int, count: int, proc: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + 60
    try:
        while _policy_writes(openbao, mark) < count:
            assert proc.poll() is None, "apply-plan finished before the fault could be injected"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    except BaseException:
        # never leave this apply running into the next test: its writes (same User-Agent)
        # would be counted there, and a seal there would hit it too
        proc.kill()
        proc.communicate()
        raise


def test_server_stopped_mid_apply_gives_a_clear_error_and_a_rerun_completes(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    auth = enable_k8s_auth(openbao, unique("k8s"))
    plan_file = write_plan(tmp_path / "plan.yaml", _big_plan(kv_mount, auth, 400))
    mark = openbao.audit_mark()
    proc = _start_apply(openbao, plan_file)
    _wait_for_writes(openbao, mark, 20, proc)
    openbao.stop()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "cannot reach the vault" in err
    assert "Traceback" not in err
    assert openbao.token not in out + err

    openbao.start()  # dev mode: a fresh, empty vault at the same address
    openbao.enable_kv2(kv_mount)
    enable_k8s_auth(openbao, auth)
    rerun = run_cli(openbao, "source", "apply-plan", str(plan_file))
    assert rerun.returncode == 0, rerun.stderr
    assert "800 create" in rerun.stdout


def test_vault_sealed_mid_apply_then_unsealed_rerun_repairs_the_partial_state(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    deadline = time.monotonic() + 10  # the log is copied by a thread: it may lag a little
    while not (keys := re.findall(r"Unseal Key: (\S+)", openbao.log_path.read_text())):
        assert time.monotonic() < deadline, "the dev server prints its unseal key"
        time.sleep(0.1)
    auth = enable_k8s_auth(openbao, unique("k8s"))
    plan_file = write_plan(tmp_path / "plan.yaml", _big_plan(kv_mount, auth, 300))
    mark = openbao.audit_mark()
    proc = _start_apply(openbao, plan_file)
    _wait_for_writes(openbao, mark, 20, proc)
    openbao.bao("operator", "seal")
    try:
        _out, err = proc.communicate(timeout=120)
    finally:
        unsealed = openbao.bao("operator", "unseal", keys[-1], check=False)
        if unsealed.returncode != 0:
            openbao.restart()  # never leave a sealed vault to the next test
    assert unsealed.returncode == 0, unsealed.stderr
    assert proc.returncode == 3, err
    assert "is sealed" in err
    assert "bao operator unseal" in err
    partial = _policy_writes(openbao, mark)
    assert 20 <= partial < 300

    mark = openbao.audit_mark()
    rerun = run_cli(openbao, "source", "apply-plan", str(plan_file), "--output", "json")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)["summary"]
    assert summary["create"] + summary["unchanged"] + summary["update"] == 600
    assert summary["unchanged"] >= partial  # what was written before the seal is kept
    mark = openbao.audit_mark()
    final = run_cli(openbao, "source", "apply-plan", str(plan_file), "--output", "json")
    assert json.loads(final.stdout)["summary"]["unchanged"] == 600
    assert _policy_writes(openbao, mark) == 0


@pytest.fixture
def rate_limit(openbao: BaoServer) -> object:
    created: list[str] = []
    openbao.api_ok("POST", "sys/quotas/config", {"enable_rate_limit_response_headers": True})

    def add(path: str, rate: float) -> None:
        name = unique("quota")
        openbao.api_ok(
            "POST", f"sys/quotas/rate-limit/{name}", {"path": path, "rate": rate, "interval": "1s"}
        )
        created.append(name)

    yield add
    for name in created:
        openbao.api("DELETE", f"sys/quotas/rate-limit/{name}")
    openbao.api("POST", "sys/quotas/config", {"enable_rate_limit_response_headers": False})


def test_rate_limited_apply_and_verify_slow_down_and_finish(
    openbao: BaoServer, kv_mount: str, tmp_path: Path, rate_limit: object
) -> None:
    auth = enable_k8s_auth(openbao, unique("k8s"))
    plan_file = write_plan(tmp_path / "plan.yaml", _big_plan(kv_mount, auth, 40))
    for i in range(40):
        openbao.api_ok("POST", f"{kv_mount}/data/t{i:04d}/db", {"data": {"k": "v"}})
    # path quotas bind to mounts (sys/ paths are exempt): the auth mount takes the role calls
    rate_limit(f"auth/{auth}/", 10)  # type: ignore[operator]
    rate_limit(f"{kv_mount}/", 10)  # type: ignore[operator]
    applied = run_cli(openbao, "source", "apply-plan", str(plan_file), "--concurrency", "16")
    assert applied.returncode == 0, applied.stderr
    assert "rate-limiting" in applied.stderr
    assert "80 create" in applied.stdout
    verified = run_cli(openbao, "source", "verify-plan", str(plan_file), "--concurrency", "16")
    assert verified.returncode == 0, verified.stderr
    assert "rate-limiting" in verified.stderr
    assert "40/40 workloads ok" in verified.stdout


def test_token_without_capabilities_gets_a_message_naming_capability_and_path(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    auth = enable_k8s_auth(openbao, unique("k8s"))
    name = unique("caps")
    plan_file = write_plan(tmp_path / "plan.yaml", _big_plan(kv_mount, auth, 1, name=name))
    read_only = token_with_policy(
        openbao,
        'path "sys/policies/acl/*" { capabilities = ["read"] }\n'
        f'path "auth/{auth}/role/*" {{ capabilities = ["read", "create", "update"] }}\n'
        f'path "{kv_mount}/subkeys/*" {{ capabilities = ["read"] }}\n',
    )
    mark = openbao.audit_mark()
    result = run_cli(openbao, "source", "apply-plan", str(plan_file), token=read_only)
    assert result.returncode == 3
    assert f"'create' on sys/policies/acl/cloudtaser-{name}-t0000" in result.stderr
    assert "Nothing was written" in result.stderr
    assert read_only not in result.stderr
    writes = openbao.writes_since(mark, client=CLI_AGENT)
    assert [w for w in writes if w[1] != "sys/capabilities-self"] == []

    nothing = token_with_policy(openbao, 'path "cubbyhole/*" { capabilities = ["read"] }\n')
    result = run_cli(openbao, "source", "apply-plan", str(plan_file), token=nothing)
    assert result.returncode == 3
    assert f"'read' on sys/policies/acl/cloudtaser-{name}-t0000" in result.stderr
    assert f"'read' on auth/{auth}/role/cloudtaser-{name}-t0000" in result.stderr


def test_apply_and_verify_inside_an_openbao_namespace(openbao: BaoServer, tmp_path: Path) -> None:
    ns = unique("team")
    openbao.api_ok("POST", f"sys/namespaces/{ns}")
    hdr = {"X-Vault-Namespace": ns}
    r = openbao.api(
        "POST", "sys/mounts/kv", {"type": "kv", "options": {"version": "2"}}, headers=hdr
    )
    assert r.status_code == 204, r.text
    enable_k8s_auth(openbao, "kubernetes", namespace=ns)
    r = openbao.api("POST", "kv/data/app/db", {"data": {"user": "u"}}, headers=hdr)
    assert r.status_code == 200, r.text
    name = unique("nsplan")
    data = plan_dict(name, {"app": [workload("api", {"kv/data/app/db": {"user": "U"}})]})
    plan_file = write_plan(tmp_path / "plan.yaml", data)

    applied = run_cli(openbao, "source", "apply-plan", str(plan_file), "--vault-namespace", ns)
    assert applied.returncode == 0, applied.stderr
    assert f"namespace {ns}" in applied.stderr
    policy = f"sys/policies/acl/cloudtaser-{name}-app"
    assert openbao.api("GET", policy, headers=hdr).status_code == 200
    assert openbao.api("GET", policy).status_code == 404  # not in the root namespace
    role = openbao.api("GET", f"auth/kubernetes/role/cloudtaser-{name}-app", headers=hdr)
    assert role.json()["data"]["bound_service_account_namespaces"] == ["app"]

    verified = run_cli(openbao, "source", "verify-plan", str(plan_file), "--vault-namespace", ns)
    assert verified.returncode == 0, verified.stderr
    outside = run_cli(openbao, "source", "verify-plan", str(plan_file))
    assert outside.returncode == 1  # the root namespace has no kv/ mount
