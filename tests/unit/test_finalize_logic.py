"""finalize's pure parts: exactly the plan-mapped references are removed, the plan records
what was removed, and unprotect's restore puts back exactly that; the reference scan's
reading of every object kind that can name a Secret."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudtaser import plan as planlib
from cloudtaser.errors import PlanError
from cloudtaser.plan import SecretRef, Workload
from cloudtaser.plan.model import WorkloadStatus
from cloudtaser.target.engine.secret_refs import finalize_edit, missing_refs, restore_fragment
from cloudtaser.target.finalize.step import not_protected_reason
from cloudtaser.target.kube.workloads import WorkloadRef
from cloudtaser.target.references.scan import object_uses

KEYS = {"db": ["password", "username"], "api": ["token"], "other": ["x"]}


def keys(name: str) -> list[str] | None:
    return KEYS.get(name)


def workload() -> Workload:
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
    )


def template() -> dict[str, Any]:
    return {
        "spec": {
            "initContainers": [
                {
                    "name": "migrate",
                    "env": [
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                        }
                    ],
                }
            ],
            "containers": [
                {
                    "name": "app",
                    "env": [
                        {"name": "PLAIN", "value": "kept"},
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                        },
                        {
                            "name": "DB_USER",
                            "valueFrom": {
                                "secretKeyRef": {"name": "db", "key": "username", "optional": True}
                            },
                        },
                        {
                            "name": "FROM_CM",
                            "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}},
                        },
                    ],
                    "envFrom": [
                        {"configMapRef": {"name": "cm"}},
                        {"prefix": "API_", "secretRef": {"name": "api"}},
                    ],
                },
                {"name": "side", "image": "busybox"},
            ],
        }
    }


def _apply_patch(tmpl: dict[str, Any], spec_patch: dict[str, Any]) -> dict[str, Any]:
    """Apply the strategic-merge fragment the way the API server does for these fields (env
    merged by name with $patch: delete, envFrom replaced whole) - to check the fragment."""
    out = copy.deepcopy(tmpl)
    for key, fragments in spec_patch.items():
        for frag in fragments:
            container = next(c for c in out["spec"][key] if c["name"] == frag["name"])
            for entry in frag.get("env", []):
                if entry.get("$patch") == "delete":
                    container["env"] = [e for e in container["env"] if e["name"] != entry["name"]]
                else:
                    container.setdefault("env", []).append(entry)
            if "envFrom" in frag:
                if frag["envFrom"] is None:
                    container.pop("envFrom", None)
                else:
                    container["envFrom"] = frag["envFrom"]
    return out


def test_finalize_removes_exactly_the_mapped_references() -> None:
    edit = finalize_edit(template(), workload(), keys)
    assert edit.problems == []
    after = _apply_patch(template(), edit.spec_patch)
    app = after["spec"]["containers"][0]
    assert [e["name"] for e in app["env"]] == ["PLAIN", "FROM_CM"]
    assert app["envFrom"] == [{"configMapRef": {"name": "cm"}}]
    # the runtime does not serve init containers: their references stay (issue 28, finding 9)
    assert after["spec"]["initContainers"] == template()["spec"]["initContainers"]
    assert "initContainers" not in edit.spec_patch
    assert [(k.ref.container, k.ref.init, k.ref.env) for k in edit.kept] == [
        ("migrate", True, "DB_PASSWORD")
    ]
    assert after["spec"]["containers"][1] == {"name": "side", "image": "busybox"}
    recorded = {(r.container, r.init, r.via, r.secret, r.key, r.env, r.prefix) for r in edit.refs}
    assert recorded == {
        ("app", False, "env", "db", "password", "DB_PASSWORD", None),
        ("app", False, "env", "db", "username", "DB_USER", None),
        ("app", False, "envFrom", "api", None, None, "API_"),
    }
    assert next(r for r in edit.refs if r.env == "DB_USER").optional is True


def test_an_unmapped_secret_reference_stays() -> None:
    tmpl = template()
    tmpl["spec"]["containers"][0]["env"].append(
        {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "other", "key": "x"}}}
    )
    edit = finalize_edit(tmpl, workload(), keys)
    after = _apply_patch(tmpl, edit.spec_patch)
    names = [e["name"] for e in after["spec"]["containers"][0]["env"]]
    assert "OTHER" in names
    assert all(r.secret != "other" for r in edit.refs)


def test_an_envfrom_with_keys_the_plan_does_not_map_is_refused() -> None:
    extra = {**KEYS, "api": ["token", "refresh"]}
    edit = finalize_edit(template(), workload(), extra.get)
    assert edit.problems
    assert "refresh" in edit.problems[0]
    assert all(r.via != "envFrom" for r in edit.refs)


def test_restore_puts_back_exactly_what_finalize_removed() -> None:
    original = template()
    edit = finalize_edit(original, workload(), keys)
    finalized = _apply_patch(original, edit.spec_patch)
    assert len(missing_refs(finalized, edit.refs)) == 3
    restored = _apply_patch(finalized, restore_fragment(finalized, edit.refs))
    assert missing_refs(restored, edit.refs) == []
    app = restored["spec"]["containers"][0]
    by_name = {e["name"]: e for e in app["env"]}
    assert by_name["DB_USER"]["valueFrom"]["secretKeyRef"] == {
        "name": "db",
        "key": "username",
        "optional": True,
    }
    assert {"prefix": "API_", "secretRef": {"name": "api"}} in app["envFrom"]
    assert {"configMapRef": {"name": "cm"}} in app["envFrom"]
    # nothing is missing on the original template: restoring it changes nothing
    assert restore_fragment(original, edit.refs) == {}


def test_the_finalized_references_round_trip_through_the_plan() -> None:
    edit = finalize_edit(template(), workload(), keys)
    w = workload()
    w.finalized_refs = edit.refs
    plan = planlib.MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=planlib.PlanMetadata(name="p"),
        tenants=[planlib.Tenant(name="ns", namespace="ns", workloads=[w])],
    )
    again = planlib.loads(planlib.dumps(plan))
    assert again.tenants[0].workloads[0].finalized_refs == edit.refs


def test_a_finalized_env_reference_without_its_key_is_refused_by_the_plan_loader() -> None:
    text = planlib.dumps(
        planlib.MigrationPlan(
            api_version="cloudtaser.io/v1",
            kind="MigrationPlan",
            metadata=planlib.PlanMetadata(name="p"),
            tenants=[planlib.Tenant(name="ns", namespace="ns", workloads=[workload()])],
        )
    )
    bad = text.replace(
        "      via: envFrom\n",
        "      via: envFrom\n    finalizedRefs:\n    - container: app\n      via: env\n"
        "      secret: db\n",
        1,
    )
    assert "finalizedRefs" in bad
    with pytest.raises(PlanError, match="needs both 'key' and 'env'"):
        planlib.loads(bad)


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        (
            "Pod",
            {
                "metadata": {"name": "bare"},
                "spec": {
                    "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s1"}}]}],
                    "volumes": [
                        {"name": "v", "secret": {"secretName": "s2"}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "s3"}}]}},
                        {
                            "name": "c",
                            "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s4"}},
                        },
                    ],
                    "imagePullSecrets": [{"name": "s5"}],
                },
                "status": {"phase": "Running"},
            },
            {
                ("s1", "envFrom"),
                ("s2", "volume"),
                ("s3", "projected"),
                ("s4", "plugin"),
                ("s5", "imagePullSecret"),
            },
        ),
        (
            "Pod",
            {
                "metadata": {"name": "done"},
                "spec": {"imagePullSecrets": [{"name": "s"}]},
                "status": {"phase": "Succeeded"},
            },
            set(),
        ),
        (
            "CronJob",
            {
                "metadata": {"name": "cj"},
                "spec": {
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "containers": [
                                        {
                                            "name": "c",
                                            "env": [
                                                {
                                                    "name": "E",
                                                    "valueFrom": {
                                                        "secretKeyRef": {"name": "s", "key": "k"}
                                                    },
                                                }
                                            ],
                                        }
                                    ]
                                }
                            }
                        }
                    }
                },
            },
            {("s", "env")},
        ),
        (
            "Job",
            {
                "metadata": {"name": "j"},
                "spec": {
                    "template": {
                        "spec": {"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}
                    }
                },
                "status": {"conditions": [{"type": "Complete", "status": "True"}]},
            },
            set(),
        ),
        (
            "ServiceAccount",
            {
                "metadata": {"name": "sa"},
                "secrets": [{"name": "t"}],
                "imagePullSecrets": [{"name": "p"}],
            },
            {("t", "serviceAccount"), ("p", "imagePullSecret")},
        ),
        (
            "Ingress",
            {
                "metadata": {"name": "i"},
                "spec": {"tls": [{"hosts": ["a.example"], "secretName": "tls"}]},
            },
            {("tls", "ingressTLS")},
        ),
        (
            "ReplicaSet",
            {
                "metadata": {
                    "name": "rs",
                    "ownerReferences": [{"kind": "Deployment", "name": "d"}],
                },
                "spec": {"template": {"spec": {"imagePullSecrets": [{"name": "s"}]}}},
            },
            set(),
        ),
    ],
)
def test_the_reference_scan_reads_every_kind(
    kind: str, obj: dict[str, Any], expected: set[tuple[str, str]]
) -> None:
    assert {(u.secret, u.via) for u in object_uses(kind, obj)} == expected


def test_a_migrated_workload_that_lost_its_protection_is_told_how_to_put_it_back() -> None:
    ref = WorkloadRef(tenant="shop", namespace="shop", kind="Deployment", name="api")
    pending = workload()
    assert pending.effective_status == WorkloadStatus.PENDING  # so the two texts can differ
    assert not_protected_reason(pending, ref).endswith("run `cloudtaser target protect` first")
    migrated = workload()
    migrated.status = WorkloadStatus.MIGRATED
    said = not_protected_reason(migrated, ref)
    assert "not protected any more" in said
    assert "keep protect's documents in Git" in said
    assert "--status pending --workload shop/Deployment/api" in said
    assert "run `cloudtaser target protect` first" not in said
