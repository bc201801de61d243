"""``source verify-plan`` against a real OpenBao dev server: statuses, secrecy, audit proof."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.integration.source_helpers import (
    plan_dict,
    run_cli,
    token_with_policy,
    unique,
    workload,
    write_plan,
)
from tests.testenv.openbao import BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.vault]

CANARY = "canary-Value-7f3a9-never-print"


def _seed(openbao: BaoServer, kv: str) -> None:
    openbao.bao("kv", "put", f"{kv}/app/db", f"user={CANARY}-u", f"password={CANARY}-p")
    openbao.bao("kv", "put", f"{kv}/app/partial", f"user={CANARY}-x")
    openbao.bao("kv", "put", f"{kv}/app/deleted", f"token={CANARY}-d")
    openbao.bao("kv", "delete", f"{kv}/app/deleted")
    openbao.bao("kv", "put", f"{kv}/app/destroyed", f"token={CANARY}-z")
    openbao.bao("kv", "destroy", "-versions=1", f"{kv}/app/destroyed")
    openbao.bao("kv", "put", f"{kv}/locked/x", f"k={CANARY}-l")


def _plan(kv: str) -> dict:
    return plan_dict(
        unique("verify"),
        {
            "app": [
                workload(
                    "api",
                    {f"{kv}/data/app/db": {"user": "DB_USER", "password": "DB_PASSWORD"}},
                ),
                workload(
                    "worker",
                    {
                        f"{kv}/data/app/db": {"user": "U2"},
                        f"{kv}/data/app/partial": {
                            "user": "P_USER",
                            "password": "P_PW",
                            "host": "H",
                        },
                    },
                ),
                workload("cron", {f"{kv}/data/app/deleted": {"token": "T"}}),
                workload("batch", {f"{kv}/data/app/destroyed": {"token": "T"}}),
                workload("new", {f"{kv}/data/app/never-written": {"k": "K"}}),
                workload("locked", {f"{kv}/data/locked/x": {"k": "K"}}),
                workload("old", {f"{kv}/data/app/whatever": {}}, status="skipped"),
            ]
        },
    )


def test_verify_reports_every_status_without_reading_data(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    _seed(openbao, kv_mount)
    plan_file = write_plan(tmp_path / "plan.yaml", _plan(kv_mount))
    before = hashlib.sha256(plan_file.read_bytes()).digest()
    operator = token_with_policy(
        openbao,
        f'path "{kv_mount}/subkeys/app/*" {{ capabilities = ["read"] }}\n'
        f'path "{kv_mount}/metadata/*" {{ capabilities = ["read"] }}\n',
    )
    mark = openbao.audit_mark()
    result = run_cli(
        openbao, "source", "verify-plan", str(plan_file), "--output", "json", token=operator
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    by_name = {w["name"]: w for w in report["tenants"][0]["workloads"]}
    assert by_name["api"]["status"] == "ok"
    assert by_name["worker"]["status"] == "missing-fields"
    partial = by_name["worker"]["secrets"][1]
    assert partial["status"] == "missing-fields"
    assert partial["missingFields"] == ["password", "host"]
    assert by_name["cron"]["status"] == "deleted"
    assert by_name["batch"]["status"] == "destroyed"
    assert by_name["new"]["status"] == "missing"
    assert by_name["locked"]["status"] == "permission-denied"
    assert by_name["old"]["status"] == "skipped"
    assert by_name["old"]["secrets"] == []
    assert report["summary"]["pathsChecked"] == 6  # app/db shared by two workloads: once
    assert report["summary"]["workloadsOk"] == 1
    assert report["ok"] is False

    ops = openbao.request_ops_since(mark)
    assert not [p for _op, p in ops if f"{kv_mount}/data/" in p]
    subkeys = [p for _op, p in ops if "/subkeys/" in p]
    assert subkeys.count(f"{kv_mount}/subkeys/app/db") == 1
    assert f"{kv_mount}/subkeys/app/whatever" not in subkeys  # skipped workload
    assert CANARY not in result.stdout + result.stderr
    assert operator not in result.stdout + result.stderr

    text = run_cli(openbao, "source", "verify-plan", str(plan_file), token=operator)
    assert text.returncode == 1
    assert "missing-fields (lacks password, host)" in text.stdout
    assert "1/6 workloads ok, 1 skipped" in text.stdout
    assert CANARY not in text.stdout + text.stderr
    assert hashlib.sha256(plan_file.read_bytes()).digest() == before


def test_verify_exits_zero_when_everything_is_present(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    openbao.bao("kv", "put", f"{kv_mount}/a", f"k={CANARY}")
    data = plan_dict(unique("ok"), {"t": [workload("w", {f"{kv_mount}/data/a": {"k": "K"}})]})
    plan_file = write_plan(tmp_path / "plan.yaml", data)
    result = run_cli(openbao, "source", "verify-plan", str(plan_file))
    assert result.returncode == 0, result.stderr
    assert "all secrets present" in result.stdout


def test_verify_with_a_refused_token_exits_3(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    data = plan_dict(unique("bad"), {"t": [workload("w", {f"{kv_mount}/data/a": {}})]})
    plan_file = write_plan(tmp_path / "plan.yaml", data)
    result = run_cli(openbao, "source", "verify-plan", str(plan_file), token="s.not-a-token-xyz")
    assert result.returncode == 3
    assert "permission denied" in result.stderr
    assert "s.not-a-token-xyz" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
