"""The audit HTML in a real headless browser (Debian's chromium): the DOM it builds carries
the JSON's figures, and its screenshot has the window's size, is not blank, and shows one red
tile per non-zero warning figure, one green tile per zero one and one blue tile per other
figure (see tests/integration/browser.py for what this does and does not prove)."""

from __future__ import annotations

import json
from pathlib import Path

from cloudtaser.target.audit.render import to_html, to_json
from tests.integration.browser import WINDOW, distinct_colours, regions, render
from tests.unit.test_audit_render import figures_from_html, figures_from_json, sample

RED, GREEN, BLUE = (0xB7, 0x1C, 0x1C), (0x1B, 0x5E, 0x20), (0x0D, 0x47, 0xA1)
WARNINGS = ("readingSecretsAsEnv", "podsNotInjected")


def check_in_browser(page: Path, data: dict[str, object], tmp: Path) -> None:
    """Render ``page`` in chromium and compare it with the JSON report ``data``."""
    expected = figures_from_json(data)  # type: ignore[arg-type]
    dom, width, height, rows = render(page, tmp)
    assert figures_from_html(dom) == expected
    assert (width, height) == WINDOW
    assert distinct_colours(rows) > 10, "the screenshot is blank"
    red = sum(1 for (_ns, key), v in expected.items() if key in WARNINGS and v)
    green = sum(1 for (_ns, key), v in expected.items() if key in WARNINGS and not v)
    blue = sum(1 for (_ns, key), _v in expected.items() if key not in WARNINGS)
    assert (regions(rows, RED), regions(rows, GREEN), regions(rows, BLUE)) == (red, green, blue)


def test_the_audit_html_renders_its_figures_in_chromium(tmp_path: Path) -> None:
    report = sample()
    page = tmp_path / "audit.html"
    page.write_text(to_html(report))
    check_in_browser(page, json.loads(to_json(report)), tmp_path)
