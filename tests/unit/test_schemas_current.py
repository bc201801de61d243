"""Every JSON Schema in schema/ is generated from the Structs it describes
(tools/gen_schemas.py), and the committed files are what it generates now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from cloudtaser.plan import WorkloadStatus
from cloudtaser.plan.result import StatusCounts
from cloudtaser.results import Result
from cloudtaser.source.result import PathCounts
from cloudtaser.source.verify import PathStatus

ROOT = Path(__file__).parents[2]
SCHEMAS = ROOT / "schema"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "tools" / "gen_schemas.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
GENERATED = GENERATOR.schemas()


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_committed_schema_is_current(name: str) -> None:
    path = SCHEMAS / name
    committed = path.read_text() if path.exists() else None
    assert committed == GENERATED[name], f"schema/{name} is stale: run `{GENERATOR.COMMAND}`"


def test_every_schema_is_generated() -> None:
    committed = {p.name for p in SCHEMAS.glob("*.json")}
    assert committed == set(GENERATED), (
        f"schema/ and the generated schemas differ: run `{GENERATOR.COMMAND}` (a document is "
        "a cloudtaser.results.Result) and delete what it no longer writes"
    )


def test_every_document_has_its_own_kind() -> None:
    documents = GENERATOR.results()
    outputs = [name for name in GENERATED if name.startswith("output-")]
    assert len(outputs) == len(documents) >= 15  # two Structs with one kind would collapse
    assert all(issubclass(r, Result) for r in documents)


def test_counts_by_status_have_one_field_per_status() -> None:
    """A new status must appear in the documents (and their schemas) that count by status."""
    assert StatusCounts.__struct_encode_fields__ == tuple(s.value for s in WorkloadStatus)
    assert PathCounts.__struct_encode_fields__ == tuple(s.value for s in PathStatus)
