"""``cloudtaser plan approve|verify-approvals|diff|canonical``: review work on plan files,
no system access (docs/approval.md).

Standard library only at module level.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.approval_opts import approvals_count
from cloudtaser.cli.common import add_output_option, add_plan_argument
from cloudtaser.cli.exitcodes import ExitCode

if TYPE_CHECKING:
    from cloudtaser.plan.approval import ApprovalReport
    from cloudtaser.plan.diff import PlanDiff
    from cloudtaser.plan.result import PlanApprovals
    from cloudtaser.plan.result import PlanDiff as PlanDiffResult
    from cloudtaser.plan.sshsig import Signer

__all__ = ["default_identity", "register", "signer_from_args"]

_APPROVE_DESCRIPTION = """\
Sign the plan's reviewed content (everything but status, history, lastError, finalizedAt and
the approvals; docs/approval.md) with an SSH key, in the format of
'ssh-keygen -Y sign -n cloudtaser-plan', and record the approval in the plan's 'approvals:'
list (an earlier approval by the same identity is replaced). The plan is written atomically
under its lock. KEY is an Ed25519 or RSA private key file (a passphrase is asked for, or taken
from CLOUDTASER_KEY_PASSPHRASE), or a public key (.pub) whose private key is in ssh-agent
(SSH_AUTH_SOCK). With --signature, a signature made elsewhere (ssh-keygen -Y sign over
'cloudtaser plan canonical PLAN') is checked and recorded instead.
With --report, the verification report FILE of 'source verify-plan --attest' is signed
(namespace cloudtaser-verification) after checking it belongs to PLAN.
"""

_APPROVE_EPILOG = """\
examples:
  cloudtaser plan approve plan.yaml --key ~/.ssh/id_ed25519 --identity alice@example.com \\
      --comment "CHG-1234 reviewed"
  cloudtaser plan approve plan.yaml --key ~/.ssh/id_ed25519.pub     # key in ssh-agent
  cloudtaser plan canonical plan.yaml | ssh-keygen -Y sign -n cloudtaser-plan -f KEY > sig
  cloudtaser plan approve plan.yaml --signature sig --identity alice@example.com

