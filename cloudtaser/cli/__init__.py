# PYTHON_ARGCOMPLETE_OK
"""The ``cloudtaser`` command line: a thin layer over the library.

Only the standard library is imported at module level so that shell completion stays fast;
every handler imports what it needs (msgspec, yaml, lightkube, requests) when it runs.

``build_parser()`` is pure; ``main(argv)`` parses, dispatches and maps errors to exit codes in
one place (:func:`cloudtaser.cli.exitcodes.exit_code_for`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from cloudtaser import __version__
from cloudtaser.cli.common import CloudtaserParser, examples_epilog, print_error
from cloudtaser.cli.exitcodes import ExitCode, exit_code_for

__all__ = ["build_parser", "console_main", "kubectl_complete_main", "main"]

#: Modules that register commands. Each has ``register(groups)`` and imports only the standard
#: library at module level.
COMMAND_MODULES: tuple[str, ...] = (
    "cloudtaser.cli.plan_cmds",
    "cloudtaser.cli.source_cmds",
    "cloudtaser.cli.discover_cmd",
    "cloudtaser.cli.protect_cmd",
    "cloudtaser.cli.lifecycle_cmds",
    "cloudtaser.cli.connect_cmd",
    "cloudtaser.cli.install_cmd",
    "cloudtaser.cli.fleet_cmd",
)

_EPILOG = """\
workflow: eight steps, each may run on a different machine, by a different team, with access to
one side only (the plan crosses between them and never holds a secret value):
  0. cloudtaser target connect --kubeconfig KCFG --openbao-addr URL     once per cluster
  1. cloudtaser target discover --kubeconfig KCFG -o plan.yaml          discover (cluster)
  2. cloudtaser plan approve plan.yaml --key ~/.ssh/id_ed25519          review (no access)
  3. cloudtaser source apply-plan plan.yaml --require-approval \\
         --allowed-signers team.signers                                 apply-plan (vault)
     then the secret owners run each 'bao kv put' that 'cloudtaser plan todo plan.yaml' lists
  4. cloudtaser source verify-plan plan.yaml --attest verified.json     verify-plan (vault)
  5. cloudtaser target install --image REF --allowed-vault-address URL \\
         --audience AUD                                                 install (cluster)
  6. cloudtaser target protect --plan plan.yaml --vault-address URL \\
         --interactive --require-verified verified.json                 protect (cluster)
  7. cloudtaser target finalize --plan plan.yaml --interactive \\
         --delete-secrets --require-verified verified.json              finalize (cluster)
  8. cloudtaser target audit -o html --report audit.html                audit (cluster)

