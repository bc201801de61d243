"""``cloudtaser plan diff``: reviewed-content changes, status changes apart, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cloudtaser import plan as planlib
from cloudtaser.cli import main
from cloudtaser.plan.diff import diff_plans
from cloudtaser.plan.store import PlanStore
from tests.unit.test_plan import VALID


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def old(tmp_path: Path) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text(VALID)
    return path


def _edited(tmp_path: Path) -> Path:
    data = yaml.safe_load(VALID)
    api = data["tenants"][0]["workloads"][0]
    api["secrets"][0]["vaultPath"] = "secret/data/payments/pg"
    api["secrets"][0]["fields"]["password"] = "PG_PASSWORD"
    api["secrets"][0]["fields"]["host"] = "PG_HOST"
    del api["secrets"][0]["fields"]["username"]
    data["tenants"][0]["workloads"].pop(1)  # ledger removed
    data["tenants"][1]["workloads"].append({"kind": "Deployment", "name": "site", "secrets": []})
    data["tenants"].append({"name": "billing", "namespace": "billing", "workloads": []})
    return _write(tmp_path / "new.yaml", data)


def test_diff_names_every_reviewed_change(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _edited(tmp_path)
    assert main(["plan", "diff", str(old), str(new), "--output", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "plan-diff"
    assert report["summary"]["reviewedChanged"] is True
    assert report["oldDigest"] != report["newDigest"]
    changes = {(c["op"], c["path"]) for c in report["changes"]}
    api = "tenants[payments].workloads[Deployment/api].secrets[postgres-credentials]"
    assert changes == {
        ("changed", f"{api}.vaultPath"),
        ("changed", f"{api}.fields.password"),
        ("added", f"{api}.fields.host"),
        ("removed", f"{api}.fields.username"),
        ("removed", "tenants[payments].workloads[StatefulSet/ledger]"),
        ("added", "tenants[web].workloads[Deployment/site]"),
        ("added", "tenants[billing]"),
    }
    by_path = {c["path"]: c for c in report["changes"]}
    assert by_path[f"{api}.fields.password"]["old"] == "POSTGRES_PASSWORD"
    assert by_path[f"{api}.fields.password"]["new"] == "PG_PASSWORD"
    assert report["statusChanges"] == []

    assert main(["plan", "diff", str(old), str(new)]) == 1
    text = capsys.readouterr().out
    assert "reviewed content differs" in text
    assert f'~ {api}.vaultPath: "secret/data/payments/postgres-credentials" -> ' in text
    assert "+ tenants[billing]" in text
    assert "- tenants[payments].workloads[StatefulSet/ledger]" in text


def test_status_changes_are_shown_apart_and_exit_zero(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "after-protect.yaml"
    new.write_text(VALID)
    with PlanStore(new, actor="ci") as store:
        plan = store.load()
        store.record(plan.tenants[0].workloads[0], planlib.WorkloadStatus.MIGRATED, reason="ok")
        store.record(
            plan.tenants[0].workloads[1],
            planlib.WorkloadStatus.PENDING,
            reason="rollout failed",
            error="rollout timed out",
        )
    assert main(["plan", "diff", str(old), str(new)]) == 0
    text = capsys.readouterr().out
    assert "reviewed content unchanged" in text
    assert "payments/Deployment/api: pending -> migrated (1 new history entries)" in text
    assert "lastError: rollout timed out" in text
    assert main(["plan", "diff", str(old), str(new), "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["changes"] == []
    assert [s["workload"] for s in report["statusChanges"]] == [
        "payments/Deployment/api",
        "payments/StatefulSet/ledger",
    ]


def test_reorder_and_skip_are_reviewed_changes() -> None:
    data = yaml.safe_load(VALID)
    data["tenants"][0]["workloads"].reverse()
    data["tenants"][0]["workloads"][0]["status"] = "skipped"
    result = diff_plans(planlib.loads(VALID), planlib.loads(yaml.safe_dump(data)))
    ops = {(c.op, c.path) for c in result.changes}
    assert ("reordered", "tenants[payments].workloads") in ops
    assert ("added", "tenants[payments].workloads[StatefulSet/ledger].status") in ops
    assert result.reviewed_changed


def test_diff_of_an_invalid_plan_is_exit_2(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("kind: Deployment", "kind: Pod"))
    assert main(["plan", "diff", str(old), str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


# --- committed JSON schemas of the new outputs ---------------------------------------------------

SCHEMAS = Path(__file__).parents[2] / "schema"


def _conforms(value: object, schema: dict, where: str = "$") -> None:
    """The subset of JSON Schema these files use: type, const, enum, required, properties,
    additionalProperties: false, items, minimum, pattern."""
    import re

    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}
    if kind is not None:
        assert isinstance(value, types[kind]), f"{where}: not {kind}"
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema:
        assert value in schema["enum"], where
    if "pattern" in schema:
        assert isinstance(value, str), where
        assert re.search(schema["pattern"], value), where
    if "minimum" in schema:
        assert isinstance(value, int), where
        assert value >= schema["minimum"], where
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: {key} missing"
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                _conforms(item, props[key], f"{where}.{key}")
            else:
                assert schema.get("additionalProperties", True) is not False, f"{where}.{key}"
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _conforms(item, schema["items"], f"{where}[{index}]")


def test_diff_and_approvals_json_match_their_committed_schemas(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _edited(tmp_path)
    with PlanStore(new, actor="ci") as store:
        plan = store.load()
        store.record(plan.tenants[0].workloads[0], planlib.WorkloadStatus.MIGRATED, reason="ok")
    assert main(["plan", "diff", str(old), str(new), "--output", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["changes"]
    assert report["statusChanges"]
    _conforms(report, json.loads((SCHEMAS / "output-plan-diff.schema.json").read_text()))

    signers = tmp_path / "allowed"
    signers.write_text(
        "x@example.com ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIBwQb7cNnN0F0pQ0Hkq8v1pnxKn8W2h+Yc3g4b5d6e7f\n"
    )
    old.write_text(
        old.read_text()
        + 'approvals:\n- identity: x@example.com\n  at: "2026-01-01T00:00:00Z"\n'
        + f"  digest: sha256:{'0' * 64}\n"
        + '  signature: "-----BEGIN SSH SIGNATURE-----\\nQUJD\\n-----END SSH SIGNATURE-----\\n"\n'
    )
    code = main(
        [
            "plan",
            "verify-approvals",
            str(old),
            "--allowed-signers",
            str(signers),
            "-v",
            "--output",
            "json",
        ]
    )
    assert code == 5  # not approved: the gate's code
    result = json.loads(capsys.readouterr().out)
    assert result["approvals"][0]["state"] == "invalid"
    _conforms(result, json.loads((SCHEMAS / "output-plan-approvals.schema.json").read_text()))


def test_verification_report_schema_is_current() -> None:
    from cloudtaser.plan.attest import report_schema

    committed = json.loads((SCHEMAS / "verification-report.schema.json").read_text())
    assert committed == report_schema(), (
        "schema/verification-report.schema.json is stale: regenerate it from "
        "cloudtaser.plan.attest.report_schema()"
    )
