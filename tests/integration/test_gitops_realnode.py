"""The Git flow end to end on the real node: a Flux-owned app goes from a Kubernetes Secret to
OpenBao through Git, with the real injector, the real OpenBao and a real Flux, and the namespace
ends with zero Kubernetes Secrets (issue 32).

"Git" is an OCI artifact in the test bed's registry, applied by Flux's own source-controller and
kustomize-controller (``tests/testenv/flux.py``) into the app's namespace (``prune: true``); the
same files are written to a local checkout for ``--gitops-source``. It holds what a chart
renders: ServiceAccount ``app``, Secret ``db`` (``password`` and a TLS-like ``tls.key``) and
Deployment ``web``, whose app reads the password by ``secretKeyRef`` and ``tls.key`` as a Secret
volume file and prints only sha256 sums (the Secret's values and the vault's are different
canaries: the hash says where a value came from).

The flow, through the real CLI: discover (the Kustomization recorded as owner) → apply-plan →
the vault's values put with ``bao kv put`` → ``verify-plan --attest`` → ``target install`` (the
runtime image built from source) → ``protect --emit`` (nothing changes live) → the files folded
into the next revision → ``protect --wait-for-git`` (already polling) sees Flux apply it; the new
pod is really injected and reads the vault's values → ``finalize --emit``, its file (which
carries protect's label and annotations too) committed in place of protect's →
``finalize --wait-for-git``: the secretKeyRef and the Secret volume are gone, the injection
stays, the pod restarts on the vault's values, a forced reconcile keeps them gone →
``finalize --delete-secrets --gitops-source`` keeps the Flux-owned Secret (same UID) and names
its file → the Secret removed from Git, Flux prunes it: no Secret left, the pod restarted once
more still reads the vault's values.

No canary reaches cloudtaser's output, an emitted file, the plan, a pod log or an event.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Secret

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.target import annotations as ann
from cloudtaser.target.gitops.emit import KUSTOMIZATION_ENTRY_FILE, PATCHES_FILE
from tests.integration import test_lifecycle_realnode as lifecycle
from tests.integration.test_gitops_emit_flux import _fold
from tests.integration.test_lifecycle_realnode import (
    AUDIENCE,
    REPO,
    Site,
    _cloudtaser,
    _pods,
    _wait_ready,
)
from tests.testenv.binaries import find_flux_binaries
from tests.testenv.flux import FIELD_MANAGER, Flux, start_flux
from tests.testenv.oci import Artifact
from tests.testenv.realnode import RealNode

pytestmark = pytest.mark.integration

# The connected cluster, the injector of ``target install`` and busybox, set up as there.
site = lifecycle.site
rt_image = lifecycle.rt_image
injector = lifecycle.injector
app_image = lifecycle.app_image

NAME = "web"
APP = (
    'echo "app: pw=$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)'
    ' key=$(sha256sum /etc/tls/tls.key | cut -c1-64)"; exec sleep 3600'
)
#: What a ``--wait-for-git`` run says once it found the change not applied yet and polls.
POLLING = "to apply the change from Git"


@dataclass
class Values:
    """One side's values (the Kubernetes Secret's in Git, or the vault's); never printed."""

    password: str
    key: str

    @classmethod
    def new(cls, side: str) -> Values:
        return cls(
            password=f"{side}-PW-{secrets.token_hex(6)}",
            key=f"-----BEGIN PRIVATE KEY-----\n{side}-KEY-{secrets.token_hex(6)}\n",
        )

    def line(self) -> str:
        return f"app: pw={_sha(self.password)} key={_sha(self.key)}"

    def canaries(self) -> list[str]:
        return [self.password, self.key.split()[-1]]


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def node_flux(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    started = start_flux(
        real_node.cluster, tmp_path_factory.mktemp("flux-rn"), find_flux_binaries()
    )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def app_ns(site: Site, node_flux: Flux) -> Iterator[str]:
    """The team's namespace; its Kustomization is deleted (while Flux still runs, so its
    finalizer is handled) before the namespace."""
    namespace = site.node.create_namespace(f"gitrn-{secrets.token_hex(3)}")
    try:
        yield namespace
    finally:
        if site.node.running:
            site.node.kubectl("delete", "kustomization", "-n", namespace, "app", "--wait=true",
                              "--timeout=60s", "--ignore-not-found", check=False)  # fmt: skip
            site.node.delete_namespace(namespace)


def _git(namespace: str, image: str, k8s: Values) -> dict[str, str]:
    """What "Git" holds, shaped like a chart's rendered output (see the module doc)."""
    labels = {"app": NAME, "app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "shop"}
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "app", "namespace": namespace},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {"password": k8s.password, "tls.key": k8s.key},
    }
    app = {
        "name": "app",
        "image": image,
        "command": ["sh", "-c", APP],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
        ],
        "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls", "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": NAME}},
            "strategy": {"type": "Recreate"},  # hostNetwork: old and new pod never overlap
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "serviceAccountName": "app",
                    "terminationGracePeriodSeconds": 1,
                    "volumes": [
                        {
                            "name": "tls",
                            "secret": {
                                "secretName": "db",
                                "items": [{"key": "tls.key", "path": "tls.key"}],
                            },
                        }
                    ],
                    "containers": [app],
                },
            },
        },
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["serviceaccount.yaml", "secret.yaml", "deployment.yaml"],
    }
    return {
        "serviceaccount.yaml": yaml.safe_dump(account, sort_keys=False),
        "secret.yaml": yaml.safe_dump(secret, sort_keys=False),
        "deployment.yaml": yaml.safe_dump(deployment, sort_keys=False),
        "kustomization.yaml": yaml.safe_dump(kustomization, sort_keys=False),
    }


