"""Issue 28, finding 11: kubeconfig exec plugins that return a client certificate
(``status.clientCertificateData`` / ``status.clientKeyData``, as Teleport's ``tsh`` does).

The ExecCredential is checked as client-go checks it, every refusal names the field and never
its content, and the key reaches ``ssl`` only through a file nobody else can read, gone right
after loading. The real handshake with a kube-apiserver is in
tests/integration/test_kube_exec_plugin.py.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudtaser.config import ClusterTarget
from cloudtaser.errors import ConfigError
from cloudtaser.target.kube import session as kube
from cloudtaser.target.kube.session import ExecCredential, connect, parse_exec_credential

WHERE = "kubeconfig user 'u': exec plugin"


def _pair(cn: str = "alice") -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
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
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


CERT, KEY = _pair()
OTHER_CERT, OTHER_KEY = _pair("mallory")
#: The body of the private key: no message may contain any line of it.
KEY_BODY = [line for line in KEY.splitlines() if not line.startswith("-----")]


def _doc(**status: object) -> bytes:
    return json.dumps(
        {
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": status,
        }
    ).encode()


def _refused(output: bytes) -> str:
    with pytest.raises(ConfigError) as info:
        parse_exec_credential(output, where=WHERE)
    message = str(info.value)
    assert "\n" not in message
    for line in KEY_BODY:
        assert line not in message
    return message


def test_a_certificate_and_its_key_are_a_credential() -> None:
    credential = parse_exec_credential(
        _doc(
            clientCertificateData=CERT,
            clientKeyData=KEY,
            expirationTimestamp="2030-01-01T00:00:00Z",
        ),
        where=WHERE,
    )
    assert credential.has_certificate
    assert credential.client_certificate_pem == CERT
    assert credential.client_key_pem == KEY
    assert credential.token is None
    assert KEY_BODY[0] not in repr(credential)


def test_a_token_and_a_certificate_together_are_both_kept() -> None:
    credential = parse_exec_credential(
        _doc(token=" tok-123\n", clientCertificateData=CERT, clientKeyData=KEY), where=WHERE
    )
    assert credential.token == "tok-123"
    assert credential.has_certificate
    assert "tok-123" not in repr(credential)


def test_a_token_alone_still_works() -> None:
    assert parse_exec_credential(_doc(token="abc"), where=WHERE) == ExecCredential(token="abc")


def test_a_certificate_chain_with_an_intermediate_is_accepted() -> None:
    """clientCertificateData may carry intermediates after the client's own certificate."""
    credential = parse_exec_credential(
        _doc(clientCertificateData=CERT + OTHER_CERT, clientKeyData=KEY), where=WHERE
    )
    assert credential.client_certificate_pem == CERT + OTHER_CERT


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (b"not json", "did not print an ExecCredential JSON document"),
        (b"[1, 2]", "without status"),
        (_doc(), "no status.token and no client certificate"),
        (_doc(clientCertificateData=CERT), "clientCertificateData without status.clientKeyData"),
        (_doc(clientKeyData=KEY), "clientKeyData without status.clientCertificateData"),
        (
            _doc(token="t", clientKeyData=KEY),
            "clientKeyData without status.clientCertificateData",
        ),
        (_doc(clientCertificateData=5, clientKeyData=KEY), "clientCertificateData is not a str"),
        (
            _doc(clientCertificateData="garbage", clientKeyData=KEY),
            "clientCertificateData is not a PEM certificate",
        ),
        (
            _doc(clientCertificateData=CERT, clientKeyData="garbage"),
            "clientKeyData is not a PEM private key",
        ),
        (
            _doc(clientCertificateData=CERT, clientKeyData=KEY[:120] + "\n" + KEY[-30:]),
            "clientKeyData is not a PEM private key",
        ),
        (
            _doc(clientCertificateData=CERT, clientKeyData=OTHER_KEY),
            "is not the key of the certificate",
        ),
        (
            _doc(clientCertificateData=KEY, clientKeyData=CERT),
            "clientCertificateData is not a PEM certificate",
        ),
        (_doc(token="a b"), "not a header value"),
    ],
    ids=[
        "not-json",
        "no-status",
        "empty-status",
        "cert-without-key",
        "key-without-cert",
        "token-and-key-only",
        "cert-not-a-string",
        "garbage-cert",
        "garbage-key",
        "truncated-key",
        "key-of-another-cert",
        "swapped",
        "token-with-space",
    ],
)
def test_a_broken_exec_credential_is_one_clear_message(output: bytes, expected: str) -> None:
    message = _refused(output)
    assert message.startswith(WHERE)
    assert expected in message


