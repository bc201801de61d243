"""The plan's *reviewed content* and its canonical bytes: what an approval signs.

A reviewer judges the plan's metadata, tenants, workloads, secrets, vault paths, fields,
environment variable names, skips and their reasons, and who owns each workload, Secret and
Secret volume (``owner``, written by discover: an approval covers the owner the reviewer
saw). Runs after the review (``protect``, ``unprotect``, ``finalize``) change only a
workload's ``status``, ``history``, ``lastError``, ``finalizedAt``, ``finalizedRefs``,
``finalizedVolumes``, ``injectorDefaults`` and ``gitops`` (``--emit``: waiting for the owner);
those are not reviewed content, so a protect run never invalidates an approval, and any edit of
a reviewed field does. The exact rules (docs/approval.md, "The canonical form"), so that another
tool can recompute the digest:

1. Start from the plan as loaded (YAML formatting, comments, quoting and key order do not
   matter) with every field at its default omitted: an absent ``fields``, ``fields: {}``,
   ``optional: false`` and a missing ``via`` are the same content.
2. Drop the top-level ``approvals`` and, in every workload, :data:`RUN_FIELDS`.
3. A workload keeps ``"status": "skipped"`` only when the skip is a review decision: its
   status is ``skipped`` and its last ``history`` entry (if any) is not a ``skipped`` that a
   run recorded (``protect --interactive`` answered "no"). Every other status is dropped.
4. Timestamps become UTC ``YYYY-MM-DDTHH:MM:SSZ`` (``.ffffff`` before the ``Z`` when they
   have microseconds).
5. Serialise as RFC 8785 (JSON Canonicalization Scheme): UTF-8, no insignificant
   whitespace, object keys sorted by code point (every key of a plan is ASCII), strings
   escaping only ``"``, ``\\`` and U+0000..U+001F (``\\b \\t \\n \\f \\r``, else
   ``\\u00xx``), integers in decimal (``replicas`` is an int32, so every JSON number of the
   form is exact). Lists keep plan order: the order of tenants, workloads and secrets is the
   order protect works in, so it is reviewed too.

The digest is ``sha256:`` + the lowercase hex SHA-256 of those bytes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec

from cloudtaser.errors import PlanError

if TYPE_CHECKING:
    from cloudtaser.plan.model import MigrationPlan

__all__ = [
    "PLAN_FIELDS_NOT_REVIEWED",
    "RUN_FIELDS",
    "canonical_bytes",
    "canonical_json",
    "digest_of",
    "plan_digest",
    "reviewed_content",
    "reviewed_skip",
]

#: Workload fields that runs write after the review (camelCase, as in the file).
RUN_FIELDS: Final = frozenset(
    {
        "status",
        "history",
        "lastError",
        "finalizedAt",
        "finalizedRefs",
        "finalizedVolumes",
        "injectorDefaults",
        "gitops",
    }
)
#: Top-level fields that are not reviewed content (the approvals themselves).
PLAN_FIELDS_NOT_REVIEWED: Final = frozenset({"approvals"})
_SKIPPED: Final = "skipped"


def reviewed_skip(workload: dict[str, Any]) -> bool:
    """True when a workload (as builtins) is skipped by a review decision, not by a run."""
    if workload.get("status") != _SKIPPED:
        return False
    history = workload.get("history") or []
    return not history or history[-1].get("status") != _SKIPPED


def _timestamp(value: datetime) -> str:
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def _normalise(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _normalise(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if isinstance(node, datetime):
        return _timestamp(node)
    return node


def reviewed_content(plan: MigrationPlan) -> dict[str, Any]:
    """The reviewed content of ``plan`` as a JSON-ready mapping (rules 1-4 above)."""
    data: dict[str, Any] = msgspec.to_builtins(plan, builtin_types=(datetime,))
    for name in PLAN_FIELDS_NOT_REVIEWED:
        data.pop(name, None)
    for tenant in data.get("tenants", []):
        workloads = []
        for workload in tenant.get("workloads", []):
            skip = reviewed_skip(workload)
            kept = {k: v for k, v in workload.items() if k not in RUN_FIELDS}
            if skip:
                kept["status"] = _SKIPPED
            workloads.append(kept)
        tenant["workloads"] = workloads
    normalised: dict[str, Any] = _normalise(data)
    return normalised


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value made of dicts with ASCII keys, lists, strings, bools,
    None and integers below 2**53 (what plans and verification reports hold)."""
    text = json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise PlanError(
            "the plan holds a string that is not valid Unicode (a lone surrogate escape); "
            "it has no canonical form"
        ) from None


def canonical_bytes(plan: MigrationPlan) -> bytes:
    """The bytes an approval signs: :func:`canonical_json` of :func:`reviewed_content`."""
    return canonical_json(reviewed_content(plan))


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def plan_digest(plan: MigrationPlan) -> str:
    """The reviewed-content digest of ``plan`` (``sha256:<hex>``)."""
    return digest_of(canonical_bytes(plan))
