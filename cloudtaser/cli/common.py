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
    from cloudtaser.target.kube.session import KubeSession

__all__ = [
    "CloudtaserParser",
    "add_cluster_options",
    "add_dry_run_option",
    "add_output_option",
    "add_plan_argument",
    "add_vault_options",
    "cluster_session",
    "cluster_target",
    "duration_seconds",
    "examples_epilog",
    "int_1_to_64",
    "parse_duration",
    "plan_files_completer",
    "print_error",
    "usage_error",
    "vault_client",
    "vault_target",
]


class CloudtaserParser(argparse.ArgumentParser):
    """The parser class of every cloudtaser (sub)command.

    * ``allow_abbrev=False``: ``--out`` is never silently taken for ``--output-plan``.
    * An unknown option is reported by the parser of the command it was given to (its own
      usage line, not the top-level one), with a "did you mean" from that command's options.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace = argparse.Namespace() if namespace is None else namespace
        # nested sub-parsers run later and copy their namespace over ours: the deepest wins
        namespace._cloudtaser_parser = self
        return super().parse_known_args(args, namespace)

    def parse_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        leaf = getattr(parsed, "_cloudtaser_parser", self)
        if extras:
            leaf.error(unrecognized_message(leaf, extras))
        with_leaf = vars(parsed)
        with_leaf.pop("_cloudtaser_parser", None)
        return parsed


def unrecognized_message(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments: --out json (did you mean --output?)``."""
    import difflib  # noqa: PLC0415

    known = sorted(parser._option_string_actions)
    hints = []
    for extra in extras:
        if not extra.startswith("-"):
            continue
        name = extra.split("=", 1)[0]
        prefixed = [k for k in known if k.startswith(name) and len(name) > 2]
        close = prefixed[:3] or difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    message = f"unrecognized arguments: {' '.join(extras)}"
    return message + (" (" + "; ".join(hints) + ")" if hints else "")


def examples_epilog(
    examples: Any, epilog: str | None = None, exit_codes: str | None = None
) -> str | None:
    """The help epilog: an ``examples:`` block of shell lines, then ``epilog``, then the
    ``exit codes:`` paragraph (``exit_codes``: ``"0 done, 2 bad flags, ..."``), which every
    command's help ends with (tests/cli/test_exit_codes.py walks the parser).

    Use with ``formatter_class=argparse.RawDescriptionHelpFormatter`` (``groups.command`` does).
    Each example is one command line; a long one may be split with ``" \\\n      "``.
    """
    import textwrap  # noqa: PLC0415

    parts = []
    lines = list(examples)
    if lines:
        parts.append("examples:\n" + "\n".join(f"  {line}" for line in lines) + "\n")
    if epilog:
        parts.append(epilog)
    if exit_codes:
        parts.append(textwrap.fill(f"exit codes: {exit_codes}", width=92) + "\n")
    return "\n".join(parts) or None


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
    are :func:`cloudtaser.source.grants.parse_duration`'s)."""
    from cloudtaser.source.grants import parse_duration  # noqa: PLC0415

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_duration(text: str) -> float:
    """``300``, ``300s``, ``5m``, ``1h``, ``500ms`` -> seconds (argparse type for waits; the
    grammar is the contract's :func:`cloudtaser.contract.parse_duration`)."""
    from cloudtaser.contract import ContractError  # noqa: PLC0415
    from cloudtaser.contract import parse_duration as parse  # noqa: PLC0415

    try:
        value = parse("the duration", text)
    except ContractError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return value


def print_error(message: str) -> None:
    """``cloudtaser: error: MESSAGE`` on stderr."""
    print(f"cloudtaser: error: {message}", file=sys.stderr)


def usage_error(message: str) -> int:
    """Print ``message`` as an error and return the usage exit code (2)."""
    print_error(message)
    return ExitCode.USAGE


def kubeconfig_paths(parsed_args: argparse.Namespace | None) -> list[str]:
    """The kubeconfig files kubectl would read: --kubeconfig, else every KUBECONFIG entry,
    else ~/.kube/config."""
    flag = getattr(parsed_args, "kubeconfig", None)
    if flag:
        return [flag]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [str(Path.home() / ".kube" / "config")]


def _kube_contexts_completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Complete context names from every kubeconfig file (local read only)."""
    names: list[str] = []
    for path in kubeconfig_paths(parsed_args):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            continue
        names += _context_names(text)
    return sorted({n for n in names if n.startswith(prefix)})


def _context_names(text: str) -> list[str]:
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
    return names


def _plan_of(parsed_args: argparse.Namespace) -> Any:
    """The plan named on the command line being completed, or None (local read only)."""
    path = getattr(parsed_args, "plan", None)
    if not path or path == "-":
        return None
    try:
        from cloudtaser import plan as planlib  # noqa: PLC0415 - only while completing

        return planlib.load(path)
    except Exception:  # noqa: BLE001 - a completion never fails loudly
        return None


def tenant_completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Complete ``--tenant`` from the plan given on the command line."""
    loaded = _plan_of(parsed_args)
    if loaded is None:
        return []
    return sorted({t.name for t in loaded.tenants if t.name.startswith(prefix)})


