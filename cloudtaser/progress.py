"""Progress messages that also say how far a run is (standard library only).

The library reports progress through a ``Callable[[str], None]`` the CLI supplies. A
:class:`Count` is such a string that also carries ``done`` of ``total``: a plain consumer
prints it like any message; the CLI's reporter (``cloudtaser.cli.output.RunProgress``) turns it
into the ``[n/N]`` and ETA of its live status line, and when output is piped prints only the
``milestone`` ones (so 10,000 paths do not make 10,000 lines).

A plain callback (``print``, a logger) is only sent the milestones; a callback that declares
:func:`wants_counts` (an attribute ``counts = True``, as ``RunProgress.message`` has) is sent a
:class:`Count` for every item, to keep a live counter exact.

A :class:`Counter` is the one way a run counts its items: it applies both rules (milestones
every ``step`` items, every item only when asked) and is safe to share between worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Count", "Counter", "Progress", "wants_counts"]

#: The one progress callback type of the library: one message (maybe a :class:`Count`) per call.
Progress = Callable[[str], None]


class Count(str):
    """A progress message with ``done`` of ``total`` items."""

    done: int
    total: int
    milestone: bool

    def __new__(cls, text: str, *, done: int, total: int, milestone: bool = True) -> Count:
        self = super().__new__(cls, text)
        self.done = done
        self.total = total
        self.milestone = milestone
        return self


def wants_counts(progress: Any) -> bool:
    """True when ``progress`` asked for a :class:`Count` per item (not only milestones)."""
    return bool(getattr(progress, "counts", False))


class Counter:
    """Counts the finished items of a run and reports them through ``progress`` as a
    :class:`Count` built from ``text`` (a format string with ``{done}``, ``{total}`` and the
    fields given to :meth:`advance`).

    A milestone is reported each time ``done`` passes a multiple of ``step`` (at least
    ``min_step``, else a tenth of ``total``), the last item excepted (the run reports its own
    end); without ``milestones`` there is none. A callback that :func:`wants_counts` gets a
    :class:`Count` for every advance. Thread-safe.
    """

    def __init__(
        self,
        progress: Progress,
        total: int,
        text: str,
        *,
        min_step: int = 10,
        milestones: bool = True,
    ) -> None:
        self._progress = progress
        self._text = text
        self.total = total
        self.done = 0
        self._step = max(min_step, total // 10)
        self._milestones = milestones
        self._every = wants_counts(progress)
        self._lock = threading.Lock()

    def skip(self, count: int = 1) -> None:
        """``count`` more items are done, without a report (one the caller reports otherwise,
        e.g. a list that was refused)."""
        with self._lock:
            self.done += count

    def advance(self, count: int = 1, *, remaining: int | None = None, **fields: Any) -> None:
        """``count`` more items are done; ``remaining``: the items still to come, when the
        total is only known as the run goes (then ``total`` becomes ``done + remaining``)."""
        with self._lock:
            before = self.done
            if remaining is not None:
                self.done += count
                self.total = self.done + remaining
            else:
                self.done = min(self.total, self.done + count)
            done, total = self.done, self.total
            milestone = (
                self._milestones and done < total and done // self._step > before // self._step
            )
            if not (milestone or self._every):
                return
            self._progress(
                Count(
                    self._text.format(done=done, total=total, **fields),
                    done=done,
                    total=total,
                    milestone=milestone,
                )
            )
