"""Issue 30's last "Done when" item on the real node: a namespace whose workloads read their
Secrets in every way issue 30 covers reaches **zero Kubernetes Secrets** after
``target finalize --delete-secrets``, through the real CLI, and keeps working without them.

The namespace holds two Secrets and two workloads:

* Deployment ``web`` (Secret ``db``): an init container ``migrate`` that reads
  ``DB_PASSWORD``; an app that reads ``DB_PASSWORD`` and ``DB_USER`` and gets
  ``$(DB_PASSWORD)`` in its ``args``; an exec readiness and liveness probe (every 2 s,
  ``failureThreshold: 1``: one failure restarts the container) and a ``postStart`` hook that
  pass only when ``$DB_PASSWORD`` holds one of the two canaries (the Kubernetes Secret's before
  protect, the vault's after) and record its hash;
* CronJob ``report`` (Secret ``report``, schedule every minute, suspended until the Secrets are
  gone: no run before).

The workflow is the documented one (docs/lifecycle.md): discover → apply-plan → the vault's
canaries put with ``bao kv put`` → ``verify-plan --attest`` (``--delete-secrets`` deletes a
Secret only when the report proves every key) → ``target install`` (the runtime image built
from source) → protect → ``finalize --delete-secrets --require-verified``. Then: both Secrets
existed (so the check can fail) and ``kubectl get secrets`` shows none; the Deployment's pods,
restarted again without any Secret, are Ready with restart count 0, their probes and hook passing
with the vault's value, the init container and the app (args included) read the vault's
canaries; the CronJob's next scheduled run reads the vault's value.

Everything is compared by sha256 computed in the container (logs and probe records hold hashes,
never a value); no canary may appear in cloudtaser's output, a pod log or an event.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import CronJob

from cloudtaser import contract
from cloudtaser import plan as planlib
from tests.integration import test_cronjob_realnode as cron
from tests.integration import test_lifecycle_realnode as lifecycle
from tests.integration.test_lifecycle_realnode import (
    AUDIENCE,
    Site,
    _cloudtaser,
    _pods,
    _wait_ready,
)
from tests.testenv.workloads import (
    create_secret,
    create_service_account,
    restart,
    wait_rollout,
)

pytestmark = pytest.mark.integration

# The connected cluster, the injector of ``target install`` and busybox, set up as there.
site = lifecycle.site
rt_image = lifecycle.rt_image
injector = lifecycle.injector
app_image = lifecycle.app_image

PROBE_PERIOD = 2
WINDOW = 10.0  # seconds of probe runs looked at after the last restart


def _sha(expr: str) -> str:
    """Shell: the sha256 of ``expr``'s text (never the text)."""
    return f'$(printf %s "{expr}" | sha256sum | cut -c1-64)'


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


INIT = f'echo "migrate: pw={_sha("$DB_PASSWORD")}"'
# $1 is the pod spec's "$(DB_PASSWORD)" argument: the kubelet's expansion before finalize,
# the wrapper's after it
APP = (
    f'echo "app: pw={_sha("$DB_PASSWORD")} user={_sha("$DB_USER")} arg={_sha("$1")}"; '
    "exec sleep 3600"
)
REPORT = f'echo "report: token={_sha("$REPORT_TOKEN")}"'


def _check(allowed: list[str], log: str) -> list[str]:
    """An exec probe / hook command: passes only when ``$DB_PASSWORD`` hashes to one of
    ``allowed``, and appends the hash to ``/tmp/<log>`` (the app's writable root)."""
    script = (
        f'h={_sha("$DB_PASSWORD")}; case "$h" in {"|".join(allowed)}) '
        f'echo "$h" >> /tmp/{log};; *) exit 1;; esac'
    )
    return ["sh", "-c", script]


def _from_secret(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _deployment(namespace: str, image: str, allowed: list[str]) -> dict[str, Any]:
    probe = {"periodSeconds": PROBE_PERIOD, "failureThreshold": 1, "timeoutSeconds": 5}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "Recreate"},  # hostNetwork: old and new pod never overlap
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "serviceAccountName": "app",
                    "terminationGracePeriodSeconds": 1,
                    "initContainers": [
                        {
                            "name": "migrate",
                            "image": image,
                            "command": ["sh", "-c", INIT],
                            "env": [_from_secret("DB_PASSWORD", "db", "password")],
                        }
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "command": ["sh", "-c", APP, "app"],
                            "args": ["$(DB_PASSWORD)"],
                            "env": [
                                _from_secret("DB_PASSWORD", "db", "password"),
                                _from_secret("DB_USER", "db", "username"),
                            ],
                            "readinessProbe": {
                                "exec": {"command": _check(allowed, "readiness")},
                                **probe,
                            },
                            "livenessProbe": {
                                "exec": {"command": _check(allowed, "liveness")},
                                **probe,
                            },
                            "lifecycle": {
                                "postStart": {"exec": {"command": _check(allowed, "poststart")}}
                            },
                        }
                    ],
                },
            },
        },
    }


