"""Pure parts of protect: drift, GitOps owners, patches, selection."""

from __future__ import annotations

import pytest

import cloudtaser.target.annotations as ann
from cloudtaser.errors import ConfigError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from cloudtaser.target import protect
from cloudtaser.target.engine import consumption
from cloudtaser.target.engine.core import Selection


def _workload(name: str = "api", kind: str = "Deployment") -> Workload:
    return Workload(
        kind=kind,
        name=name,
        secrets=[
            SecretRef(
                source="db", vault_path="secret/data/a/db", fields={"pw": "DB_PW"}, via="env"
            ),
            SecretRef(
                source="vault:secret/data/legacy",
                vault_path="secret/data/a/legacy",
                fields={"token": "LEGACY"},
                via="vaultAgent",
            ),
        ],
    )


def test_plan_triples_leave_out_vault_agent_sources() -> None:
    assert consumption.plan_triples(_workload()) == {("db", "pw", "DB_PW")}


def test_drift_names_both_directions_without_values() -> None:
    lines = consumption.drift({("db", "pw", "DB_PW")}, {("db", "password", "DB_PW")})
    assert len(lines) == 2
    assert "no longer consumes" in lines[0]
    assert "does not list" in lines[1]
    assert consumption.drift({("a", "b", "C")}, {("a", "b", "C")}) == []


def test_gitops_writers_are_the_controller_managers_of_a_workload_whose_labels_name_no_owner() -> (
    None
):
    managers = [{"manager": "kustomize-controller"}, {"manager": "kubectl"}]
    unlabelled = {"metadata": {"labels": {"app": "x"}, "managedFields": managers}}
    assert protect.unlabelled_gitops_writers(unlabelled) == [
        "Flux (kustomize-controller) (field manager 'kustomize-controller')"
    ]
    # an owner the labels name is the engine's to say (one refusal or warning): no second list
    labelled = {
        "metadata": {
            "labels": {
                "kustomize.toolkit.fluxcd.io/name": "apps",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
            },
            "managedFields": managers,
        }
    }
    assert protect.unlabelled_gitops_writers(labelled) == []
    assert protect.unlabelled_gitops_writers({"metadata": {"labels": {"app": "x"}}}) == []


def test_build_patch_carries_everything_in_one_conditional_patch() -> None:
    patch = protect.build_patch({ann.INJECT: "true"}, "2026-01-01T00:00:00Z", "42")
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {"cloudtaser.io/inject": "true"},
                    "annotations": {
                        "cloudtaser.io/inject": "true",
                        "cloudtaser.io/restartedAt": "2026-01-01T00:00:00Z",
                    },
                }
            }
        },
    }


def test_build_patch_clears_managed_keys_no_longer_intended() -> None:
    live = {ann.AUTH_PATH: "auth/old", ann.RESTARTED_AT: "t0", "other": "kept"}
    patch = protect.build_patch({ann.INJECT: "true"}, "t1", None, live)
    assert "metadata" not in patch
    assert patch["spec"]["template"]["metadata"]["annotations"] == {
        ann.AUTH_PATH: None,
        ann.INJECT: "true",
        ann.RESTARTED_AT: "t1",
    }


def test_removal_patch_removes_exactly_what_protect_adds() -> None:
    obj = {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {"app": "x", "cloudtaser.io/inject": "true"},
                    "annotations": {
                        "cloudtaser.io/inject": "true",
                        "cloudtaser.io/env-map": "a=A",
                        "cloudtaser.io/restartedAt": "t",
                        "kubectl.kubernetes.io/restartedAt": "t",
                    },
                }
            }
        },
    }
    assert protect.build_removal_patch(obj, "Deployment") == {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "cloudtaser.io/inject": None,
                        "cloudtaser.io/env-map": None,
                        "cloudtaser.io/restartedAt": None,
                    },
                    "labels": {"cloudtaser.io/inject": None},
                }
            }
        },
    }
    assert (
        protect.build_removal_patch({"spec": {"template": {"metadata": {}}}}, "Deployment") is None
    )


def _plan() -> MigrationPlan:
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="p"),
        tenants=[
            Tenant(
                name="a",
                namespace="ns-a",
                workloads=[_workload("api"), _workload("db", "StatefulSet")],
            ),
            Tenant(name="b", namespace="ns-b", workloads=[_workload("api")]),
        ],
    )


@pytest.mark.parametrize(
    ("tenants", "workloads", "expected"),
    [
        ((), (), ["ns-a/api", "ns-a/db", "ns-b/api"]),
        (("b",), (), ["ns-b/api"]),
        (("ns-a",), (), ["ns-a/api", "ns-a/db"]),
        ((), ("sts/db",), ["ns-a/db"]),
        ((), ("Deployment/api",), ["ns-a/api", "ns-b/api"]),
        ((), ("ns-b/api",), ["ns-b/api"]),
        ((), ("ns-a/deploy/api",), ["ns-a/api"]),
        (("a",), ("deploy/api",), ["ns-a/api"]),
    ],
)
def test_selection(
    tenants: tuple[str, ...], workloads: tuple[str, ...], expected: list[str]
) -> None:
    plan = _plan()
    sel = Selection(tenants=tenants, workloads=workloads)
    sel.check(plan)
    got = [f"{t.namespace}/{w.name}" for t, w in plan.iter_workloads() if sel.matches(t, w)]
    assert got == expected


@pytest.mark.parametrize(
    ("tenants", "workloads", "message"),
    [
        (("nope",), (), "--tenant 'nope'"),
        ((), ("ns-a/nope",), "matches no workload"),
        ((), ("a/b/c/d",), "expected KIND/NAME"),
        ((), ("ns/replicaset/x",), "unknown kind"),
    ],
)
def test_selection_rejects_what_matches_nothing(
    tenants: tuple[str, ...], workloads: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Selection(tenants=tenants, workloads=workloads).check(_plan())
