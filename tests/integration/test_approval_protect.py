"""A real protect run (real API server, controllers, kwok) keeps a plan's approvals valid; a plan
edited after approval is refused before anything in the cluster changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.apps_v1 import ReplicaSet

from cloudtaser import plan as planlib
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import (
    ContainerSpec,
    WorkloadSpec,
    create_secret,
    create_workload,
    wait_rollout,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAULT = "http://openbao.vault.svc:8200"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=REPO,
        env=env,
    )


@cache
def _protect_extra() -> tuple[str, ...]:
    """kwok pods never run an injector: skip that proof where protect has it (issue 15)."""
    helptext = _run("target", "protect", "--help").stdout
    return ("--no-verify-injection",) if "--no-verify-injection" in helptext else ()


def _replica_sets(client: Any, namespace: str) -> int:
    return len(list(client.list(ReplicaSet, namespace=namespace)))


def test_protect_with_require_approval_keeps_approvals_and_refuses_edits(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    key = tmp_path / "sec"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sec@example.com", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("sec@example.com " + " ".join(Path(f"{key}.pub").read_text().split()[:2]))
    create_secret(kube_client, namespace, "db", {"password": "not-a-real-value"})
    container = ContainerSpec(secret_env={"DB_PASSWORD": ("db", "password")})
    for name in ("web", "api"):
        create_workload(
            kube_client, WorkloadSpec("Deployment", name, namespace, containers=[container])
        )
        wait_rollout(kube_client, "Deployment", namespace, name, timeout=90)
    plan = MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="approved", cluster="ct-main"),
        tenants=[
            Tenant(
                name=namespace,
                namespace=namespace,
                workloads=[
                    Workload(
                        kind="Deployment",
                        name=name,
                        secrets=[
                            SecretRef(
                                source="db",
                                vault_path=f"secret/data/{namespace}/db",
                                fields={"password": "DB_PASSWORD"},
                                via="env",
                            )
                        ],
                    )
                    for name in ("web", "api")
                ],
            )
        ],
    )
    plan_file = tmp_path / "plan.yaml"
    planlib.save(plan, plan_file)
    approved = _run("plan", "approve", str(plan_file), "--key", str(key))
    assert approved.returncode == 0, approved.stderr
    shutil.copy(plan_file, tmp_path / "approved.yaml")
    protect = [
        "target", "protect", "--plan", str(plan_file), "--kubeconfig", str(cluster.kubeconfig),
        "--vault-address", VAULT, "--yes", "--poll-interval", "200ms",
        "--require-approval", "--allowed-signers", str(allowed), *_protect_extra(),
    ]  # fmt: skip

    # an edit after approval: refused, nothing in the cluster changes
    edited = tmp_path / "edited.yaml"
    edited.write_text(plan_file.read_text().replace("DB_PASSWORD", "DB_PASS"))
    before = _replica_sets(kube_client, namespace)
    refused = _run(*[str(edited) if a == str(plan_file) else a for a in protect])
    assert refused.returncode == 5
    assert "not approved" in refused.stderr
    assert "plan diff" in refused.stderr
    assert _replica_sets(kube_client, namespace) == before
    diff = _run("plan", "diff", str(tmp_path / "approved.yaml"), str(edited))
    assert diff.returncode == 1
    assert "fields.password" in diff.stdout

    # the approved plan runs; its status updates keep the approval valid
    result = _run(*protect)
    assert result.returncode == 0, result.stderr
    statuses = {
        w.name: str(w.effective_status) for _t, w in planlib.load(plan_file).iter_workloads()
    }
    assert statuses == {"web": "migrated", "api": "migrated"}
    assert _replica_sets(kube_client, namespace) == before + 2
    check = _run("plan", "verify-approvals", str(plan_file), "--allowed-signers", str(allowed))
    assert check.returncode == 0, check.stdout + check.stderr
    diff = _run("plan", "diff", str(tmp_path / "approved.yaml"), str(plan_file))
    assert diff.returncode == 0
    assert "reviewed content unchanged" in diff.stdout
    assert f"{namespace}/Deployment/web: pending -> migrated" in diff.stdout
