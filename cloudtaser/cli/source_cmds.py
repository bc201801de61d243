"""``cloudtaser source apply-plan|verify-plan``: vault-side commands (never touch a cluster).

Standard library only at module level; the library (requests, msgspec, yaml) is imported inside
the handlers. Neither command ever writes the plan file.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.approval_opts import add_gate_options, enforce_gates
from cloudtaser.cli.attest_opts import add_attest_options, attestation_signer, write_attestation
from cloudtaser.cli.common import (
    add_dry_run_option,
    add_output_option,
    add_plan_argument,
    add_vault_options,
    duration_seconds,
    int_1_to_64,
    print_error,
    tenant_completer,
    vault_client,
)
from cloudtaser.cli.exitcodes import ExitCode

if TYPE_CHECKING:
    from cloudtaser.source.provision import ApplyResult, Change
    from cloudtaser.source.result import VerifyPlanMissing
    from cloudtaser.source.verify import VerifyResult

__all__ = ["register"]

_APPLY_DESCRIPTION = """\
Create or update, for every tenant of PLAN, one ACL policy and one auth role in
OpenBao / Vault. Talks only to the vault; the plan file is never modified.

  policy  sys/policies/acl/cloudtaser-<plan>-<tenant>
          grants "read" on exactly the tenant's vaultPath values (KV v2 data/ paths), nothing
          else; starts with a "# managed-by: cloudtaser" header
  role    auth/<authMount>/role/cloudtaser-<plan>-<tenant>
          bound to the tenant's namespace and the ServiceAccounts of its non-skipped
          workloads, token_policies=[that policy], token_ttl (--token-ttl), audience (--audience)
          metadata.authMethod jwt: a role_type=jwt role bound by the token's claims
          (/kubernetes.io/namespace, /kubernetes.io/serviceaccount/name) and bound_audiences
          (--audience, required)

Before any write it checks that the token has the capabilities it needs, that every KV mount
exists and is version 2 and that the auth mount exists. It then reads each object, compares,
and writes only what differs: a second run writes nothing. A same-named policy or role that
cloudtaser did not create is never overwritten without --force.
"""

_APPLY_EXAMPLES = [
    "cloudtaser source apply-plan plan.yaml --openbao-addr https://bao.example:8200 \\\n"
    "      --token-file ~/.bao-token --dry-run",
    "cloudtaser source apply-plan plan.yaml --dry-run --detailed-exitcode",
    "cloudtaser source apply-plan plan.yaml --prune --dry-run",
    "cloudtaser source apply-plan plan.yaml --audience openbao --token-ttl 30m --output json",
]

_APPLY_EPILOG = """\
what changes is shown like 'terraform plan', on --dry-run and before a normal run writes:
a unified diff of each policy's HCL (vault -> plan) and old -> new of each role field.
Policies and roles named cloudtaser-<plan>-* that the plan no longer contains (a tenant
dropped from the plan) are reported as 'orphaned'; --prune deletes them (--dry-run shows
them first). Finding them needs 'list' on sys/policies/acl and auth/<mount>/role.
The operator policy these commands need is in docs/source-commands.md.

exit codes: 0 applied (or nothing to do), 1 --dry-run found a conflict, 2 invalid plan or
flags, 3 vault unreachable, token refused, capability missing or vault sealed, 4 pre-flight
failed (missing mount, conflict) or a write failed (re-run: every write is idempotent),
5 refused by --require-approval before any vault request.
With --detailed-exitcode, as 'terraform plan -detailed-exitcode': 0 nothing to do, 2 changes
pending (or, without --dry-run, made), 1 any error.
"""

_VERIFY_DESCRIPTION = """\
Prove that every secret PLAN needs is in the vault, without reading any secret value. For
each workload that is not skipped, each vaultPath must exist with a live latest version (not
deleted, not destroyed) that has every field named in "fields". Uses only the KV v2
subkeys/ endpoint (key names, null values) and sys/capabilities-self; data/ is never read.
The plan file is never modified.

Statuses: ok, missing (never written), deleted / destroyed (latest version), missing-fields
(names listed), permission-denied (the token lacks "read" on <mount>/subkeys/<path>).
"""

_VERIFY_EXAMPLES = [
    "cloudtaser source verify-plan plan.yaml --openbao-addr https://bao.example:8200",
    "cloudtaser source verify-plan plan.yaml --tenant payments --all",
    "cloudtaser source verify-plan plan.yaml --missing",
    "cloudtaser source verify-plan plan.yaml --output json --concurrency 32 | jq .summary",
]

_VERIFY_EPILOG = """\
the report lists problems only (--all: every path), one entry per distinct vault path with
the fields it lacks and the workloads that need it. --missing prints the populate checklist
instead: one 'bao kv put <path> field=...' skeleton per path, without values (the same as
'cloudtaser plan todo PLAN', which needs no vault access and lists every path).

