"""Rendering helpers: stdout for results, stderr for progress; colour only on a TTY."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

__all__ = ["color", "print_json", "progress", "table"]

_CODES = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


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


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines)
