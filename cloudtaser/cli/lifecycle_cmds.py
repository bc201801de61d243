"""``cloudtaser target finalize`` and ``target audit``: cluster only, never the vault.

Standard library only at module level; the library is imported inside the handlers. The run
itself (options, dialogue, interrupts, progress, output, exit code) is the harness of every
engine step, :mod:`cloudtaser.cli.steps`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.approval_opts import add_gate_options, check_plan, resolve_gates
from cloudtaser.cli.common import add_cluster_options, cluster_session, usage_error
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import progress, table
from cloudtaser.cli.steps import (
    RUN_EXIT_CODES,
    StepRun,
    add_gitops_options,
    add_run_options,
    check_gitops,
    check_run,
    exit_code,
    print_report,
    run_options,
    run_step,
)

if TYPE_CHECKING:
    from cloudtaser.target.engine.core import RunReport
    from cloudtaser.target.finalize.deletion import SecretsReport

__all__ = ["register"]

_FINALIZE_DESCRIPTION = """\
For each migrated workload of the plan not yet finalized, in plan order: check that it is
protected and that its LIVE pods are proven injected (init container cloudtaser-init done,
every container started through the wrapper, Ready), check drift, then remove the
env[].valueFrom.secretKeyRef and envFrom[].secretRef entries the plan maps (anything else
stays) in ONE strategic-merge patch (one rollout), prove injection again on the new pods, and
record finalizedAt and a history entry (the status stays migrated). A mapped reference that
something other than the wrapped process reads is KEPT and named with the reason: those of
init containers, and variables used in $(VAR) (command, args, env values), exec probes or
lifecycle hooks. What is removed is written into the plan first, so `target unprotect` can
always put it back. A killed run resumes without a second rollout.

