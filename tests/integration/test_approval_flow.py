"""approve -> apply-plan --require-approval -> verify-plan --attest -> protect
--require-verified, against a real OpenBao dev server (docs/approval.md)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.source_helpers import (
    enable_k8s_auth,
    plan_dict,
    run_cli,
    unique,
    workload,
    write_plan,
)
from tests.testenv.openbao import CLI_AGENT, BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.vault]

CANARY = "canary-Attest-51c2-never-print"


@pytest.fixture
def reviewer(tmp_path: Path) -> tuple[Path, Path]:
    """(private key, allowed-signers file) of one reviewer who may sign plans and reports."""
    key = tmp_path / "reviewer"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sec@example.com", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    public = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        f'sec@example.com namespaces="cloudtaser-plan,cloudtaser-verification" {public}\n'
    )
    return key, allowed


def _plan(kv: str, auth: str) -> dict:
    return plan_dict(
        unique("attest"),
        {
            "app": [
                workload("api", {f"{kv}/data/app/db": {"user": "DB_USER", "password": "DB_PW"}}),
                workload("worker", {f"{kv}/data/app/cache": {"url": "C_URL", "pw": "C_PW"}}),
                workload("old", {f"{kv}/data/app/never": {"k": "K"}}, status="skipped"),
            ]
        },
        auth_mount=auth,
    )


def _protect(openbao: BaoServer, plan: Path, tmp_path: Path, *extra: str):
    return run_cli(
        openbao,
        "target",
        "protect",
        "--plan",
        str(plan),
        "--kubeconfig",
        str(tmp_path / "missing-kubeconfig"),
        "--vault-address",
        openbao.address,
        "--yes",
        *extra,
    )


def test_approve_apply_verify_protect_gates(
    openbao: BaoServer, kv_mount: str, tmp_path: Path, reviewer: tuple[Path, Path]
) -> None:
    key, allowed = reviewer
    openbao.bao("kv", "put", f"{kv_mount}/app/db", f"user={CANARY}-u", f"password={CANARY}-p")
    openbao.bao("kv", "put", f"{kv_mount}/app/cache", f"url={CANARY}-c")  # no pw yet
    auth = enable_k8s_auth(openbao, unique("k8s"))
    plan_file = write_plan(tmp_path / "plan.yaml", _plan(kv_mount, auth))
    gate = ["--require-approval", "--allowed-signers", str(allowed)]

    # unapproved: refused before any vault request
    mark = openbao.audit_mark()
    refused = run_cli(openbao, "source", "apply-plan", str(plan_file), *gate)
    assert refused.returncode == 5, refused.stderr
    assert "not approved: reviewed content sha256:" in refused.stderr
    assert openbao.request_ops_since(mark, client=CLI_AGENT) == []

    approved = run_cli(
        openbao, "plan", "approve", str(plan_file), "--key", str(key), "--comment", "CHG-7"
    )
    assert approved.returncode == 0, approved.stderr
    applied = run_cli(openbao, "source", "apply-plan", str(plan_file), *gate)
    assert applied.returncode == 0, applied.stderr
    approved_bytes = plan_file.read_bytes()

    # verify-plan --attest: report written, signed, plan untouched, no value anywhere
    report_file = tmp_path / "verified.json"
    verified = run_cli(
        openbao,
        "source",
        "verify-plan",
        str(plan_file),
        "--attest",
        str(report_file),
        "--key",
        str(key),
    )
    assert verified.returncode == 1, verified.stderr  # worker lacks 'pw'
    assert plan_file.read_bytes() == approved_bytes
    report = json.loads(report_file.read_text())
    assert report["kind"] == "VerificationReport"
    assert report["vault"]["address"] == openbao.address
    digest = run_cli(openbao, "plan", "canonical", str(plan_file), "--digest").stdout.strip()
    assert report["digest"] == digest
    proven = {p["vaultPath"]: p["fields"] for p in report["proven"]}
    assert proven == {
        f"{kv_mount}/data/app/db": ["password", "user"],
        f"{kv_mount}/data/app/cache": ["url"],
    }
    assert report["signatures"][0]["identity"] == "sec@example.com"
    for text in (report_file.read_text(), verified.stdout, verified.stderr):
        assert CANARY not in text

    # protect refuses, naming the workload the report does not cover
    blocked = _protect(openbao, plan_file, tmp_path, *gate, "--require-verified", str(report_file))
    assert blocked.returncode == 5
    assert "Deployment app/worker" in blocked.stderr
    assert "fields pw not proven" in blocked.stderr
    assert "verify-plan" in blocked.stderr
    assert "app/api" not in blocked.stderr

    # the missing field arrives; a fresh report covers everything
    openbao.bao("kv", "put", f"{kv_mount}/app/cache", f"url={CANARY}-c", f"pw={CANARY}-w")
    verified = run_cli(
        openbao,
        "source",
        "verify-plan",
        str(plan_file),
        "--attest",
        str(report_file),
        "--key",
        str(key),
    )
    assert verified.returncode == 0, verified.stderr
    passed = _protect(openbao, plan_file, tmp_path, *gate, "--require-verified", str(report_file))
    assert "no kubeconfig found" in passed.stderr  # past both gates, on to the cluster
    assert "not approved" not in passed.stderr

    # a report edited after signing is refused
    forged = json.loads(report_file.read_text())
    forged["proven"].append({"vaultPath": f"{kv_mount}/data/app/extra", "fields": []})
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))
    bad = _protect(openbao, plan_file, tmp_path, *gate, "--require-verified", str(forged_file))
    assert bad.returncode == 5
    assert "no valid signature" in bad.stderr

    # a plan changed after verification: the report no longer applies (nor the approval)
    edited = plan_file.read_text().replace("DB_PW", "DB_PASSWORD")
    plan_file.write_text(edited)
    stale = _protect(openbao, plan_file, tmp_path, "--require-verified", str(report_file))
    assert stale.returncode == 5
    assert f"reviewed content {digest}" in stale.stderr
    assert hashlib.sha256(report_file.read_bytes()).hexdigest()  # report untouched, readable
