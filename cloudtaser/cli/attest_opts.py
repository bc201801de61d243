"""``source verify-plan --attest FILE [--key KEY] [--identity ID]``: write (and sign) the
verification report that ``target protect --require-verified`` checks (docs/approval.md).

Standard library only at module level.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudtaser.plan import MigrationPlan
    from cloudtaser.plan.sshsig import Signer
    from cloudtaser.source.openbao import OpenBaoClient
    from cloudtaser.source.verify import VerifyResult

__all__ = ["add_attest_options", "attestation_signer", "write_attestation"]


def add_attest_options(parser: argparse.ArgumentParser) -> None:
    """Register ``--attest``, ``--key`` and ``--identity``."""
    group = parser.add_argument_group("verification report (docs/approval.md)")
    group.add_argument(
        "--attest",
        metavar="FILE",
        help="write a verification report bound to the plan's reviewed-content digest: which "
        "paths and fields were proven present, when, against which vault (the plan itself "
        "is never changed); 'target protect --require-verified FILE' checks it",
    )
    group.add_argument(
        "--key",
        metavar="KEY",
        help="sign the report with this SSH key (private key file, or .pub of an agent key)",
    )
    group.add_argument(
        "--identity",
        metavar="ID",
        help="the signer's principal in the allowed-signers file (default: the key's comment)",
    )


def attestation_signer(args: argparse.Namespace) -> Signer | None:
    """The signer of ``--key``, resolved before any vault request: a key that cannot sign (not
    in ssh-agent, wrong passphrase, unreadable) fails now, not after the whole verification.
    ``None`` without ``--key``."""
    from cloudtaser.errors import ConfigError  # noqa: PLC0415

    key = getattr(args, "key", None)
    if not key:
        return None
    if not getattr(args, "attest", None):
        raise ConfigError("--key signs the verification report: it needs --attest FILE")
    from cloudtaser.cli.approval_cmds import signer_from_args  # noqa: PLC0415

    return signer_from_args(key)


def write_attestation(
    args: argparse.Namespace,
    plan: MigrationPlan,
    result: VerifyResult,
    client: OpenBaoClient,
    signer: Signer | None,
) -> None:
    """Write the report ``--attest`` asks for (no-op without it), signed by ``signer`` (from
    :func:`attestation_signer`, called before the verification)."""
    from cloudtaser.errors import ConfigError  # noqa: PLC0415

    path = getattr(args, "attest", None)
    if not path:
        return
    from cloudtaser.cli.approval_cmds import default_identity  # noqa: PLC0415
    from cloudtaser.cli.output import progress  # noqa: PLC0415
    from cloudtaser.fileio import atomic_write  # noqa: PLC0415
    from cloudtaser.plan.attest import build_report, dump_report, sign_report  # noqa: PLC0415
    from cloudtaser.source.attest import proven_paths  # noqa: PLC0415

    report = build_report(
        plan,
        proven_paths(plan, result),
        vault_address=client.address,
        vault_namespace=client.namespace or None,
    )
    if signer is not None:
        identity = args.identity or default_identity(args.key)
        report = sign_report(report, signer, identity=identity)
    try:
        atomic_write(path, dump_report(report))
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror or exc}") from None
    progress(
        f"verification report {path}: {len(report.proven)} path(s) proven for reviewed content "
        f"{report.digest}" + (" (signed)" if report.signatures else "")
    )
