"""One rule book: every entry point agrees on names, paths and mounts.

Generated names, paths and mounts at and beyond every limit of ``cloudtaser.plan.rules`` go
through each entry point that checks them:

- ``plan validate`` (``planlib.loads``),
- ``source apply-plan`` (``build_grants``, its defence-in-depth re-validation),
- ``source verify-plan`` (``validate_kv_path``),
- ``target protect`` (``build_annotations``, the annotation values it writes),
- ``target discover`` (``build_plan``: whatever it writes must pass all of the above).

The properties: a plan ``plan validate`` accepts passes apply-plan, verify-plan and protect;
a plan ``plan validate`` refuses for a name or path rule is refused by apply-plan as well
(they agree both ways); discover either refuses up front (``ConfigError``, exit 2) or writes a
plan that passes everything.

The same holds for dangerous targets of a vault field (``rules.DANGEROUS_ENV``): ``plan
validate`` accepts a mapping exactly when the rule book does, what it accepts protect writes
(with ``cloudtaser.io/accept-dangerous-env``) and the runtime's contract accepts, and discover
writes a plan that loads whatever variable a workload uses (skipped when it is dangerous).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.cli import main
from cloudtaser.errors import ConfigError, PlanError
from cloudtaser.plan import rules
from cloudtaser.source.grants import build_grants
from cloudtaser.source.preflight import validate_kv_path
from cloudtaser.target import annotations as ann
from cloudtaser.target.discover.build import build_plan
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup

NOW = datetime(2026, 5, 16, 10, 0, 0, tzinfo=UTC)
ADDRESS = "https://vault.example:8200"

_SAFE = "abcdefghijklmnopqrstuvwxyz0123456789-._"
_DNS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def _around(limit: int) -> st.SearchStrategy[int]:
    """Lengths at, just under and just over ``limit``, plus small ones."""
    return st.sampled_from([1, 2, limit - 1, limit, limit + 1, limit + 7]) | st.integers(1, 20)


@st.composite
def _segment(draw: st.DrawFn, limit: int = rules.MAX_SEGMENT) -> str:
    length = draw(_around(limit))
    first = draw(st.sampled_from("abcxyz019"))
    rest = draw(st.text(alphabet=_SAFE, min_size=length - 1, max_size=length - 1))
    return first + rest


@st.composite
def _hostile_segment(draw: st.DrawFn) -> str:
    return draw(
        st.sampled_from([".", "..", "", "*", "a*", "+", "a b", 'q"', "x\n", "${x}", "é", "a\x00"])
    )


_MOUNTS = st.one_of(
    _segment(),
    st.sampled_from(sorted(rules.RESERVED_MOUNTS)),
    st.sampled_from(["SYS", "Sys", "sys/x", "Auth", "IDENTITY", "Cubbyhole/a", "TOKEN"]),
    st.builds(lambda a, b: f"{a}/{b}", _segment(60), _segment(60)),
    _hostile_segment(),
)


@st.composite
def _vault_path(draw: st.DrawFn) -> str:
    mount = draw(st.one_of(st.just("secret"), _MOUNTS))
    # mostly inside the tenant's own scope (<mount>/data/payments/<secret>), so the name and
    # length rules are what decides; sometimes anywhere
    scope = draw(st.sampled_from(["payments", "payments", "payments", "other"]))
    segments = draw(st.lists(st.one_of(_segment(), _hostile_segment()), min_size=1, max_size=4))
    path = "/".join([mount, "data", scope, *segments])
    if draw(st.booleans()):  # also reach the whole-path limit
        while len(path) < rules.MAX_VAULT_PATH - 10:
            path += "/" + draw(_segment(120))
    return path


def _plan_data(
    vault_path: str,
    *,
    plan_name: str = "prod-eu",
    namespace: str = "payments",
    auth_mount: str | None = None,
    kv_mount: str | None = None,
    service_account: str = "api",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": plan_name}
    if auth_mount is not None:
        metadata["authMount"] = auth_mount
    if kv_mount is not None:
        metadata["kvMount"] = kv_mount
    return {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": metadata,
        "tenants": [
            {
                "name": namespace,
                "namespace": namespace,
                "workloads": [
                    {
                        "kind": "Deployment",
                        "name": "api",
                        "serviceAccount": service_account,
                        "secrets": [
                            {"source": "db", "vaultPath": vault_path, "fields": {"pw": "PW"}}
                        ],
                    }
                ],
            }
        ],
    }


def _validate(data: dict[str, Any]) -> planlib.MigrationPlan | None:
    """``plan validate`` (load, then the tenant-scope rules): the plan, or None if refused."""
    import json

    try:
        plan = planlib.loads(json.dumps(data))  # JSON is YAML
        planlib.check_isolation(plan)
    except PlanError:
        return None
    return plan


def _unchecked(data: dict[str, Any]) -> planlib.MigrationPlan:
    """The same plan without the loader's checks (what a hostile or buggy caller could pass)."""
    meta = data["metadata"]
    tenant = data["tenants"][0]
    workload = tenant["workloads"][0]
    secret = workload["secrets"][0]
    return planlib.MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=planlib.PlanMetadata(
            name=meta["name"], auth_mount=meta.get("authMount"), kv_mount=meta.get("kvMount")
        ),
        tenants=[
            planlib.Tenant(
                name=tenant["name"],
                namespace=tenant["namespace"],
                workloads=[
                    planlib.Workload(
                        kind=planlib.WorkloadKind.DEPLOYMENT,
                        name="api",
                        service_account=workload["serviceAccount"],
                        secrets=[
                            planlib.SecretRef(
                                source="db", vault_path=secret["vaultPath"], fields={"pw": "PW"}
                            )
                        ],
                    )
                ],
            )
        ],
    )