def workload_completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Complete ``--workload`` as NAMESPACE/KIND/NAME from the plan on the command line."""
    loaded = _plan_of(parsed_args)
    if loaded is None:
        return []
    refs = {f"{t.namespace}/{w.kind}/{w.name}" for t in loaded.tenants for w in t.workloads}
    return sorted(r for r in refs if r.startswith(prefix))


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


class _NotAVaultNamespace(argparse.Action):
    """``--namespace`` on a vault-only command: refuse it with a hint (a kubectl user means a
    Kubernetes namespace; silently taking it as the vault namespace made every path 'missing')."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        parser.error(
            "--namespace is not accepted here: this command talks only to the vault. For a "
            "vault (Enterprise/OpenBao) namespace use --vault-namespace NS or VAULT_NAMESPACE; "
            "to limit the command to some tenants use --tenant NAME"
        )


def add_vault_options(
    parser: argparse.ArgumentParser, *, token: bool = True, namespace_alias: bool = True
) -> None:
    """Vault address, token, namespace and TLS options (with the aliases seen in the wild).

    The vault namespace is ``--vault-namespace`` only. ``namespace_alias`` (vault-only
    commands) adds a hidden ``--namespace`` that fails with a hint instead of meaning anything;
    commands that also take a Kubernetes namespace (``target ...``) pass ``False``.
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
            help="vault token (prefer --token-file, $VAULT_TOKEN/$BAO_TOKEN or ~/.vault-token "
            "from 'bao login': a flag ends up in shell history and the process list)",
        )
        group.add_argument(
            "--token-file",
            metavar="FILE",
            help="read the vault token from FILE",
        )
    if namespace_alias:
        group.add_argument(
            "--namespace", nargs="?", action=_NotAVaultNamespace, help=argparse.SUPPRESS
        )
    group.add_argument(
        "--vault-namespace",
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


#: ``--dry-run`` and kubectl's spellings of it. Both mean the one dry run cloudtaser has: it
#: reads the live objects (a server-side dry run where it writes: ``dryRun=All``) and writes
#: nothing. A client-only dry run (no request at all) cannot show the exact change, so
#: ``=client`` is the same run, documented as such rather than refused (docs/cli.md).
DRY_RUN_FLAGS = ("--dry-run", "--dry-run=server", "--dry-run=client")


def add_dry_run_option(parser: argparse._ActionsContainer, *, help: str) -> argparse.Action:
    """``--dry-run`` (also ``--dry-run=server`` and ``--dry-run=client``, kubectl's habit) as
    ``args.dry_run``; ``help`` says what this command's dry run does. Registered as exact
    option strings, so ``--dry-run PLAN`` still leaves PLAN to the positional argument."""
    return parser.add_argument(
        *DRY_RUN_FLAGS,
        dest="dry_run",
        action="store_true",
        help=f"{help} (=server and =client, kubectl's spellings, are the same run)",
    )


OUTPUT_FORMATS = ("text", "json")


def _output_format(hint: str) -> Any:
    def parse(text: str) -> str:
        if text in OUTPUT_FORMATS:
            return text
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an output format: -o/--output takes text or json{hint}"
        )

    return parse


def add_output_option(parser: argparse._ActionsContainer, *, hint: str = "") -> argparse.Action:
    """``-o/--output text|json``: the result format on stdout, on every command that reports.

    Every command that prints a result registers it with this function. The one wider ``-o``
    is ``target discover``'s, where the seed writes ``-o plan.yaml``: a value ending in
    ``.yaml``/``.yml`` (or ``-``) is the plan file there (docs/discover.md). With ``json``,
    print the result's :class:`cloudtaser.results.Result` with
    :func:`cloudtaser.cli.output.print_json`. ``hint`` is
    appended to the error for a value that is not a format (e.g. discover's "write the plan
    with --output-plan FILE").
    """
    return parser.add_argument(
        "-o",
        "--output",
        type=_output_format(hint),
        choices=OUTPUT_FORMATS,
        default="text",
        metavar="{text,json}",
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
    from cloudtaser.target.kube.session import connect  # noqa: PLC0415

    return connect(cluster_target(args))


#: Total time the vault requests of one ``source`` command may take (docs/source-commands.md).
COMMAND_DEADLINE = 1800.0


def vault_client(args: argparse.Namespace, *, pool_size: int) -> OpenBaoClient:
    """A client for the vault named by ``args`` (use it in a ``with`` block)."""
    from cloudtaser.source.openbao import OpenBaoClient, RetryPolicy  # noqa: PLC0415

    # every request of one command, retries included, ends within COMMAND_DEADLINE
    retry = RetryPolicy(command_deadline=COMMAND_DEADLINE)
    return OpenBaoClient(vault_target(args), pool_size=pool_size, retry=retry)
