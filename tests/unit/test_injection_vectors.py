"""protect's "proven injected" check agrees with the injector: every pod the Go webhook
produces in spec/contract/injection.json (inject-core's vectors) is proven injected once the
kubelet reports it running, and every pod it leaves alone or denies is not."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import contract
from cloudtaser.target.engine.injection import pod_problems

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "contract" / "injection.json").read_text()
)
MUTATED = [c for c in VECTORS["cases"] if "pod" in c.get("expect", {})]
LEFT_ALONE = [c for c in VECTORS["cases"] if "pod" not in c.get("expect", {})]


def running(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` as the kubelet reports it once everything started: init containers done,
    containers ready, the pod Ready."""
    pod = copy.deepcopy(pod)
    spec = pod.get("spec") or {}
    pod["status"] = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "initContainerStatuses": [
            {"name": c["name"], "state": {"terminated": {"exitCode": 0}}}
            for c in spec.get("initContainers") or ()
        ],
        "containerStatuses": [
            {"name": c["name"], "ready": True, "state": {"running": {}}}
            for c in spec.get("containers") or ()
        ],
    }
    return pod


def test_the_vectors_hold_both_kinds_of_case() -> None:
    assert len(MUTATED) >= 5
    assert len(LEFT_ALONE) >= 5


@pytest.mark.parametrize("case", MUTATED, ids=[c["name"] for c in MUTATED])
def test_every_pod_the_injector_produces_is_proven_injected(case: dict[str, Any]) -> None:
    pod = case["expect"]["pod"]
    assert pod["spec"]["initContainers"][0]["name"] == contract.INIT_CONTAINER
    assert pod_problems(running(pod)) == []


@pytest.mark.parametrize("case", LEFT_ALONE, ids=[c["name"] for c in LEFT_ALONE])
def test_a_pod_the_injector_did_not_mutate_is_not_proven(case: dict[str, Any]) -> None:
    pod = case["input"]["pod"]
    already = any(
        c.get("name") == contract.INIT_CONTAINER
        for c in pod.get("spec", {}).get("initContainers") or ()
    )
    problems = pod_problems(running(pod))
    if already:  # the reinvocation case: it was injected before
        assert problems == []
    else:
        assert problems, case["name"]
