"""Shared set-up of the source-command benchmarks: a private OpenBao dev server."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.testenv.binaries import find_bao
from tests.testenv.openbao import BaoServer


@contextmanager
def dev_server() -> Iterator[BaoServer]:
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        server = BaoServer(Path(tmp), binary=str(find_bao()))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def bao_loop(server: BaoServer, commands: list[list[str]], inputs: list[str | None]) -> float:
    """Run each ``bao`` command in turn, as a shell loop would; return seconds."""
    env = server.env()
    start = time.perf_counter()
    for args, stdin in zip(commands, inputs, strict=True):
        subprocess.run(
            [server.binary, *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
    return time.perf_counter() - start


def report(rows: list[tuple[str, float, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, seconds, note in rows:
        print(f"  {name.ljust(width)}  {seconds:8.3f} s  {note}")


def cpu_note() -> str:
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
