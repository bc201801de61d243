"""The runtime wrapper end to end: target connect, source apply-plan, then the Go
``cloudtaser-runtime wrap`` logging in with real ServiceAccount tokens (TokenRequest) against a
real OpenBao.

Canary secret values may appear only in the child's environment dump, never in the wrapper's
output. (Rotation and signal forwarding with real child processes are proven by the Go
end-to-end tests in runtime/cmd/cloudtaser-runtime/e2e_test.go.)
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import plan as planlib
from cloudtaser.config import ClusterTarget, VaultTarget
from cloudtaser.connect import ConnectOptions, connect
from cloudtaser.source.openbao import OpenBaoClient
from cloudtaser.source.provision import apply_plan
from cloudtaser.target.kube.session import connect as kube_connect
from tests.integration.connect_helpers import (
    cleanup_cluster,
    cli,
    connect_args,
    create_namespace_with_accounts,
    env_dump_command,
    hexid,
    read_dump,
    request_token,
    run_wrapper,
)
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer

pytestmark = [pytest.mark.integration]

AUDIENCE = "openbao"


@dataclass
class Site:
    """One cluster connected at one mount, with a two-tenant plan applied."""

    cluster: Cluster
    mount: str
    kv: str
    plan: planlib.MigrationPlan
    tenant_a: str
    tenant_b: str
    canary_a: dict[str, str]
    canary_b: dict[str, str]

    def role(self, tenant: str) -> str:
        return f"cloudtaser-{self.plan.metadata.name}-{tenant}".lower()

    def path(self, tenant: str) -> str:
        return f"{self.kv}/data/{tenant}/db"


def _vault(openbao: BaoServer) -> OpenBaoClient:
    return OpenBaoClient(VaultTarget(address=openbao.address, token=openbao.token))


def _plan_doc(name: str, mount: str, kv: str, tenants: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": {"name": name, "cluster": "test", "authMount": mount},
        "tenants": [
            {
                "name": t,
                "namespace": t,
                "workloads": [
                    {
                        "kind": "Deployment",
                        "name": "api",
                        "serviceAccount": "app",
                        "secrets": [
                            {
                                "source": "db",
                                "vaultPath": f"{kv}/data/{t}/db",
                                "fields": {"username": "DB_USER", "password": "DB_PASSWORD"},
                            }
                        ],
                    }
                ],
            }
            for t in tenants
        ],
    }


def _make_site(
    openbao: BaoServer, cluster: Cluster, kube_client: Any, kv: str, *, tenants: tuple[str, str]
) -> Site:
    """connect (library) + two namespaces with SA ``app`` + apply-plan (library) + secrets."""
    tag = hexid()
    mount = f"k8s-{tag}"
    create_namespace_with_accounts(kube_client, tenants[0], "app")
    create_namespace_with_accounts(kube_client, tenants[1], "app")
    session = kube_connect(ClusterTarget(kubeconfig=(str(cluster.kubeconfig),)))
    vault = _vault(openbao)
    try:
        result = connect(
            session, vault, ConnectOptions(auth_mount=mount, namespace=f"ct-sys-{tag}")
        )
        assert result.self_test is not None
        assert result.self_test.ok, result.self_test.message
        import msgspec

        plan = msgspec.convert(
            _plan_doc(f"rt-{tag}", mount, kv, list(tenants)), planlib.MigrationPlan
        )
        applied = apply_plan(vault, plan, audience=AUDIENCE)
        assert applied.changed
    finally:
        session.close()
        vault.close()
    canaries = []
    for tenant in tenants:
        values = {
            "username": f"user-{tenant}",
            "password": f"CANARY-{tenant}-{secrets.token_hex(8)}",
        }
        openbao.api_ok("POST", f"{kv}/data/{tenant}/db", {"data": values})
        canaries.append(values)
    return Site(cluster, mount, kv, plan, tenants[0], tenants[1], canaries[0], canaries[1])


@pytest.fixture(scope="module")
def site(openbao: BaoServer, cluster: Cluster, kube_client: Any) -> Iterator[Site]:
    kv = openbao.enable_kv2(f"kv-{hexid()}")
    tenants = (f"ta-{hexid()}", f"tb-{hexid()}")
    built = _make_site(openbao, cluster, kube_client, kv, tenants=tenants)
    yield built
    openbao.api("DELETE", f"sys/auth/{built.mount}")
    openbao.disable_mount(kv)
    cleanup_cluster(
        kube_client,
        [*tenants, f"ct-sys-{built.mount[4:]}"],
        [f"cloudtaser-token-reviewer-ct-sys-{built.mount[4:]}"],
    )


def _env(site: Site, tenant: str, token_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CLOUDTASER_VAULT_ADDR": "",  # filled by the caller
        "CLOUDTASER_VAULT_AUTH_ROLE": site.role(tenant),
        "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": f"auth/{site.mount}",
        "CLOUDTASER_SECRET_PATHS": site.path(tenant),
        "CLOUDTASER_ENV_MAP": "username=DB_USER,password=DB_PASSWORD",
        "CLOUDTASER_SA_TOKEN_PATH": str(token_path),
        **extra,
    }


def _token_file(tmp: Path, kube_client: Any, tenant: str, *, audience: str = AUDIENCE) -> Path:
    path = tmp / f"sa-token-{tenant}"
    path.write_text(request_token(kube_client, tenant, "app", [audience]))
    return path


def _no_canaries(text: str, *canaries: dict[str, str]) -> None:
    for values in canaries:
        assert values["password"] not in text


def test_wrapper_gives_the_child_tenant_a_secrets_and_nothing_else(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token = _token_file(tmp_path, kube_client, site.tenant_a)
    dump = tmp_path / "env.json"
    env = _env(
        site,
        site.tenant_a,
        token,
        CLOUDTASER_VAULT_ADDR=openbao.address,
        VAULT_ADDR="https://the-apps-own-vault.example:8200",  # the app's: kept, never read
        VAULT_TOKEN="s.operator-token-must-not-leak",
        CLOUDTASER_ORIGINAL_CMD="docker-entrypoint.sh",
        KEEP_ME="yes",
        DB_PASSWORD="overridden-by-the-vault",
    )
    run = run_wrapper(env, env_dump_command(dump))
    assert run.returncode == 0, run.stderr
    child = read_dump(dump)
    assert child["pid"] == run.pid  # exec: the command *is* the wrapper process
    child_env = child["env"]
    assert child_env["DB_PASSWORD"] == site.canary_a["password"]
    assert child_env["DB_USER"] == site.canary_a["username"]
    assert site.canary_b["password"] not in child["env"].values()
    assert not [k for k in child_env if k.startswith("CLOUDTASER_")]
    assert "VAULT_TOKEN" not in child_env
    assert child_env["KEEP_ME"] == "yes"
    assert child_env["VAULT_ADDR"] == "https://the-apps-own-vault.example:8200"
    _no_canaries(run.stdout + run.stderr, site.canary_a, site.canary_b)


def test_a_wrapper_run_by_hand_takes_the_cloudtaser_documented_vault_names(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    """Outside the injector (no CLOUDTASER_VAULT_ADDR at all) VAULT_ADDR, VAULT_AUTH_ROLE and
    VAULT_AUTH_MOUNT_PATH work as compat-cloudtaser.md §10.3 documents them; the same names
    next to an (even empty) CLOUDTASER_VAULT_ADDR, as under the injector, are never read."""
    token = _token_file(tmp_path, kube_client, site.tenant_a)
    by_hand = {
        k: v
        for k, v in _env(site, site.tenant_a, token).items()
        if not k.startswith("CLOUDTASER_VAULT_")
    }
    by_hand |= {
        "VAULT_ADDR": openbao.address,
        "VAULT_AUTH_ROLE": site.role(site.tenant_a),
        "VAULT_AUTH_MOUNT_PATH": f"auth/{site.mount}",
    }
    dump = tmp_path / "env.json"
    run = run_wrapper(by_hand, env_dump_command(dump))
    assert run.returncode == 0, run.stderr
    assert read_dump(dump)["env"]["DB_PASSWORD"] == site.canary_a["password"]
    _no_canaries(run.stdout + run.stderr, site.canary_a, site.canary_b)

    injected = by_hand | {"CLOUDTASER_VAULT_ADDR": ""}  # what the injector's pod would carry
    refused = run_wrapper(injected, env_dump_command(tmp_path / "never.json"))
    assert refused.returncode != 0
    assert "CLOUDTASER_VAULT_ADDR is not set" in refused.stderr
    assert not (tmp_path / "never.json").exists()


def test_wrapped_command_exit_code_is_its_own(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token = _token_file(tmp_path, kube_client, site.tenant_a)
    env = _env(site, site.tenant_a, token, CLOUDTASER_VAULT_ADDR=openbao.address)
    run = run_wrapper(env, [sys.executable, "-c", "import sys; sys.exit(7)"])
    assert run.returncode == 7


def test_tenant_b_token_is_denied_with_tenant_a_role(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token_b = _token_file(tmp_path, kube_client, site.tenant_b)
    marker = tmp_path / "ran"
    env = _env(site, site.tenant_a, token_b, CLOUDTASER_VAULT_ADDR=openbao.address)
    run = run_wrapper(env, [sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert run.returncode == 3, run.stderr
    assert "login to auth/" in run.stderr
    assert "not authorized" in run.stderr
    assert not marker.exists()
    _no_canaries(run.stdout + run.stderr, site.canary_a, site.canary_b)


def test_tenant_b_role_cannot_read_tenant_a_paths(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token_b = _token_file(tmp_path, kube_client, site.tenant_b)
    env = _env(
        site,
        site.tenant_b,
        token_b,
        CLOUDTASER_VAULT_ADDR=openbao.address,
        CLOUDTASER_SECRET_PATHS=site.path(site.tenant_a),
    )
    run = run_wrapper(env, [sys.executable, "-c", "pass"])
    assert run.returncode == 3, run.stderr
    assert f"permission denied reading {site.path(site.tenant_a)}" in run.stderr
    _no_canaries(run.stdout + run.stderr, site.canary_a, site.canary_b)


def test_missing_field_fails_closed_without_showing_values(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token = _token_file(tmp_path, kube_client, site.tenant_a)
    marker = tmp_path / "ran"
    env = _env(
        site,
        site.tenant_a,
        token,
        CLOUDTASER_VAULT_ADDR=openbao.address,
        CLOUDTASER_ENV_MAP="password=DB_PASSWORD,api_key=API_KEY",
    )
    mark = openbao.audit_mark()
    run = run_wrapper(env, [sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert run.returncode == 4, run.stderr
    assert "'api_key'" in run.stderr
    assert site.path(site.tenant_a) in run.stderr
    assert not marker.exists()
    # the login token of a start that failed closed is revoked, not left valid until its TTL
    assert ("update", "auth/token/revoke-self") in openbao.request_ops_since(mark)
    _no_canaries(run.stdout + run.stderr, site.canary_a, site.canary_b)


def test_missing_secret_path_fails_closed(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    # tenant A's policy grants exactly its plan paths; delete the secret to make it missing
    token = _token_file(tmp_path, kube_client, site.tenant_a)
    openbao.api_ok("DELETE", f"{site.kv}/data/{site.tenant_a}/db")
    try:
        env = _env(site, site.tenant_a, token, CLOUDTASER_VAULT_ADDR=openbao.address)
        run = run_wrapper(env, [sys.executable, "-c", "pass"])
        assert run.returncode == 4, run.stderr
        assert "does not exist" in run.stderr
    finally:
        openbao.api_ok("POST", f"{site.kv}/data/{site.tenant_a}/db", {"data": site.canary_a})


def test_token_of_the_wrong_audience_is_refused(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token = _token_file(tmp_path, kube_client, site.tenant_a, audience="not-openbao")
    env = _env(site, site.tenant_a, token, CLOUDTASER_VAULT_ADDR=openbao.address)
    run = run_wrapper(env, [sys.executable, "-c", "pass"])
    assert run.returncode == 3, run.stderr
    assert "audience" in run.stderr
    _no_canaries(run.stdout + run.stderr, site.canary_a, site.canary_b)


def test_resident_mode_gives_the_child_its_secrets_and_its_exit_code(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token = _token_file(tmp_path, kube_client, site.tenant_a)
    dump = tmp_path / "env.json"
    env = _env(
        site,
        site.tenant_a,
        token,
        CLOUDTASER_VAULT_ADDR=openbao.address,
        CLOUDTASER_MODE="resident",
    )
    mark = openbao.audit_mark()
    run = run_wrapper(env, [*env_dump_command(dump)])
    assert run.returncode == 0, run.stderr
    child = read_dump(dump)
    assert child["pid"] != run.pid  # resident: the app is the wrapper's child
    assert child["env"]["DB_PASSWORD"] == site.canary_a["password"]
    assert not [k for k in child["env"] if k.startswith("CLOUDTASER_")]
    # without rotation the resident wrapper needs no token once the app has its secrets
    assert ("update", "auth/token/revoke-self") in openbao.request_ops_since(mark)
    failing = run_wrapper(env, [sys.executable, "-c", "import sys; sys.exit(9)"])
    assert failing.returncode == 9
    _no_canaries(run.stdout + run.stderr + failing.stderr, site.canary_a, site.canary_b)


def test_check_names_a_role_that_does_not_bind_the_service_account(
    openbao: BaoServer, site: Site, tmp_path: Path
) -> None:
    ns = f"ct-sys-{site.mount[4:]}"

    def check(service_account: str) -> Any:
        return cli(
            connect_args(
                site.cluster,
                openbao,
                tmp_path,
                site.mount,
                ns,
                "--check",
                "--self-test-role",
                site.role(site.tenant_a),
                "--self-test-service-account",
                service_account,
            )
        )

    run = check(f"{site.tenant_b}/app")
    assert run.code == 4, run.text
    assert "self-test FAILED (role-not-bound)" in run.stdout
    ok = check(f"{site.tenant_a}/app")
    assert ok.code == 0, ok.text


# --- two clusters, two mounts, one vault ----------------------------------------------------


def test_each_clusters_tokens_work_only_through_its_own_mount(
    openbao: BaoServer,
    cluster: Cluster,
    kube_client: Any,
    cluster_factory: Callable[..., Cluster],
    tmp_path: Path,
) -> None:
    second = cluster_factory("ct-second", nodes=1)
    second_client = second.client()
    kvs = (openbao.enable_kv2(f"kv-{hexid()}"), openbao.enable_kv2(f"kv-{hexid()}"))
    # the same namespace and ServiceAccount names in both clusters
    tenants = (f"ta-{hexid()}", f"tb-{hexid()}")
    one = _make_site(openbao, cluster, kube_client, kvs[0], tenants=tenants)
    two = _make_site(openbao, second, second_client, kvs[1], tenants=tenants)
    try:
        assert one.mount != two.mount
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        tokens = {
            "one": _token_file(tmp_path / "one", kube_client, tenants[0]),
            "two": _token_file(tmp_path / "two", second_client, tenants[0]),
        }
        sites = {"one": one, "two": two}
        for token_owner, token in tokens.items():
            for mount_owner, target in sites.items():
                env = _env(target, tenants[0], token, CLOUDTASER_VAULT_ADDR=openbao.address)
                dump = tmp_path / f"env-{token_owner}-{mount_owner}.json"
                run = run_wrapper(env, env_dump_command(dump))
                if token_owner == mount_owner:
                    assert run.returncode == 0, run.stderr
                    child = read_dump(dump)["env"]
                    assert child["DB_PASSWORD"] == target.canary_a["password"]
                else:
                    assert run.returncode == 3, run.stderr
                    assert "was refused" in run.stderr
                    assert not dump.exists()
                _no_canaries(run.stdout + run.stderr, one.canary_a, two.canary_a)

        # connecting the second cluster to the first one's mount is refused
        refused = cli(connect_args(second, openbao, tmp_path, one.mount, f"ct-sys-{one.mount[4:]}"))
        assert refused.code == 4
        assert "already connected to another cluster" in refused.stderr
    finally:
        for s, client in ((one, kube_client), (two, second_client)):
            openbao.api("DELETE", f"sys/auth/{s.mount}")
            cleanup_cluster(
                client,
                [*tenants, f"ct-sys-{s.mount[4:]}"],
                [f"cloudtaser-token-reviewer-ct-sys-{s.mount[4:]}"],
            )
        for kv in kvs:
            openbao.disable_mount(kv)
        second_client.close()


def test_unmapped_field_fails_closed_without_showing_values(
    openbao: BaoServer, kube_client: Any, site: Site, tmp_path: Path
) -> None:
    token = _token_file(tmp_path, kube_client, site.tenant_a)
    env = _env(
        site,
        site.tenant_a,
        token,
        CLOUDTASER_VAULT_ADDR=openbao.address,
        CLOUDTASER_ENV_MAP="nope=NOPE",
    )
    run = run_wrapper(env, [sys.executable, "-c", "pass"])
    assert run.returncode == 4, run.stderr
    assert "'nope'" in run.stderr
    _no_canaries(run.stdout + run.stderr, site.canary_a, site.canary_b)
