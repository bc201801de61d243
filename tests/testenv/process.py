"""One server process: own session, log file, readiness deadline, stop in ``finally``.

Every process started here dies with the test runner: it gets ``PR_SET_PDEATHSIG`` (SIGKILL when
the thread that started it exits; fixtures run on the main thread), and it carries the environment
marker ``CLOUDTASER_TESTBED_OWNER=<runner pid>:<runner start time>``, which its own children
(e.g. containerd's shims, which outlive containerd by design) inherit. ``sweep_leftovers()`` kills
every marked process whose runner is gone, so the next run cleans up after a killed one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

_HANDED_OUT: set[int] = set()

#: Environment variable that marks every test-bed process with the runner that started it.
OWNER_ENV = "CLOUDTASER_TESTBED_OWNER"
_PR_SET_PDEATHSIG = 1


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_marker(pid: int | None = None) -> str:
    """``<pid>:<start time>`` of this runner (or of ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def _owner_alive(marker: str) -> bool:
    pid_s, _, start = marker.partition(":")
    if not pid_s.isdigit():
        return False
    return _start_time(int(pid_s)) == start and pid_alive(int(pid_s))


def marked_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) plus this runner's owner marker."""
    out = dict(os.environ if env is None else env)
    out[OWNER_ENV] = owner_marker()
    return out


def process_owner(pid: int) -> str | None:
    """The owner marker in ``pid``'s environment, or ``None`` (not ours, or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = OWNER_ENV.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("ascii", "replace")
    return None


def sweep_leftovers(*, grace: float = 3.0) -> list[int]:
    """Kill every test-bed process whose runner is gone (SIGTERM, then SIGKILL after ``grace``).

    Returns the pids that were signalled. Processes of a live runner (a parallel session in
    another worktree) are left alone.
    """
    victims = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        marker = process_owner(int(entry.name))
        if marker is not None and not _owner_alive(marker) and pid_alive(int(entry.name)):
            victims.append(int(entry.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in victims):
            time.sleep(0.05)
    return victims


def _libc_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux); ``None`` elsewhere, where children just lack the death signal."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _libc_prctl()


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGKILL the child when its parent (thread) dies; exit if it already did."""

    def preexec() -> None:
        if _PRCTL is None:
            return
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class TestbedError(RuntimeError):
    """A test-bed process did not start or stop as expected (message carries log tails)."""

    __test__ = False  # not a pytest test class


def free_ports(count: int = 1) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1 (never the same twice per run)."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
                _HANDED_OUT.add(port)
    finally:
        for s in socks:
            s.close()
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def tail(path: Path, lines: int = 30, redact: Iterable[str] = ()) -> str:
    """Last ``lines`` lines of a log file, with every string in ``redact`` masked."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    out = "\n".join(text.splitlines()[-lines:])
    for secret in redact:
        if secret:
            out = out.replace(secret, "<redacted>")
    return out


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    diagnostics: Callable[[], str] = lambda: "",
    abort: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``check`` until true; raise ``TestbedError`` with ``diagnostics()`` on timeout.

    ``abort`` returns a reason to give up early (e.g. "process exited with 1").
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        reason = abort()
        if reason:
            raise TestbedError(f"{what}: {reason}\n{diagnostics()}")
        try:
            if check():
                return
        except Exception as exc:  # the server is not up yet; keep polling
            last_exc = exc
        if time.monotonic() >= deadline:
            hint = f" (last error: {type(last_exc).__name__}: {last_exc})" if last_exc else ""
            raise TestbedError(f"{what}: not ready after {timeout:.0f}s{hint}\n{diagnostics()}")
        time.sleep(interval)


class ManagedProcess:
    """A child process in its own session whose stdout+stderr go to ``log_path``.

    With ``redact`` the output is copied line by line through a thread that masks those strings,
    so a token the server prints (e.g. OpenBao's dev banner) never reaches the log file.
    ``stop()`` sends SIGTERM to the whole process group, waits, then SIGKILLs the group, so no
    grandchild survives. The log file is opened in append mode: a restart keeps the history.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.redact = tuple(redact)
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        if self.alive():
            raise TestbedError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start {self.name}: {self.argv[0]} =====\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.redact else self._log,
            stderr=subprocess.STDOUT,
            env=marked_env(self.env),
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - tiny, async-signal-safe
        )
        if self.redact:
            self._pump = threading.Thread(
                target=_pump, args=(self.popen, self._log, self.redact), daemon=True
            )
            self._pump.start()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_reason(self) -> str | None:
        """``None`` while running; otherwise why it is not (for ``wait_until(abort=...)``)."""
        if self.popen is None:
            return f"{self.name} was never started"
        code = self.popen.poll()
        return None if code is None else f"{self.name} exited with code {code}"

    def tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines, self.redact)

    def report(self, lines: int = 30) -> str:
        return f"--- {self.name} log ({self.log_path}), last {lines} lines ---\n{self.tail(lines)}"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process group; SIGKILL it if it does not exit within ``timeout``."""
        proc = self.popen
        try:
            if proc is not None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=timeout)
                # The leader is gone; make sure nothing else of its group is left behind.
                _signal_group(proc, signal.SIGKILL)
        finally:
            if self._pump is not None:
                self._pump.join(timeout=5)
                self._pump = None
            if self._log is not None:
                self._log.close()
                self._log = None


def _pump(proc: subprocess.Popen[bytes], log: IO[bytes], redact: tuple[str, ...]) -> None:
    assert proc.stdout is not None
    masks = [s.encode() for s in redact if s]
    with contextlib.suppress(ValueError, OSError):  # log closed under us at stop()
        for line in proc.stdout:
            for m in masks:
                line = line.replace(m, b"<redacted>")  # noqa: PLW2901
            log.write(line)
            log.flush()
    proc.stdout.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session=True makes the child the leader: its pgid is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # state is the field after the parenthesised command name
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
