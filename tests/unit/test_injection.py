"""The pure part of the proof of injection: which pods count as injected, what a denial says,
and that nothing but the wrapper's own log lines is ever quoted."""

from __future__ import annotations

import copy
from typing import Any

from cloudtaser import contract
from cloudtaser.target.engine.injection import denial_from, pod_problems, wrapper_lines

CANARY = "s3cr3t-canary-value-8842"


def injected_pod(name: str = "web-1") -> dict[str, Any]:
    """A pod in the shape of docs/protect.md "Proven injected", as the kubelet reports it."""
    return {
        "metadata": {"name": name, "annotations": {contract.INJECTED_ANNOTATION: "0.1.0"}},
        "spec": {
            "initContainers": [
                {
                    "name": contract.INIT_CONTAINER,
                    "command": ["/cloudtaser-runtime", "install", contract.BIN_MOUNT_PATH],
                }
            ],
            "containers": [
                {"name": "app", "command": [contract.WRAPPER_PATH, "wrap", "--", "/app"]},
                {"name": "side", "command": [contract.WRAPPER_PATH, "wrap", "--", "/side"]},
            ],
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": [
                {
                    "name": contract.INIT_CONTAINER,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }
            ],
            "containerStatuses": [
                {"name": "app", "ready": True, "state": {"running": {}}},
                {"name": "side", "ready": True, "state": {"running": {}}},
            ],
        },
    }


def test_a_pod_in_the_injected_shape_is_proven() -> None:
    assert pod_problems(injected_pod()) == []


def test_a_pod_without_the_init_container_is_not_injected() -> None:
    pod = injected_pod()
    pod["spec"]["initContainers"] = []
    problems = pod_problems(pod)
    assert any("no init container cloudtaser-init" in p for p in problems)


def test_an_init_container_that_failed_is_named_with_its_exit_code() -> None:
    pod = injected_pod()
    pod["status"]["initContainerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 2, "reason": "Error", "message": CANARY}
    }
    problems = pod_problems(pod)
    assert any("exit code 2" in p for p in problems)
    assert CANARY not in " ".join(problems)  # a termination message is never quoted


def test_a_container_not_started_through_the_wrapper_is_named() -> None:
    pod = injected_pod()
    pod["spec"]["containers"][1]["command"] = ["/side"]
    problems = pod_problems(pod)
    assert problems == [
        "pod web-1: container side does not start through the wrapper "
        f"(command[0] is not {contract.WRAPPER_PATH})"
    ]


def test_a_pod_that_is_not_ready_is_not_proven_and_no_message_is_copied() -> None:
    pod = injected_pod()
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    pod["status"]["containerStatuses"][0] = {
        "name": "app",
        "ready": False,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": CANARY}},
        "lastState": {"terminated": {"exitCode": 1, "message": CANARY}},
    }
    problems = pod_problems(pod)
    assert problems == ["pod web-1 is not Ready (app: waiting (CrashLoopBackOff))"]


def test_each_rule_alone_makes_a_pod_unproven() -> None:
    breakers = [
        lambda p: p["spec"].pop("initContainers"),
        lambda p: p["status"].pop("initContainerStatuses"),
        lambda p: p["spec"]["containers"][0].pop("command"),
        lambda p: p["status"].pop("conditions"),
    ]
    for breaker in breakers:
        pod = copy.deepcopy(injected_pod())
        breaker(pod)
        assert pod_problems(pod), breaker


def test_only_the_wrappers_own_log_lines_are_kept() -> None:
    lines = [
        f"app says {CANARY}",
        "cloudtaser-runtime: vault login at http://bao:8200 (auth/kubernetes, role r): "
        "permission denied (403)",
        f"DB_PASSWORD={CANARY}",
    ]
    kept = wrapper_lines(lines)
    assert kept == [lines[1]]
    assert CANARY not in " ".join(kept)


def test_a_denial_of_the_injector_is_quoted_from_failed_create() -> None:
    message = (
        'pods "web-7d9f-" is forbidden: admission webhook "inject.cloudtaser.io" denied the '
        "request: cloudtaser: container app already sets VAULT_ADDR. Remove it from the pod "
        "template"
    )
    assert denial_from(message) == (
        "the injector denied the pods: cloudtaser: container app already sets VAULT_ADDR. "
        "Remove it from the pod template"
    )


def test_an_unreachable_injector_is_told_apart_from_a_denial() -> None:
    message = (
        'Internal error occurred: failed calling webhook "inject.cloudtaser.io": failed to '
        'call webhook: Post "https://127.0.0.1:9443/mutate": connection refused'
    )
    found = denial_from(message)
    assert found is not None
    assert found.startswith("the API server could not reach the injector")
    assert "connection refused" in found


def test_a_failed_create_that_is_not_about_the_injector_is_not_blamed_on_it() -> None:
    assert denial_from('pods "x" is forbidden: exceeded quota: compute') is None
