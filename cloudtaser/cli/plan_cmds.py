"""``cloudtaser plan validate|status|schema``: local plan work, no system access."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from cloudtaser.cli import approval_cmds
from cloudtaser.cli.common import add_output_option, add_plan_argument
from cloudtaser.cli.exitcodes import ExitCode

if TYPE_CHECKING:
    pass

__all__ = ["register"]


def register(groups: Any) -> None:
    """Attach the ``plan`` verbs."""
    plan = groups.noun("plan")

    validate = plan.add_parser(
        "validate",
        help="check plan files against the schema and the safety rules",
        description=(
            "Check one or more plan files: schema, names, environment variable names, vault "
            "path safety, duplicates. Prints one line per problem with its location "
            "($.tenants[0].workloads[2]...). Exit 0 when every file is valid, 2 otherwise."
        ),
        parents=[groups.common],
    )
    add_plan_argument(validate, "plans", nargs="+", metavar="PLAN", help="plan file(s)")
    validate.set_defaults(handler=_run_validate)

    status = plan.add_parser(
        "status",
        help="count pending / migrated / skipped workloads and secrets",
        description=(
            "Summarise a plan's progress per tenant and overall: workloads and secrets that "
            "are pending, migrated or skipped."
        ),
        parents=[groups.common],
    )
    add_plan_argument(status, "plan", metavar="PLAN", help="plan file")
    add_output_option(status)
    status.set_defaults(handler=_run_status)

    schema = plan.add_parser(
        "schema",
        help="print the JSON Schema of the plan format",
        description=(
            "Print the JSON Schema of cloudtaser.io/v1 MigrationPlan (for editors and CI). "
            "Cross-field rules (duplicates, env var collisions) are enforced by "
            "'plan validate', not by the schema."
        ),
        parents=[groups.common],
    )
    schema.set_defaults(handler=_run_schema)
    approval_cmds.register(groups)  # approve, verify-approvals, diff, canonical


def _run_validate(args: argparse.Namespace) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.errors import PlanError  # noqa: PLC0415

    failed = 0
    for path in args.plans:
        try:
            loaded = planlib.load(path)
            planlib.check_isolation(loaded, source=str(path))
        except PlanError as exc:
            failed += 1
            print(f"cloudtaser: invalid: {exc}", file=sys.stderr)
            continue
        workloads = sum(len(t.workloads) for t in loaded.tenants)
        print(f"{path}: valid ({len(loaded.tenants)} tenants, {workloads} workloads)")
    return ExitCode.USAGE if failed else ExitCode.OK


def _run_status(args: argparse.Namespace) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.cli.output import print_json, table  # noqa: PLC0415

    loaded = planlib.load(args.plan)
    from cloudtaser.plan.summary import status_counts  # noqa: PLC0415

    report = status_counts(loaded)
    if args.output == "json":
        print_json(report)
        return ExitCode.OK
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
    return ExitCode.OK


def _run_schema(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from cloudtaser.plan import json_schema  # noqa: PLC0415

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return ExitCode.OK
