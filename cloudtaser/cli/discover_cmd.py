"""``cloudtaser target discover``: scan a cluster and write the migration plan.

Standard library only at module level; lightkube, msgspec and yaml are imported in the handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.common import (
    OUTPUT_FORMATS,
    add_cluster_options,
    add_plan_argument,
    cluster_session,
    plan_files_completer,
)
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import print_json
from cloudtaser.cli.output import progress as _progress
from cloudtaser.plan.rules import DEFAULT_PATH_TEMPLATE, ISOLATED_PATH_TEMPLATE

if TYPE_CHECKING:
    from cloudtaser.target.discover.build import DiscoveryResult

__all__ = ["register"]

# The rule book's template names (cloudtaser.plan.rules is standard library only, so --help
# and completion stay fast).
_DEFAULT_TEMPLATE = DEFAULT_PATH_TEMPLATE
_ISOLATED_TEMPLATE = ISOLATED_PATH_TEMPLATE

_DESCRIPTION = """\
Scan one cluster (never a vault) for Deployments, StatefulSets, DaemonSets, CronJobs, Jobs
and Argo Rollouts (where their CRD is installed) that consume Kubernetes Secrets, and write a
MigrationPlan: one tenant per namespace, every workload with
the vault path each Secret moves to. The plan holds no secret values: for envFrom, discover
reads only the key names of the Secrets.

What is found: env[].valueFrom.secretKeyRef, envFrom[].secretRef (with prefix), in containers
and init containers; secret and projected volumes (recorded as secretFiles; a workload that
uses Secrets only as files is 'skipped'); HashiCorp Vault Agent annotations
(vault.hashicorp.com/agent-inject-secret-<name>: <path>, kept as the vaultPath).
Skipped: kube-system, kube-public, kube-node-lease, cloudtaser-system and --exclude-namespace;
workloads already annotated cloudtaser.io/inject: "true"; workloads that use no Secrets;
Jobs a CronJob owns (covered through the CronJob). A standalone Job is written 'skipped' (its
pod template is immutable). CronJob, Job and Rollout are an extension of CloudTaser's kinds:
--cloudtaser-kinds-only writes only Deployments, StatefulSets and DaemonSets.
"""

_EPILOG = """\
vault path naming (--path-template), placeholders:
  {mount}      the KV v2 mount (--kv-mount, default: secret)
  {cluster}    --cluster-name, default: the plan name (--name)
  {namespace}  the workload's namespace (required)
  {secret}     the Kubernetes Secret name (required)
  default   {mount}/data/{namespace}/{secret}            clusters share paths
  --isolate {mount}/data/{cluster}/{namespace}/{secret}  one subtree per cluster
  Paths must be KV v2 API paths: <mount>/data/<path>.

the plan file and -o: -o/--output takes either a result format or the plan file, told
apart by the value alone: 'text' and 'json' are the result format, as on every cloudtaser
command; a name ending in .yaml or .yml, or '-' (stdout), is the plan file, as in
CloudTaser's 'discover -o plan.yaml' (the same as --output-plan FILE); anything else is an
error. Give both with '-o plan.yaml -o json'. A plan file named otherwise: --output-plan.
-o json prints a discovery report (counts, skips, warnings) on stdout; it cannot be combined
with the plan on stdout ('-').
required RBAC: list deployments, statefulsets, daemonsets (apps) cluster-wide or in the chosen
namespaces; get/list secrets only where envFrom needs key names. docs: docs/discover.md

