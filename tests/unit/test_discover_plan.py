"""Pure plan building of discover: ScannedWorkload records in, a validated plan out."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from cloudtaser import plan as planlib
from cloudtaser.errors import ConfigError
from cloudtaser.plan import WorkloadKind, WorkloadStatus
from cloudtaser.plan.rules import DEFAULT_PATH_TEMPLATE, ISOLATED_PATH_TEMPLATE
from cloudtaser.plan.store import recorded_progress
from cloudtaser.target.annotations import INJECT
from cloudtaser.target.discover.build import DiscoveryResult, build_plan
from cloudtaser.target.discover.entry import (
    ALREADY_PROTECTED,
    NO_SECRETS,
    Entry,
    LeftOut,
    workload_entry,
)
from cloudtaser.target.discover.naming import PathTemplate, default_plan_name
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup

NOW = datetime(2026, 5, 16, 10, 0, 0, 123456, tzinfo=UTC)
D, S, DS = WorkloadKind.DEPLOYMENT, WorkloadKind.STATEFUL_SET, WorkloadKind.DAEMON_SET


def tpl(
    *containers: dict[str, Any],
    volumes: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    sa: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if volumes:
        spec["volumes"] = volumes
    if sa:
        spec["serviceAccountName"] = sa
    return {"metadata": {"annotations": annotations or {}}, "spec": spec}


def env(name: str, secret: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, **extra}}}


def c(name: str = "app", **fields: Any) -> dict[str, Any]:
    return {"name": name, **fields}


def wl(ns: str, kind: WorkloadKind, name: str, template: dict[str, Any], replicas: int | None = 1):
    return ScannedWorkload(ns, kind, name, template, None if kind is DS else replicas)


def build(
    workloads: list[ScannedWorkload],
    lookup: SecretLookup | None = None,
    **options: Any,
) -> DiscoveryResult:
    opts = DiscoverOptions(now=NOW, created_by="alice", **options)
    return build_plan(
        workloads,
        lookup or SecretLookup(),
        options=opts,
        plan_name="prod-eu",
        cluster="https://10.0.0.1:6443",
    )


def only(result: DiscoveryResult) -> planlib.Workload:
    (pair,) = list(result.plan.iter_workloads())
    return pair[1]


def test_metadata_is_filled_and_round_trips() -> None:
    result = build([wl("payments", D, "api", tpl(c(env=[env("PASS", "db", "password")])))])
    meta = result.plan.metadata
    assert meta.name == "prod-eu"
    assert meta.cluster == "https://10.0.0.1:6443"
    assert meta.created_at == datetime(2026, 5, 16, 10, 0, 0, tzinfo=UTC)
    assert meta.created_by == "alice"
    assert meta.path_template == DEFAULT_PATH_TEMPLATE
    text = planlib.dumps(result.plan)
    assert (
        'createdAt: "2026-05-16T10:00:00Z"' in text or "createdAt: '2026-05-16T10:00:00Z'" in text
    )
    assert planlib.loads(text) == result.plan


def test_secret_key_ref_becomes_field_to_env_mapping_with_default_path() -> None:
    result = build(
        [wl("payments", D, "api", tpl(c(env=[env("PASS", "db", "password")]), sa="api"))]
    )
    workload = only(result)
    assert workload.status is WorkloadStatus.PENDING
    assert workload.replicas == 1
    assert workload.service_account == "api"
    (secret,) = workload.secrets
    assert (secret.source, secret.vault_path, secret.fields, secret.via) == (
        "db",
        "secret/data/payments/db",
        {"password": "PASS"},
        "env",
    )


def test_service_account_defaults_to_default_and_daemonset_has_no_replicas() -> None:
    result = build([wl("ns", DS, "agent", tpl(c(env=[env("T", "tok", "t")])))])
    workload = only(result)
    assert workload.service_account == "default"
    assert workload.replicas is None


def test_env_from_uses_secret_keys_with_prefix() -> None:
    lookup = SecretLookup(keys={("ns", "db"): ("password", "username")})
    result = build(
        [wl("ns", D, "a", tpl(c(envFrom=[{"secretRef": {"name": "db"}, "prefix": "PG_"}])))],
        lookup,
    )
    (secret,) = only(result).secrets
    assert secret.via == "envFrom"
    assert secret.fields == {"password": "PG_password", "username": "PG_username"}


def test_missing_and_optional_env_from_secrets_are_noted_not_fatal() -> None:
    lookup = SecretLookup(missing=frozenset({("ns", "gone"), ("ns", "maybe")}))
    result = build(
        [
            wl(
                "ns",
                D,
                "a",
                tpl(
                    c(
                        envFrom=[
                            {"secretRef": {"name": "gone"}},
                            {"secretRef": {"name": "maybe", "optional": True}},
                        ]
                    )
                ),
            )
        ],
        lookup,
    )
    workload = only(result)
    assert workload.status is WorkloadStatus.PENDING
    gone, maybe = workload.secrets
    assert gone.fields == {}
    assert "not found" in (gone.note or "")
    assert maybe.optional
    assert "optional" in (maybe.note or "")
    assert any("gone does not exist" in w for w in result.warnings)


def test_unreadable_env_from_keys_skip_the_workload() -> None:
    lookup = SecretLookup(
        unreadable={("ns", "db"): "permission denied: get secrets in namespace ns"}
    )
    result = build([wl("ns", D, "a", tpl(c(envFrom=[{"secretRef": {"name": "db"}}])))], lookup)
    workload = only(result)
    assert workload.status is WorkloadStatus.SKIPPED
    assert "could not be read" in (workload.reason or "")
    assert "permission denied" in (workload.secrets[0].note or "")


def test_optional_secret_key_ref_is_marked() -> None:
    result = build([wl("ns", D, "a", tpl(c(env=[env("X", "s", "k", optional=True)])))])
    assert only(result).secrets[0].optional


def test_workloads_sharing_a_secret_share_one_vault_path() -> None:
    result = build(
        [
            wl("ns", D, "a", tpl(c(env=[env("P", "db", "password")]))),
            wl("ns", S, "b", tpl(c(env=[env("DB_PASSWORD", "db", "password")]))),
        ]
    )
    paths = {s.vault_path for _t, w in result.plan.iter_workloads() for s in w.secrets}
    assert paths == {"secret/data/ns/db"}
    assert result.summary.secrets == 1
    assert result.summary.workloads == 2


def test_two_secrets_feeding_one_env_var_skip_the_workload_naming_both() -> None:
    result = build(
        [
            wl(
                "ns",
                D,
                "a",
                tpl(
                    c("one", env=[env("PASS", "db", "password")]),
                    c("two", env=[env("PASS", "alt", "pw")]),
                ),
            )
        ]
    )
    workload = only(result)
    assert workload.status is WorkloadStatus.SKIPPED
    assert "PASS" in (workload.reason or "")
    assert "alt.pw" in (workload.reason or "")
    assert "db.password" in (workload.reason or "")
    assert workload.env_names == ["PASS"]  # one mapping kept, so the plan stays valid
    assert planlib.loads(planlib.dumps(result.plan))


def test_same_key_in_two_containers_under_the_same_name_is_not_a_conflict() -> None:
    result = build(
        [
            wl(
                "ns",
                D,
                "a",
                tpl(c("x", env=[env("P", "db", "pw")]), c("y", env=[env("P", "db", "pw")])),
            )
        ]
    )
    workload = only(result)
    assert workload.status is WorkloadStatus.PENDING
    assert workload.env_names == ["P"]


def test_one_key_through_env_and_env_from_is_one_mapping_not_a_crash() -> None:
    # env PASSWORD <- db.PASSWORD and envFrom db (which holds PASSWORD): Kubernetes allows it
    # (env wins, same value); discover used to build a plan with PASSWORD fed twice and stop
    # with "discovery produced an invalid plan"
    lookup = SecretLookup(keys={("ns", "db"): ("PASSWORD", "USER")})
    template = tpl(
        c(env=[env("PASSWORD", "db", "PASSWORD")], envFrom=[{"secretRef": {"name": "db"}}])
    )
    result = build([wl("ns", D, "a", template)], lookup)
    workload = only(result)
    assert workload.status is WorkloadStatus.PENDING
    assert sorted(workload.env_names) == ["PASSWORD", "USER"]
    by_via = {s.via: s for s in workload.secrets}
    assert by_via["env"].fields == {"PASSWORD": "PASSWORD"}
    assert by_via["envFrom"].fields == {"USER": "USER"}
    assert "env wins" in (by_via["envFrom"].note or "")
    assert planlib.loads(planlib.dumps(result.plan)) == result.plan


def test_one_key_under_two_env_names_splits_into_two_entries() -> None:
    result = build([wl("ns", D, "a", tpl(c(env=[env("A", "db", "pw"), env("B", "db", "pw")])))])
    workload = only(result)
    assert [s.fields for s in workload.secrets] == [{"pw": "A"}, {"pw": "B"}]
    assert {s.vault_path for s in workload.secrets} == {"secret/data/ns/db"}


def test_files_of_an_unknown_secret_stay_a_secret_and_a_files_only_workload_is_skipped() -> None:
    # the Secret was not found, the volume lists no items: its keys (the files) are unknown
    vol = [{"name": "certs", "secret": {"secretName": "tls"}}]
    mounts = [{"name": "certs", "mountPath": "/certs"}]
    result = build(
        [
            wl("ns", D, "files", tpl(c(volumeMounts=mounts), volumes=vol)),
            wl(
                "ns",
                D,
                "mixed",
                tpl(c(volumeMounts=mounts, env=[env("P", "db", "pw")]), volumes=vol),
            ),
        ]
    )
    by_name = {w.name: w for _t, w in result.plan.iter_workloads()}
    files, mixed = by_name["files"], by_name["mixed"]
    assert files.status is WorkloadStatus.SKIPPED
    assert "Secret tls not found in the cluster: its keys are unknown" in (files.reason or "")
    assert files.secrets == []
    assert [(f.source, f.volume, f.vault_path) for f in files.secret_files] == [
        ("tls", "certs", None)
    ]
    assert [m.mount_path for m in files.secret_files[0].mounts] == ["/certs"]
    assert mixed.status is WorkloadStatus.PENDING
    assert "keeps Secret volume(s) as Kubernetes Secrets" in (mixed.reason or "")
    assert len(mixed.secret_files) == 1
    assert any(s.in_plan and s.name == "files" for s in result.skipped)


def test_vault_agent_paths_are_recorded_and_converted() -> None:
    result = build(
        [
            wl(
                "legacy",  # the paths lie in this namespace's scope
                D,
                "legacy",
                tpl(
                    c(),
                    annotations={
                        "vault.hashicorp.com/agent-inject": "true",
                        "vault.hashicorp.com/agent-inject-secret-db": "secret/data/legacy/db",
                        "vault.hashicorp.com/agent-inject-secret-api": "secret/legacy/api",
                    },
                ),
            )
        ]
    )
    workload = only(result)
    assert workload.status is WorkloadStatus.PENDING
    assert [(s.source, s.vault_path, s.via) for s in workload.secrets] == [
        ("vault-agent:api", "secret/data/legacy/api", "vaultAgent"),
        ("vault-agent:db", "secret/data/legacy/db", "vaultAgent"),
    ]
    assert "assuming a KV v2" in (workload.secrets[0].note or "")
    assert "Vault Agent" in (workload.reason or "")


@pytest.mark.parametrize("path", ["secret/../sys", "secret/data/*", "secret"])
def test_unsafe_vault_agent_path_skips_the_workload(path: str) -> None:
    annotations = {"vault.hashicorp.com/agent-inject-secret-x": path}
    result = build([wl("ns", D, "a", tpl(c(), annotations=annotations))])
    workload = only(result)
    assert workload.status is WorkloadStatus.SKIPPED
    assert workload.secrets == []
    assert path not in (workload.reason or "") or path == "secret"


def test_vault_agent_path_outside_recorded_kv_mount_is_skipped() -> None:
    annotations = {"vault.hashicorp.com/agent-inject-secret-x": "other/data/a/b"}
    result = build([wl("ns", D, "a", tpl(c(), annotations=annotations))], kv_mount="secret")
    assert only(result).status is WorkloadStatus.SKIPPED


def test_skips_injected_no_secret_and_excluded_workloads_out_of_the_plan() -> None:
    result = build(
        [
            wl(
                "ns",
                D,
                "done",
                tpl(c(env=[env("P", "db", "pw")]), annotations={"cloudtaser.io/inject": "true"}),
            ),
            wl("ns", D, "plain", tpl(c(env=[{"name": "X", "value": "1"}]))),
            wl("kube-system", D, "coredns", tpl(c(env=[env("P", "db", "pw")]))),
            wl("mine", D, "x", tpl(c(env=[env("P", "db", "pw")]))),
            wl("ok", D, "x", tpl(c(env=[env("P", "db", "pw")]))),
        ],
        exclude_namespaces=("mine",),
    )
    assert [(t.namespace, [w.name for w in t.workloads]) for t in result.plan.tenants] == [
        ("ok", ["x"])
    ]
    reasons = {(s.namespace, s.name): s.reason for s in result.skipped}
    assert "already protected" in reasons[("ns", "done")]
    assert reasons[("ns", "plain")] == "uses no Secrets"
    assert reasons[("kube-system", "coredns")] == "excluded namespace"
    assert reasons[("mine", "x")] == "excluded namespace"
    assert result.summary.workloads_scanned == 5
    assert result.summary.not_in_plan["excluded namespace"] == 2


def test_output_is_deterministic_and_sorted() -> None:
    workloads = [
        wl(ns, kind, name, tpl(c(env=[env("B", "s2", "k"), env("A", "s1", "k")])))
        for ns in ("zeta", "alpha", "mid")
        for kind in (DS, D, S)
        for name in ("web", "api")
    ]
    first = planlib.dumps(build(workloads).plan)
    for seed in range(3):
        shuffled = workloads[:]
        random.Random(seed).shuffle(shuffled)
        assert planlib.dumps(build(shuffled).plan) == first
    plan = build(workloads).plan
    assert [t.namespace for t in plan.tenants] == ["alpha", "mid", "zeta"]
    assert [(str(w.kind), w.name) for w in plan.tenants[0].workloads] == [
        ("Deployment", "api"),
        ("Deployment", "web"),
        ("StatefulSet", "api"),
        ("StatefulSet", "web"),
        ("DaemonSet", "api"),
        ("DaemonSet", "web"),
    ]
    assert [s.source for s in plan.tenants[0].workloads[0].secrets] == ["s1", "s2"]


def test_isolated_template_includes_the_cluster_name() -> None:
    workload = wl("ns", D, "a", tpl(c(env=[env("P", "db", "pw")])))
    isolated = build([workload], path_template=ISOLATED_PATH_TEMPLATE)
    assert only(isolated).secrets[0].vault_path == "secret/data/prod-eu/ns/db"
    named = build(
        [workload], path_template=ISOLATED_PATH_TEMPLATE, cluster_name="eu-1", kv_mount="kv"
    )
    assert only(named).secrets[0].vault_path == "kv/data/eu-1/ns/db"
    assert named.plan.metadata.kv_mount == "kv"


@pytest.mark.parametrize(
    "template",
    [
        "{mount}/data/{secret}",  # no namespace: tenants would share paths
        "{mount}/data/{namespace}",  # no secret
        "{mount}/{namespace}/{secret}",  # not a KV v2 API path
        "{mount}/data/{namespace}/{secret!r}",
        "{mount}/data/{tenant}/{secret}",
        "{mount}/data/{namespace}/../{secret}",
        "{mount}/data/{namespace}/{secret",
        "{mount}/data/{namespace}/*/{secret}",
    ],
)
def test_bad_path_templates_are_refused(template: str) -> None:
    with pytest.raises(ConfigError):
        PathTemplate(template)


def test_template_mount_must_match_recorded_kv_mount() -> None:
    with pytest.raises(ConfigError, match="kv-mount"):
        build([], path_template="kv/data/{namespace}/{secret}", kv_mount="secret")


def test_bad_cluster_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="cluster"):
        build([], path_template=ISOLATED_PATH_TEMPLATE, cluster_name="a/b")


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ("kind-dev", "kind-dev"),
        ("arn:aws:eks:eu-west-1:1:cluster/prod", "arn-aws-eks-eu-west-1-1-cluster-prod"),
        ("", "c1"),
    ],
)
def test_default_plan_name_is_sanitised(context: str, expected: str) -> None:
    assert default_plan_name(context, "c1") == expected


def test_empty_cluster_gives_empty_tenants() -> None:
    result = build([])
    assert result.plan.tenants == []
    assert "tenants: []" in planlib.dumps(result.plan)


def test_invalid_env_name_from_env_from_key_is_noted() -> None:
    lookup = SecretLookup(keys={("ns", "tls"): ("ca.crt", "token")})
    result = build([wl("ns", D, "a", tpl(c(envFrom=[{"secretRef": {"name": "tls"}}])))], lookup)
    workload = only(result)
    assert workload.secrets[0].fields == {"token": "token"}
    assert "ca.crt" in (workload.secrets[0].note or "")
    assert any("ca.crt" in w for w in result.warnings)


def test_recorded_progress_detects_migrated_and_reviewer_skips() -> None:
    base = [
        wl("ns", D, "a", tpl(c(env=[env("P", "db", "pw")]))),
        wl("ns", D, "b", tpl(c(env=[env("Q", "db", "pw")]))),
    ]
    fresh = build(base).plan
    assert recorded_progress(fresh, fresh) == []
    old = build(base).plan
    old.tenants[0].workloads[0].set_status(WorkloadStatus.MIGRATED, by="bob")
    old.tenants[0].workloads[1].status = WorkloadStatus.SKIPPED
    lost = recorded_progress(old, fresh)
    assert lost == ["Deployment ns/a is migrated", "Deployment ns/b is skipped"]


def test_recorded_progress_ignores_discovery_own_skips() -> None:
    files = wl("ns", D, "f", tpl(c(), volumes=[{"name": "v", "secret": {"secretName": "s"}}]))
    plan = build([files]).plan
    assert recorded_progress(plan, build([files]).plan) == []


def test_unreadable_parts_are_recorded_in_the_plan() -> None:
    result = build_plan(
        [],
        SecretLookup(),
        options=DiscoverOptions(now=NOW),
        plan_name="p",
        cluster="https://x",
        unreadable=["list deployments.apps in namespace b: permission denied"],
    )
    assert result.plan.metadata.unread == [
        "list deployments.apps in namespace b: permission denied"
    ]
    assert not result.complete
    assert planlib.loads(planlib.dumps(result.plan)) == result.plan


@pytest.mark.parametrize(
    "options",
    [
        {"namespaces": ("Bad_NS",)},
        {"exclude_namespaces": ("a/b",)},
        {"name": "bad name"},
        {"kv_mount": "../sys"},
        {"auth_mount": "a//b"},
        {"selector": "app=x\nfoo"},
        {"path_template": "{mount}/data/{secret}"},
    ],
)
def test_bad_options_are_refused_before_any_request(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        DiscoverOptions(**options).validate()


def test_plan_fields_agree_with_consumed_env() -> None:
    """protect's drift check compares consumed_env with the plan: they must agree."""
    from cloudtaser.target.podspec import consumed_env

    keys = {("ns", "db"): ("password", "username", "tls.crt"), ("ns", "api"): ("token",)}
    lookup = SecretLookup(keys=keys)
    template = tpl(
        c("a", env=[env("P", "db", "password"), env("Q", "db", "password")]),
        c(
            "b",
            envFrom=[
                {"secretRef": {"name": "db"}, "prefix": "DB_"},
                {"secretRef": {"name": "api"}},
            ],
        ),
    )
    workload = only(build([wl("ns", D, "a", template)], lookup))
    from_plan = {
        (s.source, key, var)
        for s in workload.secrets
        if s.via in {"env", "envFrom"}
        for key, var in s.fields.items()
    }
    assert from_plan == consumed_env(template, lookup.for_namespace("ns"))
    assert ("db", "tls.crt", "DB_tls.crt") not in from_plan


