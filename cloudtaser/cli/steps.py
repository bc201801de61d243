"""The one run harness of the engine's steps (``target protect``, ``unprotect`` and
``finalize``): their shared options, the ``--interactive`` dialogue, SIGINT/SIGTERM handling,
the progress reporter, the result table or ``--output json`` (the library's result Structs,
:mod:`cloudtaser.target.engine.result`) and the exit code. The commands
(:mod:`cloudtaser.cli.protect_cmd`, :mod:`cloudtaser.cli.lifecycle_cmds`) add only what their
step needs.

Standard library only at module level; the library is imported inside the functions.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.common import (
    add_cluster_options,
    add_dry_run_option,
    add_output_option,
    add_plan_argument,
    cluster_session,
    int_1_to_64,
    parse_duration,
    tenant_completer,
    workload_completer,
)
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import RunProgress, print_json, progress, table, tally

if TYPE_CHECKING:
    from cloudtaser.plan.model import MigrationPlan
    from cloudtaser.target.engine.core import Decision, Event, Proposal, RunOptions, RunReport
    from cloudtaser.target.engine.result import RunResult
    from cloudtaser.target.kube.session import KubeSession

__all__ = [
    "RUN_EXIT_CODES",
    "Interrupts",
    "StepRun",
    "add_gitops_options",
    "add_run_options",
    "check_gitops",
    "check_run",
    "exit_code",
    "make_decide",
    "print_report",
    "reach",
    "render_proposal",
    "run_options",
    "run_step",
    "run_tally",
]


#: The ``exit codes:`` line of every engine step's help (protect, unprotect, finalize), as
#: :func:`exit_code` and the one error mapping (:mod:`cloudtaser.cli.exitcodes`) return them.
RUN_EXIT_CODES = (
    "0 done (or nothing to do), 1 some workloads refused (drift, paused, owned, ...) or still "
    "waiting for Git at the --wait-for-git deadline, 2 bad flags or "
    "plan, 3 cluster unreachable or credentials refused (checked before any workload), 4 a "
    "patch or rollout failed, 5 refused by --require-approval / --require-verified before "
    "any change, 130 interrupted."
)


def add_run_options(
    parser: argparse.ArgumentParser,
    step_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The options of every engine run: the plan, the cluster, ``step_options`` (the step's
    own, e.g. protect's ``--vault-address``), confirmation, run, scope and output."""
    add_plan_argument(
        parser,
        "--plan",
        required=True,
        metavar="PLAN",
        help="the migration plan (updated in place)",
    )
    add_cluster_options(parser)
    if step_options is not None:
        step_options(parser)
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
    add_dry_run_option(
        run,
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


class Interrupts:
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


def add_gitops_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--emit DIR``, ``--live-patch-owned``, ``--wait-for-git`` and ``--deadline`` of the
    steps whose change can go through Git (protect, finalize: docs/gitops.md)."""
    git = parser.add_argument_group(
        "GitOps (a workload Argo CD, Flux or a Helm release writes: docs/gitops.md)"
    )
    exclusive = git.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--emit",
        metavar="DIR",
        help=f"change nothing in the cluster: write each selected workload's {verb} change as "
        "files for its owner to commit (DIR/<owner>/cloudtaser-patches.yaml and the "
        "kustomization entry); the plan records the workloads waiting for Git",
    )
    exclusive.add_argument(
        "--wait-for-git",
        action="store_true",
        help="take only the workloads waiting for Git (written with --emit): wait until each "
        "live object carries the change, then wait for the rollout, prove and record as "
        "usual; resumable (re-run to go on)",
    )
    exclusive.add_argument(
        "--live-patch-owned",
        action="store_true",
        help="patch a workload an Argo CD Application, a Flux Kustomization / HelmRelease or "
        "a Helm release owns live anyway (refused without it; its owner may revert it), with "
        "a loud warning",
    )
    git.add_argument(
        "--deadline",
        type=parse_duration,
        metavar="DURATION",
        help="with --wait-for-git: stop waiting for Git after DURATION (default: 30m); "
        "the workloads not applied by then stay waiting (exit 1)",
    )


#: ``--wait-for-git`` without ``--deadline``.
DEFAULT_GIT_DEADLINE = 30 * 60.0


def check_gitops(args: argparse.Namespace) -> str | None:
    """Usage rules of :func:`add_gitops_options` argparse cannot express."""
    if args.deadline is not None and not args.wait_for_git:
        return "--deadline is the deadline of --wait-for-git"
    return None


def _print_emitted(report: RunReport, args: argparse.Namespace) -> None:
    """After ``--emit``: each file written, and what to do next (text output)."""
    if not report.files or args.output == "json":
        return
    print(f"\nwritten for Git ({len(report.files)} file(s)):")
    for path in report.files:
        print(f"  {path}")
    print(
        "next: add each cloudtaser-patches.yaml next to the owner's kustomization.yaml and its "
        "kustomization-entry.yaml's patches to it (docs/gitops.md), commit, merge; then: "
        f"cloudtaser target {args.command_name} --plan {args.plan} --wait-for-git --yes"
    )


def render_proposal(proposal: Proposal) -> str:
    """The proposal as the reviewer reads it: mapping, warnings and the exact patch."""
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


#: Accepted answers at the prompt, and what each means.
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


def make_decide(interrupts: Interrupts) -> Callable[[Proposal], Decision]:
    """The ``--interactive`` dialogue: ask on stderr, read answers from stdin."""
    from cloudtaser.target.engine.core import Decision  # noqa: PLC0415

    state: dict[str, Any] = {"all": False, "tenants": set()}

    def decide(proposal: Proposal) -> Decision:
        ref = proposal.ref
        if state["all"] or ref.tenant in state["tenants"]:
            why = "all remaining" if state["all"] else f"rest of tenant {ref.tenant}"
            progress(f"{proposal.action} {ref.kind} {ref.namespace}/{ref.name}: yes ({why})")
            return Decision.YES
        print(render_proposal(proposal), file=sys.stderr)
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


def check_run(args: argparse.Namespace) -> str | None:
    """Usage rules argparse cannot express (also applied to documented examples)."""
    if not (args.yes or args.interactive or args.dry_run):
        stdin_tty = bool(getattr(sys.stdin, "isatty", lambda: False)())
        hint = "" if stdin_tty else " (stdin is not a terminal: nobody could answer)"
        return (
            f"pass --yes to go on for every workload, or --interactive to be asked for each{hint}"
        )
    return None


def run_options(
    args: argparse.Namespace,
    *,
    plan_check: Callable[[MigrationPlan], None] | None,
    vault_address: str | None = None,
    verify_injection: bool = True,
) -> RunOptions:
    """The engine's :class:`~cloudtaser.target.engine.core.RunOptions` from the run options of
    :func:`add_run_options`; ``plan_check``: the approval / verification gates."""
    from pathlib import Path  # noqa: PLC0415

    from cloudtaser.config import local_actor  # noqa: PLC0415
    from cloudtaser.target.engine.core import RunOptions, Selection  # noqa: PLC0415

    emit = getattr(args, "emit", None)
    wait_for_git = bool(getattr(args, "wait_for_git", False))
    return RunOptions(
        actor=local_actor(),
        vault_address=vault_address,
        dry_run=args.dry_run,
        wait=args.wait,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        parallel=args.parallel,
        stop_on_error=args.stop_on_error,
        selection=Selection(tenants=tuple(args.tenant), workloads=tuple(args.workload)),
        plan_check=plan_check,
        verify_injection=verify_injection,
        emit_dir=Path(emit) if emit else None,
        live_patch_owned=bool(getattr(args, "live_patch_owned", False)),
        wait_for_git=(args.deadline or DEFAULT_GIT_DEADLINE) if wait_for_git else None,
    )


@dataclass(frozen=True)
class StepRun:
    """What a step's library call gets from the harness."""

    session: KubeSession
    #: The engine's progress callback (the run's reporter).
    progress: Callable[[Event], None]
    #: The dialogue (``None`` without ``--interactive``).
    decide: Callable[[Proposal], Decision] | None
    #: Set by SIGINT/SIGTERM: the run stops after the current step.
    cancel: threading.Event


def run_step(args: argparse.Namespace, call: Callable[[StepRun], RunReport]) -> RunReport:
    """Run one engine step: open the cluster session, install the interrupt handlers, report
    progress on stderr (a live status line unless ``--interactive``: a prompt needs the
    terminal), call ``call`` (the library's run) and close with the tally."""
    interrupts = Interrupts()
    decide = make_decide(interrupts) if args.interactive else None
    verbose = int(getattr(args, "verbose", 0) or 0) > 0
    # a prompt needs the terminal to itself: no live status line under it
    live = False if args.interactive else None
    with (
        cluster_session(args) as session,
        interrupts.installed(),
        RunProgress(live=live, verbose=verbose) as reporter,
    ):
        interrupts.say = reporter.message
        reached = threading.Event()

        def event(item: Event) -> None:
            # the run's total comes after every local check of the plan (lock, rules, gates,
            # selection) and before any workload: prove the API server answers there
            if item.total is not None and not reached.is_set():
                reached.set()
                reach(session)
            reporter.event(item)

        report = call(
            StepRun(session=session, progress=event, decide=decide, cancel=interrupts.cancel)
        )
        reporter.close(run_tally(report))
    return report


def reach(session: KubeSession) -> None:
    """Prove the API server answers before any workload is looked at (and after the plan's
    local checks, so a bad plan is still exit 2 without a request): an unreachable or
    unauthenticated cluster is the one remote error of every command (exit 3, docs/cli.md),
    not a failure of the first workload (exit 4). A 403 or 404 is an answer: reached."""
    from cloudtaser.errors import ClusterForbiddenError, ClusterNotFoundError  # noqa: PLC0415
    from cloudtaser.target.kube.api import resource  # noqa: PLC0415
    from cloudtaser.target.kube.errors import api_errors  # noqa: PLC0415

    try:
        with api_errors("start (nothing was changed)"):
            session.client.get(resource("Namespace"), "kube-system")
    except (ClusterForbiddenError, ClusterNotFoundError):
        return


def exit_code(report: RunReport, *, problems: bool = False) -> int:
    """The exit code of a run (docs/cli.md): interrupted, failed, refused (or ``problems``
    the step found besides), else OK."""
    if report.interrupted:
        return ExitCode.INTERRUPTED
    if report.failed:
        return ExitCode.FAILED
    if report.problems or problems:
        return ExitCode.PROBLEMS
    return ExitCode.OK


def run_tally(report: RunReport) -> str:
    """``287 migrated, 2 failed, 1 refused`` (+ not reached) for any engine run."""
    from cloudtaser.target.engine.result import OUTCOME_ORDER  # noqa: PLC0415

    counts: dict[str, int] = {}
    for r in report.results:
        counts[str(r.outcome)] = counts.get(str(r.outcome), 0) + 1
    if report.not_reached:
        counts["not reached"] = len(report.not_reached)
    return tally(counts, (*(str(o) for o in OUTCOME_ORDER), "not reached"))


def _detail(message: str, warnings: list[str], *, verbose: bool) -> str:
    """A workload's DETAIL cell: its message, and how many warnings it had (each one was a
    progress line with ``-v``; all are in ``-o json``)."""
    extra = [w for w in warnings if w not in message]
    if not extra or verbose:
        return message
    noun = "warning" if len(extra) == 1 else "warnings"
    return f"{message} (+{len(extra)} {noun}: -v or -o json)"


def print_report(report: RunReport, args: argparse.Namespace, result: RunResult) -> None:
    """The run's result table, one line per workload (its warnings counted, shown with ``-v``
    and in the JSON), or with ``-o json`` its ``result`` (the library's Struct)."""
    if args.output == "json":
        import msgspec  # noqa: PLC0415

        print_json(msgspec.to_builtins(result))
        return
    if args.dry_run:
        for r in report.results:
            if r.patch is not None:
                print(f"# {r.ref.kind} {r.ref.namespace}/{r.ref.name} (strategic merge patch)")
                print(json.dumps(r.patch, indent=2, sort_keys=True))
    if report.results:
        verbose = int(getattr(args, "verbose", 0) or 0) > 0
        rows = [
            [
                *(r.ref.tenant, r.ref.namespace, r.ref.kind, r.ref.name, str(r.outcome)),
                _detail(r.message, r.warnings, verbose=verbose),
            ]
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
    _print_emitted(report, args)
