"""Configuration resolution: flag > environment > default, validated before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtaser.config import resolve_cluster_target, resolve_vault_target
from cloudtaser.errors import ConfigError

TOKEN = "s.canary-token-1234"


def test_flag_beats_vault_env_beats_bao_env(tmp_path: Path) -> None:
    env = {"BAO_ADDR": "https://bao.example:8200", "VAULT_ADDR": "https://vault.example:8200"}
    env |= {"BAO_TOKEN": "s.bao", "VAULT_TOKEN": "s.vault", "BAO_NAMESPACE": "eu"}
    assert resolve_vault_target(environ=env).address == "https://vault.example:8200"
    assert resolve_vault_target(environ=env).token == "s.vault"
    assert resolve_vault_target(environ=env).namespace == "eu"  # BAO_* is the fallback
    only_bao = {"BAO_ADDR": "https://bao.example:8200", "BAO_TOKEN": "s.bao"}
    assert resolve_vault_target(environ=only_bao).address == "https://bao.example:8200"
    assert resolve_vault_target(environ={**only_bao, "VAULT_ADDR": ""}).token == "s.bao"
    flagged = resolve_vault_target(address="https://flag.example/", token=TOKEN, environ=env)
    assert (flagged.address, flagged.token) == ("https://flag.example", TOKEN)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert resolve_vault_target(token_file=str(token_file), environ=env).token == TOKEN


def test_tls_verification_is_on_unless_explicitly_disabled() -> None:
    env = {"VAULT_ADDR": "https://vault.example", "VAULT_TOKEN": TOKEN}
    assert resolve_vault_target(environ=env).verify_tls is True
    assert resolve_vault_target(environ={**env, "VAULT_SKIP_VERIFY": "true"}).tls_insecure
    assert resolve_vault_target(skip_verify=True, environ=env).verify_tls is False


@pytest.mark.parametrize("value", ["maybe", "t", "y", "2", "enable"])
def test_unknown_skip_verify_value_is_an_error_naming_the_variable(value: str) -> None:
    env = {"VAULT_ADDR": "https://vault.example", "VAULT_TOKEN": TOKEN}
    with pytest.raises(ConfigError, match="VAULT_SKIP_VERIFY"):
        resolve_vault_target(environ={**env, "VAULT_SKIP_VERIFY": value})
    with pytest.raises(ConfigError, match="BAO_SKIP_VERIFY"):
        resolve_vault_target(environ={**env, "BAO_SKIP_VERIFY": value})


@pytest.mark.parametrize(("value", "verify"), [(" TRUE ", False), ("off", True), ("", True)])
def test_skip_verify_booleans_follow_the_contract(value: str, verify: bool) -> None:
    env = {"VAULT_ADDR": "https://vault.example", "VAULT_TOKEN": TOKEN}
    assert resolve_vault_target(environ={**env, "VAULT_SKIP_VERIFY": value}).verify_tls is verify
    # VAULT_* first: an explicit VAULT_SKIP_VERIFY=false wins over BAO_SKIP_VERIFY=true
    both = {**env, "VAULT_SKIP_VERIFY": "false", "BAO_SKIP_VERIFY": "true"}
    assert resolve_vault_target(environ=both).verify_tls is True


def test_token_never_appears_in_repr() -> None:
    target = resolve_vault_target(address="https://v.example", token=TOKEN, environ={})
    assert TOKEN not in repr(target)
    assert TOKEN not in str(target)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no vault address"),
        ({"address": "vault.example:8200"}, "not an http"),
        ({"address": "https://v.example", "token": None}, "no vault token"),
        ({"address": "https://v.example", "token": "s.тест"}, "non-ASCII"),
        ({"address": "https://v.example", "token": "s.a b"}, "blanks"),
        ({"address": "https://v.example", "token": TOKEN, "namespace": "eu/тест"}, "namespace"),
        ({"address": "https://v.example", "token": TOKEN, "namespace": "eu/../x"}, "namespace"),
        ({"address": "https://v.example", "token": TOKEN, "ca_cert": "/nope.pem"}, "CA bundle"),
        ({"address": "https://v.example", "token_file": "/nonexistent/token"}, "token-file"),
    ],
)
def test_bad_vault_configuration_is_one_clear_error(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_vault_target(environ={}, **kwargs)


@pytest.mark.parametrize(
    "address", ["htps://user:pa55word@vault.example", "https://user:pa55word@vault.example"]
)
def test_credentials_in_the_address_are_refused_without_echoing_them(address: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_vault_target(address=address, token=TOKEN, environ={})
    assert "pa55word" not in str(info.value)


def test_kubeconfig_flag_then_kubeconfig_path_list(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("{}")
    b.write_text("{}")
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{a}:{b}", "HOME": str(tmp_path)}
    assert resolve_cluster_target(environ=env).kubeconfig == (str(a), str(b))
    assert resolve_cluster_target(kubeconfig=str(b), environ=env).kubeconfig == (str(b),)
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        resolve_cluster_target(environ={"HOME": str(tmp_path)})
