"""A real Flux (source-controller + kustomize-controller v1.9.6) against the test bed: what it
does to a live ``target protect`` of a workload it owns, and to a deleted Secret it owns.

The manifests are "Git": pushed to the test bed's local OCI registry as a Flux artifact
(``tests/testenv/oci.py``), reconciled by an ``OCIRepository`` and applied by a
``Kustomization`` (``tests/testenv/flux.py``). kwok is enough: no pod has to run.

Every destructive step first proves the thing exists, then what happened to it. What these tests
assert is what docs/gitops.md records as the truth about Flux.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from cloudtaser import plan as planlib
from cloudtaser.plan.model import Owner
from cloudtaser.target import annotations as ann
from cloudtaser.target.engine.secret_refs import finalize_edit
from tests.testenv.cluster import Cluster
from tests.testenv.flux import (
    FIELD_MANAGER,
    KUSTOMIZE_NAME_LABEL,
    KUSTOMIZE_NAMESPACE_LABEL,
    Flux,
)
from tests.testenv.workloads import DEFAULT_IMAGE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAULT = "http://openbao.vault.svc:8200"
#: A value that must never appear in any output (the Secret in "Git").
CANARY = "flux-canary-7d1c0e"


def _manifests(name: str) -> dict[str, str]:
    """What "Git" holds: a Secret and a Deployment reading two of its keys as env."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "type": "Opaque",
        "stringData": {"password": CANARY, "username": "app"},
    }
    env = [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": "db", "key": key}}}
        for var, key in (("DB_PASSWORD", "password"), ("DB_USER", "username"))
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"team": "shop"}},
                "spec": {"containers": [{"name": "app", "image": DEFAULT_IMAGE, "env": env}]},
            },
        },
    }
    return {
        "secret.yaml": yaml.safe_dump(secret, sort_keys=False),
        "deployment.yaml": yaml.safe_dump(deployment, sort_keys=False),
    }


def _synced(flux: Flux, namespace: str, name: str = "api") -> Any:
    artifact = flux.push(f"{namespace}/app", _manifests(name), revision="r1")
    flux.sync(namespace, "app", artifact)
    return artifact


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "NO_COLOR"}}
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


def _deployment(client: Any, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.get(Deployment, name, namespace=namespace).to_dict()
    return obj


def _template_meta(obj: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    meta = obj["spec"]["template"]["metadata"]
    return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})


def _managers(obj: dict[str, Any]) -> dict[str, str]:
    return {
        str(m["manager"]): str(m["operation"]) for m in obj["metadata"].get("managedFields") or []
    }


def test_flux_applies_the_artifact_and_labels_what_it_owns(
    flux: Flux, kube_client: Any, gitops_ns: str
) -> None:
    artifact = _synced(flux, gitops_ns)
    obj = _deployment(kube_client, gitops_ns, "api")
    labels = obj["metadata"]["labels"]
    assert labels[KUSTOMIZE_NAME_LABEL] == "app"
    assert labels[KUSTOMIZE_NAMESPACE_LABEL] == gitops_ns
    assert _managers(obj)[FIELD_MANAGER] == "Apply"
    secret = kube_client.get(Secret, "db", namespace=gitops_ns)
    assert secret.metadata.labels[KUSTOMIZE_NAME_LABEL] == "app"
    assert artifact.revision.startswith("latest@sha256:")


def test_a_deleted_secret_that_git_holds_is_recreated_at_the_next_reconcile(
    flux: Flux, kube_client: Any, gitops_ns: str
) -> None:
    artifact = _synced(flux, gitops_ns)
    before = kube_client.get(Secret, "db", namespace=gitops_ns)
    assert sorted(before.data or {}) == ["password", "username"]  # it exists
    kube_client.delete(Secret, "db", namespace=gitops_ns)
    with pytest.raises(ApiError) as gone:
        kube_client.get(Secret, "db", namespace=gitops_ns)
    assert gone.value.status.code == 404  # it is really gone
    flux.reconcile(gitops_ns, "app", artifact)
    after = kube_client.get(Secret, "db", namespace=gitops_ns)
    assert after.metadata.uid != before.metadata.uid  # recreated, not the old object
    assert after.data == before.data


