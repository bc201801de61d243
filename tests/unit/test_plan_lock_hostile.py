"""Issue 18, finding 11: the plan lock in a shared directory (FIFO, symlink, junk content)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudtaser.errors import LockError
from cloudtaser.plan.store import PlanLock, lock_path

REPO = Path(__file__).resolve().parents[2]
CANARY = "CANARY-lock-content-0123456789"


def test_a_fifo_at_the_lock_path_is_refused_at_once(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    os.mkfifo(lock_path(plan))
    started = time.monotonic()
    with pytest.raises(LockError, match="not a regular file"):
        PlanLock(plan).acquire()
    assert time.monotonic() - started < 2


def test_a_fifo_lock_does_not_block_protect_and_sigterm_is_not_needed(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("apiVersion: cloudtaser.io/v1\nkind: MigrationPlan\n")
    os.mkfifo(lock_path(plan))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "cloudtaser", "target", "protect", "--plan", str(plan),
         "--kubeconfig", str(kubeconfig), "--vault-address", "https://v:8200", "--yes"],
        capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert run.returncode == 4, run.stderr
    assert "not a regular file" in run.stderr


def test_a_symlinked_lock_is_refused_without_echoing_its_target(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    target = tmp_path / "elsewhere.json"
    target.write_text(f'{{"pid": 1, "host": "{CANARY}", "actor": "{CANARY}"}}')
    lock_path(plan).symlink_to(target)
    with pytest.raises(LockError) as caught:
        PlanLock(plan).acquire()
    assert CANARY not in str(caught.value)
    assert "symbolic link" in str(caught.value)
    assert target.read_text().startswith("{")  # never written through the link


def test_lock_holder_fields_are_escaped(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    lock_path(plan).write_text('{"pid": 1, "host": "other-host\\u001b]0;x\\u0007", "actor": 5}')
    with pytest.raises(LockError) as caught:
        PlanLock(plan).acquire()
    assert "\x1b" not in str(caught.value)
    assert "\\x1b]0;x" in str(caught.value)
