"""The ``-o json`` results of protect, unprotect and finalize runs: built from the library's
Structs, their committed schemas generated from them (and current), and a real-shaped result
validating against its schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import msgspec

from cloudtaser.results import json_schema
from cloudtaser.target.engine.core import Outcome, RunReport, WorkloadResult
from cloudtaser.target.engine.result import (
    FinalizeRun,
    ProtectRun,
    SecretEntry,
    finalize_run,
    protect_run,
)
from cloudtaser.target.kube.workloads import WorkloadRef

ROOT = Path(__file__).parents[2]


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
    jsonschema.Draft202012Validator(json_schema(ProtectRun)).validate(data)


def test_a_finalize_result_places_secrets_before_the_summary_and_omits_empty_fields() -> None:
    secrets = [SecretEntry(namespace="pay", name="db", action="deleted", users=[])]
    data = msgspec.to_builtins(finalize_run(_report(), dry_run=False, secrets=secrets))
    assert list(data)[-2:] == ["secrets", "summary"]
    assert data["secrets"] == [{"namespace": "pay", "name": "db", "action": "deleted", "users": []}]
    jsonschema.Draft202012Validator(json_schema(FinalizeRun)).validate(data)
    assert "secrets" not in msgspec.to_builtins(
        finalize_run(_report(), dry_run=False, secrets=None)
    )
    again = msgspec.convert(data, FinalizeRun)
    assert msgspec.to_builtins(again) == data
