"""``cloudtaser target protect`` and ``target unprotect``: cluster only, never the vault.

Standard library only at module level; the library (lightkube, msgspec, yaml) is imported
inside the handlers. The run itself (options, dialogue, interrupts, progress, output, exit
code) is the harness of every engine step, :mod:`cloudtaser.cli.steps`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.approval_opts import add_gate_options, enforce_gates, plan_gate
from cloudtaser.cli.common import usage_error
from cloudtaser.cli.output import progress
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
from cloudtaser.plan.rules import vault_namespace_problem

if TYPE_CHECKING:
    from cloudtaser.target.engine.core import RunReport

__all__ = ["register"]

_PROTECT_DESCRIPTION = """\
For each pending workload of the plan, in plan order: check that it still consumes the
Secrets the plan lists (drift), show the secret mapping, ask (--interactive) or go on (--yes),
apply the cloudtaser.io/* pod-template annotations and a restart marker in ONE
strategic-merge patch (exactly one rollout), wait for the rollout by kubectl's rules, prove
on the new pods that the injector wrapped them (else the workload stays pending with the
likely cause), and record the result in the plan at once. migrated and skipped workloads
are never touched again, so an interrupted run resumes where it stopped. --reroll also
restarts (one rollout) each migrated or annotated workload whose live pods are not proven
injected (e.g. protected before the injector was installed) and proves the new pods. A
workload named with --workload that protect cannot act on is refused with the step that
comes first. When the installed injector carries cluster defaults (target install
--default-*), only what differs from them is written: the templates then hold nothing
cluster-specific (no vault address, auth path, auth method or vault namespace), and the plan
records per workload what was left to the injector (injectorDefaults). A workload an Argo CD
Application, a Flux Kustomization / HelmRelease or a Helm release owns is not patched live
(its owner may revert it) unless --live-patch-owned: --emit DIR writes the change as files its
owner commits instead (nothing in the cluster changes; the plan records it waiting for Git),
and once merged --wait-for-git waits until the owner has applied it, then proves and records
as usual. Talks only to the cluster. See docs/protect.md and docs/gitops.md.
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
progress: on a terminal one live [n/N] status line (elapsed, ETA, tally), then the table, one
line per workload (its other warnings counted; -v prints them, -o json holds them); piped, one
line per workload (-v for every step); always a closing tally.
"""


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
            "cloudtaser target protect --plan plan.yaml --vault-address https://bao.example:8200"
            " --reroll --workload payments/Deployment/api --yes",
            "cloudtaser target protect --plan plan.yaml --yes  # the injector's default address",
            "cloudtaser target protect --plan plan.yaml --yes --emit gitops/",
            "cloudtaser target protect --plan plan.yaml --yes --wait-for-git --deadline 1h",
        ],
        epilog=_RUN_EPILOG,
        exit_codes=RUN_EXIT_CODES,
    )
    add_run_options(protect, _add_protect_options)
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
        exit_codes=RUN_EXIT_CODES,
    )
    add_run_options(unprotect)
    add_gate_options(unprotect)
    unprotect.set_defaults(command_name="unprotect")
    unprotect.set_defaults(handler=_run_unprotect, precheck=check_run)


def _add_protect_options(parser: argparse.ArgumentParser) -> None:
    """protect's own options: the pods' vault address, injection proof, pinned entrypoints."""
    parser.add_argument(
        "--vault-address",
        "--vault-addr",
        "--openbao-addr",
        dest="vault_address",
        metavar="URL",
        help="the vault URL the PODS will use, written into cloudtaser.io/vault-address "
        "unless it is the installed injector's default address (required when the injector "
        "has none; not taken from $VAULT_ADDR, which is usually the operator's address)",
    )
    parser.add_argument(
        "--vault-namespace",
        metavar="NAMESPACE",
        help="the vault namespace (X-Vault-Namespace) the PODS will use, written into "
        "cloudtaser.io/vault-namespace unless it is the injector's default (default: the "
        "injector's default namespace, else none)",
    )
    parser.add_argument(
        "--no-verify-injection",
        dest="verify_injection",
        action="store_false",
        help="record migrated once the rollout completes without proving on the new pods "
        "that they were injected (a loud warning per workload and in the plan history; "
        "finalize still proves it before removing anything). Default: prove it",
    )
    parser.add_argument(
        "--reroll",
        action="store_true",
        help="also restart the pods (one rollout, the restart marker) of each selected "
        "migrated workload, or pending one already annotated, whose live pods are not proven "
        "injected, and prove the new pods (recorded in the plan); proven ones are left alone",
    )
    _add_pin_options(parser)
    add_gitops_options(parser, "protect")


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


def _check_protect(args: argparse.Namespace) -> str | None:
    namespace = (args.vault_namespace or "").strip().strip("/")
    if args.vault_namespace is not None and vault_namespace_problem(namespace):
        return (
            f"--vault-namespace {args.vault_namespace!r} is not a vault namespace path such as "
            f"team-a or eu/prod: {vault_namespace_problem(namespace)}"
        )
    if args.reroll and not args.verify_injection:
        return "--reroll proves the new pods injected: drop --no-verify-injection"
    if args.reroll and (args.emit or args.wait_for_git):
        return (
            "--reroll restarts pods live: it does not go through Git (drop --emit / --wait-for-git)"
        )
    return check_gitops(args) or check_run(args)


def _warn_plain_http(address: str | None) -> None:
    if address and address.lower().startswith("http://"):
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
    from cloudtaser.target.engine.result import protect_run  # noqa: PLC0415
    from cloudtaser.target.protect import protect  # noqa: PLC0415

    options = run_options(
        args,
        plan_check=plan_gate(args),
        vault_address=args.vault_address,
        verify_injection=args.verify_injection,
    )

    def call(run: StepRun) -> RunReport:
        with _pin_lookup(args) as pin:  # opened inside the cluster session, as it always was
            return protect(
                run.session, args.plan, options, progress=run.progress, decide=run.decide,
                cancel=run.cancel, pin=pin, reroll=args.reroll,
                vault_namespace=args.vault_namespace,
            )  # fmt: skip

    report = run_step(args, call)
    print_report(report, args, protect_run(report, dry_run=args.dry_run))
    return exit_code(report)


def _run_unprotect(args: argparse.Namespace) -> int:
    problem = check_run(args)
    if problem:
        return usage_error(problem)
    enforce_gates(args, args.plan)
    from cloudtaser.target.engine.result import unprotect_run  # noqa: PLC0415
    from cloudtaser.target.protect import unprotect  # noqa: PLC0415

    options = run_options(args, plan_check=plan_gate(args))
    report = run_step(
        args,
        lambda run: unprotect(
            run.session, args.plan, options, progress=run.progress, decide=run.decide,
            cancel=run.cancel,
        ),
    )  # fmt: skip
    print_report(report, args, unprotect_run(report, dry_run=args.dry_run))
    return exit_code(report)