exit codes: 0 ok, 1 problems found, 2 invalid input or usage, 3 cannot reach or authenticate
to a remote system, 4 operation failed, 5 refused by an approval or verification gate, 70 a
bug, 130 interrupted (each command's help ends with its own).
docs: docs/workflow.md, docs/cli.md, docs/plan-format.md
"""


_EXAMPLES = [
    "cloudtaser target discover --kubeconfig ~/.kube/prod -o plan.yaml",
    "cloudtaser plan validate plan.yaml",
    "cloudtaser source apply-plan plan.yaml --openbao-addr https://bao.example:8200 --dry-run",
    "cloudtaser plan todo plan.yaml",
    "cloudtaser source verify-plan plan.yaml --openbao-addr https://bao.example:8200",
    "cloudtaser target protect --plan plan.yaml --vault-address https://bao.example:8200 "
    "--interactive",
    "cloudtaser target audit",
]


class _Groups:
    """The noun sub-parsers command modules attach verbs to (created on first use)."""

    def __init__(self, top: argparse._SubParsersAction[Any]):
        self._top = top
        self._nouns: dict[str, argparse._SubParsersAction[Any]] = {}
        self.common = _common_parent()

    _HELP: ClassVar[dict[str, str]] = {
        "plan": "work with plan files locally (no system access)",
        "fleet": "merge the audits of many clusters, from files (no cluster, no vault)",
        "source": "vault-side commands: talk only to OpenBao / Vault, never to a cluster",
        "target": "cluster-side commands: talk only to a Kubernetes cluster, never to a vault",
    }

    def noun(self, name: str) -> argparse._SubParsersAction[Any]:
        if name not in self._nouns:
            help_text = self._HELP.get(name)
            parser = self._top.add_parser(
                name,
                help=help_text,
                description=help_text,
                parents=[self.common],
                epilog=f"exit codes: those of the COMMAND run (cloudtaser {name} COMMAND "
                "--help lists them), 2 without one.",
            )
            sub = parser.add_subparsers(
                dest="verb", metavar="COMMAND", required=True, parser_class=CloudtaserParser
            )
            self._nouns[name] = sub
        return self._nouns[name]

    def top(self) -> argparse._SubParsersAction[Any]:
        return self._top

    def command(
        self,
        noun: str | None,
        name: str,
        *,
        help: str,
        description: str,
        epilog: str | None = None,
        examples: Sequence[str] = (),
        exit_codes: str | None = None,
    ) -> argparse.ArgumentParser:
        """A command ``noun name`` (top-level when ``noun`` is ``None``) with the common
        options, its description and epilog shown as written. ``examples`` are shell lines
        rendered as the ``examples:`` block of the help (tests/cli/test_cli_examples.py parses
        each one against this parser); ``exit_codes`` ends the help (``"0 done, 2 bad
        flags"``) unless ``epilog`` ends with its own ``exit codes:`` paragraph."""
        sub = self._top if noun is None else self.noun(noun)
        parser: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help,
            description=description,
            epilog=examples_epilog(examples, epilog, exit_codes),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[self.common],
        )
        return parser


def _common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more diagnostics on stderr; -v also shows tracebacks of unexpected errors",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """Build the complete argument parser. Pure: no I/O, no heavy imports."""
    parser = CloudtaserParser(
        prog="cloudtaser",
        description=(
            "Move Kubernetes workloads off Kubernetes Secrets onto OpenBao / HashiCorp Vault "
            "through a reviewable migration plan that never holds a secret value."
        ),
        epilog=examples_epilog(_EXAMPLES, _EPILOG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cloudtaser {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more diagnostics on stderr; -v also shows tracebacks of unexpected errors",
    )
    top = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=CloudtaserParser
    )
    groups = _Groups(top)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(groups)
    version = groups.command(
        None,
        "version",
        help="print the cloudtaser version",
        description="Print the cloudtaser version.",
        examples=["cloudtaser version"],
        exit_codes="0 printed.",
    )
    version.set_defaults(handler=_run_version)
    return parser


def _run_version(args: argparse.Namespace) -> int:
    print(f"cloudtaser {__version__}")
    return ExitCode.OK


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests redirect it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging(verbosity: int) -> None:
    """Library diagnostics (logger ``cloudtaser``) go to stderr; -v shows INFO, -vv DEBUG."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("cloudtaser")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("cloudtaser: %(levelname)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the process exit code."""
    parser = build_parser()
    try:
        import argcomplete  # noqa: PLC0415 - only when completing, cheap otherwise

        argcomplete.autocomplete(parser)
    except ImportError:  # pragma: no cover - argcomplete is a declared dependency
        pass
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help / --version (0) or a usage error (2)
        return int(exc.code or 0) if isinstance(exc.code, int) else ExitCode.USAGE
    verbosity = int(getattr(args, "verbose", 0) or 0)
    _configure_logging(verbosity)
    precheck = getattr(args, "precheck", None)
    if precheck is not None:
        problem = precheck(args)
        if problem:
            print_error(problem)
            return ExitCode.USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("cloudtaser: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `| head`); nothing more to say
        sys.stderr.close()
        return ExitCode.OK
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        code, message = exit_code_for(exc)
        print_error(message)
        # an expected error (bad plan, unreachable vault, ...) is fully said by its message;
        # only a bug deserves a traceback, and only when asked for with -v
        if code == ExitCode.INTERNAL:
            if verbosity > 0:
                import traceback  # noqa: PLC0415

                from cloudtaser.sanitize import scrub_credentials  # noqa: PLC0415

                # a chained library exception may quote a credential: scrub the whole text
                text = "".join(traceback.format_exception(exc))
                sys.stderr.write(scrub_credentials(text))
            else:
                print("cloudtaser: run again with -v for a traceback", file=sys.stderr)
        return code


def console_main() -> None:
    """Entry point of the ``cloudtaser`` console script."""
    sys.exit(main())


def kubectl_complete_main() -> None:
    """Entry point of ``kubectl_complete-cloudtaser``: kubectl (1.26+) runs it with the words
    after ``kubectl cloudtaser`` (the last one being completed) to complete a plugin's
    arguments; it answers one candidate per line and ``:4`` (no file completion), the protocol
    of kubectl's own completion. The candidates are argcomplete's, as for ``cloudtaser``."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import argcomplete  # noqa: PLC0415

    line = " ".join(["cloudtaser", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "candidates")  # noqa: PTH118
        os.environ.update(
            _ARGCOMPLETE="1",
            _ARGCOMPLETE_IFS="\n",
            COMP_LINE=line,
            COMP_POINT=str(len(line)),
            _ARGCOMPLETE_STDOUT_FILENAME=out,
        )
        argcomplete.autocomplete(build_parser(), exit_method=lambda *_args: None)
        try:
            with open(out, encoding="utf-8") as handle:  # noqa: PTH123
                candidates = [c.strip() for c in handle.read().split("\n") if c.strip()]
        except OSError:
            candidates = []
    for candidate in candidates:
        print(candidate)
    print(":4")
