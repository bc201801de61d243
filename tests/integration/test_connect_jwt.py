"""``target connect --auth-method jwt`` (direct and split) and apply-plan's jwt roles against a
real OpenBao and real API servers: the session cluster (``ct-main``) and a second control plane
of this module (etcd + kube-apiserver, its own service-account signing key), which the rotation
test restarts with a new signing key.

What must hold: the vault gets the cluster's public keys and issuer and nothing that reaches
the cluster; a real ServiceAccount token logs in; a tenant's token does not log in with another
tenant's role; a token of another control plane is refused; one mount never serves two clusters;
re-running connect picks up a key rotation with both keys valid during the overlap.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from tests.integration.connect_helpers import (
    auth_description,
    cleanup_cluster,
    cli,
    connect_args,
    create_namespace_with_accounts,
    hexid,
    request_token,
    token_file,
)
from tests.integration.source_helpers import plan_dict, workload, write_plan
from tests.testenv.binaries import find_k8s_binaries
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import CLI_AGENT, BaoServer

pytestmark = [pytest.mark.integration]

SELFTEST_ROLE = "cloudtaser_connect_selftest"
SELFTEST_SA = "cloudtaser-connect-selftest"
SELFTEST_AUDIENCE = "cloudtaser-connect-selftest"
AUDIENCE = "openbao"


def _pem(path: Path) -> str:
    key = serialization.load_pem_public_key(path.read_bytes())
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _norm(pems: list[str]) -> set[str]:
    return {
        serialization.load_pem_public_key(p.encode())
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        for p in pems
    }


@pytest.fixture(scope="module")
def second_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A second control plane: its own etcd, CA, issuer URL and service-account key."""
    root = tmp_path_factory.mktemp("cluster-ct-jwt-b")
    plane = Cluster(
        "ct-jwt-b", root, nodes=0, binaries=find_k8s_binaries(), controllers=False, kwok=False
    )
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def site(openbao: BaoServer, cluster: Cluster, kube_client: Any) -> Iterator[dict[str, str]]:
    tag = hexid()
    info = {"mount": f"jwt-{tag}", "ns": f"ct-sys-{tag}", "tag": tag}
    yield info
    openbao.api("DELETE", f"sys/auth/{info['mount']}")
    cleanup_cluster(kube_client, [info["ns"]], [])


def _connect(cluster: Cluster, openbao: BaoServer, tmp: Path, mount: str, ns: str, *extra: str):
    return cli(connect_args(cluster, openbao, tmp, mount, ns, "--auth-method", "jwt", *extra))


def _login(openbao: BaoServer, mount: str, role: str, jwt: str) -> Any:
    return openbao.api("POST", f"auth/{mount}/login", {"role": role, "jwt": jwt}, token="")


def _config(openbao: BaoServer, mount: str) -> dict[str, Any]:
    return dict(openbao.api_ok("GET", f"auth/{mount}/config")["data"])


def _kube_system_uid(client: Any) -> str:
    return str(client.get(Namespace, "kube-system").metadata.uid)


