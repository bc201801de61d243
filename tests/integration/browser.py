"""Render an HTML file in Debian's real headless ``chromium`` and read what it drew.

``render(path)`` returns the DOM chromium serialised (``--dump-dom``) and its screenshot as
RGB rows (decoded here with the standard library: zlib + the five PNG filters). What a check
on the screenshot proves, honestly: that chromium rendered the page at the expected size, not
blank, and drew exactly one solid tile of the expected colour per summary figure (the tiles
are counted as connected regions of that colour). It does not read the digits (no OCR): the
digits are checked in the DOM chromium produced, which for this script-free page is the
parsed document.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from tests.testenv.binaries import missing

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1280, 1000)


def _chromium() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if not found:
        missing("Debian's chromium is needed for the browser test of the audit HTML")
    return found


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={tmp / 'profile'}",
            *args,
        ],
        capture_output=True,
        timeout=120,
        check=False,
        env=env,
    )


def render(
    page: Path, tmp: Path, window: tuple[int, int] = WINDOW
) -> tuple[str, int, int, list[list[tuple[int, int, int]]]]:
    """(DOM, width, height, RGB rows) of ``page`` rendered in a ``window`` sized window."""
    url = page.resolve().as_uri()
    dom = _run(["--dump-dom", url], tmp)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    shot = tmp / "screenshot.png"
    result = _run([f"--screenshot={shot}", f"--window-size={window[0]},{window[1]}", url], tmp)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    width, height, rows = decode_png(shot.read_bytes())
    return dom.stdout.decode(), width, height, rows


def decode_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """8-bit RGB / RGBA, non-interlaced PNG -> (width, height, rows of RGB)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8, depth
            assert interlace == 0, interlace
            assert color in (2, 6), color
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    rows: list[list[tuple[int, int, int]]] = []
    at = 0
    for _y in range(height):
        filt = raw[at]
        line = bytearray(raw[at + 1 : at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            ul = prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif filt == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                line[i] = (line[i] + pred) & 0xFF
        rows.append([(line[x], line[x + 1], line[x + 2]) for x in range(0, stride, channels)])
        prev = line
    return width, height, rows


def regions(
    rows: list[list[tuple[int, int, int]]], colour: tuple[int, int, int], *, min_area: int = 400
) -> int:
    """How many connected regions of ``colour`` (±6 per channel) cover at least ``min_area``
    pixels (a summary tile is ~90x40; glyph anti-aliasing never reaches that area)."""
    height, width = len(rows), len(rows[0])

    def near(px: tuple[int, int, int]) -> bool:
        return all(abs(a - b) <= 6 for a, b in zip(px, colour, strict=True))

    seen = bytearray(width * height)
    count = 0
    for y in range(height):
        for x in range(width):
            if seen[y * width + x] or not near(rows[y][x]):
                continue
            stack, area = [(x, y)], 0
            seen[y * width + x] = 1
            while stack:
                cx, cy = stack.pop()
                area += 1
                for nx, ny in ((cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)):
                    inside = 0 <= nx < width and 0 <= ny < height
                    if inside and not seen[ny * width + nx] and near(rows[ny][nx]):
                        seen[ny * width + nx] = 1
                        stack.append((nx, ny))
            if area >= min_area:
                count += 1
    return count


def distinct_colours(rows: list[list[tuple[int, int, int]]]) -> int:
    return len({px for row in rows[::8] for px in row[::8]})
