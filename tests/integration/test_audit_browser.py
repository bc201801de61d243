"""The audit HTML in a real headless browser (Debian's chromium): the DOM it builds carries
the JSON's verdict, score and figures, and its screenshot (written to the test's tmp dir) has
the window's size, is not blank, shows the verdict as one tile of its colour, the two score
tiles, and one red tile per non-zero warning figure, one green tile per zero one and one blue
tile per other figure (see tests/integration/browser.py for what this does and does not
prove)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cloudtaser.target.audit.render import percent_text, to_html
from tests.integration.browser import WINDOW, distinct_colours, regions, render
from tests.unit.test_audit_render import figures_from_html, figures_from_json, sample, to_json

RED, GREEN, BLUE = (0xB7, 0x1C, 0x1C), (0x1B, 0x5E, 0x20), (0x0D, 0x47, 0xA1)
VERDICT = {"pass": (0x2E, 0x7D, 0x32), "fail": (0xC6, 0x28, 0x28), "incomplete": (0xEF, 0x6C, 0x00)}
SCORE = (0x37, 0x47, 0x4F)
WARNINGS = ("readingSecretsAsEnv", "readingSecretsOnlyAsFiles", "podsNotInjected")


def _text(dom: str, pattern: str) -> str:
    found = re.search(pattern, dom, re.S)
    assert found, f"{pattern!r} not in the DOM chromium built"
    return found.group(1)


def check_in_browser(page: Path, data: dict[str, object], tmp: Path) -> None:
    """Render ``page`` in chromium and compare it with the JSON report ``data``."""
    expected = figures_from_json(data)  # type: ignore[arg-type]
    dom, width, height, rows = render(page, tmp)
    assert (tmp / "screenshot.png").stat().st_size > 0
    assert figures_from_html(dom) == expected
    verdict = str(data["verdict"])
    assert _text(dom, r'id="verdict" data-verdict="([a-z]+)"') == verdict
    assert _text(dom, r'id="verdict" data-verdict="[a-z]+"><b>([A-Z]+)</b>') == verdict.upper()
    score = data["score"]
    assert isinstance(score, dict)
    for key in ("secretConsumptionMoved", "podsInjected"):
        shown = _text(dom, rf'data-score="{key}"><b>([^<]+)</b>')
        assert shown == percent_text(score[key]), key
    assert (width, height) == WINDOW
    assert distinct_colours(rows) > 10, "the screenshot is blank"
    assert regions(rows, VERDICT[verdict]) == 1, "the verdict tile is not drawn"
    assert regions(rows, SCORE) == 2, "the two score tiles are not drawn"
    red = sum(1 for (_ns, key), v in expected.items() if key in WARNINGS and v)
    green = sum(1 for (_ns, key), v in expected.items() if key in WARNINGS and not v)
    blue = sum(1 for (_ns, key), _v in expected.items() if key not in WARNINGS)
    assert (regions(rows, RED), regions(rows, GREEN), regions(rows, BLUE)) == (red, green, blue)


def test_the_audit_html_renders_its_verdict_score_and_figures_in_chromium(tmp_path: Path) -> None:
    report = sample()
    page = tmp_path / "audit.html"
    page.write_text(to_html(report))
    data = json.loads(to_json(report))
    assert (data["verdict"], data["score"]) == (
        "fail",
        {"secretConsumptionMoved": 20, "podsInjected": 33},
    )
    check_in_browser(page, data, tmp_path)