exit codes: 0 plan written; 1 plan written but incomplete (something could not be read,
see the 'could not read' lines); 2 bad flags, kubeconfig or context, or a plan with progress
would be overwritten; 3 cluster unreachable, 401 or 403; 4 other API failures.
"""


def _verbose(args: argparse.Namespace) -> bool:
    return int(getattr(args, "verbose", 0) or 0) > 0


def register(groups: Any) -> None:
    """Attach ``target discover``."""
    parser = groups.command(
        "target",
        "discover",
        help="scan a cluster and write a migration plan (no vault access)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        examples=[
            "cloudtaser target discover --kubeconfig ~/.kube/cluster-a -o plan-a.yaml",
            "cloudtaser target discover --kubeconfig ~/.kube/prod --output-plan plan.yaml",
            "cloudtaser target discover --context prod-eu -n payments -n billing "
            "-l tier=backend --output-plan -",
            "cloudtaser target discover --isolate --cluster-name eu-1 --kv-mount kv "
            "--output-plan plan.yaml -o json",
        ],
    )
    add_cluster_options(parser)
    scope = parser.add_argument_group("what to scan")
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="NS",
        help="scan only this namespace (repeatable; default: all namespaces)",
    )
    scope.add_argument(
        "-l",
        "--selector",
        metavar="SELECTOR",
        help="label selector for workloads, kubectl syntax (e.g. 'app=web,tier!=cache')",
    )
    scope.add_argument(
        "--cloudtaser-kinds-only",
        action="store_true",
        help="list only Deployments, StatefulSets and DaemonSets, so the plan is valid for "
        "CloudTaser's own tools (default: also CronJobs, Jobs and Argo Rollouts, an extension)",
    )
    scope.add_argument(
        "--exclude-namespace",
        dest="exclude_namespaces",
        action="append",
        default=[],
        metavar="NS",
        help="also skip this namespace (repeatable; the system namespaces are always skipped)",
    )
    naming = parser.add_argument_group("plan and vault naming")
    naming.add_argument(
        "--name",
        metavar="NAME",
        help="plan name (default: derived from the kube context); it names the vault "
        "policies and roles, so keep it unique per cluster",
    )
    template = naming.add_mutually_exclusive_group()
    template.add_argument(
        "--path-template",
        metavar="TEMPLATE",
        default=None,
        help=f"vault path naming (default: {_DEFAULT_TEMPLATE}); see below",
    )
    template.add_argument(
        "--isolate",
        action="store_true",
        help=f"give this cluster its own subtree: {_ISOLATED_TEMPLATE}",
    )
    naming.add_argument(
        "--cluster-name",
        metavar="NAME",
        help="value of {cluster} in the path template (default: the plan name)",
    )
    naming.add_argument(
        "--kv-mount",
        metavar="MOUNT",
        help="KV v2 mount for {mount}, recorded in the plan (default: secret, not recorded)",
    )
    naming.add_argument(
        "--auth-mount",
        metavar="MOUNT",
        help="Kubernetes auth mount to record in the plan (default: kubernetes)",
    )
    naming.add_argument(
        "--auth-method",
        choices=("jwt", "kubernetes"),
        help="how the pods will log in, recorded in the plan (metadata.authMethod): jwt (the "
        "vault checks tokens offline, recommended for an air-gapped vault) or kubernetes "
        "(default, not recorded)",
    )
    out = parser.add_argument_group("output")
    add_plan_argument(
        out,
        "--output-plan",
        action=_PlanFile,
        metavar="FILE",
        help="write the plan to FILE ('-' for stdout); an existing file is replaced atomically",
    )
    output = out.add_argument(
        "-o",
        "--output",
        action=_FormatOrPlanFile,
        type=format_or_plan_file,
        default="text",
        metavar="{text,json,FILE.yaml,-}",
        help="text or json: the result format on stdout (default: text); FILE.yaml, FILE.yml "
        "or '-' (stdout): the plan file, as with --output-plan",
    )
    output.completer = _format_or_plan_completer
    out.add_argument(
        "--force",
        action="store_true",
        help="overwrite a plan that records progress (migrated or reviewer-skipped workloads)",
    )
    parser.set_defaults(handler=_run_discover, precheck=_check_discover)


def is_plan_file_name(value: str) -> bool:
    """The one rule that makes ``-o VALUE`` a plan file: ``-`` or a name ending in
    ``.yaml``/``.yml`` (any case). ``text`` and ``json`` never are."""
    return value == "-" or value.lower().endswith((".yaml", ".yml"))


def format_or_plan_file(text: str) -> str:
    """argparse type of discover's ``-o``: a result format or a plan file name."""
    if text in OUTPUT_FORMATS or is_plan_file_name(text):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a result format nor a plan file: -o takes text or json (the "
        "result format), or a file name ending in .yaml or .yml, or '-' (the plan file, e.g. "
        "-o plan.yaml); for a plan file named otherwise use --output-plan FILE"
    )


def _set_plan_file(
    parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: str
) -> None:
    """Naming two different plan files is an error, whichever of ``-o FILE.yaml`` and
    ``--output-plan FILE`` comes first."""
    previous = getattr(namespace, "output_plan", None)
    if previous is not None and previous != value:
        parser.error(
            f"two plan files given ({previous!r} and {value!r}): discover writes one; pass "
            "-o FILE.yaml or --output-plan FILE once"
        )
    namespace.output_plan = value


class _PlanFile(argparse.Action):
    """``--output-plan FILE``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        _set_plan_file(parser, namespace, str(values))


class _FormatOrPlanFile(argparse.Action):
    """``-o text|json`` sets the result format; ``-o FILE.yaml|FILE.yml|-`` the plan file."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values in OUTPUT_FORMATS:
            namespace.output = values
        else:
            _set_plan_file(parser, namespace, str(values))


def _format_or_plan_completer(prefix: str, **kwargs: Any) -> list[str]:
    formats = [f for f in OUTPUT_FORMATS if f.startswith(prefix)]
    return formats + plan_files_completer(prefix, **kwargs)


