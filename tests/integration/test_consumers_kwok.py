"""Issue 30, items 5 and 6, on the real API server (kwok nodes) and the real OpenBao.

* envFrom keys that are not C identifiers (``tls.crt``, ``ca.crt``): this test bed's Kubernetes
  (1.36) passes them into the container's environment, so discover maps them and records the
  cluster's rule (``metadata.envNameRule: relaxed``); apply-plan and verify-plan (vault side, no
  cluster) accept the plan; finalize removes the envFrom (the Secret can go).
* finalize's guard: an exec probe that the injector routed through ``cloudtaser-runtime exec``
  (the shape an issue-30 injector gives the pods) no longer keeps its Secret reference; the
  same probe in pods an older injector made keeps it, with the reason.

kwok pods run nothing and no injector runs here: as in test_lifecycle.py, the workloads are
created with their pod template already in the injected shape, which the live pods (and the
admission dry run) then show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from lightkube import codecs

from cloudtaser import contract
from cloudtaser import plan as planlib
from tests.integration.source_helpers import REPO, enable_k8s_auth, run_cli, unique
from tests.integration.test_protect import _env
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer
from tests.testenv.workloads import (
    ContainerSpec,
    create_secret,
    deployment,
    manifest,
    wait_rollout,
)

CANARY = "k8s-secret-canary-3030"
VAULT = "http://openbao.vault.svc:8200"
TLS_KEYS = ("ca.crt", "tls.crt", "tls.key")


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
    assert CANARY not in result.stdout + result.stderr, "a Secret value reached the output"
    return result


def _create(client: Any, spec_manifest: dict[str, Any]) -> None:
    client.create(codecs.from_dict(spec_manifest), field_manager="cloudtaser-test")


def _injected(name: str, namespace: str, *, probe: list[str], env_from: bool) -> dict[str, Any]:
    """A Deployment whose template is already in the injected shape: cloudtaser-init first,
    the app started by the wrapper, the readiness probe as given."""
    app = ContainerSpec(
        command=[contract.WRAPPER_PATH, "wrap", "--", "/app"],
        secret_env={"DB_PASSWORD": ("db", "password")},
        env_from=["tls"] if env_from else [],
    )
    init = ContainerSpec(
        name=contract.INIT_CONTAINER,
        command=["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
    )
    body = manifest(
        deployment(name, namespace, replicas=1, containers=[app], init_containers=[init])
    )
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"exec": {"command": probe}, "periodSeconds": 10}
    return body


def _template(client: Any, namespace: str, name: str) -> dict[str, Any]:
    from lightkube.resources.apps_v1 import Deployment

    obj = client.get(Deployment, name, namespace=namespace).to_dict()
    return dict(obj["spec"]["template"]["spec"]["containers"][0])


def test_tls_keys_are_discovered_verified_and_finalized_and_a_routed_probe_no_longer_keeps(
    cluster: Cluster,
    kube_client: Any,
    namespace: str,
    openbao: BaoServer,
    kv_mount: str,
    tmp_path: Path,
) -> None:
    create_secret(kube_client, namespace, "db", {"password": CANARY})
    create_secret(kube_client, namespace, "tls", dict.fromkeys(TLS_KEYS, CANARY))
    check = 'test -n "$DB_PASSWORD"'
    routed = [contract.WRAPPER_PATH, "exec", "--", "sh", "-c", check]
    _create(kube_client, _injected("served", namespace, probe=routed, env_from=True))
    _create(
        kube_client, _injected("unserved", namespace, probe=["sh", "-c", check], env_from=False)
    )
    for name in ("served", "unserved"):
        wait_rollout(kube_client, "Deployment", namespace, name, timeout=90)

    # discover on the real API server: the non-identifier keys are mapped, the rule recorded
    # (discover leaves templates that already opt in out; these do not carry the annotation)
    plan_path = tmp_path / "plan.yaml"
    auth = enable_k8s_auth(openbao, unique("k8s"))
    found = _cli(
        cluster, "target", "discover", "-n", namespace, "--name", unique("c30"),
        "--kv-mount", kv_mount, "--auth-mount", auth, "--output-plan", str(plan_path),
    )  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    plan = planlib.load(plan_path)
    assert plan.metadata.env_name_rule == "relaxed"
    workloads = {w.name: w for _t, w in plan.iter_workloads()}
    tls = next(s for s in workloads["served"].secrets if s.source == "tls")
    assert tls.fields == {k: k for k in TLS_KEYS}
    assert tls.note is None
    assert {(u.env, u.where) for u in workloads["unserved"].env_uses} == {
        ("DB_PASSWORD", "readinessProbe")
    }

    # the vault side (no cluster) accepts the plan and proves the dotted fields
    applied = run_cli(openbao, "source", "apply-plan", str(plan_path))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    missing = run_cli(openbao, "source", "verify-plan", str(plan_path))
    assert missing.returncode == 1, missing.stdout + missing.stderr
    kv_path = tls.vault_path.replace("/data/", "/", 1)
    openbao.bao("kv", "put", kv_path, *(f"{k}=v" for k in TLS_KEYS))
    db = next(s for s in workloads["served"].secrets if s.source == "db")
    openbao.bao("kv", "put", db.vault_path.replace("/data/", "/", 1), "password=v")
    verified = run_cli(openbao, "source", "verify-plan", str(plan_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    protected = _cli(
        cluster, "target", "protect", "--plan", str(plan_path), "--vault-address", VAULT,
        "--poll-interval", "200ms", "--timeout", "90s", "--yes",
    )  # fmt: skip
    assert protected.returncode == 0, protected.stdout + protected.stderr
    # so the checks below can fail: both probe users still carry the reference
    for name in ("served", "unserved"):
        assert [e["name"] for e in _template(kube_client, namespace, name)["env"]] == [
            "DB_PASSWORD"
        ]
    assert _template(kube_client, namespace, "served")["envFrom"] == [
        {"secretRef": {"name": "tls"}}
    ]

    result = _cli(
        cluster, "target", "finalize", "--plan", str(plan_path), "--poll-interval", "200ms",
        "--timeout", "90s", "--yes",
    )  # fmt: skip

    out = result.stdout + result.stderr
    served = _template(kube_client, namespace, "served")
    assert "env" not in served, out  # the routed probe's variable comes from the vault now
    assert "envFrom" not in served, out  # tls.crt & co. are mapped: the Secret can go
    unserved = _template(kube_client, namespace, "unserved")
    assert [e["name"] for e in unserved["env"]] == ["DB_PASSWORD"]
    assert (
        "kept env DB_PASSWORD (Secret db key password, container app): its readinessProbe "
        "exec command names it; the injected pods do not show the runtime serving it" in out
    )
    assert "nothing can be removed" in out  # unserved keeps its only reference
    after = planlib.load(plan_path)
    refs = {w.name: w.finalized_refs for _t, w in after.iter_workloads()}
    assert {(r.via, r.secret) for r in refs["served"]} == {("env", "db"), ("envFrom", "tls")}
    assert refs["unserved"] == []
    assert yaml.safe_load(plan_path.read_text())["metadata"]["envNameRule"] == "relaxed"
