"""The shared contract vectors (spec/contract/*.json) against the Python side.

The runtime (``go test ./runtime/internal/contract``) runs the same files; here every case
of ``annotations.json``, ``values.json``, ``child-env.json`` and ``secret-files.json`` runs
against :mod:`cloudtaser.contract`, so the annotations protect writes and the runtime reads cannot
drift. (``wrapper-env.json`` describes the Go wrapper's own environment: modes, token files,
CA files; the Python side has no wrapper any more.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import contract
from cloudtaser.contract import ContractError

SPEC = Path(__file__).resolve().parents[2] / "spec" / "contract"


def _cases(name: str) -> list[Any]:
    doc = json.loads((SPEC / name).read_text())
    assert doc["formatVersion"] == 1
    return [pytest.param(case, id=case["name"]) for case in doc["cases"]]


@pytest.mark.parametrize("case", _cases("annotations.json"))
def test_annotation_vector(case: dict[str, Any]) -> None:
    annotations = case["input"]["annotations"]
    given = case["input"].get("defaults")
    defaults = (
        None
        if given is None
        else contract.InjectorDefaults.parse(
            address=given.get("address"),
            auth_mount=given.get("authMount"),
            auth_method=given.get("authMethod"),
            namespace=given.get("namespace"),
        )
    )
    if "error" in case:
        with pytest.raises(ContractError) as info:
            contract.parse_annotations(annotations, defaults)
        assert info.value.code == case["error"], str(info.value)
    else:
        assert contract.parse_annotations(annotations, defaults) == case["expect"]


@pytest.mark.parametrize("case", _cases("dangerous-env-annotations.json"))
def test_dangerous_env_annotation_vector(case: dict[str, Any]) -> None:
    """The injector's denials of dangerous targets, applied by the Python contract too."""
    annotations = case["input"]["annotations"]
    if "error" in case:
        with pytest.raises(ContractError) as info:
            contract.parse_annotations(annotations)
        assert info.value.code == case["error"], str(info.value)
        return
    parsed = contract.parse_annotations(annotations)
    accepted = contract.parse_accept_dangerous_env(
        annotations.get(contract.ACCEPT_DANGEROUS_ENV, "")
    )
    assert {"mapping": parsed["mapping"], "accepted": sorted(accepted)} == case["expect"]


@pytest.mark.parametrize("case", _cases("secret-files.json"))
def test_secret_files_vector(case: dict[str, Any]) -> None:
    """``cloudtaser.io/secret-files``: the Python parser accepts and refuses exactly what the
    Go injector does (``contract.ParseSecretFiles``), with the same codes."""
    value = case["input"]["value"]
    if "error" in case:
        with pytest.raises(ContractError) as info:
            contract.parse_secret_files(value)
        assert info.value.code == case["error"], str(info.value)
    else:
        assert contract.parse_secret_files(value) == case["expect"]["volumes"]


def _value(kind: str, name: str, value: str) -> dict[str, Any]:
    if kind == "bool":
        return {"value": contract.parse_bool(name, value)}
    assert kind == "duration", kind
    seconds = contract.optional_duration(name, value)
    return {"ms": None if seconds is None else round(seconds * 1000)}


@pytest.mark.parametrize("case", _cases("values.json"))
def test_value_vector(case: dict[str, Any]) -> None:
    given = case["input"]
    if "error" in case:
        with pytest.raises(ContractError) as info:
            _value(given["kind"], given["name"], given["value"])
        assert info.value.code == case["error"], str(info.value)
        assert given["name"] in str(info.value)  # the error names the variable
    else:
        assert _value(given["kind"], given["name"], given["value"]) == case["expect"]


@pytest.mark.parametrize("case", _cases("child-env.json"))
def test_child_env_vector(case: dict[str, Any]) -> None:
    parent = case["input"]["env"]
    secrets = {s["name"]: s["value"] for s in case["input"]["secrets"]}
    if "error" in case:
        with pytest.raises(ContractError) as info:
            contract.build_child_env(parent, secrets)
        assert info.value.code == case["error"]
        for value in secrets.values():  # no secret value in the refusal
            assert value not in str(info.value) or not value
    else:
        assert contract.build_child_env(parent, secrets) == case["expect"]["env"]


def test_every_vector_file_is_well_formed() -> None:
    files = sorted(p.name for p in SPEC.glob("*.json"))
    assert files == [
        "annotations.json",
        "child-env.json",
        "dangerous-env-annotations.json",
        "dangerous-env.json",
        "injection.json",
        "registry-mirrors.json",
        "registry-platforms.json",
        "registry-references.json",
        "rules.json",
        "secret-files.json",
        "values.json",
        "var-expansion.json",
        "wrapper-env.json",
    ]
    # dangerous-env.json is a list, not input/expect vectors: tests/unit/test_dangerous_env.py;
    # var-expansion.json has strings/env tables (runtime/internal/contract/expansion_test.go)
    for name in (f for f in files if f not in {"dangerous-env.json", "var-expansion.json"}):
        doc = json.loads((SPEC / name).read_text())
        # injection.json (the webhook's pod mutation) also carries the injector's flags and
        # the registry's images the cases use.
        extra = {"config", "images"} if name == "injection.json" else set()
        assert set(doc) == {"formatVersion", "description", "cases"} | extra
        names = [c["name"] for c in doc["cases"]]
        assert len(names) == len(set(names)), name
        for case in doc["cases"]:
            assert set(case) in ({"name", "input", "expect"}, {"name", "input", "error"}), case
            if "error" in case:
                assert re.fullmatch(r"[a-z]+(-[a-z]+)*", case["error"]), case["error"]
