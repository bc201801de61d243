"""Benchmark secret files on the real node (issue 29): how long a pod takes from creation to its
app's start when the injector serves N files from OpenBao, against the same pod with its
secrets in env only, in one run; and the memory of a resident wrapper serving files.

Set-up (as tests/integration/test_secret_files_realnode.py): a real node, a bao dev server,
``target connect``, the runtime image built from ``runtime/`` and ``target install`` in URL
mode; one KV v2 secret holding N fields of 1 KiB. Then, ``--runs`` times each, in turn:

* env: a pod with ``cloudtaser.io/secret-paths``/``env-map`` mapping one field;
* files N (for each N of ``--files``): a pod with a ``secret`` volume of N items and the
  ``cloudtaser.io/secret-files`` annotation (cloudtaser-files renders them).

Figure: create call -> every container running and ready (the app started), polled every 50 ms;
median, min, max. Then a resident wrapper with rotation serving the largest N:
``VmRSS``/``VmHWM`` of PID 1 of its container (the wrapper).

Usage: ``python -m benchmarks.secret_files [--runs 5] [--files 1,10,100]``; needs root (the
real node).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from lightkube import codecs
from lightkube.resources.core_v1 import Pod

from benchmarks._common import cpu_note, dev_server
from tests.integration.connect_helpers import cli, connect_args
from tests.integration.runtime_binary import REPO, go_binary, go_build
from tests.testenv.openbao import BaoServer
from tests.testenv.process import free_ports
from tests.testenv.realnode import RealNode
from tests.testenv.workloads import create_service_account

AUDIENCE = "openbao"
NAMESPACE = "bench-files"
KV = "kv-bench-files"
PATH = f"{KV}/data/app/files"


def install(node: RealNode, openbao: BaoServer, tmp: Path) -> None:
    binary = go_build(tmp / "amd64" / "cloudtaser-runtime")
    subprocess.run(
        [go_binary(), "run", "./tools/build-image", "-out", str(tmp / "image"),
         "-tag", "cloudtaser-runtime:bench", "-version", "bench", f"amd64={binary}"],
        cwd=REPO / "runtime", check=True, capture_output=True,
    )  # fmt: skip
    image = node.push_oci_layout(tmp / "image", "cloudtaser/runtime:bench")
    (port,) = free_ports(1)
    run = cli([
        "target", "install", "--image", image.pinned, "--allowed-vault-address", openbao.address,
        "--audience", AUDIENCE, "--namespace", "ct-bench-injector",
        "--webhook-url", f"https://127.0.0.1:{port}/mutate",
        "--kube-api", f"{node.api_host}:{node.api_port}",
        "--kubeconfig", str(node.kubeconfig), "--timeout", "180s",
    ])  # fmt: skip
    if run.code != 0:
        raise SystemExit(f"target install failed:\n{run.text}")


def prepare(node: RealNode, openbao: BaoServer, tmp: Path, fields: int) -> str:
    """Namespace, auth mount, KV secret of ``fields`` fields, policy and role; the role name."""
    node.create_namespace(NAMESPACE)
    run = cli(connect_args(node.cluster, openbao, tmp, "k8s-bench-files", "ct-sys-bench-files"))
    if run.code != 0:
        raise SystemExit(f"target connect failed:\n{run.text}")
    openbao.enable_kv2(KV)
    data = {f"f{i}": secrets.token_hex(512) for i in range(fields)}
    openbao.api_ok("POST", PATH, {"data": data})
    policy = f'path "{PATH}" {{\n  capabilities = ["read"]\n}}\n'
    openbao.api_ok("PUT", "sys/policies/acl/bench-files", {"policy": policy})
    with contextlib.closing(node.client()) as client:
        create_service_account(client, NAMESPACE, "app")
    openbao.api_ok("POST", "auth/k8s-bench-files/role/bench", {
        "bound_service_account_names": ["app"], "bound_service_account_namespaces": [NAMESPACE],
        "audience": AUDIENCE, "token_policies": ["bench-files"], "token_ttl": "10m",
    })  # fmt: skip
    return "bench"


def pod(name: str, openbao: BaoServer, image: str, files: int, *, resident: bool = False) -> Any:
    annotations = {
        "cloudtaser.io/inject": "true",
        "cloudtaser.io/vault-address": openbao.address,
        "cloudtaser.io/vault-role": "bench",
        "cloudtaser.io/vault-auth-path": "auth/k8s-bench-files",
    }
    container: dict[str, Any] = {"name": "app", "image": image, "command": ["sleep", "3600"]}
    spec: dict[str, Any] = {
        "hostNetwork": True, "dnsPolicy": "Default", "restartPolicy": "Never",
        "serviceAccountName": "app", "terminationGracePeriodSeconds": 0,
        "containers": [container],
    }  # fmt: skip
    if files == 0:
        annotations["cloudtaser.io/secret-paths"] = PATH
        annotations["cloudtaser.io/env-map"] = "f0=VALUE"
    else:
        value = [{"defaultMode": 0o444, "volume": "files", "files": [
            {"file": f"f{i}", "key": f"f{i}", "path": PATH} for i in range(files)]}]  # fmt: skip
        annotations["cloudtaser.io/secret-files"] = json.dumps(
            value, separators=(",", ":"), sort_keys=True
        )
        spec["volumes"] = [{"name": "files", "secret": {"secretName": "never-read"}}]
        container["volumeMounts"] = [{"name": "files", "mountPath": "/etc/files"}]
    if resident:
        container["env"] = [{"name": "CLOUDTASER_MODE", "value": "resident"},
                            {"name": "CLOUDTASER_ROTATION_INTERVAL", "value": "5s"}]  # fmt: skip
    return codecs.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations,
                     "labels": {"cloudtaser.io/inject": "true"}},
        "spec": spec,
    })  # fmt: skip


def start_time(node: RealNode, manifest: Any) -> float:
    """Seconds from the create call to every container running and ready."""
    with contextlib.closing(node.client()) as client:
        t0 = time.perf_counter()
        created = client.create(manifest)
        name = created.metadata.name
        while True:
            got = client.get(Pod, name, namespace=NAMESPACE)
            statuses = (got.status.containerStatuses or []) if got.status else []
            if statuses and all(s.ready for s in statuses):
                seconds = time.perf_counter() - t0
                break
            if got.status and got.status.phase == "Failed":
                raise SystemExit(f"pod {name} failed:\n{node.pod_diagnostics(NAMESPACE, name)}")
            if time.perf_counter() - t0 > 120:
                raise SystemExit(f"pod {name} not ready:\n{node.pod_diagnostics(NAMESPACE, name)}")
            time.sleep(0.05)
        client.delete(Pod, name, namespace=NAMESPACE, grace_period=0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", default="1,10,100")
    args = parser.parse_args()
    counts = [int(n) for n in args.files.split(",")]
    with tempfile.TemporaryDirectory(prefix="ct-bench-files-") as tmp, dev_server() as openbao:
        node = RealNode(Path(tmp) / "node")
        node.start()
        try:
            install(node, openbao, Path(tmp))
            prepare(node, openbao, Path(tmp), max(counts))
            image = node.build_image("cloudtaser-test/bench-files:1", cmd=["sh"]).pinned
            kinds = [0, *counts]
            times: dict[int, list[float]] = {k: [] for k in kinds}
            for run in range(args.runs):  # interleaved: the kinds share the node's state
                for k in kinds:
                    times[k].append(start_time(node, pod(f"p{k}-{run}", openbao, image, k)))
            print(f"\nsecret files: pod creation -> app started ({args.runs} runs, {cpu_note()})")
            for k in kinds:
                what = "env only (1 variable)" if k == 0 else f"{k} file(s) of 1 KiB"
                ms = [t * 1000 for t in times[k]]
                print(f"  {what:24} median {statistics.median(ms):7.0f} ms"
                      f"  min {min(ms):7.0f}  max {max(ms):7.0f}")  # fmt: skip
            big = max(counts)
            with contextlib.closing(node.client()) as client:
                client.create(pod("resident", openbao, image, big, resident=True))
            node.wait_pod(NAMESPACE, "resident", timeout=120)
            time.sleep(6)  # one rotation check
            status = node.exec(NAMESPACE, "resident", "cat", "/proc/1/status").stdout
            fields = (line.split(":", 1) for line in status.splitlines())
            kib = {k: int(v.split()[0]) for k, v in fields if k in ("VmRSS", "VmHWM")}
            print(
                f"  resident wrapper serving {big} files (rotation on): "
                f"VmRSS {kib['VmRSS'] / 1024:.1f} MiB, VmHWM {kib['VmHWM'] / 1024:.1f} MiB"
            )
        finally:
            node.stop()


if __name__ == "__main__":
    main()
