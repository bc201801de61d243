"""Pure parts of the runtime wrapper: configuration from the environment, parsing, the child
environment (stripping), value conversion, the token file. No server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtaser.errors import ConfigError, OperationError
from cloudtaser.wrapper import (
    DEFAULT_SA_TOKEN_PATH,
    WrapperConfig,
    _env_value,
    build_child_env,
    config_from_env,
    exec_command,
    read_sa_token,
)

BASE = {
    "VAULT_ADDR": "https://bao.internal:8200",
    "VAULT_AUTH_ROLE": "cloudtaser-prod-payments",
    "CLOUDTASER_SECRET_PATHS": "secret/data/payments/db,secret/data/shared/tls",
    "CLOUDTASER_ENV_MAP": "user=DB_USER,password=DB_PASSWORD;cert=TLS_CERT",
}


def test_defaults_follow_the_runtime_contract() -> None:
    config = config_from_env(BASE)
    assert config.auth_method == "kubernetes"
    assert config.auth_mount == "kubernetes"
    assert config.sa_token_path == DEFAULT_SA_TOKEN_PATH
    assert config.verify_tls is True
    assert config.mapping == (
        ("secret/data/payments/db", (("user", "DB_USER"), ("password", "DB_PASSWORD"))),
        ("secret/data/shared/tls", (("cert", "TLS_CERT"),)),
    )


def test_auth_mount_path_accepts_the_auth_prefix_or_not() -> None:
    assert config_from_env({**BASE, "VAULT_AUTH_MOUNT_PATH": "auth/k8s/eu"}).auth_mount == "k8s/eu"
    assert config_from_env({**BASE, "VAULT_AUTH_MOUNT_PATH": "k8s-eu"}).auth_mount == "k8s-eu"


@pytest.mark.parametrize("mount", ["auth/../sys", "auth/a b", "auth/", "auth/x/*"])
def test_unsafe_auth_mount_is_rejected(mount: str) -> None:
    with pytest.raises(ConfigError, match="VAULT_AUTH_MOUNT_PATH"):
        config_from_env({**BASE, "VAULT_AUTH_MOUNT_PATH": mount})


def test_token_method_needs_vault_token_and_hides_it_in_repr() -> None:
    with pytest.raises(ConfigError, match="VAULT_TOKEN"):
        config_from_env({**BASE, "VAULT_AUTH_METHOD": "token"})
    config = config_from_env({**BASE, "VAULT_AUTH_METHOD": "token", "VAULT_TOKEN": "s.abc123"})
    assert config.token == "s.abc123"
    assert "s.abc123" not in repr(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"VAULT_ADDR": ""}, "VAULT_ADDR is not set"),
        ({"VAULT_ADDR": "bao:8200"}, "not an http"),
        ({"VAULT_AUTH_ROLE": ""}, "VAULT_AUTH_ROLE"),
        ({"VAULT_AUTH_ROLE": "bad role"}, "VAULT_AUTH_ROLE"),
        ({"VAULT_AUTH_METHOD": "ldap"}, "kubernetes or token"),
        ({"CLOUDTASER_SECRET_PATHS": ""}, "CLOUDTASER_SECRET_PATHS is not set"),
        ({"CLOUDTASER_SECRET_PATHS": "secret/data/../x"}, "safe KV v2 path"),
        ({"CLOUDTASER_SECRET_PATHS": "secret/payments/db"}, "safe KV v2 path"),
        ({"CLOUDTASER_ENV_MAP": "user=DB_USER"}, "must match one to one"),
        ({"CLOUDTASER_ENV_MAP": "user=1BAD;cert=X"}, "environment variable"),
        ({"CLOUDTASER_ENV_MAP": "user;cert=X"}, "field=ENV_VAR"),
        ({"CLOUDTASER_ENV_MAP": "a=X,b=X;cert=Y"}, "fed twice"),
        ({"VAULT_SKIP_VERIFY": "maybe"}, "true or false"),
        ({"VAULT_CACERT": "/nonexistent/ca.pem"}, "does not exist"),
        ({"VAULT_AUTH_METHOD": "token", "VAULT_TOKEN": "s.тест"}, "non-ASCII"),
        ({"VAULT_NAMESPACE": "eu/тест"}, "not a valid namespace path"),
        ({"VAULT_NAMESPACE": "eu/../root"}, "not a valid namespace path"),
    ],
)
def test_bad_configuration_is_one_clear_error(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_env({**BASE, **change})


def test_skip_verify_and_namespace() -> None:
    config = config_from_env({**BASE, "VAULT_SKIP_VERIFY": "true", "VAULT_NAMESPACE": "/eu/"})
    assert config.verify_tls is False
    assert config.namespace == "eu"


def test_child_env_strips_cloudtaser_variables_and_vault_tokens() -> None:
    inherited = {
        **BASE,
        "VAULT_TOKEN": "s.operator",
        "BAO_TOKEN": "s.operator2",
        "CLOUDTASER_ORIGINAL_CMD": "docker-entrypoint.sh",
        "CLOUDTASER_SA_TOKEN_PATH": "/t",
        "PATH": "/usr/bin",
        "DB_USER": "from-the-pod-spec",
    }
    child = build_child_env(inherited, {"DB_USER": "vault-user", "DB_PASSWORD": "vault-pw"})
    assert not [k for k in child if k.startswith("CLOUDTASER_")]
    assert "VAULT_TOKEN" not in child
    assert "BAO_TOKEN" not in child
    assert child["PATH"] == "/usr/bin"
    assert child["VAULT_ADDR"] == BASE["VAULT_ADDR"]
    assert child["DB_USER"] == "vault-user"  # the vault wins
    assert child["DB_PASSWORD"] == "vault-pw"
    assert "VAULT_TOKEN" in inherited  # the input is not modified


@pytest.mark.parametrize(
    ("value", "expected"),
    [("s3cr3t", "s3cr3t"), (5432, "5432"), (True, "true"), ({"b": 1, "a": [2]}, '{"a":[2],"b":1}')],
)
def test_field_values_become_environment_strings(value: object, expected: str) -> None:
    assert _env_value(value, "field 'x' of secret/data/p") == expected


def test_null_or_nul_values_fail_closed_without_showing_the_value() -> None:
    with pytest.raises(OperationError, match="null") as info:
        _env_value(None, "field 'x' of secret/data/p")
    assert "secret/data/p" in str(info.value)
    with pytest.raises(OperationError, match="NUL") as info:
        _env_value("top\x00secret", "field 'x' of secret/data/p")
    assert "top" not in str(info.value)


def test_service_account_token_is_read_and_checked(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi.eyJzdWIiOi.c2ln\n")
    assert read_sa_token(str(token)) == "eyJhbGciOi.eyJzdWIiOi.c2ln"
    token.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        read_sa_token(str(token))
    with pytest.raises(ConfigError, match="cannot read the ServiceAccount token"):
        read_sa_token(str(tmp_path / "missing"))


def test_exec_without_a_command_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="no command"):
        exec_command([], {})


def test_wrapper_config_is_frozen() -> None:
    config = config_from_env(BASE)
    assert isinstance(config, WrapperConfig)
    with pytest.raises(AttributeError):
        config.role = "other"  # type: ignore[misc]
