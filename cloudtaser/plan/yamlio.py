"""The plan file on disk: strict YAML loading with readable errors, deterministic emitting.

:func:`loads` / :func:`load` parse with yaml-rs (no aliases, no duplicate keys, no hidden
characters), convert to the Structs of :mod:`cloudtaser.plan.model` with msgspec, turn
msgspec's error locations (``$.tenants[0]...``) into a :class:`~cloudtaser.errors.PlanError`
that says what the rule means, and apply :func:`cloudtaser.plan.isolation.rule_problem`, so
every command that loads a plan accepts exactly what ``plan validate`` accepts.
:func:`dumps` / :func:`save` write the same plan as the same bytes, atomically.

The strict parser (:func:`parse_mapping`), the Struct conversion with readable errors
(:func:`convert`) and the emitter (:func:`emit`) also read and write the connection file of
``target connect --export`` (:mod:`cloudtaser.connect.file`): one YAML dialect for both.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import yaml_rs

from cloudtaser.errors import PlanError
from cloudtaser.fileio import atomic_write
from cloudtaser.plan import rules
from cloudtaser.plan.isolation import rule_problem
from cloudtaser.plan.model import API_VERSION, KIND, MigrationPlan
from cloudtaser.plan.rules import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_VAR,
    FIELD_NAME,
    MOUNT,
    ONE_LINE,
    PLAN_NAME,
    VAULT_PATH,
)

__all__ = [
    "MAX_PLAN_BYTES",
    "convert",
    "dump",
    "dumps",
    "emit",
    "load",
    "loads",
    "no_cycle_collection",
    "parse_mapping",
    "save",
]

_T = TypeVar("_T")

#: Plans are hand-reviewed YAML; anything past this is not a plan (or is an attack).
MAX_PLAN_BYTES: Final = 64 * 1024 * 1024


# --- loading -----------------------------------------------------------------------------

_ALIASES_FORBIDDEN = yaml_rs.AliasLimits(max_alias_expansions_per_anchor=0)
_LOCATION = re.compile(r"^(?P<message>.*?)(?: - at `(?P<location>\$[^`]*)`)?$", re.DOTALL)


def _yaml_problem(message: str, what: str) -> str:
    """One line from the YAML parser's message (no source excerpt: it could hold anything)."""
    if "alias" in message and "limit" in message:
        return (
            f"YAML anchors and aliases (&name / *name) are not allowed in {what}; "
            "write every value out"
        )
    if message.startswith("duplicate mapping key"):
        return f"not valid YAML: {message.splitlines()[0]} (a key must appear once per mapping)"
    first = message.splitlines()[0] if message else "invalid YAML"
    reason = message.strip().splitlines()[-1] if message.strip() else ""
    if reason and reason != first and not reason.lstrip().startswith(("|", "^")):
        first = f"{first}: {reason.strip()}"
    return f"not valid YAML: {first.removeprefix('YAML parse error at ')}"


def _check_header(data: dict[str, Any], source: str) -> None:
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        value = data.get(key)
        if value is None:
            raise PlanError(
                f"missing {key}: a plan starts with 'apiVersion: {API_VERSION}' and 'kind: {KIND}'",
                source=source,
                location=f"$.{key}",
            )
        if value != expected:
            shown = value if isinstance(value, str) and len(value) < 80 else type(value).__name__
            raise PlanError(
                f"must be {expected!r}, got {shown!r}; this is not a cloudtaser plan "
                "or it was written by an incompatible version",
                source=source,
                location=f"$.{key}",
            )


_KEY_IN = re.compile(r"^(?P<message>.*?) - at `key` in `(?P<location>\$[^`]*)`$", re.DOTALL)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _walk(data: Any, location: str) -> Any:
    """Follow a msgspec location (``$.a[0].b``) through the raw YAML data, or return None."""
    node = data
    for name, index in _STEP.findall(location[1:]):
        if name and isinstance(node, dict):
            node = node.get(name)
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    return node


def _explain_fields(data: Any, mapping_location: str) -> tuple[str, str] | None:
    """Name the offending entry of a ``fields`` mapping (msgspec only says ``fields[...]``)."""
    fields = _walk(data, mapping_location)
    if not isinstance(fields, dict):
        return None
    for key, value in fields.items():
        if not isinstance(key, str) or not re.match(FIELD_NAME, key) or len(key) > 253:
            return (
                f"field name {key!r} is not allowed: use letters, digits, '.', '_' and '-'",
                mapping_location,
            )
        if not isinstance(value, str) or not re.match(ENV_VAR, value) or len(value) > 256:
            return (
                f"environment variable name {value!r} is not valid: it must match "
                "[A-Za-z_][A-Za-z0-9_]*",
                f"{mapping_location}.{key}",
            )
    return None


