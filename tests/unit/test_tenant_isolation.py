"""Issue 18, findings 2 and 5: a tenant never gains another tenant's secrets through the plan.

The rules live once, in ``cloudtaser.plan`` (``template_problem``, ``tenant_scope``,
``isolation_problems``); discover, apply-plan (``build_grants``), protect and ``plan validate``
use them. Cluster-side and vault-side behaviour is covered against the real servers in
``tests/integration/test_security_hardening.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudtaser import plan as planlib
from cloudtaser.cli import main
from cloudtaser.errors import ConfigError, PlanError
from cloudtaser.plan import WorkloadKind, WorkloadStatus
from cloudtaser.source.grants import build_grants
from cloudtaser.target.discover.build import build_plan
from cloudtaser.target.discover.naming import PathTemplate
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.podspec import kv2_path

HOSTILE_AGENT_PATHS = [
    "secret/data/billing/db",  # another tenant's path, KV v2 API form
    "secret/payments/db",  # another tenant's path, logical form (converted)
    "other-kv/data/hostile/db",  # another KV mount
    "secret/data/hostile-2/db",  # a namespace sharing the prefix
]


def _agent_workload(ns: str, path: str) -> ScannedWorkload:
    template = {
        "metadata": {
            "annotations": {
                "vault.hashicorp.com/agent-inject": "true",
                "vault.hashicorp.com/agent-inject-secret-db": path,
            }
        },
        "spec": {"containers": [{"name": "app"}]},
    }
    return ScannedWorkload(ns, WorkloadKind.DEPLOYMENT, "app", template, 1)


def _discover(*workloads: ScannedWorkload, **options: Any) -> Any:
    return build_plan(
        list(workloads),
        SecretLookup(),
        options=DiscoverOptions(**options),
        plan_name="prod",
        cluster="https://10.0.0.1:6443",
    )


@pytest.mark.parametrize("path", HOSTILE_AGENT_PATHS)
def test_discover_skips_a_vault_agent_path_outside_the_namespace_scope(path: str) -> None:
    result = _discover(
        _agent_workload("hostile", path), _agent_workload("billing", "secret/data/billing/db")
    )
    by_ns = {t.namespace: t.workloads[0] for t in result.plan.tenants}
    hostile = by_ns["hostile"]
    assert hostile.status is WorkloadStatus.SKIPPED
    assert "outside" in (hostile.reason or "")
    # kept for the reviewer (same mount), never granted while skipped
    assert [s.vault_path for s in hostile.secrets] in ([], [kv2_path(path)[0]])
    assert not any(s.shared for s in hostile.secrets)
    # the legitimate tenant is untouched, and apply-plan accepts the plan for everyone
    assert by_ns["billing"].status is WorkloadStatus.PENDING
    grants, _ = build_grants(result.plan)
    assert [(g.tenant, g.paths) for g in grants] == [("billing", ("secret/data/billing/db",))]


def test_discover_keeps_a_vault_agent_path_inside_the_namespace_scope() -> None:
    result = _discover(_agent_workload("hostile", "secret/data/hostile/nested/db"))
    (tenant,) = result.plan.tenants
    assert tenant.workloads[0].status is WorkloadStatus.PENDING
    assert planlib.isolation_problems(result.plan) == []


def _plan_text(tenants: str, metadata: str = "") -> str:
    return (
        "apiVersion: cloudtaser.io/v1\nkind: MigrationPlan\n"
        f"metadata:\n  name: prod\n{metadata}"
        f"tenants:\n{tenants}"
    )


def _tenant(name: str, *paths: str, shared: bool = False, extra: str = "") -> str:
    secrets = "".join(
        f"      - source: s{i}\n        vaultPath: {p}\n        fields: {{k: K{i}}}\n"
        + ("        shared: true\n" if shared else "")
        for i, p in enumerate(paths)
    )
    return (
        f"- name: {name}\n  namespace: {name}\n{extra}  workloads:\n"
        f"    - kind: Deployment\n      name: app\n      secrets:\n{secrets}"
    )


@pytest.mark.parametrize(
    "tenants",
    [
        # finding 2: a tenant names another tenant's path, or another mount
        _tenant("hostile", "secret/data/billing/db") + _tenant("billing", "secret/data/billing/db"),
        _tenant("hostile", "secret/data/billing/db"),
        _tenant("hostile", "secret/data/hostile/db", "other/data/hostile/db"),
        # finding 5: two tenants on one path
        _tenant("team", "secret/data/shared/x") + _tenant("team-x", "secret/data/shared/x"),
        # a tenant prefix reaching into another tenant's scope
        _tenant("hostile", "secret/data/billing/db", extra="  pathPrefix: secret/data/billing\n")
        + _tenant("billing", "secret/data/billing/other"),
    ],
)
def test_apply_plan_protect_and_validate_refuse_a_widening_plan(
    tenants: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = planlib.loads(_plan_text(tenants))
    assert planlib.isolation_problems(plan)
    with pytest.raises(PlanError, match="outside its own scope"):
        build_grants(plan)
    path = tmp_path / "plan.yaml"
    path.write_text(_plan_text(tenants))
    assert main(["plan", "validate", str(path)]) == 2
    assert "shared: true" in capsys.readouterr().err


def test_protect_refuses_a_widening_plan_before_touching_the_cluster(tmp_path: Path) -> None:
    from cloudtaser.target.engine.core import RunOptions
    from cloudtaser.target.protect import protect

    path = tmp_path / "plan.yaml"
    path.write_text(_plan_text(_tenant("hostile", "secret/data/billing/db")))
    before = path.read_bytes()

    class _NoCluster:  # any request would fail the test with AttributeError
        pass

    with pytest.raises(PlanError, match="outside the scope of tenant 'hostile'"):
        protect(_NoCluster(), path, RunOptions(actor="t@h", vault_address="https://vault:8200"))  # type: ignore[arg-type]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("tenants", "metadata"),
    [
        (_tenant("a", "secret/data/a/db") + _tenant("b", "secret/data/b/db"), ""),
        (_tenant("a", "secret/data/legacy/a-db", extra="  pathPrefix: secret/data/legacy\n"), ""),
        (_tenant("a", "secret/data/billing/db", shared=True), ""),  # reviewer's decision
        (_tenant("a", "secret/data/common/x", shared=True)
         + _tenant("b", "secret/data/common/x", shared=True), ""),
        (_tenant("a", "kv/data/eu-1/a/db"),
         "  pathTemplate: '{mount}/data/{cluster}/{namespace}/{secret}'\n  pathCluster: eu-1\n"),
        (_tenant("a", "kv/data/prod/a/db"),
         "  pathTemplate: '{mount}/data/{cluster}/{namespace}/{secret}'\n"),  # {cluster}: name
    ],
)  # fmt: skip
def test_in_scope_and_marked_shared_paths_are_accepted(tenants: str, metadata: str) -> None:
    plan = planlib.loads(_plan_text(tenants, metadata))
    assert planlib.isolation_problems(plan) == []
    build_grants(plan)


def test_cluster_segment_is_part_of_the_scope() -> None:
    plan = planlib.loads(
        _plan_text(
            _tenant("a", "kv/data/other-cluster/a/db"),
            "  pathTemplate: '{mount}/data/{cluster}/{namespace}/{secret}'\n  pathCluster: eu-1\n",
        )
    )
    assert "outside the scope" in planlib.isolation_problems(plan)[0][1]


def test_skipped_workloads_are_not_checked() -> None:
    text = _plan_text(_tenant("hostile", "secret/data/billing/db")).replace(
        "      name: app\n", "      name: app\n      status: skipped\n"
    )
    assert planlib.isolation_problems(planlib.loads(text)) == []


# --- finding 5: injective templates only --------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{mount}/data/{namespace}-{secret}",
        "{mount}/data/{secret}-{namespace}",
        "{mount}/data/x{namespace}/{secret}",
        "{mount}/data/{namespace}{secret}",
        "{mount}/data/{namespace}/{secret}{namespace}",
        "{namespace}/data/{secret}",  # the namespace would pick the mount (sys!)
        "{mount}/data/{namespace}/{secret}/{secret}",
        "{mount}/data/{cluster}{namespace}/{secret}",
    ],
)
def test_non_injective_path_templates_are_refused(template: str) -> None:
    assert planlib.template_problem(template) is not None
    with pytest.raises(ConfigError):
        PathTemplate(template)


def test_the_reported_collision_cannot_happen_any_more() -> None:
    with pytest.raises(ConfigError, match="whole path segment"):
        _discover(path_template="{mount}/data/{namespace}-{secret}")


@pytest.mark.parametrize(
    "template",
    [
        "{mount}/data/{namespace}/{secret}",
        "{mount}/data/{cluster}/{namespace}/{secret}",
        "apps/data/k8s/{namespace}/{secret}",
        "{mount}/data/{namespace}/app-{secret}",
        "{mount}/data/{secret}/{namespace}",
    ],
)
def test_injective_templates_are_accepted(template: str) -> None:
    assert planlib.template_problem(template) is None


def test_recorded_non_injective_template_makes_the_plan_unusable() -> None:
    plan = planlib.loads(
        _plan_text(
            _tenant("a", "secret/data/a-db"),
            "  pathTemplate: '{mount}/data/{namespace}-{secret}'\n",
        )
    )
    (problem,) = planlib.isolation_problems(plan)
    assert problem[0] == "$.metadata.pathTemplate"


# --- finding 3: what a reviewer sees is what runs ----------------------------------------------

_SKIPPED_PLAN = _plan_text(_tenant("a", "secret/data/a/db")).replace(
    "      name: app\n", "      name: app\n      status: skipped\n"
)


@pytest.mark.parametrize(
    "hidden",
    [
        "\x00",  # the YAML parser stops here silently
        "\x1b[8m",  # ANSI "concealed"
        "\x1b[2K\r",  # erase the line
        "\r ",  # a lone CR rewinds the line
        "\x9b",  # C1 CSI
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\u200b",  # zero-width space
        "\t",
        "\x7f",
    ],
)
def test_plan_with_hidden_characters_is_refused(hidden: str) -> None:
    text = _SKIPPED_PLAN.replace(
        "      status: skipped\n", f"      # note{hidden}\n      status: skipped\n"
    )
    with pytest.raises(PlanError, match="control or invisible character") as caught:
        planlib.loads(text.encode())
    assert hidden not in str(caught.value)
    assert "line 11" in str(caught.value)


def test_nul_before_status_can_no_longer_turn_skipped_into_pending() -> None:
    text = _SKIPPED_PLAN.replace("      status: skipped\n", "\x00      status: skipped\n")
    with pytest.raises(PlanError, match="U\\+0000"):
        planlib.loads(text)


def test_crlf_and_a_bom_are_still_fine() -> None:
    text = "\ufeff" + _SKIPPED_PLAN.replace("\n", "\r\n")
    assert planlib.loads(text.encode()).tenants[0].workloads[0].status is WorkloadStatus.SKIPPED


@pytest.mark.parametrize("escape", ["\\u202e", "\\x9b", "\\u200b", "\\x1b", "\\0"])
def test_hidden_characters_written_as_yaml_escapes_are_refused_too(escape: str) -> None:
    text = _SKIPPED_PLAN.replace(
        "      status: skipped\n", f'      status: skipped\n      reason: "a{escape}b"\n'
    )
    with pytest.raises(PlanError, match="single line of printable text"):
        planlib.loads(text)
