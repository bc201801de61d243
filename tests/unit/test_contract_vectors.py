"""The shared contract vectors (spec/contract/annotations.json) against today's Python parsers.

The same files run in ``go test`` (runtime/internal/contract), so the annotations protect writes
and the Go runtime reads cannot drift. Until ``cloudtaser.contract`` exists, the small adapter
below puts the Python rules together (cloudtaser.annotations, cloudtaser.config,
cloudtaser.naming) and names the stable error code of each refusal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudtaser.annotations import (
    AUTH_PATH,
    ENV_MAP,
    INJECT,
    SECRET_PATHS,
    VAULT_ADDRESS,
    VAULT_ROLE,
    AnnotationError,
    parse_mapping,
)
from cloudtaser.config import validate_vault_address
from cloudtaser.errors import ConfigError
from cloudtaser.naming import RESERVED_MOUNTS, safe_mount_path, valid_role_name

SPEC = Path(__file__).resolve().parents[2] / "spec" / "contract"


class ContractError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# Python message -> stable code, for AnnotationError raised by cloudtaser.annotations.
_ANNOTATION_CODES = [
    (r"is not a safe KV v2 path", "unsafe-path"),
    (r"is not a field=ENV_VAR pair", "bad-pair"),
    (r"is not a valid vault field name", "bad-field"),
    (r"is not a valid environment variable name", "bad-env-name"),
    (r"given twice", "duplicate-field"),
    (r"is fed twice", "duplicate-env"),
    (r"must match one to one", "mapping-mismatch"),
]


def _bool(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"", "0", "false", "no", "off"}:
        return False
    raise ContractError("bad-bool", f"{name} must be a boolean")


def _auth_mount(value: str) -> str:
    mount = value.strip().lstrip("/").removeprefix("auth/").strip("/")
    if not safe_mount_path(mount) or mount.split("/")[0] in RESERVED_MOUNTS:
        raise ContractError("bad-auth-mount", f"{AUTH_PATH} is not an auth mount path")
    return mount


def parse_annotations(annotations: dict[str, str]) -> dict[str, Any]:
    if not _bool(INJECT, annotations.get(INJECT, "")):
        return {"inject": False}
    address = annotations.get(VAULT_ADDRESS, "")
    if not address.strip():
        raise ContractError("missing-addr", f"{VAULT_ADDRESS} is not set")
    try:
        address = validate_vault_address(address, what=VAULT_ADDRESS)
    except ConfigError as exc:
        code = "addr-credentials" if "credentials" in str(exc) else "bad-addr"
        raise ContractError(code, str(exc)) from None
    role = annotations.get(VAULT_ROLE, "").strip()
    if not role:
        raise ContractError("missing-role", f"{VAULT_ROLE} is not set")
    if not valid_role_name(role):
        raise ContractError("bad-role", f"{VAULT_ROLE} is not a valid role name")
    mount = _auth_mount(annotations[AUTH_PATH]) if AUTH_PATH in annotations else "kubernetes"
    if not annotations.get(SECRET_PATHS, "").strip():
        raise ContractError("missing-secret-paths", f"{SECRET_PATHS} is not set")
    try:
        pairs = parse_mapping(annotations[SECRET_PATHS], annotations.get(ENV_MAP, ""))
    except AnnotationError as exc:
        for pattern, code in _ANNOTATION_CODES:
            if re.search(pattern, str(exc)):
                raise ContractError(code, str(exc)) from None
        raise
    return {
        "inject": True,
        "address": address,
        "role": role,
        "authMount": mount,
        "mapping": [{"path": path, "fields": fields} for path, fields in pairs],
    }


def _cases(name: str) -> list[Any]:
    doc = json.loads((SPEC / name).read_text())
    assert doc["formatVersion"] == 1
    return [pytest.param(case, id=case["name"]) for case in doc["cases"]]


@pytest.mark.parametrize("case", _cases("annotations.json"))
def test_annotation_vector(case: dict[str, Any]) -> None:
    annotations = case["input"]["annotations"]
    if "error" in case:
        with pytest.raises(ContractError) as info:
            parse_annotations(annotations)
        assert info.value.code == case["error"], str(info.value)
    else:
        assert parse_annotations(annotations) == case["expect"]


def test_every_vector_file_is_well_formed() -> None:
    files = sorted(p.name for p in SPEC.glob("*.json"))
    assert files == ["annotations.json", "child-env.json", "values.json", "wrapper-env.json"]
    for name in files:
        doc = json.loads((SPEC / name).read_text())
        assert set(doc) == {"formatVersion", "description", "cases"}
        names = [c["name"] for c in doc["cases"]]
        assert len(names) == len(set(names)), name
        for case in doc["cases"]:
            assert set(case) in ({"name", "input", "expect"}, {"name", "input", "error"}), case
            if "error" in case:
                assert re.fullmatch(r"[a-z]+(-[a-z]+)*", case["error"]), case["error"]
