"""The Git flow with a real Flux (source-controller + kustomize-controller v1.9.6): protect and
finalize of a Flux-owned Deployment through Git, end to end, with the real CLI.

``target protect --emit DIR`` changes nothing in the cluster and writes the files; the test folds
them into "Git" (the manifests pushed as the next OCI artifact revision: ``cloudtaser-patches.yaml``
next to the manifests, ``kustomization-entry.yaml``'s ``patches`` into ``kustomization.yaml``);
``--wait-for-git`` sees Flux apply them, waits for the rollout, proves the new pods injected and
records ``migrated``. Then ``target finalize --emit DIR`` the same way: the Secret references are
gone, and stay gone after the next forced reconcile. A live protect without
``--live-patch-owned`` is refused and changes nothing.

kwok pods run nothing and no injector runs here: as in tests/integration/test_lifecycle.py, "Git"
holds the pod template already in the injected shape (docs/protect.md, "Proven injected":
init container ``cloudtaser-init``, every container started through the wrapper), so the
admission check and the proof of injection decide on real ReplicaSets and pods. The real injector
is exercised on the real node (test_lifecycle_realnode.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.apps_v1 import Deployment

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.plan.model import Workload
from cloudtaser.target import annotations as ann
from cloudtaser.target.gitops.emit import KUSTOMIZATION_ENTRY_FILE, PATCHES_FILE
from tests.testenv.cluster import Cluster
from tests.testenv.flux import FIELD_MANAGER, Flux
from tests.testenv.oci import Artifact
from tests.testenv.workloads import DEFAULT_IMAGE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAULT = "http://openbao.vault.svc:8200"
#: A value that must never appear in any output or emitted file (the Secret in "Git").
CANARY = "flux-emit-canary-39be2a"
NAME = "api"


def _git(namespace: str) -> dict[str, str]:
    """What "Git" holds, shaped like a chart's rendered output: a Secret and a Deployment
    reading two of its keys as env (the template in the injected shape, see the module doc),
    and the team's kustomization.yaml."""
    labels = {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/part-of": "shop",
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {"password": CANARY, "username": "app"},
    }
    env = [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": "db", "key": key}}}
        for var, key in (("DB_PASSWORD", "password"), ("DB_USER", "username"))
    ]
    app = {
        "name": "app",
        "image": DEFAULT_IMAGE,
        "command": [contract.WRAPPER_PATH, "wrap", "--", "/app"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [{"name": "LOG_LEVEL", "value": "info"}, *env],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    }
    init = {
        "name": contract.INIT_CONTAINER,
        "image": DEFAULT_IMAGE,
        "command": ["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"team": "shop"}},
                "spec": {"initContainers": [init], "containers": [app]},
            },
        },
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["secret.yaml", "deployment.yaml"],
    }
    return {
        "secret.yaml": yaml.safe_dump(secret, sort_keys=False),
        "deployment.yaml": yaml.safe_dump(deployment, sort_keys=False),
        "kustomization.yaml": yaml.safe_dump(kustomization, sort_keys=False),
    }


def _fold(git: dict[str, str], emitted: Path, prefix: str) -> dict[str, str]:
    """What the team commits: the one owner directory ``--emit`` wrote, copied under
    ``prefix/`` in Git, and its ``patches:`` entries added to kustomization.yaml."""
    (owner_dir,) = [d for d in emitted.iterdir() if d.is_dir()]
    out = dict(git)
    for path in owner_dir.rglob("*"):
        if path.is_file() and path.name != KUSTOMIZATION_ENTRY_FILE:
            out[f"{prefix}/{path.relative_to(owner_dir)}"] = path.read_text()
    entries = yaml.safe_load((owner_dir / KUSTOMIZATION_ENTRY_FILE).read_text())["patches"]
    kustomization = yaml.safe_load(out["kustomization.yaml"])
    kustomization.setdefault("patches", []).extend(
        {**entry, "path": f"{prefix}/{entry['path']}"} for entry in entries
    )
    out["kustomization.yaml"] = yaml.safe_dump(kustomization, sort_keys=False)
    return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "NO_COLOR"}}
    env["NO_COLOR"] = "1"
    return env


def _argv(cluster: Cluster, verb: str, plan: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "cloudtaser", "target", verb, "--plan", str(plan),
        "--kubeconfig", str(cluster.kubeconfig), "--poll-interval", "200ms", "--timeout", "90s",
        "--yes", *(["--vault-address", VAULT] if verb == "protect" else []), *args,
    ]  # fmt: skip


def _checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert CANARY not in result.stdout + result.stderr, "a Secret value reached the output"
    return result


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=300, check=False, cwd=REPO, env=_env()
    )
    return _checked(result)