def _discover(cluster: Cluster, namespace: str, out: Path) -> planlib.MigrationPlan:
    run = _cli(
        "target", "discover", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
        "--name", "flux", "--output-plan", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert CANARY not in run.stdout + run.stderr + out.read_text()
    return planlib.load(out)


def _protect(cluster: Cluster, plan: Path) -> subprocess.CompletedProcess[str]:
    # kwok pods run nothing and no injector is installed: the proof of injection is the real
    # node's (test_lifecycle_realnode.py); here only what the patch does to the object matters.
    return _cli(
        "target", "protect", "--plan", str(plan), "--kubeconfig", str(cluster.kubeconfig),
        "--vault-address", VAULT, "--no-verify-injection", "--yes", "--poll-interval", "200ms",
        "--timeout", "90s", "--live-patch-owned",  # the live patch is what these tests study
    )  # fmt: skip


def test_a_live_protect_of_a_flux_owned_deployment_against_the_next_reconcile(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    artifact = _synced(flux, gitops_ns)
    plan_path = tmp_path / "plan.yaml"
    plan = _discover(cluster, gitops_ns, plan_path)

    # 0. discover records the owner of the workload and of its Secret (read for that only).
    ((_tenant, workload),) = list(plan.iter_workloads())
    owner = Owner(
        tool="flux",
        kind="Kustomization",
        name="app",
        namespace=gitops_ns,
        evidence=f"labels {KUSTOMIZE_NAME_LABEL}, {KUSTOMIZE_NAMESPACE_LABEL}",
    )
    assert workload.owner == owner
    assert [(s.source, s.owner) for s in workload.secrets] == [("db", owner)]

    # 1. protect patches the live object: prove the change is there, and whose it is.
    run = _protect(cluster, plan_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert CANARY not in run.stdout + run.stderr
    assert "Flux" in run.stdout + run.stderr  # the existing warning names the owner
    protected = _deployment(kube_client, gitops_ns, "api")
    labels, annotations = _template_meta(protected)
    ours = {k: v for k, v in annotations.items() if k.startswith("cloudtaser.io/")}
    assert labels[ann.INJECT_LABEL] == "true"
    assert ann.RESTARTED_AT in ours
    assert "cloudtaser.io/secret-paths" in ours
    assert annotations["team"] == "shop"  # Git's own annotation
    assert _managers(protected)["cloudtaser"] == "Update"
    generation = protected["metadata"]["generation"]

    # 2. Flux reconciles the unchanged artifact: what is left of the live protect?
    flux.reconcile(gitops_ns, "app", artifact)
    after = _deployment(kube_client, gitops_ns, "api")
    labels_after, annotations_after = _template_meta(after)
    assert {k: v for k, v in annotations_after.items() if k in ours} == ours
    assert labels_after[ann.INJECT_LABEL] == "true"
    assert after["metadata"]["generation"] == generation  # not even a new rollout

    # 3. The next Git revision (a change the team makes) is applied: still there.
    changed = _manifests("api")
    changed["deployment.yaml"] = changed["deployment.yaml"].replace("team: shop", "team: shop2")
    artifact2 = flux.push(f"{gitops_ns}/app", changed, revision="r2")
    flux.reconcile(gitops_ns, "app", artifact2)
    after2 = _deployment(kube_client, gitops_ns, "api")
    labels2, annotations2 = _template_meta(after2)
    assert annotations2["team"] == "shop2"  # Flux applied Git's change...
    assert {k: v for k, v in annotations2.items() if k in ours} == ours  # ...and kept ours
    assert labels2[ann.INJECT_LABEL] == "true"


def test_finalize_s_removal_of_the_secret_references_is_put_back_by_flux(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    artifact = _synced(flux, gitops_ns)
    plan = _discover(cluster, gitops_ns, tmp_path / "plan.yaml")
    (_tenant, workload), *_ = list(plan.iter_workloads())
    live = _deployment(kube_client, gitops_ns, "api")
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["DB_PASSWORD", "DB_USER"]  # Git's refs

    # The exact patch finalize sends (its own pure function), with its field manager: it is
    # applied here directly because finalize's proof of injection needs a real node.
    edit = finalize_edit(live["spec"]["template"], workload, lambda _name: ["password", "username"])
    assert {r.env for r in edit.refs} == {"DB_PASSWORD", "DB_USER"}
    kube_client.patch(
        Deployment, "api", {"spec": {"template": {"spec": edit.spec_patch}}},
        namespace=gitops_ns, patch_type=PatchType.STRATEGIC, field_manager="cloudtaser",
    )  # fmt: skip
    removed = _deployment(kube_client, gitops_ns, "api")
    assert "env" not in removed["spec"]["template"]["spec"]["containers"][0]  # really removed
    generation = removed["metadata"]["generation"]

    flux.reconcile(gitops_ns, "app", artifact)
    back = _deployment(kube_client, gitops_ns, "api")
    env = back["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == container["env"]  # Flux put Git's references back, exactly
    assert back["metadata"]["generation"] == generation + 1  # one more rollout, to the old pods


def test_with_override_manager_flux_reverts_a_live_protect(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    """The knob that makes Flux revert what another field manager added:
    kustomize-controller ``--override-manager=cloudtaser`` (a platform team's choice)."""
    artifact = _synced(flux, gitops_ns)
    plan_path = tmp_path / "plan.yaml"
    _discover(cluster, gitops_ns, plan_path)
    run = _protect(cluster, plan_path)
    assert run.returncode == 0, run.stdout + run.stderr
    labels, annotations = _template_meta(_deployment(kube_client, gitops_ns, "api"))
    assert labels[ann.INJECT_LABEL] == "true"  # protect's change is there
    assert ann.RESTARTED_AT in annotations
    generation = _deployment(kube_client, gitops_ns, "api")["metadata"]["generation"]
    try:
        flux.restart("kustomize-controller", ["--override-manager=cloudtaser"])
        flux.reconcile(gitops_ns, "app", artifact)
        reverted = _deployment(kube_client, gitops_ns, "api")
    finally:
        flux.restart("kustomize-controller", [])
    labels_after, annotations_after = _template_meta(reverted)
    assert ann.INJECT_LABEL not in labels_after
    assert not [k for k in annotations_after if k.startswith("cloudtaser.io/")]
    assert annotations_after == {"team": "shop"}  # exactly what Git says
    assert "cloudtaser" not in _managers(reverted)
    assert reverted["metadata"]["generation"] == generation + 1  # a rollout back, unprotected
