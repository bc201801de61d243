"""``cloudtaser target connect`` and ``cloudtaser source connect``.

``target connect`` is the one step that talks to both sides (cluster and vault), unless it is
split with ``--export FILE`` (cluster only) and ``source connect --import FILE`` (vault only).
Standard library only at module level; lightkube, requests and yaml load inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtaser.cli.common import (
    add_cluster_options,
    add_dry_run_option,
    add_output_option,
    add_plan_argument,
    add_vault_options,
    cluster_session,
    duration_seconds,
    usage_error,
    vault_client,
)
from cloudtaser.cli.exitcodes import ExitCode
from cloudtaser.cli.output import color, print_json, progress, table
from cloudtaser.plan.rules import RUNTIME_NAMESPACE

if TYPE_CHECKING:
    from cloudtaser.connect import ConnectOptions, ConnectResult, Step
    from cloudtaser.connect.result import StepEntry, StepSummary

__all__ = ["register"]

_TARGET_DESCRIPTION = """\
Configure the vault's auth method for this cluster (one auth mount per cluster, so many
clusters share one vault) and prove it with a real ServiceAccount login.

--auth-method jwt (recommended for an air-gapped vault): the vault checks tokens offline with
  the cluster's public signing keys; connect reads the issuer
  (/.well-known/openid-configuration) and the keys (/openid/v1/jwks) and writes them to a jwt
  mount of this cluster alone (jwt_validation_pubkeys, bound_issuer). The vault never reaches
  the API server; no reviewer, no binding. Re-run connect to pick up a signing-key rotation.

--auth-method kubernetes (the default):

cluster: namespace (--namespace, default cloudtaser-system), token-reviewer ServiceAccount,
  ClusterRoleBinding to system:auth-delegator (checked with a SubjectAccessReview), a reviewer
  token from the TokenRequest API (--reviewer-token-ttl), API host and CA.
vault:   enable auth/<mount> if absent; write its config (kubernetes_host, kubernetes_ca_cert,
  token_reviewer_jwt, disable_local_ca_jwt=true).
test:    role cloudtaser_connect_selftest (no policies, 60 s batch tokens) and a real login as
  ServiceAccount cloudtaser-connect-selftest; on failure the precise reason (role not bound,
  reviewer forbidden, reviewer token invalid, CA mismatch, host unreachable from the vault).

Idempotent: the config is read back and compared; the reviewer token (which the vault never
returns) is replaced only when the config changes, --rotate-reviewer-token is given, or less
than half of its lifetime is left. Re-run before half the lifetime passes (e.g. from CI).
The reviewer token is never printed.

