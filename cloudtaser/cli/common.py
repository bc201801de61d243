"""Options shared by several commands, and their resolution into frozen config values.

Standard library only at module level (shell completion must stay fast).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.exitcodes import ExitCode

if TYPE_CHECKING:
    from cloudtaser.config import ClusterTarget, VaultTarget
    from cloudtaser.source.openbao import OpenBaoClient
    from cloudtaser.target.kube import KubeSession

__all__ = [
    "add_cluster_options",
    "add_output_option",
    "add_plan_argument",
    "add_vault_options",
    "cluster_session",
    "cluster_target",
    "duration_seconds",
    "int_1_to_64",
    "plan_files_completer",
    "print_error",
    "usage_error",
    "vault_client",
    "vault_target",
]


def plan_files_completer(prefix: str, **_: Any) -> list[str]:
    """Complete YAML files and directories, without touching the network."""
    directory, _sep, stem = prefix.rpartition("/")
    base = Path(directory or ".")
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.startswith(stem) or entry.name.startswith("."):
            continue
        shown = f"{directory}/{entry.name}" if directory else entry.name
        if entry.is_dir():
            out.append(shown + "/")
        elif entry.suffix in {".yaml", ".yml"}:
            out.append(shown)
    return sorted(out)


def add_plan_argument(
    parser: argparse._ActionsContainer, *names: str, **kwargs: Any
) -> argparse.Action:
    """An argument naming a plan file (positional or flag), completed with
    :func:`plan_files_completer`. ``kwargs`` go to ``add_argument``."""
    action = parser.add_argument(*names, **kwargs)
    action.completer = plan_files_completer  # type: ignore[attr-defined]
    return action


def int_1_to_64(text: str) -> int:
    """A whole number from 1 to 64 (argparse type for ``--parallel``, ``--concurrency``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def duration_seconds(text: str) -> int:
    """``3600``, ``1h``, ``90m``, ``1h30m`` -> whole seconds (argparse type for TTLs; the rules
    are :func:`cloudtaser.source.provision.parse_duration`'s)."""
    from cloudtaser.source.provision import parse_duration  # noqa: PLC0415

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def print_error(message: str) -> None:
    """``cloudtaser: error: MESSAGE`` on stderr."""
    print(f"cloudtaser: error: {message}", file=sys.stderr)


def usage_error(message: str) -> int:
    """Print ``message`` as an error and return the usage exit code (2)."""
    print_error(message)
    return ExitCode.USAGE


def _kube_contexts_completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Complete context names from the kubeconfig file (local read only)."""
    path = (
        getattr(parsed_args, "kubeconfig", None)
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or str(Path.home() / ".kube" / "config")
    )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    names = []
    in_contexts = False
    for line in text.splitlines():  # a cheap scan: no yaml import during completion
        if line.startswith("contexts:"):
            in_contexts = True
            continue
        if in_contexts and line and not line[0].isspace() and not line.startswith("-"):
            in_contexts = False
        stripped = line.strip()
        if in_contexts and stripped.startswith(("name:", "- name:")):
            names.append(stripped.split("name:", 1)[1].strip().strip("'\""))
    return [n for n in names if n.startswith(prefix)]


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--kubeconfig`` and ``--context`` with kubectl semantics."""
    group = parser.add_argument_group("cluster connection")
    group.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)",
    )
    ctx = group.add_argument(
        "--context", metavar="NAME", help="kubeconfig context (default: the current context)"
    )
    ctx.completer = _kube_contexts_completer  # type: ignore[attr-defined]


