"""``cloudtaser source apply-plan|verify-plan``: vault-side commands (never touch a cluster).

Standard library only at module level; the library (requests, msgspec, yaml) is imported inside
the handlers. Neither command ever writes the plan file.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.approval_opts import add_gate_options, enforce_gates
from cloudtaser.cli.attest_opts import add_attest_options, write_attestation
from cloudtaser.cli.common import (
    add_output_option,
    add_plan_argument,
    add_vault_options,
    duration_seconds,
    int_1_to_64,
    vault_client,
)
from cloudtaser.cli.exitcodes import ExitCode

if TYPE_CHECKING:
    from cloudtaser.source.provision import ApplyResult
    from cloudtaser.source.verify import VerifyResult

__all__ = ["register"]

_APPLY_DESCRIPTION = """\
Create or update, for every tenant of PLAN, one ACL policy and one Kubernetes-auth role in
OpenBao / Vault. Talks only to the vault; the plan file is never modified.

  policy  sys/policies/acl/cloudtaser-<plan>-<tenant>
          grants "read" on exactly the tenant's vaultPath values (KV v2 data/ paths), nothing
          else; starts with a "# managed-by: cloudtaser" header
  role    auth/<authMount>/role/cloudtaser-<plan>-<tenant>
          bound to the tenant's namespace and the ServiceAccounts of its non-skipped
          workloads, token_policies=[that policy], token_ttl (--token-ttl), audience (--audience)

Before any write it checks that the token has the capabilities it needs, that every KV mount
exists and is version 2 and that the auth mount exists. It then reads each object, compares,
and writes only what differs: a second run writes nothing. A same-named policy or role that
cloudtaser did not create is never overwritten without --force.
"""

_APPLY_EPILOG = """\
examples:
  cloudtaser source apply-plan plan.yaml --openbao-addr https://bao.example:8200 \\
      --token-file ~/.bao-token --dry-run
  cloudtaser source apply-plan plan.yaml --audience openbao --token-ttl 30m --output json

exit codes: 0 applied (or nothing to do), 2 invalid plan or flags, 3 vault unreachable,
token refused, capability missing or vault sealed, 4 pre-flight failed (missing mount,
conflict) or a write failed (re-run: every write is idempotent).
The operator policy these commands need is in docs/source-commands.md.
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

