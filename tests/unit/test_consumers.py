"""The consumer rules of ``cloudtaser.target.consumers`` (one test per rule, each with the case
that must not count), and what finalize keeps because of them (issue 28, findings 6 and 9)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudtaser.plan import EnvUse, SecretRef, Workload
from cloudtaser.target.consumers import (
    INIT_REASON,
    consumers,
    env_uses,
    expansion_names,
    keep_reasons,
    names_word,
    script_words,
)
from cloudtaser.target.engine.secret_refs import finalize_edit
from cloudtaser.target.podspec import env_consumptions

MIGRATED = {("app", False): {"DB_PASSWORD", "DB_USER"}}


def _secret_env(name: str, key: str, secret: str = "db") -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _template(**app: Any) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "busybox",
        "env": [_secret_env("DB_PASSWORD", "password"), _secret_env("DB_USER", "username")],
    }
    for key, value in app.items():
        if key == "env":
            container["env"] = [*container["env"], *value]
        else:
            container[key] = value
    return {"spec": {"containers": [container]}}


def _exec(*command: str) -> dict[str, Any]:
    return {"exec": {"command": list(command)}}


def _found(template: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(c.env, c.where, c.target, c.script) for c in consumers(template, MIGRATED)}


# -- $(VAR): the kubelet's expansion -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("$(A)", ["A"]),
        ("--password=$(DB_PASSWORD) --user $(DB_USER)", ["DB_PASSWORD", "DB_USER"]),
        ("$$(A)", []),  # escaped: the kubelet yields the literal "$(A)"
        ("$$$(A)", ["A"]),  # an escaped "$", then a reference
        ("$$$$(A)", []),
        ("$(A", []),  # unclosed: literal
        ("$A ${A}", []),  # shell syntax is not the kubelet's
        ("$", []),
        ("x$(A)y$(B)", ["A", "B"]),
        ("$(A)$(A)", ["A", "A"]),
        ("$()", [""]),
    ],
)
def test_expansion_names_follow_the_kubelets_rules(text: str, names: list[str]) -> None:
    assert expansion_names(text) == names


def test_a_variable_in_args_expansion_is_a_use() -> None:
    found = _found(_template(args=["--password", "$(DB_PASSWORD)"]))
    assert found == {("DB_PASSWORD", "args", "", "")}


def test_a_variable_in_command_expansion_is_a_use() -> None:
    found = _found(_template(command=["/app", "--user=$(DB_USER)"]))
    assert found == {("DB_USER", "command", "", "")}


def test_an_escaped_expansion_is_not_a_use() -> None:
    assert _found(_template(args=["$$(DB_PASSWORD)"], command=["/app"])) == set()


def test_shell_syntax_in_args_is_not_a_use() -> None:
    # the shell is the wrapped process: the wrapper gives it the value
    assert _found(_template(command=["sh", "-c", 'exec /app "$DB_PASSWORD"'])) == set()


def test_a_variable_expanded_in_another_env_value_is_a_use() -> None:
    dsn = {"name": "DSN", "value": "postgres://$(DB_USER):$(DB_PASSWORD)@db/app"}
    assert _found(_template(env=[dsn])) == {
        ("DB_PASSWORD", "env", "DSN", ""),
        ("DB_USER", "env", "DSN", ""),
    }


def test_a_variable_not_migrated_in_this_container_is_not_looked_for() -> None:
    assert _found(_template(args=["$(HOME)", "$(OTHER)"])) == set()


# -- exec probes and lifecycle hooks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "used"),
    [
        ("mysqladmin ping -p$DB_PASSWORD", True),
        ('test "${DB_PASSWORD}" = x', True),
        ("redis-cli -a ${DB_PASSWORD:-none} ping", True),
        ("echo $(DB_PASSWORD)", True),
        ("printenv DB_PASSWORD", True),
        ("DB_PASSWORD", True),
        ("echo $DB_PASSWORD_FILE", False),  # another variable
        ("echo $MY_DB_PASSWORD", False),
        ("echo $db_password", False),  # names are case-sensitive
        ("pg_isready", False),
    ],
)
def test_names_word_is_a_whole_word_match(text: str, used: bool) -> None:
    assert names_word(text, "DB_PASSWORD") is used


def test_an_exec_probe_reading_the_variable_in_a_shell_string_is_a_use() -> None:
    probe = _exec("sh", "-c", "mysqladmin ping -uroot -p$DB_PASSWORD")
    assert _found(_template(readinessProbe=probe)) == {("DB_PASSWORD", "readinessProbe", "", "")}


def test_a_liveness_probe_with_a_parameter_expansion_is_a_use() -> None:
    probe = _exec("sh", "-c", 'redis-cli -a "${DB_PASSWORD:-}" ping')
    assert _found(_template(livenessProbe=probe)) == {("DB_PASSWORD", "livenessProbe", "", "")}


def test_a_startup_probe_naming_the_variable_is_a_use() -> None:
    probe = _exec("printenv", "DB_USER")
    assert _found(_template(startupProbe=probe)) == {("DB_USER", "startupProbe", "", "")}


def test_lifecycle_hooks_are_uses() -> None:
    lifecycle = {
        "postStart": _exec("sh", "-c", "register --token $(DB_USER)"),
        "preStop": _exec("sh", "-c", "deregister --password=$DB_PASSWORD"),
    }
    assert _found(_template(lifecycle=lifecycle)) == {
        ("DB_USER", "postStart", "", ""),
        ("DB_PASSWORD", "preStop", "", ""),
    }


def test_an_exec_probe_not_naming_the_variable_is_not_a_use() -> None:
    probe = _exec("sh", "-c", "pg_isready -h 127.0.0.1 && echo $DB_PASSWORD_FILE")
    assert _found(_template(readinessProbe=probe)) == set()


def test_http_tcp_grpc_and_sleep_handlers_never_use_env() -> None:
    template = _template(
        livenessProbe={"httpGet": {"path": "/$(DB_PASSWORD)", "port": 80}},
        readinessProbe={"tcpSocket": {"port": 5432}},
        startupProbe={"grpc": {"port": 9000, "service": "DB_PASSWORD"}},
        lifecycle={"preStop": {"sleep": {"seconds": 5}}},
    )
    assert _found(template) == set()


@pytest.mark.parametrize(
    "script", ["./check.sh", "/opt/x/probe.bash", "health.py", "/usr/local/bin/p.pl", "h.rb"]
)
def test_a_probe_running_a_script_file_may_read_every_migrated_variable(script: str) -> None:
    found = _found(_template(readinessProbe=_exec("sh", "-c", f"{script} --timeout 5")))
    assert found == {
        ("DB_PASSWORD", "readinessProbe", "", script),
        ("DB_USER", "readinessProbe", "", script),
    }


def test_a_probe_running_a_file_under_a_volume_mount_may_read_every_migrated_variable() -> None:
    # bitnami redis: the script reads $REDIS_PASSWORD inside; it has no suffix here
    template = _template(
        livenessProbe=_exec("sh", "-c", "/health/ping_liveness_local 5"),
        volumeMounts=[{"name": "health", "mountPath": "/health/"}],
    )
    assert _found(template) == {
        ("DB_PASSWORD", "livenessProbe", "", "/health/ping_liveness_local"),
        ("DB_USER", "livenessProbe", "", "/health/ping_liveness_local"),
    }
    # the same command without the mount is a program the rules cannot see into
    del template["spec"]["containers"][0]["volumeMounts"]
    assert _found(template) == set()


def test_script_words_split_shell_strings_and_ignore_plain_programs() -> None:
    mounts = ["/scripts"]
    assert script_words("/bin/sh", mounts) == []
    assert script_words("/scripts", mounts) == []  # the mount itself is no file
    assert script_words('a && "/scripts/run" ;x=./b.SH', mounts) == ["/scripts/run", "./b.SH"]
    assert script_words("--config=/etc/app.py", []) == ["/etc/app.py"]


def test_a_named_use_is_reported_as_such_even_when_a_script_runs_too() -> None:
    probe = _exec("sh", "-c", "/bin/check.sh $DB_PASSWORD")
    assert _found(_template(readinessProbe=probe)) == {
        ("DB_PASSWORD", "readinessProbe", "", ""),
        ("DB_USER", "readinessProbe", "", "/bin/check.sh"),
    }


# -- the plan's form ------------------------------------------------------------------------------


def test_env_uses_are_sorted_deduplicated_and_in_the_plans_form() -> None:
    template = _template(
        args=["$(DB_USER)", "$(DB_PASSWORD)", "$(DB_PASSWORD)"],
        env=[{"name": "DSN", "value": "$(DB_PASSWORD)"}],
        readinessProbe=_exec("check.sh"),
    )
    uses = env_uses(template, MIGRATED)
    assert uses == [
        EnvUse(env="DB_PASSWORD", container="app", where="args"),
        EnvUse(env="DB_PASSWORD", container="app", where="env", target="DSN"),
        EnvUse(env="DB_PASSWORD", container="app", where="readinessProbe"),
        EnvUse(env="DB_USER", container="app", where="args"),
        EnvUse(env="DB_USER", container="app", where="readinessProbe"),
    ]
    shuffled = copy.deepcopy(template)
    shuffled["spec"]["containers"][0]["args"].reverse()
    assert env_uses(shuffled, MIGRATED) == uses


# -- what finalize keeps ---------------------------------------------------------------------------

KEYS = {"db": ["password", "username"], "api": ["token"]}


def _workload(*, env_uses_listed: list[EnvUse] | None = None) -> Workload:
    return Workload(
        kind="Deployment",
        name="web",
        secrets=[
            SecretRef(
                source="db",
                vault_path="secret/data/ns/db",
                fields={"password": "DB_PASSWORD", "username": "DB_USER"},
                via="env",
            ),
            SecretRef(
                source="api",
                vault_path="secret/data/ns/api",
                fields={"token": "API_token"},
                via="envFrom",
            ),
        ],
        env_uses=env_uses_listed or [],
    )


def _with_api(template: dict[str, Any]) -> dict[str, Any]:
    template["spec"]["containers"][0]["envFrom"] = [
        {"prefix": "API_", "secretRef": {"name": "api"}}
    ]
    return template


def test_finalize_keeps_a_variable_a_probe_reads_and_removes_the_others() -> None:
    template = _with_api(_template(readinessProbe=_exec("sh", "-c", 'test -n "$DB_PASSWORD"')))

    edit = finalize_edit(template, _workload(), KEYS.get)

    assert edit.problems == []
    assert {(r.via, r.env, r.secret) for r in edit.refs} == {
        ("env", "DB_USER", "db"),
        ("envFrom", None, "api"),
    }
    assert edit.spec_patch == {
        "containers": [
            {"name": "app", "env": [{"name": "DB_USER", "$patch": "delete"}], "envFrom": None}
        ]
    }
    assert [str(k) for k in edit.kept] == [
        "kept env DB_PASSWORD (Secret db key password, container app): its readinessProbe "
        "exec command names it"
    ]


def test_finalize_keeps_an_envfrom_that_provides_a_used_variable() -> None:
    template = _with_api(_template(args=["--token", "$(API_token)"]))

    edit = finalize_edit(template, _workload(), KEYS.get)

    assert {r.env for r in edit.refs} == {"DB_PASSWORD", "DB_USER"}
    assert "envFrom" not in edit.spec_patch["containers"][0]
    assert [str(k) for k in edit.kept] == [
        "kept envFrom Secret api prefix API_ (container app): for API_token, $(API_token) in "
        "its args"
    ]


def test_finalize_keeps_a_variable_an_env_value_expands_and_says_which() -> None:
    template = _with_api(_template(env=[{"name": "DSN", "value": "pg://u:$(DB_PASSWORD)@db"}]))

    edit = finalize_edit(template, _workload(), KEYS.get)

    assert [str(k) for k in edit.kept] == [
        "kept env DB_PASSWORD (Secret db key password, container app): $(DB_PASSWORD) in the "
        "value of env DSN"
    ]


def test_finalize_keeps_every_variable_of_a_container_whose_hook_runs_a_script() -> None:
    template = _with_api(_template(lifecycle={"preStop": _exec("/scripts/drain.sh")}))

    edit = finalize_edit(template, _workload(), KEYS.get)

    assert edit.refs == []
    assert edit.spec_patch == {}
    assert len(edit.kept) == 3
    assert all("its preStop hook runs a script that may read it" in k.why for k in edit.kept)
    assert "'/scripts/drain.sh'" in edit.kept[0].why


def test_finalize_keeps_init_container_references() -> None:
    template = _with_api(_template())
    init = {"name": "migrate", "env": [_secret_env("DB_PASSWORD", "password")]}
    init["envFrom"] = [{"prefix": "API_", "secretRef": {"name": "api"}}]
    template["spec"]["initContainers"] = [init]

    edit = finalize_edit(template, _workload(), KEYS.get)

    assert "initContainers" not in edit.spec_patch
    assert all(not r.init for r in edit.refs)
    assert {(k.ref.via, k.ref.container, k.why) for k in edit.kept} == {
        ("env", "migrate", INIT_REASON),
        ("envFrom", "migrate", INIT_REASON),
    }
    assert str(edit.kept[0]).startswith(
        "kept env DB_PASSWORD (Secret db key password, init container migrate): "
    )
    # the app container's references are removed as before
    assert {r.env for r in edit.refs if r.via == "env"} == {"DB_PASSWORD", "DB_USER"}


def test_a_use_a_reviewer_lists_in_the_plan_keeps_the_reference() -> None:
    # mysqladmin reads MYSQL_PWD by itself: the rules cannot see it, the reviewer can
    template = _with_api(_template(livenessProbe=_exec("mysqladmin", "ping")))
    listed = [EnvUse(env="DB_PASSWORD", container="app", where="livenessProbe")]

    assert finalize_edit(template, _workload(), KEYS.get).kept == []
    edit = finalize_edit(template, _workload(env_uses_listed=listed), KEYS.get)

    assert [k.ref.env for k in edit.kept] == ["DB_PASSWORD"]
    assert edit.kept[0].why == "the plan's envUses lists a use in its livenessProbe"


def test_keep_reasons_join_several_uses_of_one_variable() -> None:
    template = _template(
        args=["$(DB_PASSWORD)"], readinessProbe=_exec("sh", "-c", "check -p $DB_PASSWORD")
    )
    mapped = env_consumptions(template, KEYS.get)
    assert keep_reasons(template, mapped) == {
        ("app", False, "DB_PASSWORD"): [
            "$(DB_PASSWORD) in its args",
            "its readinessProbe exec command names it",
        ]
    }


# -- discover records the uses for reviewers ----------------------------------------------------


def test_discover_records_the_uses_of_mapped_variables_in_the_plan() -> None:
    from cloudtaser import plan as planlib
    from cloudtaser.plan import WorkloadKind
    from cloudtaser.target.discover.build import build_plan
    from cloudtaser.target.discover.options import DiscoverOptions
    from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup

    template = _template(
        args=["$(DB_PASSWORD)", "$(NOT_MAPPED)"],
        readinessProbe=_exec("sh", "-c", "check $DB_USER"),
        env=[{"name": "NOT_MAPPED", "value": "x"}],
    )
    template["spec"]["initContainers"] = [
        {
            "name": "migrate",
            "env": [_secret_env("DB_PASSWORD", "password")],
            "args": ["$(DB_PASSWORD)"],
        }
    ]
    result = build_plan(
        [ScannedWorkload("shop", WorkloadKind.DEPLOYMENT, "web", template, 1)],
        SecretLookup(),
        options=DiscoverOptions(created_by="alice"),
        plan_name="p",
        cluster="https://10.0.0.1:6443",
    )
    ((_t, workload),) = list(result.plan.iter_workloads())

    assert workload.env_uses == [
        EnvUse(env="DB_PASSWORD", container="app", where="args"),
        EnvUse(env="DB_USER", container="app", where="readinessProbe"),
        EnvUse(env="DB_PASSWORD", container="migrate", init=True, where="args"),
    ]
    text = planlib.dumps(result.plan)
    assert "envUses:\n    - env: DB_PASSWORD\n      container: app\n      where: args\n" in text
    assert planlib.loads(text).tenants[0].workloads[0].env_uses == workload.env_uses
