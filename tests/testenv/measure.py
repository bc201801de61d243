"""Start one local cluster, roll out a workload, report start time and memory, stop.

    python -m tests.testenv.measure [--keep SECONDS]

Prints the warm start time (all binaries cached), the time a 3-replica Deployment takes to roll
out, and current/peak RSS per process and in total. Not a test: a measurement for reports.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .binaries import find_k8s_binaries
from .cluster import Cluster
from .workloads import WorkloadSpec, create_namespace, create_workload, wait_rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=float, default=0.0, help="seconds to stay up at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-measure-") as tmp:
        cluster = Cluster("measure", Path(tmp), binaries=find_k8s_binaries())
        try:
            cluster.start()
            print(f"warm start: {cluster.startup_seconds:.1f}s")
            client = cluster.client()
            ns = create_namespace(client)
            t0 = time.monotonic()
            create_workload(client, WorkloadSpec("Deployment", "m", ns, replicas=3))
            wait_rollout(client, "Deployment", ns, "m", timeout=120)
            print(f"3-replica Deployment rolled out in {time.monotonic() - t0:.1f}s")
            time.sleep(args.keep)
            mem = cluster.memory_kib()
            for name, (rss, hwm) in mem.items():
                print(f"{name:26s} rss {rss / 1024:7.1f} MiB  peak {hwm / 1024:7.1f} MiB")
            total_rss = sum(r for r, _ in mem.values()) / 1024
            total_hwm = sum(h for _, h in mem.values()) / 1024
            print(f"{'total':26s} rss {total_rss:7.1f} MiB  peak {total_hwm:7.1f} MiB")
            client.close()
        finally:
            cluster.stop()
            left = cluster.leftover_pids()
            print(f"left behind after stop(): {left or 'nothing'}")


if __name__ == "__main__":
    main()
