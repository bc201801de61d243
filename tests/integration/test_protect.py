"""``target protect`` / ``target unprotect`` against a real API server with controllers and kwok:
rollouts really happen, and we count them (ReplicaSets, ControllerRevisions, revisions).

Every run goes through the real CLI (``python -m cloudtaser``) in a subprocess, so exit codes,
stdin answers, signals and the plan file are exercised exactly as an operator meets them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import ControllerRevision, ReplicaSet

from cloudtaser import plan as planlib
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import (
    KINDS,
    ContainerSpec,
    WorkloadSpec,
    create_namespace,
    create_secret,
    create_workload,
    delete_namespace,
    manifest,
    unique_name,
    wait_rollout,
)

pytestmark = pytest.mark.integration

VAULT = "http://openbao.vault.svc:8200"
ROLLOUT_TIMEOUT = 90
REPO = Path(__file__).resolve().parents[2]


# -- helpers -----------------------------------------------------------------------------------


def _container(secret: str = "db") -> ContainerSpec:
    return ContainerSpec(
        secret_env={"DB_PASSWORD": (secret, "password"), "DB_USER": (secret, "username")}
    )


def _spec(kind: str, name: str, namespace: str, **kw: Any) -> WorkloadSpec:
    kw.setdefault("containers", [_container()])
    return WorkloadSpec(kind, name, namespace, **kw)  # type: ignore[arg-type]


def _plan_workload(kind: str, name: str, namespace: str, secret: str = "db") -> Workload:
    return Workload(
        kind=kind,
        name=name,
        secrets=[
            SecretRef(
                source=secret,
                vault_path=f"secret/data/{namespace}/{secret}",
                fields={"password": "DB_PASSWORD", "username": "DB_USER"},
                via="env",
            )
        ],
    )


def _write_plan(
    path: Path, tenants: dict[str, list[tuple[str, str]]], *, auth_mount: str | None = None
) -> Path:
    """``tenants``: namespace -> [(kind, name)] in plan order."""
    plan = MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="itest", cluster="ct-main", auth_mount=auth_mount),
        tenants=[
            Tenant(
                name=ns,
                namespace=ns,
                workloads=[_plan_workload(kind, name, ns) for kind, name in items],
            )
            for ns, items in tenants.items()
        ],
    )
    planlib.save(plan, path)
    return path


def _setup(client: Any, namespace: str, specs: list[WorkloadSpec], *, wait: bool = True) -> None:
    create_secret(client, namespace, "db", {"password": "not-a-real-value", "username": "app"})
    for spec in specs:
        create_workload(client, spec)
    if wait:
        for spec in specs:
            wait_rollout(client, spec.kind, namespace, spec.name, timeout=ROLLOUT_TIMEOUT)


def _argv(
    cluster: Cluster,
    verb: str,
    plan: Path,
    *args: str,
    poll: str | None = "200ms",
    vault: bool = True,
) -> list[str]:
    """``python -m cloudtaser target <verb> --plan … --kubeconfig …`` for this cluster."""
    return [
        sys.executable,
        "-m",
        "cloudtaser",
        "target",
        verb,
        "--plan",
        str(plan),
        "--kubeconfig",
        str(cluster.kubeconfig),
        *(["--poll-interval", poll] if poll else []),
        *(["--vault-address", VAULT] if vault and verb == "protect" else []),
        # kwok pods run nothing and no injector is installed there: the proof of injection
        # is tested on the real node (tests/integration/test_lifecycle_realnode.py)
        *(["--no-verify-injection"] if verb == "protect" else []),
        *args,
    ]


def _cli(
    cluster: Cluster,
    verb: str,
    plan: Path,
    *args: str,
    input: str | None = None,
    timeout: float = 240,
    vault: bool = True,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(cluster, verb, plan, *args, vault=vault),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "NO_COLOR"}}
    env["NO_COLOR"] = "1"
    return env


def _obj(client: Any, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return client.get(KINDS[kind], name, namespace=namespace).to_dict()


def _template_annotations(client: Any, kind: str, namespace: str, name: str) -> dict[str, str]:
    obj = _obj(client, kind, namespace, name)
    return dict(obj["spec"]["template"]["metadata"].get("annotations") or {})


def _owned_count(client: Any, kind: str, namespace: str, name: str) -> int:
    """ReplicaSets of a Deployment / ControllerRevisions of a StatefulSet or DaemonSet."""
    uid = _obj(client, kind, namespace, name)["metadata"]["uid"]
    res = ReplicaSet if kind == "Deployment" else ControllerRevision
    return sum(
        1
        for item in client.list(res, namespace=namespace)
        if any(o.uid == uid for o in (item.metadata.ownerReferences or []))
    )


def _statuses(path: Path) -> dict[str, str]:
    plan = planlib.load(path)
    return {f"{t.namespace}/{w.name}": str(w.effective_status) for t, w in plan.iter_workloads()}


def _workload(path: Path, namespace: str, name: str) -> Workload:
    plan = planlib.load(path)
    for tenant, workload in plan.iter_workloads():
        if tenant.namespace == namespace and workload.name == name:
            return workload
    raise AssertionError(f"{namespace}/{name} not in the plan")


@pytest.fixture
def extra_namespaces(kube_client: Any) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for name in created:
        delete_namespace(kube_client, name)


# -- the three kinds ---------------------------------------------------------------------------


def test_protect_rolls_out_deployment_statefulset_and_daemonset_exactly_once(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    specs = [
        _spec("Deployment", "web", namespace, replicas=2),
        _spec("StatefulSet", "db", namespace, replicas=2),
        _spec("DaemonSet", "agent", namespace),
    ]
    _setup(kube_client, namespace, specs)
    before = {s.name: _owned_count(kube_client, s.kind, namespace, s.name) for s in specs}
    assert before == {"web": 1, "db": 1, "agent": 1}
    plan = _write_plan(
        tmp_path / "plan.yaml",
        {namespace: [(s.kind, s.name) for s in specs]},
        auth_mount="k8s-itest",
    )

    result = _cli(cluster, "protect", plan, "--yes", "--timeout", "90s")

    assert result.returncode == 0, result.stderr
    for spec in specs:
        assert _owned_count(kube_client, spec.kind, namespace, spec.name) == 2, spec.name
        obj = _obj(kube_client, spec.kind, namespace, spec.name)
        template = obj["spec"]["template"]["metadata"]
        annotations = template["annotations"]
        assert annotations["cloudtaser.io/inject"] == "true"
        assert annotations["cloudtaser.io/vault-address"] == VAULT
        assert annotations["cloudtaser.io/vault-role"] == f"cloudtaser-itest-{namespace}"
        assert annotations["cloudtaser.io/secret-paths"] == f"secret/data/{namespace}/db"
        assert annotations["cloudtaser.io/env-map"] == "password=DB_PASSWORD,username=DB_USER"
        assert annotations["cloudtaser.io/vault-auth-path"] == "auth/k8s-itest"
        assert annotations["cloudtaser.io/restartedAt"].endswith("Z")
        assert template["labels"]["cloudtaser.io/inject"] == "true"
        managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
        assert "cloudtaser" in managers
        wait_rollout(kube_client, spec.kind, namespace, spec.name, timeout=5)
    for spec in specs:
        workload = _workload(plan, namespace, spec.name)
        assert workload.status == "migrated"
        assert workload.history[-1].status == "migrated"
        assert workload.history[-1].by
        assert workload.history[-1].at.tzinfo is not None
        assert workload.last_error is None

    again = _cli(cluster, "protect", plan, "--yes")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    for spec in specs:
        assert _owned_count(kube_client, spec.kind, namespace, spec.name) == 2


# -- interactive, --yes, refusal without either ------------------------------------------------


def test_interactive_answers_from_stdin_yes_no_quit(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    specs = [_spec("Deployment", n, namespace) for n in ("one", "two", "three")]
    _setup(kube_client, namespace, specs)
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [(s.kind, s.name) for s in specs]})

    result = _cli(cluster, "protect", plan, "--interactive", input="y\nn\nq\n")

    assert result.returncode == 0, result.stderr
    # the reviewer saw kind, namespace, name, replicas and the full mapping
    assert f"Deployment {namespace}/one" in result.stderr
    assert "replicas 1" in result.stderr
    assert f"db -> secret/data/{namespace}/db" in result.stderr
    assert "password -> DB_PASSWORD" in result.stderr
    assert "[y]es / [n]o" in result.stderr
    assert _statuses(plan) == {
        f"{namespace}/one": "migrated",
        f"{namespace}/two": "skipped",
        f"{namespace}/three": "pending",
    }
    skipped = _workload(plan, namespace, "two")
    assert skipped.history[-1].by
    assert "declined" in (skipped.history[-1].reason or "")
    assert _owned_count(kube_client, "Deployment", namespace, "one") == 2
    assert _owned_count(kube_client, "Deployment", namespace, "two") == 1
    assert _owned_count(kube_client, "Deployment", namespace, "three") == 1
    assert "cloudtaser.io/inject" not in _template_annotations(
        kube_client, "Deployment", namespace, "two"
    )

    # end of input counts as quit, never as yes
    eof = _cli(cluster, "protect", plan, "--interactive", input="")
    assert eof.returncode == 0, eof.stderr
    assert _statuses(plan)[f"{namespace}/three"] == "pending"

    final = _cli(cluster, "protect", plan, "--yes")
    assert final.returncode == 0, final.stderr
    assert _statuses(plan)[f"{namespace}/three"] == "migrated"
    assert _owned_count(kube_client, "Deployment", namespace, "three") == 2


def test_without_yes_or_interactive_a_pipe_is_refused(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, [_spec("Deployment", "web", namespace)], wait=False)
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "web")]})
    before = plan.read_bytes()

    result = _cli(cluster, "protect", plan, input="y\n", timeout=60)

    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert plan.read_bytes() == before


# -- dry run -------------------------------------------------------------------------------------


def test_dry_run_prints_the_exact_patch_and_changes_nothing(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, [_spec("Deployment", "web", namespace)])
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "web")]})
    before_plan = plan.read_bytes()
    before_rv = _obj(kube_client, "Deployment", namespace, "web")["metadata"]["resourceVersion"]

    result = _cli(cluster, "protect", plan, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert plan.read_bytes() == before_plan
    assert not Path(f"{plan}.lock").exists()
    after = _obj(kube_client, "Deployment", namespace, "web")
    assert after["metadata"]["resourceVersion"] == before_rv
    assert _owned_count(kube_client, "Deployment", namespace, "web") == 1
    start = result.stdout.index("{")
    patch, _end = json.JSONDecoder().raw_decode(result.stdout[start:])
    assert patch["metadata"] == {"resourceVersion": before_rv}
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert annotations["cloudtaser.io/env-map"] == "password=DB_PASSWORD,username=DB_USER"
    assert "cloudtaser.io/restartedAt" in annotations
    assert "not-a-real-value" not in result.stdout + result.stderr


# -- drift, paused / OnDelete / partition, GitOps -------------------------------------------------


def test_drift_leaves_the_workload_untouched_and_pending(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    drifted = ContainerSpec(
        secret_env={"DB_PASSWORD": ("db", "password"), "DB_USER": ("db", "user")}
    )
    _setup(
        kube_client,
        namespace,
        [
            _spec("Deployment", "drifted", namespace, containers=[drifted]),
            _spec("Deployment", "fine", namespace),
        ],
    )
    plan = _write_plan(
        tmp_path / "plan.yaml", {namespace: [("Deployment", "drifted"), ("Deployment", "fine")]}
    )
    rv = _obj(kube_client, "Deployment", namespace, "drifted")["metadata"]["resourceVersion"]

    result = _cli(cluster, "protect", plan, "--yes")

    assert result.returncode == 1, result.stderr
    assert "drift" in result.stderr
    assert (
        _obj(kube_client, "Deployment", namespace, "drifted")["metadata"]["resourceVersion"] == rv
    )
    workload = _workload(plan, namespace, "drifted")
    assert workload.effective_status == "pending"
    assert "drift" in (workload.last_error or "")
    assert "key username" in (workload.last_error or "")
    assert _statuses(plan)[f"{namespace}/fine"] == "migrated"


def test_paused_ondelete_and_partition_are_refused_with_the_reason(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    specs = [
        _spec("Deployment", "paused", namespace, paused=True),
        _spec("DaemonSet", "ondelete-ds", namespace, strategy="OnDelete"),
        _spec("StatefulSet", "ondelete-sts", namespace, strategy="OnDelete"),
        _spec("StatefulSet", "partitioned", namespace, replicas=2, partition=1),
    ]
    _setup(kube_client, namespace, specs, wait=False)
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [(s.kind, s.name) for s in specs]})
    rvs = {
        s.name: _obj(kube_client, s.kind, namespace, s.name)["metadata"]["resourceVersion"]
        for s in specs
    }

    result = _cli(cluster, "protect", plan, "--yes")

    assert result.returncode == 1, result.stderr
    reasons = {s.name: _workload(plan, namespace, s.name).last_error or "" for s in specs}
    assert "paused" in reasons["paused"]
    assert "OnDelete" in reasons["ondelete-ds"]
    assert "OnDelete" in reasons["ondelete-sts"]
    assert "partition=1" in reasons["partitioned"]
    for spec in specs:
        obj = _obj(kube_client, spec.kind, namespace, spec.name)
        annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
        assert "cloudtaser.io/inject" not in annotations
        assert _statuses(plan)[f"{namespace}/{spec.name}"] == "pending"
        if obj["metadata"]["resourceVersion"] != rvs[spec.name]:  # only status updates allowed
            assert obj["metadata"]["generation"] == 1


def test_a_gitops_owned_workload_is_refused_then_patched_live_loudly_with_the_flag(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    spec = _spec(
        "Deployment",
        "argo",
        namespace,
        annotations={"argocd.argoproj.io/tracking-id": f"shop:apps/Deployment:{namespace}/argo"},
        labels={"kustomize.toolkit.fluxcd.io/name": "apps"},
    )
    _setup(kube_client, namespace, [spec])
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "argo")]})

    refused = _cli(cluster, "protect", plan, "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "owned by Argo CD Application shop" in refused.stdout + refused.stderr
    assert "--emit DIR" in refused.stdout + refused.stderr
    untouched = _obj(kube_client, "Deployment", namespace, "argo")
    assert untouched["metadata"]["generation"] == 1  # refused before any patch
    assert "cloudtaser.io/inject" not in (
        untouched["spec"]["template"]["metadata"].get("labels") or {}
    )

    result = _cli(cluster, "protect", plan, "--yes", "--live-patch-owned", "--output", "json")

    assert result.returncode == 0, result.stderr
    assert "WARNING: live patch of a workload owned by Argo CD Application shop" in result.stderr
    assert "Git" in result.stderr
    report = json.loads(result.stdout)
    # the owner is said once, by the engine's guard (the most specific evidence: Argo CD's
    # tracking id), not again per label by protect's own inspection
    (said,) = [w for w in report["results"][0]["warnings"] if "Argo CD" in w]
    assert "live patch of a workload owned by Argo CD Application shop" in said
    assert _statuses(plan)[f"{namespace}/argo"] == "migrated"


def test_an_ambiguous_owner_gets_a_loud_warning_and_is_patched(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    """``app.kubernetes.io/instance`` alone: Argo CD's label tracking, or any Helm chart."""
    spec = _spec("Deployment", "chart", namespace, labels={"app.kubernetes.io/instance": "shop"})
    _setup(kube_client, namespace, [spec])
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "chart")]})

    result = _cli(cluster, "protect", plan, "--yes")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING: possibly Argo CD Application shop may write this workload" in result.stderr
    assert "--emit DIR" in result.stderr
    assert _statuses(plan)[f"{namespace}/chart"] == "migrated"


