"""Issue 30, item 5: discover records which probe, hook and ``$(VAR)`` reads which migrated
variable on chart-shaped manifests; Windows pods are skipped with the reason; finalize removes
the reference of a use only when the injected pods show the runtime serving it, and protect
warns about what the runtime cannot serve at all. And the Python twin of the kubelet's
``$(VAR)`` expansion (``contract.expand``)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import contract
from cloudtaser.contract import WRAPPER_PATH
from cloudtaser.plan import EnvUse, SecretRef, Workload, WorkloadKind, WorkloadStatus
from cloudtaser.target.consumers import (
    DESIGN_COVERAGE,
    UNSERVED_NOTE,
    ProvenCoverage,
    consumers,
    keep_reasons,
    mentions,
)
from cloudtaser.target.discover.build import build_plan
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.engine.consumption import kept_reasons
from cloudtaser.target.engine.secret_refs import finalize_edit
from cloudtaser.target.podspec import env_consumptions, windows_reason

NOW = datetime(2026, 5, 16, 10, 0, 0, tzinfo=UTC)
VAR_EXPANSION = Path(__file__).resolve().parents[2] / "spec" / "contract" / "var-expansion.json"


def _secret(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


# --- chart-shaped manifests (the shapes of bitnami mysql/redis and argo-cd's redis) ----------

MYSQL = {
    "metadata": {},
    "spec": {
        "containers": [
            {
                "name": "mysql",
                "env": [_secret("MYSQL_ROOT_PASSWORD", "mysql", "mysql-root-password")],
                "livenessProbe": {
                    "exec": {
                        "command": [
                            "/bin/bash",
                            "-ec",
                            'password_aux="${MYSQL_ROOT_PASSWORD:-}"\n'
                            'mysqladmin status -uroot -p"${password_aux}"',
                        ]
                    }
                },
                "readinessProbe": {
                    "exec": {
                        "command": [
                            "/bin/bash",
                            "-ec",
                            'mysqladmin ping -uroot -p"$MYSQL_ROOT_PASSWORD"',
                        ]
                    }
                },
            }
        ]
    },
}
REDIS = {
    "metadata": {},
    "spec": {
        "containers": [
            {
                "name": "redis",
                "env": [_secret("REDIS_PASSWORD", "redis", "redis-password")],
                "readinessProbe": {
                    "exec": {"command": ["sh", "-c", "/health/ping_readiness_local.sh 1"]}
                },
                "volumeMounts": [{"name": "health", "mountPath": "/health"}],
            }
        ]
    },
}
ARGOCD_REDIS = {
    "metadata": {},
    "spec": {
        "initContainers": [
            {
                "name": "secret-init",
                "env": [_secret("REDIS_PASSWORD", "argocd-redis", "auth")],
                "command": ["argocd", "admin", "redis-initial-password"],
            }
        ],
        "containers": [
            {
                "name": "redis",
                "env": [_secret("REDIS_PASSWORD", "argocd-redis", "auth")],
                "args": ["--save", "", "--requirepass $(REDIS_PASSWORD)"],
            }
        ],
    },
}


def _uses(template: dict[str, Any], keys: dict[str, tuple[str, ...]] | None = None):
    lookup = SecretLookup(keys=keys or {})
    workload = ScannedWorkload("db", WorkloadKind.STATEFUL_SET, "app", template, 1)
    result = build_plan(
        [workload],
        lookup,
        options=DiscoverOptions(now=NOW),
        plan_name="p",
        cluster="https://k",
    )
    (_tenant, entry) = next(result.plan.iter_workloads())
    return entry


def test_bitnami_mysql_exec_probes_reading_the_root_password_are_recorded() -> None:
    entry = _uses(MYSQL)
    assert entry.env_uses == [
        EnvUse(env="MYSQL_ROOT_PASSWORD", container="mysql", where="livenessProbe"),
        EnvUse(env="MYSQL_ROOT_PASSWORD", container="mysql", where="readinessProbe"),
    ]


def test_bitnami_redis_readiness_script_is_recorded_as_a_presumed_use() -> None:
    entry = _uses(REDIS)
    assert entry.env_uses == [
        EnvUse(env="REDIS_PASSWORD", container="redis", where="readinessProbe")
    ]


def test_argocd_redis_requirepass_and_its_init_container_are_recorded() -> None:
    entry = _uses(ARGOCD_REDIS)
    assert entry.env_uses == [EnvUse(env="REDIS_PASSWORD", container="redis", where="args")]
    # the init container's variable is mapped like the container's (same key, same name)
    assert entry.secrets[0].fields == {"auth": "REDIS_PASSWORD"}


def test_a_subpathexpr_use_is_recorded() -> None:
    template = copy.deepcopy(REDIS)
    container = template["spec"]["containers"][0]
    del container["readinessProbe"]
    container["volumeMounts"] = [
        {"name": "data", "mountPath": "/data", "subPathExpr": "$(REDIS_PASSWORD)"}
    ]
    entry = _uses(template)
    assert entry.env_uses == [EnvUse(env="REDIS_PASSWORD", container="redis", where="subPathExpr")]


# --- Windows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "how"),
    [
        ({"nodeSelector": {"kubernetes.io/os": "windows"}}, "nodeSelector kubernetes.io/os"),
        ({"os": {"name": "windows"}}, "spec.os.name: windows"),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/os",
                                            "operator": "In",
                                            "values": ["windows"],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                }
            },
            "required node affinity",
        ),
    ],
)
def test_a_windows_pod_is_skipped_with_the_reason(spec: dict[str, Any], how: str) -> None:
    template = copy.deepcopy(MYSQL)
    template["spec"].update(spec)
    entry = _uses(template)
    assert entry.effective_status is WorkloadStatus.SKIPPED
    assert "runs on Windows nodes" in (entry.reason or "")
    assert how in (entry.reason or "")
    assert entry.secrets[0].fields == {"mysql-root-password": "MYSQL_ROOT_PASSWORD"}


def test_linux_pods_and_mixed_affinities_are_not_windows() -> None:
    assert windows_reason(MYSQL) is None
    linux = {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}
    assert windows_reason(linux) is None
    either = {
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/os",
                                        "operator": "In",
                                        "values": ["windows"],
                                    }
                                ]
                            },
                            {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
                        ]
                    }
                }
            }
        }
    }
    assert windows_reason(either) is None


# --- what the runtime can serve, and what the injected pods prove -------------------------


@pytest.mark.parametrize(
    ("command", "routable"),
    [
        (["sh", "-c", 'mysqladmin ping -p"$MYSQL_ROOT_PASSWORD"'], True),
        (["sh", "-c", 'p="${MYSQL_ROOT_PASSWORD:-}"'], True),
        (["check", "$(MYSQL_ROOT_PASSWORD)"], True),
        # inside a command substitution, as the Go rule reads it (issue 30's realnode probes)
        (["sh", "-c", 'test "$(printf %s "$MYSQL_ROOT_PASSWORD" | sha256sum)" = x'], True),
        (["sh", "-c", 'test "$(printf %s "${MYSQL_ROOT_PASSWORD}")" = x'], True),
        (["printenv", "MYSQL_ROOT_PASSWORD"], False),  # a program reading it: not routed
        (["sh", "-c", "/health/ping.sh"], False),  # a script: not routed
        (["sh", "-c", "echo $MYSQL_ROOT_PASSWORD_FILE"], False),
        ([WRAPPER_PATH, "exec", "--", "sh", "-c", "$MYSQL_ROOT_PASSWORD"], False),
    ],
)
def test_the_injectors_routing_rule(command: list[str], routable: bool) -> None:
    assert mentions(command, {"MYSQL_ROOT_PASSWORD"}) is routable


def _mapped(template: dict[str, Any]):
    return env_consumptions(template, lambda _n: None)


def test_protect_warns_only_about_what_the_runtime_cannot_serve() -> None:
    # mysql: probes name the variable (routable); redis: the probe runs a script (never)
    assert keep_reasons(MYSQL, _mapped(MYSQL), coverage=DESIGN_COVERAGE) == {}
    assert keep_reasons(ARGOCD_REDIS, _mapped(ARGOCD_REDIS), coverage=DESIGN_COVERAGE) == {}
    reasons = keep_reasons(REDIS, _mapped(REDIS), coverage=DESIGN_COVERAGE)
    assert reasons == {
        ("redis", False, "REDIS_PASSWORD"): [
            "its readinessProbe runs a script that may read it ('/health/ping_readiness_local.sh')",
            "the runtime cannot serve it",
        ]
    }


def _injected(template: dict[str, Any], *, route: bool, expand: bool) -> dict[str, Any]:
    """The pod an issue-30 injector makes of ``template`` (init containers and containers
    wrapped, exec handlers that name a variable routed, deferred $(VAR) in an --expand plan);
    with ``route``/``expand`` off, the shape of an injector without that support."""
    pod = copy.deepcopy(template)
    for key in ("initContainers", "containers"):
        for container in pod["spec"].get(key, []):
            command = [WRAPPER_PATH, "wrap", "--", *container.get("command", ["app"])]
            if expand and "$(" in json.dumps(container.get("args", [])):
                plan = json.dumps({"args": [1]}).replace("$", "$$")
                command = [WRAPPER_PATH, "wrap", f"--expand={plan}", "--", "app"]
            container["command"] = command
            for probe in ("livenessProbe", "readinessProbe"):
                handler = container.get(probe, {}).get("exec")
                if route and handler and mentions(handler["command"], {"MYSQL_ROOT_PASSWORD"}):
                    handler["command"] = [WRAPPER_PATH, "exec", "--", *handler["command"]]
    return pod


def test_the_live_pods_prove_what_the_runtime_serves() -> None:
    served = ProvenCoverage.of_pods([_injected(MYSQL, route=True, expand=True)] * 2)
    assert ("mysql", False, "livenessProbe") in served.routed
    assert keep_reasons(MYSQL, _mapped(MYSQL), coverage=served) == {}
    old = ProvenCoverage.of_pods([_injected(MYSQL, route=False, expand=False)])
    reasons = keep_reasons(MYSQL, _mapped(MYSQL), coverage=old)
    assert reasons[("mysql", False, "MYSQL_ROOT_PASSWORD")][-1] == UNSERVED_NOTE
    # one pod of the revision not showing it is enough to keep the reference
    mixed = ProvenCoverage.of_pods(
        [_injected(MYSQL, route=True, expand=True), _injected(MYSQL, route=False, expand=True)]
    )
    assert keep_reasons(MYSQL, _mapped(MYSQL), coverage=mixed)
    assert ProvenCoverage.of_pods([]) == ProvenCoverage()


def test_wrapped_init_containers_and_expanded_args_are_served() -> None:
    pod = _injected(ARGOCD_REDIS, route=True, expand=True)
    served = ProvenCoverage.of_pods([pod])
    assert served.wraps("secret-init", True)
    assert keep_reasons(ARGOCD_REDIS, _mapped(ARGOCD_REDIS), coverage=served) == {}
    unexpanded = ProvenCoverage.of_pods([_injected(ARGOCD_REDIS, route=True, expand=False)])
    assert keep_reasons(ARGOCD_REDIS, _mapped(ARGOCD_REDIS), coverage=unexpanded) == {
        ("redis", False, "REDIS_PASSWORD"): ["$(REDIS_PASSWORD) in its args", UNSERVED_NOTE]
    }


def _mysql_workload(env_uses: list[EnvUse] | None = None) -> Workload:
    return Workload(
        kind=WorkloadKind.STATEFUL_SET,
        name="mysql",
        secrets=[
            SecretRef(
                source="mysql",
                vault_path="secret/data/db/mysql",
                fields={"mysql-root-password": "MYSQL_ROOT_PASSWORD"},
                via="env",
            )
        ],
        env_uses=env_uses or [],
    )


def test_finalize_removes_a_served_probe_users_reference_and_keeps_an_unserved_one() -> None:
    keys = {"mysql": ["mysql-root-password"]}.get
    # first, the reference is there and today's (no coverage) finalize keeps it
    assert finalize_edit(MYSQL, _mysql_workload(), keys).refs == []
    served = ProvenCoverage.of_pods([_injected(MYSQL, route=True, expand=True)])
    edit = finalize_edit(MYSQL, _mysql_workload(), keys, coverage=served)
    assert [(r.env, r.container) for r in edit.refs] == [("MYSQL_ROOT_PASSWORD", "mysql")]
    assert edit.kept == []
    # the same pods, but the reviewer recorded a use no routed handler serves (mysqladmin
    # reading MYSQL_PWD in a preStop hook): kept, with the reason
    recorded = [EnvUse(env="MYSQL_ROOT_PASSWORD", container="mysql", where="preStop")]
    edit = finalize_edit(MYSQL, _mysql_workload(recorded), keys, coverage=served)
    assert edit.refs == []
    assert "the plan's envUses lists a use in its preStop" in str(edit.kept[0])
    assert kept_reasons(MYSQL, _mysql_workload(), keys, coverage=served) == {}


def test_consumers_carry_whether_their_handler_is_routable() -> None:
    migrated = {("redis", False): {"REDIS_PASSWORD"}}
    (use,) = consumers(REDIS, migrated)
    assert use.script
    assert not use.routable


# --- the $(VAR) expansion twin -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("$$(A)", "$(A)"),  # $$ escapes
        ("$$$(A)", "$a"),
        ("$(NOPE)", "$(NOPE)"),  # undefined: kept literally
        ("$(A", "$(A"),  # unterminated: kept
        ("$(A)$(", "a$("),
        ("x$", "x$"),
        ("$A", "$A"),  # no shell syntax
        ("$()", "$()"),
        ("postgres://$(U):$(P)@db", "postgres://app:s3cr$t(x)@db"),  # values not re-expanded
    ],
)
def test_expand_follows_the_kubelets_rules(text: str, expected: str) -> None:
    values = {"A": "a", "U": "app", "P": "s3cr$t(x)"}
    assert contract.expand(text, values.get) == expected


def test_env_values_expand_in_definition_order() -> None:
    got = contract.expand_env(
        {"DB_PASSWORD": "pw"},
        [("A", "$(B)-a"), ("B", "b"), ("URL", "x:$(DB_PASSWORD)@$(B)/$(A)")],
    )
    assert got["A"] == "$(B)-a"  # B was defined later
    assert got["URL"] == "x:pw@b/$(B)-a"
    assert contract.references("$(A)$$(B)$(C)") == ["A", "C"]


@pytest.mark.skipif(
    not VAR_EXPANSION.exists(),
    reason="spec/contract/var-expansion.json comes with the runtime-30 branch (it owns it)",
)
def test_the_shared_expansion_vectors() -> None:
    vectors = json.loads(VAR_EXPANSION.read_text(encoding="utf-8"))
    for case in vectors["strings"]:
        assert contract.expand(case["input"], vectors["vars"].get) == case["expected"], case
    for case in vectors["env"]:
        entries = [(e["name"], e["value"]) for e in case["env"]]
        got = contract.expand_env(case["context"], entries)
        assert {k: got.get(k) for k in case["expected"]} == case["expected"], case["name"]
