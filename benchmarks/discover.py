"""Benchmark: ``cloudtaser target discover`` vs ``kubectl get deployments,statefulsets,daemonsets
-A -o json`` against the same cluster, in one run.

It starts a local control plane with only etcd and kube-apiserver (no controllers, so no
ReplicaSets or Pods are created: the workload objects alone are what both tools list), creates
500 namespaces with 10 workloads each (6 Deployments, 2 StatefulSets, 2 DaemonSets = 5,000), every
workload consuming a Secret through ``secretKeyRef`` and one per namespace through ``envFrom`` (so
discover also reads 500 Secrets' key names), then times both tools alternately and reports the
median wall time, the ratio (discover / kubectl; goal <= 1.0) and each one's peak RSS.

    python -m benchmarks.discover                      # start a local API server (testenv)
    python -m benchmarks.discover --namespaces 50      # smaller
    python -m benchmarks.discover --kubeconfig K --kubectl PATH --no-create   # existing cluster

Needs the testenv binaries (``nox -s testenv``). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lightkube import codecs

from cloudtaser import plan as planlib
from tests.testenv.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent

LABEL = "cloudtaser-bench"


def start_api_only_cluster(workdir: Path) -> Any:
    """A testenv ``Cluster`` that starts only etcd and kube-apiserver (objects, no rollouts)."""
    cluster = Cluster("bench", workdir, log_dir=workdir / "logs", controllers=False)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def workload(kind: str, name: str, ns: str, env_from: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "registry.k8s.io/pause:3.10",
        "env": [
            {"name": "MODE", "value": "prod"},
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
        ],
    }
    if env_from:
        container["envFrom"] = [{"secretRef": {"name": "app-env"}, "prefix": "APP_"}]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [container]},
        },
    }
    if kind != "DaemonSet":
        spec["replicas"] = 2
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "labels": {LABEL: "1"}},
        "spec": spec,
    }


def populate(cluster: Any, namespaces: int, per_namespace: int) -> float:
    t0 = time.monotonic()
    mix = ["Deployment"] * 6 + ["StatefulSet"] * 2 + ["DaemonSet"] * 2
    # one client per thread; more than one thread crashed the interpreter (SIGSEGV) in
    # lightkube 1.0.1 / httpx2 on this machine, so the default is sequential
    clients = [cluster.client() for _ in range(int(os.environ.get("BENCH_THREADS", "1")))]

    def make_namespace(index: int) -> None:
        client = clients[index % len(clients)]
        ns = f"bench-{index:04d}"
        client.create(
            codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        )
        for name, data in (("db", {"password": "x"}), ("app-env", {"user": "u", "token": "t"})):
            client.create(
                codecs.from_dict(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": name, "namespace": ns},
                        "stringData": data,
                    }
                )
            )
        for w in range(per_namespace):
            kind = mix[w % len(mix)]
            obj = workload(kind, f"{kind.lower()}-{w}", ns, env_from=w == 0)
            client.create(codecs.from_dict(obj))

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        list(pool.map(make_namespace, range(namespaces)))
    for client in clients:
        client.close()
    return time.monotonic() - t0


def measure(argv: list[str], env: dict[str, str], workdir: Path) -> tuple[float, int, int]:
    """Run ``argv``; return (wall seconds, peak RSS KiB, exit code) of that process alone.

    GNU time measures the peak RSS when available (a forked child of this big Python process
    would otherwise inherit its RSS high-water mark); else ``wait4``'s ``ru_maxrss``.
    """
    gnu_time = Path("/usr/bin/time")
    stats = workdir / "time.out"
    if gnu_time.is_file():
        argv = [str(gnu_time), "-f", "%M", "-o", str(stats), *argv]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code not in (0, 1):
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    rss = int(usage.ru_maxrss)
    if gnu_time.is_file():
        rss = int(stats.read_text().strip().splitlines()[-1])
    return wall, rss, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--per-namespace", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    parser.add_argument("--kubectl", help="kubectl binary (default: the testenv's)")
    parser.add_argument("--no-create", action="store_true", help="the objects already exist")
    parser.add_argument(
        "--serve", action="store_true", help="after creating, print the kubeconfig and wait"
    )
    args = parser.parse_args()

    cluster = None
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        workdir = Path(tmp)
        try:
            if args.kubeconfig:
                kubeconfig = Path(args.kubeconfig)
                kubectl = args.kubectl or "kubectl"
            else:
                print("starting etcd + kube-apiserver ...", file=sys.stderr)
                cluster = start_api_only_cluster(workdir / "cluster")
                kubeconfig = cluster.kubeconfig
                kubectl = args.kubectl or str(cluster.binaries["kubectl"])
            if not args.no_create:
                if cluster is None:
                    raise SystemExit("--kubeconfig needs --no-create (objects are not created)")
                total = args.namespaces * args.per_namespace
                print(
                    f"creating {total} workloads in {args.namespaces} namespaces ...",
                    file=sys.stderr,
                )
                took = populate(cluster, args.namespaces, args.per_namespace)
                print(f"created in {took:.1f}s", file=sys.stderr)

            if args.serve:
                print(f"KUBECONFIG={kubeconfig}  (Ctrl-C to stop)", flush=True)
                while True:
                    time.sleep(3600)
            # an installed cloudtaser has its bytecode compiled; PYTHONDONTWRITEBYTECODE (set in
            # some dev shells) would make every run recompile every module
            drop = {"KUBECONFIG", "PYTHONDONTWRITEBYTECODE"}
            env = {k: v for k, v in os.environ.items() if k not in drop}
            env["KUBECONFIG"] = str(kubeconfig)
            plan = workdir / "plan.yaml"
            ours = [
                sys.executable,
                "-m",
                "cloudtaser",
                "target",
                "discover",
                "--kubeconfig",
                str(kubeconfig),
                "--output-plan",
                str(plan),
                "--force",
            ]
            theirs = [
                kubectl,
                f"--kubeconfig={kubeconfig}",
                f"--cache-dir={workdir / 'kubectl-cache'}",
                "get",
                "deployments,statefulsets,daemonsets",
                "-A",
                "-o",
                "json",
            ]
            results: dict[str, list[tuple[float, int]]] = {"cloudtaser": [], "kubectl": []}
            for name, argv in (("cloudtaser", ours), ("kubectl", theirs)):  # warm-up
                wall, _rss, code = measure(argv, env, workdir)
                if code not in (0, 1):
                    raise SystemExit(f"{name} failed (exit {code})")
            for _ in range(args.rounds):
                for name, argv in (("cloudtaser", ours), ("kubectl", theirs)):
                    wall, rss, _code = measure(argv, env, workdir)
                    results[name].append((wall, rss))

            loaded = planlib.load(plan)
            workloads = sum(len(t.workloads) for t in loaded.tenants)
            med = {n: statistics.median(w for w, _ in r) for n, r in results.items()}
            peak = {n: max(m for _, m in r) for n, r in results.items()}
            print(f"plan: {len(loaded.tenants)} tenants, {workloads} workloads")
            print(f"rounds: {args.rounds} (median wall time, max peak RSS)")
            for name in ("cloudtaser", "kubectl"):
                print(
                    f"  {name:<11} {med[name]:7.3f} s   peak RSS {peak[name] / 1024:7.1f} MiB   "
                    f"runs: {', '.join(f'{w:.2f}' for w, _ in results[name])}"
                )
            ratio = med["cloudtaser"] / med["kubectl"]
            print(f"ratio cloudtaser/kubectl: {ratio:.2f} (goal <= 1.0)")
        finally:
            if cluster is not None:
                cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