exit codes: 0 every secret present, 1 problems found (see the report), 2 invalid plan or
flags, 3 vault unreachable, token refused or vault sealed, 4 a mount is not KV v2.
"""


def _add_concurrency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=int_1_to_64,
        default=16,
        metavar="N",
        help="vault requests in flight at once over one pooled connection set (1-64, "
        "default 16); lower it if the vault rate-limits you",
    )


def _verbose(args: argparse.Namespace) -> bool:
    return int(getattr(args, "verbose", 0) or 0) > 0


def register(groups: Any) -> None:
    """Attach the ``source`` verbs."""
    apply = groups.command(
        "source",
        "apply-plan",
        help="create the per-tenant vault policies and Kubernetes-auth roles a plan needs",
        description=_APPLY_DESCRIPTION,
        epilog=_APPLY_EPILOG,
        examples=_APPLY_EXAMPLES,
    )
    _add_plan_and_vault(apply)
    add_dry_run_option(
        apply,
        help="read and compare, print the diff and create / update / unchanged per object, "
        "write nothing",
    )
    apply.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing differs, 2 when changes are pending (or were made), 1 on "
        "any error (as terraform plan)",
    )
    apply.add_argument(
        "--prune",
        action="store_true",
        help="delete the policies and roles named for this plan that it no longer contains",
    )
    apply.add_argument(
        "--force",
        action="store_true",
        help="overwrite a same-named policy or role that cloudtaser did not create",
    )
    apply.add_argument(
        "--token-ttl",
        type=duration_seconds,
        default=3600,
        metavar="DURATION",
        help="TTL of the tokens pods get when they log in (e.g. 3600, 1h, 30m; default 1h)",
    )
    apply.add_argument(
        "--audience",
        metavar="AUD",
        help="audience the pods' ServiceAccount tokens must carry (recommended, e.g. openbao; "
        "required when the plan's metadata.authMethod is jwt); without it the role accepts "
        "any audience and a role that had one loses it",
    )
    apply.add_argument(
        "--enable-auth-mount",
        action="store_true",
        help="enable the plan's auth method (metadata.authMethod: kubernetes, or jwt) at its "
        "auth mount if it is missing (needs sudo on sys/auth/<mount>; 'cloudtaser target "
        "connect' is the usual way)",
    )
    _add_concurrency(apply)
    add_output_option(apply)
    add_gate_options(apply)
    apply.set_defaults(handler=_run_apply)

    verify = groups.command(
        "source",
        "verify-plan",
        help="prove every secret path and field of a plan exists, without reading values",
        description=_VERIFY_DESCRIPTION,
        epilog=_VERIFY_EPILOG,
        examples=_VERIFY_EXAMPLES,
    )
    _add_plan_and_vault(verify)
    _add_concurrency(verify)
    shown = verify.add_mutually_exclusive_group()
    shown.add_argument(
        "--all", action="store_true", help="list every path, not only those with problems"
    )
    shown.add_argument(
        "--missing",
        action="store_true",
        help="print the populate checklist (bao kv put skeletons, no values) for the paths "
        "that are missing or lack fields",
    )
    tenant = verify.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="NAME",
        help="only this tenant (tenant name or namespace; repeatable)",
    )
    tenant.completer = tenant_completer
    add_output_option(verify)
    add_attest_options(verify)
    verify.set_defaults(handler=_run_verify)


def _add_plan_and_vault(parser: argparse.ArgumentParser) -> None:
    add_plan_argument(parser, "plan", metavar="PLAN", help="the migration plan (YAML)")
    add_vault_options(parser)


def _run_apply(args: argparse.Namespace) -> int:
    if not args.detailed_exitcode:
        return _apply(args)
    from cloudtaser.cli.exitcodes import exit_code_for  # noqa: PLC0415
    from cloudtaser.errors import CloudtaserError  # noqa: PLC0415

    try:
        return _apply(args)
    except CloudtaserError as exc:  # terraform's contract: every error is 1
        print_error(exit_code_for(exc)[1])
        return ExitCode.PROBLEMS


def _apply(args: argparse.Namespace) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.cli.output import RunProgress  # noqa: PLC0415
    from cloudtaser.source.provision import apply_plan  # noqa: PLC0415

    loaded = planlib.load(args.plan)
    enforce_gates(args, loaded)
    shown: list[bool] = []

    def before_write(pending: ApplyResult) -> None:
        if args.output != "json":
            # what is replaced or deleted in full; a create in one line (its whole HCL is
            # on --dry-run), so a first apply of 300 tenants is not 300 policy bodies
            _print_diff(pending, full_creates=False)
            shown.append(True)

    with (
        vault_client(args, pool_size=args.concurrency) as client,
        RunProgress(verbose=_verbose(args)) as reporter,
    ):
        where = f"{client.address}" + (
            f" (namespace {client.namespace})" if client.namespace else ""
        )
        reporter.message(
            f"{'dry run: ' if args.dry_run else ''}applying plan {loaded.metadata.name} to {where}"
        )
        result = apply_plan(
            client,
            loaded,
            dry_run=args.dry_run,
            force=args.force,
            token_ttl=args.token_ttl,
            audience=args.audience,
            enable_auth_mount=args.enable_auth_mount,
            concurrency=args.concurrency,
            prune=args.prune,
            progress=reporter.message,
            before_write=before_write,
        )
        for warning in result.warnings:
            reporter.message(f"warning: {warning}")
        reporter.close(_apply_tally(result))
    if args.output == "json":
        _print_apply_json(result)
    else:
        if not shown:
            _print_diff(result)
        _print_apply(result)
    conflict = any(c.action.value == "conflict" for c in result.changes)
    if args.detailed_exitcode:
        if conflict:
            return ExitCode.PROBLEMS
        return 2 if result.pending else ExitCode.OK
    if result.dry_run and conflict:
        return ExitCode.PROBLEMS
    return ExitCode.OK


def _apply_tally(result: ApplyResult) -> str:
    from cloudtaser.changes import Action  # noqa: PLC0415
    from cloudtaser.cli.output import tally  # noqa: PLC0415

    counts = {a.value: result.count(a) for a in Action}
    return tally(counts, ("create", "update", "delete", "orphaned", "conflict", "unchanged"))


def policy_diff(change: Change) -> list[str]:
    """The unified diff (vault -> plan) of a policy change's HCL; empty when equal."""
    import difflib  # noqa: PLC0415

    old = change.current if isinstance(change.current, str) else ""
    new = change.desired if isinstance(change.desired, str) else ""
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{change.path} (vault)" if change.current is not None else "/dev/null",
            tofile=f"{change.path} (plan)" if change.desired is not None else "/dev/null",
        )
    ]


