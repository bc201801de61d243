"""``cloudtaser target install`` and ``target uninstall``: the injector webhook in a cluster.

Standard library (and the standard-library-only rule book) at module level; the library is
imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.common import (
    add_cluster_options,
    add_dry_run_option,
    add_output_option,
    cluster_session,
    usage_error,
)
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import color, print_json, progress, table
from cloudtaser.plan.rules import RUNTIME_NAMESPACE

if TYPE_CHECKING:
    from cloudtaser.target.install.apply import ObjectChange
    from cloudtaser.target.install.check import CheckResult
    from cloudtaser.target.install.uninstall import OptedIn

__all__ = ["register"]

_INSTALL_DESCRIPTION = """\
Install (or upgrade) the cloudtaser injector: the admission webhook `cloudtaser-runtime inject`
that puts the wrapper into every pod labelled cloudtaser.io/inject=true. Server-side apply
(field manager cloudtaser-install) of a Namespace (only if absent), ServiceAccount, least-
privilege RBAC, a Deployment (2 replicas, PDB, probes, restricted security context), a Service
and the MutatingWebhookConfiguration (failurePolicy Fail, for opted-in pods only; kube-system
and the injector's namespace excluded). The webhook keeps its TLS key in memory and publishes
its CA into the configuration's caBundle itself: install never writes that field, so a re-run
is harmless. Re-running with the same flags changes nothing; with a new --image it upgrades.
Talks only to the cluster. See docs/injector.md.
"""

_INSTALL_EPILOG = """\
examples:
  # install; pods may use only this vault; the token audience of `source apply-plan --audience`
  cloudtaser target install --image registry.corp/cloudtaser-runtime:0.1.0 \\
      --allowed-vault-address https://vault.corp:8200 --audience vault

  # what would change (server-side dry run, diffs for updates)
  cloudtaser target install --image registry.corp/cloudtaser-runtime:0.1.0 \\
      --allowed-vault-address https://vault.corp:8200 --audience vault --dry-run

  # the YAML for GitOps (no cluster access)
  cloudtaser target install --image registry.corp/cloudtaser-runtime:0.1.0 \\
      --allowed-vault-address https://vault.corp:8200 --audience vault --print

  # the same objects from the Helm chart charts/cloudtaser-runtime (docs/gitops.md)
  cloudtaser target install --image registry.corp/cloudtaser-runtime:0.1.0 \\
      --allowed-vault-address https://vault.corp:8200 --audience vault \\
      --print-helm-values > values.yaml
  helm install cloudtaser oci://registry.corp/charts/cloudtaser-runtime --version 0.1.0 \\
      -n cloudtaser-system --create-namespace -f values.yaml
  cloudtaser target install --print-argocd-ignore   # Argo CD: ignore the self-published caBundle

  # air-gapped: look images up in a mirror, with the pods' imagePullSecrets
  cloudtaser target install --image registry.corp/cloudtaser-runtime:0.1.0 \\
      --allowed-vault-address https://vault.corp:8200 --audience vault \\
      --mirror docker.io=registry.corp:5000 --read-pull-secrets

  # a cluster whose API server reaches the webhook by URL (hostNetwork, no kube-proxy)
  cloudtaser target install --image registry.corp/cloudtaser-runtime:0.1.0 \\
      --allowed-vault-address https://vault.corp:8200 --audience vault \\
      --webhook-url https://127.0.0.1:9443/mutate --kube-api 127.0.0.1:6443

  # one set of manifests for many clusters: this cluster's vault, jwt mount and namespace
  # as defaults (protect then writes none of them into the templates)
  cloudtaser target install --image registry.corp/cloudtaser-runtime:0.1.0 \\
      --allowed-vault-address https://vault.corp:8200 --audience vault \\
      --default-vault-address https://vault.corp:8200 --default-auth-path auth/jwt-eu1 \\
      --default-auth-method jwt --default-vault-namespace eu1

  # is it working? (Deployment ready, caBundle valid, defaults, a dry-run pod is mutated)
  cloudtaser target install --check

exit codes: 0 installed (or --check all good), 1 --check found problems, 2 bad flags,
3 cluster unreachable, credentials refused or a permission missing, 4 an apply failed or the
injector did not become ready within --timeout (install waits until every --check passes:
Deployment ready, caBundle published, a dry-run opted-in pod mutated).
"""

_UNINSTALL_DESCRIPTION = """\
Remove the injector: exactly the objects `target install` created (its record in the
ConfigMap cloudtaser-injector-install lists them with their UIDs; without a record, the
fixed-name objects that carry install's labels). The MutatingWebhookConfiguration goes first,
so no pod waits on a webhook being removed. The namespace is deleted only when install
created it and nothing else lives in it. Pods already injected keep running, but the next
pods of a protected workload would start unwrapped, and those of a finalized one with no
secret at all: while any Deployment, StatefulSet or DaemonSet still opts in to injection,
uninstall lists them and deletes nothing, unless --ignore-protected-workloads (first
`cloudtaser target unprotect` them, which puts back what finalize removed).
"""

_UNINSTALL_EPILOG = """\
examples:
  cloudtaser target uninstall --dry-run      # what would be deleted
  cloudtaser target uninstall
  cloudtaser target uninstall --ignore-protected-workloads   # although workloads opt in
"""


def register(groups: Any) -> None:
    """Attach ``target install`` and ``target uninstall``."""
    install = groups.command(
        "target",
        "install",
        help="install or upgrade the injector webhook (server-side apply); --check verifies it",
        description=_INSTALL_DESCRIPTION,
        epilog=_INSTALL_EPILOG,
    )
    what = install.add_argument_group("what to install")
    what.add_argument(
        "--image",
        metavar="REF",
        help="the cloudtaser-runtime image (webhook and injected init container), e.g. "
        "registry.corp/cloudtaser-runtime:0.1.0 or @sha256:… (required, except with --check)",
    )
    what.add_argument(
        "--allowed-vault-address",
        action="append",
        default=[],
        metavar="URL",
        help="a vault URL pods may use (repeatable; at least one). A pod whose "
        "cloudtaser.io/vault-address is not listed is denied",
    )
    what.add_argument(
        "--audience",
        metavar="AUD",
        help="audience of the projected ServiceAccount token the wrapper logs in with; the "
        "same as the vault roles' (source apply-plan --audience) (required)",
    )
    what.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="REGISTRY=MIRROR",
        help="look images of REGISTRY up in MIRROR instead (repeatable), e.g. "
        "docker.io=registry.corp:5000",
    )
    what.add_argument(
        "--read-pull-secrets",
        action="store_true",
        help="use the pods' imagePullSecrets for image lookups; adds `get secrets` in ALL "
        "namespaces to the injector's ClusterRole (printed when used)",
    )
    what.add_argument(
        "--webhook-url",
        metavar="URL",
        help="URL mode: the API server calls https://HOST:PORT/PATH (hostNetwork replicas "
        "sharing the port); default: the Service cloudtaser-injector",
    )
    what.add_argument(
        "--kube-api",
        metavar="HOST:PORT",
        help="API server address for the webhook pods (KUBERNETES_SERVICE_HOST/PORT), for "
        "clusters without kube-proxy",
    )
    what.add_argument(
        "--namespace",
        default=RUNTIME_NAMESPACE,
        metavar="NS",
        help=f"the injector's namespace (default: {RUNTIME_NAMESPACE}; created when absent)",
    )
    what.add_argument(
        "--replicas",
        type=int,
        default=2,
        metavar="N",
        help="webhook replicas (default: 2; a PodDisruptionBudget minAvailable 1 from 2 on)",
    )
    what.add_argument(
        "--timeout-seconds",
        type=int,
        default=10,
        metavar="N",
        help="the API server's timeout for one admission call, 1-30 (default: 10)",
    )
    what.add_argument(
        "--cert-validity",
        metavar="DURATION",
        help="lifetime of the webhook's in-memory serving certificate, rotated at 2/3 of it "
        "(30s to 8760h; default: the webhook's, 24h)",
    )
    fleet = install.add_argument_group(
        "cluster defaults (for pods whose annotations leave them out; an annotation wins)"
    )
    fleet.add_argument(
        "--default-vault-address",
        metavar="URL",
        help="the vault URL of pods without cloudtaser.io/vault-address; must be one of "
        "--allowed-vault-address. protect then leaves the address out of the templates",
    )
    fleet.add_argument(
        "--default-auth-path",
        metavar="auth/MOUNT",
        help="the auth mount of pods without cloudtaser.io/vault-auth-path (built-in: "
        "auth/kubernetes)",
    )
    fleet.add_argument(
        "--default-auth-method",
        choices=("kubernetes", "jwt"),
        help="how pods without cloudtaser.io/vault-auth-method log in (built-in: kubernetes)",
    )
    fleet.add_argument(
        "--default-vault-namespace",
        metavar="NAMESPACE",
        help="the vault namespace (X-Vault-Namespace) of pods without "
        "cloudtaser.io/vault-namespace (built-in: none)",
    )
    fleet.add_argument(
        "--jwt-token-expiration",
        type=int,
        metavar="SECONDS",
        help="lifetime of the projected token of jwt-mode pods, 600 (the default and the API "
        "server's minimum) to 4294967296: the vault cannot revoke it, so keep it short",
    )
    mode = install.add_argument_group("mode (default: apply and wait)")
    modes = mode.add_mutually_exclusive_group()
    add_dry_run_option(
        modes, help="server-side dry run: print what would change (with diffs); change nothing"
    )
    modes.add_argument(
        "--print",
        dest="print_yaml",
        action="store_true",
        help="print the objects as YAML (for GitOps) and exit; no cluster access",
    )
    modes.add_argument(
        "--print-helm-values",
        action="store_true",
        help="print the values of the Helm chart cloudtaser-runtime for these flags (validated "
        "as install validates them; its objects are --print's) and exit; no cluster access",
    )
    modes.add_argument(
        "--print-argocd-ignore",
        action="store_true",
        help="print the Argo CD Application spec.ignoreDifferences entry for the caBundle the "
        "injector publishes itself, and exit",
    )
    modes.add_argument(
        "--check",
        action="store_true",
        help="verify an installed injector: Deployment ready, caBundle a valid CA that "
        "verifies the serving certificate (when reachable), its cluster defaults (reported), a "
        "dry-run opted-in pod is mutated",
    )
    mode.add_argument(
        "--check-namespace",
        default="default",
        metavar="NS",
        help="namespace of --check's dry-run pod (default: default; never stored)",
    )
    _add_wait_options(install)
    add_cluster_options(install)
    add_output_option(install)
    install.set_defaults(handler=_run_install)

    uninstall = groups.command(
        "target",
        "uninstall",
        help="remove exactly what target install created",
        description=_UNINSTALL_DESCRIPTION,
        epilog=_UNINSTALL_EPILOG,
        exit_codes="0 removed (or nothing to remove), 1 refused: workloads still opt in to "
        "injection (listed; --ignore-protected-workloads), 2 bad flags, 3 cluster unreachable, "
        "credentials refused or a permission missing, 4 a delete failed.",
    )
    uninstall.add_argument(
        "--namespace",
        default=RUNTIME_NAMESPACE,
        metavar="NS",
        help=f"the injector's namespace (default: {RUNTIME_NAMESPACE})",
    )
    add_dry_run_option(uninstall, help="server-side dry run: print what would be deleted")
    uninstall.add_argument(
        "--ignore-protected-workloads",
        action="store_true",
        help="uninstall although workloads still opt in to injection: their next pods start "
        "unwrapped, finalized ones with no secret at all (they are listed either way)",
    )
    _add_wait_options(uninstall)
    add_cluster_options(uninstall)
    add_output_option(uninstall)
    uninstall.set_defaults(handler=_run_uninstall)


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    from cloudtaser.cli.common import parse_duration  # noqa: PLC0415

    group = parser.add_argument_group("waiting")
    group.add_argument(
        "--timeout",
        type=parse_duration,
        default=120.0,
        metavar="DURATION",
        help="how long to wait for the injector to pass every --check (install) or for the "
        "deletions (uninstall) (default: 2m)",
    )
    group.add_argument(
        "--no-wait", dest="wait", action="store_false", help="do not wait; return after the writes"
    )


def _options(args: argparse.Namespace) -> Any:
    from cloudtaser.contract import ContractError, InjectorDefaults  # noqa: PLC0415
    from cloudtaser.errors import ConfigError  # noqa: PLC0415
    from cloudtaser.target.install.manifests import InstallOptions  # noqa: PLC0415

    mirrors = []
    for raw in args.mirror:
        registry, sep, mirror = raw.partition("=")
        if not sep or not registry or not mirror:
            raise ConfigError(f"--mirror {raw!r}: expected REGISTRY=MIRROR")
        mirrors.append((registry, mirror))
    try:
        defaults = InjectorDefaults.parse(
            address=args.default_vault_address,
            auth_mount=args.default_auth_path,
            auth_method=args.default_auth_method,
            namespace=args.default_vault_namespace,
        )
    except ContractError as exc:
        raise ConfigError(str(exc)) from None
    return InstallOptions(
        image=args.image,
        allowed_vault_addresses=tuple(args.allowed_vault_address),
        audience=args.audience or "",
        namespace=args.namespace,
        mirrors=tuple(mirrors),
        read_pull_secrets=args.read_pull_secrets,
        webhook_url=args.webhook_url,
        kube_api=args.kube_api,
        replicas=args.replicas,
        timeout_seconds=args.timeout_seconds,
        cert_validity=args.cert_validity,
        defaults=defaults,
        jwt_token_expiration=args.jwt_token_expiration,
    ).validated()


def _run_install(args: argparse.Namespace) -> int:
    if args.check:
        return _run_check(args)
    if args.print_argocd_ignore:
        import yaml  # noqa: PLC0415

        from cloudtaser.target.install import chart  # noqa: PLC0415

        document = {"ignoreDifferences": [chart.ARGOCD_IGNORE_DIFFERENCES]}
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
        return ExitCode.OK
    missing = [
        flag
        for flag, value in (
            ("--image REF", args.image),
            ("--allowed-vault-address URL", args.allowed_vault_address),
            ("--audience AUD", args.audience),
        )
        if not value
    ]
    if missing:
        return usage_error(f"target install needs {', '.join(missing)} (see --help)")
    from cloudtaser.target.install import manifests  # noqa: PLC0415

    options = _options(args)
    if options.read_pull_secrets:
        progress(f"--read-pull-secrets adds to the RBAC: {manifests.PULL_SECRETS_RULE}")
    if args.print_yaml:
        sys.stdout.write(manifests.render_yaml(manifests.build_objects(options)))
        return ExitCode.OK
    if args.print_helm_values:
        import yaml  # noqa: PLC0415

        from cloudtaser.target.install.chart import helm_values  # noqa: PLC0415

        sys.stdout.write(
            f"# values of the chart cloudtaser-runtime; its namespace is the release's:\n"
            f"#   helm install cloudtaser <chart> -n {options.namespace} -f <this file>\n"
            + yaml.safe_dump(helm_values(options), sort_keys=False)
        )
        return ExitCode.OK
    from cloudtaser.config import local_actor  # noqa: PLC0415
    from cloudtaser.target.install.apply import install  # noqa: PLC0415

    with cluster_session(args) as session:
        report = install(
            session,
            options,
            dry_run=args.dry_run,
            wait=args.wait,
            timeout=args.timeout,
            actor=local_actor(),
            progress=progress,
        )
    _print_changes(report.changes, args, dry_run=args.dry_run, kind="install")
    if args.output != "json":
        if report.rollout:
            print(f"injector ready: {report.rollout}")
        if not args.dry_run:
            print("next: cloudtaser target install --check")
    return ExitCode.OK


def _run_uninstall(args: argparse.Namespace) -> int:
    from cloudtaser.target.install.uninstall import uninstall  # noqa: PLC0415

    with cluster_session(args) as session:
        report = uninstall(
            session,
            namespace=args.namespace,
            dry_run=args.dry_run,
            wait=args.wait,
            timeout=args.timeout,
            progress=progress,
            ignore_protected=args.ignore_protected_workloads,
        )
    for workload in report.opted_in:
        progress(f"WARNING: still opts in to injection: {workload}")
    if report.refused:
        progress(
            f"refused: {len(report.opted_in)} workload(s) still opt in to injection; nothing "
            "was deleted. `cloudtaser target unprotect` them first, or pass "
            "--ignore-protected-workloads to uninstall anyway"
        )
        _print_changes(report.changes, args, dry_run=args.dry_run, kind="uninstall",
                       opted_in=report.opted_in, refused=True)  # fmt: skip
        return ExitCode.PROBLEMS
    if report.found_by == "labels" and args.output != "json":
        progress("no install record found: objects identified by their names and labels")
    _print_changes(report.changes, args, dry_run=args.dry_run, kind="uninstall",
                   opted_in=report.opted_in)  # fmt: skip
    return ExitCode.OK


def _run_check(args: argparse.Namespace) -> int:
    from cloudtaser.target.install.check import check  # noqa: PLC0415

    with cluster_session(args) as session:
        results = check(session, namespace=args.namespace, pod_namespace=args.check_namespace)
    _print_check(results, args)
    return ExitCode.OK if all(r.ok for r in results) else ExitCode.PROBLEMS


def _print_changes(
    changes: list[ObjectChange],
    args: argparse.Namespace,
    *,
    dry_run: bool,
    kind: str,
    opted_in: Sequence[OptedIn] = (),
    refused: bool = False,
) -> None:
    if args.output == "json":
        import msgspec  # noqa: PLC0415

        from cloudtaser.target.install.result import (  # noqa: PLC0415
            Install,
            ObjectEntry,
            OptedInEntry,
            Uninstall,
        )

        counts: dict[str, int] = {}
        for c in changes:
            counts[str(c.action)] = counts.get(str(c.action), 0) + 1
        entries = [
            ObjectEntry(
                kind=c.kind,
                name=c.name,
                namespace=c.namespace,
                action=str(c.action),
                detail=c.detail,
                diff=list(c.diff) or msgspec.UNSET,
            )
            for c in changes
        ]
        document = (
            Install(dry_run=dry_run, changes=entries, summary=counts)
            if kind == "install"
            else Uninstall(
                dry_run=dry_run, changes=entries, summary=counts, refused=refused,
                opted_in=[OptedInEntry(namespace=w.namespace, kind=w.kind, name=w.name,
                                       finalized=w.finalized) for w in opted_in],
            )
        )  # fmt: skip
        print_json(msgspec.to_builtins(document))
        return
    if opted_in:
        rows = [[w.namespace, w.kind, w.name, "finalized" if w.finalized else "protected"]
                for w in opted_in]  # fmt: skip
        print("workloads still opting in to injection:")
        print(table(rows, ["NAMESPACE", "KIND", "NAME", "STATE"]))
    if refused:
        print("refused: nothing deleted (--ignore-protected-workloads to go on)")
        return
    rows = [
        [c.kind, c.namespace or "", c.name, str(c.action) + (" (dry run)" if dry_run else ""),
         c.detail]
        for c in changes
    ]  # fmt: skip
    print(table(rows, ["KIND", "NAMESPACE", "NAME", "ACTION", "DETAIL"]))
    for c in changes:
        if c.diff:
            print(f"\n# {c.kind} {c.namespace + '/' if c.namespace else ''}{c.name}")
            print("\n".join(c.diff))


def _print_check(results: list[CheckResult], args: argparse.Namespace) -> None:
    if args.output == "json":
        import msgspec  # noqa: PLC0415

        from cloudtaser.target.install.result import (  # noqa: PLC0415
            CheckEntry,
            CheckSummary,
            ClusterDefaults,
            InstallCheck,
        )

        found = next((r.defaults for r in results if r.defaults is not None), None)
        document = InstallCheck(
            ok=all(r.ok for r in results),
            checks=[CheckEntry(name=r.name, ok=r.ok, detail=r.detail) for r in results],
            defaults=msgspec.convert(found.to_json(), ClusterDefaults)
            if found is not None and found.any
            else msgspec.UNSET,
            summary=CheckSummary(
                passed=sum(r.ok for r in results), failed=sum(not r.ok for r in results)
            ),
        )
        print_json(msgspec.to_builtins(document))
        return
    for r in results:
        mark = color("ok  ", "green") if r.ok else color("FAIL", "red")
        print(f"{mark} {r.name}: {r.detail}")