def _cronjob(namespace: str, image: str) -> dict[str, Any]:
    """The CronJob of the CronJob test (``report``, every minute, suspended, label
    ``app=report``), reading Secret ``report`` and printing only a hash."""
    manifest = cron._cronjob(namespace, image)
    (container,) = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    container["command"] = ["sh", "-c", REPORT]
    container["env"] = [_from_secret("REPORT_TOKEN", "report", "token")]
    return manifest


def _secret_names(site: Site, namespace: str) -> list[str]:
    """``kubectl get secrets -n NAMESPACE -o name``: every Secret, whatever its type."""
    shown = site.node.kubectl("get", "secrets", "-n", namespace, "-o", "name").stdout
    return sorted(shown.split())


def _line(site: Site, namespace: str, pod: str, container: str, prefix: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        logs = site.node.logs(namespace, pod, container)
        found = [line for line in logs.splitlines() if line.startswith(prefix)]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"{container} of {pod} printed no {prefix!r} line"
        time.sleep(0.5)


def _records(site: Site, namespace: str, pod: str, log: str) -> list[str]:
    """The hashes a probe or hook recorded in the app container."""
    got = site.node.exec(namespace, pod, "sh", "-c", f"cat /tmp/{log} 2>/dev/null",
                         container="app", check=False)  # fmt: skip
    return got.stdout.split()


def _ready(pod: Any) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_a_namespace_with_every_consumer_reaches_zero_secrets_and_keeps_running(
    site: Site, injector: str, app_image: str
) -> None:
    node, tag = site.node, secrets.token_hex(3)
    namespace = node.create_namespace(f"zero-{tag}")
    k8s = {k: f"K8S-{k}-{secrets.token_hex(6)}" for k in ("password", "username", "token")}
    bao = {k: f"BAO-{k}-{secrets.token_hex(6)}" for k in ("password", "username", "token")}
    allowed = [_hash(k8s["password"]), _hash(bao["password"])]
    with contextlib.closing(node.client()) as client:
        create_service_account(client, namespace, "app")
        create_secret(client, namespace, "db",
                      {"password": k8s["password"], "username": k8s["username"]})  # fmt: skip
        create_secret(client, namespace, "report", {"token": k8s["token"]})
        client.create(codecs.from_dict(_deployment(namespace, app_image, allowed)))
        client.create(codecs.from_dict(_cronjob(namespace, app_image)))
    _wait_ready(site, namespace, "web")
    # before: every reader takes the Kubernetes Secret's values
    (pod,) = _pods(site, namespace, "web")
    before = str(pod.metadata.name)
    pw = _hash(k8s["password"])
    assert _line(site, namespace, before, "migrate", "migrate: ") == f"migrate: pw={pw}"
    assert _line(site, namespace, before, "app", "app: ") == (
        f"app: pw={pw} user={_hash(k8s['username'])} arg={pw}"
    )
    outputs: list[str] = []
    plan = site.tmp / f"plan-zero-{tag}.yaml"
    report = f"{plan}.verified.json"

    def cloudtaser(*args: str, env: dict[str, str] | None = None) -> Any:
        result = _cloudtaser(*args, env=env)
        outputs.append(result.stdout + result.stderr)
        return result

    def target(verb: str, *args: str) -> Any:
        return cloudtaser(
            "target", verb, "--plan", str(plan), "--kubeconfig", site.kubeconfig,
            "--poll-interval", "300ms", "--timeout", "180s", *args,
        )  # fmt: skip

    # 1. discover: both workloads, the init container's and the app's references, the uses
    discover = cloudtaser(
        "target", "discover", "--kubeconfig", site.kubeconfig, "-n", namespace,
        "--name", f"zero-{tag}", "--auth-mount", site.mount, "--kv-mount", site.kv,
        "--output-plan", str(plan),
    )  # fmt: skip
    assert discover.returncode == 0, discover.stdout + discover.stderr
    workloads = {w.name: w for _t, w in planlib.load(plan).iter_workloads()}
    assert {(str(w.kind), n) for n, w in workloads.items()} == {
        ("Deployment", "web"),
        ("CronJob", "report"),
    }
    assert all(w.effective_status == "pending" for w in workloads.values()), workloads
    assert {(u.env, u.container, u.init, u.where) for u in workloads["web"].env_uses} >= {
        ("DB_PASSWORD", "app", False, "args"),
        ("DB_PASSWORD", "app", False, "livenessProbe"),
        ("DB_PASSWORD", "app", False, "readinessProbe"),
        ("DB_PASSWORD", "app", False, "postStart"),
    }

    # 2-4. apply, put the vault's canaries (one write per path, every field), verify
    vault = {"BAO_ADDR": site.openbao.address}
    apply = cloudtaser(
        "source", "apply-plan", str(plan), "--token-file", str(site.token),
        "--audience", AUDIENCE, env=vault,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stdout + apply.stderr
    paths: dict[str, set[str]] = {}
    for workload in workloads.values():
        for ref in workload.secrets:
            paths.setdefault(ref.vault_path, set()).update(ref.fields)
    assert sorted(fields for fields in map(sorted, paths.values())) == [
        ["password", "username"],
        ["token"],
    ]
    for path, fields in paths.items():
        mount, rest = planlib.split_vault_path(path)
        site.openbao.bao(
            "kv", "put", f"-mount={mount}", rest, *(f"{f}={bao[f]}" for f in sorted(fields))
        )
    verify = cloudtaser(
        "source", "verify-plan", str(plan), "--token-file", str(site.token), "--attest", report,
        env=vault,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # 5-6. the injector is installed (fixture); protect: the Deployment rolls, the CronJob
    # starts no run
    protect = target("protect", "--vault-address", site.openbao.address, "--yes")
    assert protect.returncode == 0, protect.stdout + protect.stderr
    assert "finalize will keep" not in protect.stdout + protect.stderr  # all of it is served
    assert cron._jobs(site, namespace) == []
    assert all(w.effective_status == "migrated" for _t, w in planlib.load(plan).iter_workloads())

    # 7. finalize --delete-secrets: both Secrets exist (so the check below can fail) ...
    assert _secret_names(site, namespace) == ["secret/db", "secret/report"]
    final = target("finalize", "--yes", "--delete-secrets", "--require-verified", report)
    out = final.stdout + final.stderr
    assert final.returncode == 0, out
    assert "kept env" not in out, out  # every reference went: init, $(VAR), probes, hook
    # ... and the namespace has none left: no Kubernetes Secret at all
    assert _secret_names(site, namespace) == []
    finalized = {w.name: w for _t, w in planlib.load(plan).iter_workloads()}
    assert all(w.finalized_at is not None for w in finalized.values())
    assert ("DB_PASSWORD", True) in {(r.env, r.init) for r in finalized["web"].finalized_refs}
    deleted = " ".join(h.reason or "" for w in finalized.values() for h in w.history)
    assert "deleted Secret db" in deleted
    assert "deleted Secret report" in deleted
    for obj in (Deployment, CronJob):
        name = "web" if obj is Deployment else "report"
        with contextlib.closing(node.client()) as client:
            stored = client.get(obj, name, namespace=namespace).to_dict()
        assert "secretKeyRef" not in str(stored["spec"]), name

    # 8. the Deployment restarted without any Secret: Ready, no restart, probes and hook
    # passing with the vault's value, init container and app (args too) on the vault's values
    with contextlib.closing(node.client()) as client:
        restart(client, "Deployment", namespace, "web")
        wait_rollout(client, "Deployment", namespace, "web", timeout=120)
    (pod,) = _pods(site, namespace, "web")
    name = str(pod.metadata.name)
    assert name != before
    assert pod.spec.initContainers[0].name == contract.INIT_CONTAINER
    (migrate,) = [c for c in pod.spec.initContainers if c.name == "migrate"]
    assert migrate.command[0] == contract.WRAPPER_PATH
    (app,) = pod.spec.containers
    assert app.command[0] == contract.WRAPPER_PATH
    for handler in (app.livenessProbe, app.readinessProbe, app.lifecycle.postStart):
        assert handler.exec.command[:3] == [contract.WRAPPER_PATH, "exec", "--"]
    pw = _hash(bao["password"])
    assert _line(site, namespace, name, "migrate", "migrate: ") == f"migrate: pw={pw}"
    assert _line(site, namespace, name, "app", "app: ") == (
        f"app: pw={pw} user={_hash(bao['username'])} arg={pw}"
    )
    runs = len(_records(site, namespace, name, "liveness"))
    time.sleep(WINDOW)
    for log in ("liveness", "readiness"):
        records = _records(site, namespace, name, log)
        assert set(records) == {pw}, log  # every run passed, with the vault's value
    assert len(_records(site, namespace, name, "liveness")) - runs >= WINDOW / PROBE_PERIOD / 2
    assert _records(site, namespace, name, "poststart") == [pw]
    (pod,) = _pods(site, namespace, "web")
    assert _ready(pod), node.pod_diagnostics(namespace, name)
    assert [(s.name, s.restartCount) for s in pod.status.containerStatuses] == [("app", 0)]

    # 9. the CronJob's next scheduled run (resumed now) reads the vault's value
    assert cron._jobs(site, namespace) == []
    with contextlib.closing(node.client()) as client:
        client.patch(CronJob, "report", {"spec": {"suspend": False}}, namespace=namespace)
    run = cron._run_pod(site, namespace)
    run_name = str(run.metadata.name)
    assert run.status.phase == "Succeeded", node.pod_diagnostics(namespace, run_name)
    assert run.spec.containers[0].command[0] == contract.WRAPPER_PATH
    printed = _line(site, namespace, run_name, "app", "report: ")
    assert printed == f"report: token={_hash(bao['token'])}"
    assert _secret_names(site, namespace) == []  # still none

    # no value anywhere: cloudtaser's output, the pods' logs, the namespace's events
    logs = [node.logs(namespace, name, c) for c in ("migrate", "app")]
    logs.append(node.logs(namespace, run_name, "app"))
    events = node.kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    for text in [*outputs, *logs, events]:
        for canary in [*k8s.values(), *bao.values()]:
            assert canary not in text, "a value reached an output, a log or an event"
    node.delete_namespace(namespace)