exit codes: 0 approved, 2 invalid plan or key, 5 invalid signature.
"""

_VERIFY_DESCRIPTION = """\
Check every approval of PLAN against an allowed-signers file (the format of
'ssh-keygen -Y verify -f': principals, options namespaces= / valid-after= / valid-before=,
key). An approval counts when its signature verifies over the plan's current reviewed
content and a line allows its key for its identity now; each identity and key counts once.
"""

_VERIFY_EPILOG = """\
exit codes: 0 at least N approvals count, 2 invalid plan or allowed-signers file, 5 fewer
(the message names the digest; a stale approval means the reviewed content changed: see
'cloudtaser plan diff').
"""

_DIFF_DESCRIPTION = """\
A reviewer's diff of two plans: tenants, workloads, secrets, vault paths, fields and
environment variables added, removed or changed (lists matched by name, so an insertion is
one entry), and, separately, workloads whose status changed (runs never change the reviewed
content).
"""

_DIFF_EPILOG = """\
exit codes: 0 same reviewed content (status changes only), 1 the reviewed content differs,
2 invalid plan.
"""


def register(groups: Any) -> None:
    """Attach the review verbs to the ``plan`` noun."""
    approve = groups.command(
        "plan",
        "approve",
        help="sign the plan's reviewed content with an SSH key and record the approval",
        description=_APPROVE_DESCRIPTION,
        epilog=_APPROVE_EPILOG,
    )
    add_plan_argument(approve, "plan", metavar="PLAN", help="plan file (updated in place)")
    source = approve.add_mutually_exclusive_group(required=True)
    source.add_argument("--key", metavar="KEY", help="private key file, or .pub of an agent key")
    source.add_argument(
        "--signature",
        metavar="FILE",
        help="record this ssh-keygen -Y sign signature (namespace cloudtaser-plan) instead",
    )
    approve.add_argument(
        "--identity",
        metavar="ID",
        help="the approver's principal in the allowed-signers file (default: the key's "
        "comment, else user@host)",
    )
    approve.add_argument("--comment", metavar="TEXT", help="a note kept with the approval")
    approve.add_argument(
        "--report",
        metavar="FILE",
        help="sign this verification report (of verify-plan --attest for PLAN) instead of PLAN",
    )
    approve.set_defaults(handler=_run_approve)

    verify = groups.command(
        "plan",
        "verify-approvals",
        help="check a plan's approvals against an allowed-signers file",
        description=_VERIFY_DESCRIPTION,
        epilog=_VERIFY_EPILOG,
        examples=[
            "cloudtaser plan verify-approvals plan.yaml --allowed-signers team.signers",
            "cloudtaser plan verify-approvals plan.yaml --allowed-signers team.signers"
            " --min 2 -o json",
        ],
    )
    add_plan_argument(verify, "plan", metavar="PLAN", help="plan file")
    verify.add_argument(
        "--allowed-signers", required=True, metavar="FILE", help="ssh-keygen allowed-signers file"
    )
    verify.add_argument(
        "--min",
        "--min-approvals",
        dest="min_approvals",
        type=approvals_count,
        default=1,
        metavar="N",
        help="approvals required (default 1)",
    )
    add_output_option(verify)
    verify.set_defaults(handler=_run_verify)

    diff = groups.command(
        "plan",
        "diff",
        help="what changed between two plans (reviewed content, then status)",
        description=_DIFF_DESCRIPTION,
        epilog=_DIFF_EPILOG,
        examples=[
            "cloudtaser plan diff approved/plan.yaml plan.yaml",
            "cloudtaser plan diff approved/plan.yaml plan.yaml -o json",
        ],
    )
    add_plan_argument(diff, "old", metavar="OLD", help="the earlier (e.g. approved) plan")
    add_plan_argument(diff, "new", metavar="NEW", help="the later plan")
    add_output_option(diff)
    diff.set_defaults(handler=_run_diff)

    canonical = groups.command(
        "plan",
        "canonical",
        help="print the canonical reviewed content an approval signs (or its digest)",
        description=(
            "Write the canonical bytes of PLAN's reviewed content to stdout (RFC 8785 JSON; "
            "docs/approval.md), e.g. to sign them with ssh-keygen -Y sign -n cloudtaser-plan "
            "or verify with ssh-keygen -Y verify."
        ),
        examples=[
            "cloudtaser plan canonical plan.yaml --digest",
            "cloudtaser plan canonical plan.yaml > reviewed.json",
        ],
        exit_codes="0 printed, 2 unreadable or invalid plan.",
    )
    add_plan_argument(canonical, "plan", metavar="PLAN", help="plan file")
    canonical.add_argument(
        "--digest", action="store_true", help="print only the digest (sha256:...)"
    )
    canonical.set_defaults(handler=_run_canonical)


def _passphrase() -> bytes | None:
    env = os.environ.get("CLOUDTASER_KEY_PASSPHRASE")
    if env is not None:
        return env.encode()
    if not sys.stdin.isatty():
        return None
    import getpass  # noqa: PLC0415

    return getpass.getpass("passphrase for the key: ").encode() or None


def signer_from_args(key: str) -> Signer:
    """A signer for ``--key`` (private key file, or .pub of a key in ssh-agent)."""
    from cloudtaser.plan.sshsig import load_signer  # noqa: PLC0415

    return load_signer(
        key, passphrase=_passphrase, agent_socket=os.environ.get("SSH_AUTH_SOCK") or None
    )


def default_identity(key: str | None) -> str:
    """The comment of the key's public half (``KEY.pub`` or KEY itself), else user@host."""
    if key:
        candidates = [Path(key)] if key.endswith(".pub") else [Path(key + ".pub")]
        for path in candidates:
            try:
                parts = path.read_text(encoding="utf-8", errors="replace").split(maxsplit=2)
            except OSError:
                continue
            if len(parts) == 3 and parts[2].strip() and " " not in parts[2].strip():
                return parts[2].strip()
    from cloudtaser.config import local_actor  # noqa: PLC0415

    return local_actor()


