"""``finalize --delete-secrets`` never deletes a Secret that Git, Helm or an operator owns, and
names what to remove at the source instead -- with a real Flux on the test bed (issue 32).

"Git" is an OCI artifact in the test bed's registry, reconciled by Flux's own source-controller
and kustomize-controller (``tests/testenv/flux.py``); the directory pushed as the artifact is
the local checkout given with ``--gitops-source``. The Deployment that reads the Secrets is
Git's too, in the injected shape (kwok pods run nothing and no injector runs here, as in
tests/integration/test_delete_safety.py), so discover -> protect -> finalize reach the deletion
gate exactly as a real migration does. Every key is released in the plan, so only the owner
gate can keep a Secret; the unowned one in the same run is deleted (the gate is not broken).

Every destructive step first proves what it must keep exists (its UID), then that it survived
with the same UID. No value reaches any output (canary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import codecs
from lightkube.resources.core_v1 import Secret

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.plan.model import Owner
from tests.integration.test_least_privilege import Identity, doc_cluster_role
from tests.testenv.cluster import Cluster
from tests.testenv.flux import Flux
from tests.testenv.workloads import (
    DEFAULT_IMAGE,
    ContainerSpec,
    WorkloadSpec,
    create_secret,
    manifest,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAULT = "http://openbao.vault.svc:8200"
CANARY = "gitops-delete-canary-3e9b"
#: The Secrets the Deployment reads: Git's, an ExternalSecret's, a Helm release's, one whose
#: owner only the plan records, nobody's.
SECRETS = {"DB": "db", "EXT": "ext", "CHART": "chart", "OLD": "recorded", "PLAIN": "plain"}


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "NO_COLOR"}}
    env["NO_COLOR"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env=env,
    )
    assert CANARY not in result.stdout + result.stderr, "a Secret value reached the output"
    return result


def _owned_flag(cluster: Cluster) -> list[str]:
    """gitflow-32 refuses a live patch of an owned workload without ``--live-patch-owned``:
    this test needs the live patch (it is about the deletion gate), so it passes the flag
    where the CLI has it."""
    helpful = _cli(cluster, "target", "finalize", "--help")
    return ["--live-patch-owned"] if "--live-patch-owned" in helpful.stdout else []


def _git(checkout: Path, namespace: str) -> dict[str, str]:
    """What "Git" holds (written to ``checkout`` too): the Secret ``db`` in its own file, the
    Deployment reading every Secret of :data:`SECRETS` as env, and an unrelated Secret."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "type": "Opaque",
        "stringData": {"password": CANARY},
    }
    unrelated = {**secret, "metadata": {"name": "unrelated"}}
    app = ContainerSpec(
        command=[contract.WRAPPER_PATH, "wrap", "--", "/app"],
        secret_env={env: (name, "password") for env, name in SECRETS.items()},
    )
    init = ContainerSpec(
        name=contract.INIT_CONTAINER,
        image=DEFAULT_IMAGE,
        command=["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
    )
    deployment = manifest(
        WorkloadSpec("Deployment", "api", namespace, containers=[app], init_containers=[init])
    )
    del deployment["metadata"]["namespace"]  # the Kustomization's targetNamespace sets it
    files = {
        "deployment.yaml": yaml.safe_dump(deployment, sort_keys=False),
        "db-secret.yaml": yaml.safe_dump(secret, sort_keys=False),
        "unrelated.yaml": yaml.safe_dump(unrelated, sort_keys=False),
    }
    for path, text in files.items():
        (checkout / path).write_text(text)
    return files


def _external_secret_owned(client: Any, namespace: str) -> None:
    """Secret ``ext`` as external-secrets writes it: an ownerReference to its ExternalSecret
    (no operator, no CRD: the reference is the evidence)."""
    client.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "ext",
                    "namespace": namespace,
                    "ownerReferences": [
                        {
                            "apiVersion": "external-secrets.io/v1beta1",
                            "kind": "ExternalSecret",
                            "name": "db-creds",
                            "uid": "0f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
                            "controller": True,
                        }
                    ],
                },
                "stringData": {"password": CANARY},
            }
        )
    )


def _uids(client: Any, namespace: str) -> dict[str, str]:
    return {s.metadata.name: s.metadata.uid for s in client.list(Secret, namespace=namespace)}