--delete-secrets (never implied) then deletes each Secret of a finalized workload that
loses nothing and that nothing references any more (in its namespace: workloads, bare Pods,
Jobs, CronJobs, PodTemplates, ServiceAccounts, Ingresses, Gateways, custom resources; cluster-
wide: PersistentVolumes, StorageClasses; ServiceAccounts of running pods allowed to read it
through the API; owners and managers such as Helm, Argo CD, Flux, cert-manager,
external-secrets). Every key the
Secret holds must be mapped by the plan AND proven in the vault by the report given with
--require-verified (`cloudtaser source verify-plan PLAN --attest REPORT`), or released by a
reviewer in the plan (releasedKeys); otherwise it is kept and the keys are named (never a
value). A Secret still in use is kept and its users are named. A Secret that Git, Helm or an
operator owns (the plan's owner or its live labels, annotations, ownerReferences) is never
deleted: the output names what to remove at the source instead (the Flux Kustomization and its
source URL, the chart, the ExternalSecret; the file with --gitops-source DIR, a local checkout
of that source). Just before each delete the
Secret is read and its namespace scanned again, and the delete carries its uid and
resourceVersion as preconditions. DELETION IS IRREVERSIBLE: with --interactive each delete
is asked separately, default No, naming the Secret and its keys (never a value). With
--dry-run it lists what would go. A workload named with --workload that finalize cannot act
on (pending, skipped) is refused with the step that comes first. A workload Argo CD, Flux or
a Helm release owns is not patched live unless --live-patch-owned (its owner would put the
references back): --emit DIR writes the removal as files its owner commits (what it removes
is recorded in the plan at once), and --wait-for-git, once merged, waits until the owner
applied it, then proves and records as usual. See docs/lifecycle.md and docs/gitops.md.
"""

_AUDIT_DESCRIPTION = """\
Report, per namespace, what still depends on Kubernetes Secrets: the workloads that still
read them and how (Deployments, StatefulSets, DaemonSets, CronJobs, Jobs and bare Pods),
those opted in, protected (every running pod proven injected) and finalized, the Secrets left
and who uses them, the pods that opt in but were not injected, and what to do next. Then a
verdict (pass, fail, incomplete) and a score: the share of Secret consumption moved to the
vault and the share of pods proven injected. Without -n: every namespace the credentials may
list; a namespace that cannot be read is reported unreadable (never clean); a namespace given
with -n that does not exist is an error. Reads the cluster only (names, never values). With
--plan (and --require-verified REPORT), the report records the plan's name, digest, approvals
and verification report, and every Secret nobody uses gets the key-level verdict that
finalize --delete-secrets would reach. Outputs a table, --output json (the common envelope,
kind "audit", schema/output-audit.schema.json) or --output html (one self-contained file a
reviewer signs off). --fail-on makes it a CI gate. See docs/lifecycle.md.
"""


def register(groups: Any) -> None:
    """Attach ``target finalize`` and ``target audit``."""
    fin = groups.command(
        "target",
        "finalize",
        help="remove the plan-mapped Secret references from proven-injected workloads "
        "(one rollout); --delete-secrets deletes Secrets nothing uses",
        description=_FINALIZE_DESCRIPTION,
        examples=[
            "cloudtaser target finalize --plan plan.yaml --dry-run",
            "cloudtaser target finalize --plan plan.yaml --yes --tenant payments",
            "cloudtaser target finalize --plan plan.yaml --yes --emit gitops/",
            "cloudtaser target finalize --plan plan.yaml --yes --wait-for-git --deadline 45m",
            "cloudtaser target finalize --plan plan.yaml --yes --delete-secrets --dry-run",
            "cloudtaser target finalize --plan plan.yaml --yes --delete-secrets"
            " --require-verified verified.json --require-approval --allowed-signers team.signers",
        ],
        exit_codes=RUN_EXIT_CODES,
    )
    add_run_options(fin, lambda parser: add_gitops_options(parser, "finalize"))
    add_gate_options(fin, verified="migrated")
    fin.add_argument(
        "--delete-secrets",
        action="store_true",
        help="afterwards delete each Secret of a finalized workload whose every key is "
        "proven in the vault by --require-verified REPORT (or released in the plan) and that "
        "nothing in its namespace references (IRREVERSIBLE; with --dry-run: list what would go)",
    )
    fin.add_argument(
        "--gitops-source",
        metavar="DIR",
        help="with --delete-secrets: a local checkout of the Git source (Flux, Argo CD) of the "
        "Secrets it refuses because Git owns them; names the file(s) under DIR that define "
        "each one (read only, never followed out of DIR, never a value printed)",
    )
    fin.set_defaults(command_name="finalize")
    fin.set_defaults(handler=_run_finalize, precheck=_check_finalize)

    audit = groups.command(
        "target",
        "audit",
        help="per namespace: who still reads Kubernetes Secrets, what is protected and "
        "finalized, which Secrets are left and who uses them",
        description=_AUDIT_DESCRIPTION,
        examples=[
            "cloudtaser target audit",
            "cloudtaser target audit --namespace payments -o json",
            "cloudtaser target audit -o html --report audit.html",
            "cloudtaser target audit --plan plan.yaml --require-verified verified.json",
            "cloudtaser target audit --fail-on secrets-read --fail-on unprotected",
        ],
        exit_codes="0 report written and no --fail-on condition holds, 1 a --fail-on condition "
        "holds (the report is written first; stderr names each condition), 2 invalid input (bad "
        "flags, a -n namespace that does not exist, an unreadable plan), 3 cluster unreachable or "
        "credentials refused, 4 a cluster operation failed, 5 the --require-verified report is "
        "unusable.",
    )
    add_cluster_options(audit)
    audit.add_argument(
        "--plan",
        metavar="PLAN",
        help="judge the keys of every unused Secret as finalize --delete-secrets would "
        "(mapped and proven, or released in this plan); reads key names, never values",
    )
    audit.add_argument(
        "--require-verified",
        metavar="REPORT",
        help="with --plan: the report of 'source verify-plan PLAN --attest REPORT' that "
        "proves the mapped keys are in the vault (without it no mapped key counts as proven)",
    )
    audit.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="only this namespace (repeatable; default: every namespace)",
    )
    audit.add_argument(
        "--output",
        "-o",
        choices=("text", "json", "html"),
        default="text",
        help="text table (default), JSON, or one self-contained HTML file",
    )
    audit.add_argument(
        "--report",
        metavar="FILE",
        help="write the output to FILE instead of stdout (e.g. audit.html)",
    )
    audit.add_argument(
        "--fail-on",
        action="append",
        default=[],
        choices=("secrets-read", "unprotected", "unused-secrets", "incomplete", "any"),
        help="exit 1 when the condition holds (repeatable): secrets-read (a workload still "
        "reads a Secret as env or files), unprotected (an opted-in pod is not proven injected), "
        "unused-secrets (a Secret nothing references is left), incomplete (something could "
        "not be read), any (one of them); the report is written first",
    )
    audit.set_defaults(handler=_run_audit, precheck=_check_audit)


def _check_audit(args: argparse.Namespace) -> str | None:
    if args.require_verified is not None and args.plan is None:
        return "--require-verified needs --plan PLAN: the report proves the keys that plan maps"
    return None


def _check_finalize(args: argparse.Namespace) -> str | None:
    """Usage rules argparse cannot express (also applied to documented examples)."""
    problem = check_run(args)
    if problem:
        return problem
    if args.delete_secrets and not args.wait:
        return "--delete-secrets needs the rollouts awaited (drop --no-wait)"
    if args.gitops_source is not None and not args.delete_secrets:
        return "--gitops-source only names files for --delete-secrets: add it, or drop DIR"
    if args.delete_secrets and args.emit:
        return (
            "--delete-secrets needs the references gone from the cluster: run it with "
            "--wait-for-git once the emitted change is merged"
        )
    return check_gitops(args)


def _run_finalize(args: argparse.Namespace) -> int:
    problem = _check_finalize(args)
    if not problem and args.gitops_source and not Path(args.gitops_source).is_dir():
        problem = f"--gitops-source {args.gitops_source}: not an existing directory"
    if problem:
        return usage_error(problem)
    gates = resolve_gates(args)  # the report is read once: the gate and --delete-secrets
    check_plan(gates.check, args.plan)

    from cloudtaser.target.engine.result import finalize_run  # noqa: PLC0415
    from cloudtaser.target.finalize.step import finalize  # noqa: PLC0415

    options = run_options(args, plan_check=gates.check)
    secrets: list[SecretsReport | None] = []

    ask = args.interactive and args.delete_secrets and not args.dry_run

    def call(run: StepRun) -> RunReport:
        report, deleted = finalize(
            run.session,
            args.plan,
            options,
            delete_secrets=args.delete_secrets,
            verified=gates.report,
            progress=run.progress,
            decide=run.decide,
            cancel=run.cancel,
            confirm_delete=_confirm_delete if ask else None,
            gitops_source=Path(args.gitops_source) if args.gitops_source else None,
        )
        secrets.append(deleted)
        return report

    report = run_step(args, call)
    found = secrets[0] if secrets else None
    entries = found.entries() if found is not None else None
    print_report(report, args, finalize_run(report, dry_run=args.dry_run, secrets=entries))
    if found is not None and args.output != "json":
        _print_secrets(found)
    return exit_code(report, problems=found is not None and bool(found.named("kept")))


def _confirm_delete(namespace: str, name: str, keys: Sequence[str]) -> bool:
    """``--interactive``: the separate question before each irreversible delete, default No
    (key names only, never a value). Only ``y``/``yes`` deletes; Enter, anything else, end
    of input or Ctrl-C keeps the Secret."""
    listed = ", ".join(keys) if keys else "(no key)"
    sys.stderr.write(
        f"\nDELETE Secret {namespace}/{name} (keys: {listed})? This cannot be undone; "
        "the values then exist only in the vault. [y]es / [N]o (default, keeps it): "
    )
    sys.stderr.flush()
    try:
        line = sys.stdin.readline()
    except KeyboardInterrupt:
        line = ""
    yes = line.strip().lower() in {"y", "yes"}
    sys.stderr.write("" if line.endswith("\n") else "\n")
    progress(f"Secret {namespace}/{name}: {'deleting' if yes else 'kept (answered no)'}")
    return yes


def _print_secrets(secrets: SecretsReport) -> None:
    if not secrets.decisions:
        print("no Secret of a finalized workload to consider")
        return
    labels = {
        "deleted": "deleted",
        "would-delete": "would delete (dry run)",
        "kept": "KEPT",
        "absent": "already gone",
        "declined": "kept (answered no)",
    }
    rows = [
        [
            d.namespace,
            d.name,
            labels.get(d.action, d.action),
            "; ".join(filter(None, ["; ".join(d.users), d.reason])),
        ]
        for d in secrets.decisions
    ]
    print(table(rows, ["NAMESPACE", "SECRET", "ACTION", "STILL USED BY / WHY"]))


def _run_audit(args: argparse.Namespace) -> int:
    import msgspec  # noqa: PLC0415

    from cloudtaser.target.audit import render  # noqa: PLC0415
    from cloudtaser.target.audit.collect import audit, failures  # noqa: PLC0415
    from cloudtaser.target.audit.result import FailOn  # noqa: PLC0415

    plan = verified = None
    if args.plan is not None:
        from cloudtaser import plan as planlib  # noqa: PLC0415

        plan = planlib.load(args.plan)
    if args.require_verified is not None:
        from cloudtaser.plan.attest import load_report  # noqa: PLC0415

        verified = load_report(args.require_verified)
    with cluster_session(args) as session:
        report = audit(session, namespaces=tuple(args.namespace), plan=plan, verified=verified)
    if args.output == "json":
        text = json.dumps(msgspec.to_builtins(report), indent=2) + "\n"
    elif args.output == "html":
        text = render.to_html(report)
    else:
        text = render.to_text(report)
    if args.report:
        from cloudtaser.fileio import atomic_write  # noqa: PLC0415

        atomic_write(Path(args.report), text.encode("utf-8"))
        progress(f"audit report written to {args.report}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    failed = failures(report, [FailOn(f) for f in args.fail_on])
    for line in failed:
        progress(line)
    return ExitCode.PROBLEMS if failed else ExitCode.OK