def test_connect_jwt_writes_only_the_clusters_keys_and_issuer_and_a_real_login_passes(
    openbao: BaoServer, cluster: Cluster, kube_client: Any, site: dict[str, str], tmp_path: Path
) -> None:
    mount = site["mount"]
    wrong = _connect(cluster, openbao, tmp_path, mount, site["ns"], "--issuer", "https://other")
    assert wrong.code == 2, wrong.text
    assert "is not the cluster's issuer" in wrong.text
    dry = _connect(cluster, openbao, tmp_path, mount, site["ns"], "--dry-run")
    assert dry.code == 0, dry.text
    assert f"{mount}/" not in openbao.api_ok("GET", "sys/auth")["data"]
    run = _connect(cluster, openbao, tmp_path, mount, site["ns"])
    assert run.code == 0, run.text
    assert "self-test passed" in run.stdout
    assert "metadata.authMethod: jwt" in run.stderr  # what the plan must record
    assert openbao.api_ok("GET", "sys/auth")["data"][f"{mount}/"]["type"] == "jwt"
    config = _config(openbao, mount)
    assert _norm(config["jwt_validation_pubkeys"]) == {_pem(cluster.pki.sa_pub)}
    assert config["bound_issuer"] == cluster.issuer
    assert config["jwt_supported_algs"] == ["RS256"]
    # nothing that reaches the cluster: no discovery URL, no JWKS URL, no API host anywhere
    assert not config.get("oidc_discovery_url")
    assert not config.get("jwks_url")
    assert "kubernetes_host" not in config
    assert f"cluster-id={_kube_system_uid(kube_client)}" in auth_description(openbao, mount)
    assert "auth=jwt" in auth_description(openbao, mount)
    # and nothing in the cluster gets system:auth-delegator for it
    bindings = kube_client.list(ClusterRoleBinding)
    assert not [b for b in bindings if site["ns"] in b.metadata.name or mount in b.metadata.name]

    # a ServiceAccount token of the self-test account, with its audience, logs in for real
    jwt = request_token(kube_client, site["ns"], SELFTEST_SA, [SELFTEST_AUDIENCE])
    assert _login(openbao, mount, SELFTEST_ROLE, jwt).status_code == 200
    # the same account's token for another audience does not
    other = request_token(kube_client, site["ns"], SELFTEST_SA, ["someone-else"])
    assert _login(openbao, mount, SELFTEST_ROLE, other).status_code == 400

    mark = openbao.audit_mark()
    again = _connect(cluster, openbao, tmp_path, mount, site["ns"], "--output", "json")
    assert again.code == 0, again.text
    report = json.loads(again.stdout)
    assert report["authMethod"] == "jwt"
    assert report["changed"] is False
    assert {s["action"] for s in report["steps"]} == {"unchanged"}
    assert report["selfTest"]["ok"] is True
    writes = [
        w
        for w in openbao.writes_since(mark, client=CLI_AGENT)
        if w[1].startswith((f"auth/{mount}/config", f"sys/auth/{mount}", f"auth/{mount}/role"))
    ]
    assert writes == []


def test_jwt_split_file_holds_identity_issuer_and_keys_only_and_imports(
    openbao: BaoServer, cluster: Cluster, kube_client: Any, site: dict[str, str], tmp_path: Path
) -> None:
    mount, conn = site["mount"], tmp_path / "c.conn.yaml"
    export = cli(
        [
            "target",
            "connect",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--auth-method",
            "jwt",
            "--auth-mount",
            mount,
            "--namespace",
            site["ns"],
            "--export",
            str(conn),
        ]
    )
    assert export.code == 0, export.text
    assert stat.S_IMODE(conn.stat().st_mode) == 0o600
    doc = yaml.safe_load(conn.read_text())
    assert set(doc) == {
        "apiVersion",
        "kind",
        "metadata",
        "authMount",
        "authMethod",
        "issuer",
        "jwtValidationPubkeys",
    }
    assert doc["authMethod"] == "jwt"
    assert doc["issuer"] == cluster.issuer
    assert _norm(doc["jwtValidationPubkeys"]) == {_pem(cluster.pki.sa_pub)}
    assert doc["metadata"]["clusterId"] == _kube_system_uid(kube_client)
    assert cluster.server.split("//")[1] not in conn.read_text().replace(cluster.issuer, "")
    assert "eyJ" not in conn.read_text()

    imported = cli(
        [
            "source",
            "connect",
            "--import",
            str(conn),
            "--openbao-addr",
            openbao.address,
            "--token-file",
            str(token_file(openbao, tmp_path)),
        ]
    )
    assert imported.code == 0, imported.text
    config = _config(openbao, mount)
    assert _norm(config["jwt_validation_pubkeys"]) == {_pem(cluster.pki.sa_pub)}
    assert config["bound_issuer"] == cluster.issuer
    again = cli(
        [
            "source",
            "connect",
            "--import",
            str(conn),
            "--openbao-addr",
            openbao.address,
            "--token-file",
            str(token_file(openbao, tmp_path)),
        ]
    )
    assert again.code == 0, again.text
    assert "nothing to change" in again.stdout, again.text


