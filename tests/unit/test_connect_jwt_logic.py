"""jwt mode's pure parts: JWK -> PEM (RSA and EC), the mount config and record, the connection
file, and the role payloads apply-plan and connect write."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cloudtaser.changes import Action
from cloudtaser.cli import main
from cloudtaser.connect import (
    AuthMethod,
    ClusterConnection,
    ReviewerMode,
    jwk_public_pem,
    jwks_public_pems,
    plan_selection,
    read_connection_file,
    write_connection_file,
)
from cloudtaser.connect.model import ConnectOptions, _Record, key_algorithms
from cloudtaser.connect.vault import (
    _desired_jwt_config,
    _jwt_config_differences,
    _selftest_role_fields,
)
from cloudtaser.errors import ConfigError, PlanError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from cloudtaser.source.grants import build_grants
from cloudtaser.source.provision import role_action

UID = "0ad50c05-1111-2222-3333-444455556666"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _spki(key: Any) -> str:
    return str(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    )


def _rsa_jwk(key: rsa.RSAPrivateKey, kid: str = "r1") -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": _b64(numbers.n),
        "e": _b64(numbers.e),
    }


def _ec_jwk(key: ec.EllipticCurvePrivateKey, crv: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    pad = lambda v: base64.urlsafe_b64encode(v.to_bytes(size, "big")).rstrip(b"=").decode()  # noqa: E731
    return {"kty": "EC", "crv": crv, "kid": "e1", "x": pad(numbers.x), "y": pad(numbers.y)}


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_rsa_jwk_converts_to_the_same_public_key() -> None:
    assert jwk_public_pem(_rsa_jwk(RSA_KEY)) == _spki(RSA_KEY.public_key())


@pytest.mark.parametrize(
    ("crv", "curve", "alg"),
    [
        ("P-256", ec.SECP256R1(), "ES256"),
        ("P-384", ec.SECP384R1(), "ES384"),
        ("P-521", ec.SECP521R1(), "ES512"),
    ],
)
def test_ec_jwk_converts_and_names_its_algorithm(crv: str, curve: Any, alg: str) -> None:
    key = ec.generate_private_key(curve)
    pem = jwk_public_pem(_ec_jwk(key, crv))
    assert pem == _spki(key.public_key())
    assert key_algorithms([pem]) == [alg]


def test_a_rotation_jwks_yields_both_keys_sorted_and_deduplicated() -> None:
    jwks = {"keys": [_rsa_jwk(RSA_KEY_2, "b"), _rsa_jwk(RSA_KEY, "a"), _rsa_jwk(RSA_KEY, "a2")]}
    pems = jwks_public_pems(jwks)
    assert set(pems) == {_spki(RSA_KEY.public_key()), _spki(RSA_KEY_2.public_key())}
    assert list(pems) == sorted(pems)
    assert key_algorithms(pems) == ["RS256"]


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ({}, "holds no key"),
        ({"keys": []}, "holds no key"),
        ({"keys": [{"kty": "oct", "k": "AAAA"}]}, "unsupported key type"),
        ({"keys": [{"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"}]}, "unsupported curve"),
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"}]}, "not a valid"),
        ({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}, "base64url"),
        ({"keys": [{"kty": "RSA", "n": _b64(2**1023 + 1), "e": "AQAB"}]}, "too weak"),
        ({"keys": [_rsa_jwk(RSA_KEY) | {"use": "enc"}]}, "no signing key"),
    ],
)
def test_bad_jwks_are_refused(jwks: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        jwks_public_pems(jwks)


def _conn(keys: tuple[str, ...] = (), **over: Any) -> ClusterConnection:
    values: dict[str, Any] = {
        "cluster": "prod",
        "cluster_id": UID,
        "auth_mount": "jwt-prod",
        "kubernetes_host": "",
        "kubernetes_ca_pem": "",
        "reviewer_mode": ReviewerMode.NONE,
        "issuer": "https://kubernetes.default.svc.cluster.local",
        "auth_method": AuthMethod.JWT,
        "jwt_keys": keys or (_spki(RSA_KEY.public_key()),),
    }
    return ClusterConnection(**(values | over))


def test_the_jwt_config_holds_keys_issuer_and_algorithms_and_nothing_that_reaches_out() -> None:
    config = _desired_jwt_config(_conn())
    assert set(config) == {"jwt_validation_pubkeys", "bound_issuer", "jwt_supported_algs"}
    assert config["bound_issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert config["jwt_supported_algs"] == ["RS256"]


def test_jwt_config_comparison_counts_keys_and_sees_urls() -> None:
    one = _desired_jwt_config(_conn())
    two_keys = (_spki(RSA_KEY.public_key()), _spki(RSA_KEY_2.public_key()))
    both = _desired_jwt_config(_conn(tuple(sorted(two_keys))))
    assert _jwt_config_differences(None, one) == ["not configured"]
    # the vault's formatting aside (a trailing blank line), the same keys are the same
    echoed = dict(one) | {
        "jwt_validation_pubkeys": [k + "\n" for k in one["jwt_validation_pubkeys"]]
    }
    assert _jwt_config_differences(echoed, one) == []
    assert _jwt_config_differences(one, both) == ["keys: +1 -0"]
    assert _jwt_config_differences(both, one) == ["keys: +0 -1"]
    reaching = dict(one) | {"oidc_discovery_url": "https://x"}
    assert _jwt_config_differences(reaching, one) == ["oidc_discovery_url (removed)"]


def test_the_record_of_a_jwt_mount_names_the_cluster_and_round_trips() -> None:
    record = _Record(
        cluster="prod", cluster_id=UID, reviewer="none", expires=None, auth=AuthMethod.JWT
    )
    text = record.render()
    assert text == f"cloudtaser target connect; cluster=prod; cluster-id={UID}; auth=jwt"
    assert _Record.parse(text) == record
    kube = _Record.parse(
        f"cloudtaser target connect; cluster=p; cluster-id={UID}; reviewer=client-jwt"
    )
    assert kube is not None
    assert kube.auth is AuthMethod.KUBERNETES


def test_jwt_options_refuse_an_api_host() -> None:
    with pytest.raises(ConfigError, match="no use with --auth-method jwt"):
        ConnectOptions(auth_method=AuthMethod.JWT, kubernetes_host="https://10.0.0.1").validated()
    assert ConnectOptions(auth_method=AuthMethod.JWT).validated().reviewer_mode is ReviewerMode.NONE


def test_jwt_connection_file_holds_identity_issuer_and_keys_only(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    write_connection_file(path, _conn())
    doc = yaml.safe_load(path.read_text())
    assert set(doc) == {
        "apiVersion",
        "kind",
        "metadata",
        "authMount",
        "authMethod",
        "issuer",
        "jwtValidationPubkeys",
    }
    back = read_connection_file(path)
    assert back.auth_method is AuthMethod.JWT
    assert back.jwt_keys == _conn().jwt_keys
    assert back.kubernetes_host == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kubernetesHost": "https://10.0.0.1"}, "not allowed with authMethod jwt"),
        ({"jwtValidationPubkeys": ["not a key"]}, "not a PEM public key"),
        ({"issuer": None}, "needs issuer"),
    ],
)
def test_tampered_jwt_connection_files_are_refused(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "c.yaml"
    write_connection_file(path, _conn())
    doc = yaml.safe_load(path.read_text()) | change
    path.write_text(yaml.safe_dump({k: v for k, v in doc.items() if v is not None}))
    with pytest.raises(ConfigError, match=message):
        read_connection_file(path)


def _plan(method: str | None) -> MigrationPlan:
    workloads = [
        Workload(
            kind="Deployment",
            name=n,
            service_account=sa,
            secrets=[SecretRef(source="s", vault_path="secret/data/pay/db", fields={"pw": "PW"})],
        )
        for n, sa in (("api", "api"), ("worker", None))
    ]
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="prod", auth_mount="jwt-prod", auth_method=method),
        tenants=[Tenant(name="pay", namespace="pay", workloads=workloads)],
    )


def test_a_jwt_plan_yields_jwt_roles_bound_by_claims_and_audience() -> None:
    grants, _ = build_grants(_plan("jwt"), audience="openbao", token_ttl=600)
    assert grants[0].role_fields() == {
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": ["openbao"],
        "bound_claims_type": "string",
        "bound_claims": {
            "/kubernetes.io/namespace": "pay",
            "/kubernetes.io/serviceaccount/name": ["api", "default"],
        },
        "token_policies": ["cloudtaser-prod-pay"],
        "token_ttl": 600,
    }
    kube, _ = build_grants(_plan(None), audience="openbao")
    assert "bound_service_account_names" in kube[0].role_fields()


def test_a_jwt_plan_needs_an_audience() -> None:
    with pytest.raises(PlanError, match="--audience"):
        build_grants(_plan("jwt"))


def test_jwt_role_diff_is_unchanged_for_the_vaults_echo_and_sees_a_new_account() -> None:
    grant = build_grants(_plan("jwt"), audience="openbao")[0][0]
    echoed = grant.role_fields() | {
        "bound_claims": {
            "/kubernetes.io/serviceaccount/name": ["default", "api"],
            "/kubernetes.io/namespace": "pay",
        },
        "bound_subject": "",
        "token_type": "default",
    }
    assert role_action(grant, echoed) == (Action.UNCHANGED, "")
    fewer = echoed | {
        "bound_claims": {
            "/kubernetes.io/namespace": "pay",
            "/kubernetes.io/serviceaccount/name": ["api"],
        }
    }
    assert role_action(grant, fewer) == (Action.UPDATE, "bound_claims")
    other_aud = echoed | {"bound_audiences": ["vault"]}
    assert role_action(grant, other_aud) == (Action.UPDATE, "bound_audiences")


def test_the_jwt_selftest_role_binds_only_the_selftest_account() -> None:
    fields = _selftest_role_fields(_conn(), "cloudtaser-system")
    assert fields["bound_claims"] == {
        "/kubernetes.io/namespace": "cloudtaser-system",
        "/kubernetes.io/serviceaccount/name": ["cloudtaser-connect-selftest"],
    }
    assert fields["bound_audiences"] == ["cloudtaser-connect-selftest"]
    assert fields["token_policies"] == []
    assert fields["token_no_default_policy"] is True


def test_connect_and_the_plan_must_agree_on_the_method() -> None:
    plan = _plan("jwt")
    assert plan_selection(plan, None, AuthMethod.JWT)[0] == "jwt-prod"
    with pytest.raises(ConfigError, match=r"metadata\.authMethod"):
        plan_selection(plan, None, AuthMethod.KUBERNETES)


@pytest.mark.parametrize(
    "flag", ["--no-reviewer-token", "--rotate-reviewer-token", "--include-reviewer-token"]
)
def test_reviewer_flags_are_refused_in_jwt_mode_before_any_request(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--export", str(tmp_path / "c.yaml")] if flag == "--include-reviewer-token" else []
    code = main(
        ["target", "connect", "--kubeconfig", str(tmp_path / "none"), "--auth-method", "jwt",
         flag, *extra]
    )  # fmt: skip
    assert code == 2
    assert "jwt auth has no token reviewer" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()
