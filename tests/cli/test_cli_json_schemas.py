"""Every ``-o json`` result has a JSON Schema in schema/output-<kind>.schema.json, and real
outputs validate against it (plan commands here; apply-plan, verify-plan, protect, discover
in tests/integration/test_*_cli_ux.py against real servers).

When this fails for a new command: declare its document as a :class:`cloudtaser.results.Result`
(formatVersion, kind, ..., summary) in the ``result.py`` of the package whose results it
carries, and run ``python tools/gen_schemas.py``; see docs/cli.md.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from cloudtaser.cli import main
from cloudtaser.results import json_schema
from tests.unit.test_plan import VALID
from tests.unit.test_schemas_current import GENERATOR

ROOT = Path(__file__).parents[2]
SCHEMAS = ROOT / "schema"


def _kinds_in_code() -> dict[str, str]:
    """kind -> where: each document Struct (a Result in a result.py)."""
    found: dict[str, str] = {}
    for result in GENERATOR.results():
        kind = json_schema(result)["properties"]["kind"]["const"]
        found[kind] = f"{result.__module__}.{result.__qualname__}"
    return found


def _schema(kind: str) -> dict:
    return json.loads((SCHEMAS / f"output-{kind}.schema.json").read_text())


def test_every_json_result_kind_has_a_schema() -> None:
    kinds = _kinds_in_code()
    assert {"apply-plan", "verify-plan", "plan-status", "protect-run", "discover"} <= set(kinds)
    missing = {k: w for k, w in kinds.items() if not (SCHEMAS / f"output-{k}.schema.json").exists()}
    assert not missing, f"no schema/output-<kind>.schema.json for: {missing}"


def test_json_results_are_printed_from_result_structs() -> None:
    """No dict literal printed as a result: a ``print_json`` in a command prints a Result."""
    for path in sorted((ROOT / "cloudtaser" / "cli").glob("*.py")):
        if path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print_json":
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                assert ast.unparse(node.args[0]).startswith("msgspec.to_builtins("), (
                    f"{where}: print a cloudtaser.results.Result: print_json(msgspec.to_builtins("
                    "document))"
                )


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("output-*.schema.json")), ids=lambda p: p.name)
def test_schemas_are_valid_and_require_the_envelope(path: Path) -> None:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"formatVersion", "kind", "summary"} <= set(schema["required"])
    assert path.name == f"output-{schema['properties']['kind']['const']}.schema.json"


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    data = yaml.safe_load(VALID)
    data["tenants"][0]["workloads"][1]["status"] = "skipped"
    data["tenants"][0]["workloads"][0]["lastError"] = "rollout did not complete"
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("kind", "argv"),
    [
        ("plan-status", ["plan", "status", "{plan}", "-o", "json"]),
        ("plan-status", ["plan", "status", "{plan}", "--workloads", "-o", "json"]),
        ("plan-validate", ["plan", "validate", "{plan}", "{plan}", "-o", "json"]),
        ("plan-todo", ["plan", "todo", "{plan}", "-o", "json"]),
        (
            "plan-set-status",
            [
                "plan",
                "set-status",
                "{plan}",
                "--tenant",
                "payments",
                "--status",
                "pending",
                "-o",
                "json",
            ],
        ),
    ],
)
def test_real_plan_outputs_validate(
    kind: str, argv: list[str], plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([a.replace("{plan}", str(plan_file)) for a in argv])
    document = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator(_schema(kind)).validate(document)
    assert document["kind"] == kind


def test_a_schema_rejects_a_missing_summary(
    plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["plan", "todo", str(plan_file), "-o", "json"])
    document = json.loads(capsys.readouterr().out)
    del document["summary"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(_schema("plan-todo")).validate(document)
