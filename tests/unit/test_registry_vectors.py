"""The shared registry vectors (spec/contract/registry-*.json) against the Python client of
``target protect --pin-entrypoints``; ``go test ./runtime/internal/registry`` runs the same
files against the injector's lookup (go-containerregistry), so references, the platform entry
of an index and the mirrors ``target install`` accepts cannot drift between the two.

The mirror mapping (``input.image`` of registry-mirrors.json) is the injector's alone: here
only the acceptance of those cases' mirrors is checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudtaser.errors import ConfigError
from cloudtaser.target import registry as reg

SPEC = Path(__file__).resolve().parents[2] / "spec" / "contract"


def _cases(name: str) -> list[Any]:
    doc = json.loads((SPEC / name).read_text(encoding="utf-8"))
    assert doc["formatVersion"] == 1
    assert doc["cases"]
    for case in doc["cases"]:
        assert ("expect" in case) != ("error" in case), case["name"]
    return [pytest.param(case, id=case["name"]) for case in doc["cases"]]


@pytest.mark.parametrize("case", _cases("registry-references.json"))
def test_reference_vector(case: dict[str, Any]) -> None:
    image = case["input"]["image"]
    if "error" in case:
        assert case["error"] == "bad-reference"
        with pytest.raises(ConfigError):
            reg.parse_reference(image)
        return
    ref = reg.parse_reference(image)
    got = {"registry": ref.registry, "repository": ref.repository, "reference": ref.reference}
    assert got == case["expect"]


@pytest.mark.parametrize("case", _cases("registry-platforms.json"))
def test_platform_vector(case: dict[str, Any]) -> None:
    given = case["input"]
    wanted = given.get("platform")
    platform = (
        reg.parse_platform(reg.DEFAULT_PLATFORM)
        if wanted is None
        else (wanted["os"], wanted["architecture"], wanted.get("variant"))
    )
    chosen = reg.choose_manifest(given["manifests"], platform)
    if "error" in case:
        assert case["error"] == "no-platform"
        assert chosen is None
    else:
        assert chosen is not None
        assert chosen["digest"] == case["expect"]["digest"]


@pytest.mark.parametrize("case", _cases("registry-mirrors.json"))
def test_mirror_vector(case: dict[str, Any]) -> None:
    problem = reg.mirrors_problem(case["input"]["mirrors"].items())
    if "error" in case:
        assert case["error"] == "bad-mirror"
        assert problem is not None
    else:
        assert problem is None