def _check_discover(args: argparse.Namespace) -> str | None:
    """Usage rules argparse cannot express (also applied to documented examples)."""
    if args.output_plan is None:
        return (
            "discover needs the plan file: -o plan.yaml (a name ending in .yaml or .yml, or "
            "'-' for stdout) or --output-plan FILE"
        )
    if args.output == "json" and args.output_plan == "-":
        return (
            "-o json prints a report on stdout and the plan file '-' is stdout too: choose "
            "one (e.g. -o plan.yaml -o json)"
        )
    return None


def _report_json(result: DiscoveryResult, output_plan: str) -> None:
    import msgspec  # noqa: PLC0415

    from cloudtaser.target.discover.result import (  # noqa: PLC0415
        Discover,
        DiscoverSummary,
        SkippedEntry,
    )

    s = result.summary
    skipped = [
        SkippedEntry(
            namespace=k.namespace, kind=k.kind, name=k.name, reason=k.reason, in_plan=k.in_plan
        )
        for k in result.skipped
    ]
    summary = DiscoverSummary(
        namespaces_scanned=s.namespaces_scanned,
        workloads_scanned=s.workloads_scanned,
        tenants=s.tenants,
        workloads=s.workloads,
        pending=s.pending,
        skipped=s.skipped,
        vault_paths=s.secrets,
        not_in_plan=dict(s.not_in_plan),
    )
    document = Discover(
        plan=result.plan.metadata.name,
        output_plan=output_plan,
        complete=result.complete,
        skipped=skipped,
        warnings=list(result.warnings),
        unreadable=list(result.unreadable),
        summary=summary,
    )
    print_json(msgspec.to_builtins(document))


def _summary(result: DiscoveryResult) -> None:
    s = result.summary
    _progress(
        f"scanned {s.workloads_scanned} workloads"
        + (f" in {s.namespaces_scanned} namespaces" if s.namespaces_scanned else "")
    )
    _progress(
        f"plan: {s.tenants} tenants, {s.workloads} workloads ({s.pending} pending, "
        f"{s.skipped} skipped), {s.secrets} vault paths"
    )
    for skip in result.skipped:
        if skip.in_plan:
            _progress(f"skipped {skip.kind} {skip.namespace}/{skip.name}: {skip.reason}")
    for reason, count in s.not_in_plan.items():
        _progress(f"not in plan: {count} workload(s): {reason}")
    for warning in result.warnings:
        _progress(f"warning: {warning}")
    for item in result.unreadable:
        _progress(f"could not read: {item}")
    if result.unreadable:
        _progress("the plan is INCOMPLETE: grant the missing permissions and run discover again")


def _run_discover(args: argparse.Namespace) -> int:
    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.plan.store import PlanStore, check_replace, existing_plan  # noqa: PLC0415
    from cloudtaser.target.discover.options import DiscoverOptions  # noqa: PLC0415
    from cloudtaser.target.discover.run import discover  # noqa: PLC0415

    template = _ISOLATED_TEMPLATE if args.isolate else args.path_template or _DEFAULT_TEMPLATE
    from cloudtaser.config import local_actor  # noqa: PLC0415

    options = DiscoverOptions(
        namespaces=tuple(args.namespaces),
        selector=args.selector,
        exclude_namespaces=tuple(args.exclude_namespaces),
        name=args.name,
        cluster_name=args.cluster_name,
        path_template=template,
        kv_mount=args.kv_mount,
        auth_mount=args.auth_mount,
        auth_method=args.auth_method,
        cloudtaser_kinds_only=args.cloudtaser_kinds_only,
        created_by=local_actor(),
    )
    options.validate()
    old = None if args.output_plan == "-" else existing_plan(args.output_plan, force=args.force)
    from cloudtaser.cli.output import RunProgress  # noqa: PLC0415

    with cluster_session(args) as session, RunProgress(verbose=_verbose(args)) as reporter:
        reporter.message(f"discovering in context {session.context} ({session.server})")
        result = discover(session, options, progress=reporter.message)
        s = result.summary
        reporter.close(
            f"{s.workloads_scanned} workloads scanned: {s.workloads} in the plan "
            f"({s.pending} pending, {s.skipped} skipped), {s.secrets} vault paths"
            + (f", {len(result.unreadable)} unreadable" if result.unreadable else "")
        )
    if args.output_plan == "-":
        sys.stdout.write(planlib.dumps(result.plan))
        sys.stdout.flush()
    else:
        # lock, re-read what is there now (another run may have recorded progress meanwhile),
        # refuse to lose it, save atomically
        with PlanStore(args.output_plan, actor=options.created_by or "discover") as store:
            current = None if args.force or old is None else store.load_existing()
            check_replace(args.output_plan, current, result.plan)
            store.save(result.plan)
    _summary(result)
    if args.output_plan != "-":
        _progress(f"wrote {args.output_plan}")
    if args.output == "json":
        _report_json(result, args.output_plan)
    return ExitCode.PROBLEMS if result.unreadable else ExitCode.OK
