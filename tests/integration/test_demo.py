"""The README's main job (`nox -s demo`) works end to end and never shows a secret value."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Namespace

from tests.integration.runtime_binary import runtime_binary
from tests.testenv.realnode import RealNode
from tools import demo

ROOT = Path(__file__).parents[2]

pytestmark = [pytest.mark.integration]


def test_demo_runs_the_whole_workflow_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.demo",
            "--mode",
            "kwok",
            "--workdir",
            str(workdir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "NO_COLOR": "1",
            "CLOUDTASER_RUNTIME_BIN": runtime_binary(),
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "the app sees: {'DB_USER': '" in result.stdout
    assert "CLOUDTASER_* in its environment: []" in result.stdout
    assert "stopped the OpenBao dev server and the local cluster" in result.stdout
    assert "FALLING BACK to the kwok cluster" in result.stdout
    assert "not proven injected" in output  # finalize refuses: kwok pods are not injected
    assert (workdir / "audit.html").read_text().startswith("<!DOCTYPE html>")
    values = [v for secrets in demo.SECRETS.values() for d in secrets.values() for v in d.values()]
    leaked = [v for v in values if v in output]
    assert not leaked, f"{len(leaked)} demo secret value(s) appear in the demo's output"
    plan = yaml.safe_load((workdir / "plan.yaml").read_text())
    statuses = [w["status"] for t in plan["tenants"] for w in t["workloads"]]
    assert statuses
    assert set(statuses) <= {"migrated", "skipped"}
    assert "migrated" in statuses


def test_demo_keep_leaves_servers_reachable_until_interrupted(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.demo",
            "--mode",
            "kwok",
            "--keep",
            "--workdir",
            str(workdir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "NO_COLOR": "1",
            "CLOUDTASER_RUNTIME_BIN": runtime_binary(),
        },
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("  plan: "):
                break
        text = "".join(lines)
        assert "servers kept running" in text, text[-4000:]
        bao_addr = re.search(r"export BAO_ADDR=(\S+)", text)
        assert bao_addr is not None
        assert requests.get(f"{bao_addr[1]}/v1/sys/health", timeout=5).status_code == 200
        client = Client(KubeConfig.from_file(workdir / "cluster" / "kubeconfig"))
        names = {ns.metadata.name for ns in client.list(Namespace)}
        assert {"payments", "shop"} <= names
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest[-2000:]
    assert "stopped the OpenBao dev server and the local cluster" in rest
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{bao_addr[1]}/v1/sys/health", timeout=5)


def test_demo_on_the_real_node_deletes_the_migrated_secrets(
    real_node: RealNode, tmp_path: Path
) -> None:
    """`nox -s demo` where the real node can run (root, prerequisites): the pods restart with
    the wrapper, the app prints the OpenBao canary, finalize --delete-secrets deletes the
    migrated Secrets (tls stays: it is mounted as files) and the audit report is written.

    The demo starts its own real node, and there is one per host (a lock): the session's node
    is stopped for the demo and started again afterwards."""
    real_node.stop()
    try:
        _real_demo(tmp_path)
    finally:
        real_node.start()


def _real_demo(tmp_path: Path) -> None:
    import os

    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.demo",
            "--mode",
            "realnode",
            "--workdir",
            str(workdir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin:/usr/local/go/bin",
            "NO_COLOR": "1",
            "HOME": os.environ.get("HOME", "/root"),
            "CLOUDTASER_RUNTIME_BIN": runtime_binary(),
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "the app got DB_PASSWORD=from-openbao-postgres-password" in result.stdout
    assert "the app got DB_PASSWORD=from-openbao-redis-password" in result.stdout
    blocks = result.stdout.split("$ ")

    def listings(namespace: str) -> list[str]:
        return [
            b.split("\n", 1)[1]
            for b in blocks
            if f"get secrets -n {namespace}" in b.split("\n", 1)[0]
        ]

    payments, shop = listings("payments"), listings("shop")
    assert "postgres" in payments[0]  # before finalize
    assert "postgres" not in payments[-1]  # deleted: nothing uses it any more
    assert "redis" in shop[0]
    assert "redis" not in shop[-1]
    assert "tls" in shop[-1]  # still mounted as files: kept
    assert (workdir / "audit.html").is_file()
    values = [v for secrets in demo.SECRETS.values() for d in secrets.values() for v in d.values()]
    assert not [v for v in values if v in output]
