"""Against the real kube-apiserver of the test bed:

- issue 28, finding 11: a kubeconfig whose only credential is an exec plugin returning a client
  certificate (``status.clientCertificateData`` / ``clientKeyData``, as Teleport's ``tsh``
  does) works for discover (sync client) and audit (async client); a broken plugin is one
  clear line and exit 2, with no traceback and no key material anywhere in the output.
- issue 34, deliverable 1: the seed's first command, ``cloudtaser target discover --kubeconfig
  ~/.kube/cluster-a -o plan-a.yaml``, writes a valid plan.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudtaser import plan as planlib
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import (
    ContainerSpec,
    create_namespace,
    create_secret,
    create_workload,
    delete_namespace,
    deployment,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXEC_V1 = "client.authentication.k8s.io/v1"


def _body(pem: str) -> list[str]:
    """The base64 lines of a PEM document: none of them may appear in any output."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def cloudtaser(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """The real CLI in a subprocess, without the developer's kube or vault settings."""
    base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
    base["NO_COLOR"] = "1"
    base.update(env or {})
    run = subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )
    assert "Traceback" not in run.stderr, run.stderr
    return run


@pytest.fixture
def app(cluster: Cluster, kube_client: Any) -> Iterator[str]:
    """A namespace with one Deployment that reads a Secret as env."""
    ns = create_namespace(kube_client)
    create_secret(kube_client, ns, "db", {"password": "not-a-real-password"})
    create_workload(
        kube_client,
        deployment("web", ns, containers=[ContainerSpec(secret_env={"PW": ("db", "password")})]),
    )
    yield ns
    delete_namespace(kube_client, ns)


def _plugin(tmp_path: Path, status: dict[str, str], *, exit_code: int = 0) -> Path:
    """An exec plugin (Python) printing ``status`` as an ExecCredential, leaving a mark that
    it ran. The status goes through a 0600 file so the test's own argv holds no key."""
    payload = tmp_path / "status.json"
    payload.write_text(json.dumps(status))
    payload.chmod(0o600)
    mark = tmp_path / "plugin-ran"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        f"pathlib.Path({str(mark)!r}).write_text(info['apiVersion'])\n"
        f"status = json.loads(pathlib.Path({str(payload)!r}).read_text())\n"
        f"print(json.dumps({{'apiVersion': {EXEC_V1!r}, 'kind': 'ExecCredential', "
        "'status': status}))\n"
        f"sys.exit({exit_code})\n"
    )
    plugin.chmod(0o700)
    return plugin


def _kubeconfig(cluster: Cluster, tmp_path: Path, plugin: Path) -> Path:
    """The cluster's server and CA; the user's only credential is the exec plugin."""
    ca = base64.b64encode(cluster.ca_pem.encode()).decode()
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: tsh\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {cluster.server}\n"
        f"    certificate-authority-data: {ca}\n"
        "contexts:\n- name: tsh\n  context: {cluster: c, user: tsh}\n"
        "users:\n- name: tsh\n  user:\n"
        f"    exec:\n      apiVersion: {EXEC_V1}\n      command: {plugin}\n"
        "      interactiveMode: Never\n"
    )
    path.chmod(0o600)
    return path


def _admin_pair(cluster: Cluster) -> tuple[str, str]:
    return cluster.pki.admin_cert.read_text(), cluster.pki.admin_key.read_text()


