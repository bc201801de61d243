"""Key-level safety: may a Secret be deleted without losing a value? (pure, no I/O)

``finalize --delete-secrets`` deletes a Secret only when **every key it holds** is safe
(docs/lifecycle.md, "What is never deleted"):

- **proven**: some non-skipped workload of the Secret's tenant maps the key (``secrets[]``
  entry with ``source`` = the Secret and the key among its ``fields``, or a migrated
  ``secretFiles[]`` entry of the Secret with the key among its ``files``) *and* a verification
  report (``source verify-plan --attest``, bound to this plan's reviewed content) proves that
  field present at that entry's ``vaultPath``; or
- **released**: a reviewer listed the key in ``releasedKeys`` of a ``secrets[]`` entry of the
  tenant whose ``source`` is the Secret (reviewed, signed content: they accept to lose it).

Any other key keeps the Secret: **unmapped** (no workload maps it, nobody released it) or
**unproven** (mapped, but no usable report, or the report does not prove it). Only key
*names* are ever handled; the verdict names them and says what to do. ``target audit`` can
call :func:`key_safety` with a plan and a report to show the same verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cloudtaser.plan.canonical import plan_digest
from cloudtaser.plan.model import WorkloadStatus

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

    from cloudtaser.plan.attest import VerificationReport
    from cloudtaser.plan.model import MigrationPlan, Tenant

__all__ = [
    "ATTEST_HINT",
    "KeySafety",
    "key_safety",
    "proof",
    "proven_fields",
    "report_problem",
]

#: What to run to get a report finalize can use.
ATTEST_HINT: Final = (
    "run 'cloudtaser source verify-plan PLAN --attest REPORT' on the vault side and pass "
    "'--require-verified REPORT' to finalize"
)
_SHOWN: Final = 20


def proven_fields(report: VerificationReport) -> dict[str, frozenset[str]]:
    """``{vaultPath: fields proven present}`` of a verification report."""
    out: dict[str, set[str]] = {}
    for path in report.proven:
        out.setdefault(path.vault_path, set()).update(path.fields)
    return {path: frozenset(fields) for path, fields in out.items()}


def report_problem(plan: MigrationPlan, report: VerificationReport) -> str | None:
    """Why ``report`` cannot prove anything for ``plan`` (another plan, or reviewed content
    that changed since, e.g. a ``releasedKeys`` edit), or ``None`` when it applies."""
    digest = plan_digest(plan)
    if report.plan == plan.metadata.name and report.digest == digest:
        return None
    return (
        f"the verification report is for plan {report.plan!r} with reviewed content "
        f"{report.digest}, this plan is {plan.metadata.name!r} with {digest}"
    )


def proof(
    plan: MigrationPlan, verified: VerificationReport | None
) -> tuple[Mapping[str, AbstractSet[str]] | None, str]:
    """The report's proven fields for :func:`key_safety` (``None`` when there is no usable
    report) and why not (finalize and audit both judge keys with it)."""
    if verified is None:
        return None, "no verification report was given"
    problem = report_problem(plan, verified)
    if problem is not None:
        return None, problem
    return proven_fields(verified), ""


def _names(keys: Iterable[str]) -> str:
    shown = sorted(keys)
    more = f" and {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else ""
    return ", ".join(shown[:_SHOWN]) + more


@dataclass(frozen=True)
class KeySafety:
    """The verdict on every key of one Secret (names only)."""

    namespace: str
    secret: str
    #: Mapped by a non-skipped workload and proven in the vault by the report.
    proven: tuple[str, ...] = ()
    #: Listed in ``releasedKeys`` by a reviewer.
    released: tuple[str, ...] = ()
    #: Neither mapped nor released: deleting the Secret would lose them for good.
    unmapped: tuple[str, ...] = ()
    #: Mapped, but not proven present in the vault (no usable report, or not in it).
    unproven: tuple[str, ...] = ()
    #: The vault paths the unproven keys are mapped to.
    unproven_paths: tuple[str, ...] = ()
    #: Why no report could prove anything (``None``: a usable report was given).
    no_proof: str | None = None

    @property
    def safe(self) -> bool:
        """Every key is proven or released: deleting the Secret loses nothing."""
        return not self.unmapped and not self.unproven

    @property
    def keeping(self) -> tuple[str, ...]:
        """The keys that keep the Secret."""
        return tuple(sorted({*self.unmapped, *self.unproven}))

    def problem(self) -> str | None:
        """Why the Secret must be kept, naming the keys and what to do; ``None`` when safe."""
        parts = []
        if self.unmapped:
            parts.append(
                f"key(s) {_names(self.unmapped)} are not mapped by the plan and not released: "
                "deleting the Secret would lose them for good. Map them (discover again and "
                "review), or list them in releasedKeys of this Secret's entry in the plan and "
                "have the plan re-approved (then verify-plan --attest again)"
            )
        if self.unproven:
            where = f" ({_names(self.unproven_paths)})" if self.unproven_paths else ""
            if self.no_proof is not None:
                parts.append(
                    f"key(s) {_names(self.unproven)} are mapped{where} but not proven in the "
                    f"vault: {self.no_proof}; {ATTEST_HINT}"
                )
            else:
                parts.append(
                    f"key(s) {_names(self.unproven)} are mapped{where} but the verification "
                    "report does not prove them present: put them into the vault, then "
                    + ATTEST_HINT
                )
        return "; ".join(parts) or None


def key_safety(
    tenant: Tenant,
    secret: str,
    keys: Iterable[str],
    proven: Mapping[str, AbstractSet[str]] | None,
    *,
    no_proof: str = "no verification report was given",
) -> KeySafety:
    """The verdict on every key in ``keys`` (the Secret's key names as read from the
    cluster) of Secret ``secret`` in ``tenant``'s namespace. ``proven``: the report's
    :func:`proven_fields`, or ``None`` without a usable report (``no_proof`` says why)."""
    released: set[str] = set()
    mapped: dict[str, set[str]] = {}
    for workload in tenant.workloads:
        for ref in workload.secrets:
            if ref.source != secret or ref.via == "vaultAgent":
                continue
            released.update(ref.released_keys)
            if workload.effective_status is WorkloadStatus.SKIPPED:
                continue
            for field in ref.fields:
                mapped.setdefault(field, set()).add(ref.vault_path)
        if workload.effective_status is WorkloadStatus.SKIPPED:
            continue
        for entry in workload.migrated_files:  # a Secret volume's keys, served as files
            if entry.source == secret and entry.vault_path is not None:
                for item in entry.files:
                    mapped.setdefault(item.key, set()).add(entry.vault_path)
    out: dict[str, list[str]] = {"proven": [], "released": [], "unmapped": [], "unproven": []}
    paths: set[str] = set()
    for key in sorted(set(keys)):
        if key in released:
            out["released"].append(key)
        elif key not in mapped:
            out["unmapped"].append(key)
        elif proven is not None and any(key in proven.get(p, ()) for p in mapped[key]):
            out["proven"].append(key)
        else:
            out["unproven"].append(key)
            paths.update(mapped[key])
    return KeySafety(
        namespace=tenant.namespace,
        secret=secret,
        proven=tuple(out["proven"]),
        released=tuple(out["released"]),
        unmapped=tuple(out["unmapped"]),
        unproven=tuple(out["unproven"]),
        unproven_paths=tuple(sorted(paths)),
        no_proof=None if proven is not None else no_proof,
    )
