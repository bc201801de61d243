"""apply-plan's pure logic: names, HCL rendering, diffing, and hostile plans refused early.

The hostile-plan tests build plans in code (msgspec Struct constructors skip the loader's
pattern checks), so they exercise provision's own re-validation. Each runs ``apply_plan`` with
a client aimed at a closed port and no retries: any request would surface as
``VaultUnreachableError``; ``PlanError`` and ``requests_sent == 0`` prove none was sent.
"""

from __future__ import annotations

import pytest

from cloudtaser import plan as planlib
from cloudtaser.changes import Action
from cloudtaser.config import VaultTarget
from cloudtaser.errors import PlanError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from cloudtaser.source.grants import TenantGrant, build_grants, parse_duration, render_policy
from cloudtaser.source.openbao import OpenBaoClient, RetryPolicy
from cloudtaser.source.preflight import validate_kv_path
from cloudtaser.source.provision import apply_plan, policy_action, role_action

CANARY_TOKEN = "hvs.CANARY-unit-token-0123456789"


def _plan(
    *tenants: Tenant, name: str = "prod-eu", kv_mount: str | None = None, auth: str | None = None
) -> MigrationPlan:
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name=name, kv_mount=kv_mount, auth_mount=auth),
        tenants=list(tenants),
    )


def _tenant(name: str, *workloads: Workload, namespace: str | None = None) -> Tenant:
    return Tenant(name=name, namespace=namespace or name, workloads=list(workloads))


def _workload(name: str, *paths: str, sa: str | None = None, status: str | None = None) -> Workload:
    return Workload(
        kind=planlib.WorkloadKind.DEPLOYMENT,
        name=name,
        service_account=sa,
        status=planlib.WorkloadStatus(status) if status else None,
        secrets=[
            SecretRef(source=f"s{i}", vault_path=p, fields={"password": f"PW_{i}"})
            for i, p in enumerate(paths)
        ],
    )


def _dead_client() -> OpenBaoClient:
    target = VaultTarget(address="http://127.0.0.1:9", token=CANARY_TOKEN, timeout=2.0)
    return OpenBaoClient(target, retry=RetryPolicy(max_attempts=1))


# --- names and rendering ---------------------------------------------------------------------


def test_policy_grants_read_on_exactly_the_tenants_paths_with_managed_by_header() -> None:
    plan = _plan(
        _tenant(
            "payments",
            _workload("api", "secret/data/payments/db", "secret/data/payments/api", sa="api"),
            _workload("worker", "secret/data/payments/db"),
        ),
        _tenant("shop", _workload("web", "secret/data/shop/db")),
    )
    grants, skipped = build_grants(plan)
    assert skipped == []
    payments = grants[0]
    assert payments.policy == payments.role == "cloudtaser-prod-eu-payments"
    assert payments.paths == ("secret/data/payments/api", "secret/data/payments/db")
    assert payments.service_accounts == ("api", "default")
    assert payments.policy_hcl == (
        "# managed-by: cloudtaser; plan=prod-eu; tenant=payments\n"
        "# Written by 'cloudtaser source apply-plan'; hand edits are overwritten on the next run.\n"
        "# namespace=payments; role=auth/kubernetes/role/cloudtaser-prod-eu-payments\n"
        'path "secret/data/payments/api" {\n'
        '  capabilities = ["read"]\n'
        "}\n"
        'path "secret/data/payments/db" {\n'
        '  capabilities = ["read"]\n'
        "}\n"
    )
    assert "shop" not in payments.policy_hcl
    assert payments.role_fields() == {
        "bound_service_account_names": ["api", "default"],
        "bound_service_account_namespaces": ["payments"],
        "token_policies": ["cloudtaser-prod-eu-payments"],
        "token_ttl": 3600,
    }


def test_names_include_the_plan_so_two_clusters_never_collide() -> None:
    tenant = _tenant("payments", _workload("api", "secret/data/payments/db"))
    a, _ = build_grants(_plan(tenant, name="cluster-a"))
    b, _ = build_grants(_plan(tenant, name="cluster-b"))
    assert a[0].policy != b[0].policy
    assert a[0].role != b[0].role


