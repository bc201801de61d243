"""The workload kinds of issue 30: CronJob, Job and Argo Rollout next to CloudTaser's three.

One per-kind table (cloudtaser.target.kube.kinds) says where a pod template lives and how a
patch reaches it; the rollout rules say what a template change does; discover records a
CronJob, leaves a CronJob's Job out and skips a standalone Job; ``--cloudtaser-kinds-only``
writes CloudTaser's three only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cloudtaser import plan as planlib
from cloudtaser.cli import build_parser
from cloudtaser.contract import RESTARTED_AT
from cloudtaser.plan import WorkloadKind, WorkloadStatus
from cloudtaser.plan.model import CLOUDTASER_KINDS
from cloudtaser.target.discover.build import build_plan
from cloudtaser.target.discover.entry import COVERED_BY_CRONJOB
from cloudtaser.target.discover.options import DiscoverOptions
from cloudtaser.target.discover.scan import _kinds
from cloudtaser.target.discover.scanned import ScannedWorkload, SecretLookup
from cloudtaser.target.engine.core import Selection
from cloudtaser.target.engine.injection import controller_revision_pods
from cloudtaser.target.kube.kinds import KINDS, kind_info, merge_form, placed, pod_template
from cloudtaser.target.kube.workloads import WorkloadRef
from cloudtaser.target.rollout import (
    NO_ROLLOUT_CONTROLLER,
    RolloutFailedError,
    argo_rollout_status,
    blockers,
    rollout_status,
    wait_for_rollout,
)

NOW = datetime(2026, 12, 6, 19, 0, tzinfo=UTC)
TEMPLATE = {
    "metadata": {"labels": {"app": "x"}},
    "spec": {"containers": [{"name": "app", "image": "busybox"}]},
}


def _obj(kind: str) -> dict[str, Any]:
    if kind == "CronJob":
        return {"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": TEMPLATE}}}}
    return {"spec": {"template": TEMPLATE}}


@pytest.mark.parametrize("kind", list(WorkloadKind))
def test_every_plan_kind_has_one_row_and_its_template_path(kind: WorkloadKind) -> None:
    assert kind_info(kind).kind is kind
    assert pod_template(kind, _obj(kind)) == TEMPLATE


def test_a_cronjob_template_is_under_its_job_template() -> None:
    assert kind_info("CronJob").template_path == ("spec", "jobTemplate", "spec", "template")
    # the Deployment path finds nothing in a CronJob: the table is what makes it right
    assert pod_template("Deployment", _obj("CronJob")) == {}


def test_placed_moves_the_canonical_template_to_the_kinds_path() -> None:
    canonical = {
        "metadata": {"resourceVersion": "7"},
        "spec": {"template": {"metadata": {"annotations": {"a": "1", RESTARTED_AT: "t"}}}},
    }
    assert placed("Deployment", canonical) == canonical
    assert placed("CronJob", canonical) == {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"metadata": {"annotations": {"a": "1", RESTARTED_AT: "t"}}}}
            }
        },
    }
    # a Rollout restarts through Argo Rollouts' own field, not a template annotation
    assert placed("Rollout", canonical) == {
        "metadata": {"resourceVersion": "7"},
        "spec": {"template": {"metadata": {"annotations": {"a": "1"}}}, "restartAt": "t"},
    }
    # unprotect's removal of the annotation is no restart
    removal = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: None}}}}}
    assert placed("Rollout", removal) == {"spec": {"template": {"metadata": {"annotations": {}}}}}
    assert placed("CronJob", None) is None


def test_merge_form_sends_named_lists_whole_as_the_strategic_merge_would_leave_them() -> None:
    live = {
        "metadata": {"resourceVersion": "3"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"keep": "1", "old": "x"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "env": [
                                {"name": "A", "value": "1"},
                                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db"}}},
                            ],
                            "envFrom": [{"secretRef": {"name": "db"}}],
                        },
                        {"name": "side", "env": [{"name": "B", "value": "2"}]},
                    ]
                },
            }
        },
    }
    strategic = {
        "metadata": {"resourceVersion": "3"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"old": None, "new": "y"}},
                "spec": {
                    "containers": [
                        {"name": "app", "env": [{"name": "PW", "$patch": "delete"}], "envFrom": []}
                    ]
                },
            }
        },
    }
    assert merge_form(live, strategic) == {
        "metadata": {"resourceVersion": "3"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"old": None, "new": "y"}},
                "spec": {
                    "containers": [
                        {"name": "app", "env": [{"name": "A", "value": "1"}], "envFrom": []},
                        {"name": "side", "env": [{"name": "B", "value": "2"}]},
                    ]
                },
            }
        },
    }


def test_a_cronjob_rolls_nothing_out_and_starts_no_run() -> None:
    state = rollout_status("CronJob", {"metadata": {"name": "backup", "generation": 4}})
    assert state.done
    assert not state.rolled
    assert "no run started" in state.message
    # no observedGeneration to wait for: the wait returns at once
    calls: list[int] = []

    def fetch() -> dict[str, Any]:
        calls.append(1)
        return {"metadata": {"name": "backup", "generation": 4}}

    assert wait_for_rollout(fetch, "CronJob", min_generation=4, timeout=1).done
    assert len(calls) == 1


def test_an_argo_rollout_without_a_controller_is_patched_not_rolled() -> None:
    state = argo_rollout_status({"metadata": {"name": "r", "generation": 2}})
    assert state.done
    assert not state.rolled
    assert state.message == NO_ROLLOUT_CONTROLLER


@pytest.mark.parametrize(
    ("status", "done", "failed"),
    [
        ({"observedGeneration": "2", "phase": "Healthy"}, True, False),
        ({"observedGeneration": "1", "phase": "Healthy"}, False, False),  # old generation
        ({"observedGeneration": "2", "phase": "Progressing"}, False, False),
        (
            {"observedGeneration": "2", "phase": "Paused", "message": "CanaryPauseStep"},
            False,
            False,
        ),
        ({"observedGeneration": "2", "phase": "Degraded", "message": "x"}, False, True),
    ],
)
def test_an_argo_rollout_is_judged_by_its_controllers_phase(
    status: dict[str, Any], done: bool, failed: bool
) -> None:
    state = argo_rollout_status({"metadata": {"name": "r", "generation": 2}, "status": status})
    assert (state.done, state.failed, state.rolled) == (done, failed, True)


def test_a_degraded_rollout_ends_the_wait() -> None:
    obj = {
        "metadata": {"generation": 2},
        "status": {"observedGeneration": "2", "phase": "Degraded"},
    }
    with pytest.raises(RolloutFailedError):
        wait_for_rollout(lambda: obj, "Rollout", min_generation=2, timeout=1)


def test_blockers_of_the_new_kinds() -> None:
    assert "immutable" in blockers("Job", {}).refusals[0]
    assert blockers("CronJob", {"spec": {"suspend": True}}).warnings
    assert "paused" in blockers("Rollout", {"spec": {"paused": True}}).refusals[0]
    assert blockers("Rollout", {"spec": {"strategy": {"type": "Recreate"}}}).warnings == []


def _env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _template() -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "app", "env": [_env("PW", "db", "password")]}]}}


def _scanned() -> list[ScannedWorkload]:
    return [
        ScannedWorkload("shop", WorkloadKind.CRON_JOB, "backup", _template()),
        ScannedWorkload(
            "shop", WorkloadKind.JOB, "backup-29000", _template(), controller=("CronJob", "backup")
        ),
        ScannedWorkload("shop", WorkloadKind.JOB, "migrate", _template(), running=True),
        ScannedWorkload("shop", WorkloadKind.JOB, "seed", _template()),
        ScannedWorkload("shop", WorkloadKind.ROLLOUT, "web", _template(), replicas=2),
    ]


def _build(workloads: list[ScannedWorkload]) -> Any:
    return build_plan(
        workloads,
        SecretLookup(),
        options=DiscoverOptions(now=NOW, created_by="alice"),
        plan_name="prod",
        cluster="https://k",
    )


def test_discover_records_cronjobs_rollouts_and_standalone_jobs() -> None:
    result = _build(_scanned())
    got = {(w.kind, w.name): w for _t, w in result.plan.iter_workloads()}
    assert set(got) == {
        (WorkloadKind.CRON_JOB, "backup"),
        (WorkloadKind.JOB, "migrate"),
        (WorkloadKind.JOB, "seed"),
        (WorkloadKind.ROLLOUT, "web"),
    }
    assert got[(WorkloadKind.CRON_JOB, "backup")].status is WorkloadStatus.PENDING
    assert got[(WorkloadKind.CRON_JOB, "backup")].replicas is None
    assert got[(WorkloadKind.ROLLOUT, "web")].status is WorkloadStatus.PENDING
    migrate = got[(WorkloadKind.JOB, "migrate")]
    assert migrate.status is WorkloadStatus.SKIPPED
    assert "immutable" in (migrate.reason or "")
    assert "still running" in (migrate.reason or "")
    seed = got[(WorkloadKind.JOB, "seed")]
    assert seed.status is WorkloadStatus.SKIPPED
    assert "has finished" in (seed.reason or "")
    assert result.summary.not_in_plan == {COVERED_BY_CRONJOB: 1}
    assert any("still running" in w for w in result.warnings)


def test_a_plan_with_the_new_kinds_round_trips() -> None:
    plan = _build(_scanned()).plan
    text = planlib.dumps(plan)
    assert "kind: CronJob" in text
    assert "kind: Rollout" in text
    assert "kind: Job" in text
    again = planlib.loads(text)
    assert planlib.dumps(again) == text


def test_cloudtaser_kinds_only_lists_cloudtasers_three() -> None:
    assert _kinds(DiscoverOptions(cloudtaser_kinds_only=True), frozenset()) == [
        WorkloadKind.DEPLOYMENT,
        WorkloadKind.STATEFUL_SET,
        WorkloadKind.DAEMON_SET,
    ]
    assert set(_kinds(DiscoverOptions(cloudtaser_kinds_only=True), frozenset())) == set(
        CLOUDTASER_KINDS
    )
    every = _kinds(DiscoverOptions(), frozenset())
    assert every == [WorkloadKind(k) for k in KINDS]
    # a kind whose CRD is not installed is not listed
    assert WorkloadKind.ROLLOUT not in _kinds(DiscoverOptions(), frozenset({"Rollout"}))


def test_the_cli_passes_cloudtaser_kinds_only() -> None:
    args = build_parser().parse_args(["target", "discover", "--cloudtaser-kinds-only"])
    assert args.cloudtaser_kinds_only is True
    assert build_parser().parse_args(["target", "discover"]).cloudtaser_kinds_only is False


def test_workload_selection_knows_the_new_kinds_and_their_short_names() -> None:
    plan = _build(_scanned()).plan
    ((tenant, cron),) = [(t, w) for t, w in plan.iter_workloads() if w.name == "backup"]
    ((_, web),) = [(t, w) for t, w in plan.iter_workloads() if w.name == "web"]
    for ref in ("CronJob/backup", "cj/backup", "shop/cronjobs/backup"):
        assert Selection(workloads=(ref,)).matches(tenant, cron)
    assert Selection(workloads=("ro/web",)).matches(tenant, web)
    assert not Selection(workloads=("Rollout/backup",)).matches(tenant, cron)


class _Cluster:
    """The two lists the proof makes (ReplicaSets, pods), answered from memory."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects

    def list_objects(self, resource: Any, namespace: str, **_: Any) -> list[dict[str, Any]]:
        return self.objects.get(resource.__name__, [])