def _run_approve(args: argparse.Namespace) -> int:
    from cloudtaser.plan.canonical import plan_digest  # noqa: PLC0415

    if args.signature and not args.identity:
        from cloudtaser.errors import ConfigError  # noqa: PLC0415

        raise ConfigError("--signature needs --identity: the signer's principal")
    identity = args.identity or default_identity(args.key)
    if args.report:
        return _sign_report(args, identity)
    from cloudtaser.config import local_actor  # noqa: PLC0415
    from cloudtaser.plan import check_isolation  # noqa: PLC0415
    from cloudtaser.plan.approval import approve, record_signature  # noqa: PLC0415
    from cloudtaser.plan.store import PlanStore  # noqa: PLC0415

    with PlanStore(args.plan, actor=local_actor()) as store:
        plan = store.load()
        check_isolation(plan, source=str(args.plan))
        if args.signature:
            from cloudtaser.plan.sshsig import read_signature_file  # noqa: PLC0415

            armored = read_signature_file(args.signature)
            approved = record_signature(plan, armored, identity=identity, comment=args.comment)
        else:
            approved = approve(
                plan, signer_from_args(args.key), identity=identity, comment=args.comment
            )
        store.save(approved)
    entry = approved.approvals[-1]
    print(
        f"plan {approved.metadata.name}: reviewed content {plan_digest(approved)} approved by "
        f"{entry.identity}; {len(approved.approvals)} approval(s) recorded"
    )
    return ExitCode.OK


def _sign_report(args: argparse.Namespace, identity: str) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.errors import ConfigError  # noqa: PLC0415
    from cloudtaser.fileio import atomic_write  # noqa: PLC0415
    from cloudtaser.plan.attest import (  # noqa: PLC0415
        dump_report,
        load_report,
        require_verified_digest,
        sign_report,
    )

    if not args.key:
        raise ConfigError("--report needs --key (a report is signed, not given a signature)")
    plan = planlib.load(args.plan)
    report = load_report(args.report)
    require_verified_digest(plan, report, source=str(args.report))
    signed = sign_report(report, signer_from_args(args.key), identity=identity)
    atomic_write(args.report, dump_report(signed))
    print(
        f"verification report {args.report} for plan {report.plan} ({report.digest}) signed "
        f"by {identity}; {len(signed.signatures)} signature(s)"
    )
    return ExitCode.OK


def _run_verify(args: argparse.Namespace) -> int:
    import msgspec  # noqa: PLC0415

    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.cli.output import print_json  # noqa: PLC0415
    from cloudtaser.plan.approval import check_approvals  # noqa: PLC0415
    from cloudtaser.plan.signers import load_allowed_signers  # noqa: PLC0415

    plan = planlib.load(args.plan)
    signers = load_allowed_signers(args.allowed_signers)
    report = check_approvals(plan, signers, required=args.min_approvals)
    if args.output == "json":
        print_json(msgspec.to_builtins(_approvals_document(report, plan.metadata.name)))
    else:
        _print_approvals(report, plan.metadata.name)
    if report.ok:
        return ExitCode.OK
    from cloudtaser.cli.common import print_error  # noqa: PLC0415

    print_error(
        f"{args.plan}: not approved: reviewed content {report.digest} has {report.valid} valid "
        f"approval(s), {report.required} required; if it changed since the review, compare "
        "with the approved file: cloudtaser plan diff APPROVED.yaml THIS.yaml"
    )
    return ExitCode.REFUSED


def _approvals_document(report: ApprovalReport, name: str) -> PlanApprovals:
    from msgspec import UNSET  # noqa: PLC0415

    from cloudtaser.plan.result import (  # noqa: PLC0415
        ApprovalEntry,
        ApprovalsSummary,
        PlanApprovals,
    )

    approvals = [
        ApprovalEntry(
            index=c.index,
            identity=c.identity,
            at=c.at,
            state=c.state,
            fingerprint=c.fingerprint or UNSET,
            detail=c.detail or UNSET,
        )
        for c in report.checks
    ]
    summary = ApprovalsSummary(ok=report.ok, valid=report.valid, required=report.required)
    return PlanApprovals(plan=name, digest=report.digest, approvals=approvals, summary=summary)


