"""Benchmark exec probes that read a migrated variable (issue 30): vault logins per minute for
50 pods with an exec liveness probe every 10 s, cloudtaser's probe runner against the naive
alternative, wrapping each probe run in the wrapper's full login, in one run on the real node.

Set-up (as tests/integration/test_consumers_realnode.py): a real node, a bao dev server,
``target connect``, the runtime image built from ``runtime/`` and ``target install`` in URL
mode; a KV v2 secret mapped to ``DB_PASSWORD``. Then, one phase per variant (the same pods
otherwise, created, left to probe for ``--window`` seconds, deleted):

* ours: the probe ``sh -c 'test -n "$DB_PASSWORD"'``; the injector routes it through
  ``cloudtaser-runtime exec``, which takes the app's environment (no login);
* naive: the probe ``cloudtaser-runtime wrap -- sh -c 'test -n "$DB_PASSWORD"'``, which logs
  in, reads the secret and revokes its token at every run, as a webhook that wraps probes with
  the wrapper would.

Logins are counted from OpenBao's audit log (requests to ``auth/<mount>/login``) during the
window only (the pods' own start-up logins are outside it), and reported per pod per minute
and for 50 pods. When the node cannot run ``--pods`` pods (2 CPUs), those that became ready
are measured and the figure is scaled to 50 (the output says so).

Usage: ``python -m benchmarks.exec_probes [--pods 50] [--window 120] [--period 10]``; needs
root (the real node).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from lightkube import codecs
from lightkube.resources.core_v1 import Pod

from benchmarks._common import cpu_note, dev_server
from benchmarks.secret_files import install
from tests.integration.connect_helpers import cli, connect_args
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import RealNode
from tests.testenv.workloads import create_service_account

AUDIENCE = "openbao"
NAMESPACE = "bench-probes"
MOUNT = "k8s-bench-probes"
KV = "kv-bench-probes"
PATH = f"{KV}/data/app/db"
WRAPPER = "/cloudtaser/bin/cloudtaser-runtime"
CHECK = 'test -n "$DB_PASSWORD"'


def prepare(node: RealNode, openbao: BaoServer, tmp: Path) -> None:
    node.create_namespace(NAMESPACE)
    run = cli(connect_args(node.cluster, openbao, tmp, MOUNT, "ct-sys-bench-probes"))
    if run.code != 0:
        raise SystemExit(f"target connect failed:\n{run.text}")
    openbao.enable_kv2(KV)
    openbao.api_ok("POST", PATH, {"data": {"password": "bench-value"}})
    policy = f'path "{PATH}" {{\n  capabilities = ["read"]\n}}\n'
    openbao.api_ok("PUT", "sys/policies/acl/bench-probes", {"policy": policy})
    with contextlib.closing(node.client()) as client:
        create_service_account(client, NAMESPACE, "app")
    openbao.api_ok("POST", f"auth/{MOUNT}/role/bench", {
        "bound_service_account_names": ["app"], "bound_service_account_namespaces": [NAMESPACE],
        "audience": AUDIENCE, "token_policies": ["bench-probes"], "token_ttl": "10m",
    })  # fmt: skip


def pod(name: str, openbao: BaoServer, image: str, naive: bool, period: int) -> Any:
    probe = ["sh", "-c", CHECK]
    if naive:
        probe = [WRAPPER, "wrap", "--", *probe]
    return codecs.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {
            "cloudtaser.io/inject": "true", "bench": "probes"}, "annotations": {
            "cloudtaser.io/inject": "true",
            "cloudtaser.io/vault-address": openbao.address,
            "cloudtaser.io/vault-role": "bench",
            "cloudtaser.io/vault-auth-path": f"auth/{MOUNT}",
            "cloudtaser.io/secret-paths": PATH,
            "cloudtaser.io/env-map": "password=DB_PASSWORD",
        }},
        "spec": {
            "hostNetwork": True, "dnsPolicy": "Default", "restartPolicy": "Always",
            "serviceAccountName": "app", "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "app", "image": image, "command": ["sleep", "3600"],
                "livenessProbe": {"exec": {"command": probe}, "periodSeconds": period,
                                  "timeoutSeconds": 9, "failureThreshold": 3},
            }],
        },
    })  # fmt: skip


def logins(openbao: BaoServer, mark: int) -> int:
    return sum(
        1 for e in openbao.requests_since(mark) if e["request"].get("path") == f"auth/{MOUNT}/login"
    )


def ready_pods(node: RealNode) -> list[Pod]:
    with contextlib.closing(node.client()) as client:
        got = client.list(Pod, namespace=NAMESPACE, labels={"bench": "probes"})
        return [p for p in got if p.status and p.status.containerStatuses
                and all(s.ready for s in p.status.containerStatuses)]  # fmt: skip


def phase(
    node: RealNode,
    openbao: BaoServer,
    image: str,
    *,
    naive: bool,
    pods: int,
    window: float,
    period: int,
) -> tuple[int, int, int, int]:
    """(pods ready, logins in the window, restarts, probe failures) of one variant."""
    kind = "naive" if naive else "ours"
    with contextlib.closing(node.client()) as client:
        for i in range(pods):
            client.create(pod(f"{kind}-{i}", openbao, image, naive, period))
    deadline = time.monotonic() + 60 + 3 * pods
    while len(ready_pods(node)) < pods and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(period)  # every pod's start-up login is over
    ready = ready_pods(node)
    mark = openbao.audit_mark()
    time.sleep(window)
    count = logins(openbao, mark)
    ready_after = ready_pods(node)
    restarts = sum(s.restartCount for p in ready_after for s in p.status.containerStatuses or [])  # type: ignore[union-attr]
    events = node.kubectl(
        "-n", NAMESPACE, "get", "events", "-o",
        'jsonpath={range .items[*]}{.reason} {.involvedObject.name}{"\\n"}{end}',
    ).stdout  # fmt: skip
    failures = sum(1 for line in events.splitlines() if line.startswith(f"Unhealthy {kind}-"))
    node.kubectl("-n", NAMESPACE, "delete", "pods", "-l", "bench=probes", "--grace-period=0",
                 "--force", "--wait=true", "--timeout=300s", check=False,
                 timeout=360)  # fmt: skip
    print(f"  {kind}: {len(ready)} pods, {count} logins in {window:.0f} s, restarts {restarts}, "
          f"failed probes {failures}", flush=True)  # fmt: skip
    return len(ready), count, restarts, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--period", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-bench-probes-") as tmp, dev_server() as openbao:
        node = RealNode(Path(tmp) / "node")
        node.start()
        try:
            install(node, openbao, Path(tmp))
            prepare(node, openbao, Path(tmp))
            image = node.build_image("cloudtaser-test/bench-probes:1", cmd=["sh"]).pinned
            rows = []
            for naive in (False, True):
                ready, count, restarts, failures = phase(
                    node,
                    openbao,
                    image,
                    naive=naive,
                    pods=args.pods,
                    window=args.window,
                    period=args.period,
                )
                rows.append((naive, ready, count, restarts, failures))
            print(f"\nexec probes every {args.period} s, vault logins in a {args.window:.0f} s "
                  f"window ({cpu_note()}):")  # fmt: skip
            for naive, ready, count, restarts, failures in rows:
                what = "naive (wrap per probe run)" if naive else "ours (cloudtaser-runtime exec)"
                per_pod = count / max(ready, 1) / (args.window / 60)
                scaled = "" if ready == 50 else f" (measured on {ready} pods, scaled to 50)"
                print(f"  {what:32} {ready:3} pods ready  {count:5} logins  "
                      f"{per_pod:6.2f} per pod per minute  {per_pod * 50:7.1f} per minute for 50 "
                      f"pods{scaled}; restarts {restarts}, failed probes {failures}")  # fmt: skip
        finally:
            node.stop()


if __name__ == "__main__":
    main()
