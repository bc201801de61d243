"""Plan approvals: reviewers sign the reviewed content; commands refuse what was not signed.

``approve`` signs :func:`cloudtaser.plan.canonical.canonical_bytes` with an SSH key
(:mod:`cloudtaser.plan.sshsig`, namespace :data:`NAMESPACE`, the format of ``ssh-keygen -Y
sign -n cloudtaser-plan``) and returns the plan with the approval added (replacing an
earlier one of the same identity). ``check_approvals`` classifies every approval against an
allowed-signers file; ``require_approvals`` is the one gate ``source apply-plan``, ``target
protect`` and ``target finalize`` call (``--require-approval``), raising
:class:`ApprovalError` (exit 5) with the digest and a pointer to ``plan diff``.

Counting: an approval counts when its signature verifies over the plan's *current* reviewed
content and an allowed-signers line allows its key for its identity, in this namespace, now.
Each identity and each key counts once (one person with two keys, or one key listed under two
names, is one approval).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import msgspec

from cloudtaser.errors import ApprovalError
from cloudtaser.plan import sshsig
from cloudtaser.plan.canonical import canonical_bytes, digest_of
from cloudtaser.plan.model import MAX_APPROVALS, Approval
from cloudtaser.plan.signers import find_problem

if TYPE_CHECKING:
    from cloudtaser.plan.model import MigrationPlan
    from cloudtaser.plan.signers import AllowedSigner

__all__ = [
    "NAMESPACE",
    "ApprovalCheck",
    "ApprovalReport",
    "ApprovalState",
    "approve",
    "check_approvals",
    "record_signature",
    "require_approvals",
]

#: The SSHSIG namespace of plan approvals (``ssh-keygen -Y sign -n cloudtaser-plan``).
NAMESPACE: Final = "cloudtaser-plan"


class ApprovalState(enum.StrEnum):
    """What one approval is worth (wire values of ``verify-approvals --output json``)."""

    VALID = "valid"
    #: Signed another reviewed content (the plan changed since).
    STALE = "stale"
    #: The signature does not verify (tampered digest or signature, wrong namespace, corrupt).
    INVALID = "invalid"
    #: Signature fine, but no allowed-signers line allows this key for this identity now.
    NOT_ALLOWED = "not-allowed"
    #: Valid, but its identity or key was already counted.
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class ApprovalCheck:
    """The verdict on one entry of ``approvals``."""

    index: int
    identity: str
    at: str
    state: ApprovalState
    detail: str = ""
    fingerprint: str | None = None


@dataclass
class ApprovalReport:
    """Every approval's verdict and the count against the required minimum."""

    digest: str
    required: int
    checks: list[ApprovalCheck] = field(default_factory=list)

    @property
    def valid(self) -> int:
        """Approvals that count."""
        return sum(1 for c in self.checks if c.state is ApprovalState.VALID)

    @property
    def ok(self) -> bool:
        """At least ``required`` approvals count."""
        return self.valid >= self.required


def approve(
    plan: MigrationPlan,
    signer: sshsig.Signer,
    *,
    identity: str,
    comment: str | None = None,
    now: datetime | None = None,
) -> MigrationPlan:
    """``plan`` with a new approval by ``identity`` over its current reviewed content (an
    earlier approval by the same identity is replaced). Raises :class:`ApprovalError` when
    the plan already holds the maximum number of approvals."""
    content = canonical_bytes(plan)
    signature = sshsig.sign(signer, content, NAMESPACE)
    return _with_approval(
        plan, content, signature=signature, identity=identity, comment=comment, now=now
    )


def record_signature(
    plan: MigrationPlan,
    armored: str,
    *,
    identity: str,
    comment: str | None = None,
    now: datetime | None = None,
) -> MigrationPlan:
    """``plan`` with an approval made elsewhere (``ssh-keygen -Y sign -n cloudtaser-plan``
    over :func:`canonical_bytes`); the signature must verify over the current content."""
    content = canonical_bytes(plan)
    sshsig.verify(armored, content, NAMESPACE)
    return _with_approval(
        plan,
        content,
        signature=armored.strip() + "\n",
        identity=identity,
        comment=comment,
        now=now,
    )