def _print_approvals(report: ApprovalReport, name: str) -> None:
    from cloudtaser.cli.output import color, table  # noqa: PLC0415

    rows = [
        [
            str(c.index),
            c.identity,
            c.at,
            color(c.state.value, "green" if c.state.value == "valid" else "red"),
            c.detail,
        ]
        for c in report.checks
    ]
    if rows:
        print(table(rows, ["#", "IDENTITY", "AT", "STATE", "DETAIL"]))
    print(
        f"plan {name}: reviewed content {report.digest}: {report.valid} valid approval(s), "
        f"{report.required} required"
    )


def _run_diff(args: argparse.Namespace) -> int:
    import msgspec  # noqa: PLC0415

    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.cli.output import print_json  # noqa: PLC0415
    from cloudtaser.plan.diff import diff_plans  # noqa: PLC0415

    result = diff_plans(planlib.load(args.old), planlib.load(args.new))
    if args.output == "json":
        print_json(msgspec.to_builtins(_diff_document(result)))
    else:
        _print_diff(result)
    return ExitCode.PROBLEMS if result.reviewed_changed else ExitCode.OK


def _diff_document(result: PlanDiff) -> PlanDiffResult:
    from msgspec import UNSET  # noqa: PLC0415

    from cloudtaser.plan.result import (  # noqa: PLC0415
        DiffChange,
        DiffStatusChange,
        DiffSummary,
    )
    from cloudtaser.plan.result import PlanDiff as PlanDiffResult  # noqa: PLC0415

    changes = [
        DiffChange(
            op=c.op,  # type: ignore[arg-type]  # added | removed | changed | reordered
            path=c.path,
            old=c.old if c.op in {"removed", "changed", "reordered"} else UNSET,
            new=c.new if c.op in {"added", "changed", "reordered"} else UNSET,
        )
        for c in result.changes
    ]
    status_changes = [
        DiffStatusChange(
            workload=s.workload,
            old_status=s.old_status,
            new_status=s.new_status,
            old_last_error=s.old_error or UNSET,
            new_last_error=s.new_error or UNSET,
            new_history_entries=s.new_history,
        )
        for s in result.status_changes
    ]
    summary = DiffSummary(
        reviewed_changed=result.reviewed_changed,
        changes=len(changes),
        status_changes=len(status_changes),
    )
    return PlanDiffResult(
        old_digest=result.old_digest,
        new_digest=result.new_digest,
        changes=changes,
        status_changes=status_changes,
        summary=summary,
    )


def _shown(value: Any) -> str:
    """A changed plan value on one line: JSON (ASCII), cut like every shown text."""
    import json  # noqa: PLC0415

    from cloudtaser.sanitize import clip  # noqa: PLC0415

    return clip(json.dumps(value, sort_keys=True, ensure_ascii=True), 200)


def _print_diff(result: PlanDiff) -> None:
    from cloudtaser.cli.output import color  # noqa: PLC0415

    if result.reviewed_changed:
        print(f"reviewed content differs: {result.old_digest} -> {result.new_digest}")
        marks = {"added": ("+", "green"), "removed": ("-", "red"), "changed": ("~", "yellow")}
        for c in result.changes:
            mark, colour = marks.get(c.op, ("~", "yellow"))
            if c.op == "added":
                detail = f": {_shown(c.new)}"
            elif c.op == "removed":
                detail = f": {_shown(c.old)}"
            elif c.op == "reordered":
                detail = f": order {_shown(c.old)} -> {_shown(c.new)}"
            else:
                detail = f": {_shown(c.old)} -> {_shown(c.new)}"
            print(color(f"  {mark} {c.path}{detail}", colour))
    else:
        print(f"reviewed content unchanged ({result.new_digest})")
    if result.status_changes:
        print("status changes (not reviewed content):")
        for s in result.status_changes:
            line = f"  {s.workload}: {s.old_status} -> {s.new_status}"
            if s.new_history:
                line += f" ({s.new_history} new history entries)"
            if s.new_error and s.new_error != s.old_error:
                line += f"; lastError: {s.new_error}"
            print(line)


def _run_canonical(args: argparse.Namespace) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.plan.canonical import canonical_bytes, digest_of  # noqa: PLC0415

    data = canonical_bytes(planlib.load(args.plan))
    if args.digest:
        print(digest_of(data))
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return ExitCode.OK
