"""Benchmark ``source verify-plan``: cloudtaser vs a loop of ``bao kv metadata get`` vs the floor.

5,000 distinct secret paths (1,000 tenants x 5 workloads x 1 path) seeded into a fresh dev
server, then checked by:

* cloudtaser (library call: mount pre-flight, capabilities-self in bulk, one ``subkeys``
  request per distinct path on a bounded thread pool over one pooled session);
* a shell-style loop of ``bao kv metadata get`` (sampled and extrapolated by default:
  one ``bao`` start costs ~160 ms; ``--bao-sample 0`` runs all of them);
* the floor: one ``GET <mount>/subkeys/<path>`` per path, sequential, one keep-alive
  connection.

Usage: ``python -m benchmarks.verify_plan [--paths 5000] [--bao-sample 50] [--concurrency 16]``
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks._common import bao_loop, cpu_note, dev_server, report, timed
from cloudtaser import plan as planlib
from cloudtaser.config import VaultTarget
from cloudtaser.source.openbao import OpenBaoClient
from cloudtaser.source.verify import verify_plan

PER_TENANT = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=5000)
    parser.add_argument("--bao-sample", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n = args.paths
    paths = [f"t{i // PER_TENANT}/w{i % PER_TENANT}/db" for i in range(n)]
    data = {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": {"name": "bench"},
        "tenants": [
            {
                "name": f"t{t}",
                "namespace": f"t{t}",
                "workloads": [
                    {
                        "kind": "Deployment",
                        "name": f"w{w}",
                        "secrets": [
                            {
                                "source": "db",
                                "vaultPath": f"secret/data/t{t}/w{w}/db",
                                "fields": {"user": "DB_USER", "password": "DB_PASSWORD"},
                            }
                        ],
                    }
                    for w in range(PER_TENANT)
                    if t * PER_TENANT + w < n
                ],
            }
            for t in range((n + PER_TENANT - 1) // PER_TENANT)
        ],
    }
    plan = planlib.loads(json.dumps(data))
    with dev_server() as server:
        session = requests.Session()
        session.headers["X-Vault-Token"] = server.token

        def seed(path: str) -> None:
            r = session.post(
                f"{server.address}/v1/secret/data/{path}",
                json={"data": {"user": "u", "password": "p"}},
            )
            r.raise_for_status()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(seed, paths))

        def floor() -> None:
            for path in paths:
                r = session.get(f"{server.address}/v1/secret/subkeys/{path}", params={"depth": 1})
                r.raise_for_status()

        floor_s, _ = timed(floor)
        target = VaultTarget(address=server.address, token=server.token)
        with OpenBaoClient(target, pool_size=args.concurrency) as client:
            ct_s, result = timed(lambda: verify_plan(client, plan, concurrency=args.concurrency))
            sent = client.requests_sent
        if not result.ok or result.paths_checked != n:
            raise SystemExit(f"verify failed: {result.counts}")
        with OpenBaoClient(target, pool_size=1) as client:
            seq_s, _ = timed(lambda: verify_plan(client, plan, concurrency=1))

        sample = n if args.bao_sample <= 0 else min(args.bao_sample, n)
        commands = [["kv", "metadata", "get", f"secret/{p}"] for p in paths[:sample]]
        bao_s = bao_loop(server, commands, [None] * sample) * n / sample

    print(f"verify-plan, {n} distinct paths, local dev server, {cpu_note()}")
    report(
        [
            (f"cloudtaser verify-plan (concurrency {args.concurrency})", ct_s, f"{sent} requests"),
            ("cloudtaser verify-plan (concurrency 1)", seq_s, ""),
            ("floor: sequential subkeys GETs", floor_s, f"{n} requests, one keep-alive connection"),
            (
                "bao kv metadata get loop",
                bao_s,
                f"{'all measured' if sample == n else f'measured on {sample}, extrapolated'}",
            ),
        ]
    )
    print(f"  speed-up vs bao loop: {bao_s / ct_s:.1f}x (goal >= 50x)")
    print(f"  cloudtaser / floor:   {ct_s / floor_s:.2f} (goal <= 1.0)")


if __name__ == "__main__":
    main()
