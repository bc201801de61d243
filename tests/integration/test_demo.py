"""The README's main job (`nox -s demo`) works end to end and never shows a secret value."""

from __future__ import annotations

import re
import shutil
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
from tests.testenv.realnode import PACKAGES_SCRIPT, RealNode, missing_packages
from tools import demo

ROOT = Path(__file__).parents[2]

pytestmark = [pytest.mark.integration]

#: The gated path a newcomer should copy, as the demo prints it (docs/approval.md).
GATED_COMMANDS = (
    "$ ssh-keygen -q -t ed25519 -N '' -C security@example.com -f security.key",
    "$ cloudtaser plan approve plan.yaml --key security.key --identity security@example.com",
    "$ cloudtaser plan verify-approvals plan.yaml --allowed-signers allowed_signers",
    "apply-plan plan.yaml --require-approval --allowed-signers allowed_signers --token-file",
    "cloudtaser source verify-plan plan.yaml --token-file vault-token --attest verified.json"
    " --key vault-ops.key --identity vault-ops@example.com",
    " --yes --require-approval --allowed-signers allowed_signers --require-verified verified.json",
    "--require-approval --allowed-signers allowed_signers --require-verified verified.json"
    " --delete-secrets",
)


def _commands(stdout: str, verb: str) -> list[str]:
    """The printed command lines (``$ [VAR=value ...] cloudtaser VERB ...``) of ``verb``."""
    return [
        line
        for line in stdout.splitlines()
        if line.startswith("$ ") and f" cloudtaser {verb} " in f" {line[2:]}"
    ]


def assert_gated_path(stdout: str) -> None:
    """Every gated command is printed, and the gate let each step through."""
    missing = [c for c in GATED_COMMANDS if c not in stdout]
    assert not missing, missing
    (protect,) = _commands(stdout, "target protect")
    assert "--require-approval" in protect
    assert "--require-verified verified.json" in protect
    (finalize,) = _commands(stdout, "target finalize")
    assert "--require-approval" in finalize
    assert "--delete-secrets" in finalize
    assert "not approved" not in stdout


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
    assert_gated_path(result.stdout)
    # the fallback says what it does not show and how to get it, before the first step and
    # after everything stopped (the last thing the run prints)
    start = result.stdout.index("FALLING BACK to the kwok cluster")
    assert start < result.stdout.index("== 0. start")
    end = result.stdout.index(
        "the demo ran on FAKE NODES (kwok), so these steps were SKIPPED (or only"
    )
    assert end > result.stdout.index("stopped the OpenBao dev server and the local cluster")
    for banner in (result.stdout[start:], result.stdout[end:]):
        head = banner.split("!" * 100, 1)[0]
        missing = [item for item in demo.REAL_ONLY if item not in head]
        assert not missing, missing
        assert "!! why: --mode kwok" in head
        assert "!! the real thing: `nox -s demo` (without --mode kwok), as root" in head
    assert "every step ran" not in result.stdout
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
    migrated Secrets, the files-consumed tls included (zero Secrets left in the sample
    namespaces), the app reads its certificate file from OpenBao, and the audit report is
    written.

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
    assert "the app read /etc/files/tls.crt: from-openbao-tls-tls.crt" in result.stdout
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
    assert "tls" in shop[0]  # mounted as files, so the check below can fail
    assert "tls" not in shop[-1]  # served from OpenBao as files: deleted too
    assert "Opaque" in shop[0]
    for listing in (payments[-1], shop[-1]):
        assert "Opaque" not in listing  # zero Kubernetes Secrets left
    assert (workdir / "audit.html").is_file()
    assert_gated_path(result.stdout)
    assert "demo finished on a real node: every step ran" in result.stdout
    assert "FAKE NODES" not in result.stdout
    assert "FALLING BACK" not in result.stdout
    values = [v for secrets in demo.SECRETS.values() for d in secrets.values() for v in d.values()]
    assert not [v for v in values if v in output]


def test_the_fallback_names_the_command_that_shows_the_real_node() -> None:
    """Not root: the banner gives the exact command (as root the demo installs the packages)."""
    why = "this machine lacks root (the kubelet and runc need it)"
    assert demo.real_thing(why).startswith("on a Debian-like machine")
    assert '`sudo "$(command -v nox)" -s demo`' in demo.real_thing(why)


def _bin_without_ssh(tmp_path: Path) -> Path:
    """A PATH directory with bash, dpkg-query and runc (when present) but no ssh-keygen."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dpkg-query", "runc"):
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if found:
            (bin_dir / tool).symlink_to(found)
    return bin_dir


def test_the_package_list_names_what_is_missing(tmp_path: Path) -> None:
    """node-packages.sh (the list .ci/run and the demo install) names openssh-client when
    ssh-keygen is not on PATH, and nothing more than it names here."""
    present = missing_packages()
    bin_dir = _bin_without_ssh(tmp_path)
    out = subprocess.run(
        [str(bin_dir / "bash"), str(PACKAGES_SCRIPT)],
        capture_output=True, text=True, check=True, env={"PATH": str(bin_dir)},
    ).stdout.split()  # fmt: skip
    assert "openssh-client" in out
    assert set(out) - {"openssh-client"} == set(present) - {"openssh-client"}


def test_the_demo_installs_the_listed_packages_saying_so_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As root with apt-get, the demo installs what node-packages.sh lists (here: a stand-in
    apt-get that records its arguments), after one line naming the command."""
    bin_dir = _bin_without_ssh(tmp_path)
    calls = tmp_path / "calls"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert demo.install_packages(tmp_path) is None
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("installing the real node's Debian packages (root, apt-get")
    assert "apt-get install -y -q" in first
    assert "openssh-client" in first
    lines = calls.read_text().splitlines()
    assert lines[0] == "update -q"
    assert lines[1].startswith("install -y -q ")
    assert "openssh-client" in lines[1].split()
