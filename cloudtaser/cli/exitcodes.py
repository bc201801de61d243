"""Exit codes, defined once (documented in docs/cli.md) and the one error-to-code mapping."""

from __future__ import annotations

import enum

from cloudtaser import errors

__all__ = ["ExitCode", "exit_code_for"]


class ExitCode(enum.IntEnum):
    """Process exit codes of every cloudtaser command."""

    OK = 0
    #: The command ran and found problems (missing secrets, drift, invalid plan contents).
    PROBLEMS = 1
    #: Invalid input or usage: bad flags, unreadable or invalid plan, bad configuration.
    USAGE = 2
    #: A remote system (cluster or vault) could not be reached or refused our credentials.
    REMOTE = 3
    #: An operation was attempted and failed (rollout failed, server error, lock held).
    FAILED = 4
    #: A gate refused the command before it changed anything: the plan's approvals or the
    #: verification report are missing, too few, stale or invalid (docs/approval.md).
    REFUSED = 5
    #: A bug in cloudtaser: an exception nobody expected.
    INTERNAL = 70
    #: Interrupted (Ctrl-C); the current write was completed first.
    INTERRUPTED = 130


def exit_code_for(exc: BaseException) -> tuple[ExitCode, str]:
    """Map an exception to ``(exit code, one-line message)``."""
    # before PlanError, its base: "not approved" is a refusal, not a typo
    if isinstance(exc, errors.ApprovalError):
        return ExitCode.REFUSED, str(exc)
    if isinstance(exc, errors.PlanError | errors.ConfigError):
        return ExitCode.USAGE, str(exc)
    if isinstance(
        exc,
        errors.VaultUnreachableError
        | errors.VaultAuthError
        | errors.VaultSealedError
        | errors.ClusterUnreachableError
        | errors.ClusterAuthError,
    ):
        return ExitCode.REMOTE, str(exc)
    if isinstance(exc, errors.CloudtaserError):
        return ExitCode.FAILED, str(exc)
    return ExitCode.INTERNAL, f"unexpected {type(exc).__name__} (this is a bug in cloudtaser)"