def _owned(name: str, uid: str, owner_uid: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "labels": labels,
            "ownerReferences": [{"uid": owner_uid, "controller": True}],
        }
    }


def test_a_rollouts_new_pods_are_those_of_its_current_pod_hash() -> None:
    rollout = {
        "metadata": {"name": "web", "uid": "ro-1"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
        "status": {"currentPodHash": "new"},
    }
    hash_label = "rollouts-pod-template-hash"
    cluster = _Cluster(
        {
            "ReplicaSet": [
                _owned("web-old", "rs-old", "ro-1", **{hash_label: "old"}),
                _owned("web-new", "rs-new", "ro-1", **{hash_label: "new"}),
                _owned("other-new", "rs-x", "ro-2", **{hash_label: "new"}),
            ],
            "Pod": [
                _owned("web-old-a", "p1", "rs-old"),
                _owned("web-new-a", "p2", "rs-new"),
                _owned("web-new-b", "p3", "rs-new"),
                _owned("other-new-a", "p4", "rs-x"),
            ],
        }
    )
    ref = WorkloadRef(tenant="shop", namespace="shop", kind="Rollout", name="web")
    controller, pods = controller_revision_pods(cluster, ref, rollout)  # type: ignore[arg-type]
    assert (controller or {})["metadata"]["name"] == "web-new"
    assert sorted(p["metadata"]["name"] for p in pods) == ["web-new-a", "web-new-b"]
    # no current hash yet (the controller has not reported): no pod counts
    del rollout["status"]
    assert controller_revision_pods(cluster, ref, rollout) == (None, [])  # type: ignore[arg-type]


def test_a_cronjob_has_no_revision_pods_and_lists_nothing() -> None:
    class _NoLists:
        def list_objects(self, *_a: Any, **_k: Any) -> list[dict[str, Any]]:
            raise AssertionError("a CronJob's template change replaces no pod: nothing to list")

    ref = WorkloadRef(tenant="shop", namespace="shop", kind="CronJob", name="backup")
    cron = _obj("CronJob")
    assert controller_revision_pods(_NoLists(), ref, cron) == (cron, [])  # type: ignore[arg-type]