def test_apply_plan_jwt_roles_let_a_tenant_in_only_with_its_own_role(
    openbao: BaoServer,
    cluster: Cluster,
    kube_client: Any,
    kv_mount: str,
    site: dict[str, str],
    tmp_path: Path,
) -> None:
    mount, tag = site["mount"], site["tag"]
    assert _connect(cluster, openbao, tmp_path, mount, site["ns"]).code == 0
    ns_a, ns_b = f"ta-{tag}", f"tb-{tag}"
    create_namespace_with_accounts(kube_client, ns_a, "api")
    create_namespace_with_accounts(kube_client, ns_b, "api")
    try:
        data = plan_dict(
            f"jwtplan-{tag}",
            {
                ns_a: [workload("api", {f"{kv_mount}/data/{ns_a}/db": {"pw": "PW"}}, sa="api")],
                ns_b: [workload("api", {f"{kv_mount}/data/{ns_b}/db": {"pw": "PW"}}, sa="api")],
            },
            auth_mount=mount,
        )
        data["metadata"]["authMethod"] = "jwt"
        plan = write_plan(tmp_path / "plan.yaml", data)
        base = [
            "--openbao-addr",
            openbao.address,
            "--token-file",
            str(token_file(openbao, tmp_path)),
        ]
        no_audience = cli(["source", "apply-plan", str(plan), *base])
        assert no_audience.code == 2, no_audience.text
        assert "--audience" in no_audience.text, no_audience.text
        dry = cli(["source", "apply-plan", str(plan), *base, "--audience", AUDIENCE, "--dry-run"])
        assert dry.code == 0, dry.text
        assert 'role_type: (unset) -> "jwt"' in dry.stdout
        assert f'"/kubernetes.io/namespace": "{ns_a}"' in dry.stdout
        role_a = f"cloudtaser-jwtplan-{tag}-{ns_a}"
        role_b = f"cloudtaser-jwtplan-{tag}-{ns_b}"
        assert openbao.api("GET", f"auth/{mount}/role/{role_a}").status_code == 404
        applied = cli(["source", "apply-plan", str(plan), *base, "--audience", AUDIENCE])
        assert applied.code == 0, applied.text
        fields = openbao.api_ok("GET", f"auth/{mount}/role/{role_a}")["data"]
        assert fields["role_type"] == "jwt"
        assert fields["user_claim"] == "sub"
        assert fields["bound_audiences"] == [AUDIENCE]
        assert fields["bound_claims_type"] == "string"
        assert fields["bound_claims"] == {
            "/kubernetes.io/namespace": ns_a,
            "/kubernetes.io/serviceaccount/name": ["api"],
        }
        assert fields["token_policies"] == [role_a]

        token_a = request_token(kube_client, ns_a, "api", [AUDIENCE])
        assert _login(openbao, mount, role_a, token_a).status_code == 200
        # same ServiceAccount name, other namespace: tenant A never gets tenant B's role
        refused = _login(openbao, mount, role_b, token_a)
        assert refused.status_code == 400, refused.text
        assert "bound claim" in refused.text
        # the API server's own audience is not the vault's
        plain = request_token(kube_client, ns_a, "api")
        assert _login(openbao, mount, role_a, plain).status_code == 400

        mark = openbao.audit_mark()
        rerun = cli(["source", "apply-plan", str(plan), *base, "--audience", AUDIENCE])
        assert rerun.code == 0, rerun.text
        roles = [w for w in openbao.writes_since(mark, client=CLI_AGENT) if "/role/" in w[1]]
        assert roles == []

        # a new ServiceAccount in tenant A: the diff names the claim, apply updates only it;
        # tenant B leaves the plan: --prune deletes its role and policy
        data["tenants"][0]["workloads"].append(
            workload("worker", {f"{kv_mount}/data/{ns_a}/db": {"pw": "PW"}}, sa="worker")
        )
        data["tenants"].pop()
        write_plan(plan, data)
        diff = cli(["source", "apply-plan", str(plan), *base, "--audience", AUDIENCE, "--dry-run"])
        assert diff.code == 0, diff.text
        assert f"~ role auth/{mount}/role/{role_a}: would update" in diff.stdout
        assert "bound_claims:" in diff.stdout
        pruned = cli(["source", "apply-plan", str(plan), *base, "--audience", AUDIENCE, "--prune"])
        assert pruned.code == 0, pruned.text
        claims = openbao.api_ok("GET", f"auth/{mount}/role/{role_a}")["data"]["bound_claims"]
        assert claims["/kubernetes.io/serviceaccount/name"] == ["api", "worker"]
        assert openbao.api("GET", f"auth/{mount}/role/{role_b}").status_code == 404
        # verify-plan's --check of a tenant role runs the jwt self-test
        check = cli(
            [
                *connect_args(cluster, openbao, tmp_path, mount, site["ns"]),
                "--check",
                "--self-test-role",
                role_a,
                "--self-test-service-account",
                f"{ns_a}/api",
            ]
        )
        assert check.code == 0, check.text
        assert "self-test passed" in check.stdout, check.text
    finally:
        cleanup_cluster(kube_client, [ns_a, ns_b], [])