def _show(value: Any) -> str:
    import json  # noqa: PLC0415

    return "(unset)" if value is None else json.dumps(value)


def _print_diff(result: ApplyResult, *, full_creates: bool = True) -> None:
    from cloudtaser.cli.output import color  # noqa: PLC0415

    marks = {"create": "+", "update": "~", "delete": "-", "orphaned": "!", "conflict": "!"}
    colours = {"create": "green", "update": "yellow", "delete": "red", "orphaned": "red"}
    creates = 0
    for change in result.changes:
        action = change.action.value
        if action not in marks or change.kind == "auth-mount":
            continue
        if action == "create" and not full_creates:
            creates += 1
            continue
        verb = (
            ("would " if result.dry_run else "will ") + action
            if action
            in (
                "create",
                "update",
                "delete",
            )
            else action
        )
        print(
            color(
                f"{marks[action]} {change.kind} {change.path}: {verb}", colours.get(action, "red")
            )
            + (f" ({change.detail})" if change.detail and action != "update" else "")
        )
        if change.kind == "policy":
            for line in policy_diff(change):
                tint = "green" if line.startswith("+") else "red" if line.startswith("-") else None
                text = f"    {line}"
                print(color(text, tint) if tint and not line.startswith(("+++", "---")) else text)
        else:
            for key, old, new in _role_field_changes(change):
                print(f"    {key}: {_show(old)} -> {_show(new)}")
    if creates:
        print(
            color(
                f"+ {creates} object(s) will be created (listed below; --dry-run shows their HCL)",
                "green",
            )
        )


def _role_field_changes(change: Change) -> list[tuple[str, Any, Any]]:
    if change.desired is None:  # orphaned / delete: everything goes
        current = change.current if isinstance(change.current, dict) else {}
        return [(k, v, None) for k, v in current.items()]
    return change.field_changes()