def test_emit_with_dry_run_writes_the_files_and_changes_neither_cluster_nor_plan(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, [_spec("Deployment", "web", namespace)])
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "web")]})
    before_plan = plan.read_bytes()
    before = _obj(kube_client, "Deployment", namespace, "web")
    out = tmp_path / "gitops"

    result = _cli(cluster, "protect", plan, "--emit", str(out), "--dry-run", "-o", "json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [r["outcome"] for r in report["results"]] == ["emitted"]
    assert report["files"] == [str(out / "unowned" / n) for n in (
        "cloudtaser-patches.yaml", "kustomization-entry.yaml"
    )]  # fmt: skip
    assert all(Path(f).is_file() for f in report["files"])
    assert "cloudtaser.io/inject" in Path(report["files"][0]).read_text()
    assert plan.read_bytes() == before_plan  # nothing recorded
    after = _obj(kube_client, "Deployment", namespace, "web")
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


# -- lock, failures, interrupt -------------------------------------------------------------------


def test_a_second_run_on_the_same_plan_is_refused_by_the_lock(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, [_spec("Deployment", "web", namespace)])
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "web")]})
    first = subprocess.Popen(
        _argv(cluster, "protect", plan, "--interactive", poll=None),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    try:
        lock = Path(f"{plan}.lock")
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists()
        assert json.loads(lock.read_text())["pid"] == first.pid

        second = _cli(cluster, "protect", plan, "--yes", timeout=60)

        assert second.returncode == 4
        assert "lock" in second.stderr
        assert str(first.pid) in second.stderr
    finally:
        _out, err = first.communicate("q\n", timeout=60)
    assert first.returncode == 0, err
    assert not Path(f"{plan}.lock").exists()
    assert _statuses(plan)[f"{namespace}/web"] == "pending"


def _create_unschedulable(client: Any, name: str, namespace: str) -> None:
    """A Deployment whose pods can never be scheduled: its rollouts never complete."""
    body = manifest(_spec("Deployment", name, namespace))
    body["spec"]["template"]["spec"]["nodeSelector"] = {"cloudtaser-test": "no-such-node"}
    client.create(codecs.from_dict(body))


def test_a_rollout_that_never_completes_is_recorded_and_the_run_stops_or_continues(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    create_secret(kube_client, namespace, "db", {"password": "x", "username": "y"})
    _create_unschedulable(kube_client, "stuck", namespace)
    create_workload(kube_client, _spec("Deployment", "after", namespace))
    wait_rollout(kube_client, "Deployment", namespace, "after", timeout=ROLLOUT_TIMEOUT)
    plan = _write_plan(
        tmp_path / "plan.yaml", {namespace: [("Deployment", "stuck"), ("Deployment", "after")]}
    )

    stop = _cli(cluster, "protect", plan, "--yes", "--timeout", "3s")

    assert stop.returncode == 4, stop.stderr
    assert "not reached" in stop.stdout
    stuck = _workload(plan, namespace, "stuck")
    assert stuck.effective_status == "pending"
    assert "rollout did not complete" in (stuck.last_error or "")
    assert _statuses(plan)[f"{namespace}/after"] == "pending"

    go_on = _cli(cluster, "protect", plan, "--yes", "--timeout", "3s", "--continue-on-error")

    assert go_on.returncode == 4, go_on.stderr
    assert _statuses(plan)[f"{namespace}/after"] == "migrated"
    # the stuck one was already annotated: it was waited for again, not patched again
    assert "not patched again" in go_on.stderr
    assert _owned_count(kube_client, "Deployment", namespace, "after") == 2


def test_ctrl_c_while_waiting_saves_the_plan_and_exits_130(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    create_secret(kube_client, namespace, "db", {"password": "x", "username": "y"})
    _create_unschedulable(kube_client, "slow", namespace)
    plan = _write_plan(tmp_path / "plan.yaml", {namespace: [("Deployment", "slow")]})
    proc = subprocess.Popen(
        _argv(cluster, "protect", plan, "--yes"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        annotations = _template_annotations(kube_client, "Deployment", namespace, "slow")
        if "cloudtaser.io/inject" in annotations:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, err
    workload = _workload(plan, namespace, "slow")
    assert workload.effective_status == "pending"
    assert "interrupted" in (workload.last_error or "")
    assert not Path(f"{plan}.lock").exists()


# -- the SIGKILL resume test ----------------------------------------------------------------------


def test_protect_resumes_after_sigkill_at_random_points_without_a_second_rollout(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
) -> None:
    second = create_namespace(kube_client, unique_name("t"))
    extra_namespaces.append(second)
    layout = {
        namespace: [("Deployment", f"d{i}") for i in range(6)] + [("StatefulSet", "s0")],
        second: [("Deployment", f"e{i}") for i in range(5)] + [("DaemonSet", "ds0")],
    }
    for ns, items in layout.items():
        # minReadySeconds stretches each rollout (kwok pods are ready at once), so the kills
        # land while patches, waits and plan writes are really in progress
        specs = [_spec(kind, name, ns, min_ready_seconds=3) for kind, name in items]
        _setup(kube_client, ns, specs)
    plan = _write_plan(tmp_path / "plan.yaml", layout)
    argv = _argv(cluster, "protect", plan, "--yes", "--timeout", "60s", poll="100ms")
    rng = random.Random(int(os.environ.get("CLOUDTASER_KILL_SEED", "20260101")))
    kills = 0
    half_done = 0  # kills that landed between a patch and its plan write
    runs = 0
    # every kill hits a run with work left: we stop killing once the plan is complete
    while kills < 20 and runs < 80:
        if all(s == "migrated" for s in _statuses(plan).values()):
            break
        runs += 1
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
            env=_env(),
        )
        time.sleep(rng.uniform(0.2, 2.0))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait(timeout=30)  # reap: a zombie's pid would look alive to the lock
        planlib.load(plan)  # the plan always parses, whenever the kill landed
        statuses = _statuses(plan)
        half_done += sum(
            1
            for ns, items in layout.items()
            for kind, name in items
            if statuses[f"{ns}/{name}"] == "pending"
            and "cloudtaser.io/inject" in _template_annotations(kube_client, kind, ns, name)
        )
    print(f"kills={kills} patched-but-not-recorded={half_done} runs={runs}")
    assert kills >= 20, f"the plan completed after only {kills} kills ({runs} runs)"

    final = _cli(cluster, "protect", plan, "--yes", "--timeout", "90s")

    assert final.returncode == 0, final.stderr
    assert set(_statuses(plan).values()) == {"migrated"}
    for ns, items in layout.items():
        for kind, name in items:
            assert _owned_count(kube_client, kind, ns, name) == 2, f"{kind} {ns}/{name}"
            workload = _workload(plan, ns, name)
            assert [h.status for h in workload.history].count("migrated") == 1


# -- undo ----------------------------------------------------------------------------------------


def test_unprotect_removes_exactly_our_annotations_with_one_rollout(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    spec = _spec(
        "Deployment", "web", namespace, pod_annotations={"team.example.com/owner": "payments"}
    )
    sts = _spec("StatefulSet", "db", namespace)
    _setup(kube_client, namespace, [spec, sts])
    original = _template_annotations(kube_client, "Deployment", namespace, "web")
    plan = _write_plan(
        tmp_path / "plan.yaml", {namespace: [("Deployment", "web"), ("StatefulSet", "db")]}
    )
    assert _cli(cluster, "protect", plan, "--yes").returncode == 0
    revision = _obj(kube_client, "Deployment", namespace, "web")["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"
    ]
    assert revision == "2"

    dry = _cli(cluster, "unprotect", plan, "--dry-run", "--workload", f"{namespace}/web")
    assert dry.returncode == 0, dry.stderr
    assert '"cloudtaser.io/inject": null' in dry.stdout
    assert _statuses(plan)[f"{namespace}/web"] == "migrated"

    result = _cli(cluster, "unprotect", plan, "--yes", "--workload", "deploy/web")

    assert result.returncode == 0, result.stderr
    obj = _obj(kube_client, "Deployment", namespace, "web")
    assert obj["spec"]["template"]["metadata"].get("annotations") == original
    assert "cloudtaser.io/inject" not in obj["spec"]["template"]["metadata"]["labels"]
    # one rollout: back onto the original ReplicaSet, revision 2 -> 3, no new ReplicaSet
    assert obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert _owned_count(kube_client, "Deployment", namespace, "web") == 2
    workload = _workload(plan, namespace, "web")
    assert workload.effective_status == "pending"
    assert "unprotected" in (workload.history[-1].reason or "")
    assert workload.history[-1].by
    assert _statuses(plan)[f"{namespace}/db"] == "migrated"

    again = _cli(cluster, "protect", plan, "--yes", "--workload", "deploy/web")
    assert again.returncode == 0, again.stderr
    assert _statuses(plan)[f"{namespace}/web"] == "migrated"


# -- several tenants, selection, parallel, the final evidence ---------------------------


def test_several_tenants_selection_parallel_and_final_plan_evidence(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
) -> None:
    other = create_namespace(kube_client, unique_name("t"))
    extra_namespaces.append(other)
    layout = {
        namespace: [("Deployment", "a1"), ("Deployment", "a2"), ("StatefulSet", "a3")],
        other: [("Deployment", "b1"), ("DaemonSet", "b2")],
    }
    for ns, items in layout.items():
        _setup(kube_client, ns, [_spec(kind, name, ns) for kind, name in items])
    plan = _write_plan(tmp_path / "plan.yaml", layout)

    only_other = _cli(cluster, "protect", plan, "--yes", "--tenant", other, "--parallel", "2")
    assert only_other.returncode == 0, only_other.stderr
    assert _statuses(plan) == {
        f"{namespace}/a1": "pending",
        f"{namespace}/a2": "pending",
        f"{namespace}/a3": "pending",
        f"{other}/b1": "migrated",
        f"{other}/b2": "migrated",
    }
    unknown = _cli(cluster, "protect", plan, "--yes", "--workload", "deploy/nope")
    assert unknown.returncode == 2
    assert "matches no workload" in unknown.stderr

    rest = _cli(cluster, "protect", plan, "--interactive", "--parallel", "3", input="y\nn\ny\n")
    assert rest.returncode == 0, rest.stderr

    final = planlib.load(plan)
    for tenant, workload in final.iter_workloads():
        assert workload.effective_status in {"migrated", "skipped"}
        assert workload.history, f"{tenant.namespace}/{workload.name} has no history"
        assert workload.history[-1].at is not None
        assert workload.history[-1].by
    assert _statuses(plan)[f"{namespace}/a2"] == "skipped"
    for ns, items in layout.items():
        for kind, name in items:
            expected = 1 if name == "a2" else 2
            assert _owned_count(kube_client, kind, ns, name) == expected, name