def _apply_accepts(plan: planlib.MigrationPlan) -> bool:
    try:
        build_grants(plan)
    except PlanError:
        return False
    return True


def _protect_accepts(plan: planlib.MigrationPlan) -> bool:
    tenant, workload = next(plan.iter_workloads())
    try:
        ann.build_annotations(plan, tenant, workload, ADDRESS)
    except ann.AnnotationError:
        return False
    return True


def _verify_accepts(plan: planlib.MigrationPlan) -> bool:
    _tenant, workload = next(plan.iter_workloads())
    try:
        for secret in workload.secrets:
            validate_kv_path(secret.vault_path, allowed_mount=plan.metadata.kv_mount)
    except PlanError:
        return False
    return True


def _agree(data: dict[str, Any]) -> None:
    validated = _validate(data)
    try:
        unchecked = _unchecked(data)
    except ValueError:  # the model's own cross-field rules refuse it even unchecked
        assert validated is None, data
        return
    apply_ok = _apply_accepts(unchecked)
    if validated is not None:
        assert _apply_accepts(validated), data
        assert _verify_accepts(validated), data
        assert _protect_accepts(validated), data
    # both ways: what apply-plan accepts, plan validate accepts (no plan a reviewer is shown as
    # invalid would still be applied, and none shown valid is refused)
    assert apply_ok == (validated is not None), (apply_ok, data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_vault_path())
@example("secret/data/payments/" + "a" * 128)
@example("secret/data/payments/" + "a" * 129)
@example("sys/data/payments/db")
@example("SYS/data/payments/db")
@example("secret/data/" + "/".join(["a" * 100] * 5))
def test_vault_paths_plan_validate_apply_verify_and_protect_agree(vault_path: str) -> None:
    _agree(_plan_data(vault_path))


@settings(max_examples=300, deadline=None)
@given(auth=_MOUNTS, kv=st.one_of(st.none(), _MOUNTS))
@example(auth="sys", kv=None)
@example(auth="kubernetes", kv="Sys")
@example(auth="k" * 128, kv=None)
@example(auth="k" * 129, kv=None)
def test_mounts_plan_validate_apply_and_protect_agree(auth: str, kv: str | None) -> None:
    mount = "secret" if kv is None else kv
    _agree(_plan_data(f"{mount}/data/payments/db", auth_mount=auth, kv_mount=kv))


@st.composite
def _dns_name(draw: st.DrawFn, limit: int) -> str:
    length = draw(_around(limit))
    if length == 1:
        return draw(st.sampled_from("az09"))
    middle = draw(st.text(alphabet=_DNS, min_size=length - 2, max_size=length - 2))
    return draw(st.sampled_from("ab9")) + middle + draw(st.sampled_from("z0"))