def _other_key() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def _self_signed(key_pem: str) -> str:
    """A certificate for ``key_pem`` that the cluster CA did not sign."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# -- finding 11: a plugin's client certificate is the TLS client certificate -------------------


def test_exec_plugin_client_certificate_works_for_discover_and_audit(
    cluster: Cluster, app: str, tmp_path: Path
) -> None:
    cert, key = _admin_pair(cluster)
    plugin = _plugin(tmp_path, {"clientCertificateData": cert, "clientKeyData": key})
    kubeconfig = _kubeconfig(cluster, tmp_path, plugin)
    # so the check can fail: the kubeconfig holds no credential of its own
    assert "token" not in kubeconfig.read_text()
    assert "client-key" not in kubeconfig.read_text()
    plan = tmp_path / "plan.yaml"

    run = cloudtaser(
        "target", "discover", "--kubeconfig", str(kubeconfig), "-n", app,
        "--output-plan", str(plan),
        cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert (tmp_path / "plugin-ran").read_text() == EXEC_V1
    assert [w.name for _t, w in planlib.load(plan).iter_workloads()] == ["web"]
    everything = run.stdout + run.stderr + plan.read_text()
    for line in _body(key):
        assert line not in everything
    # the key never reached a file: the test's own files are all there is
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kubeconfig",
        "plan.yaml",
        "plugin-ran",
        "plugin.py",
        "status.json",
    ]

    # audit reads through lightkube's async client: the certificate goes there too
    audit = cloudtaser(
        "target", "audit", "--kubeconfig", str(kubeconfig), "-n", app, "-o", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    assert "web" in audit.stdout
    for line in _body(key):
        assert line not in audit.stdout + audit.stderr


def test_a_certificate_the_cluster_does_not_trust_is_refused_by_the_server(
    cluster: Cluster, app: str, tmp_path: Path
) -> None:
    """The plugin's certificate is really what authenticates: a self-signed one (correct
    pair, unknown issuer) is sent and the API server refuses it (401: exit 3)."""
    key = _other_key()
    plugin = _plugin(tmp_path, {"clientCertificateData": _self_signed(key), "clientKeyData": key})
    kubeconfig = _kubeconfig(cluster, tmp_path, plugin)

    run = cloudtaser(
        "target", "discover", "--kubeconfig", str(kubeconfig), "-n", app,
        "--output-plan", "plan.yaml",
        cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 3, run.stderr
    assert "401" in run.stderr
    assert not (tmp_path / "plan.yaml").exists()
    for line in _body(key):
        assert line not in run.stdout + run.stderr


GARBAGE_CERT = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"

#: case -> (what the plugin returns from the admin (cert, key), the message expected)
BROKEN: dict[str, tuple[Any, str]] = {
    "cert-without-key": (lambda c, k: {"clientCertificateData": c}, "without status.clientKey"),
    "garbage-cert": (
        lambda c, k: {"clientCertificateData": GARBAGE_CERT, "clientKeyData": k},
        "clientCertificateData is not a PEM certificate",
    ),
    "garbage-key": (
        lambda c, k: {"clientCertificateData": c, "clientKeyData": k[:90] + k[-40:]},
        "clientKeyData is not a PEM private key",
    ),
    "key-of-another-cert": (
        lambda c, k: {"clientCertificateData": c, "clientKeyData": _other_key()},
        "is not the key of the certificate",
    ),
    "exits-1": (None, "failed (exit 1)"),
    "invalid-json": (None, "did not print an ExecCredential JSON document"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_exec_plugin_is_one_line_and_exit_2_without_key_material(
    cluster: Cluster, app: str, tmp_path: Path, case: str
) -> None:
    cert, admin_key = _admin_pair(cluster)
    key = admin_key
    make_status, expected = BROKEN[case]
    if case == "exits-1":
        status = {"clientCertificateData": cert, "clientKeyData": key}
        plugin = _plugin(tmp_path, status, exit_code=1)
    elif case == "invalid-json":
        plugin = tmp_path / "plugin.sh"  # half a document, with the key in it
        half = '{"status": {"clientKeyData": "' + key
        plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{half}\nEOF\n")
        plugin.chmod(0o700)
    else:
        status = make_status(cert, key)
        plugin = _plugin(tmp_path, status)
        key = status.get("clientKeyData", key)
    kubeconfig = _kubeconfig(cluster, tmp_path, plugin)

    run = cloudtaser(
        "target", "discover", "--kubeconfig", str(kubeconfig), "-n", app,
        "--output-plan", "plan.yaml",
        cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("cloudtaser: error: kubeconfig user 'tsh': exec plugin")
    assert expected in lines[0]
    assert run.stdout == ""
    assert not (tmp_path / "plan.yaml").exists()
    for line in _body(key) + _body(admin_key):
        assert line not in run.stderr


# -- issue 34: the seed's first command, verbatim ----------------------------------------------


def test_seed_discover_dash_o_writes_a_valid_plan(
    cluster: Cluster, app: str, tmp_path: Path
) -> None:
    """`cloudtaser target discover --kubeconfig ~/.kube/cluster-a -o plan-a.yaml`, with HOME
    holding the test cluster's kubeconfig as ~/.kube/cluster-a (the shell expands the ~)."""
    kube = tmp_path / ".kube"
    kube.mkdir()
    (kube / "cluster-a").write_text(cluster.kubeconfig.read_text())
    (kube / "cluster-a").chmod(0o600)
    argv = ["target", "discover", "--kubeconfig", "~/.kube/cluster-a", "-o", "plan-a.yaml"]
    argv = [str(tmp_path / w[2:]) if w.startswith("~/") else w for w in argv]

    run = cloudtaser(*argv, cwd=tmp_path, env={"HOME": str(tmp_path)})

    assert run.returncode == 0, run.stderr
    plan = planlib.load(tmp_path / "plan-a.yaml")
    found = {(t.namespace, w.name) for t, w in plan.iter_workloads()}
    assert (app, "web") in found
    assert not (tmp_path / "json").exists()
    assert "wrote plan-a.yaml" in run.stderr
