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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.approval_opts import add_gate_options, enforce_gates, plan_gate
from cloudtaser.cli.common import (
    add_cluster_options,
    add_output_option,
    add_plan_argument,
    cluster_session,
    int_1_to_64,
    tenant_completer,
    usage_error,
    workload_completer,
)
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import RunProgress, print_result_json, progress, table, tally

if TYPE_CHECKING:
    from cloudtaser.target.protect import Decision, Proposal, RunReport

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


_RUN_EPILOG = """\
interactive answers: y yes, n no (protect: recorded skipped; undo with 'cloudtaser plan
set-status'), l later / not now (stays pending, asked again next run), a yes to all remaining,
t yes to the rest of this tenant, q quit (the rest stays pending).
progress: on a terminal one live [n/N] status line with elapsed time and ETA; piped, one line
per workload (-v for every step); always a closing tally.
exit codes: 0 done, 1 some workloads refused (drift, paused, ...), 2 bad flags or plan,
3 cluster unreachable or credentials refused, 4 a patch or rollout failed, 130 interrupted.
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
        examples=[
            "cloudtaser target protect --plan plan.yaml --vault-address https://bao.example:8200"
            " --interactive",
            "cloudtaser target protect --plan plan.yaml --vault-address https://bao.example:8200"
            " --yes --tenant payments --parallel 4",
            "cloudtaser target protect --plan plan.yaml --vault-address https://bao.example:8200"
            " --dry-run -o json",
        ],
        epilog=_RUN_EPILOG,
    )
    _add_run_options(protect, protect=True)
    add_gate_options(protect, verified="pending")
    protect.set_defaults(command_name="protect")
    protect.set_defaults(handler=_run_protect, precheck=_check_protect)

    unprotect = groups.command(
        "target",
        "unprotect",
        help="remove the annotations protect added (one rollout) and mark workloads pending",
        description=_UNPROTECT_DESCRIPTION,
        examples=[
            "cloudtaser target unprotect --plan plan.yaml --workload payments/Deployment/api --yes",
            "cloudtaser target unprotect --plan plan.yaml --tenant payments --interactive",
        ],
        epilog=_RUN_EPILOG,
    )
    _add_run_options(unprotect, protect=False)
    add_gate_options(unprotect)
    unprotect.set_defaults(command_name="unprotect")
    unprotect.set_defaults(handler=_run_unprotect, precheck=_check_run)


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
        help="ask for each workload: [y]es / [n]o / [l]ater / [a]ll / [t]enant / [q]uit "
        "(answers may come from a pipe)",
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
    tenant = scope.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="NAME",
        help="only this tenant (tenant name or namespace)",
    )
    tenant.completer = tenant_completer  # type: ignore[attr-defined]
    workload = scope.add_argument(
        "--workload",
        action="append",
        default=[],
        metavar="REF",
        help="only this workload: KIND/NAME, NAMESPACE/NAME or NAMESPACE/KIND/NAME",
    )
    workload.completer = workload_completer  # type: ignore[attr-defined]
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
        #: Where the notice goes (the run's progress reporter, so a live line is cleared first).
        self.say: Callable[[str], None] = progress

    def handler(self, signum: int, _frame: object) -> None:
        self.count += 1
        if self.prompting or self.count > 1:
            raise KeyboardInterrupt
        self.cancel.set()
        self.say(
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


_ANSWERS = {
    "y": "yes",
    "yes": "yes",
    "n": "no",
    "no": "no",
    "l": "later",
    "later": "later",
    "not now": "later",
    "a": "all",
    "all": "all",
    "t": "tenant",
    "tenant": "tenant",
    "q": "quit",
    "quit": "quit",
}


def _make_decide(interrupts: _Interrupts) -> Callable[[Proposal], Decision]:
    from cloudtaser.target.protect import Decision  # noqa: PLC0415

    state: dict[str, Any] = {"all": False, "tenants": set()}

    def decide(proposal: Proposal) -> Decision:
        ref = proposal.ref
        if state["all"] or ref.tenant in state["tenants"]:
            why = "all remaining" if state["all"] else f"rest of tenant {ref.tenant}"
            progress(f"{proposal.action} {ref.kind} {ref.namespace}/{ref.name}: yes ({why})")
            return Decision.YES
        print(_render_proposal(proposal), file=sys.stderr)
        verb = proposal.action
        no_means = "skip, recorded" if verb == "protect" else "leave as is"
        question = (
            f"{verb} {ref.kind} {ref.namespace}/{ref.name}? [y]es / [n]o ({no_means}) / "
            f"[l]ater (not now, stays pending) / [a]ll remaining / [t]enant {ref.tenant} / "
            "[q]uit: "
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
            answer = _ANSWERS.get(line.strip().lower())
            if answer == "all":
                state["all"] = True
                return Decision.YES
            if answer == "tenant":
                state["tenants"].add(ref.tenant)
                return Decision.YES
            if answer is not None:
                return Decision(answer)
            sys.stderr.write("please answer y, n, l, a, t or q\n")
        return Decision.QUIT

    return decide


def _check_run(args: argparse.Namespace) -> str | None:
    """Usage rules argparse cannot express (also applied to documented examples)."""
    if not (args.yes or args.interactive or args.dry_run):
        stdin_tty = bool(getattr(sys.stdin, "isatty", lambda: False)())
        hint = "" if stdin_tty else " (stdin is not a terminal: nobody could answer)"
        return (
            f"pass --yes to go on for every workload, or --interactive to be asked for each{hint}"
        )
    return None


def _check_protect(args: argparse.Namespace) -> str | None:
    if not args.vault_address:
        return (
            "--vault-address URL is required: the vault address the pods "
            "will reach (it is written into the workloads)"
        )
    return _check_run(args)


def _warn_plain_http(address: str) -> None:
    if address.lower().startswith("http://"):
        progress(
            "WARNING: --vault-address "
            f"{address} is plain http://: every pod will send its ServiceAccount token and "
            "receive its secrets UNENCRYPTED over the network. Use an https:// address in "
            "production (http is only for a local test bed)."
        )


def _run_protect(args: argparse.Namespace) -> int:
    problem = _check_protect(args)
    if problem:
        return usage_error(problem)
    enforce_gates(args, args.plan)
    _warn_plain_http(args.vault_address)
    return _run(args, protect=True)


def _run_unprotect(args: argparse.Namespace) -> int:
    problem = _check_run(args)
    if problem:
        return usage_error(problem)
    enforce_gates(args, args.plan)
    return _run(args, protect=False)


def _run(args: argparse.Namespace, *, protect: bool) -> int:
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
        plan_check=plan_gate(args),
        verify_injection=getattr(args, "verify_injection", True),
    )
    interrupts = _Interrupts()
    decide = _make_decide(interrupts) if args.interactive else None
    verbose = int(getattr(args, "verbose", 0) or 0) > 0
    # a prompt needs the terminal to itself: no live status line under it
    live = False if args.interactive else None
    with (
        cluster_session(args) as session,
        interrupts.installed(),
        _pin_lookup(args) as pin,
        RunProgress(live=live, verbose=verbose) as reporter,
    ):
        interrupts.say = reporter.message
        if protect:
            report = protectlib.protect(
                session, args.plan, options, progress=reporter.event, decide=decide,
                cancel=interrupts.cancel, pin=pin,
            )  # fmt: skip
        else:
            report = protectlib.unprotect(
                session, args.plan, options, progress=reporter.event, decide=decide,
                cancel=interrupts.cancel,
            )  # fmt: skip
        reporter.close(run_tally(report))
    _print_report(report, args)
    if report.interrupted:
        return ExitCode.INTERRUPTED
    if report.failed:
        return ExitCode.FAILED
    if report.problems:
        return ExitCode.PROBLEMS
    return ExitCode.OK


#: Tally order: what a reader looks for first.
TALLY_ORDER = (
    "migrated",
    "finalized",
    "unprotected",
    "applied",
    "dry-run",
    "failed",
    "refused",
    "skipped",
    "deferred",
    "interrupted",
)


def run_tally(report: RunReport) -> str:
    """``287 migrated, 2 failed, 1 refused`` (+ not reached) for any engine run."""
    counts: dict[str, int] = {}
    for r in report.results:
        counts[str(r.outcome)] = counts.get(str(r.outcome), 0) + 1
    if report.not_reached:
        counts["not reached"] = len(report.not_reached)
    return tally(counts, (*TALLY_ORDER, "not reached"))


def run_summary(report: RunReport) -> dict[str, int]:
    """The JSON ``summary`` of an engine run: a count per outcome, and the totals."""
    counts = {str(o): 0 for o in TALLY_ORDER}
    for r in report.results:
        counts[str(r.outcome)] = counts.get(str(r.outcome), 0) + 1
    return {**counts, "notReached": len(report.not_reached), "total": len(report.results)}


def _print_report(
    report: RunReport, args: argparse.Namespace, extra: Mapping[str, Any] | None = None
) -> None:
    """The run's result table (or, with ``-o json``, its JSON with ``extra`` added)."""
    if args.output == "json":
        data = {
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
            **(extra or {}),
        }
        name = getattr(args, "command_name", "")
        if name == "unprotect":
            print_result_json("unprotect-run", data, run_summary(report))
        elif name == "finalize":
            print_result_json("finalize-run", data, run_summary(report))
        else:
            print_result_json("protect-run", data, run_summary(report))
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
    print(f"{len(report.results)} workload(s): {run_tally(report)}")
