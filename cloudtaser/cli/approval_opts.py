"""``--require-approval`` / ``--require-verified``: the gates shared by the commands that act
on a plan (``source apply-plan``, ``target protect``, ``target unprotect``, ``target
finalize``).

Two lines per command: ``add_gate_options(parser)`` when registering (``verified="pending"``
adds ``--require-verified`` for a cluster-side command acting on pending workloads,
``verified="migrated"`` for one acting on migrated workloads), and ``enforce_gates(args,
plan)`` in the handler before any request (``plan`` is a loaded plan or its path). Commands
over the engine also pass ``plan_check=plan_gate(args)`` in their ``RunOptions``: the engine
runs the same check on the plan it loads under the plan lock, so a file changed between the
two checks is still refused (finalize uses :func:`resolve_gates`, which also hands it the
report). Settings resolve flag > environment > default, here at the edge:

=============================  ==================================  =========
flag                           environment                         default
=============================  ==================================  =========
``--require-approval``         ``CLOUDTASER_REQUIRE_APPROVAL=1``   off
``--allowed-signers FILE``     ``CLOUDTASER_ALLOWED_SIGNERS``      —
``--min-approvals N``          ``CLOUDTASER_MIN_APPROVALS``        1
``--require-verified FILE``    ``CLOUDTASER_REQUIRE_VERIFIED``     off
=============================  ==================================  =========

Standard library only at module level.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cloudtaser.cli.common import int_1_to_64

if TYPE_CHECKING:
    from cloudtaser.plan import MigrationPlan
    from cloudtaser.plan.attest import VerificationReport

__all__ = [
    "Gates",
    "add_gate_options",
    "approvals_count",
    "check_plan",
    "enforce_gates",
    "plan_gate",
    "resolve_gates",
]

#: argparse type of a number of approvals: the one 1-to-64 rule of the CLI.
approvals_count = int_1_to_64

_VERIFIED_HELP = {
    "pending": "refuse unless the verification report of 'source verify-plan --attest' "
    "covers every pending workload this run would touch (also CLOUDTASER_REQUIRE_VERIFIED); "
    "with --allowed-signers the report must carry an allowed signature",
    "migrated": "refuse unless the verification report of 'source verify-plan --attest' "
    "covers every migrated workload this run would touch (also CLOUDTASER_REQUIRE_VERIFIED); "
    "with --allowed-signers the report must carry an allowed signature. --delete-secrets "
    "deletes only Secrets whose every key it proves in the vault (or the plan releases)",
}


def add_gate_options(
    parser: argparse.ArgumentParser,
    *,
    verified: Literal["pending", "migrated"] | None = None,
) -> None:
    """Register the gate flags on ``parser``; ``verified`` adds ``--require-verified``, whose
    report must cover the workloads with that status (the ones the command acts on)."""
    group = parser.add_argument_group("approval gate (docs/approval.md)")
    group.add_argument(
        "--require-approval",
        action="store_true",
        default=None,
        help="refuse (exit 5) unless the plan's reviewed content carries enough valid "
        "approvals (also CLOUDTASER_REQUIRE_APPROVAL=1)",
    )
    group.add_argument(
        "--allowed-signers",
        metavar="FILE",
        help="ssh-keygen allowed-signers file of the approvers (also CLOUDTASER_ALLOWED_SIGNERS)",
    )
    group.add_argument(
        "--min-approvals",
        "--min",
        dest="min_approvals",
        type=approvals_count,
        metavar="N",
        help="approvals required (default 1; also CLOUDTASER_MIN_APPROVALS)",
    )
    if verified is not None:
        group.add_argument("--require-verified", metavar="REPORT", help=_VERIFIED_HELP[verified])
        parser.set_defaults(verified_covers=verified)


def _flag_or_env(args: argparse.Namespace, name: str, env: str) -> Any:
    value = getattr(args, name, None)
    return value if value is not None else os.environ.get(env) or None


@dataclass(frozen=True)
class Gates:
    """The gates of one run, resolved once: ``check`` (``None``: no gate asked for) and the
    verification report it checks (``None`` without ``--require-verified``), which finalize
    also uses to decide which Secrets may go."""

    check: Callable[[MigrationPlan], None] | None = None
    report: VerificationReport | None = None


def plan_gate(args: argparse.Namespace) -> Callable[[MigrationPlan], None] | None:
    """The gates ``args`` (and the environment) ask for as one check of a loaded plan;
    ``None`` when no gate is asked for (see :func:`resolve_gates`)."""
    return resolve_gates(args).check


def resolve_gates(args: argparse.Namespace) -> Gates:
    """The gates ``args`` (and the environment) ask for, resolved once (allowed signers and
    report read now). Raises ``ConfigError`` for unusable settings (``ApprovalError`` for an
    unreadable report); the check raises ``ApprovalError``."""
    from cloudtaser.errors import ConfigError  # noqa: PLC0415

    require = getattr(args, "require_approval", None)
    if require is None:
        from cloudtaser.contract import ContractError, parse_bool  # noqa: PLC0415

        try:
            require = parse_bool(
                "CLOUDTASER_REQUIRE_APPROVAL", os.environ.get("CLOUDTASER_REQUIRE_APPROVAL")
            )
        except ContractError as exc:
            raise ConfigError(str(exc)) from None
    report_path = _flag_or_env(args, "require_verified", "CLOUDTASER_REQUIRE_VERIFIED")
    if not hasattr(args, "require_verified"):
        report_path = None  # a vault-side command: no report gate
    if not require and report_path is None:
        return Gates()
    signers_path = _flag_or_env(args, "allowed_signers", "CLOUDTASER_ALLOWED_SIGNERS")
    minimum = getattr(args, "min_approvals", None)
    if minimum is None:
        raw_min = os.environ.get("CLOUDTASER_MIN_APPROVALS")
        try:
            minimum = approvals_count(raw_min) if raw_min else 1
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"CLOUDTASER_MIN_APPROVALS: {exc}") from None
    if require and signers_path is None:
        raise ConfigError(
            "--require-approval needs --allowed-signers FILE (or CLOUDTASER_ALLOWED_SIGNERS): "
            "the approvers' public keys"
        )

    from cloudtaser.plan import WorkloadStatus  # noqa: PLC0415
    from cloudtaser.plan.approval import require_approvals  # noqa: PLC0415
    from cloudtaser.plan.attest import load_report, require_verified  # noqa: PLC0415
    from cloudtaser.plan.signers import load_allowed_signers  # noqa: PLC0415

    signers = load_allowed_signers(signers_path) if signers_path is not None else None
    report = load_report(report_path) if report_path is not None else None
    source = str(getattr(args, "plan", None) or "<plan>")
    include = None
    if report is not None and (getattr(args, "tenant", None) or getattr(args, "workload", None)):
        from cloudtaser.target.engine.core import Selection  # noqa: PLC0415

        # only what this run would touch must be covered (--tenant / --workload)
        include = Selection(tenants=tuple(args.tenant), workloads=tuple(args.workload)).matches

    covers = WorkloadStatus(getattr(args, "verified_covers", None) or "pending")

    def check(plan: MigrationPlan) -> None:
        if require and signers is not None:
            require_approvals(plan, signers, required=minimum, source=source)
        if report is not None:
            require_verified(
                plan,
                report,
                signers=signers,
                include=include,
                status=covers,
                source=str(report_path),
            )

    return Gates(check=check, report=report)


def enforce_gates(args: argparse.Namespace, plan: MigrationPlan | str | os.PathLike[str]) -> None:
    """Apply the gates ``args`` (and the environment) ask for to ``plan`` (loaded, or its
    path); raise the library's ``ApprovalError`` (exit 5) / ``ConfigError`` (exit 2) when one
    refuses. No gate asked: no-op (the plan is not even read)."""
    check_plan(plan_gate(args), plan)


def check_plan(
    gate: Callable[[MigrationPlan], None] | None, plan: MigrationPlan | str | os.PathLike[str]
) -> None:
    """Run a resolved ``gate`` on ``plan`` (loaded, or its path); no gate: no-op (the plan
    is not even read)."""
    if gate is None:
        return
    from cloudtaser import plan as planlib  # noqa: PLC0415

    gate(plan if isinstance(plan, planlib.MigrationPlan) else planlib.load(plan))
