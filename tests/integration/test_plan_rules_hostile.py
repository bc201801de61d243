"""Hostile plans against the real servers (issue 28, findings 3 and 8).

- A forged ``finalizedRefs`` (run state, not signed): another Secret's ``root-password`` as
  ``LOG_BANNER``, an ``envFrom`` of an unrelated Secret. A real ``target unprotect`` refuses
  the plan with exit 2 and puts nothing into the workload, while the plan the real
  ``target finalize`` wrote (with an ``envFrom`` prefix) is accepted and restored.
- A vault field mapped to ``LD_PRELOAD``: a real ``source apply-plan`` writes no policy into
  the real OpenBao, a real ``target protect`` writes no annotation; once the reviewed plan lists
  it in ``acceptedDangerousEnv`` both go through and protect writes
  ``cloudtaser.io/accept-dangerous-env`` (which unprotect removes again).

Workloads run on kwok (no injector): "injected" ones are created in the injected shape, as in
tests/integration/test_lifecycle.py, whose helpers this file reuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightkube.resources.core_v1 import Secret

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.plan import FinalizedRef, MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from tests.integration.source_helpers import (
    enable_k8s_auth,
    plan_dict,
    policy_paths,
    run_cli,
    unique,
    workload,
    write_plan,
)
from tests.integration.test_lifecycle import (
    CANARY,
    _app,
    _finalize,
    _plan,
    _protect,
    _run,
    _setup,
    _workload,
)
from tests.integration.test_protect import _obj, _owned_count, _template_annotations
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import CLI_AGENT, BaoServer
from tests.testenv.workloads import (
    ContainerSpec,
    WorkloadSpec,
    create_secret,
    create_workload,
    wait_rollout,
)


def _unprotect(cluster: Cluster, plan: Path) -> Any:
    return _run(
        cluster, "target", "unprotect", "--plan", str(plan), "--yes", "--poll-interval", "200ms"
    )


def _forge(plan: Path, refs: list[FinalizedRef]) -> None:
    """Append ``refs`` to the workload's finalizedRefs the way a text editor would: the loader
    is not asked (``planlib.save`` only writes)."""
    loaded = planlib.load(plan)
    _tenant, wl = next(loaded.iter_workloads())
    wl.finalized_refs = [*wl.finalized_refs, *refs]
    planlib.save(loaded, plan)


def test_unprotect_refuses_forged_finalized_refs_and_restores_nothing(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    create_secret(kube_client, namespace, "admin", {"root-password": CANARY})
    create_secret(kube_client, namespace, "unrelated", {"LOG_LEVEL": CANARY})
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    finalized = _finalize(cluster, plan)
    assert finalized.returncode == 0, finalized.stdout + finalized.stderr
    # the plan the real finalize wrote loads (its envFrom entry carries the prefix API_)
    refs = _workload(plan, "web").finalized_refs
    assert any(r.via == "envFrom" and r.secret == "api" and r.prefix == "API_" for r in refs)
    honest = plan.read_bytes()

    forged = [
        FinalizedRef(
            container="app", via="env", secret="admin", key="root-password", env="LOG_BANNER"
        ),
        FinalizedRef(container="app", via="envFrom", secret="unrelated"),
    ]
    # so the checks below can fail: the workload and both Secrets exist, and the forged
    # references are not in the workload yet
    assert kube_client.get(Secret, "admin", namespace=namespace).metadata.name == "admin"
    assert kube_client.get(Secret, "unrelated", namespace=namespace).metadata.name == "unrelated"
    before = _app(kube_client, namespace, "web")
    assert "LOG_BANNER" not in json.dumps(before)
    assert "unrelated" not in json.dumps(before)
    rollouts = _owned_count(kube_client, "Deployment", namespace, "web")
    annotations = _template_annotations(kube_client, "Deployment", namespace, "web")
    assert annotations[contract.INJECT] == "true"

    for refs_in_file, named in (
        (forged, "LOG_BANNER"),  # the first forged entry is named
        (forged[1:], "envFrom of Secret unrelated"),
    ):
        plan.write_bytes(honest)
        _forge(plan, refs_in_file)
        tampered = plan.read_bytes()

        result = _unprotect(cluster, plan)

        out = result.stdout + result.stderr
        assert result.returncode == 2, out
        assert named in result.stderr
        assert f"tenant {namespace}, Deployment web" in result.stderr
        assert "edited after finalize" in result.stderr
        assert "Traceback" not in out
        assert plan.read_bytes() == tampered  # nothing recorded
        after = _app(kube_client, namespace, "web")
        assert after == before  # nothing restored, nothing removed
        assert _owned_count(kube_client, "Deployment", namespace, "web") == rollouts
        assert _template_annotations(kube_client, "Deployment", namespace, "web") == annotations

    # the honest plan finalize wrote is still the way back
    plan.write_bytes(honest)
    result = _unprotect(cluster, plan)
    assert result.returncode == 0, result.stdout + result.stderr
    restored = json.dumps(_app(kube_client, namespace, "web"))
    assert "DB_PASSWORD" in restored
    assert "LOG_BANNER" not in restored
    assert "unrelated" not in restored


# --- a vault field mapped to LD_PRELOAD ------------------------------------------------------


def test_apply_plan_writes_no_policy_for_ld_preload_until_the_plan_accepts_it(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    auth_mount = enable_k8s_auth(openbao, unique("k8s"))
    name = unique("plan")
    fields = {"password": "DB_PASSWORD", "preload": "LD_PRELOAD"}
    data = plan_dict(
        name,
        {"payments": [workload("api", {f"{kv_mount}/data/payments/db": fields})]},
        auth_mount=auth_mount,
    )
    plan_file = write_plan(tmp_path / "plan.yaml", data)
    policy = f"cloudtaser-{name}-payments"
    mark = openbao.audit_mark()

    result = run_cli(openbao, "source", "apply-plan", str(plan_file))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "LD_PRELOAD" in result.stderr
    assert "tenant payments, Deployment api" in result.stderr
    assert "acceptedDangerousEnv" in result.stderr
    assert "Traceback" not in result.stderr
    assert openbao.requests_since(mark, client=CLI_AGENT) == []
    assert openbao.api("GET", f"sys/policies/acl/{policy}").status_code == 404

    # the reviewer's decision: the same plan with the acceptance is applied (so the check
    # above could fail)
    data["tenants"][0]["workloads"][0]["acceptedDangerousEnv"] = ["LD_PRELOAD"]
    write_plan(plan_file, data)
    result = run_cli(openbao, "source", "apply-plan", str(plan_file))
    assert result.returncode == 0, result.stdout + result.stderr
    hcl = openbao.api("GET", f"sys/policies/acl/{policy}").json()["data"]["policy"]
    assert f"{kv_mount}/data/payments/db" in policy_paths(hcl)


def _preload_workload(client: Any, namespace: str) -> None:
    create_secret(client, namespace, "db", {"password": CANARY, "preload": "/canary/hook.so"})
    app = ContainerSpec(
        command=["/app"],
        secret_env={"DB_PASSWORD": ("db", "password"), "LD_PRELOAD": ("db", "preload")},
    )
    create_workload(client, WorkloadSpec("Deployment", "web", namespace, containers=[app]))
    wait_rollout(client, "Deployment", namespace, "web", timeout=90)


def _preload_plan(path: Path, namespace: str, accepted: list[str]) -> Path:
    plan = MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="rules", cluster="ct-main"),
        tenants=[
            Tenant(
                name=namespace,
                namespace=namespace,
                workloads=[
                    Workload(
                        kind="Deployment",
                        name="web",
                        accepted_dangerous_env=accepted,
                        secrets=[
                            SecretRef(
                                source="db",
                                vault_path=f"secret/data/{namespace}/db",
                                fields={"password": "DB_PASSWORD", "preload": "LD_PRELOAD"},
                                via="env",
                            )
                        ],
                    )
                ],
            )
        ],
    )
    planlib.save(plan, path)  # written without the loader's checks
    return path


def test_protect_refuses_ld_preload_and_writes_the_acceptance_once_the_plan_accepts_it(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _preload_workload(kube_client, namespace)
    plan = _preload_plan(tmp_path / "plan.yaml", namespace, accepted=[])
    written = plan.read_bytes()
    # so the checks below can fail: the workload exists and consumes LD_PRELOAD from a Secret
    obj = _obj(kube_client, "Deployment", namespace, "web")
    assert "LD_PRELOAD" in json.dumps(obj["spec"]["template"])
    rollouts = _owned_count(kube_client, "Deployment", namespace, "web")

    result = _protect(cluster, plan, "--no-verify-injection")

    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "LD_PRELOAD" in result.stderr
    assert "acceptedDangerousEnv" in result.stderr
    assert "Traceback" not in out
    live = _template_annotations(kube_client, "Deployment", namespace, "web")
    assert not [key for key in live if key.startswith(contract.PREFIX)], live
    assert _owned_count(kube_client, "Deployment", namespace, "web") == rollouts
    assert plan.read_bytes() == written

    # accepted by the reviewed plan: protected, and the injector is told so
    _preload_plan(plan, namespace, accepted=["LD_PRELOAD"])
    result = _protect(cluster, plan, "--no-verify-injection")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepts vault fields as loader / interpreter variable(s) LD_PRELOAD" in result.stderr
    live = _template_annotations(kube_client, "Deployment", namespace, "web")
    assert live[contract.ACCEPT_DANGEROUS_ENV] == "LD_PRELOAD"
    assert "preload=LD_PRELOAD" in live[contract.ENV_MAP]
    assert contract.parse_annotations(live)["inject"] is True
    assert _workload(plan, "web").effective_status == "migrated"

    # and unprotect takes the acceptance away with the rest
    result = _unprotect(cluster, plan)
    assert result.returncode == 0, result.stdout + result.stderr
    live = _template_annotations(kube_client, "Deployment", namespace, "web")
    assert contract.ACCEPT_DANGEROUS_ENV not in live
    assert contract.INJECT not in live
