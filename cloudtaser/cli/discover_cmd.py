"""``cloudtaser target discover``: scan a cluster and write the migration plan.

Standard library only at module level; lightkube, msgspec and yaml are imported in the handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.common import add_cluster_options, add_plan_argument, cluster_session
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import progress as _progress

if TYPE_CHECKING:
    from cloudtaser.plan import MigrationPlan
    from cloudtaser.target.discover import DiscoveryResult

__all__ = ["register"]

# Kept in sync with cloudtaser.target.discover (importing it here would pull msgspec/yaml
# into --help).
_DEFAULT_TEMPLATE = "{mount}/data/{namespace}/{secret}"
_ISOLATED_TEMPLATE = "{mount}/data/{cluster}/{namespace}/{secret}"

_DESCRIPTION = """\
Scan one cluster (never a vault) for Deployments, StatefulSets and DaemonSets that consume
Kubernetes Secrets, and write a MigrationPlan: one tenant per namespace, every workload with
the vault path each Secret moves to. The plan holds no secret values: for envFrom, discover
reads only the key names of the Secrets.

What is found: env[].valueFrom.secretKeyRef, envFrom[].secretRef (with prefix), in containers
and init containers; secret and projected volumes (recorded as secretFiles; a workload that
uses Secrets only as files is 'skipped'); HashiCorp Vault Agent annotations
(vault.hashicorp.com/agent-inject-secret-<name>: <path>, kept as the vaultPath).
Skipped: kube-system, kube-public, kube-node-lease, cloudtaser-system and --exclude-namespace;
workloads already annotated cloudtaser.io/inject: "true"; workloads that use no Secrets.
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

examples:
  cloudtaser target discover --kubeconfig ~/.kube/prod -o plan.yaml
  cloudtaser target discover --context prod-eu -n payments -n billing -l tier=backend -o -
  cloudtaser target discover --isolate --cluster-name eu-1 --kv-mount kv -o plan.yaml

exit codes: 0 plan written; 1 plan written but incomplete (something could not be read,
see the 'could not read' lines); 2 bad flags, kubeconfig or context, or a plan with progress
would be overwritten; 3 cluster unreachable, 401 or 403; 4 other API failures.
required RBAC: list deployments, statefulsets, daemonsets (apps) cluster-wide or in the chosen
namespaces; get/list secrets only where envFrom needs key names. docs: docs/discover.md
"""


def register(groups: Any) -> None:
    """Attach ``target discover``."""
    parser = groups.command(
        "target",
        "discover",
        help="scan a cluster and write a migration plan (no vault access)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
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
    out = parser.add_argument_group("output")
    add_plan_argument(
        out,
        "-o",
        "--output-plan",
        required=True,
        metavar="FILE",
        help="write the plan to FILE ('-' for stdout); an existing file is replaced atomically",
    )
    out.add_argument(
        "--force",
        action="store_true",
        help="overwrite a plan that records progress (migrated or reviewer-skipped workloads)",
    )
    parser.set_defaults(handler=_run_discover)


def _existing_plan(path: str, force: bool) -> MigrationPlan | None:
    """The plan at ``path`` that a new one would replace (checked before scanning)."""
    from pathlib import Path  # noqa: PLC0415

    from cloudtaser import plan as planlib  # noqa: PLC0415
    from cloudtaser.errors import ConfigError, PlanError  # noqa: PLC0415

    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--output-plan {path} is a directory")
    if not target.parent.is_dir():
        raise ConfigError(f"--output-plan {path}: directory {target.parent} does not exist")
    if not target.exists() or force:
        return None
    try:
        return planlib.load(target)
    except PlanError:
        raise ConfigError(
            f"{path} exists and is not a valid plan; refusing to overwrite it (use --force, "
            "or choose another file)"
        ) from None


def _check_overwrite(path: str, old: MigrationPlan | None, result: DiscoveryResult) -> None:
    from cloudtaser.errors import ConfigError  # noqa: PLC0415
    from cloudtaser.target.discover import recorded_progress  # noqa: PLC0415

    if old is None:
        return
    lost = recorded_progress(old, result.plan)
    if lost:
        shown = "; ".join(lost[:5]) + (f"; and {len(lost) - 5} more" if len(lost) > 5 else "")
        raise ConfigError(
            f"{path} records progress that a new plan would lose ({shown}); write to another "
            "file, or pass --force to replace it"
        )


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
    from cloudtaser.target.discover import DiscoverOptions, discover  # noqa: PLC0415

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
        created_by=local_actor(),
    )
    options.validate()
    old = None if args.output_plan == "-" else _existing_plan(args.output_plan, args.force)
    with cluster_session(args) as session:
        _progress(f"discovering in context {session.context} ({session.server})")
        result = discover(session, options, progress=_progress)
    if args.output_plan == "-":
        sys.stdout.write(planlib.dumps(result.plan))
        sys.stdout.flush()
    else:
        _check_overwrite(args.output_plan, old, result)
        planlib.save(result.plan, args.output_plan)
    _summary(result)
    if args.output_plan != "-":
        _progress(f"wrote {args.output_plan}")
    return ExitCode.PROBLEMS if result.unreadable else ExitCode.OK