_DESCRIBE = {
    DNS_LABEL: "a Kubernetes DNS-1123 label (lower-case letters, digits and '-', at most 63)",
    DNS_SUBDOMAIN: "a Kubernetes name (lower-case letters, digits, '-' and '.')",
    PLAN_NAME: "a safe plan name (letters, digits, '.', '_', '-'; at most 63; alphanumeric ends)",
    ENV_VAR: "a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
    FIELD_NAME: "a safe field name (letters, digits, '.', '_', '-'; not '.' or '..')",
    VAULT_PATH: (
        "a safe KV v2 path: <mount>/data/<path> with segments of ASCII letters, digits, '.', "
        "'_', '-' only, none starting with '.' (no '..', globs, quotes, spaces or empty "
        "segments), and not in a reserved mount (sys, auth, identity, cubbyhole, token)"
    ),
    MOUNT: (
        "a safe mount name (segments of letters, digits, '.', '_', '-', none starting with "
        "'.'; not sys, auth, identity, cubbyhole or token in any case)"
    ),
    ONE_LINE: "a single line of printable text",
    rules.APPROVAL_IDENTITY: (
        "an approver identity as in an allowed-signers file (letters, digits and @._+=:/%~-)"
    ),
    rules.DIGEST: "a reviewed-content digest (sha256: and 64 lower-case hex digits)",
    rules.ARMORED_SIGNATURE: (
        "an armored SSH signature as ssh-keygen -Y sign writes it (-----BEGIN SSH "
        "SIGNATURE----- ...)"
    ),
}
_REGEX = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$", re.DOTALL)


def _humanize(message: str, data: Any, location: str) -> str:
    """Replace msgspec's "matching regex '<pattern>'" with what the rule means and the value."""
    match = _REGEX.match(message)
    pattern = match["pattern"].replace("\\\\", "\\") if match else ""
    if pattern not in _DESCRIBE:
        return message
    value = _walk(data, location)
    shown = repr(value[:100] + "…" if isinstance(value, str) and len(value) > 100 else value)
    return f"{shown} is not {_DESCRIBE[pattern]}"


def _translate(exc: msgspec.ValidationError, data: Any, source: str) -> PlanError:
    text = str(exc)
    key_match = _KEY_IN.match(text)
    if key_match:
        message, location = key_match["message"], key_match["location"]
    else:
        match = _LOCATION.match(text)
        message, location = (match["message"], match["location"]) if match else (text, None)
    location = location or "$"
    mapping = location.removesuffix("[...]")
    if mapping.endswith(".fields") and (key_match or mapping != location):
        explained = _explain_fields(data, mapping)
        if explained is not None:
            message, location = explained
    elif key_match:
        message = f"every key of this mapping must be a string ({message})"
    else:
        message = _humanize(message, data, location)
    return PlanError(message.replace("`", "'"), source=source, location=location)


def parse_mapping(text: str, *, source: str, kind: str, what: str) -> dict[Any, Any]:
    """The one YAML mapping in ``text``, parsed strictly: no anchors or aliases, no duplicate
    key, timestamps left as strings. Any problem is a one-line :class:`PlanError` naming
    ``source`` (``kind`` and ``what`` name the document: ``MigrationPlan``, ``a plan``).
    """
    try:
        data = yaml_rs.loads(
            text,
            parse_datetime=False,
            alias_limits=_ALIASES_FORBIDDEN,
            duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error,
        )
    except yaml_rs.YAMLDecodeError as exc:
        raise PlanError(_yaml_problem(str(exc), what), source=source) from None
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise PlanError(f"not valid YAML: {type(exc).__name__}", source=source) from None
    if data is None:
        raise PlanError(f"the file is empty; expected a {kind} mapping", source=source)
    if not isinstance(data, dict):
        got = (
            "a list (or several YAML documents)"
            if isinstance(data, list)
            else (f"a {type(data).__name__}")
        )
        raise PlanError(f"expected one {kind} mapping at the top level, got {got}", source=source)
    return data


def convert(data: dict[Any, Any], into: type[_T], *, source: str) -> _T:
    """``data`` as the Struct ``into``; a :class:`PlanError` with msgspec's location
    (``$.tenants[0]...``) and a readable message when it does not fit."""
    try:
        return msgspec.convert(data, into, from_attributes=False)
    except msgspec.ValidationError as exc:
        raise _translate(exc, data, source) from None


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause the cycle collector while building a large acyclic tree (restores its state)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def loads(text: str | bytes, *, source: str = "<string>") -> MigrationPlan:
    """Parse and validate a plan from YAML text. Raises :class:`PlanError` on any problem."""
    with no_cycle_collection():
        return _loads(text, source)