def _run(cluster: Cluster, verb: str, plan: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _cli(*_argv(cluster, verb, plan, *args))


#: What a ``--wait-for-git`` run says once it found the change not applied yet and polls.
POLLING = "to apply the change from Git"


def _start(cluster: Cluster, verb: str, plan: Path) -> tuple[subprocess.Popen[str], str]:
    """A ``--wait-for-git`` run in the background, returned once it is polling (it saw the
    change not applied yet), with what it said so far on stderr."""
    process = subprocess.Popen(
        _argv(cluster, verb, plan, "--wait-for-git", "--deadline", "4m"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    assert process.stderr is not None
    said = []
    for line in process.stderr:
        said.append(line)
        if POLLING in line:
            break
    return process, "".join(said)


def _finish(process: subprocess.Popen[str], said: str) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    result = subprocess.CompletedProcess(process.args, process.returncode, out, said + err)
    assert POLLING in said, result.stdout + result.stderr  # it waited for the push below
    return _checked(result)


def _deployment(client: Any, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.get(Deployment, NAME, namespace=namespace).to_dict()
    return obj


def _managers(obj: dict[str, Any]) -> set[str]:
    return {str(m["manager"]) for m in obj["metadata"].get("managedFields") or []}


def _refs(obj: dict[str, Any]) -> list[str]:
    """The env entries of the app container that read a Secret."""
    (app,) = obj["spec"]["template"]["spec"]["containers"]
    return [e["name"] for e in app.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]


def _workload(plan: Path) -> Workload:
    ((_tenant, workload),) = list(planlib.load(plan).iter_workloads())
    return workload


def _discover(cluster: Cluster, namespace: str, plan: Path) -> Workload:
    run = _cli(
        sys.executable, "-m", "cloudtaser", "target", "discover", "--kubeconfig",
        str(cluster.kubeconfig), "-n", namespace, "--name", "gitflow", "--output-plan", str(plan),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    workload = _workload(plan)
    assert workload.owner is not None
    assert (workload.owner.tool, workload.owner.kind) == ("flux", "Kustomization")
    return workload


def _plan_status(plan: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _cli(sys.executable, "-m", "cloudtaser", "plan", "status", str(plan), *args)


def _sync(flux: Flux, namespace: str) -> Artifact:
    artifact = flux.push(f"{namespace}/app", _git(namespace), revision="r1")
    flux.sync(namespace, "app", artifact)
    return artifact


def _assert_unchanged(client: Any, namespace: str, before: dict[str, Any]) -> None:
    after = _deployment(client, namespace)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert "cloudtaser" not in _managers(after)


def test_protect_and_finalize_through_git_with_a_real_flux(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    _sync(flux, gitops_ns)
    plan = tmp_path / "plan.yaml"
    _discover(cluster, gitops_ns, plan)
    before = _deployment(kube_client, gitops_ns)
    assert _refs(before) == ["DB_PASSWORD", "DB_USER"]  # Git's references, so they can go

    # 1. --emit: nothing refused, nothing changed live, the files written, the plan waits.
    emitted = tmp_path / "protect"
    run = _run(cluster, "protect", plan, "--emit", str(emitted))
    assert run.returncode == 0, run.stdout + run.stderr
    _assert_unchanged(kube_client, gitops_ns, before)
    files = sorted(p for p in emitted.rglob("*") if p.is_file())
    assert {PATCHES_FILE, KUSTOMIZATION_ENTRY_FILE} <= {p.name for p in files}
    for path in files:
        assert str(path) in run.stdout  # the CLI names every file written
        assert CANARY not in path.read_text()
    assert "--wait-for-git" in run.stdout  # ... and what to do next
    (patch_file,) = [p for p in files if p.name == PATCHES_FILE]
    (patches,) = [d for d in yaml.safe_load_all(patch_file.read_text()) if d]
    assert (patches["kind"], patches["metadata"]["name"]) == ("Deployment", NAME)
    written = patches["spec"]["template"]["metadata"]
    assert written["labels"] == {ann.INJECT_LABEL: "true"}
    assert ann.RESTARTED_AT not in written["annotations"]  # Git rolls the pods by itself
    waiting = _workload(plan)
    assert waiting.effective_status == "pending"
    assert waiting.gitops is not None
    assert waiting.gitops.action == "protect"
    assert waiting.gitops.files == [str(p) for p in files]
    status = _plan_status(plan, "--workloads")
    assert "waiting for Git: 1 workload(s)" in status.stdout
    assert "pending, waiting for Git" in status.stdout
    assert f"{gitops_ns}/Deployment/{NAME}" in status.stdout

    # 2. --wait-for-git before the merge: past its deadline it exits 1 and the plan still waits.
    early = _run(cluster, "protect", plan, "--wait-for-git", "--deadline", "2s")
    assert early.returncode == 1, early.stdout + early.stderr
    assert "still waiting for Git" in early.stdout + early.stderr
    assert _workload(plan).gitops == waiting.gitops
    _assert_unchanged(kube_client, gitops_ns, before)

    # 3. The team merges: the next revision; --wait-for-git (re-run: resumable) sees Flux apply
    # it, waits for the rollout, proves the new pods injected and records migrated.
    waiter, said = _start(cluster, "protect", plan)
    git = _fold(_git(gitops_ns), emitted, "cloudtaser/protect")
    revision2 = flux.push(f"{gitops_ns}/app", git, revision="r2")
    flux.reconcile(gitops_ns, "app", revision2)
    done = _finish(waiter, said)
    assert done.returncode == 0, done.stdout + done.stderr
    migrated = _workload(plan)
    assert migrated.effective_status == "migrated"
    assert migrated.gitops is None
    assert "injection proven on 2 pod(s) of the new revision" in (migrated.history[-1].reason or "")
    protected = _deployment(kube_client, gitops_ns)
    labels = protected["spec"]["template"]["metadata"]["labels"]
    annotations = protected["spec"]["template"]["metadata"]["annotations"]
    assert labels[ann.INJECT_LABEL] == "true"
    assert annotations[ann.SECRET_PATHS]
    assert "cloudtaser" not in _managers(protected)  # Flux applied it, from Git
    assert FIELD_MANAGER in _managers(protected)
    assert "waiting for Git" not in _plan_status(plan).stdout

    # 4. finalize --emit: the references stay live until Git says otherwise; what the change
    # removes is recorded at once (so unprotect can put it back).
    assert _refs(protected) == ["DB_PASSWORD", "DB_USER"]
    emitted2 = tmp_path / "finalize"
    run = _run(cluster, "finalize", plan, "--emit", str(emitted2))
    assert run.returncode == 0, run.stdout + run.stderr
    _assert_unchanged(kube_client, gitops_ns, protected)
    assert _refs(_deployment(kube_client, gitops_ns)) == ["DB_PASSWORD", "DB_USER"]
    finalizing = _workload(plan)
    assert finalizing.finalized_at is None
    assert sorted(r.env or "" for r in finalizing.finalized_refs) == ["DB_PASSWORD", "DB_USER"]
    assert finalizing.gitops is not None
    assert finalizing.gitops.action == "finalize"
    status_json = _plan_status(plan, "-o", "json")
    assert '"waitingForGit"' in status_json.stdout

    # finalize's file carries protect's annotations too (rebuilt from the live template, which
    # Git's protect change set), so the team may replace protect's file with it.
    (finalize_file,) = list(emitted2.rglob(PATCHES_FILE))
    documents = [d for d in yaml.safe_load_all(finalize_file.read_text()) if d]
    kept = [
        d["spec"]["template"]["metadata"] for d in documents if "metadata" in d["spec"]["template"]
    ]
    assert {ann.SECRET_PATHS, ann.ENV_MAP} <= {k for m in kept for k in m.get("annotations", {})}

    # 5. Merged, replacing protect's file: Flux removes the references and keeps the injection;
    # finalize --wait-for-git proves and records it.
    waiter, said = _start(cluster, "finalize", plan)
    git3 = _fold(_git(gitops_ns), emitted2, "cloudtaser/protect")
    revision3 = flux.push(f"{gitops_ns}/app", git3, revision="r3")
    flux.reconcile(gitops_ns, "app", revision3)
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
        == annotations[ann.SECRET_PATHS]
    )

    # 6. The next forced reconcile does not put them back (Git no longer has them).
    flux.reconcile(gitops_ns, "app", revision3)
    again = _deployment(kube_client, gitops_ns)
    assert _refs(again) == []
    assert again["metadata"]["generation"] == gone["metadata"]["generation"]


def test_a_live_protect_of_a_flux_owned_deployment_is_refused_without_the_flag(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    _sync(flux, gitops_ns)
    plan = tmp_path / "plan.yaml"
    _discover(cluster, gitops_ns, plan)
    before = _deployment(kube_client, gitops_ns)
    assert ann.INJECT_LABEL not in before["spec"]["template"]["metadata"]["labels"]

    refused = _run(cluster, "protect", plan)

    assert refused.returncode == 1, refused.stdout + refused.stderr
    text = refused.stdout + refused.stderr
    assert f"owned by Flux Kustomization {gitops_ns}/app" in text
    assert "--emit DIR" in text
    _assert_unchanged(kube_client, gitops_ns, before)
    assert _workload(plan).effective_status == "pending"

    # with the flag: patched live, loudly
    forced = _run(cluster, "protect", plan, "--live-patch-owned")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert f"WARNING: live patch of a workload owned by Flux Kustomization {gitops_ns}/app" in (
        forced.stderr
    )
    assert "cloudtaser" in _managers(_deployment(kube_client, gitops_ns))
    assert _workload(plan).effective_status == "migrated"
