"""Options shared by several commands, and their resolution into frozen config values.

Standard library only at module level (shell completion must stay fast).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtaser.config import ClusterTarget, VaultTarget

__all__ = [
    "add_cluster_options",
    "add_output_option",
    "add_vault_options",
    "cluster_target",
    "plan_files_completer",
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
        help="OpenBao/Vault address (default: $BAO_ADDR, then $VAULT_ADDR)",
    )
    if token:
        group.add_argument(
            "--token",
            dest="vault_token",
            metavar="TOKEN",
            help="vault token (prefer --token-file or $BAO_TOKEN/$VAULT_TOKEN: "
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
        help="vault namespace, sent as X-Vault-Namespace (default: $BAO_NAMESPACE, "
        "then $VAULT_NAMESPACE)",
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