Air-gapped vault: run 'target connect --export FILE' on the cluster side and
'source connect --import FILE' on the vault side. See docs/connect-and-runtime.md.
"""

_TARGET_EXAMPLES = [
    "cloudtaser target connect --kubeconfig prod.yaml --openbao-addr https://bao:8200 \\\n"
    "      --token-file ~/.bao-token --plan plan.yaml --kubernetes-host https://10.0.0.1:6443",
    "cloudtaser target connect --plan plan.yaml --dry-run",
    "cloudtaser target connect --auth-method jwt --auth-mount jwt-prod --openbao-addr "
    "https://bao:8200",
    "cloudtaser target connect --auth-mount k8s-prod --check",
    "cloudtaser target connect --kubeconfig prod.yaml --auth-mount k8s-prod --export "
    "prod.conn.yaml",
]

_TARGET_EPILOG = """\
exit codes: 0 connected (or unchanged) and self-test passed, 2 invalid flags or input,
3 cluster or vault unreachable or credentials refused, 4 a step failed or the self-test failed.
"""

_SOURCE_DESCRIPTION = """\
Vault side of the air-gapped split: read a connection file written by
'cloudtaser target connect --export FILE' and enable/configure the auth mount it names. Talks
only to the vault. Idempotent, --dry-run. A jwt file (--auth-method jwt) holds the cluster's
issuer and public signing keys: the jwt mount gets exactly those keys (a rotation: export and
import again). A kubernetes file without a reviewer token makes the vault use each client's
own JWT as the TokenReview bearer (see the docs for the trade-off). No self-test is possible
from here: run 'target connect --check' where both sides are reachable, or watch the first pod
log in.
"""


def register(groups: Any) -> None:
    """Attach ``target connect`` and ``source connect``."""
    target = groups.command(
        "target",
        "connect",
        help="configure the vault's auth (jwt or kubernetes) for this cluster and self-test a "
        "login",
        description=_TARGET_DESCRIPTION,
        epilog=_TARGET_EPILOG,
        examples=_TARGET_EXAMPLES,
    )
    add_cluster_options(target)
    add_vault_options(target, namespace_alias=False)
    _add_mount_options(target)
    group = target.add_argument_group("cluster side")
    group.add_argument(
        "--kubernetes-host",
        metavar="URL",
        help="API server address as the VAULT reaches it (default: the kubeconfig's server, "
        "which is often only reachable from your workstation)",
    )
    group.add_argument(
        "--kubernetes-ca-file",
        metavar="FILE",
        help="CA (PEM) of the API server (default: the kubeconfig's, else the "
        "kube-root-ca.crt ConfigMap)",
    )
    group.add_argument(
        "--issuer",
        metavar="URL",
        help="ServiceAccount token issuer to validate (optional; see "
        "'kubectl get --raw /.well-known/openid-configuration')",
    )
    group.add_argument(
        "--namespace",
        default=RUNTIME_NAMESPACE,
        metavar="NS",
        help="namespace for the reviewer and self-test ServiceAccounts (default: "
        f"{RUNTIME_NAMESPACE})",
    )
    group.add_argument(
        "--reviewer-service-account",
        default="cloudtaser-token-reviewer",
        metavar="NAME",
        help="token-reviewer ServiceAccount (default: cloudtaser-token-reviewer)",
    )
    group.add_argument(
        "--reviewer-token-ttl",
        type=duration_seconds,
        default=24 * 3600,
        metavar="DURATION",
        help="lifetime of the reviewer token (default 24h, minimum 10m); re-run connect "
        "before half of it has passed",
    )
    group.add_argument(
        "--rotate-reviewer-token",
        action="store_true",
        help="replace the reviewer token now even if the current one is still fresh",
    )
    group.add_argument(
        "--no-reviewer-token",
        action="store_true",
        help="client-JWT review: store no reviewer token; every workload ServiceAccount (those "
        "of --plan) is bound to system:auth-delegator instead",
    )
    group.add_argument(
        "--skip-rbac",
        action="store_true",
        help="create no ClusterRoleBinding (your platform team manages RBAC); still checked",
    )
    split = target.add_argument_group("air-gapped split")
    split.add_argument(
        "--export",
        metavar="FILE",
        help="cluster side only: write a connection file for 'source connect --import' "
        "instead of talking to the vault",
    )
    split.add_argument(
        "--include-reviewer-token",
        action="store_true",
        help="with --export: put a reviewer token into the file (it becomes a credential). "
        "Without it the vault uses each client's JWT as reviewer",
    )
    test = target.add_argument_group("self-test")
    test.add_argument(
        "--check",
        action="store_true",
        help="only run the self-test against the existing configuration (changes nothing)",
    )
    test.add_argument(
        "--skip-self-test", action="store_true", help="configure without the login test"
    )
    test.add_argument(
        "--self-test-role",
        metavar="ROLE",
        help="with --check: test this role (e.g. a tenant's) instead of the self-test role",
    )
    test.add_argument(
        "--self-test-service-account",
        metavar="NS/NAME",
        help="with --self-test-role: the ServiceAccount to log in as",
    )
    add_output_option(target)
    target.set_defaults(handler=_run_target_connect)

    source = groups.command(
        "source",
        "connect",
        help="configure the cluster's auth mount from a 'target connect --export' file",
        description=_SOURCE_DESCRIPTION,
        examples=[
            "cloudtaser source connect --import prod.conn.yaml --openbao-addr https://bao:8200",
            "cloudtaser source connect --import prod.conn.yaml --dry-run -o json",
        ],
        exit_codes=(
            "0 configured (or unchanged, or --dry-run), 2 bad flags or connection file, 3 "
            "vault unreachable, token refused or vault sealed, 4 a write failed."
        ),
    )
    source.add_argument(
        "--import",
        dest="import_file",
        required=True,
        metavar="FILE",
        help="the connection file written by 'target connect --export'",
    )
    add_vault_options(source)
    source.add_argument(
        "--auth-mount",
        metavar="MOUNT",
        help="override the auth mount named in the file",
    )
    add_dry_run_option(source, help="compare and report, write nothing")
    source.add_argument(
        "--force",
        action="store_true",
        help="take over a mount connected to another cluster or configured by hand",
    )
    add_output_option(source)
    source.set_defaults(handler=_run_source_connect)


def _add_mount_options(parser: argparse.ArgumentParser) -> None:
    add_plan_argument(
        parser,
        "--plan",
        metavar="PLAN",
        help="migration plan: its metadata.authMount names the mount; with --no-reviewer-token "
        "or --export its ServiceAccounts are bound to system:auth-delegator",
    )
    parser.add_argument(
        "--auth-mount",
        metavar="MOUNT",
        help="auth mount of this cluster (default: the plan's, else kubernetes)",
    )
    parser.add_argument(
        "--auth-method",
        choices=("jwt", "kubernetes"),
        help="jwt: the vault checks tokens offline with the cluster's public keys (never "
        "reaches the API server; recommended for an air-gapped vault); kubernetes: a "
        "TokenReview call per login (default: the plan's metadata.authMethod, else kubernetes)",
    )
    add_dry_run_option(parser, help="read and compare, print what would change")
    parser.add_argument(
        "--force",
        action="store_true",
        help="take over a mount connected to another cluster or configured by hand",
    )


def _options(args: argparse.Namespace, *, client_jwt: bool) -> ConnectOptions:
    from cloudtaser.connect import (  # noqa: PLC0415
        AuthMethod,
        ConnectOptions,
        ReviewerMode,
        validate_auth_mount,
    )
    from cloudtaser.errors import ConfigError  # noqa: PLC0415
    from cloudtaser.plan.rules import DEFAULT_AUTH_MOUNT  # noqa: PLC0415

    mount = validate_auth_mount(args.auth_mount) if args.auth_mount else None
    method = AuthMethod(args.auth_method) if args.auth_method else None
    reviewers: tuple[tuple[str, str], ...] = ()
    if args.plan:
        from cloudtaser import plan as planlib  # noqa: PLC0415
        from cloudtaser.connect import plan_auth_method, plan_selection  # noqa: PLC0415

        plan = planlib.load(args.plan)
        mount, reviewers = plan_selection(plan, mount, method)
        method = plan_auth_method(plan)
    reviewer_flags = [
        flag
        for flag, given in (
            ("--no-reviewer-token", args.no_reviewer_token),
            ("--rotate-reviewer-token", args.rotate_reviewer_token),
            ("--include-reviewer-token", args.include_reviewer_token),
        )
        if given
    ]
    if method is AuthMethod.JWT and reviewer_flags:
        raise ConfigError(
            f"jwt auth has no token reviewer: drop {', '.join(reviewer_flags)} (the plan's "
            "metadata.authMethod or --auth-method is jwt)"
        )
    ca_pem = None
    if args.kubernetes_ca_file:
        try:
            ca_pem = Path(args.kubernetes_ca_file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not a PEM text file"
            raise ConfigError(f"cannot read --kubernetes-ca-file: {reason}") from None
    return ConnectOptions(
        auth_mount=mount or DEFAULT_AUTH_MOUNT,
        auth_method=method or AuthMethod.KUBERNETES,
        namespace=args.namespace,
        reviewer_service_account=args.reviewer_service_account,
        reviewer_mode=ReviewerMode.CLIENT_JWT if client_jwt else ReviewerMode.TOKEN,
        reviewer_token_ttl=args.reviewer_token_ttl,
        kubernetes_host=args.kubernetes_host,
        kubernetes_ca_pem=ca_pem,
        issuer=args.issuer,
        rotate=args.rotate_reviewer_token,
        force=args.force,
        dry_run=args.dry_run,
        self_test=not args.skip_self_test,
        skip_rbac=args.skip_rbac,
        client_reviewers=reviewers if client_jwt else (),
    )


def _run_target_connect(args: argparse.Namespace) -> int:
    if args.include_reviewer_token and not args.export:
        return usage_error("--include-reviewer-token only goes with --export FILE")
    if args.export and (args.check or args.no_reviewer_token):
        return usage_error("--export cannot be combined with --check or --no-reviewer-token")
    if (args.self_test_role is None) != (args.self_test_service_account is None):
        return usage_error("--self-test-role and --self-test-service-account go together")
    if args.self_test_role and not args.check:
        return usage_error("--self-test-role is used with --check")
    if args.check and (args.dry_run or args.skip_self_test):
        return usage_error("--check cannot be combined with --dry-run or --skip-self-test")
    if args.export:
        return _run_export(args)

    client_jwt = bool(args.no_reviewer_token)
    options = _options(args, client_jwt=client_jwt)
    with cluster_session(args) as session, vault_client(args, pool_size=4) as client:
        if args.check:
            from cloudtaser.connect import check_connection  # noqa: PLC0415

            result = check_connection(
                session,
                client,
                options,
                role=args.self_test_role,
                service_account=args.self_test_service_account,
                progress=progress,
            )
        else:
            from cloudtaser.connect import connect  # noqa: PLC0415

            prefix = "dry run: " if args.dry_run else ""
            progress(
                f"{prefix}connecting cluster {session.cluster_name} (context "
                f"{session.context}) to {client.address} at auth/{options.auth_mount}"
            )
            result = connect(session, client, options, progress=progress)
    if options.auth_method == "jwt" and not args.plan:
        progress(
            f"the plan of this cluster must say metadata.authMethod: jwt and metadata.authMount: "
            f"{options.auth_mount} ('target discover --auth-method jwt --auth-mount "
            f"{options.auth_mount}'), so that apply-plan writes jwt roles (with --audience) and "
            "protect points the pods at this mount"
        )
    return _report(result, args.output)


def _run_export(args: argparse.Namespace) -> int:
    from cloudtaser.connect import export_connection, write_connection_file  # noqa: PLC0415

    options = _options(args, client_jwt=not args.include_reviewer_token)
    with cluster_session(args) as session:
        conn, steps = export_connection(
            session,
            options,
            include_reviewer_token=args.include_reviewer_token,
            progress=progress,
        )
    if not args.dry_run:
        write_connection_file(args.export, conn)
    if args.output == "json":
        import msgspec  # noqa: PLC0415

        from cloudtaser.connect.result import ConnectExport  # noqa: PLC0415

        document = ConnectExport(
            export=args.export,
            dry_run=args.dry_run,
            auth_mount=conn.auth_mount,
            auth_method=conn.auth_method,
            cluster=conn.cluster,
            kubernetes_host=conn.kubernetes_host,
            reviewer_mode=conn.reviewer_mode,
            issuer=conn.issuer,
            public_keys=len(conn.jwt_keys),
            contains_credential=conn.reviewer_token is not None,
            steps=[_step_entry(s) for s in steps],
            summary=_step_summary(steps),
        )
        print_json(msgspec.to_builtins(document))
    else:
        _print_steps(steps)
        verb = "would write" if args.dry_run else "wrote"
        if conn.auth_method == "jwt":
            print(
                f"{verb} {args.export}: jwt auth mount {conn.auth_mount}, issuer {conn.issuer}, "
                f"{len(conn.jwt_keys)} public signing key(s); no credential, no API address"
            )
        else:
            print(
                f"{verb} {args.export}: auth mount {conn.auth_mount}, host "
                f"{conn.kubernetes_host}, reviewer {conn.reviewer_mode}"
            )
        if conn.reviewer_token is not None:
            print(
                color(
                    f"{args.export} contains a reviewer token (a credential, mode 0600): move "
                    "it like a secret and delete it after 'source connect --import'",
                    "yellow",
                )
            )
        elif conn.auth_method != "jwt":
            print(
                "the file holds no credential; the vault will use each client's own JWT as "
                "reviewer (their ServiceAccounts need system:auth-delegator)"
            )
        print(f"next, on the vault side: cloudtaser source connect --import {args.export}")
    return ExitCode.OK


def _run_source_connect(args: argparse.Namespace) -> int:
    from dataclasses import replace  # noqa: PLC0415

    from cloudtaser.connect import (  # noqa: PLC0415
        ConnectOptions,
        import_connection,
        read_connection_file,
        validate_auth_mount,
    )

    conn = read_connection_file(args.import_file)
    if args.auth_mount:
        conn = replace(conn, auth_mount=validate_auth_mount(args.auth_mount))
    options = ConnectOptions(
        auth_mount=conn.auth_mount, dry_run=args.dry_run, force=args.force, self_test=False
    )
    with vault_client(args, pool_size=4) as client:
        prefix = "dry run: " if args.dry_run else ""
        progress(
            f"{prefix}configuring auth/{conn.auth_mount} on {client.address} for cluster "
            f"{conn.cluster}"
        )
        result = import_connection(client, conn, options, progress=progress)
    return _report(result, args.output)


def _step_entry(step: Step) -> StepEntry:
    from cloudtaser.connect.result import StepEntry  # noqa: PLC0415

    return StepEntry(
        side=step.side, kind=step.kind, name=step.name, action=step.action, detail=step.detail
    )


def _step_summary(steps: list[Step]) -> StepSummary:
    from cloudtaser.changes import Action  # noqa: PLC0415
    from cloudtaser.connect.result import StepSummary  # noqa: PLC0415

    def count(action: Action) -> int:
        return sum(1 for s in steps if s.action is action)

    return StepSummary(
        create=count(Action.CREATE), update=count(Action.UPDATE), unchanged=count(Action.UNCHANGED)
    )


def _print_steps(steps: list[Step]) -> None:
    if not steps:
        return
    colours = {"create": "green", "update": "yellow", "unchanged": "dim"}
    rows = [
        [s.side, s.kind, s.name, color(str(s.action), colours[str(s.action)]), s.detail]
        for s in steps
    ]
    print(table(rows, ["SIDE", "KIND", "NAME", "ACTION", "DETAIL"]))


def _report(result: ConnectResult, output: str) -> int:
    for warning in result.warnings:
        progress(f"warning from the vault: {warning}")
    test = result.self_test
    failed = test is not None and not test.ok
    if output == "json":
        import msgspec  # noqa: PLC0415

        from cloudtaser.connect.result import Connect, SelfTestEntry  # noqa: PLC0415

        totals = _step_summary(result.steps)
        totals.self_test = None if test is None else ("passed" if test.ok else "failed")
        document = Connect(
            auth_mount=result.auth_mount,
            auth_method=result.auth_method,
            cluster=result.cluster,
            kubernetes_host=result.kubernetes_host,
            reviewer_mode=result.reviewer_mode,
            reviewer_token_expires=(
                result.reviewer_expires.isoformat() if result.reviewer_expires else None
            ),
            dry_run=result.dry_run,
            changed=result.changed,
            steps=[_step_entry(s) for s in result.steps],
            self_test=None
            if test is None
            else SelfTestEntry(
                ok=test.ok,
                reason=test.reason,
                message=test.message,
                role=test.role,
                service_account=test.service_account,
            ),
            summary=totals,
        )
        print_json(msgspec.to_builtins(document))
        return ExitCode.FAILED if failed else ExitCode.OK
    _print_steps(result.steps)
    counts: dict[str, int] = {}
    for step in result.steps:
        counts[str(step.action)] = counts.get(str(step.action), 0) + 1
    if result.steps:
        summary = ", ".join(f"{n} {a}" for a, n in counts.items())
        if not result.changed:
            print(f"nothing to change: auth/{result.auth_mount} is up to date ({summary})")
        elif result.dry_run:
            print(f"dry run, nothing written: {summary}")
        else:
            print(f"done: {summary}")
    if result.reviewer_expires is not None:
        print(
            f"reviewer token valid until {result.reviewer_expires:%Y-%m-%d %H:%M:%S %Z}; "
            "re-run connect before half of its lifetime has passed"
        )
    if test is not None:
        if test.ok:
            print(color(f"self-test passed: {test.message}", "green"))
        else:
            print(color(f"self-test FAILED ({test.reason}): {test.message}", "red"))
    return ExitCode.FAILED if failed else ExitCode.OK
