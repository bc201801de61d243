"""Stopping the real node leaves nothing behind, and a killed run's node is cleaned up next time.

Runs after test_realnode.py (file order) and restarts the session node afterwards, so later
real-node tests still find it running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.testenv.process import pid_alive
from tests.testenv.realnode import (
    RealNode,
    host_state_differences,
    kubepods_cgroups,
    mounts_under,
    read_sysctls,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _busy_pod(node: RealNode, namespace: str, name: str) -> None:
    """A running pod with a memory emptyDir and a projected token: tmpfs mounts, cgroups, shim."""
    node.build_image("teardown/busybox:1")
    manifest = node.pod_manifest(
        name, "ghcr.io/teardown/busybox:1", ["sleep", "3600"], namespace=namespace
    )
    manifest["spec"]["volumes"] = [{"name": "m", "emptyDir": {"medium": "Memory"}}]
    manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "m", "mountPath": "/m"}]
    node.run_pod(manifest)


def _processes_mentioning(base: Path) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(base).encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return [p for p in out if pid_alive(p)]


def test_stop_undoes_every_host_side_effect_then_the_node_starts_again(
    real_node: RealNode, node_namespace: str
) -> None:
    _busy_pod(real_node, node_namespace, "busy")
    base = real_node.base
    recorded = real_node.host_state
    # while running, every kind of side effect is really there (so the checks below can fail)
    assert [m for m in mounts_under(base) if "tmpfs" not in m]  # the kubelet root bind mount
    assert any("kubernetes.io~empty-dir" in m for m in mounts_under(base))
    assert kubepods_cgroups()
    assert Path("/var/lib/kubelet/device-plugins/kubelet.sock").exists()
    assert any(
        "containerd-shim" in Path(f"/proc/{p}/cmdline").read_text()
        for p in _processes_mentioning(base)
    )
    changed = {k for k, v in read_sysctls().items() if recorded["sysctls"][k] != v}
    kubelet_values = {
        "vm/overcommit_memory": "1",
        "kernel/panic": "10",
        "kernel/panic_on_oops": "1",
    }
    expected_changes = {k for k, v in kubelet_values.items() if recorded["sysctls"][k] != v}
    assert changed == expected_changes

    t0 = time.monotonic()
    real_node.stop()
    print(f"\nreal node tear-down: {time.monotonic() - t0:.2f} s")
    try:
        assert real_node.leftovers(base) == []
        assert host_state_differences(recorded) == []
        assert not _processes_mentioning(base)
        assert not base.exists()
    finally:
        real_node.start()
    assert real_node.running


RUNNER = """
import json, sys, time
from pathlib import Path
from tests.testenv.realnode import RealNode
node = RealNode(Path(sys.argv[1]), lock_timeout=60)
node.start()
node.build_image("killed/busybox:1")
ns = node.create_namespace("killed")
m = node.pod_manifest("p", "ghcr.io/killed/busybox:1", ["sleep", "3600"], namespace=ns)
m["spec"]["volumes"] = [{"name": "m", "emptyDir": {"medium": "Memory"}}]
m["spec"]["containers"][0]["volumeMounts"] = [{"name": "m", "mountPath": "/m"}]
node.run_pod(m)
print(json.dumps({"base": str(node.base), "pids": {n: p.pid for n, p in node.processes.items()},
                  "cluster": node.cluster.pids(), "state": node.host_state}), flush=True)
time.sleep(600)
"""


def test_a_killed_runners_node_dies_with_it_and_the_next_start_cleans_up(
    real_node: RealNode, tmp_path: Path
) -> None:
    real_node.stop()  # frees the host lock for the runner's node
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        assert line, runner.stderr.read() if runner.stderr else ""
        info = json.loads(line)
        stale = Path(info["base"])
        servers = [*info["pids"].values(), *info["cluster"].values()]
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive := [p for p in servers if pid_alive(p)]:
            assert time.monotonic() < deadline, f"node processes outlived the runner: {alive}"
            time.sleep(0.1)
        # what PDEATHSIG cannot cover is still there: the shim, the container, mounts, state
        assert stale.exists()
        assert mounts_under(stale)
        assert kubepods_cgroups()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        real_node.start()  # sweeps the stale node under the lock
    assert not stale.exists()
    assert not mounts_under(stale)
    assert not _processes_mentioning(stale)
    # the sweep restored the sysctls the stale kubelet changed: the new node recorded the
    # values from before the stale node started (the new kubelet changes them again afterwards)
    assert real_node.host_state["sysctls"] == info["state"]["sysctls"]