@settings(max_examples=300, deadline=None)
@given(
    plan_name=st.one_of(_dns_name(rules.MAX_PLAN_NAME), st.sampled_from(["a_b", "A.B", "-x"])),
    namespace=_dns_name(rules.MAX_DNS_LABEL),
    service_account=_dns_name(rules.MAX_DNS_SUBDOMAIN),
)
def test_names_plan_validate_and_apply_agree(
    plan_name: str, namespace: str, service_account: str
) -> None:
    data = _plan_data(
        f"secret/data/{namespace}/db",
        plan_name=plan_name,
        namespace=namespace,
        service_account=service_account,
    )
    _agree(data)


def _discover(
    secret: str, namespace: str = "payments", **options: Any
) -> planlib.MigrationPlan | None:
    template = {
        "metadata": {},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "env": [
                        {
                            "name": "PW",
                            "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}},
                        }
                    ],
                }
            ]
        },
    }
    workload = ScannedWorkload(namespace, planlib.WorkloadKind.DEPLOYMENT, "api", template, 1)
    try:
        result = build_plan(
            [workload],
            SecretLookup(),
            options=DiscoverOptions(now=NOW, created_by="alice", **options),
            plan_name="prod-eu",
            cluster="https://10.0.0.1:6443",
        )
    except ConfigError:
        return None
    return result.plan


def _passes_everything(plan: planlib.MigrationPlan) -> None:
    reloaded = planlib.loads(planlib.dumps(plan))  # plan validate
    assert _apply_accepts(reloaded)
    for tenant, workload in reloaded.iter_workloads():
        if workload.effective_status is planlib.WorkloadStatus.PENDING:
            ann.build_annotations(reloaded, tenant, workload, ADDRESS)
            for secret in workload.secrets:
                validate_kv_path(secret.vault_path, allowed_mount=reloaded.metadata.kv_mount)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=_dns_name(rules.MAX_DNS_SUBDOMAIN),
    namespace=_dns_name(rules.MAX_DNS_LABEL),
    kv_mount=st.one_of(st.none(), _MOUNTS),
    cluster=st.one_of(st.none(), _segment(), _hostile_segment()),
    isolated=st.booleans(),
)
def test_whatever_discover_writes_passes_every_entry_point(
    secret: str, namespace: str, kv_mount: str | None, cluster: str | None, isolated: bool
) -> None:
    assume(rules.is_dns_subdomain(secret) and rules.is_dns_label(namespace))
    options: dict[str, Any] = {"kv_mount": kv_mount, "cluster_name": cluster}
    if isolated:
        options["path_template"] = "{mount}/data/{cluster}/{namespace}/{secret}"
    plan = _discover(secret, namespace, **options)
    if plan is None:  # refused up front: only for an option the rule book refuses
        assert (
            (kv_mount is not None and rules.kv_mount_problem(kv_mount) is not None)
            or (cluster is not None and not (rules.safe_segment(cluster)))
            or (cluster is not None and len(cluster) > rules.MAX_SEGMENT)
            or (kv_mount is not None and "/" in kv_mount)  # a multi-segment KV mount
        )
        return
    _passes_everything(plan)
    (_tenant, workload), *_ = plan.iter_workloads()
    assert workload.effective_status is planlib.WorkloadStatus.PENDING, workload.reason


# --- the two cases of the issue, as regression tests -----------------------------------------


def test_a_200_character_secret_name_gets_a_path_every_command_accepts() -> None:
    long_name = "a" * 100 + "." + "b" * 99  # a valid 200-character Kubernetes name
    plan = _discover(long_name)
    assert plan is not None
    _passes_everything(plan)
    (_tenant, workload), *_ = plan.iter_workloads()
    (secret,) = workload.secrets
    assert secret.source == long_name  # the plan still names the real Secret
    segment = secret.vault_path.rsplit("/", 1)[1]
    assert len(segment) == rules.MAX_SEGMENT
    assert segment != long_name[: rules.MAX_SEGMENT]
    assert secret.note is not None
    assert "longer than 128" in secret.note
    # two long names with one prefix never share a path
    other = _discover(long_name[:-1] + "c")
    assert other is not None
    (_t, other_workload), *_ = other.iter_workloads()
    assert other_workload.secrets[0].vault_path != secret.vault_path
    # the same name always gives the same path (rediscovery is stable)
    again = _discover(long_name)
    assert again is not None
    assert next(again.iter_workloads())[1].secrets[0].vault_path == secret.vault_path


