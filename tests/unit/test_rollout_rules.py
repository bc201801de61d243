"""kubectl's rollout-complete rules and the blockers, as pure functions on status dicts."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cloudtaser.target import rollout


def _deploy(
    *, generation: int = 2, observed: int = 2, spec_replicas: int = 3, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "api", "generation": generation},
        "spec": {"replicas": spec_replicas},
        "status": {"observedGeneration": observed, **status},
    }


def test_deployment_waits_until_the_generation_is_observed() -> None:
    state = rollout.deployment_status(_deploy(generation=3, observed=2))
    assert not state.done
    assert "observed" in state.message


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        ({"updatedReplicas": 1, "replicas": 3, "availableReplicas": 3}, "1 out of 3 new"),
        ({"updatedReplicas": 3, "replicas": 4, "availableReplicas": 3}, "1 old replicas"),
        ({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}, "2 of 3 updated"),
    ],
)
def test_deployment_waits_for_updated_old_and_available_replicas(
    status: dict[str, int], fragment: str
) -> None:
    state = rollout.deployment_status(_deploy(**status))
    assert not state.done
    assert not state.failed
    assert fragment in state.message


def test_deployment_complete_and_progress_deadline() -> None:
    done = _deploy(updatedReplicas=3, replicas=3, availableReplicas=3)
    assert rollout.deployment_status(done).done
    stuck = _deploy(
        updatedReplicas=1,
        conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
    )
    state = rollout.deployment_status(stuck)
    assert state.failed
    assert not state.done


def test_deployment_replicas_default_to_one() -> None:
    obj = _deploy(spec_replicas=5, updatedReplicas=1, replicas=1, availableReplicas=1)
    del obj["spec"]["replicas"]
    assert rollout.deployment_status(obj).done


def _ds(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "agent", "generation": 4},
        "spec": {"updateStrategy": {"type": "RollingUpdate"}},
        "status": {"observedGeneration": 4, **status},
    }


def test_daemonset_rules() -> None:
    assert not rollout.daemonset_status(
        _ds(desiredNumberScheduled=2, updatedNumberScheduled=1, numberAvailable=2)
    ).done
    assert not rollout.daemonset_status(
        _ds(desiredNumberScheduled=2, updatedNumberScheduled=2, numberAvailable=1)
    ).done
    assert rollout.daemonset_status(
        _ds(desiredNumberScheduled=2, updatedNumberScheduled=2, numberAvailable=2)
    ).done
    unobserved = _ds(desiredNumberScheduled=2, updatedNumberScheduled=2, numberAvailable=2)
    unobserved["status"]["observedGeneration"] = 3
    assert not rollout.daemonset_status(unobserved).done


def test_ondelete_cannot_report_rollout_status() -> None:
    obj = _ds()
    obj["spec"]["updateStrategy"]["type"] = "OnDelete"
    assert rollout.daemonset_status(obj).failed
    sts = _sts()
    sts["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert rollout.statefulset_status(sts).failed


def _sts(*, partition: int | None = None, **status: Any) -> dict[str, Any]:
    strategy: dict[str, Any] = {"type": "RollingUpdate"}
    if partition is not None:
        strategy["rollingUpdate"] = {"partition": partition}
    return {
        "metadata": {"name": "db", "generation": 2},
        "spec": {"replicas": 3, "updateStrategy": strategy},
        "status": {"observedGeneration": 2, **status},
    }


def test_statefulset_rules() -> None:
    assert not rollout.statefulset_status(_sts(readyReplicas=2)).done
    assert not rollout.statefulset_status(
        _sts(readyReplicas=3, updateRevision="db-2", currentRevision="db-1")
    ).done
    assert rollout.statefulset_status(
        _sts(readyReplicas=3, updateRevision="db-2", currentRevision="db-2")
    ).done
    never_observed = _sts(readyReplicas=3, updateRevision="a", currentRevision="a")
    never_observed["status"]["observedGeneration"] = 0
    assert not rollout.statefulset_status(never_observed).done


def test_statefulset_with_defaulted_partition_zero_needs_every_pod_updated() -> None:
    assert not rollout.statefulset_status(
        _sts(partition=0, readyReplicas=3, updatedReplicas=2)
    ).done
    assert rollout.statefulset_status(_sts(partition=0, readyReplicas=3, updatedReplicas=3)).done


def test_statefulset_partition_completes_when_the_upper_ordinals_are_updated() -> None:
    waiting = _sts(partition=1, readyReplicas=3, updatedReplicas=1, updateRevision="b")
    assert not rollout.statefulset_status(waiting).done
    done = _sts(partition=1, readyReplicas=3, updatedReplicas=2, updateRevision="b")
    assert rollout.statefulset_status(done).done


def test_rollout_status_dispatches_by_kind() -> None:
    assert rollout.rollout_status(
        "Deployment", _deploy(updatedReplicas=3, replicas=3, availableReplicas=3)
    ).done
    with pytest.raises(ValueError, match="no rollout rule"):
        rollout.rollout_status("ReplicaSet", {})


def test_blockers_refuse_paused_ondelete_partition_and_warn_recreate() -> None:
    paused = {"spec": {"paused": True, "strategy": {"type": "Recreate"}}}
    found = rollout.blockers("Deployment", paused)
    assert len(found.refusals) == 1
    assert "paused" in found.refusals[0]
    assert "Recreate" in found.warnings[0]
    assert rollout.blockers(
        "DaemonSet", {"spec": {"updateStrategy": {"type": "OnDelete"}}}
    ).refusals
    assert rollout.blockers(
        "StatefulSet", {"spec": {"updateStrategy": {"type": "OnDelete"}}}
    ).refusals
    partition = rollout.blockers("StatefulSet", _sts(partition=2))
    assert "partition=2" in partition.refusals[0]
    assert rollout.blockers("StatefulSet", _sts(partition=0)) == rollout.Blockers()
    assert rollout.blockers("Deployment", {"spec": {}}) == rollout.Blockers()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_wait_for_rollout_returns_when_complete_and_reports_progress() -> None:
    states = iter(
        [
            _deploy(observed=1, updatedReplicas=3, replicas=3, availableReplicas=3),
            _deploy(updatedReplicas=1, replicas=3),
            _deploy(updatedReplicas=3, replicas=3, availableReplicas=3),
        ]
    )
    seen: list[str] = []
    state = rollout.wait_for_rollout(
        lambda: next(states),
        "Deployment",
        min_generation=2,
        timeout=10,
        interval=0.001,
        on_progress=seen.append,
    )
    assert state.done
    assert seen[0].startswith("waiting for the controller")
    assert "1 out of 3" in seen[1]


def test_wait_for_rollout_times_out_fails_and_cancels() -> None:
    clock = _Clock()

    def fetch() -> dict[str, Any]:
        clock.now += 5
        return _deploy(updatedReplicas=1)

    with pytest.raises(rollout.RolloutTimeoutError, match="after 12s"):
        rollout.wait_for_rollout(fetch, "Deployment", timeout=12, interval=0.001, clock=clock)
    failing = _deploy(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    with pytest.raises(rollout.RolloutFailedError):
        rollout.wait_for_rollout(lambda: failing, "Deployment", timeout=5)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(rollout.RolloutCancelledError):
        rollout.wait_for_rollout(
            lambda: _deploy(updatedReplicas=1), "Deployment", timeout=5, cancel=cancel
        )
