"""Issue 30 on the real node: a CronJob protected without starting a run, whose next scheduled
run reads the OpenBao value.

The real node runs kube-controller-manager with its default controllers, the cronjob
controller among them, so a ``* * * * *`` schedule really creates a Job each minute. The
CronJob is created suspended (no run before protect), discovered, applied and populated
through the real CLI; protect (the real injector, installed from the runtime image built
from source) patches its job template and must create no Job; then the CronJob is resumed
and its next scheduled run's pod must print the vault's canary (not the Kubernetes Secret's),
through the wrapper.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.batch_v1 import CronJob, Job
from lightkube.resources.core_v1 import Pod

from cloudtaser import contract
from cloudtaser import plan as planlib
from tests.integration.test_lifecycle_realnode import (
    AUDIENCE,
    Site,
    _cloudtaser,
    app_image,  # noqa: F401  (fixture)
    injector,  # noqa: F401  (fixture)
    rt_image,  # noqa: F401  (fixture)
    site,  # noqa: F401  (fixture)
)
from tests.testenv.workloads import create_secret, create_service_account

pytestmark = pytest.mark.integration

SCRIPT = 'echo "DB_PASSWORD=$DB_PASSWORD"'


def _cronjob(namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": namespace},
        "spec": {
            "schedule": "* * * * *",
            "suspend": True,  # no run before protect; resumed after it
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": {"app": "report"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "hostNetwork": True,
                            "dnsPolicy": "Default",
                            "serviceAccountName": "app",
                            "terminationGracePeriodSeconds": 1,
                            "containers": [
                                {
                                    "name": "app",
                                    "image": image,
                                    "command": ["sh", "-c", SCRIPT],
                                    "env": [
                                        {
                                            "name": "DB_PASSWORD",
                                            "valueFrom": {
                                                "secretKeyRef": {"name": "db", "key": "password"}
                                            },
                                        }
                                    ],
                                }
                            ],
                        },
                    },
                }
            },
        },
    }


def _jobs(where: Site, namespace: str) -> list[str]:
    with contextlib.closing(where.node.client()) as client:
        return sorted(str(j.metadata.name) for j in client.list(Job, namespace=namespace))


def _run_pod(where: Site, namespace: str, timeout: float = 180) -> Any:
    """The pod of the first Job the cronjob controller starts, once it has finished."""
    deadline = time.monotonic() + timeout
    with contextlib.closing(where.node.client()) as client:
        while True:
            pods = [
                p
                for p in client.list(Pod, namespace=namespace, labels={"app": "report"})
                if p.status and p.status.phase in {"Succeeded", "Failed"}
            ]
            if pods:
                return pods[0]
            assert time.monotonic() < deadline, where.node.diagnostics()
            time.sleep(1)


def test_a_cronjobs_next_run_reads_the_vault_value_and_protect_starts_no_run(
    site: Site,  # noqa: F811
    app_image: str,  # noqa: F811
    injector: str,  # noqa: F811
) -> None:
    tag = secrets.token_hex(3)
    namespace = site.node.create_namespace(f"cron-{tag}")
    k8s_canary, vault_canary = f"K8S-{secrets.token_hex(6)}", f"BAO-{secrets.token_hex(6)}"
    with contextlib.closing(site.node.client()) as client:
        create_service_account(client, namespace, "app")
        create_secret(client, namespace, "db", {"password": k8s_canary})
        client.create(codecs.from_dict(_cronjob(namespace, app_image)))
    plan = site.tmp / f"plan-cron-{tag}.yaml"
    vault = {"BAO_ADDR": site.openbao.address}

    def run(*args: str, env: dict[str, str] | None = None) -> Any:
        result = _cloudtaser(*args, env=env)
        text = result.stdout + result.stderr
        assert k8s_canary not in text
        assert vault_canary not in text
        return result

    discover = run(
        "target", "discover", "--kubeconfig", site.kubeconfig, "-n", namespace,
        "--name", f"cron-{tag}", "--auth-mount", site.mount, "--kv-mount", site.kv,
        "--output-plan", str(plan),
    )  # fmt: skip
    assert discover.returncode == 0, discover.stderr
    ((_t, workload),) = list(planlib.load(plan).iter_workloads())
    assert (str(workload.kind), workload.name) == ("CronJob", "report")
    apply = run(
        "source", "apply-plan", str(plan), "--token-file", str(site.token),
        "--audience", AUDIENCE, env=vault,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stdout + apply.stderr
    mount, rest = planlib.split_vault_path(workload.secrets[0].vault_path)
    site.openbao.bao("kv", "put", f"-mount={mount}", rest, f"password={vault_canary}")

    assert _jobs(site, namespace) == []
    protect = run(
        "target", "protect", "--plan", str(plan), "--kubeconfig", site.kubeconfig,
        "--vault-address", site.openbao.address, "--yes", "--timeout", "60s",
    )  # fmt: skip

    assert protect.returncode == 0, protect.stdout + protect.stderr
    assert _jobs(site, namespace) == []  # protect started no run
    recorded = next(w for _t, w in planlib.load(plan).iter_workloads())
    assert recorded.effective_status == "migrated"
    reason = recorded.history[-1].reason or ""
    assert "no run started" in reason
    assert "dry-run pod came back injected" in reason

    # the next scheduled run: resumed, the cronjob controller starts it within a minute
    with contextlib.closing(site.node.client()) as client:
        client.patch(CronJob, "report", {"spec": {"suspend": False}}, namespace=namespace)
    pod = _run_pod(site, namespace)
    name = str(pod.metadata.name)
    assert pod.status.phase == "Succeeded", site.node.diagnostics()
    inits = [c.name for c in pod.spec.initContainers or ()]
    assert inits[:1] == [contract.INIT_CONTAINER]
    assert pod.spec.containers[0].command[0] == contract.WRAPPER_PATH
    printed = [
        line.removeprefix("DB_PASSWORD=")
        for line in site.node.logs(namespace, name, "app").splitlines()
        if line.startswith("DB_PASSWORD=")
    ]
    assert printed == [vault_canary]  # the vault's value, not the Kubernetes Secret's
    site.node.delete_namespace(namespace)
