"""Issue 17 on a real control plane: protect's interactive answers l (not now), a (all
remaining), t (rest of this tenant); the closing tally and [n/N] lines; JSON with a summary
that validates; undoing a skip with ``plan set-status``; http:// vault address warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.integration.test_protect import (
    REPO,
    _cli,
    _env,
    _setup,
    _spec,
    _statuses,
    _workload,
    _write_plan,
)
from tests.testenv.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _plan_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudtaser", "plan", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=_env(),
    )


def test_interactive_later_all_and_tenant_answers_then_undo_a_skip(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    names = ("one", "two", "three", "four", "five")
    specs = [_spec("Deployment", n, namespace) for n in names]
    _setup(kube_client, namespace, specs)
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [(s.kind, s.name) for s in specs]})

    # one: later (not now), two: no (skipped), three: rest of this tenant -> four, five too
    first = _cli(cluster, "protect", plan, "--interactive", input="l\nn\nt\n")
    assert first.returncode == 0, first.stderr
    assert "[l]ater (not now, stays pending)" in first.stderr
    assert "[a]ll remaining" in first.stderr
    assert f"protect Deployment {namespace}/four: yes (rest of tenant {namespace})" in first.stderr
    assert _statuses(plan) == {
        f"{namespace}/one": "pending",
        f"{namespace}/two": "skipped",
        f"{namespace}/three": "migrated",
        f"{namespace}/four": "migrated",
        f"{namespace}/five": "migrated",
    }
    assert not _workload(plan, namespace, "one").history  # "not now" records nothing
    # the closing tally, on stderr (progress) and stdout (result)
    assert "3 migrated, 1 skipped, 1 deferred" in first.stderr
    assert "5 workload(s): 3 migrated, 1 skipped, 1 deferred" in first.stdout
    # piped: one line per finished workload with [n/N], no rollout polling chatter
    assert f"[3/5] Deployment {namespace}/three: migrated" in first.stderr
    assert "updated replicas are available" not in first.stderr

    # undo the skip without editing YAML; recorded in history
    undo = _plan_cli(
        "set-status",
        str(plan),
        "--workload",
        f"{namespace}/Deployment/two",
        "--status",
        "pending",
        "--reason",
        "answered n by mistake",
    )
    assert undo.returncode == 0, undo.stderr
    two = _workload(plan, namespace, "two")
    assert str(two.effective_status) == "pending"
    assert two.history[-1].reason == "answered n by mistake"
    assert two.history[-1].by

    # a: every remaining workload, JSON result with a summary that validates
    second = _cli(cluster, "protect", plan, "--interactive", "-o", "json", input="a\n")
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    schema = json.loads((REPO / "schema" / "output-protect-run.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["formatVersion"] == "1"
    assert doc["summary"]["migrated"] == 2
    assert doc["summary"]["total"] == 2
    assert set(_statuses(plan).values()) == {"migrated"}


def test_protect_warns_loudly_about_a_plain_http_vault_address(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    specs = [_spec("Deployment", "web", namespace)]
    _setup(kube_client, namespace, specs)
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "web")]})
    result = _cli(cluster, "protect", plan, "--dry-run")  # _cli passes an http:// address
    assert result.returncode == 0, result.stderr
    assert "WARNING: --vault-address http://" in result.stderr
    assert "UNENCRYPTED" in result.stderr


def _validate(kind: str, document: dict) -> None:
    schema = json.loads((REPO / "schema" / f"output-{kind}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)


def test_discover_and_unprotect_json_reports_validate(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    specs = [_spec("Deployment", "api", namespace)]
    _setup(kube_client, namespace, specs)
    plan = tmp_path / "plan.yaml"
    base = [sys.executable, "-m", "cloudtaser", "target", "discover"]
    found = subprocess.run(
        [*base, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
         "--output-plan", str(plan), "-o", "json"],
        capture_output=True, text=True, check=False, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    doc = json.loads(found.stdout)
    _validate("discover", doc)
    assert doc["summary"]["workloads"] == 1
    assert doc["outputPlan"] == str(plan)
    assert plan.exists()
    assert not (REPO / "json").exists()

    assert _cli(cluster, "protect", plan, "--yes").returncode == 0
    undo = _cli(cluster, "unprotect", plan, "--yes", "-o", "json")
    assert undo.returncode == 0, undo.stderr
    report = json.loads(undo.stdout)
    _validate("unprotect-run", report)
    assert report["summary"]["unprotected"] == 1
