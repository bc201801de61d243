"""CronJobs, Jobs and Argo Rollouts (issue 30) against a real API server with controllers and
kwok: discover lists them (Rollouts only where the CRD is installed), protect patches a
CronJob's job template and starts no run, finalize and unprotect go through the same
per-kind template path, and a Rollout is patched with a JSON merge patch (custom resources
take no strategic merge) and restarted through ``spec.restartAt``.

The Argo Rollouts CRD is not on any module proxy this test bed can reach, so the test installs
a minimal CRD the API server accepts (``argoproj.io/v1alpha1`` ``rollouts``, status
subresource, ``x-kubernetes-preserve-unknown-fields``): enough for discover, the patches and
the admission check, no controller (so "template patched, not rolled" is what is proven).

kwok runs no injector, so the workloads are created with their pod template already in the
injected shape (as in test_lifecycle.py): the admission check's dry-run pod then comes back
injected, which exercises every decision on real objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.batch_v1 import CronJob, Job

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.plan import Workload
from tests.integration.test_protect import REPO, _env
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import create_secret

VAULT = "http://openbao.vault.svc:8200"
CANARY = "kinds-secret-canary-3017"
CRD_NAME = "rollouts.argoproj.io"
Rollout = create_namespaced_resource("argoproj.io", "v1alpha1", "Rollout", "rollouts")

#: The minimal Argo Rollouts CRD (the real one carries a full OpenAPI schema).
MINIMAL_ROLLOUT_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": "argoproj.io",
        "scope": "Namespaced",
        "names": {
            "kind": "Rollout",
            "listKind": "RolloutList",
            "plural": "rollouts",
            "singular": "rollout",
            "shortNames": ["ro"],
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def _template(*, injected: bool = True) -> dict[str, Any]:
    command = [contract.WRAPPER_PATH, "wrap", "--", "/app"] if injected else ["/app"]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "app",
                "image": "registry.example/app:1",
                "command": command,
                "env": [
                    {"name": "PLAIN", "value": "kept"},
                    {
                        "name": "DB_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                    },
                ],
            }
        ],
    }
    if injected:
        spec["initContainers"] = [
            {
                "name": contract.INIT_CONTAINER,
                "image": "registry.example/cloudtaser:1",
                "command": ["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
            }
        ]
    return {"metadata": {"labels": {"app": "kinds"}}, "spec": spec}


def _cronjob(namespace: str, name: str, schedule: str = "0 0 1 1 *") -> dict[str, Any]:
    # default schedule: once a year, so the cronjob controller (which runs here) starts nothing
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": _template()}}},
    }


def _job(namespace: str, name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    template = _template()
    template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {"backoffLimit": 0, "template": template},
    }


def _rollout(namespace: str, name: str) -> dict[str, Any]:
    template = _template()
    template["spec"]["restartPolicy"] = "Always"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "kinds"}},
            "template": template,
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        },
    }


def _wait(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _crd_established(client: Any) -> bool:
    crd = client.get(CustomResourceDefinition, CRD_NAME).to_dict()
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in (crd.get("status") or {}).get("conditions") or ()
    )


@pytest.fixture
def rollout_crd(kube_client: Any) -> Iterator[None]:
    """The minimal Argo Rollouts CRD, removed again after the test (the cluster is shared)."""
    kube_client.create(codecs.from_dict(MINIMAL_ROLLOUT_CRD))
    try:
        _wait(lambda: _crd_established(kube_client), "the Rollout CRD to be established")
        yield
    finally:
        kube_client.delete(CustomResourceDefinition, CRD_NAME)
        _wait(
            lambda: (
                not any(
                    c.metadata.name == CRD_NAME for c in kube_client.list(CustomResourceDefinition)
                )
            ),
            "the Rollout CRD to be gone",
        )


def _run(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cloudtaser", *argv, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env=_env(),
    )
    assert CANARY not in result.stdout + result.stderr, "a Secret value reached the output"
    return result


def _discover(cluster: Cluster, namespace: str, out: Path, *extra: str) -> Any:
    result = _run(
        cluster, "target", "discover", "-n", namespace, "--name", "kinds",
        "--output-plan", str(out), "--force", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return planlib.load(out)


def _step(cluster: Cluster, step: str, plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    vault = ("--vault-address", VAULT) if step == "protect" else ()
    return _run(
        cluster, "target", step, "--plan", str(plan), *vault, "--poll-interval", "200ms",
        "--timeout", "60s", "--yes", *extra,
    )  # fmt: skip


def _kinds(plan: Any) -> dict[tuple[str, str], Workload]:
    return {(str(w.kind), w.name): w for _t, w in plan.iter_workloads()}


def _jobs(client: Any, namespace: str) -> list[str]:
    return sorted(j.metadata.name for j in client.list(Job, namespace=namespace))


def _job_template(client: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = client.get(CronJob, name, namespace=namespace).to_dict()
    assert "template" not in obj["spec"]  # the CronJob's template lives in its job template
    return dict(obj["spec"]["jobTemplate"]["spec"]["template"])


def _env_names(template: dict[str, Any]) -> list[str]:
    return [e["name"] for e in template["spec"]["containers"][0].get("env") or ()]


# -- discover --------------------------------------------------------------------------------


def test_discover_lists_cronjobs_rollouts_and_standalone_jobs_but_not_a_cronjobs_job(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    create_secret(kube_client, namespace, "db", {"password": CANARY})
    cron = kube_client.create(codecs.from_dict(_cronjob(namespace, "backup"))).to_dict()
    kube_client.create(codecs.from_dict(_job(namespace, "backup-manual", owner=cron)))
    # kwok completes a Job's pods at once; a pod no node can take keeps "migrate" running
    running = _job(namespace, "migrate")
    running["spec"]["template"]["spec"]["nodeSelector"] = {"kinds-test": "no-such-node"}
    kube_client.create(codecs.from_dict(running))
    kube_client.create(codecs.from_dict(_job(namespace, "seed")))
    _wait(
        lambda: (kube_client.get(Job, "migrate", namespace=namespace).status.active or 0) > 0,
        "the standalone Job to run",
    )
    _wait(
        lambda: (kube_client.get(Job, "seed", namespace=namespace).status.succeeded or 0) > 0,
        "the other standalone Job to finish",
    )

    # without the Argo Rollouts CRD discover neither fails nor calls anything unreadable
    plan = _discover(cluster, namespace, tmp_path / "plan.yaml")
    assert set(_kinds(plan)) == {("CronJob", "backup"), ("Job", "migrate"), ("Job", "seed")}
    assert plan.metadata.unread == []
    backup = _kinds(plan)[("CronJob", "backup")]
    assert backup.status == "pending"
    assert backup.secrets[0].fields == {"password": "DB_PASSWORD"}
    migrate = _kinds(plan)[("Job", "migrate")]
    assert migrate.status == "skipped"
    assert "immutable" in (migrate.reason or "")
    assert "still running" in (migrate.reason or "")
    seed = _kinds(plan)[("Job", "seed")]
    assert seed.status == "skipped"
    assert "has finished" in (seed.reason or "")

    # CloudTaser-only: a plan CloudTaser's own tools accept
    only = _discover(cluster, namespace, tmp_path / "only.yaml", "--cloudtaser-kinds-only")
    assert _kinds(only) == {}


def test_discover_lists_rollouts_where_the_crd_is_installed(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path, rollout_crd: None
) -> None:
    create_secret(kube_client, namespace, "db", {"password": CANARY})
    kube_client.create(codecs.from_dict(_rollout(namespace, "web")))

    plan = _discover(cluster, namespace, tmp_path / "plan.yaml")

    web = _kinds(plan)[("Rollout", "web")]
    assert (web.status, web.replicas) == ("pending", 2)
    assert web.secrets[0].fields == {"password": "DB_PASSWORD"}
    only = _discover(cluster, namespace, tmp_path / "only.yaml", "--cloudtaser-kinds-only")
    assert _kinds(only) == {}


# -- CronJob: protect starts no run; finalize and unprotect through the job template ------------


def test_protect_of_a_cronjob_patches_its_job_template_and_starts_no_run(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    create_secret(kube_client, namespace, "db", {"password": CANARY})
    cron = kube_client.create(codecs.from_dict(_cronjob(namespace, "backup"))).to_dict()
    plan_path = tmp_path / "plan.yaml"
    _discover(cluster, namespace, plan_path)
    # the check below can fail: a run started from the CronJob (what `kubectl create job
    # --from` does) shows up in the list of Jobs
    assert _jobs(kube_client, namespace) == []
    kube_client.create(codecs.from_dict(_job(namespace, "backup-by-hand", owner=cron)))
    assert _jobs(kube_client, namespace) == ["backup-by-hand"]
    kube_client.delete(Job, "backup-by-hand", namespace=namespace)
    _wait(lambda: _jobs(kube_client, namespace) == [], "the hand-started Job to go")

    result = _step(cluster, "protect", plan_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert _jobs(kube_client, namespace) == []  # protect started no run
    template = _job_template(kube_client, namespace, "backup")
    assert template["metadata"]["labels"][contract.INJECT_LABEL] == "true"
    annotations = template["metadata"]["annotations"]
    assert annotations[contract.VAULT_ADDRESS] == VAULT
    assert contract.RESTARTED_AT in annotations
    workload = _kinds(planlib.load(plan_path))[("CronJob", "backup")]
    assert workload.effective_status == "migrated"
    reason = workload.history[-1].reason or ""
    assert "no run started" in reason
    assert "a dry-run pod came back injected of the stored template" in reason
    assert "the next run proves it" in reason

    # finalize: the Secret reference leaves the job template, still no run
    finalized = _step(cluster, "finalize", plan_path)
    assert finalized.returncode == 0, finalized.stdout + finalized.stderr
    assert _env_names(_job_template(kube_client, namespace, "backup")) == ["PLAIN"]
    workload = _kinds(planlib.load(plan_path))[("CronJob", "backup")]
    assert workload.finalized_at is not None
    assert [(r.via, r.secret, r.env) for r in workload.finalized_refs] == [
        ("env", "db", "DB_PASSWORD")
    ]

    # audit: the CronJob between runs is protected and finalized from its job template
    audit = _run(cluster, "target", "audit", "-n", namespace, "--output", "json")
    assert audit.returncode in {0, 1}, audit.stderr
    (entry,) = [
        w for w in json.loads(audit.stdout)["namespaces"][0]["workloads"] if w["kind"] == "CronJob"
    ]
    assert (entry["name"], entry["optedIn"], entry["pods"]) == ("backup", True, 0)
    assert (entry["protected"], entry["finalized"]) == (True, True)

    # unprotect: the reference is back, the annotations and label are gone, still no run
    undone = _step(cluster, "unprotect", plan_path)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    template = _job_template(kube_client, namespace, "backup")
    assert sorted(_env_names(template)) == ["DB_PASSWORD", "PLAIN"]
    assert contract.INJECT_LABEL not in (template["metadata"].get("labels") or {})
    assert not set(template["metadata"].get("annotations") or {}) & set(contract.MANAGED_KEYS)
    assert _kinds(planlib.load(plan_path))[("CronJob", "backup")].effective_status == "pending"
    assert _jobs(kube_client, namespace) == []


# -- Argo Rollout: merge patch, restartAt, no controller ----------------------------------------


def test_protect_finalize_unprotect_of_a_rollout_without_a_controller(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path, rollout_crd: None
) -> None:
    create_secret(kube_client, namespace, "db", {"password": CANARY})
    kube_client.create(codecs.from_dict(_rollout(namespace, "web")))
    plan_path = tmp_path / "plan.yaml"
    _discover(cluster, namespace, plan_path)
    before = kube_client.get(Rollout, "web", namespace=namespace)
    assert "restartAt" not in before["spec"]

    dry = _step(cluster, "protect", plan_path, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert '"restartAt"' in dry.stdout  # Argo Rollouts' own restart field, not the template's
    result = _step(cluster, "protect", plan_path)

    assert result.returncode == 0, result.stdout + result.stderr
    obj = kube_client.get(Rollout, "web", namespace=namespace)
    template = obj["spec"]["template"]
    assert template["metadata"]["labels"][contract.INJECT_LABEL] == "true"
    assert template["metadata"]["annotations"][contract.VAULT_ADDRESS] == VAULT
    assert contract.RESTARTED_AT not in template["metadata"]["annotations"]
    assert obj["spec"]["restartAt"].endswith("Z")
    workload = _kinds(planlib.load(plan_path))[("Rollout", "web")]
    assert workload.effective_status == "migrated"
    reason = workload.history[-1].reason or ""
    assert "no Argo Rollouts controller" in reason
    assert "template patched, not rolled" in reason
    assert "dry-run pod came back injected" in reason

    finalized = _step(cluster, "finalize", plan_path)
    assert finalized.returncode == 0, finalized.stdout + finalized.stderr
    obj = kube_client.get(Rollout, "web", namespace=namespace)
    assert _env_names(obj["spec"]["template"]) == ["PLAIN"]
    # the merge patch sent the container list whole: nothing else of it changed
    assert obj["spec"]["template"]["spec"]["containers"][0]["command"][0] == contract.WRAPPER_PATH
    assert _kinds(planlib.load(plan_path))[("Rollout", "web")].finalized_at is not None

    undone = _step(cluster, "unprotect", plan_path)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    obj = kube_client.get(Rollout, "web", namespace=namespace)
    assert sorted(_env_names(obj["spec"]["template"])) == ["DB_PASSWORD", "PLAIN"]
    assert contract.INJECT_LABEL not in (obj["spec"]["template"]["metadata"].get("labels") or {})
    assert json.dumps(obj["spec"]["template"]).count("secretKeyRef") == 1