@pytest.mark.parametrize("mount", ["sys", "SYS", "auth", "identity", "cubbyhole", "token"])
def test_discover_refuses_a_reserved_kv_mount_with_exit_2(
    mount: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _discover("db", kv_mount=mount) is None
    code = main(
        ["target", "discover", "--kv-mount", mount, "--output-plan", "/nonexistent/plan.yaml"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "reserved" in err
    assert "Traceback" not in err


def test_plan_validate_refuses_what_apply_plan_refuses(tmp_path: Any) -> None:
    import json

    for data in (
        _plan_data("secret/data/payments/" + "x" * 129),
        _plan_data("sys/data/payments/db"),
        _plan_data("secret/data/payments/db", auth_mount="Sys"),
        _plan_data("sys/data/payments/db", kv_mount="sys"),
    ):
        path = tmp_path / "plan.yaml"
        path.write_text(json.dumps(data))
        assert main(["plan", "validate", str(path)]) == 2
        assert not _apply_accepts(_unchecked(data))


# --- dangerous targets: plan validate, protect, the runtime contract and discover agree -------

_ENV_NAMES = st.one_of(
    st.sampled_from(sorted(rules.DANGEROUS_ENV)),
    st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(rules.DANGEROUS_ENV_PREFIXES),
        st.text(alphabet="ABCXYZ_09", max_size=6),
    ),
    st.sampled_from(["DB_PASSWORD", "PATHS", "path", "LDAP_X", "NODE_ENV", "XLD_PRELOAD"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
)


def _dangerous_plan(env: str, accepted: list[str], status: str | None) -> dict[str, Any]:
    data = _plan_data("secret/data/payments/db")
    workload = data["tenants"][0]["workloads"][0]
    workload["secrets"][0]["fields"] = (
        {"pw": "DB_PASSWORD", "x": env} if env != "DB_PASSWORD" else {"pw": env}
    )
    if accepted:
        workload["acceptedDangerousEnv"] = accepted
    if status is not None:
        workload["status"] = status
    return data


@settings(max_examples=300, deadline=None)
@given(
    env=_ENV_NAMES,
    accept=st.sampled_from(["none", "it", "it-and-other"]),
    status=st.sampled_from([None, "pending", "skipped", "migrated"]),
)
@example(env="LD_PRELOAD", accept="none", status=None)
@example(env="LD_PRELOAD", accept="it", status=None)
@example(env="CLOUDTASER_ENV_MAP", accept="it", status=None)
@example(env="CLOUDTASER_ENV_MAP", accept="none", status="skipped")
def test_dangerous_targets_plan_validate_protect_and_the_runtime_agree(
    env: str, accept: str, status: str | None
) -> None:
    accepted = {"none": [], "it": [env], "it-and-other": [env, "PATH"]}[accept]
    if env == "PATH" and accept == "it-and-other":
        accepted = [env]
    data = _dangerous_plan(env, accepted, status)
    validated = _validate(data)
    skipped = status == "skipped"
    mapped = set(data["tenants"][0]["workloads"][0]["secrets"][0]["fields"].values())
    expected = all(
        skipped or rules.dangerous_env_problem(name, accepted) is None for name in mapped
    ) and all(rules.accepted_dangerous_env_problem(a, mapped) is None for a in accepted)
    assert (validated is not None) == expected, (data, validated)
    if validated is None or skipped:
        return
    # what plan validate accepts, protect writes and the runtime's contract accepts
    written = ann.build_annotations(validated, *next(validated.iter_workloads()), ADDRESS)
    assert contract.parse_annotations(written)["inject"] is True
    assert written.get(ann.ACCEPT_DANGEROUS_ENV, "") == ",".join(sorted(accepted))


@settings(max_examples=200, deadline=None)
@given(env=_ENV_NAMES)
@example(env="LD_PRELOAD")
@example(env="CLOUDTASER_X")
@example(env="PATH")
def test_whatever_discover_writes_for_a_variable_loads(env: str) -> None:
    template = {
        "metadata": {},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "env": [
                        {"name": env, "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}
                    ],
                }
            ]
        },
    }
    workload = ScannedWorkload("payments", planlib.WorkloadKind.DEPLOYMENT, "api", template, 1)
    result = build_plan(
        [workload],
        SecretLookup(),
        options=DiscoverOptions(now=NOW, created_by="alice"),
        plan_name="prod-eu",
        cluster="https://10.0.0.1:6443",
    )
    _passes_everything(result.plan)
    (_tenant, written), *_ = result.plan.iter_workloads()
    pending = written.effective_status is planlib.WorkloadStatus.PENDING
    assert pending == (not rules.is_dangerous_env(env)), written.reason
