"""``cloudtaser fleet report``: the audits of many clusters merged into one report, from files
only (no cluster, no vault).

Standard library only at module level; the library is imported inside the handler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cloudtaser.cli.common import add_output_option
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import print_json, progress

__all__ = ["register"]

_DESCRIPTION = """\
Merge the audit documents of many clusters (each written by 'cloudtaser target audit --output
json') into one report: per cluster its identity (API server, kube-system UID), when it was
measured, its verdict, score and figures (workloads, still reading Secrets as env, protected,
finalized, Secrets left, unused, pods not injected), the same per namespace, then the fleet's
totals, verdict and score (the audit's rules over the totals). Reads the files only, so audits
carried out of air-gapped clusters can be merged anywhere. A cluster is its kube-system UID:
given several audits of one cluster, the newest is kept and the others are listed as left
out. Refused (exit 2, one line naming the file): a file that is not an audit document, the
audit of an earlier cloudtaser or of a newer formatVersion, two audits of one cluster measured
at the same second with different figures, an audit without a cluster identity whose API
address another audit shares. Prints a table or --output json (the common envelope, kind
"fleet-report", schema/output-fleet-report.schema.json); --html FILE also writes one
self-contained page with the audit page's look. See docs/fleet.md.
"""


def register(groups: Any) -> None:
    """Attach ``fleet report``."""
    report = groups.command(
        "fleet",
        "report",
        help="merge the audits of many clusters (target audit --output json files) into one "
        "report: per cluster and namespace, and fleet totals",
        description=_DESCRIPTION,
        examples=[
            "cloudtaser fleet report prod-eu.json prod-us.json",
            "cloudtaser fleet report audits/*.json --html fleet.html",
            "cloudtaser fleet report audits/*.json -o json",
        ],
        exit_codes="0 report written, 2 a file is not a usable audit document (one line "
        "names it and why).",
    )
    report.add_argument(
        "audits",
        nargs="+",
        metavar="AUDIT",
        help="a file written by 'cloudtaser target audit --output json' (one or more)",
    )
    add_output_option(report)
    report.add_argument(
        "--html",
        metavar="FILE",
        help="also write the report as one self-contained HTML page to FILE",
    )
    report.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    import msgspec  # noqa: PLC0415

    from cloudtaser.target.audit.fleet import render  # noqa: PLC0415
    from cloudtaser.target.audit.fleet.merge import fleet_report  # noqa: PLC0415

    report = fleet_report(args.audits)
    for left in report.superseded:
        progress(
            f"left out {left.file} (measured {left.measured_at}): {left.kept} is the newest "
            "audit given of the same cluster"
        )
    if args.html:
        from cloudtaser.fileio import atomic_write  # noqa: PLC0415

        atomic_write(Path(args.html), render.to_html(report).encode("utf-8"))
        progress(f"fleet report written to {args.html}")
    if args.output == "json":
        print_json(msgspec.to_builtins(report))
    else:
        sys.stdout.write(render.to_text(report))
    return ExitCode.OK
