"""Benchmark the runtime wrapper: the Go ``cloudtaser-runtime wrap`` (and, while it existed, the
Python ``cloudtaser wrap``) against a local OpenBao dev server and a local API server.

Set-up: ``target connect`` (library) of an API-server-only test-bed cluster to a fresh auth
mount, a one-tenant plan with 5 secret paths applied (policy + role), 5 secrets written, and a
real ServiceAccount JWT from the TokenRequest API in a file. Then, each run ``--runs`` times:

* ``/bin/true`` alone (the floor: process start of the app);
* Go: ``cloudtaser-runtime wrap -- /bin/true``: login + 5 reads + revoke + exec;
* Python: ``python -m cloudtaser wrap -- /bin/true`` (skipped once the Python wrapper is gone).

Figures: start-to-app wall time (median, min, max); the Go wrapper's own overhead with vault
round trips excluded (its ``CLOUDTASER_DEBUG`` timing line: time since the binary's start
minus time spent in vault requests, up to the execve); resident-mode RSS of the wrapper
(``VmRSS``/``VmHWM`` from /proc, rotation on so it keeps its token and poll state).

Usage: ``python -m benchmarks.runtime_wrapper [--runs 30] [--binary PATH]`` (the binary
defaults to build/runtime/linux-amd64/cloudtaser-runtime, built by ``nox -s runtime``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from benchmarks._common import cpu_note, dev_server
from benchmarks.discover import start_api_only_cluster
from cloudtaser import plan as planlib
from cloudtaser.config import ClusterTarget, VaultTarget
from cloudtaser.connect import ConnectOptions, connect
from cloudtaser.source.openbao import OpenBaoClient
from cloudtaser.source.provision import apply_plan
from cloudtaser.target.kube.session import connect as kube_connect
from tests.integration.connect_helpers import (
    create_namespace_with_accounts,
    request_token,
)

ROOT = Path(__file__).resolve().parent.parent

PATHS = 5
TIMING = re.compile(
    r"timing exec: total ([\d.]+) ms, vault ([\d.]+) ms in (\d+) request\(s\), wrapper ([\d.]+) ms"
)


def setup(openbao, cluster, tmp: Path) -> dict[str, str]:
    ns, mount, kv = "bench-rt", "k8s-bench", "kv-bench"
    openbao.enable_kv2(kv)
    client = cluster.client()
    create_namespace_with_accounts(client, ns, "app")
    session = kube_connect(ClusterTarget(kubeconfig=(str(cluster.kubeconfig),)))
    vault = OpenBaoClient(VaultTarget(address=openbao.address, token=openbao.token))
    doc = {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": {"name": "bench", "cluster": "bench", "authMount": mount},
        "tenants": [
            {
                "name": ns,
                "namespace": ns,
                "workloads": [
                    {
                        "kind": "Deployment",
                        "name": "api",
                        "serviceAccount": "app",
                        "secrets": [
                            {
                                "source": f"s{i}",
                                "vaultPath": f"{kv}/data/{ns}/s{i}",
                                "fields": {"password": f"P{i}"},
                            }
                            for i in range(PATHS)
                        ],
                    }
                ],
            }
        ],
    }
    try:
        result = connect(session, vault, ConnectOptions(auth_mount=mount, namespace="ct-bench"))
        assert result.self_test is not None, "connect ran no self-test"
        assert result.self_test.ok, result.self_test.message
        apply_plan(vault, msgspec.convert(doc, planlib.MigrationPlan), audience="openbao")
    finally:
        session.close()
        vault.close()
    for i in range(PATHS):
        openbao.api_ok(
            "POST", f"{kv}/data/{ns}/s{i}", {"data": {"password": secrets.token_hex(16)}}
        )
    token = tmp / "sa-token"
    token.write_text(request_token(client, ns, "app", ["openbao"], seconds=3600))
    client.close()
    return {
        "CLOUDTASER_VAULT_ADDR": openbao.address,
        "CLOUDTASER_VAULT_AUTH_ROLE": f"cloudtaser-bench-{ns}",
        "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": f"auth/{mount}",
        "CLOUDTASER_SECRET_PATHS": ",".join(f"{kv}/data/{ns}/s{i}" for i in range(PATHS)),
        "CLOUDTASER_ENV_MAP": ";".join(f"password=P{i}" for i in range(PATHS)),
        "CLOUDTASER_SA_TOKEN_PATH": str(token),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


def wall(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[str]]:
    times, errs = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        times.append((time.perf_counter() - start) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {proc.stderr}")
        errs.append(proc.stderr)
    return times, errs


def row(name: str, ms: list[float]) -> None:
    print(
        f"  {name:<44} median {statistics.median(ms):8.2f} ms"
        f"   min {min(ms):8.2f}   max {max(ms):8.2f}"
    )


def resident_rss(binary: str, env: dict[str, str]) -> tuple[int, int]:
    renv = {**env, "CLOUDTASER_MODE": "resident", "CLOUDTASER_ROTATION_INTERVAL": "1s"}
    proc = subprocess.Popen(
        [binary, "wrap", "--", "sleep", "5"], env=renv, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(3)  # login, reads, the app started, two rotation polls done
        status = Path(f"/proc/{proc.pid}/status").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    kib = {
        k: int(v.split()[0])
        for k, v in (line.split(":", 1) for line in status.splitlines())
        if k in ("VmRSS", "VmHWM")
    }
    return kib["VmRSS"], kib["VmHWM"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--binary", default=str(ROOT / "build/runtime/linux-amd64/cloudtaser-runtime")
    )
    args = parser.parse_args()
    if not Path(args.binary).is_file():
        raise SystemExit(f"{args.binary} not found: run `nox -s runtime` first")
    with dev_server() as openbao, tempfile.TemporaryDirectory(prefix="ct-bench-rt-") as tmp:
        cluster = start_api_only_cluster(Path(tmp) / "cluster")
        try:
            env = setup(openbao, cluster, Path(tmp))
            print(
                f"runtime wrapper: login + {PATHS} KV v2 reads, {args.runs} runs each"
                f" ({cpu_note()})"
            )
            floor, _ = wall(["/bin/true"], env, args.runs)
            row("/bin/true alone", floor)
            go, errs = wall(
                [args.binary, "wrap", "--", "/bin/true"],
                {**env, "CLOUDTASER_DEBUG": "1"},
                args.runs,
            )
            row("Go: cloudtaser-runtime wrap -- /bin/true", go)
            overhead = []
            for err in errs:
                found = TIMING.search(err)
                if not found:
                    raise SystemExit(f"no timing line in: {err}")
                overhead.append(float(found.group(4)))
            row("Go: wrapper overhead, vault round trips excluded", overhead)
            if importlib.util.find_spec("cloudtaser.wrapper") is not None:
                penv = {**env, "PYTHONPATH": str(ROOT)}
                py, _ = wall(
                    [sys.executable, "-m", "cloudtaser", "wrap", "--", "/bin/true"], penv, args.runs
                )
                row("Python: cloudtaser wrap -- /bin/true", py)
                print(
                    f"  Go is {statistics.median(py) / statistics.median(go):.1f}x faster"
                    " start-to-app"
                )
            else:
                print(
                    "  Python: cloudtaser wrap is removed (its figures, measured before,"
                    " are in docs/connect-and-runtime.md)"
                )
            rss, hwm = resident_rss(args.binary, env)
            print(
                f"  Go resident mode (rotation on): VmRSS {rss / 1024:.1f} MiB,"
                f" VmHWM {hwm / 1024:.1f} MiB"
            )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
