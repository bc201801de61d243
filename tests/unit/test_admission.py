"""The admission check before any patch (issue 34): the dry-run pod protect and finalize build
from the workload's own template, and the one decision (``judge``) that protect, finalize,
``target install --check`` and install's readiness wait make on the API server's answer.

The real API server and webhook: tests/integration/test_lifecycle.py (kwok, a broken webhook
configuration) and tests/integration/test_admission_realnode.py (the real injector)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from cloudtaser import contract
from cloudtaser.errors import (
    ClusterAuthError,
    ClusterError,
    ClusterForbiddenError,
    ClusterInvalidError,
    ClusterUnreachableError,
    OperationError,
)
from cloudtaser.target.engine.admission import (
    CHECK_HINT,
    admission_pod,
    check_admission,
    judge,
    shape_problem,
)
from cloudtaser.target.install import apply
from cloudtaser.target.install.check import CheckResult
from cloudtaser.target.kube.workloads import WorkloadRef

REF = WorkloadRef("t", "shop", "StatefulSet", "db")
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "db"}, "annotations": {"keep": "me", "gone": "soon"}},
    "spec": {
        "containers": [
            {"name": "db", "image": "postgres:16", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox", "command": ["/side"]},
        ]
    },
}


def injected(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What the injector makes of ``pod`` (docs/protect.md, "Proven injected")."""
    out = copy.deepcopy(dict(pod))
    out["metadata"]["annotations"][contract.INJECTED_ANNOTATION] = "0.1.0"
    out["spec"]["initContainers"] = [{"name": contract.INIT_CONTAINER}]
    for c in out["spec"]["containers"]:
        c["command"] = [contract.WRAPPER_PATH, "wrap", "--", *(c.get("command") or ["/x"])]
    return out


