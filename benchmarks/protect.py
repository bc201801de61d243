"""Benchmark: ``cloudtaser target protect --yes --parallel 32`` at fleet scale, against (a) the
shell loop a user would write and (b) a floor, in one run on one cluster.

It starts a local control plane with controllers, scheduler and kwok fake nodes (so rollouts
really happen), creates 50 namespaces with 20 Deployments each (1,000, one replica, each
reading a Secret through ``secretKeyRef``), runs ``target discover`` once (not timed), then
times, each on all 1,000 Deployments and each causing exactly one rollout of every one:

(a) kubectl loop: ``kubectl patch`` + ``kubectl rollout status`` per workload, 32 at a time
    with ``xargs -P 32``;
(b) floor: one process that sends all 1,000 patches (32 in flight) and then watches every
    rollout with one watch;
(c) ``cloudtaser target protect --yes --parallel 32`` (annotations, one patch, wait by
    kubectl's rules, plan saved after every workload).

Goals: protect >= 3x faster than the kubectl loop, <= 1.5x the floor, peak RSS <= 150 MiB.

    python -m benchmarks.protect                       # 50 x 20 = 1,000 Deployments
    python -m benchmarks.protect --namespaces 10       # smaller

Needs the testenv binaries (``nox -s testenv``). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

from cloudtaser import plan as planlib
from cloudtaser.target.rollout import deployment_status
from tests.testenv.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent

LABEL = "cloudtaser-bench"
#: The controllers' client-side rate limits (kube-controller-manager 20 qps / 5 concurrent
#: Deployment and ReplicaSet syncs by default) bound how fast ANY client's 1,000 rollouts can
#: complete, so without raising them the benchmark measures the controller manager, not the
#: three contenders. Large production control planes raise them the same way.
CONTROL_PLANE_TUNING: dict[str, list[str]] = {
    "kube-controller-manager": [
        "--kube-api-qps=1000",
        "--kube-api-burst=2000",
        "--concurrent-deployment-syncs=32",
        "--concurrent-replicaset-syncs=32",
    ],
    "kube-scheduler": ["--kube-api-qps=1000", "--kube-api-burst=2000"],
}
VAULT_ADDRESS = "https://vault.example:8200"


def _deployment(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {LABEL: "1"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "env": [
                                {
                                    "name": "DB_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "db", "key": "password"}
                                    },
                                }
                            ],
                        }
                    ]
                },
            },
        },
    }


async def _populate(kubeconfig: Path, context: str, namespaces: int, per_ns: int) -> list[str]:
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig).get(context_name=context))
    refs: list[str] = []
    gate = asyncio.Semaphore(16)

    async def create(obj: dict[str, Any]) -> None:
        async with gate:
            await client.create(codecs.from_dict(obj))

    try:
        for index in range(namespaces):
            ns = f"bench-{index:03d}"
            await create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            await create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "db", "namespace": ns},
                    "stringData": {"password": "bench-not-a-secret"},
                }
            )
            names = [f"app-{w:02d}" for w in range(per_ns)]
            await asyncio.gather(*(create(_deployment(n, ns)) for n in names))
            refs += [f"{ns}/{n}" for n in names]
    finally:
        await client.close()
    return refs


def _complete(obj: Any) -> bool:
    return deployment_status(msgspec.to_builtins(obj)).done


async def _floor(kubeconfig: str, context: str, refs: list[str], parallel: int) -> None:
    """All patches (``parallel`` in flight), then one watch until every rollout is done."""
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig).get(context_name=context))
    marker = str(time.time())
    gate = asyncio.Semaphore(parallel)
    generations: dict[str, int] = {}

    async def patch(ref: str) -> None:
        ns, name = ref.split("/")
        body = {"spec": {"template": {"metadata": {"annotations": {"bench/floor": marker}}}}}
        async with gate:
            obj = await client.patch(
                Deployment, name, body, namespace=ns, patch_type=PatchType.STRATEGIC
            )
        generations[ref] = int(obj.metadata.generation or 0)

    try:
        await asyncio.gather(*(patch(r) for r in refs))
        pending = set(refs)
        async for _event, obj in client.watch(Deployment, namespace="*", labels={LABEL: "1"}):
            ref = f"{obj.metadata.namespace}/{obj.metadata.name}"
            if (
                ref in pending
                and int(obj.status.observedGeneration or 0) >= generations[ref]
                and _complete(obj)
            ):
                pending.discard(ref)
                if not pending:
                    break
    finally:
        await client.close()


def measure(argv: list[str], env: dict[str, str], workdir: Path) -> tuple[float, int, int]:
    """Run ``argv``; (wall seconds, peak RSS KiB of the largest process, exit code)."""
    gnu_time = Path("/usr/bin/time")
    stats = workdir / "time.out"
    if gnu_time.is_file():
        argv = [str(gnu_time), "-f", "%M", "-o", str(stats), *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, check=False, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-3000:])
    rss = int(stats.read_text().strip().splitlines()[-1]) if gnu_time.is_file() else 0
    return wall, rss, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--per-namespace", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument(
        "--untuned",
        dest="tuned",
        action="store_false",
        help="keep the controllers' default client rate limits (20 qps): the control plane, not"
        " the client, then bounds all three contenders",
    )
    parser.add_argument("--floor", nargs=3, metavar=("KUBECONFIG", "CONTEXT", "REFS"))
    args = parser.parse_args()
    if args.floor:  # the floor, run as its own process so its time and RSS are its own
        kubeconfig, context, refs_file = args.floor
        refs = Path(refs_file).read_text().split()
        asyncio.run(_floor(kubeconfig, context, refs, args.parallel))
        return 0

    total = args.namespaces * args.per_namespace
    nodes = max(2, (total + 2 * args.parallel) // 100 + 1)  # 110 pods per kwok node
    with tempfile.TemporaryDirectory(prefix="ct-bench-protect-") as tmp:
        workdir = Path(tmp)
        cluster = Cluster(
            "bench",
            workdir / "cluster",
            nodes=nodes,
            start_timeout=300,
            extra_args=CONTROL_PLANE_TUNING if args.tuned else None,
        )
        print(f"starting the control plane with {nodes} kwok nodes ...", file=sys.stderr)
        cluster.start()
        try:
            kubeconfig, context = cluster.kubeconfig, cluster.context
            kubectl = str(cluster.binaries["kubectl"])
            print(f"creating {total} Deployments ...", file=sys.stderr)
            t0 = time.monotonic()
            refs = asyncio.run(_populate(kubeconfig, context, args.namespaces, args.per_namespace))
            refs_file = workdir / "refs.txt"
            refs_file.write_text("\n".join(refs) + "\n")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["KUBECONFIG"] = str(kubeconfig)
            # wait until the first rollout (creation) is done everywhere, with the floor's watch
            subprocess.run(
                [
                    kubectl,
                    "wait",
                    "--for=condition=Available",
                    "deployment",
                    "-A",
                    "--timeout=900s",
                    "-l",
                    f"{LABEL}=1",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            print(f"created and available in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            plan = workdir / "plan.yaml"
            subprocess.run(
                [
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
                ],
                env=env,
                check=True,
                capture_output=True,
            )

            patch = '{"spec":{"template":{"metadata":{"annotations":{"bench/kubectl":"1"}}}}}'
            one = (
                f'ns="${{1%/*}}"; name="${{1#*/}}"; '
                f'{shlex.quote(kubectl)} patch deployment -n "$ns" "$name" --type strategic '
                f"-p {shlex.quote(patch)} >/dev/null && "
                f'{shlex.quote(kubectl)} rollout status deployment -n "$ns" "$name" '
                "--timeout=15m >/dev/null"
            )
            loop = (
                f"xargs -P {args.parallel} -n 1 sh -c {shlex.quote(one)} _ "
                f"< {shlex.quote(str(refs_file))}"
            )
            runs = {
                "kubectl loop": ["sh", "-c", loop],
                "floor": [
                    sys.executable,
                    "-m",
                    "benchmarks.protect",
                    "--parallel",
                    str(args.parallel),
                    "--floor",
                    str(kubeconfig),
                    context,
                    str(refs_file),
                ],
                "cloudtaser protect": [
                    sys.executable,
                    "-m",
                    "cloudtaser",
                    "target",
                    "protect",
                    "--plan",
                    str(plan),
                    "--kubeconfig",
                    str(kubeconfig),
                    "--vault-address",
                    VAULT_ADDRESS,
                    "--no-verify-injection",  # kwok: no injector, pods run nothing
                    "--yes",
                    "--parallel",
                    str(args.parallel),
                    "--timeout",
                    "15m",
                ],
            }
            results: dict[str, tuple[float, int, int]] = {}
            for name, argv in runs.items():
                print(f"running {name} ...", file=sys.stderr)
                results[name] = measure(argv, env, workdir)
                print(f"  {results[name][0]:.1f}s (exit {results[name][2]})", file=sys.stderr)
            loaded = planlib.load(plan)
            migrated = sum(
                1
                for _t, w in loaded.iter_workloads()
                if w.effective_status is planlib.WorkloadStatus.MIGRATED
            )
        finally:
            cluster.stop()
    print(
        f"{total} Deployments in {args.namespaces} namespaces, --parallel {args.parallel}, "
        f"{os.cpu_count()} CPUs; plan: {migrated} migrated"
    )
    for name, (wall, rss, code) in results.items():
        print(f"  {name:<19} {wall:8.1f} s   peak RSS {rss / 1024:7.1f} MiB   exit {code}")
    ours = results["cloudtaser protect"][0]
    print(f"kubectl loop / protect: {results['kubectl loop'][0] / ours:.2f}x (goal >= 3)")
    print(f"protect / floor:        {ours / results['floor'][0]:.2f}x (goal <= 1.5)")
    print(
        f"protect peak RSS:       {results['cloudtaser protect'][1] / 1024:.1f} MiB (goal <= 150)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
