"""The ``-o json`` results of protect, unprotect and finalize runs: built from the library's
Structs, their committed schemas generated from them (and current), and a real-shaped result
validating against its schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from cloudtaser.target.engine.core import Outcome, RunReport, WorkloadResult
from cloudtaser.target.engine.result import (
    KINDS,
    FinalizeRun,
    SecretEntry,
    finalize_run,
    json_schema,
    protect_run,
)
from cloudtaser.target.kube.workloads import WorkloadRef

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_committed_run_schema_is_current(kind: str) -> None:
    committed = json.loads((ROOT / "schema" / f"output-{kind}.schema.json").read_text())
    assert committed == json_schema(kind), (
        f"schema/output-{kind}.schema.json is stale: regenerate it with\n"
        f"  python -c 'import json; from cloudtaser.target.engine.result import json_schema; "
        f'print(json.dumps(json_schema("{kind}"), indent=2))\' > schema/output-{kind}.schema.json'
    )


def _report() -> RunReport:
    ref = WorkloadRef(tenant="pay", namespace="pay", kind="Deployment", name="api")
    other = WorkloadRef(tenant="pay", namespace="pay", kind="Deployment", name="web")
    return RunReport(
        results=[
            WorkloadResult(ref, Outcome.DRY_RUN, "patch accepted (dry run)", ["w"], {"spec": {}}),
        ],
        not_reached=[other],
    )


def test_a_protect_result_keeps_the_envelope_order_and_validates() -> None:
    data = msgspec.to_builtins(protect_run(_report(), dry_run=True))
    assert list(data) == [
        "formatVersion",
        "kind",
        "dryRun",
        "interrupted",
        "quit",
        "stoppedOnError",
        "results",
        "notReached",
        "summary",
    ]
    assert data["results"][0]["patch"] == {"spec": {}}
    assert data["summary"]["dry-run"] == 1
    assert data["summary"]["notReached"] == 1
    jsonschema.Draft202012Validator(json_schema("protect-run")).validate(data)


def test_a_finalize_result_places_secrets_before_the_summary_and_omits_empty_fields() -> None:
    secrets = [SecretEntry(namespace="pay", name="db", action="deleted", users=[])]
    data = msgspec.to_builtins(finalize_run(_report(), dry_run=False, secrets=secrets))
    assert list(data)[-2:] == ["secrets", "summary"]
    assert data["secrets"] == [{"namespace": "pay", "name": "db", "action": "deleted", "users": []}]
    jsonschema.Draft202012Validator(json_schema("finalize-run")).validate(data)
    assert "secrets" not in msgspec.to_builtins(
        finalize_run(_report(), dry_run=False, secrets=None)
    )
    again = msgspec.convert(data, FinalizeRun)
    assert msgspec.to_builtins(again) == data
