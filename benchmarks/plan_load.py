"""Benchmark: load+validate and save of a 10,000-workload plan.

Goal (issue 2): load+validate <= 0.5 s on the CI machine. Compares against the floor of just
parsing the same YAML (yaml-rs, the parser we use) and with PyYAML's libyaml loader, in one run.

Usage: python -m benchmarks.plan_load [--workloads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml
import yaml_rs

from cloudtaser import plan as planlib
from cloudtaser.plan.yamlio import no_cycle_collection


def build_plan(workloads: int, per_tenant: int = 20) -> planlib.MigrationPlan:
    tenants = []
    for t in range((workloads + per_tenant - 1) // per_tenant):
        ns = f"team-{t:05d}"
        items = []
        for w in range(min(per_tenant, workloads - t * per_tenant)):
            name = f"app-{w:03d}"
            items.append(
                planlib.Workload(
                    kind=planlib.WorkloadKind.DEPLOYMENT,
                    name=name,
                    replicas=2,
                    status=planlib.WorkloadStatus.PENDING,
                    service_account=name,
                    secrets=[
                        planlib.SecretRef(
                            source=f"{name}-db",
                            vault_path=f"secret/data/{ns}/{name}-db",
                            fields={"username": "DB_USER", "password": "DB_PASSWORD"},
                            via="env",
                        ),
                        planlib.SecretRef(
                            source=f"{name}-api",
                            vault_path=f"secret/data/{ns}/{name}-api",
                            fields={"token": "API_TOKEN"},
                            via="envFrom",
                        ),
                    ],
                )
            )
        tenants.append(planlib.Tenant(name=ns, namespace=ns, workloads=items))
    return planlib.MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=planlib.PlanMetadata(name="bench", cluster="https://127.0.0.1:6443"),
        tenants=tenants,
    )


SAMPLES: dict[str, list[float]] = {}


def timed(fn, repeat: int, name: str = "") -> float:
    """Median wall time of ``repeat`` runs (all samples kept for the report)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
        del result  # freeing the previous plan is not part of loading one
    if name:
        SAMPLES[name] = samples
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plan = build_plan(args.workloads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.yaml"
        save_s = timed(lambda: planlib.save(plan, path), args.repeat)
        size = path.stat().st_size
        text = path.read_bytes()

        def parse_only() -> None:
            with no_cycle_collection():  # same conditions as load()
                yaml_rs.loads(text.decode(), parse_datetime=False)

        floor_s = timed(parse_only, args.repeat)
        pyyaml_s = timed(lambda: yaml.load(text, Loader=yaml.CSafeLoader), 1)
        load_s = timed(lambda: planlib.load(path), args.repeat, "load")
        assert planlib.load(path) == plan
    print(f"plan: {args.workloads} workloads, {2 * args.workloads} secrets, {size / 1e6:.1f} MB")
    verdict = "OK" if load_s <= 0.5 else "MISSED"
    print(f"load+validate : {load_s:.3f} s median  (goal <= 0.5 s: {verdict})")
    shown = ", ".join(f"{x:.3f}" for x in SAMPLES["load"])
    print(f"  samples: {shown}  (a shared machine is noisy: look at the spread)")
    print(f"yaml parse only (floor, yaml-rs): {floor_s:.3f} s   ratio {load_s / floor_s:.2f}x")
    print(f"for comparison, PyYAML's libyaml loader alone: {pyyaml_s:.3f} s")
    print(f"save (atomic) : {save_s:.3f} s")


if __name__ == "__main__":
    main()
