"""Generate every JSON Schema in schema/ from the msgspec Structs it describes
(tests/unit/test_schemas_current.py fails when a committed one is stale).

Usage: python tools/gen_schemas.py     (writes schema/*.schema.json)

* ``output-<kind>.schema.json``: each ``--output json`` document, a
  :class:`cloudtaser.results.Result` declared in a ``result.py`` of the package whose results
  it carries (``cloudtaser/plan/result.py``, ``cloudtaser/source/result.py``, ...);
* ``migration-plan.schema.json``: the plan (the same text as ``cloudtaser plan schema``);
* ``verification-report.schema.json``: the report of ``source verify-plan --attest``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from cloudtaser.plan import json_schema as plan_schema
from cloudtaser.plan.attest import report_schema
from cloudtaser.results import Result, json_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schema"
COMMAND = "python tools/gen_schemas.py"


def results() -> list[type[Result]]:
    """Every document Struct (a Result with its own ``kind``) of every ``result.py``."""
    for path in sorted((ROOT / "cloudtaser").rglob("result.py")):
        importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    found: list[type[Result]] = []
    pending = list(Result.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if "kind" in cls.__annotations__ and cls not in found:
            found.append(cls)
    return found


def _text(schema: dict[str, Any], *, sort_keys: bool = False) -> str:
    return json.dumps(schema, indent=2, sort_keys=sort_keys) + "\n"


def schemas() -> dict[str, str]:
    """File name in schema/ -> its text."""
    out = {
        "migration-plan.schema.json": _text(plan_schema(), sort_keys=True),
        "verification-report.schema.json": _text(report_schema(), sort_keys=True),
    }
    for result in results():
        schema = json_schema(result)
        out[f"output-{schema['properties']['kind']['const']}.schema.json"] = _text(schema)
    return out


def main() -> None:
    for name, text in schemas().items():
        path = SCHEMAS / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(SCHEMAS.parent)}")


if __name__ == "__main__":
    main()
