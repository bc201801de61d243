"""``target audit`` on a whole real cluster (the kwok test bed): every namespace, every workload
kind that reads Secrets (a CronJob, a Job, a bare Pod), the common JSON envelope, the cluster
identity, an unknown ``-n`` as an error, a namespace the credentials cannot read reported
unreadable, ``--fail-on`` as a CI gate (exit 1 after the report), and the provenance of
``--plan`` (name and digest) in the JSON and the HTML. Names only: the Secret's value (a
canary) never reaches the output."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
from lightkube import codecs
from lightkube.resources.batch_v1 import CronJob, Job
from lightkube.resources.core_v1 import Namespace, Pod

from cloudtaser import plan as planlib
from cloudtaser.plan.canonical import plan_digest
from tests.integration.test_least_privilege import Identity
from tests.integration.test_protect import REPO, _container, _env
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import create_secret, create_workload, deployment

CANARY = "canary-Audit-3e1f-never-print"


def _audit(cluster: Cluster, *args: str, kubeconfig: Path | None = None) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "cloudtaser", "target", "audit",
         "--kubeconfig", str(kubeconfig or cluster.kubeconfig), *args],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert CANARY not in out.stdout + out.stderr, "a Secret value reached the output"
    return out


def _env_from(secret: str) -> list[dict[str, Any]]:
    return [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "pw"}}}]


def _pod_spec(secret: str, *, restart: str = "OnFailure") -> dict[str, Any]:
    return {
        "restartPolicy": restart,
        "containers": [{"name": "c", "image": "busybox", "env": _env_from(secret)}],
    }


def _create_secret_readers(client: Any, namespace: str) -> None:
    """A CronJob, a (suspended) Job and a bare Pod, each reading Secret ``db`` as env; none existed
    before this (the old audit counted none of them)."""
    create_secret(client, namespace, "db", {"pw": CANARY})
    template = {"spec": _pod_spec("db")}
    for body in (
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": namespace},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once", "namespace": namespace},
            "spec": {"suspend": True, "template": template},  # never finishes
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "debug", "namespace": namespace},
            "spec": _pod_spec("db", restart="Always"),
        },
    ):
        client.create(codecs.from_dict(body))
    # so the checks below can fail: the three readers exist
    assert client.get(CronJob, "nightly", namespace=namespace) is not None
    assert client.get(Job, "once", namespace=namespace) is not None
    assert client.get(Pod, "debug", namespace=namespace) is not None


def test_the_whole_cluster_audit_counts_a_cronjob_a_job_and_a_bare_pod(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    _create_secret_readers(kube_client, namespace)

    out = _audit(cluster, "-o", "json")  # no -n: every namespace
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["formatVersion"], data["kind"]) == ("1", "audit")
    assert list(data)[-1] == "summary"
    jsonschema.validate(data, json.loads((REPO / "schema/output-audit.schema.json").read_text()))
    kube_system = kube_client.get(Namespace, "kube-system")
    assert data["clusterId"] == kube_system.metadata.uid
    parts = {n["name"]: n for n in data["namespaces"]}
    assert {"default", "kube-system", namespace} <= set(parts)
    ns = parts[namespace]
    readers = {(w["kind"], w["name"]): w for w in ns["workloads"]}
    assert set(readers) >= {("CronJob", "nightly"), ("Job", "once"), ("Pod", "debug")}
    for reader in (("CronJob", "nightly"), ("Job", "once"), ("Pod", "debug")):
        reads = [(r["secret"], r["via"]) for r in readers[reader]["secretReads"]]
        assert reads == [("db", "env")], (reader, readers[reader])
    assert ns["summary"]["readingSecretsAsEnv"] == 3
    assert ns["status"] == "action"
    assert any("protect CronJob nightly, Job once, Pod debug" in a for a in ns["nextActions"])
    assert data["verdict"] == "fail"
    assert data["summary"]["readingSecretsAsEnv"] >= 3

    # --fail-on: exit 1 only for a condition that holds, after the full report
    gate = _audit(cluster, "-n", namespace, "-o", "json", "--fail-on", "secrets-read")
    assert gate.returncode == 1, gate.stderr
    assert json.loads(gate.stdout)["namespaces"][0]["name"] == namespace
    assert (
        "--fail-on secrets-read: 3 workload(s) still read Kubernetes Secrets as env or files"
        in (gate.stderr)
    )
    unused = _audit(cluster, "-n", namespace, "--fail-on", "unused-secrets")
    assert unused.returncode == 0, unused.stderr  # db is used: the condition does not hold
    assert "verdict: FAIL" in unused.stdout


def test_the_report_records_the_plan_it_was_judged_against(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    """--plan: the plan's name and reviewed-content digest (what approvals sign) reach the JSON
    and the HTML a reviewer signs off, next to the cluster's kube-system UID."""
    create_secret(kube_client, namespace, "db", {"password": CANARY, "username": "app"})
    create_workload(kube_client, deployment("web", namespace, containers=[_container()]))
    plan_file = tmp_path / "plan.yaml"
    found = subprocess.run(
        [sys.executable, "-m", "cloudtaser", "target", "discover", "--kubeconfig",
         str(cluster.kubeconfig), "-n", namespace, "-o", str(plan_file)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    plan = planlib.load(plan_file)

    out = _audit(cluster, "-n", namespace, "-o", "json", "--plan", str(plan_file))
    assert out.returncode == 0, out.stderr
    provenance = json.loads(out.stdout)["provenance"]
    assert (provenance["plan"], provenance["digest"]) == (plan.metadata.name, plan_digest(plan))
    assert (provenance["approvals"], provenance["verification"]) == ([], None)

    page = tmp_path / "audit.html"
    html = _audit(cluster, "-n", namespace, "-o", "html", "--plan", str(plan_file),
                  "--report", str(page))  # fmt: skip
    assert html.returncode == 0, html.stderr
    text = page.read_text()
    assert f'<td id="plan-digest">{plan_digest(plan)}</td>' in text
    uid = kube_client.get(Namespace, "kube-system").metadata.uid
    assert f'<td id="cluster-id">{uid}</td>' in text


def test_an_unknown_namespace_is_an_error_not_a_clean_row(cluster: Cluster) -> None:
    missing = f"nosuch-{secrets.token_hex(3)}"
    out = _audit(cluster, "-n", missing, "-o", "json")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"namespace {missing} does not exist" in lines[0]


def test_a_namespace_the_credentials_cannot_read_is_reported_unreadable(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    """An account that may list Namespaces but read nothing inside them: every namespace is
    reported unreadable (never clean), the verdict is not a pass, --fail-on incomplete fails."""
    ident = Identity(cluster, kube_client, tmp_path)
    try:
        ident.grant(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "list-namespaces"},
                "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}],
            }
        )
        out = _audit(
            cluster, "-o", "json", "--fail-on", "incomplete", kubeconfig=ident.kubeconfig()
        )
        assert out.returncode == 1, out.stdout + out.stderr
        data = json.loads(out.stdout)
        parts = {n["name"]: n for n in data["namespaces"]}
        assert namespace in parts
        assert parts[namespace]["status"] == "unreadable"
        assert any(u.startswith("pods") for u in parts[namespace]["unreadable"])
        assert all(n["status"] == "unreadable" for n in data["namespaces"])
        assert data["verdict"] == "incomplete"
        assert data["clusterId"] is None  # kube-system may not be read either
        assert "--fail-on incomplete" in out.stderr
    finally:
        ident.close()
