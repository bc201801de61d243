"""Rendering helpers: stdout for results, stderr for progress; colour only on a TTY.

Shared by every command (docs/cli.md, "Conventions"):

* :func:`print_json` prints a ``--output json`` document: ``msgspec.to_builtins`` of a
  :class:`cloudtaser.results.Result` (each kind's JSON Schema is generated into ``schema/``,
  checked by tests/unit/test_schemas_current.py and tests/cli/test_cli_json_schemas.py);
* :func:`table` aligns columns by their visible width (colour codes do not count);
* :class:`RunProgress` reports a long run on stderr: one live ``[n/N]`` status line with
  elapsed time and ETA on a terminal, quiet lines when piped, and always a closing tally. It
  takes the engine's :class:`cloudtaser.target.engine.core.Event` stream (``progress=rp.event``)
  or plain messages (``progress=rp.message``) from the source-side library.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = [
    "RunProgress",
    "color",
    "print_json",
    "progress",
    "table",
    "tally",
    "visible_len",
]

_CODES = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _use_color(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def color(text: str, name: str, *, stream: TextIO | None = None) -> str:
    """Wrap ``text`` in an ANSI colour when ``stream`` (stdout) is a terminal."""
    if not _use_color(stream or sys.stdout):
        return text
    return f"\x1b[{_CODES[name]}m{text}\x1b[0m"


def print_json(data: Any) -> None:
    """Machine-readable result on stdout."""
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def progress(message: str) -> None:
    """A progress or diagnostic line on stderr."""
    print(f"cloudtaser: {message}", file=sys.stderr, flush=True)


def visible_len(text: str) -> int:
    """The width of ``text`` on a terminal: ANSI colour codes take no room."""
    return len(_ANSI.sub("", text))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain left-aligned text table (aligned by visible width, colours or not)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))

    def pad(cell: str, width: int) -> str:
        return cell + " " * (width - visible_len(cell))

    lines = ["  ".join(pad(h, widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(pad(c, widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines)


def tally(counts: Mapping[str, int], order: tuple[str, ...] = ()) -> str:
    """``287 migrated, 2 failed, 1 refused`` (zero counts left out; ``order`` first)."""
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    shown = [f"{counts[k]} {k}" for k in keys if counts[k]]
    return ", ".join(shown) or "nothing done"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class RunProgress:
    """Progress of one long run on stderr (see the module docstring).

    ``live`` (default: stderr is a terminal and ``TERM`` is not ``dumb``) keeps one status line
    at the bottom, redrawn in place: ``[12/290] 1m03s elapsed, ETA 24m (11 migrated, 1
    refused)  <last message>``; a workload's messages and its outcome only update that line,
    so the result table is the one line per workload on a terminal. Otherwise the output is
    line-oriented and quiet: run-level messages and one line per finished workload, preceded by
    its warnings that the outcome does not already say. A workload's reason is never printed
    twice: a warning that its outcome repeats ("not changed: X", then "refused: X") is dropped.
    ``verbose`` prints every event as a line, intermediate steps (``Event.detail``) included.
    Thread-safe: the engine's wait workers emit too. Use it as a context manager, and call
    :meth:`close` with the tally at the end (the status line is cleared either way).
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        verbose: bool = False,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "cloudtaser: ",
    ) -> None:
        self.stream = stream or sys.stderr
        if live is None:
            live = bool(getattr(self.stream, "isatty", lambda: False)()) and (
                os.environ.get("TERM") != "dumb"
            )
        self.live = live
        self.verbose = verbose
        self.clock = clock
        self.prefix = prefix
        self.started = clock()
        self.total: int | None = None
        self.done = 0
        self.outcomes: dict[str, int] = {}
        self._last = ""
        self._shown = False
        #: A workload's warnings, held until its outcome says whether they repeat it.
        self._held: dict[str, list[str]] = {}
        # re-entrant: a signal handler on the main thread may report while it holds it
        self._lock = threading.RLock()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._clear()

    # -- inputs --

    def message(self, text: str) -> None:
        """A progress message (the source-side library's ``progress`` callback). A
        :class:`cloudtaser.progress.Count` moves the ``[n/N]`` counter; piped, only its
        milestones are printed."""
        with self._lock:
            done, total = getattr(text, "done", None), getattr(text, "total", None)
            if isinstance(done, int) and isinstance(total, int):
                self.done, self.total = done, total
                if self.live:
                    self._last = str(text)
                    self._redraw()
                elif getattr(text, "milestone", True) or self.verbose:
                    self._print(str(text))
                return
            self._print(text)

    message.counts = True  # type: ignore[attr-defined]  # cloudtaser.progress.wants_counts

    def event(self, event: Any) -> None:
        """An engine :class:`~cloudtaser.target.engine.core.Event`."""
        with self._lock:
            if event.total is not None:
                self.total = event.total
            if event.outcome is not None:
                self._outcome(event)
                return
            if self.verbose or event.ref is None:
                self._print(str(event), warning=event.warning)
                return
            if event.warning and not event.detail:
                self._held.setdefault(str(event.ref), []).append(event.message)
            if self.live:
                self._last = str(event)
                self._redraw()
            elif not event.detail and not event.warning:
                self._print(str(event))

    def _outcome(self, event: Any) -> None:
        self.done += 1
        self.outcomes[event.outcome] = self.outcomes.get(event.outcome, 0) + 1
        held = self._held.pop(str(event.ref), [])
        if self.live and not self.verbose:
            self._last = str(event)
            self._redraw()
            return
        for message in held:
            if message.removeprefix("not changed: ") not in event.message:
                self._print(f"{event.ref}: {message}", warning=True)
        self._print(f"{self._counter()}{event}", warning=event.warning)

    def close(self, summary: str) -> None:
        """Clear the status line and print the closing tally (always, piped or not); piped,
        the warnings of workloads that got no outcome (quit, interrupted) first."""
        with self._lock:
            self._clear()
            if not self.live:
                for ref, messages in self._held.items():
                    for message in messages:
                        self._print(f"{ref}: {message}", warning=True)
            self._held.clear()
            elapsed = _duration(self.clock() - self.started)
            self.stream.write(f"{self.prefix}{summary} (in {elapsed})\n")
            self.stream.flush()

    # -- rendering (called with the lock held) --

    def _counter(self) -> str:
        if self.total:
            width = len(str(self.total))
            return f"[{self.done:>{width}}/{self.total}] "
        return ""

    def status_line(self) -> str:
        """The live line: ``[n/N] elapsed, ETA  last message``."""
        elapsed = self.clock() - self.started
        parts = []
        if self.total:
            parts.append(f"[{self.done}/{self.total}]")
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.total and self.done:
            remaining = elapsed / self.done * max(0, self.total - self.done)
            parts.append(f"ETA {_duration(remaining)}")
        text = " ".join(parts[:1]) + (" " + ", ".join(parts[1:]) if len(parts) > 1 else "")
        if self.outcomes:
            text += f" ({tally(self.outcomes)})"
        if self._last:
            text += f"  {self._last}"
        return text

    def _print(self, text: str, *, warning: bool = False) -> None:
        self._clear()
        shown = ("warning: " + text) if warning and not text.startswith("warning") else text
        if warning and self.live:
            shown = f"\x1b[33m{shown}\x1b[0m" if _use_color(self.stream) else shown
        self.stream.write(f"{self.prefix}{shown}\n")
        if not warning:
            self._last = ""
        self._redraw()
        self.stream.flush()

    def _clear(self) -> None:
        if self.live and self._shown:
            self.stream.write("\r\x1b[2K")
            self._shown = False

    def _redraw(self) -> None:
        if not self.live:
            return
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 100
        line = self.status_line()[: max(20, columns - 1)]
        self.stream.write(f"\r\x1b[2K{line}")
        self.stream.flush()
        self._shown = True