def test_an_encrypted_key_is_refused_without_a_password_prompt() -> None:
    key = serialization.load_pem_private_key(KEY.encode(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    message = _refused(_doc(clientCertificateData=CERT, clientKeyData=encrypted))
    assert "encrypted private key" in message


# -- the key on its way to ssl ------------------------------------------------------------------


def test_the_key_goes_to_ssl_through_an_in_memory_file_closed_after_loading() -> None:
    if not hasattr(os, "memfd_create") or not Path("/proc/self/fd").is_dir():
        pytest.skip("no memfd_create here; the fallback is tested below")
    fd_dir = Path("/proc/self/fd")
    before = {p.name for p in fd_dir.iterdir()}
    with kube._private_files((CERT.encode(), KEY.encode())) as paths:
        assert all(p.startswith("/proc/self/fd/") for p in paths)
        assert [Path(p).read_text() for p in paths] == [CERT, KEY]
        # an anonymous memory file: no name anywhere in the file system
        assert str(Path(paths[1]).readlink()).startswith("/memfd:")
    assert {p.name for p in fd_dir.iterdir()} <= before


def test_without_memfd_the_key_file_is_0600_in_a_0700_dir_removed_after_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delattr(os, "memfd_create")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with kube._private_files((CERT.encode(), KEY.encode())) as paths:
        key_path = Path(paths[1])
        assert key_path.parent.parent == tmp_path
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
        assert key_path.read_text() == KEY
    assert list(tmp_path.iterdir()) == []


# -- connect() with such a plugin ---------------------------------------------------------------


def _kubeconfig(tmp_path: Path, status: dict[str, str], user_extra: str = "") -> Path:
    payload = tmp_path / "credential.json"
    payload.write_text(
        json.dumps(
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": status,
            }
        )
    )
    payload.chmod(0o600)
    plugin = tmp_path / "plugin.sh"
    plugin.write_text(f"#!/bin/sh\ncat {payload}\n")
    plugin.chmod(0o700)
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', "
        "insecure-skip-tls-verify: true}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users:\n- name: u\n  user:\n"
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n"
        f"      command: {plugin}\n{user_extra}"
    )
    return path


def test_connect_puts_the_plugins_certificate_into_every_client(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path, {"clientCertificateData": CERT, "clientKeyData": KEY})
    with connect(ClusterTarget(kubeconfig=(str(kubeconfig),))) as session:
        assert session.tls is not None
        assert KEY_BODY[0] not in repr(session)
        client = session.async_client()
        assert client is not None
    # nothing of the credential was left on disk next to the kubeconfig
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "credential.json",
        "kubeconfig",
        "plugin.sh",
    ]


def test_a_plugin_certificate_and_a_static_one_are_refused(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(
        tmp_path,
        {"clientCertificateData": CERT, "clientKeyData": KEY},
        user_extra="    client-certificate: /nonexistent.crt\n",
    )
    with pytest.raises(ConfigError, match="keep one of the two"):
        connect(ClusterTarget(kubeconfig=(str(kubeconfig),)))


def test_a_failing_plugin_that_prints_its_key_on_stderr_does_not_show_it(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.sh"
    plugin.write_text(f"#!/bin/sh\necho 'cannot log in:' >&2\ncat >&2 <<'EOF'\n{KEY}EOF\nexit 1\n")
    plugin.chmod(0o700)
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users:\n- name: u\n  user:\n"
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n"
        f"      command: {plugin}\n"
    )
    with pytest.raises(ConfigError) as info:
        connect(ClusterTarget(kubeconfig=(str(path),)))
    message = str(info.value)
    assert "failed (exit 1): cannot log in:" in message
    for line in KEY_BODY:
        assert line not in message