def test_workload_entry_says_why_a_workload_is_left_out_or_skipped() -> None:
    naming = PathTemplate(DEFAULT_PATH_TEMPLATE)
    protected = tpl(c(env=[env("PASS", "db", "password")]), annotations={INJECT: "true"})
    assert workload_entry(wl("ns", D, "a", protected), SecretLookup(), naming) == LeftOut(
        ALREADY_PROTECTED
    )
    assert workload_entry(wl("ns", D, "b", tpl(c())), SecretLookup(), naming) == LeftOut(NO_SECRETS)

    pending = workload_entry(
        wl("ns", D, "c", tpl(c(env=[env("PASS", "db", "password")]))), SecretLookup(), naming
    )
    assert isinstance(pending, Entry)
    assert pending.skip_reason is None
    assert pending.workload.status is WorkloadStatus.PENDING
    assert [s.vault_path for s in pending.workload.secrets] == ["secret/data/ns/db"]

    files_only = tpl(c(), volumes=[{"name": "certs", "secret": {"secretName": "tls"}}])
    skipped = workload_entry(wl("ns", D, "d", files_only), SecretLookup(), naming)
    assert isinstance(skipped, Entry)
    assert skipped.workload.status is WorkloadStatus.SKIPPED
    assert skipped.skip_reason is not None
    assert "reads Secrets as files the vault cannot serve" in skipped.skip_reason
