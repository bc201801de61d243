"""``target connect`` / ``source connect`` against a real OpenBao and a real API server.

Each test uses its own auth mount and its own connect namespace (so its own ClusterRoleBinding),
and the audit log of OpenBao witnesses what was written.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
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
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import CLI_AGENT, BaoServer

pytestmark = [pytest.mark.integration]


@pytest.fixture
def site(openbao: BaoServer, cluster: Cluster, kube_client: Any) -> Iterator[dict[str, str]]:
    """A unique auth mount and connect namespace; both removed afterwards."""
    tag = hexid()
    info = {"mount": f"k8s-{tag}", "ns": f"ct-sys-{tag}"}
    yield info
    openbao.api("DELETE", f"sys/auth/{info['mount']}")
    cleanup_cluster(
        kube_client,
        [info["ns"]],
        [f"cloudtaser-token-reviewer-{info['ns']}", f"cloudtaser-client-reviewers-{info['mount']}"],
    )


def _connect(
    cluster: Cluster, openbao: BaoServer, tmp: Path, site: dict[str, str], *extra: str
) -> Any:
    return cli(connect_args(cluster, openbao, tmp, site["mount"], site["ns"], *extra))


def _config_writes(openbao: BaoServer, mark: int, mount: str) -> list[tuple[str, str]]:
    return [
        w
        for w in openbao.writes_since(mark, client=CLI_AGENT)
        if w[1] in {f"auth/{mount}/config", f"sys/auth/{mount}", f"sys/auth/{mount}/tune"}
        or w[1].startswith(f"auth/{mount}/role/")
    ]


def test_connect_configures_the_mount_and_a_real_login_passes(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    run = _connect(cluster, openbao, tmp_path, site)
    assert run.code == 0, run.text
    assert "self-test passed" in run.stdout
    mount = site["mount"]
    config = openbao.api_ok("GET", f"auth/{mount}/config")["data"]
    assert config["kubernetes_host"] == cluster.server
    assert config["disable_local_ca_jwt"] is True
    assert config["kubernetes_ca_cert"].strip() == cluster.ca_pem.strip()
    description = auth_description(openbao, mount)
    assert description.startswith("cloudtaser target connect; cluster=")
    assert f"reviewer=token:{site['ns']}/cloudtaser-token-reviewer" in description
    assert "reviewer-expires=" in description
    # the reviewer token (a JWT) is never shown
    assert "eyJ" not in run.text


def test_connect_rerun_changes_nothing_and_says_so(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    assert _connect(cluster, openbao, tmp_path, site).code == 0
    mark = openbao.audit_mark()
    again = _connect(cluster, openbao, tmp_path, site, "--output", "json")
    assert again.code == 0, again.text
    report = json.loads(again.stdout)
    schema = Path(__file__).resolve().parents[2] / "schema" / "output-connect.schema.json"
    jsonschema.Draft202012Validator(json.loads(schema.read_text())).validate(report)
    assert report["summary"]["create"] == 0
    assert report["changed"] is False
    assert {s["action"] for s in report["steps"]} == {"unchanged"}
    assert report["selfTest"]["ok"] is True
    assert _config_writes(openbao, mark, site["mount"]) == []
    text = _connect(cluster, openbao, tmp_path, site)
    assert "nothing to change" in text.stdout


def test_rotate_reviewer_token_rewrites_the_config(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    assert _connect(cluster, openbao, tmp_path, site).code == 0
    mark = openbao.audit_mark()
    run = _connect(cluster, openbao, tmp_path, site, "--rotate-reviewer-token")
    assert run.code == 0, run.text
    assert "rotation requested" in run.stdout
    assert ("update", f"auth/{site['mount']}/config") in openbao.writes_since(mark)
    assert "self-test passed" in run.stdout


def test_short_reviewer_lifetime_is_rotated_once_half_has_passed(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    """A 10-minute token asked for with a 24h lifetime has less than half left: rotate."""
    assert _connect(cluster, openbao, tmp_path, site, "--reviewer-token-ttl", "10m").code == 0
    mark = openbao.audit_mark()
    run = _connect(cluster, openbao, tmp_path, site)
    assert run.code == 0, run.text
    assert "reviewer token expires in" in run.stdout
    assert ("update", f"auth/{site['mount']}/config") in openbao.writes_since(mark)


def test_dry_run_creates_nothing_anywhere(
    openbao: BaoServer, cluster: Cluster, kube_client: Any, site: dict[str, str], tmp_path: Path
) -> None:
    mark = openbao.audit_mark()
    run = _connect(cluster, openbao, tmp_path, site, "--dry-run", "--output", "json")
    assert run.code == 0, run.text
    report = json.loads(run.stdout)
    actions = {(s["kind"], s["action"]) for s in report["steps"]}
    assert ("Namespace", "create") in actions
    assert ("auth-mount", "create") in actions
    assert ("auth-config", "create") in actions
    assert report["selfTest"] is None
    assert _config_writes(openbao, mark, site["mount"]) == []
    assert f"{site['mount']}/" not in openbao.api_ok("GET", "sys/auth")["data"]
    names = {ns.metadata.name for ns in kube_client.list(Namespace)}
    assert site["ns"] not in names


def test_check_reports_a_reviewer_without_auth_delegator(
    openbao: BaoServer, cluster: Cluster, kube_client: Any, site: dict[str, str], tmp_path: Path
) -> None:
    assert _connect(cluster, openbao, tmp_path, site).code == 0
    kube_client.delete(ClusterRoleBinding, f"cloudtaser-token-reviewer-{site['ns']}")
    run = _connect(cluster, openbao, tmp_path, site, "--check", "--output", "json")
    assert run.code == 4, run.text
    test = json.loads(run.stdout)["selfTest"]
    assert test["ok"] is False
    assert test["reason"] == "reviewer-forbidden"
    assert "system:auth-delegator" in test["message"]
    # re-running connect repairs it (the binding is recreated)
    repaired = _connect(cluster, openbao, tmp_path, site)
    assert repaired.code == 0, repaired.text
    assert "self-test passed" in repaired.stdout


def test_reviewer_without_auth_delegator_is_refused_before_the_vault_is_touched(
    openbao: BaoServer, cluster: Cluster, kube_client: Any, site: dict[str, str], tmp_path: Path
) -> None:
    create_namespace_with_accounts(kube_client, site["ns"], "unbound-reviewer")
    run = _connect(
        cluster,
        openbao,
        tmp_path,
        site,
        "--skip-rbac",
        "--reviewer-service-account",
        "unbound-reviewer",
    )
    assert run.code == 4, run.text
    assert "reviewer forbidden" in run.stderr
    assert "system:auth-delegator" in run.stderr
    assert f"{site['mount']}/" not in openbao.api_ok("GET", "sys/auth")["data"]


def test_unreachable_kubernetes_host_is_reported(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    from tests.testenv.process import free_port

    host = f"https://127.0.0.1:{free_port()}"
    run = _connect(cluster, openbao, tmp_path, site, "--kubernetes-host", host, "--output", "json")
    assert run.code == 4, run.text
    test = json.loads(run.stdout)["selfTest"]
    assert test["reason"] == "host-unreachable"
    assert host in test["message"]


def test_wrong_ca_is_reported_as_ca_mismatch(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "not-the-cluster-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca_file = tmp_path / "wrong-ca.pem"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    run = _connect(
        cluster, openbao, tmp_path, site, "--kubernetes-ca-file", str(ca_file), "--output", "json"
    )
    assert run.code == 4, run.text
    assert json.loads(run.stdout)["selfTest"]["reason"] == "ca-mismatch"


def test_mount_configured_by_hand_is_not_taken_over_without_force(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    mount = site["mount"]
    openbao.api_ok("POST", f"sys/auth/{mount}", {"type": "kubernetes"})
    openbao.api_ok(
        "POST",
        f"auth/{mount}/config",
        {
            "kubernetes_host": "https://other.example:6443",
            "kubernetes_ca_cert": cluster.ca_pem,
            "disable_local_ca_jwt": True,
        },
    )
    run = _connect(cluster, openbao, tmp_path, site)
    assert run.code == 4
    assert "not by cloudtaser" in run.stderr
    config = openbao.api_ok("GET", f"auth/{mount}/config")["data"]
    assert config["kubernetes_host"] == "https://other.example:6443"
    forced = _connect(cluster, openbao, tmp_path, site, "--force")
    assert forced.code == 0, forced.text


# --- the air-gapped split ------------------------------------------------------------------


def _import(openbao: BaoServer, tmp: Path, path: Path, *extra: str) -> Any:
    return cli(
        [
            "source",
            "connect",
            "--import",
            str(path),
            "--openbao-addr",
            openbao.address,
            "--token-file",
            str(token_file(openbao, tmp)),
            *extra,
        ]
    )


def test_split_form_without_credential_uses_the_clients_jwt_as_reviewer(
    openbao: BaoServer,
    cluster: Cluster,
    kube_client: Any,
    site: dict[str, str],
    tmp_path: Path,
) -> None:
    tenant = f"split-{hexid()}"
    create_namespace_with_accounts(kube_client, tenant, "app")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "cloudtaser.io/v1",
                "kind": "MigrationPlan",
                "metadata": {"name": "split", "authMount": site["mount"]},
                "tenants": [
                    {
                        "name": tenant,
                        "namespace": tenant,
                        "workloads": [
                            {
                                "kind": "Deployment",
                                "name": "api",
                                "serviceAccount": "app",
                                "secrets": [
                                    {
                                        "source": "db",
                                        "vaultPath": "secret/data/split/db",
                                        "fields": {"password": "DB_PASSWORD"},
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    conn_file = tmp_path / "cluster.conn.yaml"
    try:
        exported = cli(
            [
                "target",
                "connect",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--plan",
                str(plan),
                "--namespace",
                site["ns"],
                "--export",
                str(conn_file),
            ]
        )
        assert exported.code == 0, exported.text
        text = conn_file.read_text()
        doc = yaml.safe_load(text)
        assert doc["kind"] == "ClusterConnection"
        assert doc["authMount"] == site["mount"]
        assert doc["reviewer"] == {"mode": "client-jwt"}
        assert "eyJ" not in text  # no credential
        assert stat.S_IMODE(conn_file.stat().st_mode) == 0o600

        imported = _import(openbao, tmp_path, conn_file)
        assert imported.code == 0, imported.text
        again = _import(openbao, tmp_path, conn_file)
        assert "nothing to change" in again.stdout

        # a role for the plan's ServiceAccount; its own API-audience JWT is the reviewer
        openbao.api_ok(
            "POST",
            f"auth/{site['mount']}/role/app",
            {
                "bound_service_account_names": ["app"],
                "bound_service_account_namespaces": [tenant],
                "token_policies": ["default"],
                "token_ttl": 60,
            },
        )
        jwt = request_token(kube_client, tenant, "app")
        r = openbao.api(
            "POST", f"auth/{site['mount']}/login", {"role": "app", "jwt": jwt}, token=""
        )
        assert r.status_code == 200, r.json()
        # a ServiceAccount the plan does not name is not bound, so its review is forbidden
        create_namespace_with_accounts(kube_client, f"{tenant}-x", "app")
        openbao.api_ok(
            "POST",
            f"auth/{site['mount']}/role/other",
            {
                "bound_service_account_names": ["app"],
                "bound_service_account_namespaces": [f"{tenant}-x"],
                "token_policies": ["default"],
            },
        )
        other = request_token(kube_client, f"{tenant}-x", "app")
        r = openbao.api(
            "POST", f"auth/{site['mount']}/login", {"role": "other", "jwt": other}, token=""
        )
        assert r.status_code == 403
    finally:
        cleanup_cluster(kube_client, [tenant, f"{tenant}-x"], [])


def test_split_form_with_reviewer_token_then_check_passes(
    openbao: BaoServer, cluster: Cluster, site: dict[str, str], tmp_path: Path
) -> None:
    conn_file = tmp_path / "cluster.conn.yaml"
    base = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", site["ns"]]
    exported = cli(
        [
            "target",
            "connect",
            *base,
            "--auth-mount",
            site["mount"],
            "--export",
            str(conn_file),
            "--include-reviewer-token",
        ]
    )
    assert exported.code == 0, exported.text
    assert "eyJ" not in exported.text  # the token is in the file, never on the terminal
    doc = yaml.safe_load(conn_file.read_text())
    assert doc["reviewer"]["mode"] == "token"
    assert doc["reviewer"]["token"].startswith("eyJ")
    imported = _import(openbao, tmp_path, conn_file)
    assert imported.code == 0, imported.text
    assert "eyJ" not in imported.text
    assert "nothing to change" in _import(openbao, tmp_path, conn_file).stdout
    # the self-test needs its ServiceAccount and role: a normal connect run adds them and finds
    # the config unchanged
    run = cli(connect_args(cluster, openbao, tmp_path, site["mount"], site["ns"]))
    assert run.code == 0, run.text
    assert "self-test passed" in run.stdout
    check = cli(connect_args(cluster, openbao, tmp_path, site["mount"], site["ns"], "--check"))
    assert check.code == 0, check.text


def test_import_rejects_a_tampered_connection_file(
    openbao: BaoServer, tmp_path: Path, cluster: Cluster
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "cloudtaser.io/v1",
                "kind": "ClusterConnection",
                "metadata": {"cluster": "x", "clusterId": "abc"},
                "authMount": "../sys",
                "kubernetesHost": cluster.server,
                "kubernetesCaCert": cluster.ca_pem,
                "reviewer": {"mode": "client-jwt"},
            }
        )
    )
    run = _import(openbao, tmp_path, bad)
    assert run.code == 2
    assert "not a safe mount path" in run.stderr
