"""Pure consumption logic of discover: how a pod template (API dict form) consumes Secrets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from cloudtaser.target.podspec import (
    consumed_env,
    env_consumptions,
    kv2_path,
    secret_files,
    vault_agent_paths,
)

KEYS: dict[str, list[str]] = {
    "db": ["password", "username"],
    "api": ["token", "tls.crt"],
    "empty": [],
}


def keys_of(name: str) -> Sequence[str] | None:
    return KEYS.get(name)


def template(
    containers: list[dict[str, Any]],
    *,
    init: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init is not None:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = volumes
    return {"metadata": {"annotations": annotations or {}}, "spec": spec}


def secret_env(env: str, secret: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, **extra}}}


def test_consumed_env_secret_key_ref_maps_key_to_env_name() -> None:
    tpl = template([{"name": "app", "env": [secret_env("DB_PASS", "db", "password")]}])
    assert consumed_env(tpl, keys_of) == {("db", "password", "DB_PASS")}


def test_consumed_env_ignores_plain_values_and_configmaps() -> None:
    tpl = template(
        [
            {
                "name": "app",
                "env": [
                    {"name": "PLAIN", "value": "x"},
                    {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                    {"name": "FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "c"}}],
            }
        ]
    )
    assert consumed_env(tpl, keys_of) == set()


def test_consumed_env_env_from_maps_every_key_with_and_without_prefix() -> None:
    tpl = template(
        [
            {
                "name": "app",
                "envFrom": [
                    {"secretRef": {"name": "db"}},
                    {"secretRef": {"name": "db"}, "prefix": "PG_"},
                ],
            }
        ]
    )
    assert consumed_env(tpl, keys_of) == {
        ("db", "password", "password"),
        ("db", "username", "username"),
        ("db", "password", "PG_password"),
        ("db", "username", "PG_username"),
    }


def test_consumed_env_env_from_skips_keys_that_are_not_env_names() -> None:
    tpl = template([{"name": "app", "envFrom": [{"secretRef": {"name": "api"}}]}])
    assert consumed_env(tpl, keys_of) == {("api", "token", "token")}
    problems = [c for c in env_consumptions(tpl, keys_of) if not c.usable]
    assert [(c.key, c.env) for c in problems] == [("tls.crt", "tls.crt")]


def test_consumed_env_missing_secret_in_env_from_contributes_nothing() -> None:
    tpl = template(
        [{"name": "app", "envFrom": [{"secretRef": {"name": "gone", "optional": True}}]}]
    )
    assert consumed_env(tpl, keys_of) == set()


def test_consumed_env_secret_key_ref_does_not_need_the_secret() -> None:
    tpl = template([{"name": "app", "env": [secret_env("X", "gone", "k", optional=True)]}])
    assert consumed_env(tpl, lambda _name: None) == {("gone", "k", "X")}
    (item,) = env_consumptions(tpl, lambda _name: None)
    assert item.optional
    assert item.via == "env"


def test_consumed_env_covers_init_containers_and_several_containers() -> None:
    tpl = template(
        [
            {"name": "a", "env": [secret_env("A", "db", "username")]},
            {"name": "b", "envFrom": [{"secretRef": {"name": "api"}, "prefix": "API_"}]},
        ],
        init=[{"name": "migrate", "env": [secret_env("MIGRATE_PASS", "db", "password")]}],
    )
    assert consumed_env(tpl, keys_of) == {
        ("db", "username", "A"),
        ("api", "token", "API_token"),
        ("db", "password", "MIGRATE_PASS"),
    }
    init_items = [c for c in env_consumptions(tpl, keys_of) if c.init]
    assert [c.container for c in init_items] == ["migrate"]


def test_consumed_env_keeps_both_feeders_of_one_env_var() -> None:
    tpl = template(
        [
            {"name": "a", "env": [secret_env("PASS", "db", "password")]},
            {"name": "b", "env": [secret_env("PASS", "api", "token")]},
        ]
    )
    assert consumed_env(tpl, keys_of) == {("db", "password", "PASS"), ("api", "token", "PASS")}


def test_consumed_env_drops_invalid_secret_names() -> None:
    tpl = template(
        [{"name": "a", "env": [secret_env("X", "Bad_Name", "k"), secret_env("Y", "", "k")]}]
    )
    assert consumed_env(tpl, keys_of) == set()
    assert all(not c.usable for c in env_consumptions(tpl, keys_of))


def test_consumed_env_tolerates_sparse_templates() -> None:
    assert consumed_env({}, keys_of) == set()
    assert consumed_env({"spec": {"containers": None}}, keys_of) == set()
    assert consumed_env({"spec": {"containers": [{"name": "a", "env": None}]}}, keys_of) == set()


def test_consumed_env_does_not_call_lookup_for_invalid_names() -> None:
    calls: list[str] = []

    def spy(name: str) -> Sequence[str] | None:
        calls.append(name)
        return None

    tpl = template(
        [{"name": "a", "envFrom": [{"secretRef": {"name": "../x"}}, {"secretRef": {"name": "ok"}}]}]
    )
    consumed_env(tpl, spy)
    assert calls == ["ok"]


def test_secret_files_records_secret_and_projected_volumes_with_mount_paths() -> None:
    tpl = template(
        [
            {"name": "app", "volumeMounts": [{"name": "certs", "mountPath": "/certs"}]},
            {"name": "side", "volumeMounts": [{"name": "bundle", "mountPath": "/etc/bundle"}]},
        ],
        init=[{"name": "init", "volumeMounts": [{"name": "certs", "mountPath": "/init-certs"}]}],
        volumes=[
            {"name": "certs", "secret": {"secretName": "tls"}},
            {
                "name": "bundle",
                "projected": {
                    "sources": [
                        {"secret": {"name": "one"}},
                        {"configMap": {"name": "cm"}},
                        {"serviceAccountToken": {"path": "t"}},
                        {"secret": {"name": "two", "optional": True}},
                    ]
                },
            },
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    files = secret_files(tpl)
    # pod spec volume order, then source order
    assert [(f.secret, f.volume, f.mount_paths, f.optional) for f in files] == [
        ("tls", "certs", ("app:/certs", "init:/init-certs"), False),
        ("one", "bundle", ("side:/etc/bundle",), False),
        ("two", "bundle", ("side:/etc/bundle",), True),
    ]
    mixed = ("configMap", "serviceAccountToken")
    assert [f.mixed_with for f in files] == [(), mixed, mixed]
    assert [(m.container, m.init) for m in files[0].mounts] == [("init", True), ("app", False)]


def test_vault_agent_paths_reads_only_inject_secret_annotations() -> None:
    tpl = template(
        [{"name": "a"}],
        annotations={
            "vault.hashicorp.com/agent-inject": "true",
            "vault.hashicorp.com/role": "web",
            "vault.hashicorp.com/agent-inject-secret-db": "secret/data/web/db",
            "vault.hashicorp.com/agent-inject-template-db": "{{ with secret ... }}",
            "vault.hashicorp.com/agent-inject-secret-api.json": "kv/web/api",
        },
    )
    assert [(a.name, a.path) for a in vault_agent_paths(tpl)] == [
        ("api.json", "kv/web/api"),
        ("db", "secret/data/web/db"),
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("secret/data/web/db", "secret/data/web/db"),
        ("/secret/data/web/db/", "secret/data/web/db"),
        ("kv/web/api", "kv/data/web/api"),
    ],
)
def test_kv2_path_keeps_or_converts(path: str, expected: str) -> None:
    assert kv2_path(path)[0] == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "secret",
        "secret/../sys/policy",
        "secret/data/*",
        'secret/data/a"b',
        "secret/data/a\nb",
        "a//b",
    ],
)
def test_kv2_path_refuses_unsafe_paths(path: str) -> None:
    converted, problem = kv2_path(path)
    assert converted is None
    assert problem