def _loads(text: str | bytes, source: str) -> MigrationPlan:
    if len(text) > MAX_PLAN_BYTES:
        raise PlanError(
            f"plan is larger than {MAX_PLAN_BYTES // (1024 * 1024)} MiB; refusing to parse it",
            source=source,
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PlanError(
                f"not UTF-8 text (invalid byte at offset {exc.start})", source=source
            ) from None
    hidden = rules.hidden_character_problem(text)
    if hidden is not None:
        raise PlanError(hidden, source=source)
    data = parse_mapping(text, source=source, kind=KIND, what="a plan")
    _check_header(data, source)
    plan = convert(data, MigrationPlan, source=source)
    violation = rule_problem(plan)
    if violation is not None:
        location, message = violation
        raise PlanError(message, source=source, location=location)
    return plan


def load(path: str | os.PathLike[str]) -> MigrationPlan:
    """Read and validate the plan at ``path``."""
    source = os.fspath(path)
    try:
        with Path(path).open("rb") as handle:
            text = handle.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        raise PlanError("no such file", source=source) from None
    except IsADirectoryError:
        raise PlanError("is a directory, not a plan file", source=source) from None
    except OSError as exc:
        raise PlanError(f"cannot read: {exc.strerror}", source=source) from None
    return loads(text, source=source)


# --- saving ------------------------------------------------------------------------------


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./@-]*$")
#: Words YAML 1.1 or 1.2 readers would turn into booleans or null when unquoted.
_SPECIAL = frozenset(
    word
    for base in ("y", "yes", "n", "no", "true", "false", "on", "off", "null")
    for word in (base, base.capitalize(), base.upper())
)


def _numeric_looking(value: str) -> bool:
    """The plan's YAML reader (yaml-rs) reads digits joined by underscores as a number
    (``_0`` -> 0, ``__1`` -> 1, ``_1e3`` -> 1000.0): such a string is written quoted. Anything
    Python itself reads as a number once the underscores are gone counts (a few needless
    quotes, e.g. ``_inf``, are the safe side)."""
    bare = value.replace("_", "")
    try:
        float(bare)
    except ValueError:
        try:
            int(bare, 0)
        except ValueError:
            return False
    return True


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value not in _SPECIAL and not _numeric_looking(value):
            return value
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot emit {type(value).__name__} in a plan")


def _emit(node: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(value, dict | list) and value:
                out.append(head)
                # block sequences start at the key's column (as kubectl writes them)
                _emit(value, indent + 2 if isinstance(value, dict) else indent, out)
            elif isinstance(value, dict):
                out.append(f"{head} {{}}")
            elif isinstance(value, list):
                out.append(f"{head} []")
            else:
                out.append(f"{head} {_scalar(value)}")
    else:
        for item in node:
            if isinstance(item, dict | list) and item:
                start = len(out)
                _emit(item, indent + 2, out)
                out[start] = f"{pad}- {out[start][indent + 2 :]}"
            elif isinstance(item, dict | list):
                out.append(f"{pad}- {'{}' if isinstance(item, dict) else '[]'}")
            else:
                out.append(f"{pad}- {_scalar(item)}")


def dumps(plan: MigrationPlan) -> str:
    """Deterministic YAML: same plan, same bytes; keys in schema order, block style.

    Strings are written plain only when no YAML 1.1 or 1.2 reader could take them for anything
    but a string; everything else is double-quoted (JSON escaping, ASCII only).
    """
    with no_cycle_collection():
        return emit(msgspec.to_builtins(plan))


def emit(data: dict[str, Any]) -> str:
    """A mapping of plain values (str, int, bool, None, lists, mappings) as the deterministic
    block YAML :func:`dumps` writes: keys in the given order, strings quoted unless plain."""
    out: list[str] = []
    _emit(data, 0, out)
    out.append("")
    return "\n".join(out)


def dump(plan: MigrationPlan) -> bytes:
    """:func:`dumps` as UTF-8 bytes."""
    return dumps(plan).encode("utf-8")


def save(plan: MigrationPlan, path: str | os.PathLike[str]) -> None:
    """Write the plan atomically (:func:`cloudtaser.fileio.atomic_write`: temp file in the
    same directory, fsync, rename). A crash at any moment leaves either the old file or the
    new one, never a mix. The file's permission bits are kept when it already exists.
    """
    atomic_write(path, dump(plan))
