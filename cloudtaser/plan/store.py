"""Plan storage for every command that writes a plan: lock + load + record + atomic save.

:class:`PlanStore` is the one way a command changes a plan file: it takes the plan's lock
(:class:`PlanLock`, ``<plan>.lock``), loads the plan, records status changes (history entry
with time and actor) and saves after each one atomically (:func:`cloudtaser.plan.yamlio.save`),
with the threads of a parallel run taking turns. ``protect``, ``unprotect`` and ``discover -o``
use it; ``apply-plan`` and ``verify-plan`` never write the plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtaser import fileio
from cloudtaser.errors import ConfigError, LockError, PlanError
from cloudtaser.plan.model import WorkloadStatus
from cloudtaser.plan.yamlio import dump, load
from cloudtaser.sanitize import printable

if TYPE_CHECKING:
    from types import TracebackType

    from cloudtaser.plan.model import MigrationPlan, Workload

__all__ = [
    "PlanLock",
    "PlanStore",
    "check_replace",
    "existing_plan",
    "lock_path",
    "one_line",
    "recorded_progress",
]


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` on one printable line, at most ``limit`` characters: a valid plan
    ``OneLine`` value (reasons, errors, metadata) and a safe message fragment."""
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def lock_path(plan_path: str | os.PathLike[str]) -> Path:
    """``<plan>.lock`` next to the plan."""
    return Path(f"{os.fspath(plan_path)}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PlanLock:
    """An exclusive lock on a plan: ``<plan>.lock`` created with ``O_CREAT | O_EXCL``.

    The file holds JSON ``{pid, host, started, actor}``. A lock left behind by a dead process
    (same host, pid no longer alive — e.g. after ``kill -9``) is stale and taken over; a lock
    held by a live process, or by another host, makes :meth:`acquire` raise
    :class:`LockError` naming who holds it and how to clear it.
    """

    def __init__(self, plan_path: str | os.PathLike[str], *, actor: str = "") -> None:
        self.path = lock_path(plan_path)
        self.actor = actor
        self._held = False

    def _content(self) -> bytes:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "actor": self.actor,
            }
        ).encode()

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise LockError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        try:
            os.write(fd, self._content())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The holder recorded in the lock at ``path`` (None: no lock).

        The lock may sit in a shared directory: it is opened without following a symlink and
        without blocking (a FIFO would hang the run), and only a regular file is accepted;
        anything else is a :class:`LockError` that never echoes what the path points to.
        """
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._not_a_lock(path, "a symbolic link or unreadable") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._not_a_lock(path, "not a regular file")
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            data = json.loads(raw.decode("utf-8") or "null")
        except (ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _not_a_lock(path: Path, what: str) -> LockError:
        return LockError(
            f"the plan lock {path} exists but is {what}; cloudtaser only creates regular "
            "files there. Remove it (and check who put it there) and run again"
        )

    def _stale(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        return (
            holder.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and pid > 0
            and not _pid_alive(pid)
        )

    def acquire(self) -> None:
        for _attempt in range(5):
            if self._try_create():
                self._held = True
                return
            holder = self._read(self.path)
            if holder is None:  # released meanwhile
                continue
            if not self._stale(holder):
                raise self._busy(holder)
            # Break the stale lock: move it aside under a unique name first, so two runs
            # breaking the same stale lock cannot remove each other's fresh lock.
            aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
            try:
                self.path.rename(aside)
            except FileNotFoundError:
                continue
            moved = self._read(aside) or {}
            if moved != holder and not self._stale(moved):
                # we moved a fresh lock of another run: put it back (unless a third took over)
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
            with contextlib.suppress(OSError):
                aside.unlink()
        holder = self._read(self.path) or {}
        raise self._busy(holder)

    def _busy(self, holder: Mapping[str, Any]) -> LockError:
        def field(key: str) -> str:
            value = holder.get(key, "?")
            return printable(str(value) if isinstance(value, str | int) else "?", limit=80)

        who = f"pid {field('pid')} on {field('host')}, started {field('started')}" + (
            f" by {field('actor')}" if holder.get("actor") else ""
        )
        return LockError(
            f"another cloudtaser run holds the plan lock {self.path} ({one_line(who, 300)}); "
            "wait for it to finish. If no such run is alive (e.g. it was killed on another "
            "machine), delete the lock file and run again"
        )

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> PlanLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PlanStore:
    """Lock + load + record + atomic save of one plan file.

    ``with PlanStore(path, actor=...) as store``: takes the lock (``lock=False``: none, for a
    dry run that never writes), :meth:`load` reads and validates the plan, :meth:`record`
    changes one workload's status and saves at once (thread-safe: one save at a time, each a
    single rename, so an interrupt never leaves half a plan). ``read_only=True`` turns
    :meth:`record` and :meth:`save` into no-ops (``--dry-run``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        actor: str,
        lock: bool = True,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.actor = actor
        self.read_only = read_only
        self._lock = PlanLock(self.path, actor=actor) if lock else None
        # Group commit: ``_state`` guards the plan's content and the change counters, held
        # only while a status is set or the plan is encoded; ``_write`` lets one thread at a
        # time write the file. A record returns only once a save that includes its change
        # has been renamed into place, but one save can carry the changes of every worker
        # that finished meanwhile (so 32 parallel workers do not queue for 32 saves).
        self._state = threading.Lock()
        self._write = threading.Lock()
        self._changes = 0
        self._saved = 0
        self._plan: MigrationPlan | None = None

    def __enter__(self) -> PlanStore:
        if self._lock is not None:
            self._lock.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lock is not None:
            self._lock.release()

    @property
    def plan(self) -> MigrationPlan:
        """The loaded plan (:meth:`load` first)."""
        if self._plan is None:
            raise RuntimeError("PlanStore.load() was not called")
        return self._plan

    def load(self) -> MigrationPlan:
        """Read and validate the plan file."""
        self._plan = load(self.path)
        return self._plan

    def load_existing(self) -> MigrationPlan | None:
        """The plan at the path, or ``None`` when there is no file yet."""
        if not self.path.exists():
            return None
        return self.load()

    def record(
        self,
        workload: Workload,
        status: WorkloadStatus,
        *,
        reason: str,
        error: str | None = None,
        update: Callable[[Workload], None] | None = None,
    ) -> None:
        """Set ``workload``'s status (history entry with time and this store's actor) and
        save the plan atomically. Never interrupted halfway: the save is a single rename.
        ``update`` (when given) changes more of the workload under the same lock and save."""
        if self.read_only:
            return
        with self._state:
            workload.set_status(status, by=self.actor, reason=one_line(reason))
            workload.last_error = one_line(error) if error else None
            if update is not None:
                update(workload)
            self._changes += 1
            mine = self._changes
        self._commit(mine)

    def update(self, workload: Workload, change: Callable[[Workload], None]) -> None:
        """Change ``workload`` (no status change, no history entry) and save atomically."""
        if self.read_only:
            return
        with self._state:
            change(workload)
            self._changes += 1
            mine = self._changes
        self._commit(mine)

    def save(self, plan: MigrationPlan | None = None) -> None:
        """Save ``plan`` (default: the loaded one) atomically."""
        if self.read_only:
            return
        with self._state:
            if plan is not None:
                self._plan = plan
            self._changes += 1
            mine = self._changes
        self._commit(mine)

    def _commit(self, change: int) -> None:
        """Return once change number ``change`` (and all before it) is on disk."""
        with self._write:
            if self._saved >= change:
                return  # another thread's save, made after our change, carried it
            with self._state:
                upto = self._changes
                data = dump(self.plan)
            fileio.atomic_write(self.path, data)  # looked up per call: tests slow it down
            self._saved = upto


# --- replacing a plan (discover -o) ----------------------------------------------------------


def recorded_progress(old: MigrationPlan, new: MigrationPlan) -> list[str]:
    """Decisions recorded in ``old`` that replacing it with ``new`` would lose.

    A workload counts as progress when it is ``migrated``, has a status history, or is
    ``skipped`` where the new plan does not skip it for the same reason (a reviewer's or
    protect's decision rather than discovery's own).
    """
    fresh = {(t.namespace, str(w.kind), w.name): w for t, w in new.iter_workloads()}
    lost: list[str] = []
    for tenant, wl in old.iter_workloads():
        ident = (tenant.namespace, str(wl.kind), wl.name)
        status = wl.effective_status
        if status is WorkloadStatus.PENDING and not wl.history:
            continue
        again = fresh.get(ident)
        if (
            status is WorkloadStatus.SKIPPED
            and not wl.history
            and again is not None
            and again.effective_status is WorkloadStatus.SKIPPED
            and again.reason == wl.reason
        ):
            continue
        lost.append(f"{wl.kind} {tenant.namespace}/{wl.name} is {status}")
    return lost


def existing_plan(path: str | os.PathLike[str], *, force: bool) -> MigrationPlan | None:
    """The plan at ``path`` that a new one would replace (``None``: no file, or ``force``).

    Checked before a command does its work: a directory, a missing parent directory or a
    file that is not a valid plan (never overwritten without ``force``) is a ConfigError.
    """
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--output-plan {path} is a directory")
    if not target.parent.is_dir():
        raise ConfigError(f"--output-plan {path}: directory {target.parent} does not exist")
    if not target.exists() or force:
        return None
    try:
        return load(target)
    except PlanError:
        raise ConfigError(
            f"{path} exists and is not a valid plan; refusing to overwrite it (use --force, "
            "or choose another file)"
        ) from None


def check_replace(
    path: str | os.PathLike[str], old: MigrationPlan | None, new: MigrationPlan
) -> None:
    """Never lose recorded progress: refuse (ConfigError) when replacing ``old`` with ``new``
    would drop a decision (:func:`recorded_progress`)."""
    if old is None:
        return
    lost = recorded_progress(old, new)
    if lost:
        shown = "; ".join(lost[:5]) + (f"; and {len(lost) - 5} more" if len(lost) > 5 else "")
        raise ConfigError(
            f"{os.fspath(path)} records progress that a new plan would lose ({shown}); write "
            "to another file, or pass --force to replace it"
        )
