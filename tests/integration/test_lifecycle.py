"""protect's proof of injection, ``target finalize`` (with ``--delete-secrets``), unprotect of a
finalized workload and ``target audit``, against a real API server with controllers and kwok.

kwok pods run nothing and there is no injector here, so "injected" workloads are created with
their pod template already in the injected shape (docs/protect.md, "Proven injected"): init
container ``cloudtaser-init`` (kwok reports it terminated with exit code 0), every container's
command through ``/cloudtaser/bin/cloudtaser-runtime``. That exercises every decision on real
ReplicaSets, pods, events and Secrets; the real injector and wrapper are exercised on the real
node (tests/integration/test_lifecycle_realnode.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lightkube import codecs
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.core_v1 import Secret

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from tests.integration.source_helpers import run_cli
from tests.integration.test_protect import REPO, _env, _owned_count
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer
from tests.testenv.workloads import (
    ContainerSpec,
    WorkloadSpec,
    create_secret,
    create_workload,
    wait_rollout,
)

VAULT = "http://openbao.vault.svc:8200"
CANARY = "k8s-secret-canary-5521"


def _containers(
    *, injected: bool, extra: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    secret_env = {"DB_PASSWORD": ("db", "password"), "DB_USER": ("db", "username")}
    secret_env.update(extra or {})
    command = [contract.WRAPPER_PATH, "wrap", "--", "/app"] if injected else ["/app"]
    app = ContainerSpec(
        command=command,
        secret_env=secret_env,
        env={"PLAIN": "kept"},
        env_from=[("api", "API_")],
        mounts={"certs": "/etc/certs"},
    )
    init = (
        [
            ContainerSpec(
                name=contract.INIT_CONTAINER,
                command=["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
            )
        ]
        if injected
        else []
    )
    return {"containers": [app], "init_containers": init}


def _plan(path: Path, namespace: str, names: list[str]) -> Path:
    plan = MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="lifecycle", cluster="ct-main"),
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
                                fields={"password": "DB_PASSWORD", "username": "DB_USER"},
                                via="env",
                            ),
                            SecretRef(
                                source="api",
                                vault_path=f"secret/data/{namespace}/api",
                                fields={"token": "API_token"},
                                via="envFrom",
                            ),
                        ],
                    )
                    for name in names
                ],
            )
        ],
    )
    planlib.save(plan, path)
    return path


def _setup(
    client: Any,
    namespace: str,
    names: list[str],
    *,
    injected: bool = True,
    extra: dict[str, tuple[str, str]] | None = None,
    min_ready: int = 0,
) -> None:
    create_secret(client, namespace, "db", {"password": CANARY, "username": "app"})
    create_secret(client, namespace, "api", {"token": CANARY})
    create_secret(client, namespace, "other", {"x": CANARY})
    for name in names:
        spec = WorkloadSpec(
            "Deployment",
            name,
            namespace,
            replicas=2,
            min_ready_seconds=min_ready,
            secret_volumes={"certs": "other"},  # not env: finalize leaves it alone
            **_containers(injected=injected, extra=extra),  # type: ignore[arg-type]
        )
        create_workload(client, spec)
    for name in names:
        wait_rollout(client, "Deployment", namespace, name, timeout=90)


def _run(
    cluster: Cluster, *argv: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cloudtaser", *argv, "--kubeconfig", str(cluster.kubeconfig)],
        input=input,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env=_env(),
    )
    assert CANARY not in result.stdout + result.stderr, "a Secret value reached the output"
    return result


def _protect(cluster: Cluster, plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(
        cluster, "target", "protect", "--plan", str(plan), "--vault-address", VAULT,
        "--poll-interval", "200ms", "--timeout", "90s", "--yes", *extra,
    )  # fmt: skip


def _finalize(cluster: Cluster, plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(
        cluster, "target", "finalize", "--plan", str(plan), "--poll-interval", "200ms",
        "--timeout", "90s", "--yes", *extra,
    )  # fmt: skip


def _workload(path: Path, name: str) -> Workload:
    return next(w for _t, w in planlib.load(path).iter_workloads() if w.name == name)


def _app(client: Any, namespace: str, name: str) -> dict[str, Any]:
    from lightkube.resources.apps_v1 import Deployment

    obj = client.get(Deployment, name, namespace=namespace).to_dict()
    return next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == "app")


# -- protect proves injection ----------------------------------------------------------------------


def _deployment(client: Any, namespace: str, name: str) -> dict[str, Any]:
    from lightkube.resources.apps_v1 import Deployment

    return dict(client.get(Deployment, name, namespace=namespace).to_dict())


def _version(client: Any, namespace: str, name: str) -> tuple[int, str]:
    meta = _deployment(client, namespace, name)["metadata"]
    return meta["generation"], meta["resourceVersion"]


def test_protect_without_an_injector_refuses_before_any_patch_naming_the_cause(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["plain"], injected=False)
    plan = _plan(tmp_path / "plan.yaml", namespace, ["plain"])
    # the workload runs and is not opted in, so the check below can fail
    before = _version(kube_client, namespace, "plain")
    template = _deployment(kube_client, namespace, "plain")["spec"]["template"]
    assert contract.INJECT_LABEL not in (template["metadata"].get("labels") or {})

    result = _protect(cluster, plan)

    assert result.returncode == 1, result.stdout + result.stderr
    workload = _workload(plan, "plain")
    assert workload.effective_status == "pending"
    assert workload.last_error is not None
    assert "admission check failed, nothing was changed" in workload.last_error
    assert "not mutated by the injector" in workload.last_error
    assert "the injector is not installed" in workload.last_error
    assert "cloudtaser target install --check" in workload.last_error
    assert _version(kube_client, namespace, "plain") == before  # never patched
    assert _deployment(kube_client, namespace, "plain")["spec"]["template"] == template


def _broken_injector(client: Any, namespace: str) -> str:
    """A webhook configuration in the injector's name that the API server cannot call (an
    empty caBundle, nothing listening), failurePolicy Fail, for opted-in pods of ``namespace``
    only (so no other test is affected)."""
    name = f"ct-broken-{namespace}"
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": contract.INJECTOR_WEBHOOK_NAME,
                "clientConfig": {"url": "https://127.0.0.1:1/mutate", "caBundle": ""},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": {contract.INJECT_LABEL: "true"}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
            }
        ],
    }
    client.create(codecs.from_dict(body))
    return name


def test_protect_and_finalize_refuse_before_any_patch_when_the_injector_cannot_be_called(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web", "plain"])  # both templates in the injected shape
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web", "plain"])
    assert _protect(cluster, plan, "--workload", "Deployment/web").returncode == 0
    assert _workload(plan, "web").effective_status == "migrated"
    web_before = _version(kube_client, namespace, "web")
    plain_before = _version(kube_client, namespace, "plain")
    # the Secret references finalize would remove are there, so the check below can fail
    assert "secretKeyRef" in json.dumps(_app(kube_client, namespace, "web"))
    broken = _broken_injector(kube_client, namespace)
    try:
        protect = _protect(cluster, plan)
        finalize = _finalize(cluster, plan)
    finally:
        kube_client.delete(MutatingWebhookConfiguration, broken)

    assert protect.returncode == 1, protect.stdout + protect.stderr
    plain = _workload(plan, "plain")
    assert plain.effective_status == "pending"
    assert "the API server could not reach the injector" in (plain.last_error or "")
    assert "cloudtaser target install --check" in (plain.last_error or "")
    assert _version(kube_client, namespace, "plain") == plain_before

    assert finalize.returncode == 1, finalize.stdout + finalize.stderr
    text = finalize.stdout + finalize.stderr
    assert "admission check failed, nothing was changed" in text
    assert "could not reach the injector" in text
    assert _workload(plan, "web").finalized_at is None
    assert not _workload(plan, "web").finalized_refs  # refused before the plan records a removal
    assert _version(kube_client, namespace, "web") == web_before
    assert "secretKeyRef" in json.dumps(_app(kube_client, namespace, "web"))


def test_protect_records_migrated_once_the_new_pods_are_proven_injected(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])

    result = _protect(cluster, plan)

    assert result.returncode == 0, result.stdout + result.stderr
    workload = _workload(plan, "web")
    assert workload.effective_status == "migrated"
    assert "injection proven on 2 pod(s) of the new revision" in (workload.history[-1].reason or "")


def test_no_verify_injection_records_migrated_loudly(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["plain"], injected=False)
    plan = _plan(tmp_path / "plan.yaml", namespace, ["plain"])

    result = _protect(cluster, plan, "--no-verify-injection")

    assert result.returncode == 0, result.stderr
    assert "injection NOT verified" in result.stderr
    workload = _workload(plan, "plain")
    assert workload.effective_status == "migrated"
    assert "injection NOT verified" in (workload.history[-1].reason or "")
    # ... and finalize refuses it: its live pods are not injected
    refused = _finalize(cluster, plan)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "not proven injected" in refused.stdout + refused.stderr
    assert _workload(plan, "plain").finalized_at is None
    assert "secretKeyRef" in json.dumps(_app(kube_client, namespace, "plain"))


# -- finalize ------------------------------------------------------------------------------------


def test_finalize_removes_exactly_the_mapped_references_and_records_it(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    before = _owned_count(kube_client, "Deployment", namespace, "web")

    dry = _finalize(cluster, plan, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert '"$patch": "delete"' in dry.stdout
    assert _workload(plan, "web").finalized_at is None

    result = _finalize(cluster, plan)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no verification report given (--require-verified REPORT)" in result.stderr
    app = _app(kube_client, namespace, "web")
    assert [e["name"] for e in app["env"]] == ["PLAIN"]
    assert "envFrom" not in app
    assert app["volumeMounts"] == [{"name": "certs", "mountPath": "/etc/certs", "readOnly": True}]
    assert app["command"][0] == contract.WRAPPER_PATH
    assert _owned_count(kube_client, "Deployment", namespace, "web") == before + 1
    workload = _workload(plan, "web")
    assert workload.effective_status == "migrated"
    assert workload.finalized_at is not None
    assert {(r.via, r.secret, r.env) for r in workload.finalized_refs} == {
        ("env", "db", "DB_PASSWORD"),
        ("env", "db", "DB_USER"),
        ("envFrom", "api", None),
    }
    assert "injection proven" in (workload.history[-1].reason or "")
    # a second run has nothing to do and rolls out nothing
    again = _finalize(cluster, plan)
    assert again.returncode == 0
    assert _owned_count(kube_client, "Deployment", namespace, "web") == before + 1


def test_finalize_refuses_drift_and_changes_nothing(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    from lightkube.resources.apps_v1 import Deployment

    _setup(kube_client, namespace, ["web"])
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    # someone adds a Secret reference after protect
    extra = {"name": "OTHER_X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "x"}}}
    kube_client.patch(
        Deployment,
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [extra]}]}}}},
        namespace=namespace,
    )
    wait_rollout(kube_client, "Deployment", namespace, "web", timeout=90)
    before = _owned_count(kube_client, "Deployment", namespace, "web")

    result = _finalize(cluster, plan)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "drift since protect" in result.stdout + result.stderr
    assert "Secret other key x as OTHER_X" in result.stdout + result.stderr
    assert _owned_count(kube_client, "Deployment", namespace, "web") == before
    assert _workload(plan, "web").finalized_at is None


def test_finalize_resumes_after_sigkill_without_a_second_rollout(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    # minReadySeconds stretches the rollout so the kill lands between patch and plan write
    _setup(kube_client, namespace, ["web"], min_ready=4)
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    before = _owned_count(kube_client, "Deployment", namespace, "web")
    argv = [
        sys.executable, "-m", "cloudtaser", "target", "finalize", "--plan", str(plan),
        "--kubeconfig", str(cluster.kubeconfig), "--yes", "--poll-interval", "200ms",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=_env()
    )
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and "env" in _app(kube_client, namespace, "web")
        and len(_app(kube_client, namespace, "web")["env"]) > 1
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    half = _workload(plan, "web")
    assert half.finalized_at is None, "the kill came too late to test a resume"
    assert half.finalized_refs, "what the patch removes is recorded before the patch"

    result = _finalize(cluster, plan)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "already gone: not patched again" in result.stderr
    assert _owned_count(kube_client, "Deployment", namespace, "web") == before + 1
    assert _workload(plan, "web").finalized_at is not None


def test_delete_secrets_deletes_only_unused_secrets_and_names_the_users(
    cluster: Cluster, kube_client: Any, namespace: str, openbao: BaoServer, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    # Secret "api" is still used by a bare Pod's volume and a ServiceAccount's imagePullSecrets
    kube_client.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "bare", "namespace": namespace},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [{"name": "v", "secret": {"secretName": "api"}}],
                },
            }
        )
    )
    kube_client.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "puller", "namespace": namespace},
                "imagePullSecrets": [{"name": "api"}],
            }
        )
    )
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    # every mapped key is in the vault, proven by verify-plan --attest (keys are only ever
    # deleted with that proof: tests/integration/test_delete_safety.py)
    for name, pairs in (("db", ["password=v", "username=v"]), ("api", ["token=v"])):
        openbao.bao("kv", "put", f"secret/{namespace}/{name}", *pairs)
    report = tmp_path / "verified.json"
    attest = run_cli(openbao, "source", "verify-plan", str(plan), "--attest", str(report))
    assert attest.returncode == 0, attest.stdout + attest.stderr
    verified = ("--require-verified", str(report))

    dry = _finalize(cluster, plan, "--delete-secrets", "--dry-run", *verified)
    assert dry.returncode == 1, dry.stdout + dry.stderr  # a Secret is kept: exit 1
    assert "would delete (dry run)" in dry.stdout
    assert kube_client.get(Secret, "db", namespace=namespace) is not None

    result = _finalize(cluster, plan, "--delete-secrets", "--output", "json", *verified)

    assert result.returncode == 1, result.stdout + result.stderr
    decisions = {d["name"]: d for d in json.loads(result.stdout)["secrets"]}
    assert decisions["db"]["action"] == "deleted"
    assert decisions["api"]["action"] == "kept"
    users = " ".join(decisions["api"]["users"])
    assert "Pod bare: volume" in users
    assert "ServiceAccount puller: imagePullSecret" in users
    names = {s.metadata.name for s in kube_client.list(Secret, namespace=namespace)}
    assert "db" not in names
    assert {"api", "other"} <= names
    history = [h.reason or "" for h in _workload(plan, "web").history]
    assert any("deleted Secret db" in r for r in history)
    assert CANARY not in plan.read_text()

    # unprotect now refuses: the references it would restore point at a deleted Secret
    undo = _run(cluster, "target", "unprotect", "--plan", str(plan), "--yes")
    assert undo.returncode == 1, undo.stdout + undo.stderr
    assert "Recreate the Secret(s) from the vault first" in undo.stdout + undo.stderr


def test_unprotect_of_a_finalized_workload_restores_the_references_in_one_rollout(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    original = _app(kube_client, namespace, "web")
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    assert _finalize(cluster, plan).returncode == 0
    before = _owned_count(kube_client, "Deployment", namespace, "web")

    result = _run(
        cluster, "target", "unprotect", "--plan", str(plan), "--yes", "--poll-interval", "200ms"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    restored = _app(kube_client, namespace, "web")
    assert sorted(restored["env"], key=lambda e: e["name"]) == sorted(
        original["env"], key=lambda e: e["name"]
    )
    assert restored["envFrom"] == original["envFrom"]
    assert _owned_count(kube_client, "Deployment", namespace, "web") == before + 1
    workload = _workload(plan, "web")
    assert workload.effective_status == "pending"
    assert workload.finalized_at is None
    assert workload.finalized_refs == []


# -- audit ---------------------------------------------------------------------------------------


def test_audit_json_and_html_agree_with_the_cluster(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    from tests.integration.test_audit_browser import check_in_browser

    _setup(kube_client, namespace, ["done", "legacy"])
    create_secret(kube_client, namespace, "leftover", {"k": CANARY})
    plan = _plan(tmp_path / "plan.yaml", namespace, ["done"])
    assert _protect(cluster, plan).returncode == 0
    assert _finalize(cluster, plan).returncode == 0
    # a pod that opts in but was not injected
    kube_client.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "optin",
                    "namespace": namespace,
                    "labels": {"cloudtaser.io/inject": "true"},
                },
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            }
        )
    )

    out = _run(cluster, "target", "audit", "-n", namespace, "--output", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    ns = data["namespaces"][0]
    assert ns["name"] == namespace
    # issue 34: the bare Pod optin is a workload too, and protected means its pods are injected
    figures = ("workloads", "readingSecrets", "readingSecretsAsEnv", "optedIn", "protected")
    figures += ("finalized", "secrets", "secretsInUse", "secretsUnused", "podsNotInjected")
    figures += ("readingSecretsOnlyAsFiles",)
    assert {k: ns["summary"][k] for k in figures} == {
        "workloads": 3,
        "readingSecrets": 2,
        "readingSecretsAsEnv": 1,
        # "done" still reads Secret "other" through a volume its plan does not migrate
        "readingSecretsOnlyAsFiles": 1,
        "optedIn": 2,
        "protected": 1,
        "finalized": 0,
        "secrets": 4,
        "secretsInUse": 3,
        "secretsUnused": 1,
        "podsNotInjected": 1,
    }
    by_name = {w["name"]: w for w in ns["workloads"]}
    assert by_name["done"]["finalized"] is False  # a Secret volume is left
    assert by_name["done"]["secretReads"] == [
        {"secret": "other", "via": "volume", "detail": "volume certs"}
    ]
    assert {r["secret"] for r in by_name["legacy"]["secretReads"]} == {"db", "api", "other"}
    assert [p["name"] for p in ns["podsNotInjected"]] == ["optin"]
    secrets = {s["name"]: s for s in ns["secrets"]}
    assert secrets["leftover"]["users"] == []
    assert {u["name"] for u in secrets["db"]["users"]} >= {"legacy"}
    # without -n: every namespace the credentials can list (Namespaces are cluster-scoped; this
    # exited 70 before), with the same figures for this one
    everywhere = _run(cluster, "target", "audit", "--output", "json")
    assert everywhere.returncode == 0, everywhere.stderr
    parts = {n["name"]: n for n in json.loads(everywhere.stdout)["namespaces"]}
    assert parts[namespace]["summary"] == ns["summary"]

    page = tmp_path / "audit.html"
    html_out = _run(
        cluster, "target", "audit", "-n", namespace, "--output", "html", "--report", str(page)
    )
    assert html_out.returncode == 0, html_out.stderr
    check_in_browser(page, data, tmp_path)