def _without_secret(git: dict[str, str]) -> dict[str, str]:
    """The commit that removes Secret ``db`` from Git: its file and its resources entry."""
    out = {path: text for path, text in git.items() if path != "secret.yaml"}
    kustomization = yaml.safe_load(out["kustomization.yaml"])
    kustomization["resources"].remove("secret.yaml")
    out["kustomization.yaml"] = yaml.safe_dump(kustomization, sort_keys=False)
    return out


def _checkout(root: Path, files: dict[str, str]) -> None:
    """The team's local checkout at the revision pushed: exactly ``files``."""
    for path in root.rglob("*"):
        if path.is_file() and str(path.relative_to(root)) not in files:
            path.unlink()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _template(site: Site, namespace: str) -> dict[str, Any]:
    with contextlib.closing(site.node.client()) as client:
        obj: dict[str, Any] = client.get(Deployment, NAME, namespace=namespace).to_dict()
    return obj


def _managers(obj: dict[str, Any]) -> set[str]:
    return {str(m["manager"]) for m in obj["metadata"].get("managedFields") or []}


def _secret_uid(site: Site, namespace: str) -> str | None:
    with contextlib.closing(site.node.client()) as client:
        found = [s for s in client.list(Secret, namespace=namespace) if s.metadata.name == "db"]
    return str(found[0].metadata.uid) if found else None


def _secret_names(site: Site, namespace: str) -> list[str]:
    """``kubectl get secrets -n NAMESPACE -o name``: every Secret, whatever its type."""
    shown = site.node.kubectl("get", "secrets", "-n", namespace, "-o", "name").stdout
    return sorted(shown.split())


def _pod(site: Site, namespace: str, *, not_named: str = "", timeout: float = 120) -> Any:
    """The one running pod of the app (other than ``not_named``) once it printed its line."""
    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in _pods(site, namespace, NAME) if p.metadata.name != not_named]
        if len(pods) == 1 and pods[0].status and pods[0].status.phase == "Running":
            name = str(pods[0].metadata.name)
            if "app: " in site.node.logs(namespace, name, "app"):
                return pods[0]
        assert time.monotonic() < deadline, site.node.diagnostics()
        time.sleep(0.5)


def _printed(site: Site, namespace: str, pod: Any, logs: list[str]) -> str:
    """The app's line; every container's log is kept in ``logs`` (the pod may go later)."""
    name = str(pod.metadata.name)
    for container in [*(c.name for c in pod.spec.initContainers or []), "app"]:
        logs.append(site.node.logs(namespace, name, container))
    (line,) = [line for line in logs[-1].splitlines() if line.startswith("app: ")]
    return line


def _injected(pod: Any) -> bool:
    """The real injector's shape: its init container first, the app started by the wrapper."""
    return bool(
        pod.spec.initContainers
        and pod.spec.initContainers[0].name == contract.INIT_CONTAINER
        and pod.spec.containers[0].command[0] == contract.WRAPPER_PATH
    )