def test_names_are_lower_cased_the_way_openbao_stores_them() -> None:
    grants, _ = build_grants(_plan(_tenant("t", _workload("w", "secret/data/t/x")), name="Prod-EU"))
    assert grants[0].policy == "cloudtaser-prod-eu-t"
    assert "plan=Prod-EU" in grants[0].policy_hcl


def test_skipped_workloads_grant_nothing_and_all_skipped_tenants_get_no_objects() -> None:
    plan = _plan(
        _tenant(
            "a",
            _workload("live", "secret/data/a/live", sa="live"),
            _workload("gone", "secret/data/a/gone", sa="gone", status="skipped"),
        ),
        _tenant("b", _workload("gone", "secret/data/b/x", status="skipped")),
        _tenant("c", _workload("nosecrets")),
    )
    grants, skipped = build_grants(plan)
    assert [g.tenant for g in grants] == ["a"]
    assert grants[0].paths == ("secret/data/a/live",)
    assert grants[0].service_accounts == ("live",)
    assert dict(skipped) == {
        "b": "every workload is skipped",
        "c": "no workload consumes a secret",
    }


def test_role_uses_plan_auth_mount_ttl_and_audience() -> None:
    plan = _plan(_tenant("t", _workload("w", "kv/data/t/x")), auth="k8s-prod")
    grants, _ = build_grants(plan, token_ttl=900, audience="openbao")
    assert "role=auth/k8s-prod/role/cloudtaser-prod-eu-t" in grants[0].policy_hcl
    fields = grants[0].role_fields()
    assert fields["token_ttl"] == 900
    assert fields["audience"] == "openbao"


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("1h", 3600), ("30m", 1800), ("1h30m", 5400), ("45s", 45)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1d", "-5", "1h 30m", "9999999999"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|range"):
        parse_duration(text)


# --- hostile plans ---------------------------------------------------------------------------

