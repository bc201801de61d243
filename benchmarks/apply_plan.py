"""Benchmark ``source apply-plan``: cloudtaser vs a loop of the ``bao`` CLI vs the floor.

A 500-tenant plan (one policy + one role per tenant) applied to a fresh dev server by:

* cloudtaser (library call: pre-flight, read-compare, concurrent writes), then its no-change
  re-run;
* a shell-style loop of ``bao policy write`` + ``bao write auth/<mount>/role/<name>``. One
  ``bao`` start costs ~160 ms, so by default the loop runs on a sample of tenants and is
  extrapolated (``--bao-sample 0`` runs it for all 500);
* the floor: a minimal script sending just the 1000 write requests sequentially over one
  keep-alive connection (no pre-flight, no reads).

Each contender writes into its own names on the same server. Usage:
``python -m benchmarks.apply_plan [--tenants 500] [--bao-sample 40] [--concurrency 16]``
"""

from __future__ import annotations

import argparse
import json

import requests

from benchmarks._common import bao_loop, cpu_note, dev_server, report, timed
from cloudtaser import plan as planlib
from cloudtaser.config import VaultTarget
from cloudtaser.source.grants import build_grants
from cloudtaser.source.openbao import OpenBaoClient
from cloudtaser.source.provision import apply_plan


def make_plan(name: str, tenants: int) -> planlib.MigrationPlan:
    data = {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": {"name": name},
        "tenants": [
            {
                "name": f"t{i:04d}",
                "namespace": f"t{i:04d}",
                "workloads": [
                    {
                        "kind": "Deployment",
                        "name": "api",
                        "serviceAccount": "api",
                        "secrets": [
                            {
                                "source": "db",
                                "vaultPath": f"secret/data/t{i:04d}/db",
                                "fields": {"password": "DB_PASSWORD"},
                            },
                            {
                                "source": "tls",
                                "vaultPath": f"secret/data/t{i:04d}/tls",
                                "fields": {"cert": "TLS_CERT"},
                            },
                        ],
                    }
                ],
            }
            for i in range(tenants)
        ],
    }
    return planlib.loads(json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--bao-sample", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n = args.tenants
    with dev_server() as server:
        server.api_ok("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
        target = VaultTarget(address=server.address, token=server.token)

        # floor: just the writes, sequential, one keep-alive connection
        floor_grants, _ = build_grants(make_plan("floor", n))
        session = requests.Session()
        session.headers["X-Vault-Token"] = server.token

        def floor() -> None:
            for g in floor_grants:
                r = session.post(
                    f"{server.address}/v1/sys/policies/acl/{g.policy}",
                    json={"policy": g.policy_hcl},
                )
                r.raise_for_status()
                r = session.post(
                    f"{server.address}/v1/auth/kubernetes/role/{g.role}", json=g.role_fields()
                )
                r.raise_for_status()

        floor_s, _ = timed(floor)

        plan = make_plan("ct", n)
        with OpenBaoClient(target, pool_size=args.concurrency) as client:
            first_s, first = timed(lambda: apply_plan(client, plan, concurrency=args.concurrency))
            sent_first = client.requests_sent
            again_s, again = timed(lambda: apply_plan(client, plan, concurrency=args.concurrency))
            sent_again = client.requests_sent - sent_first
        if first.writes != 2 * n or again.writes != 0:
            raise SystemExit(f"unexpected writes: {first.writes}, {again.writes}")

        sample = n if args.bao_sample <= 0 else min(args.bao_sample, n)
        bao_grants, _ = build_grants(make_plan("bao", sample))
        commands: list[list[str]] = []
        inputs: list[str | None] = []
        for g in bao_grants:
            commands.append(["policy", "write", g.policy, "-"])
            inputs.append(g.policy_hcl)
            commands.append(
                [
                    "write",
                    f"auth/kubernetes/role/{g.role}",
                    f"bound_service_account_names={','.join(g.service_accounts)}",
                    f"bound_service_account_namespaces={g.namespace}",
                    f"token_policies={g.policy}",
                    f"token_ttl={g.token_ttl}",
                ]
            )
            inputs.append(None)
        bao_sample_s = bao_loop(server, commands, inputs)
        bao_s = bao_sample_s * n / sample

    how = "measured" if sample == n else f"measured on {sample} tenants, extrapolated"
    print(f"apply-plan, {n} tenants ({2 * n} objects), local dev server, {cpu_note()}")
    report(
        [
            (
                "cloudtaser apply-plan",
                first_s,
                f"{sent_first} requests (pre-flight + reads + writes)",
            ),
            ("cloudtaser re-run (no change)", again_s, f"{sent_again} requests, 0 writes"),
            ("floor: sequential writes", floor_s, f"{2 * n} requests, one keep-alive connection"),
            (
                "bao CLI loop",
                bao_s,
                f"{2 * sample} invocations " + how,
            ),
        ]
    )
    print(f"  speed-up vs bao loop: {bao_s / first_s:.1f}x (goal >= 50x)")
    print(f"  cloudtaser / floor:   {first_s / floor_s:.2f} (goal <= 1.5)")
    print(f"  re-run / floor:       {again_s / floor_s:.2f}")


if __name__ == "__main__":
    main()