_VERIFY_EPILOG = """\
examples:
  cloudtaser source verify-plan plan.yaml --openbao-addr https://bao.example:8200
  cloudtaser source verify-plan plan.yaml --output json --concurrency 32 | jq .summary

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


def register(groups: Any) -> None:
    """Attach the ``source`` verbs."""
    apply = groups.command(
        "source",
        "apply-plan",
        help="create the per-tenant vault policies and Kubernetes-auth roles a plan needs",
        description=_APPLY_DESCRIPTION,
        epilog=_APPLY_EPILOG,
    )
    _add_plan_and_vault(apply)
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="read and compare, print create / update / unchanged per object, write nothing",
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
        help="audience the pods' ServiceAccount tokens must carry (recommended, e.g. openbao); "
        "without it the role accepts any audience and a role that had one loses it",
    )
    apply.add_argument(
        "--enable-auth-mount",
        action="store_true",
        help="enable the Kubernetes auth method at the plan's auth mount if it is missing "
        "(needs sudo on sys/auth/<mount>; 'cloudtaser target connect' is the usual way)",
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
    )
    _add_plan_and_vault(verify)
    _add_concurrency(verify)
    add_output_option(verify)
    add_attest_options(verify)
    verify.set_defaults(handler=_run_verify)


def _add_plan_and_vault(parser: argparse.ArgumentParser) -> None:
    add_plan_argument(parser, "plan", metavar="PLAN", help="the migration plan (YAML)")
    add_vault_options(parser)


def _run_apply(args: argparse.Namespace) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.cli.output import print_json, progress  # noqa: PLC0415
    from cloudtaser.source.provision import apply_plan  # noqa: PLC0415

    loaded = planlib.load(args.plan)
    enforce_gates(args, loaded)
    with vault_client(args, pool_size=args.concurrency) as client:
        where = f"{client.address}" + (
            f" (namespace {client.namespace})" if client.namespace else ""
        )
        progress(
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
            progress=progress,
        )
    for warning in result.warnings:
        progress(f"warning: {warning}")
    if args.output == "json":
        print_json(_apply_json(result))
    else:
        _print_apply(result)
    if result.dry_run and any(c.action.value == "conflict" for c in result.changes):
        return ExitCode.PROBLEMS
    return ExitCode.OK


def _apply_json(result: ApplyResult) -> dict[str, Any]:
    from cloudtaser.source.provision import Action  # noqa: PLC0415

    return {
        "plan": result.plan,
        "dryRun": result.dry_run,
        "authMount": result.auth_mount,
        "objects": [
            {
                "kind": c.kind,
                "name": c.name,
                "path": c.path,
                "tenant": c.tenant,
                "action": c.action.value,
                **({"detail": c.detail} if c.detail else {}),
            }
            for c in result.changes
        ],
        "skippedTenants": [{"tenant": t, "reason": r} for t, r in result.skipped_tenants],
        "warnings": result.warnings,
        "summary": {
            **{a.value: result.count(a) for a in Action},
            "writes": result.writes,
        },
    }


def _print_apply(result: ApplyResult) -> None:
    from cloudtaser.cli.output import color, table  # noqa: PLC0415
    from cloudtaser.source.provision import Action  # noqa: PLC0415

    colours = {"create": "green", "update": "yellow", "unchanged": "dim", "conflict": "red"}
    verb = {
        "create": "create",
        "update": "update",
        "unchanged": "unchanged",
        "conflict": "CONFLICT",
    }
    if result.dry_run:
        verb |= {"create": "would create", "update": "would update"}
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
    from cloudtaser.cli.output import print_json, progress  # noqa: PLC0415
    from cloudtaser.source.verify import verify_plan  # noqa: PLC0415

    loaded = planlib.load(args.plan)
    with vault_client(args, pool_size=args.concurrency) as client:
        result = verify_plan(client, loaded, concurrency=args.concurrency, progress=progress)
        write_attestation(args, loaded, result, client)
    if args.output == "json":
        print_json(_verify_json(result))
    else:
        _print_verify(result)
    return ExitCode.OK if result.ok else ExitCode.PROBLEMS


def _verify_json(result: VerifyResult) -> dict[str, Any]:
    return {
        "plan": result.plan,
        "ok": result.ok,
        "tenants": [
            {
                "tenant": t.tenant,
                "namespace": t.namespace,
                "workloads": [
                    {
                        "kind": w.kind,
                        "name": w.name,
                        "status": "skipped"
                        if w.skipped
                        else (w.status.value if w.status else None),
                        "secrets": [
                            {
                                "source": s.source,
                                "vaultPath": s.vault_path,
                                "status": s.status.value,
                                **(
                                    {"missingFields": list(s.missing_fields)}
                                    if s.missing_fields
                                    else {}
                                ),
                                **({"version": s.version} if s.version is not None else {}),
                                **({"detail": s.detail} if s.detail else {}),
                            }
                            for s in w.secrets
                        ],
                    }
                    for w in t.workloads
                ],
            }
            for t in result.tenants
        ],
        "summary": {
            "pathsChecked": result.paths_checked,
            "workloadsChecked": result.workloads_checked,
            "workloadsOk": result.workloads_ok,
            "workloadsSkipped": result.workloads_skipped,
            "secrets": result.counts,
        },
    }


def _print_verify(result: VerifyResult) -> None:
    from cloudtaser.cli.output import color  # noqa: PLC0415

    colours = {"ok": "green", "missing-fields": "yellow"}
    for tenant in result.tenants:
        print(f"tenant {tenant.tenant} (namespace {tenant.namespace})")
        for w in tenant.workloads:
            if w.skipped:
                print(f"  {w.kind}/{w.name}: {color('skipped', 'dim')}")
                continue
            status = w.status.value if w.status else "ok"
            print(f"  {w.kind}/{w.name}: {color(status, colours.get(status, 'red'))}")
            for s in w.secrets:
                shown = color(s.status.value, colours.get(s.status.value, "red"))
                line = f"    {s.vault_path}: {shown}"
                if s.missing_fields:
                    line += f" (missing: {', '.join(s.missing_fields)})"
                elif s.detail and s.status.value != "ok":
                    line += f" ({s.detail})"
                print(line)
    problems = {k: v for k, v in result.counts.items() if k != "ok" and v}
    detail = ", ".join(f"{v} {k}" for k, v in problems.items())
    verdict = "all secrets present" if result.ok else f"problems: {detail}"
    print(
        f"plan {result.plan}: {result.workloads_ok}/{result.workloads_checked} workloads ok, "
        f"{result.workloads_skipped} skipped, {result.paths_checked} distinct paths checked; "
        f"{verdict}"
    )