def _refs(obj: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The app's env entries read from a Secret, and the template's volumes."""
    spec = obj["spec"]["template"]["spec"]
    (app,) = spec["containers"]
    env = [e["name"] for e in app.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]
    return env, list(spec.get("volumes") or [])


def _workload(plan: Path) -> planlib.Workload:
    ((_tenant, workload),) = list(planlib.load(plan).iter_workloads())
    return workload


def _docs(emitted: Path) -> list[dict[str, Any]]:
    (patches,) = emitted.rglob(PATCHES_FILE)
    return [d for d in yaml.safe_load_all(patches.read_text()) if d]


class Run:
    """The CLI runs of the flow, every output kept (to look for canaries at the end)."""

    def __init__(self, site: Site, plan: Path) -> None:
        self.site = site
        self.plan = plan
        self.outputs: list[str] = []

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        result = _cloudtaser(*args, env=env)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def argv(self, verb: str, *args: str) -> list[str]:
        vault = ["--vault-address", self.site.openbao.address] if verb == "protect" else []
        return [
            "target", verb, "--plan", str(self.plan), "--kubeconfig", self.site.kubeconfig,
            "--poll-interval", "300ms", "--timeout", "120s", "--yes", *vault, *args,
        ]  # fmt: skip

    def target(self, verb: str, *args: str) -> Any:
        return self.cli(*self.argv(verb, *args))

    def start(self, verb: str) -> tuple[subprocess.Popen[str], str]:
        """``--wait-for-git`` in the background, returned once it is polling (it saw the
        change not applied yet), with what it said so far on stderr."""
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudtaser",
             *self.argv(verb, "--wait-for-git", "--deadline", "4m")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, "NO_COLOR": "1"},
        )  # fmt: skip
        assert process.stderr is not None
        said = []
        for line in process.stderr:
            said.append(line)
            if POLLING in line:
                break
        return process, "".join(said)

    def finish(self, process: subprocess.Popen[str], said: str) -> Any:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        result = subprocess.CompletedProcess(process.args, process.returncode, out, said + err)
        self.outputs.append(result.stdout + result.stderr)
        assert POLLING in said, result.stdout + result.stderr  # it waited for the push
        return result


def test_a_flux_owned_app_moves_to_openbao_through_git_and_its_namespace_ends_with_no_secret(
    site: Site,
    node_flux: Flux,
    app_image: str,
    app_ns: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    node, namespace, flux = site.node, app_ns, node_flux
    k8s, vault = Values.new("K8S"), Values.new("BAO")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git = _git(namespace, app_image, k8s)
    repo = f"{namespace}/app"
    logs: list[str] = []

    def push(files: dict[str, str], revision: str) -> Artifact:
        _checkout(checkout, files)
        return flux.push(repo, files, revision=revision)

    # 0. Git holds the app; Flux applies it; the app reads the Kubernetes Secret's values
    flux.sync(namespace, "app", push(git, "r1"))
    _wait_ready(site, namespace, NAME)
    first = _pod(site, namespace)
    assert not _injected(first)
    assert _printed(site, namespace, first, logs) == k8s.line()
    uid = _secret_uid(site, namespace)
    assert uid is not None
    plan = tmp_path / "plan.yaml"
    run = Run(site, plan)
    report = f"{plan}.verified.json"

    # 1. discover (the Kustomization is the owner) → apply-plan → the vault's values → verify
    discover = run.cli(
        "target", "discover", "--kubeconfig", site.kubeconfig, "-n", namespace,
        "--name", f"gitrn-{namespace}", "--auth-mount", site.mount, "--kv-mount", site.kv,
        "--output-plan", str(plan),
    )  # fmt: skip
    assert discover.returncode == 0, discover.stdout + discover.stderr
    workload = _workload(plan)
    assert workload.effective_status == "pending", workload.reason
    assert workload.owner is not None
    assert (workload.owner.tool, workload.owner.kind, workload.owner.name) == (
        "flux",
        "Kustomization",
        "app",
    )
    owners = {
        (o.kind, o.name)
        for o in [*(r.owner for r in workload.secrets), *(f.owner for f in workload.secret_files)]
        if o
    }
    assert owners == {("Kustomization", "app")}  # Git's Secret, for the env and the volume
    fields: dict[str, set[str]] = {}
    for ref in workload.secrets:
        fields.setdefault(ref.vault_path, set()).update(ref.fields)
    for entry in workload.secret_files:
        assert entry.vault_path is not None
        fields.setdefault(entry.vault_path, set()).update(f.key for f in entry.files)
    assert {k for v in fields.values() for k in v} == {"password", "tls.key"}
    bao_env = {"BAO_ADDR": site.openbao.address}
    apply = run.cli(
        "source", "apply-plan", str(plan), "--token-file", str(site.token),
        "--audience", AUDIENCE, env=bao_env,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stdout + apply.stderr
    key_file = tmp_path / "tls.key"
    key_file.write_text(vault.key)
    values = {"password": vault.password, "tls.key": f"@{key_file}"}
    for path, names in fields.items():
        mount, rest = planlib.split_vault_path(path)
        site.openbao.bao("kv", "put", f"-mount={mount}", rest,
                         *(f"{n}={values[n]}" for n in sorted(names)))  # fmt: skip
    verify = run.cli(
        "source", "verify-plan", str(plan), "--token-file", str(site.token), "--attest", report,
        env=bao_env,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # 2. the injector; protect --emit: nothing changes live, the files are written
    request.getfixturevalue("injector")
    before = _template(site, namespace)
    emitted = tmp_path / "protect"
    protect = run.target("protect", "--emit", str(emitted))
    assert protect.returncode == 0, protect.stdout + protect.stderr
    after = _template(site, namespace)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert "cloudtaser" not in _managers(after)
    files = sorted(p for p in emitted.rglob("*") if p.is_file())
    assert {PATCHES_FILE, KUSTOMIZATION_ENTRY_FILE} <= {p.name for p in files}
    assert all(str(p) in protect.stdout for p in files)
    assert _workload(plan).gitops is not None
    status = run.cli("plan", "status", str(plan), "--workloads")
    assert "pending, waiting for Git" in status.stdout, status.stdout + status.stderr
    (protect_doc,) = _docs(emitted)
    protect_annotations = protect_doc["spec"]["template"]["metadata"]["annotations"]
    assert protect_annotations[ann.SECRET_PATHS]
    assert contract.SECRET_FILES in protect_annotations

    # ... the team merges it: the next revision, applied by Flux while --wait-for-git polls
    waiter, said = run.start("protect")
    base, git = git, _fold(git, emitted, "cloudtaser/protect")
    flux.reconcile(namespace, "app", push(git, "r2"))
    done = run.finish(waiter, said)
    assert done.returncode == 0, done.stdout + done.stderr
    migrated = _workload(plan)
    assert migrated.effective_status == "migrated"
    assert migrated.gitops is None
    assert "injection proven on 1 pod(s)" in (migrated.history[-1].reason or "")
    protected = _template(site, namespace)
    assert protected["spec"]["template"]["metadata"]["labels"][ann.INJECT_LABEL] == "true"
    assert "cloudtaser" not in _managers(protected)  # Flux applied it, from Git
    assert FIELD_MANAGER in _managers(protected)
    # the new pod is the real injector's and reads both values from OpenBao
    second = _pod(site, namespace, not_named=str(first.metadata.name))
    assert _injected(second), node.pod_diagnostics(namespace, str(second.metadata.name))
    assert _printed(site, namespace, second, logs) == vault.line()
    env, volumes = _refs(protected)
    assert env == ["DB_PASSWORD"]  # still referenced: finalize takes them away
    assert volumes[0]["secret"]["secretName"] == "db"

    # 3. finalize --emit: the references stay live until Git says otherwise
    emitted2 = tmp_path / "finalize"
    final = run.target("finalize", "--emit", str(emitted2))
    assert final.returncode == 0, final.stdout + final.stderr
    unchanged = _template(site, namespace)
    assert unchanged["spec"]["template"] == protected["spec"]["template"]
    assert unchanged["metadata"]["generation"] == protected["metadata"]["generation"]
    documents = _docs(emitted2)
    (written,) = [
        d["spec"]["template"]["spec"] for d in documents if "spec" in d["spec"]["template"]
    ]
    assert written["containers"] == [
        {"name": "app", "env": [{"name": "DB_PASSWORD", "$patch": "delete"}]}
    ]
    assert written["volumes"] == [{"name": "tls", "emptyDir": {"medium": "Memory"}, "secret": None}]
    # finalize's file carries protect's label and annotations too (rebuilt from the live
    # template), so the team replaces protect's file with it: Git keeps the injection
    carried = [d["spec"]["template"].get("metadata") or {} for d in documents]
    assert {k: v for m in carried for k, v in (m.get("annotations") or {}).items()} == (
        protect_annotations
    )
    assert {ann.INJECT_LABEL: "true"} in [m.get("labels") for m in carried]
    waiter, said = run.start("finalize")
    git = _fold(base, emitted2, "cloudtaser/protect")
    (finalize_file,) = emitted2.rglob(PATCHES_FILE)
    assert git["cloudtaser/protect/" + PATCHES_FILE] == finalize_file.read_text()  # replaced
    revision3 = push(git, "r3")
    flux.reconcile(namespace, "app", revision3)
    done = run.finish(waiter, said)
    assert done.returncode == 0, done.stdout + done.stderr
    finalized = _workload(plan)
    assert finalized.finalized_at is not None
    assert finalized.gitops is None
    gone = _template(site, namespace)
    env, volumes = _refs(gone)
    assert env == []
    assert volumes == [{"name": "tls", "emptyDir": {"medium": "Memory"}}]
    assert gone["spec"]["template"]["metadata"]["labels"][ann.INJECT_LABEL] == "true"
    assert "cloudtaser" not in _managers(gone)  # Flux removed them, from Git
    assert (
        gone["spec"]["template"]["metadata"]["annotations"]
        == protected["spec"]["template"]["metadata"]["annotations"]
    )
    third = _pod(site, namespace, not_named=str(second.metadata.name))
    assert _injected(third)
    assert _printed(site, namespace, third, logs) == vault.line()
    # a forced reconcile does not put them back
    flux.reconcile(namespace, "app", revision3)
    again = _template(site, namespace)
    assert _refs(again) == ([], volumes)
    assert again["metadata"]["generation"] == gone["metadata"]["generation"]

    # 4. --delete-secrets keeps the Flux-owned Secret (it exists: same UID after) and names
    # the file to remove in the checkout
    assert _secret_uid(site, namespace) == uid
    delete = run.target("finalize", "--delete-secrets", "--require-verified", report,
                        "--gitops-source", str(checkout), "-o", "json")  # fmt: skip
    assert delete.returncode == 1, delete.stdout + delete.stderr  # kept: exit 1
    (decision,) = [d for d in json.loads(delete.stdout)["secrets"] if d["name"] == "db"]
    assert decision["action"] == "kept"
    assert (decision["owner"]["kind"], decision["owner"]["name"]) == ("Kustomization", "app")
    assert decision["sourceFiles"] == ["secret.yaml"]
    assert str(checkout / "secret.yaml") in decision["removeAtSource"]
    assert _secret_uid(site, namespace) == uid
    # ... the team removes it from Git: Flux prunes it, no Secret is left in the namespace
    flux.reconcile(namespace, "app", push(_without_secret(git), "r4"))
    deadline = time.monotonic() + 30
    while _secret_uid(site, namespace) is not None:
        assert time.monotonic() < deadline, "Flux did not prune Secret db"
        time.sleep(0.3)
    assert _secret_names(site, namespace) == []
    # the pod restarted without any Secret still reads the vault's values
    with contextlib.closing(node.client()) as client:
        client.delete(Pod, str(third.metadata.name), namespace=namespace, grace_period=0)
    fourth = _pod(site, namespace, not_named=str(third.metadata.name))
    assert _injected(fourth)
    assert _printed(site, namespace, fourth, logs) == vault.line()
    assert _secret_names(site, namespace) == []

    # 5. no value anywhere: cloudtaser's output, the emitted files, the plan, the pods' logs
    # (the injector's init container too), the namespace's events
    texts = list(run.outputs)
    texts += [p.read_text() for d in (emitted, emitted2) for p in d.rglob("*") if p.is_file()]
    texts.append(plan.read_text())
    texts += logs
    texts.append(node.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)
    for text in texts:
        for canary in [*k8s.canaries(), *vault.canaries()]:
            assert canary not in text, "a value reached an output, a file, a log or an event"