def _print_apply_json(result: ApplyResult) -> None:
    import msgspec  # noqa: PLC0415

    from cloudtaser.changes import Action  # noqa: PLC0415
    from cloudtaser.cli.output import print_json  # noqa: PLC0415
    from cloudtaser.source.result import (  # noqa: PLC0415
        ApplyObject,
        ApplyPlan,
        ApplySummary,
        FieldChange,
        SkippedTenant,
    )

    def entry(c: Change) -> ApplyObject:
        changed = c.action is not Action.UNCHANGED
        return ApplyObject(
            kind=c.kind,  # type: ignore[arg-type]  # "policy" | "role" | "auth-mount"
            name=c.name,
            path=c.path,
            tenant=c.tenant,
            action=c.action,
            detail=c.detail or msgspec.UNSET,
            diff=policy_diff(c) if c.kind == "policy" and changed else msgspec.UNSET,
            field_changes=(
                [FieldChange(field=k, old=o, new=n) for k, o, n in _role_field_changes(c)]
                if c.kind == "role" and changed
                else msgspec.UNSET
            ),
        )

    summary = ApplySummary(
        create=result.count(Action.CREATE),
        update=result.count(Action.UPDATE),
        unchanged=result.count(Action.UNCHANGED),
        conflict=result.count(Action.CONFLICT),
        orphaned=result.count(Action.ORPHANED),
        delete=result.count(Action.DELETE),
        writes=result.writes,
    )
    document = ApplyPlan(
        plan=result.plan,
        dry_run=result.dry_run,
        auth_mount=result.auth_mount,
        changes_pending=result.pending,
        objects=[entry(c) for c in result.changes],
        skipped_tenants=[SkippedTenant(tenant=t, reason=r) for t, r in result.skipped_tenants],
        warnings=result.warnings,
        summary=summary,
    )
    print_json(msgspec.to_builtins(document))


def _print_apply(result: ApplyResult) -> None:
    from cloudtaser.changes import Action  # noqa: PLC0415
    from cloudtaser.cli.output import color, table  # noqa: PLC0415

    colours = {
        "create": "green",
        "update": "yellow",
        "unchanged": "dim",
        "conflict": "red",
        "orphaned": "red",
        "delete": "red",
    }
    verb = {
        "create": "create",
        "update": "update",
        "unchanged": "unchanged",
        "conflict": "CONFLICT",
        "orphaned": "orphaned",
        "delete": "delete",
    }
    if result.dry_run:
        verb |= {"create": "would create", "update": "would update", "delete": "would delete"}
    rows = [
        [
            c.tenant or "-",
            c.kind,
            c.path,
            color(verb[c.action.value], colours[c.action.value]),
            c.detail,
        ]
        for c in result.changes
    ]
    if rows:
        print(table(rows, ["TENANT", "KIND", "PATH", "ACTION", "DETAIL"]))
    for tenant, reason in result.skipped_tenants:
        print(f"tenant {tenant}: no policy or role ({reason})")
    counts = ", ".join(f"{result.count(a)} {a.value}" for a in Action if result.count(a))
    prefix = "dry run, nothing written" if result.dry_run else f"{result.writes} write(s)"
    summary = counts or "no objects"
    if not result.dry_run and not result.changed and result.changes:
        summary += " - the vault already matches the plan"
    print(f"plan {result.plan}: {summary} ({prefix})")


def _run_verify(args: argparse.Namespace) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.cli.output import RunProgress  # noqa: PLC0415
    from cloudtaser.source.verify import verify_plan  # noqa: PLC0415

    loaded = planlib.load(args.plan)
    signer = attestation_signer(args)  # a key that cannot sign fails before any vault work
    with (
        vault_client(args, pool_size=args.concurrency) as client,
        RunProgress(verbose=_verbose(args)) as reporter,
    ):
        result = verify_plan(
            client,
            loaded,
            concurrency=args.concurrency,
            progress=reporter.message,
            tenants=tuple(args.tenant),
        )
        write_attestation(args, loaded, result, client, signer)
        counts = result.path_counts()
        reporter.close(
            f"{result.paths_checked} distinct paths checked: "
            + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        )
    if args.missing:
        todo = [p.todo() for p in result.by_path() if not p.ok]
        print_todo(todo, args.output, plan=result.plan, vault_checked=True)
    elif args.output == "json":
        _print_verify_json(result)
    else:
        _print_verify(result, show_all=args.all)
    return ExitCode.OK if result.ok else ExitCode.PROBLEMS


