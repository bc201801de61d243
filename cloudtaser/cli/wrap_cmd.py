"""``cloudtaser wrap -- CMD [ARGS...]``: the runtime wrapper as a command.

Standard library only at module level; :mod:`cloudtaser.wrapper` (requests) is imported when
the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cloudtaser.cli.common import print_error, usage_error

__all__ = ["register"]

_DESCRIPTION = """\
Log in to the vault, read the secrets named by CLOUDTASER_SECRET_PATHS / CLOUDTASER_ENV_MAP,
and replace this process with COMMAND, whose environment holds the secrets (and no
CLOUDTASER_* variable, VAULT_TOKEN or BAO_TOKEN). Nothing runs if any secret or field is
missing. COMMAND's exit code and signals are its own (exec, same PID).

environment:
  VAULT_ADDR                 vault URL with scheme and port (required)
  VAULT_AUTH_METHOD          kubernetes (default) or token
  VAULT_AUTH_ROLE            Kubernetes-auth role (required for kubernetes)
  VAULT_AUTH_MOUNT_PATH      default auth/kubernetes
  VAULT_TOKEN                vault token (token method only)
  VAULT_NAMESPACE            vault namespace (optional)
  VAULT_CACERT               CA bundle for the vault's certificate (optional)
  VAULT_SKIP_VERIFY          true disables TLS verification (never in production)
  CLOUDTASER_SECRET_PATHS    as the cloudtaser.io/secret-paths annotation
  CLOUDTASER_ENV_MAP         as the cloudtaser.io/env-map annotation
  CLOUDTASER_SA_TOKEN_PATH   default /var/run/secrets/kubernetes.io/serviceaccount/token
"""

_EPILOG = """\
example:
  CLOUDTASER_SECRET_PATHS=secret/data/payments/db CLOUDTASER_ENV_MAP=password=DB_PASSWORD \\
  VAULT_ADDR=https://bao.internal:8200 VAULT_AUTH_ROLE=cloudtaser-prod-payments \\
      cloudtaser wrap -- /app/server --port 8080

exit codes: COMMAND's own once it runs; before that 2 bad configuration, 3 vault unreachable
or login refused, 4 a secret or field is missing, 126 COMMAND not executable, 127 not found.
See docs/connect-and-runtime.md.
"""


def register(groups: Any) -> None:
    """Attach the top-level ``wrap`` command."""
    wrap = groups.command(
        None,
        "wrap",
        help="runtime wrapper: fetch a workload's secrets and exec its command with them",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    wrap.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="what to run"
    )
    wrap.set_defaults(handler=_run_wrap)


def _run_wrap(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        return usage_error("no command: cloudtaser wrap -- COMMAND [ARGS...]")
    from cloudtaser.wrapper import exec_command, prepare  # noqa: PLC0415

    env = prepare(os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        exec_command(argv, env)
    except FileNotFoundError:
        print_error(f"command not found: {argv[0]}")
        return 127
    except PermissionError:
        print_error(f"permission denied executing {argv[0]}")
        return 126
    except OSError as exc:
        print_error(f"cannot execute {argv[0]}: {exc.strerror}")
        return 126
