"""``finalize --delete-secrets``'s pure decisions: a Secret goes only when every key it holds is
mapped by the plan and proven in the vault by the verification report, or released by a
reviewer; ``--require-verified`` covers the workloads each command acts on (migrated ones for
finalize); the gates of unprotect and finalize refuse an unapproved plan before any request.
The cluster side (preconditions, re-check, the real deletion) is tested on the real API server
in tests/integration/test_delete_safety.py."""

from __future__ import annotations

import argparse
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudtaser import plan as planlib
from cloudtaser.cli import main
from cloudtaser.errors import ApprovalError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from cloudtaser.plan.attest import ProvenPath, build_report, require_verified, uncovered
from cloudtaser.plan.model import WorkloadStatus
from cloudtaser.target.finalize.step import verification_warning
from cloudtaser.target.references.safety import key_safety, proven_fields, report_problem

NS = "payments"
DB = f"secret/data/{NS}/db"


def _workload(
    name: str = "api",
    *,
    status: WorkloadStatus | None = WorkloadStatus.MIGRATED,
    fields: dict[str, str] | None = None,
    released: list[str] | None = None,
    path: str = DB,
) -> Workload:
    return Workload(
        kind="Deployment",
        name=name,
        status=status,
        secrets=[
            SecretRef(
                source="db",
                vault_path=path,
                fields=fields if fields is not None else {"password": "DB_PASSWORD"},
                via="env",
                released_keys=released or [],
            )
        ],
    )


def _plan(*workloads: Workload) -> MigrationPlan:
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="safety", cluster="c"),
        tenants=[Tenant(name=NS, namespace=NS, workloads=list(workloads) or [_workload()])],
    )


