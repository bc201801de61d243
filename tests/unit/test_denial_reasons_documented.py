"""docs/injector.md's table of denial reasons names exactly the reasons the injector has
(runtime/internal/webhook/review.go, the one list), so the documentation cannot drift into a
second, different list."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _go_reasons() -> set[str]:
    source = (ROOT / "runtime/internal/webhook/review.go").read_text()
    return set(re.findall(r'^\s*Reason[A-Z]\w* += "([a-z-]+)"$', source, flags=re.M))


def _documented_reasons() -> set[str]:
    doc = (ROOT / "docs/injector.md").read_text()
    table = doc.split("### Refusals: fail closed", 1)[1].split("\n\n| Reason | When |", 1)[1]
    rows = table.split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([a-z-]+)` \|", rows, flags=re.M))


def test_the_docs_table_lists_every_denial_reason_and_no_other() -> None:
    go = _go_reasons()
    assert len(go) >= 8  # so the comparison below can fail
    assert _documented_reasons() == go