def test_the_dry_run_pod_is_the_template_with_what_the_step_writes() -> None:
    before = copy.deepcopy(TEMPLATE)
    pod = admission_pod(
        "shop",
        TEMPLATE,
        labels={contract.INJECT_LABEL: "true"},
        annotations={contract.INJECT: "true", "gone": None},
        containers=[{"name": "db", "command": ["/entry"]}],
    )
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["namespace"] == "shop"
    assert "name" not in pod["metadata"]  # generateName: never collides
    # the webhook's objectSelector sees the label the patch writes, next to the template's
    assert pod["metadata"]["labels"] == {"app": "db", contract.INJECT_LABEL: "true"}
    # annotations merged like the strategic-merge patch: None removes
    assert pod["metadata"]["annotations"] == {"keep": "me", contract.INJECT: "true"}
    # pinned commands merged by container name; the rest of the spec as in the template
    assert pod["spec"]["containers"][0]["command"] == ["/entry"]
    assert pod["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert pod["spec"]["containers"][1]["command"] == ["/side"]
    assert before == TEMPLATE  # the template itself is never changed


def test_the_injectors_own_annotation_is_never_sent() -> None:
    template = copy.deepcopy(TEMPLATE)
    template["metadata"]["annotations"][contract.INJECTED_ANNOTATION] = "0.1.0"
    pod = admission_pod("shop", template)
    assert contract.INJECTED_ANNOTATION not in pod["metadata"]["annotations"]


def test_only_the_injected_shape_is_admitted() -> None:
    pod = admission_pod("shop", TEMPLATE)
    assert shape_problem(injected(pod)) is None
    problem = shape_problem(pod)
    assert problem is not None
    assert "no init container" in problem
    assert "db, side" in problem
    half = injected(pod)
    half["spec"]["containers"][1]["command"] = ["/side"]
    assert "side" in (shape_problem(half) or "")
    wrong_first = injected(pod)
    wrong_first["spec"]["initContainers"].insert(0, {"name": "other"})
    assert "'other'" in (shape_problem(wrong_first) or "")


def test_judge_admits_a_pod_that_comes_back_injected() -> None:
    answer = judge(injected, admission_pod("shop", TEMPLATE))
    assert answer.admitted
    assert "came back injected" in answer.reason


def test_judge_refuses_a_pod_that_comes_back_unchanged() -> None:
    answer = judge(lambda body: body, admission_pod("shop", TEMPLATE))
    assert not answer.admitted
    assert answer.reason.startswith("not mutated by the injector")


def _raises(exc: ClusterError) -> Any:
    def create(body: dict[str, Any]) -> dict[str, Any]:
        raise exc

    return create


def test_judge_quotes_the_injectors_denial() -> None:
    denial = ClusterForbiddenError(
        'cannot dry-run create: permission denied (403): admission webhook "inject.cloudtaser.io" '
        "denied the request: vault address https://evil:8200 is not allowed",
        status=403,
    )
    answer = judge(_raises(denial), admission_pod("shop", TEMPLATE))
    assert not answer.admitted
    assert answer.reason.startswith("the injector denied the pods: vault address")
    assert "is not allowed" in answer.reason


def test_judge_tells_an_unreachable_injector_apart() -> None:
    # an empty caBundle: the API server cannot verify the webhook's certificate
    failed = ClusterError(
        'cannot dry-run create: Internal error occurred: failed calling webhook "inject.'
        'cloudtaser.io": failed to call webhook: Post "https://127.0.0.1:9443/mutate": tls: '
        "failed to verify certificate: x509: certificate signed by unknown authority (500)",
        status=500,
    )
    answer = judge(_raises(failed), admission_pod("shop", TEMPLATE))
    assert not answer.admitted
    assert "could not reach the injector" in answer.reason
    assert "x509" in answer.reason


def test_judge_names_another_refusal_as_such() -> None:
    other = ClusterInvalidError("cannot dry-run create: pods is invalid (422)", status=422)
    answer = judge(_raises(other), admission_pod("shop", TEMPLATE))
    assert not answer.admitted
    assert answer.reason.startswith("the dry-run pod was refused: cannot dry-run create")


@pytest.mark.parametrize(
    "exc",
    [ClusterUnreachableError("cannot dry-run create: timed out"), ClusterAuthError("401")],
)
def test_an_unreachable_api_server_is_not_an_answer_about_admission(exc: ClusterError) -> None:
    with pytest.raises(type(exc)):
        judge(_raises(exc), admission_pod("shop", TEMPLATE))


class FakeCluster:
    """The two calls check_admission makes: the dry-run create and the webhook configuration."""

    def __init__(self, *, mutate: bool, installed: bool) -> None:
        self.mutate = mutate
        self.installed = installed
        self.sent: list[dict[str, Any]] = []

    def create_dry_run(self, body: Mapping[str, Any], *, action: str) -> dict[str, Any]:
        self.sent.append(dict(body))
        return injected(body) if self.mutate else dict(body)

    def get_object(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        return (
            {"metadata": {"name": contract.INJECTOR_WEBHOOK_CONFIGURATION}}
            if self.installed
            else None
        )


def test_check_admission_sends_the_workloads_pod_and_admits_an_injected_answer() -> None:
    cluster = FakeCluster(mutate=True, installed=True)
    answer = check_admission(
        cluster,  # type: ignore[arg-type]
        REF,
        TEMPLATE,
        labels={contract.INJECT_LABEL: "true"},
        annotations={contract.INJECT: "true"},
    )
    assert answer.admitted, answer.reason
    (sent,) = cluster.sent
    assert sent["metadata"]["namespace"] == "shop"
    assert sent["metadata"]["labels"][contract.INJECT_LABEL] == "true"


@pytest.mark.parametrize(
    ("installed", "cause"),
    [(False, "the injector is not installed"), (True, "the injector did not answer")],
)
def test_a_refusal_says_why_and_what_to_run(installed: bool, cause: str) -> None:
    cluster = FakeCluster(mutate=False, installed=installed)
    answer = check_admission(cluster, REF, TEMPLATE)  # type: ignore[arg-type]
    assert not answer.admitted
    assert "nothing was changed" in answer.reason
    assert "not mutated by the injector" in answer.reason
    assert cause in answer.reason
    assert CHECK_HINT in answer.reason


# -- target install's readiness wait ---------------------------------------------------------------


def test_install_says_ready_only_once_every_check_passes(monkeypatch: pytest.MonkeyPatch) -> None:

    answers = [
        [CheckResult("caBundle", False, "empty"), CheckResult("mutation", False, "refused")],
        [CheckResult("caBundle", True, "1 CA"), CheckResult("mutation", False, "refused")],
        [CheckResult("caBundle", True, "1 CA"), CheckResult("mutation", True, "injected")],
    ]
    monkeypatch.setattr(apply, "check", lambda _s, namespace: answers.pop(0))
    monkeypatch.setattr(apply.time, "sleep", lambda _s: None)
    said: list[str] = []
    ready = apply._wait_admission(None, "ct", apply.time.monotonic() + 60, said.append)  # type: ignore[arg-type]
    assert "came back injected" in ready
    assert not answers  # it waited through both failing rounds
    assert said == [
        "waiting for the injector: caBundle: empty",
        "waiting for the injector: mutation: refused",
    ]


def test_install_fails_at_the_deadline_naming_every_failing_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    failing = [CheckResult("caBundle", False, "empty"), CheckResult("mutation", False, "refused")]
    monkeypatch.setattr(apply, "check", lambda _s, namespace: failing)
    with pytest.raises(OperationError) as caught:
        apply._wait_admission(None, "ct", 0.0, lambda _m: None)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("the injector is not ready: caBundle: empty; mutation: refused")
    assert "cloudtaser target install --check" in message
