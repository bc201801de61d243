"""The runtime contract (cloudtaser.contract): values, formats, env precedence, child env."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtaser import contract
from cloudtaser.contract import ContractError

CANARY = "canary-secret-value-5f1e"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " yes ", "On", "\ttrue\n"])
def test_true_values(value: str) -> None:
    assert contract.parse_bool("VAULT_SKIP_VERIFY", value) is True


@pytest.mark.parametrize("value", [None, "", "  ", "0", "false", "No", " OFF "])
def test_false_values_and_unset(value: str | None) -> None:
    assert contract.parse_bool("VAULT_SKIP_VERIFY", value) is False


@pytest.mark.parametrize("value", ["t", "y", "2", "maybe", "truee", "enabled", "1.0"])
def test_unknown_boolean_is_an_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ContractError, match="VAULT_SKIP_VERIFY") as info:
        contract.parse_bool("VAULT_SKIP_VERIFY", value)
    assert info.value.code == "bad-bool"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("30", 30.0),
        (" 45 ", 45.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("1h2m3s4ms", 3723.004),
        ("+5s", 5.0),
        ("250us", 0.00025),
        ("0s", 0.0),
    ],
)
def test_go_durations_and_bare_seconds(text: str, seconds: float) -> None:
    assert contract.parse_duration("CLOUDTASER_TIMEOUT", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1", "-5s", "5d", "1h 30m", "s", "h1", "1.2.3s", "abc", "٣"])
def test_bad_durations_are_errors_naming_the_variable(text: str) -> None:
    with pytest.raises(ContractError, match="CLOUDTASER_TIMEOUT") as info:
        contract.parse_duration("CLOUDTASER_TIMEOUT", text)
    assert info.value.code == "bad-duration"


def test_vault_env_first_bao_env_as_fallback() -> None:
    env = {"VAULT_ADDR": "https://v", "BAO_ADDR": "https://b", "BAO_TOKEN": "t"}
    assert contract.vault_env(env, "ADDR") == "https://v"
    assert contract.vault_env(env, "TOKEN") == "t"
    assert contract.vault_env({"VAULT_ADDR": "", "BAO_ADDR": "https://b"}, "ADDR") == "https://b"
    assert contract.vault_env({}, "ADDR") is None


def test_mapping_round_trips_in_order() -> None:
    paths = ["secret/data/a/db", "kv/data/b"]
    groups = [{"user": "DB_USER", "password": "DB_PASS"}, {"key": "API_KEY"}]
    secret_paths = contract.format_secret_paths(paths)
    env_map = contract.format_env_map(groups)
    assert secret_paths == "secret/data/a/db,kv/data/b"
    assert env_map == "user=DB_USER,password=DB_PASS;key=API_KEY"
    assert contract.parse_mapping(secret_paths, env_map) == list(zip(paths, groups, strict=True))
    assert contract.parse_mapping(" secret/data/a/db , kv/data/b ", " user = U ; key=K") == [
        ("secret/data/a/db", {"user": "U"}),
        ("kv/data/b", {"key": "K"}),
    ]


@pytest.mark.parametrize(
    ("secret_paths", "env_map", "code"),
    [
        ("secret/data/../x", "a=A", "unsafe-path"),
        ("sys/data/x", "a=A", "unsafe-path"),
        ("SYS/data/x", "a=A", "unsafe-path"),
        ("secret/data/*", "a=A", "unsafe-path"),
        ("secret/x", "a=A", "unsafe-path"),
        ("secret/data/" + "x" * 129, "a=A", "unsafe-path"),
        ("secret/data/x", "a=A$B", "bad-env-name"),
        ("secret/data/x", "a=A\tB", "bad-env-name"),
        ("secret/data/x", "..=A", "bad-field"),
        ("secret/data/x", "a", "bad-pair"),
        ("secret/data/x", "a=A,a=B", "duplicate-field"),
        ("secret/data/x,secret/data/y", "a=A;b=A", "duplicate-env"),
        ("secret/data/x,secret/data/y", "a=A", "mapping-mismatch"),
        ("secret/data/x", "a=A;b=B", "mapping-mismatch"),
    ],
)
def test_every_refusal_has_a_stable_code(secret_paths: str, env_map: str, code: str) -> None:
    with pytest.raises(ContractError) as info:
        contract.parse_mapping(secret_paths, env_map)
    assert info.value.code == code


def test_format_refuses_what_parse_refuses() -> None:
    with pytest.raises(ContractError) as info:
        contract.format_env_map([{"a": "X"}, {"b": "X"}])
    assert info.value.code == "duplicate-env"
    with pytest.raises(ContractError) as info:
        contract.format_env_map([{}])
    assert info.value.code == "empty-group"
    with pytest.raises(ContractError) as info:
        contract.format_secret_paths(["cubbyhole/data/x"])
    assert info.value.code == "unsafe-path"


@pytest.mark.parametrize(
    ("value", "mount"),
    [("auth/kubernetes", "kubernetes"), ("/auth/k8s/eu/", "k8s/eu"), ("k8s", "k8s")],
)
def test_auth_path(value: str, mount: str) -> None:
    assert contract.parse_auth_path(value) == mount
    assert contract.parse_auth_path(contract.format_auth_path(mount)) == mount


@pytest.mark.parametrize("value", ["auth/sys", "auth/Token", "auth/../x", "auth/", "auth/a b"])
def test_bad_auth_paths(value: str) -> None:
    with pytest.raises(ContractError) as info:
        contract.parse_auth_path(value)
    assert info.value.code == "bad-auth-mount"


def test_child_env_drops_cloudtaser_and_tokens_and_adds_secrets() -> None:
    parent = {
        "PATH": "/bin",
        "VAULT_TOKEN": CANARY,
        "BAO_TOKEN": CANARY,
        "CLOUDTASER_ENV_MAP": "a=A",
        "CLOUDTASER_SECRET_PATHS": "secret/data/x",
        "DB_PASS": "inherited",
        "VAULT_ADDR": "https://v",
    }
    child = contract.build_child_env(parent, {"DB_PASS": CANARY})
    assert child == {"PATH": "/bin", "DB_PASS": CANARY, "VAULT_ADDR": "https://v"}
    assert parent["DB_PASS"] == "inherited"  # the parent mapping is not modified


def test_refusal_messages_never_carry_a_value() -> None:
    with pytest.raises(ContractError) as info:
        contract.build_child_env({}, {f"BAD,{CANARY}": "value-" + CANARY})
    assert "value-" + CANARY not in str(info.value)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9_]{0,10}/data/[a-z0-9_-][a-z0-9._-]{0,19}", fullmatch=True),
            st.dictionaries(
                st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,10}", fullmatch=True),
                st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
                min_size=1,
                max_size=4,
            ),
        ),
        max_size=5,
    )
)
def test_format_then_parse_is_identity(pairs: list[tuple[str, dict[str, str]]]) -> None:
    envs = [env for _path, group in pairs for env in group.values()]
    reserved = any(path.split("/")[0] in contract.rules.RESERVED_MOUNTS for path, _ in pairs)
    if len(envs) != len(set(envs)) or reserved:
        return
    secret_paths = contract.format_secret_paths([p for p, _ in pairs])
    env_map = contract.format_env_map([g for _, g in pairs])
    assert contract.parse_mapping(secret_paths, env_map) == pairs


def test_contract_imports_only_the_standard_library() -> None:
    code = (
        "import sys, cloudtaser.contract; "
        "heavy = {'msgspec', 'yaml', 'yaml_rs', 'requests', 'lightkube', 'httpx'}"
        " & set(sys.modules);"
        "mods = sorted(m for m in sys.modules if m.startswith('cloudtaser'));"
        "print(sorted(heavy), mods)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("[] "), out
    assert "cloudtaser.plan.model" not in out
