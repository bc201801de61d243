"""Plan storage: the plan lock, and PlanStore (lock + load + record + atomic save)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cloudtaser import plan as planlib
from cloudtaser.errors import LockError
from cloudtaser.plan.store import PlanLock, PlanStore, lock_path

PLAN = """\
apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata:
  name: prod
tenants:
- name: a
  namespace: a
  workloads:
"""


def _plan_file(tmp_path: Path, workloads: int = 40) -> Path:
    lines = [PLAN]
    for index in range(workloads):
        lines.append(
            f"  - kind: Deployment\n    name: w{index}\n    secrets:\n"
            f"    - source: db\n      vaultPath: secret/data/a/db{index}\n"
            f"      fields:\n        pw: PW_{index}\n"
        )
    path = tmp_path / "plan.yaml"
    path.write_text("".join(lines))
    return path


def test_store_records_every_change_from_many_threads_and_saves_atomically(
    tmp_path: Path,
) -> None:
    path = _plan_file(tmp_path)
    with PlanStore(path, actor="alice@host") as store:
        assert lock_path(path).exists()
        plan = store.load()
        workloads = [w for _t, w in plan.iter_workloads()]
        threads = [
            threading.Thread(
                target=store.record,
                args=(w, planlib.WorkloadStatus.MIGRATED),
                kwargs={"reason": "done\nwith a newline", "error": None},
            )
            for w in workloads
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not lock_path(path).exists()
    again = planlib.load(path)
    statuses = {w.name: w.effective_status for _t, w in again.iter_workloads()}
    assert set(statuses.values()) == {planlib.WorkloadStatus.MIGRATED}
    history = [w.history[-1] for _t, w in again.iter_workloads()]
    assert {h.by for h in history} == {"alice@host"}
    assert {h.reason for h in history} == {"done with a newline"}
    assert [p.name for p in tmp_path.iterdir()] == ["plan.yaml"]  # no temp file left


def test_a_read_only_store_never_writes_or_locks(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, workloads=1)
    before = path.read_bytes()
    with PlanStore(path, actor="a", lock=False, read_only=True) as store:
        assert not lock_path(path).exists()
        (_t, workload), *_ = store.load().iter_workloads()
        store.record(workload, planlib.WorkloadStatus.SKIPPED, reason="x")
        store.save()
    assert path.read_bytes() == before


def test_a_second_store_on_the_same_plan_is_refused(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, workloads=1)
    with PlanStore(path, actor="a"), pytest.raises(LockError):
        PlanStore(path, actor="b").__enter__()


def test_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    with PlanLock(plan, actor="alice@host"):
        holder = json.loads(lock_path(plan).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(LockError, match="another cloudtaser run holds the plan lock"):
            PlanLock(plan).acquire()
    assert not lock_path(plan).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock_path(plan).write_text(
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "x"})
    )
    with PlanLock(plan):
        assert json.loads(lock_path(plan).read_text())["pid"] == os.getpid()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_from_another_host_is_never_broken(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    lock_path(plan).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(LockError, match=r"elsewhere\.example"):
        PlanLock(plan).acquire()
    assert lock_path(plan).exists()


def test_record_returns_only_when_its_change_is_on_disk_and_saves_are_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: every record() is durable when it returns, even when another thread's
    save carried it, and parallel workers share saves instead of queueing one each."""
    import cloudtaser.fileio as fileio

    path = _plan_file(tmp_path, workloads=32)
    writes: list[int] = []
    real_write = fileio.atomic_write

    def slow_write(target: str | os.PathLike[str], data: bytes, **kw: object) -> None:
        writes.append(1)
        threading.Event().wait(0.02)  # a slow disk: fsync takes time
        real_write(target, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(fileio, "atomic_write", slow_write)
    problems: list[str] = []
    with PlanStore(path, actor="alice@host") as store:
        workloads = [w for _t, w in store.load().iter_workloads()]
        start = threading.Barrier(len(workloads))

        def work(w: planlib.Workload) -> None:
            start.wait()
            store.record(w, planlib.WorkloadStatus.MIGRATED, reason="done")
            on_disk = {x.name: x.status for _t, x in planlib.load(path).iter_workloads()}
            if on_disk[w.name] is not planlib.WorkloadStatus.MIGRATED:
                problems.append(f"{w.name} returned before it was saved")

        threads = [threading.Thread(target=work, args=(w,)) for w in workloads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert problems == []
    assert 1 <= len(writes) < len(workloads)  # 32 records shared fewer saves
