"""Verification reports: what ``source verify-plan --attest`` proved, bound to the plan.

The vault side cannot write the plan (it crosses the air gap back unchanged), so
``verify-plan --attest FILE`` writes this small JSON report next to it: the plan's name and
reviewed-content digest, when, against which vault, and which vault paths were proven to
exist with which fields (names only). It can carry SSH signatures like a plan approval
(namespace :data:`NAMESPACE`, over :func:`report_content`). ``target protect
--require-verified FILE`` then refuses, naming each workload, any pending workload the report
does not cover, and ``target finalize --require-verified FILE`` any migrated one
(:func:`require_verified`); finalize's ``--delete-secrets`` keeps every Secret holding a
mapped key the report does not prove (:mod:`cloudtaser.target.references.safety`). Format:
docs/approval.md, "Verification reports".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from cloudtaser.errors import ApprovalError
from cloudtaser.plan import sshsig
from cloudtaser.plan.canonical import canonical_json, plan_digest
from cloudtaser.plan.model import (
    API_VERSION,
    ApprovalIdentity,
    ArmoredSignature,
    Digest,
    FieldName,
    OneLine,
    PlanName,
    UtcTimestamp,
    VaultPath,
    WorkloadStatus,
    _Base,
)
from cloudtaser.plan.signers import find_problem

if TYPE_CHECKING:
    from cloudtaser.plan.model import MigrationPlan, Tenant, Workload
    from cloudtaser.plan.signers import AllowedSigner

__all__ = [
    "KIND",
    "NAMESPACE",
    "ProvenPath",
    "ReportSignature",
    "VaultRef",
    "VerificationReport",
    "build_report",
    "dump_report",
    "load_report",
    "report_content",
    "report_schema",
    "require_verified",
    "require_verified_digest",
    "sign_report",
    "uncovered",
]

KIND: Final = "VerificationReport"
#: SSHSIG namespace of report signatures (never valid as a plan approval, and vice versa).
NAMESPACE: Final = "cloudtaser-verification"
MAX_REPORT_BYTES: Final = 64 * 1024 * 1024
MAX_SIGNATURES: Final = 16


class ProvenPath(_Base, kw_only=True):
    """A vault path proven to exist (live latest version) with these fields."""

    vault_path: VaultPath
    fields: Annotated[list[FieldName], Meta(max_length=100_000)] = msgspec.field(
        default_factory=list
    )
    version: Annotated[int, Meta(ge=0, le=2**53)] | None = None


class VaultRef(_Base, kw_only=True):
    """The vault the proof was made against."""

    address: Annotated[str, Meta(pattern=r"^[^\x00-\x20\x7f-\x9f]+(?!\n)$", max_length=2048)]
    namespace: OneLine | None = None


class ReportSignature(_Base, kw_only=True):
    """An SSH signature over :func:`report_content` (namespace ``cloudtaser-verification``)."""

    identity: ApprovalIdentity
    at: UtcTimestamp
    signature: ArmoredSignature


class VerificationReport(_Base, kw_only=True):
    """What ``verify-plan --attest`` proved."""

    api_version: Literal["cloudtaser.io/v1"] = msgspec.field(name="apiVersion")
    kind: Literal["VerificationReport"]
    plan: PlanName
    digest: Digest
    verified_at: UtcTimestamp
    vault: VaultRef
    proven: list[ProvenPath]
    signatures: Annotated[list[ReportSignature], Meta(max_length=MAX_SIGNATURES)] = msgspec.field(
        default_factory=list
    )


def build_report(
    plan: MigrationPlan,
    proven: Mapping[str, tuple[Sequence[str], int | None]],
    *,
    vault_address: str,
    vault_namespace: str | None = None,
    now: datetime | None = None,
) -> VerificationReport:
    """A report for ``plan``: ``proven`` maps each proven vault path to (fields present,
    latest version)."""
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return VerificationReport(
        api_version=API_VERSION,
        kind=KIND,
        plan=plan.metadata.name,
        digest=plan_digest(plan),
        verified_at=when,
        vault=VaultRef(address=vault_address, namespace=vault_namespace),
        proven=[
            ProvenPath(vault_path=path, fields=sorted(set(fields)), version=version)
            for path, (fields, version) in sorted(proven.items())
        ],
    )


def report_content(report: VerificationReport) -> bytes:
    """What a report signature signs: RFC 8785 JSON of the report without ``signatures``
    (timestamps as UTC ``...Z``, as in the file)."""
    data = msgspec.to_builtins(report)
    data.pop("signatures", None)
    return canonical_json(data)


def sign_report(
    report: VerificationReport,
    signer: sshsig.Signer,
    *,
    identity: str,
    now: datetime | None = None,
) -> VerificationReport:
    """``report`` with a signature by ``identity`` added (replacing that identity's)."""
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    signature = sshsig.sign(signer, report_content(report), NAMESPACE)
    try:
        entry = msgspec.convert(
            {"identity": identity, "at": when, "signature": signature}, ReportSignature
        )
    except msgspec.ValidationError as exc:
        raise ApprovalError(f"cannot record the signature: {exc}", source="report") from None
    kept = [s for s in report.signatures if s.identity != identity]
    if len(kept) >= MAX_SIGNATURES:
        raise ApprovalError(f"the report already holds {MAX_SIGNATURES} signatures")
    return msgspec.structs.replace(report, signatures=[*kept, entry])


def dump_report(report: VerificationReport) -> bytes:
    """The report file: indented JSON, keys sorted, one trailing newline."""
    text = json.dumps(msgspec.to_builtins(report), indent=2, sort_keys=True)
    return (text + "\n").encode("utf-8")


def load_report(path: str | os.PathLike[str]) -> VerificationReport:
    """Read and validate a report (:class:`ApprovalError` when unusable)."""
    source = os.fspath(path)
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise ApprovalError(f"cannot read: {exc.strerror or exc}", source=source) from None
    if len(data) > MAX_REPORT_BYTES:
        raise ApprovalError("too large to be a verification report", source=source)
    try:
        return msgspec.json.decode(data, type=VerificationReport)
    except msgspec.ValidationError as exc:
        raise ApprovalError(
            f"not a valid verification report: {str(exc).replace('`', chr(39))}", source=source
        ) from None
    except msgspec.DecodeError:
        raise ApprovalError(
            "not a verification report (not JSON); write one with 'cloudtaser source "
            "verify-plan PLAN --attest FILE'",
            source=source,
        ) from None


def report_schema() -> dict[str, Any]:
    """The JSON Schema of a report (committed as schema/verification-report.schema.json)."""
    schema: dict[str, Any] = msgspec.json.schema(VerificationReport)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtaser VerificationReport (source verify-plan --attest)"
    return schema


def uncovered(
    plan: MigrationPlan,
    report: VerificationReport,
    *,
    include: Callable[[Tenant, Workload], bool] | None = None,
    status: WorkloadStatus = WorkloadStatus.PENDING,
) -> list[str]:
    """Every workload of ``plan`` with ``status`` (the ones the command acts on: ``pending``
    for protect, ``migrated`` for finalize) that ``include`` selects (a run's ``--tenant`` /
    ``--workload``) and the report does not cover, with what is missing."""
    proven: dict[str, set[str]] = {}
    for path in report.proven:
        proven.setdefault(path.vault_path, set()).update(path.fields)
    out = []
    for tenant, workload in plan.iter_workloads():
        if workload.effective_status is not status:
            continue
        if include is not None and not include(tenant, workload):
            continue
        missing = []
        for secret in workload.vault_reads():
            fields = proven.get(secret.vault_path)
            if fields is None:
                missing.append(f"{secret.vault_path} not proven")
                continue
            lacking = [f for f in secret.fields if f not in fields]
            if lacking:
                missing.append(f"{secret.vault_path} fields {', '.join(lacking)} not proven")
        if missing:
            ident = f"{workload.kind} {tenant.namespace}/{workload.name}"
            out.append(f"{ident}: {'; '.join(missing)}")
    return out


def _check_signatures(
    report: VerificationReport, signers: Sequence[AllowedSigner], now: float
) -> list[str]:
    """Reasons the report's signatures fail; empty when one valid signature counts."""
    content = report_content(report)
    reasons = []
    for entry in report.signatures:
        try:
            key = sshsig.verify(entry.signature, content, NAMESPACE)
        except ApprovalError as exc:
            reasons.append(f"{entry.identity}: {exc.detail}")
            continue
        problem = find_problem(
            signers, identity=entry.identity, key=key, namespace=NAMESPACE, now=now
        )
        if problem is None:
            return []
        reasons.append(f"{entry.identity}: {problem}")
    return reasons or ["the report carries no signature"]


_RERUN: Final = "run 'cloudtaser source verify-plan PLAN --attest FILE' on the vault side"


def require_verified_digest(
    plan: MigrationPlan, report: VerificationReport, *, source: str = "<report>"
) -> None:
    """:class:`ApprovalError` unless ``report`` was made for this plan's reviewed content."""
    digest = plan_digest(plan)
    if report.plan != plan.metadata.name or report.digest != digest:
        raise ApprovalError(
            f"the verification report is for plan {report.plan!r} with reviewed content "
            f"{report.digest}, this plan is {plan.metadata.name!r} with {digest}; {_RERUN} "
            "for this plan",
            source=source,
        )


def require_verified(
    plan: MigrationPlan,
    report: VerificationReport,
    *,
    signers: Sequence[AllowedSigner] | None = None,
    include: Callable[[Tenant, Workload], bool] | None = None,
    status: WorkloadStatus = WorkloadStatus.PENDING,
    source: str = "<report>",
    now: float | None = None,
) -> None:
    """The gate of ``--require-verified``: :class:`ApprovalError` unless ``report`` is for
    this plan's reviewed content, covers every workload with ``status`` (``pending`` for
    protect, ``migrated`` for finalize) that ``include`` selects, and (with ``signers``)
    carries a signature an allowed signer made."""
    require_verified_digest(plan, report, source=source)
    if signers is not None:
        reasons = _check_signatures(report, signers, time.time() if now is None else now)
        if reasons:
            raise ApprovalError(
                "the verification report has no valid signature from an allowed signer ("
                + "; ".join(reasons[:5])
                + "); sign it with 'cloudtaser plan approve --report FILE --key KEY'",
                source=source,
            )
    gaps = uncovered(plan, report, include=include, status=status)
    rerun = _RERUN
    if gaps:
        shown = "; ".join(gaps[:10]) + (f"; and {len(gaps) - 10} more" if len(gaps) > 10 else "")
        raise ApprovalError(
            f"the verification report does not cover {len(gaps)} {status} workload(s): {shown}. "
            f"Put the secrets into the vault and {rerun}",
            source=source,
        )
