"""Progress messages that also say how far a run is (standard library only).

The library reports progress through a ``Callable[[str], None]`` the CLI supplies. A
:class:`Count` is such a string that also carries ``done`` of ``total``: a plain consumer
prints it like any message; the CLI's reporter (``cloudtaser.cli.output.RunProgress``) turns it
into the ``[n/N]`` and ETA of its live status line, and when output is piped prints only the
``milestone`` ones (so 10,000 paths do not make 10,000 lines).

A plain callback (``print``, a logger) is only sent the milestones; a callback that declares
:func:`wants_counts` (an attribute ``counts = True``, as ``RunProgress.message`` has) is sent a
:class:`Count` for every item, to keep a live counter exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Count", "Progress", "wants_counts"]

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