def add_vault_options(
    parser: argparse.ArgumentParser, *, token: bool = True, namespace_alias: bool = True
) -> None:
    """Vault address, token, namespace and TLS options (with the aliases seen in the wild).

    ``namespace_alias`` adds ``--namespace`` for the vault namespace; commands that also take a
    Kubernetes namespace (``target ...``) keep only ``--vault-namespace``.
    """
    group = parser.add_argument_group("vault connection")
    group.add_argument(
        "--openbao-addr",
        "--vault-addr",
        "--vault-address",
        dest="vault_addr",
        metavar="URL",
        help="OpenBao/Vault address (default: $VAULT_ADDR, then $BAO_ADDR)",
    )
    if token:
        group.add_argument(
            "--token",
            dest="vault_token",
            metavar="TOKEN",
            help="vault token (prefer --token-file or $VAULT_TOKEN/$BAO_TOKEN: "
            "a flag ends up in shell history and the process list)",
        )
        group.add_argument(
            "--token-file",
            metavar="FILE",
            help="read the vault token from FILE",
        )
    group.add_argument(
        "--vault-namespace",
        *(["--namespace"] if namespace_alias else []),
        dest="vault_namespace",
        metavar="NS",
        help="vault namespace, sent as X-Vault-Namespace (default: $VAULT_NAMESPACE, "
        "then $BAO_NAMESPACE)",
    )
    group.add_argument(
        "--ca-cert",
        metavar="FILE",
        help="CA bundle to verify the vault's TLS certificate (default: $VAULT_CACERT)",
    )
    group.add_argument(
        "--tls-skip-verify",
        action="store_true",
        default=None,
        help="DANGEROUS: do not verify the vault's TLS certificate (also $VAULT_SKIP_VERIFY)",
    )
    group.add_argument(
        "--allow-cross-origin-redirects",
        action="store_true",
        default=False,
        help="follow a vault's 307/308 redirect to another host or port (default: same origin "
        "only, since the token goes with it; https is never downgraded)",
    )


def add_output_option(parser: argparse.ArgumentParser) -> None:
    """``-o/--output text|json`` for commands that report results."""
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="result format on stdout (default: text; json for automation)",
    )


def vault_target(args: argparse.Namespace, *, require_token: bool = True) -> VaultTarget:
    """Resolve the vault options of ``args`` (flag > environment > default)."""
    from cloudtaser.config import resolve_vault_target  # noqa: PLC0415

    target = resolve_vault_target(
        address=getattr(args, "vault_addr", None),
        token=getattr(args, "vault_token", None),
        token_file=getattr(args, "token_file", None),
        namespace=getattr(args, "vault_namespace", None),
        ca_cert=getattr(args, "ca_cert", None),
        skip_verify=getattr(args, "tls_skip_verify", None),
        require_token=require_token,
        cross_origin_redirects=bool(getattr(args, "allow_cross_origin_redirects", False)),
    )
    if target.tls_insecure:
        print(
            f"cloudtaser: WARNING: TLS verification of {target.address} is DISABLED; "
            "anyone on the network path can read the vault token and every answer. "
            "Use --ca-cert instead.",
            file=sys.stderr,
        )
    return target


def cluster_target(args: argparse.Namespace) -> ClusterTarget:
    """Resolve ``--kubeconfig`` / ``--context`` (kubectl semantics)."""
    from cloudtaser.config import resolve_cluster_target  # noqa: PLC0415

    return resolve_cluster_target(
        kubeconfig=getattr(args, "kubeconfig", None), context=getattr(args, "context", None)
    )


def cluster_session(args: argparse.Namespace) -> KubeSession:
    """Connect to the cluster named by ``args`` (use it in a ``with`` block)."""
    from cloudtaser.target.kube import connect  # noqa: PLC0415

    return connect(cluster_target(args))


#: Total time the vault requests of one ``source`` command may take (docs/source-commands.md).
COMMAND_DEADLINE = 1800.0


def vault_client(args: argparse.Namespace, *, pool_size: int) -> OpenBaoClient:
    """A client for the vault named by ``args`` (use it in a ``with`` block)."""
    from cloudtaser.source.openbao import OpenBaoClient, RetryPolicy  # noqa: PLC0415

    # every request of one command, retries included, ends within COMMAND_DEADLINE
    retry = RetryPolicy(command_deadline=COMMAND_DEADLINE)
    return OpenBaoClient(vault_target(args), pool_size=pool_size, retry=retry)
