"""``cloudtaser target protect`` and ``target unprotect``: cluster only, never the vault.

Standard library only at module level; the library (lightkube, msgspec, yaml) is imported
inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.common import (
    add_cluster_options,
    add_output_option,
    add_plan_argument,
    cluster_session,
    int_1_to_64,
    usage_error,
)
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import color, print_json, progress, table

if TYPE_CHECKING:
    from cloudtaser.target.protect import Decision, Event, Proposal, RunReport

__all__ = ["parse_duration", "register"]

_PROTECT_DESCRIPTION = """\
For each pending workload of the plan, in plan order: check that it still consumes the
Secrets the plan lists (drift), show the secret mapping, ask (--interactive) or go on (--yes),
apply the cloudtaser.io/* pod-template annotations and a restart marker in ONE
strategic-merge patch (exactly one rollout), wait for the rollout by kubectl's rules, prove
on the new pods that the injector wrapped them (else the workload stays pending with the
likely cause), and record the result in the plan at once. migrated and skipped workloads
are never touched again, so an interrupted run resumes where it stopped. Talks only to the
cluster. See docs/protect.md.
"""

_UNPROTECT_DESCRIPTION = """\
Undo protect for the chosen workloads: remove exactly the annotations (and label) protect
added, in one patch (one rollout), wait, and record the workload as pending again.
Skipped workloads are left alone. See docs/protect.md.
"""


def parse_duration(text: str) -> float:
    """``300``, ``300s``, ``5m``, ``1h``, ``500ms`` -> seconds (argparse type; the grammar is
    the contract's :func:`cloudtaser.contract.parse_duration`)."""
    from cloudtaser.contract import ContractError  # noqa: PLC0415
    from cloudtaser.contract import parse_duration as parse  # noqa: PLC0415

    try:
        value = parse("the duration", text)
    except ContractError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return value


def register(groups: Any) -> None:
    """Attach ``target protect`` and ``target unprotect``."""
    protect = groups.command(
        "target",
        "protect",
        help="annotate pending workloads for injection and roll each out once",
        description=_PROTECT_DESCRIPTION,
    )
    _add_run_options(protect, protect=True)
    protect.set_defaults(handler=_run_protect)

    unprotect = groups.command(
        "target",
        "unprotect",
        help="remove the annotations protect added (one rollout) and mark workloads pending",
        description=_UNPROTECT_DESCRIPTION,
    )
    _add_run_options(unprotect, protect=False)
    unprotect.set_defaults(handler=_run_unprotect)


def _add_run_options(parser: argparse.ArgumentParser, *, protect: bool) -> None:
    add_plan_argument(
        parser,
        "--plan",
        required=True,
        metavar="PLAN",
        help="the migration plan (updated in place)",
    )
    add_cluster_options(parser)
    if protect:
        parser.add_argument(
            "--vault-address",
            "--vault-addr",
            "--openbao-addr",
            dest="vault_address",
            metavar="URL",
            help="the vault URL the PODS will use, written into cloudtaser.io/vault-address "
            "(required; not taken from $VAULT_ADDR, which is usually the operator's address)",
        )
        parser.add_argument(
            "--no-verify-injection",
            dest="verify_injection",
            action="store_false",
            help="record migrated once the rollout completes without proving on the new pods "
            "that they were injected (a loud warning per workload and in the plan history; "
            "finalize still proves it before removing anything). Default: prove it",
        )
    if protect:
        _add_pin_options(parser)
    mode = parser.add_argument_group("confirmation (exactly one, except with --dry-run)")
    exclusive = mode.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--interactive",
        action="store_true",
        help="ask for each workload: [y]es / [n]o / [q]uit (answers may come from a pipe)",
    )
    exclusive.add_argument(
        "--yes", "-y", action="store_true", help="go on for every workload without asking"
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="server-side dry run (dryRun=All): print the exact patches; change neither the "
        "cluster nor the plan",
    )
    run.add_argument(
        "--timeout",
        type=parse_duration,
        default=300.0,
        metavar="DURATION",
        help="how long to wait for each rollout (default: 5m; e.g. 90s, 10m)",
    )
    run.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="do not wait for rollouts; record the workload as soon as the patch is accepted",
    )
    run.add_argument(
        "--parallel",
        type=int_1_to_64,
        default=1,
        metavar="N",
        help="roll out up to N workloads at once (default: 1); plan writes stay serialized",
    )
    run.add_argument(
        "--poll-interval",
        type=parse_duration,
        default=1.0,
        metavar="DURATION",
        help="how often to read a workload's status while waiting (default: 1s)",
    )
    errors = run.add_mutually_exclusive_group()
    errors.add_argument(
        "--stop-on-error",
        dest="stop_on_error",
        action="store_true",
        default=True,
        help="stop starting new workloads after a failed patch or rollout (default)",
    )
    errors.add_argument(
        "--continue-on-error",
        dest="stop_on_error",
        action="store_false",
        help="record a failure and go on with the next workload",
    )
    scope = parser.add_argument_group("scope (repeatable; default: the whole plan)")
    scope.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="NAME",
        help="only this tenant (tenant name or namespace)",
    )
    scope.add_argument(
        "--workload",
        action="append",
        default=[],
        metavar="REF",
        help="only this workload: KIND/NAME, NAMESPACE/NAME or NAMESPACE/KIND/NAME",
    )
    add_output_option(parser)


def _add_pin_options(parser: argparse.ArgumentParser) -> None:
    pin = parser.add_argument_group("entrypoints (the injector then needs no registry access)")
    pin.add_argument(
        "--pin-entrypoints",
        action="store_true",
        help="look up each container's image ENTRYPOINT/CMD from THIS machine and write "
        "explicit command/args into the same patch (for containers without a command); "
        "credentials from $DOCKER_CONFIG/config.json or ~/.docker/config.json",
    )
    pin.add_argument(
        "--platform",
        type=_platform,
        default="linux/amd64",
        metavar="OS/ARCH",
        help="which image of a multi-arch index to read (default: linux/amd64)",
    )
    pin.add_argument(
        "--registry-ca",
        metavar="FILE",
        help="CA bundle for private registries (default: the system trust store)",
    )


def _platform(text: str) -> str:
    """``OS/ARCH[/VARIANT]`` (argparse type; the rule is the registry client's)."""
    from cloudtaser.errors import ConfigError  # noqa: PLC0415
    from cloudtaser.target.registry import parse_platform  # noqa: PLC0415

    try:
        parse_platform(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


@contextmanager
def _pin_lookup(args: argparse.Namespace) -> Iterator[Any]:
    """The registry lookup of ``--pin-entrypoints`` (``None`` without it)."""
    if not getattr(args, "pin_entrypoints", False):
        yield None
        return
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from cloudtaser.target.registry import RegistryClient, load_docker_config  # noqa: PLC0415

    base = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    config = load_docker_config(Path(base) / "config.json")
    with RegistryClient(
        docker_config=config, platform=args.platform, ca_bundle=args.registry_ca
    ) as client:
        yield client.image_config


def _actor() -> str:
    from cloudtaser.config import local_actor  # noqa: PLC0415

    return local_actor()


class _Interrupts:
    """SIGINT/SIGTERM: the first asks the run to stop after the current step (the plan write
    in progress completes); a second one, or one at a prompt, aborts at once."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.prompting = False
        self.count = 0

    def handler(self, signum: int, _frame: object) -> None:
        self.count += 1
        if self.prompting or self.count > 1:
            raise KeyboardInterrupt
        self.cancel.set()
        progress(
            "interrupted: finishing the current step and saving the plan "
            "(press Ctrl-C again to abort at once)"
        )

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old_int = signal.signal(signal.SIGINT, self.handler)
        old_term = signal.signal(signal.SIGTERM, self.handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def _render_proposal(proposal: Proposal) -> str:
    ref = proposal.ref
    replicas = "?" if proposal.replicas is None else str(proposal.replicas)
    lines = [
        "",
        f"{proposal.action} {ref.kind} {ref.namespace}/{ref.name}  "
        f"(tenant {ref.tenant}, replicas {replicas})",
        "  secret mapping (source -> vaultPath, field -> ENV_VAR):",
    ]
    for line in proposal.mapping:
        via = f"  [{line.via}]" if line.via else ""
        lines.append(f"    {line.source} -> {line.vault_path}{via}")
        lines.extend(f"        {fld} -> {env}" for fld, env in line.fields.items())
        if not line.fields:
            lines.append("        (no field mapped)")
    lines.extend(f"  warning: {w}" for w in proposal.warnings)
    if proposal.already_applied:
        lines.append("  already in the intended state: nothing is patched; only wait and record")
    else:
        lines.append("  patch (strategic merge, one rollout):")
        lines.extend(
            "    " + row
            for row in json.dumps(proposal.patch, indent=2, sort_keys=True).splitlines()
        )
    return "\n".join(lines)


def _make_decide(interrupts: _Interrupts) -> Callable[[Proposal], Decision]:
    from cloudtaser.target.protect import Decision  # noqa: PLC0415

    answers = {
        "y": Decision.YES,
        "yes": Decision.YES,
        "n": Decision.NO,
        "no": Decision.NO,
        "q": Decision.QUIT,
        "quit": Decision.QUIT,
    }

    def decide(proposal: Proposal) -> Decision:
        print(_render_proposal(proposal), file=sys.stderr)
        verb = proposal.action
        no_means = "skip, recorded" if verb == "protect" else "leave as is"
        question = (
            f"{verb} {proposal.ref.kind} {proposal.ref.namespace}/{proposal.ref.name}? "
            f"[y]es / [n]o ({no_means}) / [q]uit: "
        )
        for _attempt in range(5):
            sys.stderr.write(question)
            sys.stderr.flush()
            interrupts.prompting = True
            try:
                line = sys.stdin.readline()
            except KeyboardInterrupt:
                interrupts.cancel.set()
                sys.stderr.write("\n")
                return Decision.QUIT
            finally:
                interrupts.prompting = False
            if not line:  # end of input: never hang, never assume yes
                sys.stderr.write("\n(end of input: quitting)\n")
                return Decision.QUIT
            answer = answers.get(line.strip().lower())
            if answer is not None:
                return answer
            sys.stderr.write("please answer y, n or q\n")
        return Decision.QUIT

    return decide


def _emit(event: Event) -> None:
    text = str(event)
    if event.warning:
        progress(color("warning: ", "yellow", stream=sys.stderr) + text)
    else:
        progress(text)


def _run_protect(args: argparse.Namespace) -> int:
    if not args.vault_address:
        return usage_error(
            "--vault-address URL is required: the vault address the pods "
            "will reach (it is written into the workloads)"
        )
    return _run(args, protect=True)


def _run_unprotect(args: argparse.Namespace) -> int:
    return _run(args, protect=False)


def _run(args: argparse.Namespace, *, protect: bool) -> int:
    if not (args.yes or args.interactive or args.dry_run):
        stdin_tty = bool(getattr(sys.stdin, "isatty", lambda: False)())
        hint = "" if stdin_tty else " (stdin is not a terminal: nobody could answer)"
        return usage_error(
            f"pass --yes to go on for every workload, or --interactive to be asked for each{hint}"
        )

    from cloudtaser.target import protect as protectlib  # noqa: PLC0415

    options = protectlib.RunOptions(
        actor=_actor(),
        vault_address=getattr(args, "vault_address", None),
        dry_run=args.dry_run,
        wait=args.wait,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        parallel=args.parallel,
        stop_on_error=args.stop_on_error,
        selection=protectlib.Selection(tenants=tuple(args.tenant), workloads=tuple(args.workload)),
        verify_injection=getattr(args, "verify_injection", True),
    )
    interrupts = _Interrupts()
    decide = _make_decide(interrupts) if args.interactive else None
    with cluster_session(args) as session, interrupts.installed(), _pin_lookup(args) as pin:
        if protect:
            report = protectlib.protect(
                session, args.plan, options, progress=_emit, decide=decide,
                cancel=interrupts.cancel, pin=pin,
            )  # fmt: skip
        else:
            report = protectlib.unprotect(
                session, args.plan, options, progress=_emit, decide=decide,
                cancel=interrupts.cancel,
            )  # fmt: skip
    _print_report(report, args)
    if report.interrupted:
        return ExitCode.INTERRUPTED
    if report.failed:
        return ExitCode.FAILED
    if report.problems:
        return ExitCode.PROBLEMS
    return ExitCode.OK


def _print_report(report: RunReport, args: argparse.Namespace) -> None:
    if args.output == "json":
        print_json(
            {
                "dryRun": bool(args.dry_run),
                "interrupted": report.interrupted,
                "quit": report.quit,
                "stoppedOnError": report.stopped_on_error,
                "results": [
                    {
                        "tenant": r.ref.tenant,
                        "namespace": r.ref.namespace,
                        "kind": r.ref.kind,
                        "name": r.ref.name,
                        "outcome": str(r.outcome),
                        "message": r.message,
                        "warnings": r.warnings,
                        "alreadyApplied": r.already_applied,
                        **({"patch": r.patch} if r.patch is not None else {}),
                    }
                    for r in report.results
                ],
                "notReached": [
                    {"namespace": n.namespace, "kind": n.kind, "name": n.name}
                    for n in report.not_reached
                ],
            }
        )
        return
    if args.dry_run:
        for r in report.results:
            if r.patch is not None:
                print(f"# {r.ref.kind} {r.ref.namespace}/{r.ref.name} (strategic merge patch)")
                print(json.dumps(r.patch, indent=2, sort_keys=True))
    if report.results:
        rows = [
            [r.ref.tenant, r.ref.namespace, r.ref.kind, r.ref.name, str(r.outcome), r.message]
            for r in report.results
        ]
        print(table(rows, ["TENANT", "NAMESPACE", "KIND", "NAME", "RESULT", "DETAIL"]))
    else:
        print("nothing to do: no selected workload needs this step")
    if report.not_reached:
        names = ", ".join(str(n) for n in report.not_reached)
        why = (
            "interrupted"
            if report.interrupted
            else "quit"
            if report.quit
            else "stopped after an error (use --continue-on-error to go on)"
        )
        print(f"not reached ({why}): {names}; re-run to resume")
