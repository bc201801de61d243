"""``cloudtaser plan validate|status|schema|todo|set-status``: local plan work, no system access.

Also the top-level ``cloudtaser completion bash|zsh|fish``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cloudtaser.cli import approval_cmds
from cloudtaser.cli.common import (
    add_output_option,
    add_plan_argument,
    tenant_completer,
    workload_completer,
)
from cloudtaser.cli.exitcodes import ExitCode

__all__ = ["register"]

_COMPLETION_EPILOG = """\
install (once per shell):
  bash: cloudtaser completion bash > ~/.local/share/bash-completion/completions/cloudtaser
  zsh:  cloudtaser completion zsh > "${fpath[1]}/_cloudtaser"
  fish: cloudtaser completion fish > ~/.config/fish/completions/cloudtaser.fish
Completes commands, flags, plan files, --context from every KUBECONFIG file, and --tenant /
--workload from the plan named on the line. Nothing is sent over the network.
"""


def register(groups: Any) -> None:
    """Attach the ``plan`` verbs and ``completion``."""
    validate = groups.command(
        "plan",
        "validate",
        help="check plan files against the schema and the safety rules",
        description=(
            "Check one or more plan files ('-' reads standard input): schema, names, "
            "environment variable names, vault path safety, duplicates. Prints one line per "
            "problem with its location ($.tenants[0].workloads[2]...)."
        ),
        examples=[
            "cloudtaser plan validate plan.yaml",
            "cloudtaser plan validate plan-a.yaml plan-b.yaml -o json",
            "cloudtaser target discover --output-plan - | cloudtaser plan validate -",
        ],
        exit_codes="0 every file is valid, 2 a file is unreadable or invalid (each problem "
        "is listed).",
    )
    add_plan_argument(
        validate, "plans", nargs="+", metavar="PLAN", help="plan file(s); '-' for stdin"
    )
    add_output_option(validate)
    validate.set_defaults(handler=_run_validate)

    status = groups.command(
        "plan",
        "status",
        help="count pending / migrated / skipped workloads and secrets",
        description=(
            "Summarise a plan's progress per tenant and overall: workloads and secrets that "
            "are pending, migrated or skipped. --workloads lists each workload with its "
            "status and the last error protect recorded. Workloads whose change was written "
            "for Git (target protect / finalize --emit) and not yet found applied are listed "
            "as waiting for Git, with their files and the --wait-for-git command."
        ),
        examples=[
            "cloudtaser plan status plan.yaml",
            "cloudtaser plan status plan.yaml --workloads --tenant payments",
            "cloudtaser plan status plan.yaml -o json",
        ],
        exit_codes="0 summarised, 2 unreadable or invalid plan.",
    )
    add_plan_argument(status, "plan", metavar="PLAN", help="plan file")
    status.add_argument(
        "--workloads",
        action="store_true",
        help="one line per workload: status, last reason and lastError",
    )
    _add_tenant(status)
    add_output_option(status)
    status.set_defaults(handler=_run_status)

    todo = groups.command(
        "plan",
        "todo",
        help="the populate checklist: 'bao kv put' skeletons (no values) for every vault path",
        description=(
            "Print, for every distinct vault path the plan's non-skipped workloads read, the "
            "fields to create, as 'bao kv put -mount=<mount> <path> field=…' skeletons "
            "WITHOUT values, and which workloads need it: the checklist for the people who "
            "put the secret values into the vault (after workflow step 3). No system access: to "
            "list only what the vault still lacks, use 'source verify-plan PLAN --missing'."
        ),
        examples=[
            "cloudtaser plan todo plan.yaml",
            "cloudtaser plan todo plan.yaml --tenant payments -o json",
        ],
        exit_codes="0 checklist printed, 2 unreadable or invalid plan.",
    )
    add_plan_argument(todo, "plan", metavar="PLAN", help="plan file")
    _add_tenant(todo)
    add_output_option(todo)
    todo.set_defaults(handler=_run_todo)

    set_status = groups.command(
        "plan",
        "set-status",
        help="set workloads back to pending (undo a skip) or skip them, recorded in history",
        description=(
            "Change the status of the chosen workloads by hand, without editing YAML: "
            "'pending' undoes a skip (e.g. an [n]o answer in protect --interactive), "
            "'skipped' leaves a workload out of protect. Each change is recorded in the "
            "workload's history with who, when and --reason, under the plan lock. 'migrated' "
            "cannot be set by hand: only protect records it after a proven rollout."
        ),
        examples=[
            "cloudtaser plan set-status plan.yaml --workload payments/Deployment/api "
            "--status pending --reason 'answered n by mistake'",
            "cloudtaser plan set-status plan.yaml --tenant billing --status skipped "
            "--reason 'moves in Q3'",
        ],
        exit_codes=(
            "0 recorded, 2 bad flags, an unreadable or invalid plan, or no workload matched, "
            "4 another run holds the plan lock."
        ),
    )
    add_plan_argument(set_status, "plan", metavar="PLAN", help="plan file (updated in place)")
    set_status.add_argument(
        "--status", required=True, choices=("pending", "skipped"), help="the new status"
    )
    set_status.add_argument(
        "--reason", metavar="TEXT", help="why (recorded in the workload's history)"
    )
    workload = set_status.add_argument(
        "--workload",
        action="append",
        default=[],
        metavar="REF",
        help="KIND/NAME, NAMESPACE/NAME or NAMESPACE/KIND/NAME (repeatable)",
    )
    workload.completer = workload_completer
    _add_tenant(set_status)
    add_output_option(set_status)
    set_status.set_defaults(handler=_run_set_status, precheck=_check_set_status)

    schema = groups.command(
        "plan",
        "schema",
        help="print the JSON Schema of the plan format",
        description=(
            "Print the JSON Schema of cloudtaser.io/v1 MigrationPlan (for editors and CI). "
            "Cross-field rules (duplicates, env var collisions) are enforced by "
            "'plan validate', not by the schema."
        ),
        examples=["cloudtaser plan schema > migration-plan.schema.json"],
        exit_codes="0 schema printed.",
    )
    schema.set_defaults(handler=_run_schema)
    approval_cmds.register(groups)  # approve, verify-approvals, diff, canonical

    completion = groups.command(
        None,
        "completion",
        help="print the shell completion script (bash, zsh or fish)",
        description="Print the completion script for SHELL on stdout.",
        examples=['eval "$(cloudtaser completion bash)"', "cloudtaser completion fish"],
        epilog=_COMPLETION_EPILOG,
        exit_codes="0 script printed, 2 unknown shell.",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    completion.set_defaults(handler=_run_completion)


def _add_tenant(parser: argparse.ArgumentParser) -> None:
    action = parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="NAME",
        help="only this tenant (tenant name or namespace; repeatable)",
    )
    action.completer = tenant_completer  # type: ignore[attr-defined]


def _load(path: str) -> Any:
    """A plan from ``path``, or from standard input for ``-``."""
    from cloudtaser import plan as planlib  # noqa: PLC0415

    if path == "-":
        from cloudtaser.plan.yamlio import MAX_PLAN_BYTES  # noqa: PLC0415

        return planlib.loads(sys.stdin.buffer.read(MAX_PLAN_BYTES + 1), source="<stdin>")
    return planlib.load(path)


def _run_validate(args: argparse.Namespace) -> int:
    import msgspec  # noqa: PLC0415

    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.cli.output import print_json  # noqa: PLC0415
    from cloudtaser.errors import PlanError  # noqa: PLC0415
    from cloudtaser.plan.result import FileCheck, PlanValidate, ValidateSummary  # noqa: PLC0415

    if args.plans.count("-") > 1:
        from cloudtaser.cli.common import usage_error  # noqa: PLC0415

        return usage_error("'-' (standard input) can be given only once")
    files = []
    for path in args.plans:
        shown = "<stdin>" if path == "-" else path
        try:
            loaded = _load(path)
            planlib.check_isolation(loaded, source=str(shown))
        except PlanError as exc:
            files.append(FileCheck(file=shown, valid=False, error=str(exc)))
            if args.output != "json":
                print(f"cloudtaser: invalid: {exc}", file=sys.stderr)
            continue
        workloads = sum(len(t.workloads) for t in loaded.tenants)
        files.append(
            FileCheck(
                file=shown,
                valid=True,
                plan=loaded.metadata.name,
                tenants=len(loaded.tenants),
                workloads=workloads,
            )
        )
        if args.output != "json":
            print(f"{shown}: valid ({len(loaded.tenants)} tenants, {workloads} workloads)")
    failed = sum(1 for f in files if not f.valid)
    if args.output == "json":
        summary = ValidateSummary(files=len(files), valid=len(files) - failed, invalid=failed)
        print_json(msgspec.to_builtins(PlanValidate(files=files, summary=summary)))
    return ExitCode.USAGE if failed else ExitCode.OK


def _run_status(args: argparse.Namespace) -> int:
    from cloudtaser.cli.output import print_json, table  # noqa: PLC0415
    from cloudtaser.plan.summary import status_counts, waiting_for_git  # noqa: PLC0415
    from cloudtaser.plan.todo import select_tenants  # noqa: PLC0415

    loaded = _load(args.plan)
    scope = select_tenants(loaded, args.tenant)
    report = status_counts(loaded)
    chosen = {t.name for t in scope}
    report["tenants"] = [t for t in report["tenants"] if t["tenant"] in chosen]
    workloads = [
        {
            "tenant": t.name,
            "namespace": t.namespace,
            "kind": str(w.kind),
            "name": w.name,
            "status": w.effective_status.value,
            "reason": w.history[-1].reason if w.history else w.reason,
            "lastError": w.last_error,
            **({"waitingForGit": w.gitops.action} if w.gitops is not None else {}),
        }
        for t in scope
        for w in t.workloads
    ]
    waiting = waiting_for_git(scope)
    if args.output == "json":
        import msgspec  # noqa: PLC0415

        from cloudtaser.plan.result import GitWaiting, PlanStatus, WorkloadState  # noqa: PLC0415

        document = msgspec.convert({**report, "summary": report["total"]}, PlanStatus)
        if args.workloads:
            document.workloads = msgspec.convert(workloads, list[WorkloadState])
        if waiting:
            document.waiting_for_git = msgspec.convert(waiting, list[GitWaiting])
        print_json(msgspec.to_builtins(document))
        return ExitCode.OK
    if args.workloads:
        rows = [
            [
                str(w["tenant"]),
                f"{w['namespace']}/{w['kind']}/{w['name']}",
                str(w["status"]) + (", waiting for Git" if "waitingForGit" in w else ""),
                str(w["lastError"] or w["reason"] or ""),
            ]
            for w in workloads
        ]
        print(table(rows, ["TENANT", "WORKLOAD", "STATUS", "LAST ERROR / REASON"]))
        print()
    rows = []
    for entry in [*report["tenants"], {"tenant": "TOTAL", "namespace": "", **report["total"]}]:
        w, s = entry["workloads"], entry["secrets"]
        rows.append(
            [
                entry["tenant"],
                entry["namespace"],
                *(f"{w[k]} ({s[k]})" for k in ("pending", "migrated", "skipped")),
            ]
        )
    print(f"plan {report['plan']}: workloads (secrets) by status")
    print(table(rows, ["TENANT", "NAMESPACE", "PENDING", "MIGRATED", "SKIPPED"]))
    if waiting:
        _print_waiting(waiting, args.plan)
    return ExitCode.OK


def _print_waiting(waiting: list[dict[str, Any]], plan: str) -> None:
    """``plan status``: the workloads whose change waits for its owner to apply it from Git."""
    from cloudtaser.cli.output import table  # noqa: PLC0415

    print()
    print(f"waiting for Git: {len(waiting)} workload(s) (written with --emit, not applied yet)")
    rows = [
        [
            f"{w['namespace']}/{w['kind']}/{w['name']}",
            str(w["action"]),
            str(w["emittedAt"]),
            ", ".join(w["files"]),
        ]
        for w in waiting
    ]
    print(table(rows, ["WORKLOAD", "CHANGE", "EMITTED", "FILES"]))
    verbs = sorted({str(w["action"]) for w in waiting})
    for verb in verbs:
        print(f"once merged: cloudtaser target {verb} --plan {plan} --wait-for-git --yes")


def _run_todo(args: argparse.Namespace) -> int:
    from cloudtaser.cli.source_cmds import print_todo  # noqa: PLC0415
    from cloudtaser.plan.todo import checklist, select_tenants  # noqa: PLC0415

    loaded = _load(args.plan)
    items = checklist(loaded, select_tenants(loaded, args.tenant))
    print_todo(items, args.output, plan=loaded.metadata.name, vault_checked=False)
    return ExitCode.OK


def _check_set_status(args: argparse.Namespace) -> str | None:
    if not (args.workload or args.tenant):
        return "name the workloads to change: --workload REF and/or --tenant NAME"
    return None


def _run_set_status(args: argparse.Namespace) -> int:
    import msgspec  # noqa: PLC0415

    from cloudtaser.cli.output import print_json  # noqa: PLC0415
    from cloudtaser.config import local_actor  # noqa: PLC0415
    from cloudtaser.plan import WorkloadStatus  # noqa: PLC0415
    from cloudtaser.plan.result import (  # noqa: PLC0415
        PlanSetStatus,
        SetStatusSummary,
        StatusChanged,
    )
    from cloudtaser.plan.store import PlanStore  # noqa: PLC0415
    from cloudtaser.target.engine.core import Selection  # noqa: PLC0415

    new = WorkloadStatus(args.status)
    selection = Selection(tenants=tuple(args.tenant), workloads=tuple(args.workload))
    reason = args.reason or f"set to {new} with 'cloudtaser plan set-status'"
    changed = []
    unchanged = []
    with PlanStore(args.plan, actor=local_actor()) as store:
        loaded = store.load()
        selection.check(loaded)
        for tenant, workload in loaded.iter_workloads():
            if not selection.matches(tenant, workload):
                continue
            ref = f"{tenant.namespace}/{workload.kind}/{workload.name}"
            old = workload.effective_status
            if old is new:
                unchanged.append(ref)
                continue
            if old is WorkloadStatus.MIGRATED:
                from cloudtaser.errors import PlanError  # noqa: PLC0415

                raise PlanError(
                    f"{ref} is migrated: run 'cloudtaser target unprotect --plan {args.plan} "
                    f"--workload {ref} --yes' to undo it (that removes the annotations too)",
                    source=str(args.plan),
                )
            store.record(workload, new, reason=reason)
            changed.append(StatusChanged(workload=ref, from_=old, to=new))
    if args.output == "json":
        summary = SetStatusSummary(changed=len(changed), unchanged=len(unchanged))
        document = PlanSetStatus(
            plan=loaded.metadata.name, changed=changed, unchanged=unchanged, summary=summary
        )
        print_json(msgspec.to_builtins(document))
        return ExitCode.OK
    for c in changed:
        print(f"{c.workload}: {c.from_} -> {c.to}")
    for ref in unchanged:
        print(f"{ref}: already {new}")
    print(f"{len(changed)} changed, {len(unchanged)} unchanged (recorded in history)")
    return ExitCode.OK


def _run_schema(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from cloudtaser.plan import json_schema  # noqa: PLC0415

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return ExitCode.OK


def _run_completion(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode  # noqa: PLC0415

    sys.stdout.write(shellcode(["cloudtaser", "kubectl-cloudtaser"], shell=args.shell))
    return ExitCode.OK