def test_a_second_control_planes_token_is_refused_and_its_connect_cannot_take_the_mount(
    openbao: BaoServer,
    cluster: Cluster,
    kube_client: Any,
    second_plane: Cluster,
    site: dict[str, str],
    tmp_path: Path,
) -> None:
    mount = site["mount"]
    assert _kube_system_uid(kube_client) != _kube_system_uid(second_plane.client())
    assert _pem(cluster.pki.sa_pub) != _pem(second_plane.pki.sa_pub)  # its own signing key
    assert _connect(cluster, openbao, tmp_path, mount, site["ns"]).code == 0
    keys_before = _config(openbao, mount)["jwt_validation_pubkeys"]
    # the same namespace and ServiceAccount name on the second control plane
    other = second_plane.client()
    create_namespace_with_accounts(other, site["ns"], SELFTEST_SA)
    forged = request_token(other, site["ns"], SELFTEST_SA, [SELFTEST_AUDIENCE])
    genuine = request_token(kube_client, site["ns"], SELFTEST_SA, [SELFTEST_AUDIENCE])
    assert _login(openbao, mount, SELFTEST_ROLE, genuine).status_code == 200
    refused = _login(openbao, mount, SELFTEST_ROLE, forged)
    assert refused.status_code == 400, refused.text

    # connecting the second cluster to the first one's mount is refused, nothing is written
    mark = openbao.audit_mark()
    taken = _connect(second_plane, openbao, tmp_path, mount, site["ns"])
    assert taken.code != 0
    assert "another cluster" in taken.text
    assert _config(openbao, mount)["jwt_validation_pubkeys"] == keys_before
    assert [w for w in openbao.writes_since(mark, client=CLI_AGENT) if mount in w[1]] == []
    assert _login(openbao, mount, SELFTEST_ROLE, forged).status_code == 400


def test_rerunning_connect_picks_up_a_signing_key_rotation_with_both_keys_valid(
    openbao: BaoServer, second_plane: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    """The second control plane rotates: restarted with a new signing key while still
    accepting (and publishing) the old one, as a real rotation's overlap does."""
    mount, ns = f"{site['mount']}-b", site["ns"]
    client = second_plane.client()
    try:
        assert _connect(second_plane, openbao, tmp_path, mount, ns).code == 0
        old_token = request_token(client, ns, SELFTEST_SA, [SELFTEST_AUDIENCE], seconds=3600)
        assert _login(openbao, mount, SELFTEST_ROLE, old_token).status_code == 200

        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file = tmp_path / "sa-new.key"
        key_file.write_bytes(
            new_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pub_file = tmp_path / "sa-new.pub"
        pub_file.write_bytes(
            new_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        second_plane.restart_apiserver(signing_key=key_file, verify_keys=[pub_file])
        client = second_plane.client()
        new_token = request_token(client, ns, SELFTEST_SA, [SELFTEST_AUDIENCE])
        # before connect runs again the vault does not know the new key
        assert _login(openbao, mount, SELFTEST_ROLE, new_token).status_code == 400
        check = _connect(second_plane, openbao, tmp_path, mount, ns, "--check")
        assert check.code == 4, check.text
        assert "unknown-signing-key" in check.text, check.text

        rotated = _connect(second_plane, openbao, tmp_path, mount, ns)
        assert rotated.code == 0, rotated.text
        assert "keys: +1 -0" in rotated.stdout
        assert _norm(_config(openbao, mount)["jwt_validation_pubkeys"]) == {
            _pem(second_plane.pki.sa_pub),
            _pem(pub_file),
        }
        # the overlap: tokens of both keys log in
        assert _login(openbao, mount, SELFTEST_ROLE, new_token).status_code == 200
        assert _login(openbao, mount, SELFTEST_ROLE, old_token).status_code == 200
        again = _connect(second_plane, openbao, tmp_path, mount, ns)
        assert again.code == 0, again.text
        assert "nothing to change" in again.stdout, again.text
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
