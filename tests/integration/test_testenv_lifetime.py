"""Test-bed processes die with the runner, and the next run sweeps what it can identify as its own.

A runner (a child Python process, as pytest under nox would be) starts a real OpenBao dev server and
a real kwok cluster, prints their pids and is then SIGKILLed: ``PR_SET_PDEATHSIG`` must take every
server with it within seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.testenv.binaries import find_bao, find_k8s_binaries
from tests.testenv.process import (
    OWNER_ENV,
    owner_marker,
    pid_alive,
    process_owner,
    sweep_leftovers,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

RUNNER = """
import json, sys, time
from pathlib import Path
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer
root = Path(sys.argv[1])
bao = BaoServer(root / "bao", binary=sys.argv[2])
bao.start()
cl = Cluster("lifetime", root / "cl", nodes=1)
cl.start()
print(json.dumps({"cluster": cl.pids(), "port": cl.api_port}), flush=True)
time.sleep(600)
"""


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def test_a_killed_runner_takes_openbao_and_the_cluster_with_it(tmp_path: Path) -> None:
    find_k8s_binaries()
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path), find_bao()],
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
        servers = _children_of(runner.pid)
        # OpenBao, etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
        assert len(servers) == 6, servers
        assert set(info["cluster"].values()) <= set(servers)
        for pid in servers:
            assert process_owner(pid) == owner_marker(runner.pid)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive := [p for p in servers if pid_alive(p)]:
            assert time.monotonic() < deadline, f"still running after the runner died: {alive}"
            time.sleep(0.1)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_sweep_kills_processes_of_a_dead_runner_only() -> None:
    def sleeper(marker: str | None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
        if marker is not None:
            env[OWNER_ENV] = marker
        return subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)

    # a runner that is gone: a real process that has exited, with its real start time
    gone = subprocess.Popen(["sleep", "30"])
    dead_marker = owner_marker(gone.pid)
    gone.kill()
    gone.wait()
    orphan = sleeper(dead_marker)
    ours = sleeper(owner_marker())
    foreign = sleeper(None)
    try:
        time.sleep(0.2)
        swept = sweep_leftovers(grace=2)
        assert orphan.pid in swept
        assert ours.pid not in swept
        assert foreign.pid not in swept
        assert orphan.wait(timeout=5) == -signal.SIGTERM
        assert ours.poll() is None
        assert foreign.poll() is None
    finally:
        for p in (orphan, ours, foreign):
            p.kill()
            p.wait()
