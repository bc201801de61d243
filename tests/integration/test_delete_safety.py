"""``finalize --delete-secrets`` never destroys a value nobody can get back, against a real API
server (controllers + kwok) and a real OpenBao dev server.

- A Secret is deleted only when every key it holds is mapped by the plan and proven in the
  vault by ``verify-plan --attest``'s report, or released by a reviewer (``releasedKeys``,
  signed content: the plan is re-approved and re-verified after that edit).
- Immediately before each delete the Secret is read and its namespace scanned again, and the
  DELETE carries the uid/resourceVersion of the decision as preconditions: a Secret that
  changes, or gains a user, between the check and the delete is kept. The race is injected
  deterministically by wrapping the reference scan in-process; the API server stays real.
- ``finalize`` and ``unprotect`` honour ``--require-approval``; ``finalize --require-verified``
  covers the migrated workloads it acts on.

Workloads are created in the injected shape, as in tests/integration/test_lifecycle.py (kwok
pods run nothing, so no injector runs here). Every destructive step first asserts that what
it must keep exists, so the check after it can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
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
K8S_CANARY = "k8s-canary-Delete-7f31"
VAULT_CANARY = "vault-canary-Delete-9a02"


# -- helpers -------------------------------------------------------------------------------------


def _clean(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    text = result.stdout + result.stderr
    assert K8S_CANARY not in text, "a Kubernetes Secret value reached the output"
    assert VAULT_CANARY not in text, "a vault value reached the output"
    return result


def _cli(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cloudtaser", *argv, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env=_env(),
    )
    return _clean(result)


def _protect(cluster: Cluster, plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(
        cluster, "target", "protect", "--plan", str(plan), "--vault-address", VAULT,
        "--poll-interval", "200ms", "--timeout", "90s", "--yes", *extra,
    )  # fmt: skip


def _finalize(cluster: Cluster, plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(
        cluster, "target", "finalize", "--plan", str(plan), "--poll-interval", "200ms",
        "--timeout", "90s", "--yes", *extra,
    )  # fmt: skip


def _deployment(client: Any, namespace: str, name: str, env: dict[str, tuple[str, str]]) -> None:
    """A Deployment in the injected shape reading ``env`` from Secrets."""
    app = ContainerSpec(command=[contract.WRAPPER_PATH, "wrap", "--", "/app"], secret_env=env)
    init = ContainerSpec(
        name=contract.INIT_CONTAINER,
        command=["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
    )
    create_workload(
        client,
        WorkloadSpec("Deployment", name, namespace, containers=[app], init_containers=[init]),
    )
    wait_rollout(client, "Deployment", namespace, name, timeout=90)


def _ref(
    source: str, path: str, fields: dict[str, str], released: list[str] | None = None
) -> SecretRef:
    return SecretRef(
        source=source, vault_path=path, fields=fields, via="env", released_keys=released or []
    )


def _save_plan(path: Path, namespace: str, workloads: dict[str, list[SecretRef]]) -> Path:
    plan = MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="delete-safety", cluster="ct-main"),
        tenants=[
            Tenant(
                name=namespace,
                namespace=namespace,
                workloads=[
                    Workload(kind="Deployment", name=name, secrets=refs)
                    for name, refs in workloads.items()
                ],
            )
        ],
    )
    planlib.save(plan, path)
    return path


def _workload(path: Path, name: str) -> Workload:
    return next(w for _t, w in planlib.load(path).iter_workloads() if w.name == name)


def _keys(client: Any, namespace: str, name: str) -> set[str]:
    return set((client.get(Secret, name, namespace=namespace).data or {}).keys())


def _secret_names(client: Any, namespace: str) -> set[str]:
    return {s.metadata.name for s in client.list(Secret, namespace=namespace)}


def _decisions(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in json.loads(result.stdout)["secrets"]}


def _env_names(client: Any, namespace: str, name: str) -> list[str]:
    obj = client.get(Deployment, name, namespace=namespace).to_dict()
    app = next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == "app")
    return [e["name"] for e in app.get("env") or ()]


@pytest.fixture
def reviewer(tmp_path: Path) -> tuple[Path, Path]:
    """(private key, allowed-signers file) of one reviewer who signs plans and reports."""
    key = tmp_path / "reviewer"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sec@example.com", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    public = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        f'sec@example.com namespaces="cloudtaser-plan,cloudtaser-verification" {public}\n'
    )
    return key, allowed


def _audit_keys(cluster: Cluster, namespace: str, *extra: str) -> dict[str, Any]:
    """``target audit -o json``: each Secret's key-level verdict (``None``: not judged)."""
    result = _cli(cluster, "target", "audit", "-n", namespace, "-o", "json", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    (part,) = json.loads(result.stdout)["namespaces"]
    return {s["name"]: s["keys"] for s in part["secrets"]}


def _approve(openbao: BaoServer, plan: Path, key: Path) -> None:
    approved = run_cli(openbao, "plan", "approve", str(plan), "--key", str(key))
    assert approved.returncode == 0, approved.stderr


def _attest(
    openbao: BaoServer, plan: Path, report: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = ["source", "verify-plan", str(plan), "--attest", str(report), *extra]
    return _clean(run_cli(openbao, *argv))


def _library_finalize(cluster: Cluster, plan: Path, *, verified: Any = None) -> tuple[Any, Any]:
    """finalize --delete-secrets through the library, in this process (so the reference scan
    can be wrapped), without the CLI's gates."""
    from cloudtaser.config import ClusterTarget
    from cloudtaser.target.engine.core import RunOptions
    from cloudtaser.target.finalize import step as finlib
    from cloudtaser.target.kube.session import connect

    session = connect(ClusterTarget(kubeconfig=(str(cluster.kubeconfig),)))
    try:
        return finlib.finalize(
            session,
            plan,
            RunOptions(actor="test", poll_interval=0.2, timeout=90),
            delete_secrets=True,
            verified=verified,
        )
    finally:
        session.close()


# -- (i) an unmapped key keeps the Secret until a reviewer releases it -------------------------


def test_an_unmapped_key_keeps_the_secret_until_a_reviewer_releases_it(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    openbao: BaoServer,
    kv_mount: str,
    reviewer: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    key, allowed = reviewer
    create_secret(
        kube_client,
        namespace,
        "db",
        {"password": K8S_CANARY, "admin_password": K8S_CANARY + "-admin"},
    )
    _deployment(kube_client, namespace, "web", {"DB_PASSWORD": ("db", "password")})
    path = f"{kv_mount}/data/{namespace}/db"
    plan = _save_plan(
        tmp_path / "plan.yaml", namespace, {"web": [_ref("db", path, {"password": "DB_PASSWORD"})]}
    )
    _approve(openbao, plan, key)
    gate = ["--require-approval", "--allowed-signers", str(allowed)]
    assert _protect(cluster, plan, *gate).returncode == 0
    openbao.bao("kv", "put", f"{kv_mount}/{namespace}/db", f"password={VAULT_CANARY}")
    report = tmp_path / "verified.json"
    assert _attest(openbao, plan, report, "--key", str(key)).returncode == 0
    assert _keys(kube_client, namespace, "db") == {"password", "admin_password"}  # can fail

    kept = _finalize(
        cluster, plan, "--delete-secrets", "--require-verified", str(report), *gate, "-o", "json"
    )

    assert kept.returncode == 1, kept.stdout + kept.stderr
    decision = _decisions(kept)["db"]
    assert decision["action"] == "kept"
    assert decision["keys"] == ["admin_password"]
    assert "admin_password" in decision["reason"]
    assert "releasedKeys" in decision["reason"]
    assert "no verification report" not in kept.stderr  # the report was given: no warning
    assert _keys(kube_client, namespace, "db") == {"password", "admin_password"}
    assert _workload(plan, "web").finalized_at is not None  # the references did go
    # audit --plan reaches the same key-level verdict for the now unused Secret
    assert _audit_keys(cluster, namespace)["db"] is None  # no --plan: keys not judged
    judged = _audit_keys(cluster, namespace, "--plan", str(plan), "--require-verified", str(report))
    assert judged["db"]["safe"] is False
    assert judged["db"]["keeping"] == ["admin_password"]
    assert "releasedKeys" in judged["db"]["reason"]

    # the reviewer releases admin_password: a reviewed edit, so approval and report go stale
    edited = planlib.load(plan)
    edited.tenants[0].workloads[0].secrets[0].released_keys = ["admin_password"]
    planlib.save(edited, plan)
    stale_approval = _finalize(
        cluster, plan, "--delete-secrets", "--require-verified", str(report), *gate
    )
    assert stale_approval.returncode == 5, stale_approval.stderr
    assert "not approved" in stale_approval.stderr
    _approve(openbao, plan, key)
    stale_report = _finalize(
        cluster, plan, "--delete-secrets", "--require-verified", str(report), *gate
    )
    assert stale_report.returncode == 5, stale_report.stderr
    assert "verification report is for plan" in stale_report.stderr
    assert "db" in _secret_names(kube_client, namespace)

    assert _attest(openbao, plan, report, "--key", str(key)).returncode == 0
    judged = _audit_keys(cluster, namespace, "--plan", str(plan), "--require-verified", str(report))
    assert judged["db"] == {"safe": True, "keeping": [], "reason": None}
    deleted = _finalize(
        cluster, plan, "--delete-secrets", "--require-verified", str(report), *gate, "-o", "json"
    )

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert _decisions(deleted)["db"]["action"] == "deleted"
    assert "db" not in _secret_names(kube_client, namespace)
    history = " ".join(h.reason or "" for h in _workload(plan, "web").history)
    assert "deleted Secret db" in history
    assert "admin_password released in the plan" in history
    assert "password proven in the vault" in history


# -- (ii) without a report, a Secret with a mapped key is kept (dry run shows the same) ---------


def test_without_a_report_every_secret_with_a_mapped_key_is_kept(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    create_secret(kube_client, namespace, "db", {"password": K8S_CANARY})
    create_secret(kube_client, namespace, "legacy", {"old": K8S_CANARY})
    _deployment(
        kube_client,
        namespace,
        "web",
        {"DB_PASSWORD": ("db", "password"), "OLD": ("legacy", "old")},
    )
    plan = _save_plan(
        tmp_path / "plan.yaml",
        namespace,
        {
            "web": [
                _ref("db", f"secret/data/{namespace}/db", {"password": "DB_PASSWORD"}),
                # every key released by the reviewer: no proof needed
                _ref("legacy", f"secret/data/{namespace}/legacy", {"old": "OLD"}, ["old"]),
            ]
        },
    )
    assert _protect(cluster, plan).returncode == 0
    assert {"db", "legacy"} <= _secret_names(kube_client, namespace)  # can fail

    dry = _finalize(cluster, plan, "--delete-secrets", "--dry-run", "-o", "json")
    result = _finalize(cluster, plan, "--delete-secrets", "-o", "json")

    for run in (dry, result):
        assert run.returncode == 1, run.stdout + run.stderr
        assert "--delete-secrets keeps every Secret holding a key the plan maps" in run.stderr
        assert "does not record a verify-plan result" not in run.stderr
        decisions = _decisions(run)
        assert decisions["db"]["action"] == "kept"
        assert decisions["db"]["keys"] == ["password"]
        assert "no verification report was given" in decisions["db"]["reason"]
        assert "verify-plan PLAN --attest REPORT" in decisions["db"]["reason"]
    assert _decisions(dry)["legacy"]["action"] == "would-delete"
    assert _decisions(result)["legacy"]["action"] == "deleted"
    names = _secret_names(kube_client, namespace)
    assert "db" in names
    assert "legacy" not in names


# -- (iii) a report that does not prove the field keeps the Secret ------------------------------


def test_a_report_that_does_not_prove_a_mapped_field_keeps_the_secret(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    openbao: BaoServer,
    kv_mount: str,
    tmp_path: Path,
) -> None:
    from cloudtaser.plan.attest import load_report

    create_secret(kube_client, namespace, "db", {"password": K8S_CANARY, "username": "app"})
    _deployment(
        kube_client,
        namespace,
        "web",
        {"DB_PASSWORD": ("db", "password"), "DB_USER": ("db", "username")},
    )
    path = f"{kv_mount}/data/{namespace}/db"
    plan = _save_plan(
        tmp_path / "plan.yaml",
        namespace,
        {"web": [_ref("db", path, {"password": "DB_PASSWORD", "username": "DB_USER"})]},
    )
    assert _protect(cluster, plan).returncode == 0
    openbao.bao("kv", "put", f"{kv_mount}/{namespace}/db", "username=app")  # no password yet
    report = tmp_path / "verified.json"
    assert _attest(openbao, plan, report).returncode == 1  # written: it proves username only
    assert "db" in _secret_names(kube_client, namespace)  # can fail

    # the CLI gate refuses the run outright (the migrated workload is not covered) ...
    gated = _finalize(cluster, plan, "--delete-secrets", "--require-verified", str(report))
    assert gated.returncode == 5, gated.stderr
    assert "fields password not proven" in gated.stderr
    # ... and the library on its own keeps the Secret, naming the key
    run, secrets = _library_finalize(cluster, plan, verified=load_report(report))

    assert not run.failed
    decision = next(d for d in secrets.decisions if d.name == "db")
    assert decision.action == "kept"
    assert decision.keys == ("password",)
    assert "does not prove them present" in decision.reason
    assert VAULT_CANARY not in decision.reason
    assert _keys(kube_client, namespace, "db") == {"password", "username"}


# -- (iv) the Secret changes, or gains a user, between the check and the delete -----------------


def test_a_secret_changed_or_used_between_check_and_delete_is_kept(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloudtaser.target.references import scan as references

    for name in ("api", "db"):
        create_secret(kube_client, namespace, name, {"value": K8S_CANARY})
    _deployment(kube_client, namespace, "web", {"API": ("api", "value"), "DB": ("db", "value")})
    plan = _save_plan(
        tmp_path / "plan.yaml",
        namespace,
        {
            "web": [  # every key released: the key rules pass, only the race decides
                _ref("api", f"secret/data/{namespace}/api", {"value": "API"}, ["value"]),
                _ref("db", f"secret/data/{namespace}/db", {"value": "DB"}, ["value"]),
            ]
        },
    )
    assert _protect(cluster, plan).returncode == 0
    real_scan = references.scan
    calls: list[str] = []

    def intruder() -> None:  # a new user of "api" appears after the first check
        kube_client.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "intruder", "namespace": namespace},
                    "spec": {
                        "containers": [{"name": "c", "image": "busybox"}],
                        "volumes": [{"name": "v", "secret": {"secretName": "api"}}],
                    },
                }
            )
        )

    def change_db() -> None:  # "db" changes while its namespace is scanned the second time
        kube_client.patch(
            Secret, "db", {"metadata": {"labels": {"touched": "yes"}}}, namespace=namespace
        )

    races: dict[int, Callable[[], None]] = {1: intruder}  # call 0: the decision scan

    def scan(cluster_api: Any, ns: str, **kwargs: Any) -> references.Scan:
        calls.append(ns)
        race = races.get(len(calls) - 1)
        if race is intruder:
            race()
            return real_scan(cluster_api, ns, **kwargs)
        found = real_scan(cluster_api, ns, **kwargs)
        if race is not None:
            race()  # after the re-read and the re-scan: only the precondition can catch it
        return found

    races[2] = change_db
    monkeypatch.setattr(references, "scan", scan)
    assert {"api", "db"} <= _secret_names(kube_client, namespace)  # can fail

    _run, secrets = _library_finalize(cluster, plan)

    assert calls == [namespace, namespace, namespace]  # decision, then one re-check each
    decisions = {d.name: d for d in secrets.decisions}
    assert decisions["api"].action == "kept"
    assert "a user appeared after the check" in decisions["api"].reason
    assert "Pod intruder: volume" in " ".join(decisions["api"].users)
    assert decisions["db"].action == "kept"
    assert "409" in decisions["db"].reason
    assert "preconditions failed" in decisions["db"].reason
    assert {"api", "db"} <= _secret_names(kube_client, namespace)
    history = " ".join(h.reason or "" for h in _workload(plan, "web").history)
    assert "deleted Secret" not in history

    # no race now: db goes (read again, fresh preconditions); api is still used by the Pod
    races.clear()
    calls.clear()
    _run, secrets = _library_finalize(cluster, plan)

    decisions = {d.name: d for d in secrets.decisions}
    assert decisions["db"].action == "deleted"
    assert decisions["api"].action == "kept"
    assert "db" not in _secret_names(kube_client, namespace)
    assert "api" in _secret_names(kube_client, namespace)


# -- (v) finalize and unprotect honour --require-approval ----------------------------------------


def test_finalize_and_unprotect_refuse_an_unapproved_plan_and_change_nothing(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    openbao: BaoServer,
    reviewer: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    key, allowed = reviewer
    create_secret(kube_client, namespace, "db", {"password": K8S_CANARY})
    _deployment(kube_client, namespace, "web", {"DB_PASSWORD": ("db", "password")})
    plan = _save_plan(
        tmp_path / "plan.yaml",
        namespace,
        {"web": [_ref("db", f"secret/data/{namespace}/db", {"password": "DB_PASSWORD"})]},
    )
    assert _protect(cluster, plan).returncode == 0
    gate = ["--require-approval", "--allowed-signers", str(allowed)]
    before_plan = plan.read_bytes()
    before_rs = _owned_count(kube_client, "Deployment", namespace, "web")
    assert _env_names(kube_client, namespace, "web") == ["DB_PASSWORD"]  # can fail

    refused = {
        "finalize": _finalize(cluster, plan, "--delete-secrets", *gate),
        "unprotect": _cli(cluster, "target", "unprotect", "--plan", str(plan), "--yes", *gate),
    }

    for command, result in refused.items():
        assert result.returncode == 5, f"{command}: {result.stdout}{result.stderr}"
        assert "not approved" in result.stderr, command
    assert plan.read_bytes() == before_plan
    assert _owned_count(kube_client, "Deployment", namespace, "web") == before_rs
    assert _env_names(kube_client, namespace, "web") == ["DB_PASSWORD"]
    assert "db" in _secret_names(kube_client, namespace)

    _approve(openbao, plan, key)
    undone = _cli(
        cluster, "target", "unprotect", "--plan", str(plan), "--yes",
        "--poll-interval", "200ms", *gate,
    )  # fmt: skip
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert _workload(plan, "web").effective_status == "pending"


# -- (vi) --require-verified covers the migrated workloads finalize acts on ----------------------


def test_finalize_require_verified_refuses_a_report_that_covers_only_pending_workloads(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    openbao: BaoServer,
    kv_mount: str,
    tmp_path: Path,
) -> None:
    create_secret(kube_client, namespace, "db", {"password": K8S_CANARY})
    create_secret(kube_client, namespace, "cache", {"password": K8S_CANARY})
    _deployment(kube_client, namespace, "done", {"DB_PASSWORD": ("db", "password")})
    db = f"{kv_mount}/data/{namespace}/db"
    cache = f"{kv_mount}/data/{namespace}/cache"
    plan = _save_plan(
        tmp_path / "plan.yaml",
        namespace,
        {
            "done": [_ref("db", db, {"password": "DB_PASSWORD"})],
            "later": [_ref("cache", cache, {"password": "CACHE_PASSWORD"})],
        },
    )
    assert _protect(cluster, plan, "--workload", f"{namespace}/done").returncode == 0
    assert _workload(plan, "later").effective_status == "pending"
    openbao.bao("kv", "put", f"{kv_mount}/{namespace}/cache", f"password={VAULT_CANARY}")
    report = tmp_path / "verified.json"
    assert _attest(openbao, plan, report).returncode == 1  # proves the pending one only
    proven = {p["vaultPath"] for p in json.loads(report.read_text())["proven"]}
    assert proven == {cache}
    before = _owned_count(kube_client, "Deployment", namespace, "done")

    result = _finalize(cluster, plan, "--delete-secrets", "--require-verified", str(report))

    assert result.returncode == 5, result.stdout + result.stderr
    assert "does not cover 1 migrated workload(s)" in result.stderr
    assert f"Deployment {namespace}/done: {db} not proven" in result.stderr
    assert _owned_count(kube_client, "Deployment", namespace, "done") == before
    assert _env_names(kube_client, namespace, "done") == ["DB_PASSWORD"]
    assert _workload(plan, "done").finalized_at is None
    assert {"db", "cache"} <= _secret_names(kube_client, namespace)
