"""The envelope of every ``--output json`` document, and its JSON Schema.

Every document is a :class:`Result`::

    {"formatVersion": "1", "kind": "<kind>", ...the kind's own fields..., "summary": {...}}

``summary`` (the counts a script checks first) is the last field of every subclass: field
order is key order, and msgspec puts a base's fields first. The documents live beside the
code whose results they carry, each package's in its ``result.py`` (``plan``, ``source``,
``connect``, ``target/discover``, ``target/install``, ``target/audit``); the CLI fills one
from what the library returned and prints ``msgspec.to_builtins(document)``. This module is a
leaf (msgspec only), so every layer can use it.

The committed schemas (``schema/output-<kind>.schema.json``) are generated from the documents
by :func:`json_schema` (``python tools/gen_schemas.py`` writes them; a test fails when one is
stale).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

__all__ = ["FORMAT_VERSION", "Count", "Part", "Result", "json_schema"]

#: ``formatVersion`` of every document; bumped when a field changes meaning or goes away
#: (adding a field is not a new version).
FORMAT_VERSION: Final = "1"

#: A count in a summary.
Count = Annotated[int, Meta(ge=0)]

_DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
_ENVELOPE: Final = ("formatVersion", "kind")


class Result(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """The envelope of every ``--output json`` document.

    A subclass declares ``kind: Literal["<kind>"] = "<kind>"``, its own fields, and
    ``summary`` last.
    """

    format_version: Annotated[
        Literal["1"], Meta(description="bumped when a field changes meaning or is removed")
    ] = FORMAT_VERSION
    kind: str


class Part(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """An object inside a document (an entry of a list, a summary)."""


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/X"}`` replaced by ``X`` itself (the documents
    are trees: no Struct contains itself), and each docstring-made description on one line."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {
            key: " ".join(value.split())
            if key == "description" and isinstance(value, str)
            else _inline(value, defs)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node


def json_schema(result: type[Result]) -> dict[str, Any]:
    """The JSON Schema of one document (``schema/output-<kind>.schema.json``).

    msgspec's schema with ``$schema`` and a title, plus: every ``$ref`` inlined, so the file
    reads like the document it describes; the envelope required (its fields have defaults,
    which msgspec leaves optional) and ``kind`` a ``const``.
    """
    fields = result.__struct_encode_fields__
    if fields[: len(_ENVELOPE)] != _ENVELOPE or fields[-1] != "summary":
        raise TypeError(f"{result.__name__}: fields must be formatVersion, kind, ..., summary")
    generated = msgspec.json.schema(result)
    root = _inline(generated, generated.get("$defs", {}))
    kind = root["properties"]["kind"].get("enum", [None])
    if len(kind) != 1 or not isinstance(kind[0], str):
        raise TypeError(f"{result.__name__}: declare kind: Literal['<kind>'] = '<kind>'")
    version = root["properties"]["formatVersion"]
    root["properties"]["formatVersion"] = {
        "const": FORMAT_VERSION,
        "description": version["description"],
    }
    root["properties"]["kind"] = {"const": kind[0]}
    root["required"] = [*_ENVELOPE, *root["required"]]
    return {
        "$schema": _DRAFT,
        "$id": f"https://cloudtaser.io/schema/output-{kind[0]}.schema.json",
        **root,
        "title": f"cloudtaser --output json: {kind[0]} (formatVersion {FORMAT_VERSION})",
    }