def _proven(plan: MigrationPlan, proven: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    report = build_report(
        plan, {p: (f, 1) for p, f in proven.items()}, vault_address="https://bao.example"
    )
    assert report_problem(plan, report) is None
    return proven_fields(report)


# -- key-level safety ------------------------------------------------------------------------


def test_an_unmapped_key_keeps_the_secret_and_is_named_with_what_to_do() -> None:
    plan = _plan()
    proven = _proven(plan, {DB: ["password"]})

    safety = key_safety(plan.tenants[0], "db", ["admin_password", "password"], proven)

    assert not safety.safe
    assert safety.unmapped == ("admin_password",)
    assert safety.proven == ("password",)
    assert safety.keeping == ("admin_password",)
    problem = safety.problem() or ""
    assert "admin_password" in problem
    assert "lose them for good" in problem
    assert "releasedKeys" in problem
    assert "re-approved" in problem
    assert "password," not in problem  # the proven key is not blamed


def test_a_key_released_by_the_reviewer_needs_no_mapping_and_no_proof() -> None:
    plan = _plan(_workload(released=["admin_password"]))
    proven = _proven(plan, {DB: ["password"]})

    safety = key_safety(plan.tenants[0], "db", ["admin_password", "password"], proven)

    assert safety.safe
    assert safety.released == ("admin_password",)
    assert safety.problem() is None
    # all keys released: safe even without a report
    only_released = key_safety(plan.tenants[0], "db", ["admin_password"], None)
    assert only_released.safe


def test_without_a_report_every_mapped_key_keeps_the_secret() -> None:
    plan = _plan()

    safety = key_safety(plan.tenants[0], "db", ["password"], None)

    assert not safety.safe
    assert safety.unproven == ("password",)
    problem = safety.problem() or ""
    assert "no verification report was given" in problem
    assert "verify-plan PLAN --attest REPORT" in problem
    assert "--require-verified REPORT" in problem
    assert DB in problem


def test_a_report_that_does_not_prove_the_field_keeps_the_secret() -> None:
    plan = _plan(_workload(fields={"password": "DB_PASSWORD", "username": "DB_USER"}))
    proven = _proven(plan, {DB: ["username"]})

    safety = key_safety(plan.tenants[0], "db", ["password", "username"], proven)

    assert not safety.safe
    assert safety.unproven == ("password",)
    assert safety.proven == ("username",)
    assert "does not prove them present" in (safety.problem() or "")


def test_a_report_for_other_reviewed_content_proves_nothing() -> None:
    plan = _plan()
    report = build_report(plan, {DB: (["password"], 1)}, vault_address="https://bao.example")
    released = _plan(_workload(released=["admin_password"]))  # a reviewed edit

    problem = report_problem(released, report)

    assert problem is not None
    assert "reviewed content" in problem
    safety = key_safety(released.tenants[0], "db", ["password"], None, no_proof=problem)
    assert not safety.safe
    assert "reviewed content" in (safety.problem() or "")


def test_a_skipped_workload_maps_nothing_but_may_release() -> None:
    plan = _plan(
        _workload("api", fields={"password": "DB_PASSWORD"}),
        _workload(
            "old",
            status=WorkloadStatus.SKIPPED,
            fields={"admin_password": "ADMIN"},
            released=["legacy"],
        ),
    )
    proven = _proven(plan, {DB: ["password", "admin_password"]})

    safety = key_safety(plan.tenants[0], "db", ["admin_password", "legacy", "password"], proven)

    assert safety.unmapped == ("admin_password",)
    assert safety.released == ("legacy",)


def test_a_key_mapped_to_two_paths_is_safe_when_one_of_them_is_proven() -> None:
    other = f"secret/data/{NS}/db-copy"
    plan = _plan(_workload("api"), _workload("worker", path=other))
    proven = _proven(plan, {other: ["password"]})

    assert key_safety(plan.tenants[0], "db", ["password"], proven).safe
    assert not key_safety(plan.tenants[0], "db", ["password"], {}).safe


def test_a_secret_of_another_source_or_a_vault_agent_entry_maps_nothing() -> None:
    agent = Workload(
        kind="Deployment",
        name="agent",
        status=WorkloadStatus.MIGRATED,
        secrets=[
            SecretRef(
                source="db",
                vault_path=DB,
                fields={"token": "TOKEN"},
                via="vaultAgent",
                released_keys=["other"],
            )
        ],
    )
    plan = _plan(_workload(), agent)
    proven = _proven(plan, {DB: ["password", "token"]})

    safety = key_safety(plan.tenants[0], "db", ["other", "password", "token"], proven)

    assert safety.unmapped == ("other", "token")
    assert key_safety(plan.tenants[0], "cache", ["password"], proven).unmapped == ("password",)


def test_many_keys_are_named_with_a_bound() -> None:
    plan = _plan()
    keys = [f"k{i:03}" for i in range(50)]

    problem = key_safety(plan.tenants[0], "db", keys, None).problem() or ""

    assert "k000" in problem
    assert "and 30 more" in problem
    assert "k049" not in problem


def test_proven_fields_merges_entries_of_one_path() -> None:
    plan = _plan()
    report = build_report(plan, {DB: (["a"], 1)}, vault_address="https://bao.example")
    report.proven.append(ProvenPath(vault_path=DB, fields=["b"]))

    assert proven_fields(report) == {DB: frozenset({"a", "b"})}


# -- the verification gate covers what the command acts on ------------------------------------


def test_require_verified_for_finalize_covers_migrated_not_pending_workloads() -> None:
    pending_path = f"secret/data/{NS}/cache"
    plan = _plan(
        _workload("api"),  # migrated, on DB
        _workload("worker", status=None, path=pending_path),  # pending
    )
    only_pending = build_report(
        plan, {pending_path: (["password"], 1)}, vault_address="https://bao.example"
    )

    require_verified(plan, only_pending)  # protect's view: every pending workload covered
    assert uncovered(plan, only_pending, status=WorkloadStatus.MIGRATED) == [
        f"Deployment {NS}/api: {DB} not proven"
    ]
    with pytest.raises(ApprovalError, match=r"does not cover 1 migrated workload\(s\)"):
        require_verified(plan, only_pending, status=WorkloadStatus.MIGRATED)


def test_the_warning_goes_with_a_report_and_says_what_delete_secrets_keeps_without() -> None:
    plan = _plan()
    report = build_report(plan, {DB: (["password"], 1)}, vault_address="https://bao.example")

    assert verification_warning(report, delete_secrets=True) is None
    plain = verification_warning(None) or ""
    assert "does not record a verify-plan result" not in plain
    assert "--require-verified REPORT" in plain
    assert "--delete-secrets" not in plain
    deleting = verification_warning(None, delete_secrets=True) or ""
    assert "--delete-secrets keeps every Secret holding a key the plan maps" in deleting
    assert "verify-plan PLAN --attest REPORT" in deleting


# -- the CLI wiring ----------------------------------------------------------------------------


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(plan file, reviewer key, allowed-signers file); the plan is not approved yet."""
    key = tmp_path / "reviewer"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sec@example.com", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    allowed = tmp_path / "allowed_signers"
    public = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    allowed.write_text(f"sec@example.com {public}\n")
    plan_file = tmp_path / "plan.yaml"
    planlib.save(_plan(), plan_file)
    return plan_file, key, allowed


@pytest.mark.parametrize("command", ["unprotect", "finalize"])
def test_unprotect_and_finalize_refuse_an_unapproved_plan_before_any_request(
    command: str,
    signed: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan_file, _key, allowed = signed
    before = plan_file.read_bytes()

    code = main(
        [
            "target", command, "--plan", str(plan_file), "--yes",
            "--kubeconfig", str(tmp_path / "no-such-kubeconfig"),
            "--require-approval", "--allowed-signers", str(allowed),
        ]
    )  # fmt: skip

    assert code == 5
    err = capsys.readouterr().err
    assert "not approved" in err
    assert "kubeconfig" not in err  # refused before the cluster connection
    assert plan_file.read_bytes() == before


def test_finalize_require_verified_refuses_a_report_covering_only_pending_workloads(
    signed: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudtaser.plan.attest import dump_report

    pending_path = f"secret/data/{NS}/cache"
    plan = _plan(_workload("api"), _workload("worker", status=None, path=pending_path))
    plan_file = tmp_path / "two.yaml"
    planlib.save(plan, plan_file)
    report = build_report(
        plan,
        {pending_path: (["password"], 1)},
        vault_address="https://bao.example",
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )
    report_file = tmp_path / "verified.json"
    report_file.write_bytes(dump_report(report))
    kube = ["--kubeconfig", str(tmp_path / "no-such-kubeconfig")]

    code = main(
        ["target", "finalize", "--plan", str(plan_file), "--yes", *kube,
         "--require-verified", str(report_file)]
    )  # fmt: skip

    assert code == 5
    err = capsys.readouterr().err
    assert "does not cover 1 migrated workload(s)" in err
    assert f"Deployment {NS}/api" in err
    # protect acts on the pending one, which the report covers: past the gate
    code = main(
        ["target", "protect", "--plan", str(plan_file), "--yes", *kube,
         "--vault-address", "https://bao.example", "--require-verified", str(report_file)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "does not cover" not in err
    assert "kubeconfig" in err


def test_finalize_gate_hands_the_report_it_checked_to_the_run(
    signed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from cloudtaser.cli.approval_opts import resolve_gates
    from cloudtaser.plan.attest import dump_report

    plan_file, _key, _allowed = signed
    plan = planlib.load(plan_file)
    report_file = tmp_path / "verified.json"
    report_file.write_bytes(
        dump_report(build_report(plan, {DB: (["password"], 1)}, vault_address="https://b.example"))
    )
    args = argparse.Namespace(
        plan=str(plan_file),
        require_approval=False,
        allowed_signers=None,
        min_approvals=None,
        require_verified=str(report_file),
        verified_covers="migrated",
        tenant=[],
        workload=[],
    )

    gates = resolve_gates(args)

    assert gates.check is not None
    assert gates.report is not None
    gates.check(plan)
    assert proven_fields(gates.report) == {DB: frozenset({"password"})}