def print_todo(items: list[Any], output: str, *, plan: str, vault_checked: bool) -> None:
    """The populate checklist (``plan todo``, ``verify-plan --missing``): text or JSON."""
    fields = sum(len(i.missing_fields) for i in items)
    if output == "json":
        import msgspec  # noqa: PLC0415

        from cloudtaser.cli.output import print_json  # noqa: PLC0415
        from cloudtaser.plan.result import (  # noqa: PLC0415
            ChecklistPath,
            ChecklistSummary,
            PlanTodo,
        )

        document_type: type[PlanTodo | VerifyPlanMissing] = PlanTodo
        if vault_checked:  # plan todo (no vault) does not load the vault side
            from cloudtaser.source.result import VerifyPlanMissing  # noqa: PLC0415

            document_type = VerifyPlanMissing
        paths = [
            ChecklistPath(
                vault_path=i.vault_path,
                mount=i.mount,
                path=i.path,
                status=i.status,
                fields=list(i.missing_fields),
                workloads=list(i.workloads),
                command=i.command(),
            )
            for i in items
        ]
        document = document_type(
            plan=plan, paths=paths, summary=ChecklistSummary(paths=len(items), fields=fields)
        )
        print_json(msgspec.to_builtins(document))
        return
    if not items:
        print(f"plan {plan}: nothing to populate")
        return
    print(
        f"# plan {plan}: {len(items)} vault path(s), {fields} field(s) to populate.\n"
        "# Replace each … with the value (or use field=@FILE to read it from a file, which "
        "keeps it out of the shell history)."
    )
    for item in items:
        status = "" if item.status == "unknown" else f" [{item.status}]"
        print(f"\n# {item.vault_path}{status}: needed by {', '.join(item.workloads)}")
        print(item.command())


def _print_verify_json(result: VerifyResult) -> None:
    import msgspec  # noqa: PLC0415

    from cloudtaser.cli.output import print_json  # noqa: PLC0415
    from cloudtaser.source.result import (  # noqa: PLC0415
        PathCounts,
        PathEntry,
        SecretEntry,
        TenantEntry,
        VerifyPlan,
        VerifySummary,
        WorkloadEntry,
    )

    unset = msgspec.UNSET
    paths = [
        PathEntry(
            vault_path=p.vault_path,
            status=p.status,
            fields=list(p.fields),
            missing_fields=list(p.missing_fields) or unset,
            workloads=list(p.workloads),
            version=unset if p.version is None else p.version,
            detail=p.detail or unset,
        )
        for p in result.by_path()
    ]
    tenants = [
        TenantEntry(
            tenant=t.tenant,
            namespace=t.namespace,
            workloads=[
                WorkloadEntry(
                    kind=w.kind,
                    name=w.name,
                    status="skipped" if w.skipped else (w.status.value if w.status else None),
                    secrets=[
                        SecretEntry(
                            source=s.source,
                            vault_path=s.vault_path,
                            status=s.status,
                            missing_fields=list(s.missing_fields) or unset,
                            version=unset if s.version is None else s.version,
                            detail=s.detail or unset,
                        )
                        for s in w.secrets
                    ],
                )
                for w in t.workloads
            ],
        )
        for t in result.tenants
    ]
    summary = VerifySummary(
        paths_checked=result.paths_checked,
        paths=msgspec.convert(result.path_counts(), PathCounts),
        workloads_checked=result.workloads_checked,
        workloads_ok=result.workloads_ok,
        workloads_skipped=result.workloads_skipped,
        secrets=msgspec.convert(result.counts, PathCounts),
    )
    document = VerifyPlan(
        plan=result.plan, ok=result.ok, paths=paths, tenants=tenants, summary=summary
    )
    print_json(msgspec.to_builtins(document))


def _print_verify(result: VerifyResult, *, show_all: bool) -> None:
    from cloudtaser.cli.output import color  # noqa: PLC0415

    colours = {"ok": "green", "missing-fields": "yellow"}
    for path in result.by_path():
        if path.ok and not show_all:
            continue
        status = color(path.status.value, colours.get(path.status.value, "red"))
        line = f"{path.vault_path}: {status}"
        if path.missing_fields:
            line += f" (lacks {', '.join(path.missing_fields)})"
        elif path.detail and not path.ok:
            line += f" ({path.detail})"
        print(line)
        if path.fields:
            print(f"  fields: {', '.join(path.fields)}")
        count = len(path.workloads)
        print(
            f"  needed by {count} workload{'s' if count != 1 else ''}: {', '.join(path.workloads)}"
        )
    counts = result.path_counts()
    problems = {k: v for k, v in counts.items() if k != "ok" and v}
    detail = ", ".join(f"{v} {k}" for k, v in problems.items())
    bad = sum(problems.values())
    verdict = (
        "all secrets present"
        if result.ok
        else f"{bad} of them with problems ({detail}); 'verify-plan --missing' prints what to "
        "put into the vault"
    )
    print(
        f"plan {result.plan}: {result.paths_checked} distinct paths checked, {verdict}; "
        f"{result.workloads_ok}/{result.workloads_checked} workloads ok, "
        f"{result.workloads_skipped} skipped"
    )
