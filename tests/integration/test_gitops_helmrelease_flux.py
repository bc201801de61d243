"""The Git flow for a Flux ``HelmRelease`` with Flux's real helm-controller (v1.4.5, next to
source- and kustomize-controller v1.9.6): protect and finalize of a chart-rendered Deployment
through the HelmRelease's ``spec.postRenderers``, end to end, with the real CLI.

"Git" (an OCI artifact applied by a Flux ``Kustomization``) holds an ``OCIRepository`` of a small
local chart (pushed with the real ``helm push``) and a ``HelmRelease`` of it (``chartRef``).
helm-controller renders the chart: a Secret and a Deployment reading two of its keys as env,
with a chart's usual labels. discover records the HelmRelease as the owner of both;
``target protect --emit DIR`` writes ``helmrelease-postrenderers.yaml``; the test merges its
``spec.postRenderers`` into the HelmRelease in "Git" and pushes the next revision;
kustomize-controller applies the HelmRelease, helm-controller upgrades the release through the
post-renderer, and ``--wait-for-git`` proves the new pods injected and records ``migrated``.
``finalize --emit`` the same way (its file replaces the whole list: it carries protect's patch
too), then a forced reconcile of the Kustomization and a forced Helm upgrade keep the Secret
references out; ``finalize --delete-secrets`` keeps the chart's Secret and names the
HelmRelease and its chart.

kwok pods run nothing and no injector runs here: as in test_gitops_emit_flux.py, the chart's
template is already in the injected shape (init container ``cloudtaser-init``, the container
started through the wrapper), so the admission check and the proof of injection decide on real
ReplicaSets and pods.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.core_v1 import Secret

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.target import annotations as ann
from cloudtaser.target.gitops.emit import HELMRELEASE_FILE
from tests.integration.test_gitops_emit_flux import (
    CANARY,
    NAME,
    _cli,
    _deployment,
    _finish,
    _managers,
    _plan_status,
    _refs,
    _run,
    _start,
    _workload,
)
from tests.testenv.binaries import find_gitops_tools
from tests.testenv.cluster import Cluster
from tests.testenv.flux import HELM_API, Flux
from tests.testenv.oci import Artifact
from tests.testenv.workloads import DEFAULT_IMAGE

pytestmark = pytest.mark.integration

#: The Secret the chart renders (``<release>-db``).
SECRET = f"{NAME}-db"
#: The Kustomization (and its OCIRepository) that applies "Git".
GIT = "app"


def _chart(root: Path) -> Path:
    """A small chart shaped like a real one: the usual labels, a Secret from a value and a
    Deployment reading two of its keys as env, no namespace in the templates (Helm places the
    objects in the release's namespace); the pod template in the injected shape."""
    chart = root / NAME
    (chart / "templates").mkdir(parents=True)
    meta = {"apiVersion": "v2", "name": NAME, "version": "0.1.0", "appVersion": "1.0.0"}
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    (chart / "values.yaml").write_text(yaml.safe_dump({"replicas": 2, "password": ""}))
    # `helm create`'s labels: helm-controller versions the chart <version>+<digest>, and a
    # "+" is no label character, hence the replace
    selector = (
        "    app.kubernetes.io/name: {{ .Chart.Name }}\n"
        "    app.kubernetes.io/instance: {{ .Release.Name }}\n"
    )
    labels = (
        '    helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}\n'
        f"{selector}"
        "    app.kubernetes.io/managed-by: {{ .Release.Service }}\n"
    )
    (chart / "templates" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-db\n"
        f"  labels:\n{labels}type: Opaque\nstringData:\n"
        '  password: {{ required "password" .Values.password | quote }}\n  username: app\n'
    )
    env = [
        {"name": "LOG_LEVEL", "value": "info"},
        *(
            {"name": var, "valueFrom": {"secretKeyRef": {"name": "SECRET", "key": key}}}
            for var, key in (("DB_PASSWORD", "password"), ("DB_USER", "username"))
        ),
    ]
    app = {
        "name": "app",
        "image": DEFAULT_IMAGE,
        "command": [contract.WRAPPER_PATH, "wrap", "--", "/app"],
        "env": env,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    }
    init = {
        "name": contract.INIT_CONTAINER,
        "image": DEFAULT_IMAGE,
        "command": ["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
    }
    pod = yaml.safe_dump({"initContainers": [init], "containers": [app]}, sort_keys=False)
    pod = pod.replace("name: SECRET", "name: '{{ .Release.Name }}-db'")
    (chart / "templates" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n"
        f"  labels:\n{labels}spec:\n  replicas: {{{{ .Values.replicas }}}}\n  selector:\n"
        "    matchLabels:\n      app.kubernetes.io/instance: {{ .Release.Name }}\n"
        "  template:\n    metadata:\n      labels:\n"
        f"{selector.replace('    ', '        ')}"
        "      annotations:\n        team: shop\n    spec:\n"
        + "".join(f"      {line}\n" for line in pod.splitlines())
    )
    return chart


def _git(chart: Artifact, post_renderers: list[Any] | None = None) -> dict[str, str]:
    """What "Git" holds: the chart's OCIRepository and the HelmRelease (with ``post_renderers``
    as its ``spec.postRenderers`` when given), and the kustomization.yaml listing them."""
    source, release = Flux.helm_release(NAME, chart, values={"password": CANARY})
    if post_renderers is not None:
        release["spec"]["postRenderers"] = post_renderers
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["release.yaml"],
    }
    return {
        "release.yaml": yaml.safe_dump_all([source, release], sort_keys=False),
        "kustomization.yaml": yaml.safe_dump(kustomization, sort_keys=False),
    }


def _post_renderers(emitted: Path, namespace: str) -> list[Any]:
    """``spec.postRenderers`` of the one ``helmrelease-postrenderers.yaml`` ``--emit`` wrote
    (checked to name this HelmRelease)."""
    (path,) = list(emitted.rglob(HELMRELEASE_FILE))
    text = path.read_text()
    assert CANARY not in text
    (document,) = [d for d in yaml.safe_load_all(text) if d]
    assert (document["apiVersion"], document["kind"]) == (HELM_API, "HelmRelease")
    assert document["metadata"] == {"name": NAME, "namespace": namespace}
    renderers: list[Any] = document["spec"]["postRenderers"]
    return renderers


def _patches(renderers: list[Any]) -> list[dict[str, Any]]:
    """The patch documents of the (one) kustomize post-renderer, parsed."""
    (renderer,) = renderers
    entries = renderer["kustomize"]["patches"]
    for entry in entries:
        assert entry["target"] == {"kind": "Deployment", "name": NAME}
    return [yaml.safe_load(entry["patch"]) for entry in entries]


def _generation(flux: Flux, namespace: str) -> int:
    release = json.loads(
        flux.cluster.kubectl("get", "helmrelease", "-n", namespace, NAME, "-o", "json").stdout
    )
    return int(release["metadata"]["generation"])


def _helm_revision(release: dict[str, Any]) -> int:
    """The Helm release revision helm-controller last recorded (``status.history[0]``)."""
    return int(release["status"]["history"][0]["version"])


def test_protect_and_finalize_of_a_helmrelease_through_git_with_a_real_helm_controller(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    helm = find_gitops_tools()["helm"]
    chart = flux.push_chart(helm, _chart(tmp_path / "chart"), f"{gitops_ns}/charts")
    revision1 = flux.push(f"{gitops_ns}/git", _git(chart), revision="r1")
    flux.sync(gitops_ns, GIT, revision1)
    installed = flux.wait_release(gitops_ns, NAME, 1)
    assert _helm_revision(installed) == 1

    # discover: the chart's Deployment and its Secret belong to the HelmRelease
    plan = tmp_path / "plan.yaml"
    found = _cli(
        sys.executable, "-m", "cloudtaser", "target", "discover", "--kubeconfig",
        str(cluster.kubeconfig), "-n", gitops_ns, "--name", "hrflow", "--output-plan", str(plan),
    )  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    workload = _workload(plan)
    assert workload.owner is not None
    assert (workload.owner.tool, workload.owner.kind, workload.owner.name) == (
        "flux",
        "HelmRelease",
        NAME,
    )
    (secret_ref,) = workload.secrets
    assert secret_ref.source == SECRET
    assert secret_ref.owner is not None
    assert (secret_ref.owner.kind, secret_ref.owner.name) == ("HelmRelease", NAME)
    before = _deployment(kube_client, gitops_ns)
    assert _refs(before) == ["DB_PASSWORD", "DB_USER"]  # the chart's references, so they can go
    assert ann.INJECT_LABEL not in before["spec"]["template"]["metadata"]["labels"]

    # 1. protect --emit: nothing changed live; the HelmRelease fragment written.
    emitted = tmp_path / "protect"
    run = _run(cluster, "protect", plan, "--emit", str(emitted))
    assert run.returncode == 0, run.stdout + run.stderr
    assert _deployment(kube_client, gitops_ns)["spec"]["template"] == before["spec"]["template"]
    protect_renderers = _post_renderers(emitted, gitops_ns)
    (protect_patch,) = _patches(protect_renderers)
    assert protect_patch["spec"]["template"]["metadata"]["labels"] == {ann.INJECT_LABEL: "true"}
    assert _workload(plan).gitops is not None

    # 2. Merged into the HelmRelease in Git: kustomize-controller applies it, helm-controller
    # upgrades the release through the post-renderer; --wait-for-git proves and records it.
    waiter, said = _start(cluster, "protect", plan)
    revision2 = flux.push(f"{gitops_ns}/git", _git(chart, protect_renderers), revision="r2")
    flux.reconcile(gitops_ns, GIT, revision2)
    upgraded = flux.wait_release(gitops_ns, NAME, 2)
    assert _helm_revision(upgraded) == 2  # a Helm upgrade, not a live patch
    done = _finish(waiter, said)
    assert done.returncode == 0, done.stdout + done.stderr
    migrated = _workload(plan)
    assert migrated.effective_status == "migrated"
    assert migrated.gitops is None
    assert "injection proven on 2 pod(s) of the new revision" in (migrated.history[-1].reason or "")
    protected = _deployment(kube_client, gitops_ns)
    template = protected["spec"]["template"]["metadata"]
    assert template["labels"][ann.INJECT_LABEL] == "true"
    assert template["annotations"][ann.SECRET_PATHS]
    assert "cloudtaser" not in _managers(protected)  # helm-controller applied it, from Git
    assert "waiting for Git" not in _plan_status(plan).stdout

    # 3. finalize --emit: its file carries protect's patch too, so it replaces the list whole.
    assert _refs(protected) == ["DB_PASSWORD", "DB_USER"]
    emitted2 = tmp_path / "finalize"
    run = _run(cluster, "finalize", plan, "--emit", str(emitted2))
    assert run.returncode == 0, run.stdout + run.stderr
    assert _refs(_deployment(kube_client, gitops_ns)) == ["DB_PASSWORD", "DB_USER"]
    finalize_renderers = _post_renderers(emitted2, gitops_ns)
    kept = [d["spec"]["template"].get("metadata") or {} for d in _patches(finalize_renderers)]
    assert {ann.SECRET_PATHS, ann.ENV_MAP} <= {k for m in kept for k in m.get("annotations", {})}
    assert any(m.get("labels", {}).get(ann.INJECT_LABEL) == "true" for m in kept)

    # 4. Git's post-renderers replaced by finalize's: the references go, the injection stays.
    waiter, said = _start(cluster, "finalize", plan)
    revision3 = flux.push(f"{gitops_ns}/git", _git(chart, finalize_renderers), revision="r3")
    flux.reconcile(gitops_ns, GIT, revision3)
    flux.wait_release(gitops_ns, NAME, 3)
    done = _finish(waiter, said)
    assert done.returncode == 0, done.stdout + done.stderr
    finalized = _workload(plan)
    assert finalized.finalized_at is not None
    assert finalized.gitops is None
    assert finalized.effective_status == "migrated"
    gone = _deployment(kube_client, gitops_ns)
    assert _refs(gone) == []
    assert gone["spec"]["template"]["metadata"]["labels"][ann.INJECT_LABEL] == "true"
    assert (
        gone["spec"]["template"]["metadata"]["annotations"][ann.SECRET_PATHS]
        == template["annotations"][ann.SECRET_PATHS]
    )

    # 5. A forced reconcile of the Kustomization and a forced Helm upgrade (helm-controller
    # renders the chart again, post-renders it, upgrades): the references stay gone.
    flux.reconcile(gitops_ns, GIT, revision3)
    latest = _helm_revision(flux.wait_release(gitops_ns, NAME, _generation(flux, gitops_ns)))
    flux.reconcile_release(gitops_ns, NAME, force=True)
    forced = flux.wait_release(gitops_ns, NAME, _generation(flux, gitops_ns))
    assert _helm_revision(forced) == latest + 1  # the upgrade really ran
    again = _deployment(kube_client, gitops_ns)
    assert _refs(again) == []
    assert again["spec"]["template"]["metadata"]["labels"][ann.INJECT_LABEL] == "true"

    # 6. --delete-secrets keeps the chart's Secret (helm-controller would render it again) and
    # names the HelmRelease and its chart. Every key released: only the owner gate decides.
    edited = planlib.load(plan)
    ((_tenant, planned),) = list(edited.iter_workloads())
    for ref in planned.secrets:
        ref.released_keys = sorted(ref.fields)
    planlib.save(edited, plan)
    uid = kube_client.get(Secret, SECRET, namespace=gitops_ns).metadata.uid
    assert uid  # it exists: the gate can fail
    result = _run(cluster, "finalize", plan, "--delete-secrets", "-o", "json")
    assert result.returncode == 1, result.stdout + result.stderr  # a kept Secret: exit 1
    decisions = {d["name"]: d for d in json.loads(result.stdout)["secrets"]}
    decision = decisions[SECRET]
    assert decision["action"] == "kept"
    assert (decision["owner"]["tool"], decision["owner"]["kind"]) == ("flux", "HelmRelease")
    assert decision["removeAtSource"].startswith(
        f"Flux HelmRelease {gitops_ns}/{NAME} renders it from chart OCIRepository {NAME}:"
    )
    assert kube_client.get(Secret, SECRET, namespace=gitops_ns).metadata.uid == uid