def _with_approval(
    plan: MigrationPlan,
    content: bytes,
    *,
    signature: str,
    identity: str,
    comment: str | None,
    now: datetime | None,
) -> MigrationPlan:
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    try:
        entry = msgspec.convert(
            {
                "identity": identity,
                "at": when,
                "digest": digest_of(content),
                "signature": signature,
                **({"comment": comment} if comment else {}),
            },
            Approval,
            from_attributes=False,
        )
    except msgspec.ValidationError as exc:
        text = str(exc).replace("`", "'")
        raise ApprovalError(f"cannot record the approval: {text}", source="approval") from None
    kept = [a for a in plan.approvals if a.identity != identity]
    if len(kept) >= MAX_APPROVALS:
        raise ApprovalError(
            f"the plan already holds {MAX_APPROVALS} approvals; remove stale ones first",
            source="approval",
        )
    return msgspec.structs.replace(plan, approvals=[*kept, entry])


def check_approvals(
    plan: MigrationPlan,
    signers: Sequence[AllowedSigner],
    *,
    required: int = 1,
    now: float | None = None,
) -> ApprovalReport:
    """Classify every approval of ``plan`` (see the module docstring)."""
    content = canonical_bytes(plan)
    digest = digest_of(content)
    moment = time.time() if now is None else now
    report = ApprovalReport(digest=digest, required=required)
    identities: set[str] = set()
    keys: set[bytes] = set()
    for index, approval in enumerate(plan.approvals):
        at = approval.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def verdict(state: ApprovalState, detail: str, fingerprint: str | None = None) -> None:
            report.checks.append(
                ApprovalCheck(index, approval.identity, at, state, detail, fingerprint)  # noqa: B023
            )

        try:
            parsed = sshsig.parse_signature(approval.signature)
        except ApprovalError as exc:
            verdict(ApprovalState.INVALID, exc.detail)
            continue
        fingerprint = parsed.public_key.fingerprint
        try:
            sshsig.verify(approval.signature, content, NAMESPACE)
        except ApprovalError as exc:
            if approval.digest != digest and parsed.namespace == NAMESPACE:
                verdict(
                    ApprovalState.STALE,
                    f"signed {approval.digest}, the plan's reviewed content is now {digest}",
                    fingerprint,
                )
            else:
                verdict(ApprovalState.INVALID, exc.detail, fingerprint)
            continue
        if approval.digest != digest:
            verdict(
                ApprovalState.INVALID,
                f"the recorded digest {approval.digest} was edited (the signature is over "
                f"{digest})",
                fingerprint,
            )
            continue
        problem = find_problem(
            signers,
            identity=approval.identity,
            key=parsed.public_key,
            namespace=NAMESPACE,
            now=moment,
        )
        if problem is not None:
            verdict(ApprovalState.NOT_ALLOWED, problem, fingerprint)
            continue
        if approval.identity in identities or parsed.public_key.blob in keys:
            verdict(
                ApprovalState.DUPLICATE,
                "this identity or key already approved; it counts once",
                fingerprint,
            )
            continue
        identities.add(approval.identity)
        keys.add(parsed.public_key.blob)
        verdict(ApprovalState.VALID, "", fingerprint)
    return report


def require_approvals(
    plan: MigrationPlan,
    signers: Sequence[AllowedSigner],
    *,
    required: int = 1,
    source: str = "<plan>",
    now: float | None = None,
) -> ApprovalReport:
    """The gate of ``--require-approval``: the report when at least ``required`` approvals
    count, else :class:`ApprovalError` saying which digest is unapproved and why."""
    report = check_approvals(plan, signers, required=required, now=now)
    if report.ok:
        return report
    reasons = [
        f"{c.identity}: {c.state.value}{f' ({c.detail})' if c.detail else ''}"
        for c in report.checks
        if c.state is not ApprovalState.VALID
    ]
    shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
    stale = any(c.state is ApprovalState.STALE for c in report.checks)
    hint = (
        " The reviewed content changed after approval: compare the approved file with this one "
        "('cloudtaser plan diff APPROVED.yaml THIS.yaml') and approve again."
        if stale
        else " Approve it with 'cloudtaser plan approve' (if it changed since the review, "
        "'cloudtaser plan diff APPROVED.yaml THIS.yaml' shows how)."
    )
    raise ApprovalError(
        f"not approved: reviewed content {report.digest} has {report.valid} valid approval(s), "
        f"{required} required" + (f" [{shown}]" if shown else "") + "." + hint,
        source=source,
    )