def test_delete_secrets_refuses_owned_secrets_names_the_source_and_deletes_the_rest(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    artifact = flux.push(f"{gitops_ns}/app", _git(checkout, gitops_ns), revision="r1")
    _external_secret_owned(kube_client, gitops_ns)
    create_secret(kube_client, gitops_ns, "chart", {"password": CANARY})
    create_secret(kube_client, gitops_ns, "plain", {"password": CANARY})
    create_secret(kube_client, gitops_ns, "recorded", {"password": CANARY})
    flux.sync(gitops_ns, "app", artifact)  # applies the Deployment (it reads all four) and db

    plan = tmp_path / "plan.yaml"
    found = _cli(
        cluster, "target", "discover", "-n", gitops_ns, "--name", "gds", "--output-plan", str(plan)
    )
    assert found.returncode == 0, found.stderr
    edited = planlib.load(plan)
    ((_tenant, workload),) = list(edited.iter_workloads())
    owners = {s.source: s.owner for s in workload.secrets}
    assert owners["db"] is not None
    assert owners["db"].kind == "Kustomization"
    assert owners["ext"] is not None
    assert owners["ext"].kind == "ExternalSecret"
    assert owners["chart"] is None  # the Helm annotations come after discover
    assert owners["plain"] is None
    for ref in workload.secrets:  # every key released: only the owner gate may keep one
        ref.released_keys = sorted(ref.fields)
        if ref.source == "recorded":  # the plan says Argo CD wrote it; the live labels do not
            ref.owner = Owner(
                tool="argocd",
                kind="Application",
                name="legacy",
                evidence="label argocd.argoproj.io/instance",
            )
    planlib.save(edited, plan)
    # a Helm release takes "chart" over after discover: the live read must still stop it
    kube_client.patch(
        Secret,
        "chart",
        {
            "metadata": {
                "annotations": {
                    "meta.helm.sh/release-name": "web",
                    "meta.helm.sh/release-namespace": gitops_ns,
                },
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
            }
        },
        namespace=gitops_ns,
    )
    live = _owned_flag(cluster)
    protected = _cli(
        cluster, "target", "protect", "--plan", str(plan), "--vault-address", VAULT, "--yes",
        "--poll-interval", "200ms", "--timeout", "90s", *live,
    )  # fmt: skip
    assert protected.returncode == 0, protected.stdout + protected.stderr
    before = _uids(kube_client, gitops_ns)
    assert set(SECRETS.values()) <= set(before)  # every Secret exists: the checks can fail

    result = _cli(
        cluster, "target", "finalize", "--plan", str(plan), "--yes", "--poll-interval", "200ms",
        "--timeout", "90s", "--delete-secrets", "--gitops-source", str(checkout), "-o", "json",
        *live,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr  # kept Secrets: exit 1
    decisions = {d["name"]: d for d in json.loads(result.stdout)["secrets"]}
    assert planlib.load(plan).tenants[0].workloads[0].finalized_at is not None
    # Git's Secret: the Kustomization, its OCIRepository's URL, the path and the exact file
    db = decisions["db"]
    assert db["action"] == "kept"
    assert db["owner"]["tool"] == "flux"
    assert db["owner"]["kind"] == "Kustomization"
    source = f"OCIRepository {gitops_ns}/app ({artifact.url})"
    assert db["removeAtSource"] == (
        f"Flux Kustomization {gitops_ns}/app applies it from {source}, path ./: "
        f"remove it from {checkout / 'db-secret.yaml'} (Secret)"
    )
    assert db["sourceFiles"] == ["db-secret.yaml"]  # not deployment.yaml, not unrelated.yaml
    assert db["reason"].startswith(f"owned by Flux Kustomization {gitops_ns}/app (labels ")
    assert "not deleted, its owner would recreate it" in db["reason"]
    assert "ownerUnread" not in db
    # the ExternalSecret's Secret, and the Secret a Helm release took over after discover
    ext = decisions["ext"]
    assert ext["action"] == "kept"
    assert "delete or change ExternalSecret" in ext["removeAtSource"]
    assert f"ExternalSecret {gitops_ns}/db-creds: its store still holds the value" in ext["reason"]
    chart = decisions["chart"]
    assert chart["action"] == "kept"
    assert chart["owner"] == {
        "tool": "helm",
        "kind": "Release",
        "name": "web",
        "namespace": gitops_ns,
        "evidence": "annotations meta.helm.sh/release-name, meta.helm.sh/release-namespace",
    }
    assert f"Helm release {gitops_ns}/web renders it" in chart["removeAtSource"]
    assert "an existingSecret-style value" in chart["removeAtSource"]
    # the owner only the plan records stops it too, and the line says the labels are gone
    recorded = decisions["recorded"]
    assert recorded["action"] == "kept"
    assert "recorded in the plan by discover, no longer on the live Secret" in recorded["reason"]
    assert recorded["removeAtSource"].startswith("Argo CD Application argocd/legacy syncs it")
    assert recorded["ownerUnread"] == ["Application argocd/legacy not found"]
    # the unowned one goes: the gate still deletes
    assert decisions["plain"]["action"] == "deleted"
    after = _uids(kube_client, gitops_ns)
    assert "plain" not in after
    for name in ("db", "ext", "chart", "recorded"):
        assert after[name] == before[name], f"Secret {name} was replaced or deleted"

    # the text output: one line per Secret naming what to remove at the source
    text = _cli(
        cluster, "target", "finalize", "--plan", str(plan), "--yes", "--poll-interval", "200ms",
        "--timeout", "90s", "--delete-secrets", "--dry-run", *live,
    )  # fmt: skip
    assert text.returncode == 1, text.stdout + text.stderr
    assert f"Flux Kustomization {gitops_ns}/app applies it from {source}" in text.stdout
    assert "give --gitops-source DIR" in text.stdout  # no checkout given this time
    assert _uids(kube_client, gitops_ns) == after


def _at_source(kubeconfig: Path, namespace: str, name: str, checkout: Path) -> Any:
    """What to remove at the source of Secret ``namespace/db`` owned by Kustomization ``name``,
    read with ``kubeconfig``'s identity."""
    from cloudtaser.config import ClusterTarget
    from cloudtaser.target.gitops.at_source import at_source
    from cloudtaser.target.kube.session import connect
    from cloudtaser.target.kube.workloads import WorkloadAPI

    owner = Owner(tool="flux", kind="Kustomization", name=name, evidence="labels")
    session = connect(ClusterTarget(kubeconfig=(str(kubeconfig),)))
    try:
        with WorkloadAPI(session) as api:
            return at_source(api, owner, namespace, "db", checkout=checkout)
    finally:
        session.close()


def test_the_source_is_named_with_exactly_the_documented_rbac_and_degrades_without_it(
    flux: Flux, cluster: Cluster, kube_client: Any, gitops_ns: str, tmp_path: Path
) -> None:
    """``rbac-finalize-owners`` is enough to name the Kustomization's source; without it (403)
    or for a Kustomization that does not exist (404) the refusal stands and says what could
    not be read."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    artifact = flux.push(f"{gitops_ns}/app", _git(checkout, gitops_ns), revision="r1")
    flux.sync(gitops_ns, "app", artifact)
    source = f"OCIRepository {gitops_ns}/app ({artifact.url}), path ./"
    identity = Identity(cluster, kube_client, tmp_path)
    try:
        denied = _at_source(identity.kubeconfig(), gitops_ns, "app", checkout)
        identity.grant(doc_cluster_role("rbac-finalize-owners"))
        allowed = _at_source(identity.kubeconfig(), gitops_ns, "app", checkout)
        missing = _at_source(identity.kubeconfig(), gitops_ns, "gone", checkout)
    finally:
        identity.close()

    assert allowed.unread == ()
    assert f"Flux Kustomization {gitops_ns}/app applies it from {source}" in allowed.line
    assert allowed.files == ("db-secret.yaml",)
    kustomizations = "get kustomizations.kustomize.toolkit.fluxcd.io"
    assert denied.unread == (
        f"may not read Kustomization {gitops_ns}/app (RBAC: {kustomizations})",
    )
    assert denied.line.startswith(
        f"Flux Kustomization {gitops_ns}/app applies it (its source could not be read): "
        f"remove it from {checkout / 'db-secret.yaml'} (Secret)"
    )
    assert denied.files == ("db-secret.yaml",)  # the checkout is still searched, all of it
    assert missing.unread == (f"Kustomization {gitops_ns}/gone not found",)