HOSTILE_PATHS = [
    pytest.param("secret/data/payments/*", id="glob-star"),
    pytest.param("secret/data/payments/+/db", id="glob-plus"),
    pytest.param('secret/data/x" {\n capabilities=["sudo"] }\npath "sys/*', id="hcl-injection"),
    pytest.param("secret/data/a\nb", id="newline"),
    pytest.param("secret/data/a b", id="blank"),
    pytest.param("secret/data/${identity.entity.id}", id="template"),
    pytest.param("secret/data/a'b", id="single-quote"),
    pytest.param("secret/data//x", id="empty-segment"),
    pytest.param("sys/data/policies", id="sys-mount"),
    pytest.param("auth/data/token", id="auth-mount"),
    pytest.param("secret/metadata/x", id="not-a-data-path"),
    pytest.param("secret/data/" + "a" * 600, id="very-long-path"),
    pytest.param("secret/data/" + "/".join(["a" * 129]), id="very-long-segment"),
    pytest.param("secret/data/x\\y", id="backslash"),
    pytest.param("secret/data/x%2e%2e", id="percent"),
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_vault_path_is_rejected_before_any_request(path: str) -> None:
    plan = _plan(_tenant("t", _workload("w", path)))
    client = _dead_client()
    with pytest.raises(PlanError) as info:
        apply_plan(client, plan)
    assert client.requests_sent == 0
    assert "\n" not in str(info.value)
    assert CANARY_TOKEN not in str(info.value)


def test_path_in_another_mount_than_the_plans_kv_mount_is_rejected() -> None:
    # bypass the plan's own cross-field check by building the metadata afterwards
    plan = _plan(_tenant("t", _workload("w", "secret/data/a", "other/data/b")))
    plan.metadata.kv_mount = "secret"
    client = _dead_client()
    with pytest.raises(PlanError, match="outside the plan's KV mount 'secret'"):
        apply_plan(client, plan)
    assert client.requests_sent == 0


def test_dot_dot_segment_is_rejected_by_the_loader_and_by_provision() -> None:
    text = """\
apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata: {name: p}
tenants:
- name: t
  namespace: t
  workloads:
  - kind: Deployment
    name: w
    secrets:
    - {source: s, vaultPath: secret/data/../../sys/policies/acl/root}
"""
    with pytest.raises(PlanError, match=r"\.\."):
        planlib.loads(text)
    with pytest.raises(PlanError, match=r"'\.\.' segment"):
        validate_kv_path("secret/data/../../sys/policies/acl/root")


@pytest.mark.parametrize(
    ("tenant", "namespace", "sa", "plan_name"),
    [
        pytest.param("t" * 300, "t", None, "p", id="very-long-tenant"),
        pytest.param('t"x', "t", None, "p", id="quote-in-tenant"),
        pytest.param("t", "ns\nx", None, "p", id="newline-in-namespace"),
        pytest.param("t", "t", "sa*", "p", id="glob-service-account"),
        pytest.param("t", "t", "a" * 300, "p", id="very-long-service-account"),
        pytest.param("t", "t", None, "p;x", id="semicolon-in-plan-name"),
        pytest.param("t", "t", None, "p" * 200, id="very-long-plan-name"),
    ],
)
def test_hostile_names_are_rejected_before_any_request(
    tenant: str, namespace: str, sa: str | None, plan_name: str
) -> None:
    plan = _plan(
        _tenant(tenant, _workload("w", "secret/data/x", sa=sa), namespace=namespace),
        name=plan_name,
    )
    client = _dead_client()
    with pytest.raises(PlanError):
        apply_plan(client, plan)
    assert client.requests_sent == 0


@pytest.mark.parametrize("audience", ['a"b', "a b", "x" * 300, "a\nb"])
def test_hostile_audience_is_rejected(audience: str) -> None:
    plan = _plan(_tenant("t", _workload("w", "secret/data/x")))
    with pytest.raises(PlanError, match="audience"):
        build_grants(plan, audience=audience)


def test_render_policy_refuses_unvalidated_values() -> None:
    with pytest.raises(PlanError, match="refusing to render"):
        render_policy(
            plan_name="p", tenant="t", namespace="t", role_path="r", paths=['a"}\npath "sys/*']
        )


# --- diffing ---------------------------------------------------------------------------------


def _grant() -> TenantGrant:
    grants, _ = build_grants(_plan(_tenant("t", _workload("w", "secret/data/t/x", sa="app"))))
    return grants[0]


def test_policy_diff() -> None:
    grant = _grant()
    assert policy_action(grant, "prod-eu", None) == (Action.CREATE, "")
    assert policy_action(grant, "prod-eu", grant.policy_hcl) == (Action.UNCHANGED, "")
    stale = grant.policy_hcl.replace("secret/data/t/x", "secret/data/t/old")
    assert policy_action(grant, "prod-eu", stale)[0] is Action.UPDATE
    foreign = 'path "secret/data/t/x" {\n  capabilities = ["read", "update"]\n}\n'
    action, detail = policy_action(grant, "prod-eu", foreign)
    assert action is Action.CONFLICT
    assert "not created by cloudtaser" in detail
    other_plan = grant.policy_hcl.replace("plan=prod-eu", "plan=PROD-EU")
    assert policy_action(grant, "prod-eu", other_plan)[0] is Action.CONFLICT


def test_role_diff_compares_only_managed_fields() -> None:
    grant = _grant()
    current = {
        "bound_service_account_names": ["app"],
        "bound_service_account_namespaces": ["t"],
        "token_policies": ["cloudtaser-prod-eu-t"],
        "token_ttl": 3600,
        "token_max_ttl": 7200,  # somebody's tweak: not ours, left alone
        "alias_name_source": "serviceaccount_uid",
    }
    assert role_action(grant, None) == (Action.CREATE, "")
    assert role_action(grant, current) == (Action.UNCHANGED, "")
    assert role_action(grant, {**current, "token_ttl": 60}) == (Action.UPDATE, "token_ttl")
    widened = {**current, "bound_service_account_names": ["app", "*"]}
    assert role_action(grant, widened) == (Action.UPDATE, "bound_service_account_names")
    assert role_action(grant, {**current, "audience": "x"}) == (Action.UPDATE, "audience")
    foreign = {**current, "token_policies": ["admin"]}
    assert role_action(grant, foreign)[0] is Action.CONFLICT
