"""Admission before any patch: would the injector mutate this workload's next pods?

protect and finalize used to patch first and learn afterwards that the injector was broken
(an empty ``caBundle``, a stopped webhook, a narrowed selector): with ``failurePolicy: Fail``
no new pod could be created and a StatefulSet went to 0/1 Ready. Now, before touching a
workload, a Pod built from its own pod template, with the labels and annotations the step
writes (so the webhook's ``objectSelector`` and ``namespaceSelector`` see what the real pods
will carry), is created with ``dryRun=All`` (never stored). The API server runs the whole
admission chain on it; the answer must be **in the injected shape** (``docs/protect.md``,
"Proven injected": the init container ``cloudtaser-init`` first, every container's
``command[0]`` the wrapper). Anything else refuses the workload with the reason: the
injector's denial (its allow-list), the API server's failure to call it (the ``caBundle``),
or "not mutated".

``target install --check`` and ``target install``'s readiness wait make the same decision
(:func:`judge`) on their own probe pod: one decision, three callers. Pure decisions
(:func:`admission_pod`, :func:`shape_problem`, :func:`judge`) are separate from the engine's
read (:func:`check_admission`), which goes through one
:class:`~cloudtaser.target.kube.workloads.WorkloadAPI`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cloudtaser.contract import (
    FILES_INIT_CONTAINER,
    INIT_CONTAINER,
    INJECTED_ANNOTATION,
    INJECTOR_WEBHOOK_CONFIGURATION,
    SECRET_FILES,
    WRAPPER_PATH,
)
from cloudtaser.errors import (
    ClusterAuthError,
    ClusterError,
    ClusterForbiddenError,
    ClusterUnreachableError,
)
from cloudtaser.plan.store import one_line
from cloudtaser.target.engine.injection import QUOTE_LIMIT, denial_from, injector_installed
from cloudtaser.target.kube.workloads import WorkloadAPI, WorkloadRef

__all__ = [
    "CHECK_HINT",
    "Admission",
    "admission_pod",
    "check_admission",
    "judge",
    "shape_problem",
]

#: What to run when admission fails (every refusal names it).
CHECK_HINT: Final = "run `cloudtaser target install --check`"
#: The name prefix of every dry-run pod (never stored: ``dryRun=All``).
PROBE_PREFIX: Final = "cloudtaser-admission-check-"


@dataclass(frozen=True)
class Admission:
    """The answer of one dry-run create: ``admitted`` when the pod came back injected."""

    admitted: bool
    #: One line: what came back, or why not (names and the server's words, never a value).
    reason: str


def admission_pod(
    namespace: str,
    template: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str | None] | None = None,
    containers: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The Pod ``template`` would create, with ``labels`` and ``annotations`` merged into its
    metadata (a ``None`` value removes the key, as in the step's strategic-merge patch) and
    ``containers`` (strategic-merge entries by name, e.g. pinned commands) merged into its
    containers. The injector's own annotation is dropped, so only the injector can add it."""
    meta = dict(template.get("metadata") or {})
    merged_labels = {**(meta.get("labels") or {}), **(labels or {})}
    merged_annotations: dict[str, Any] = {**(meta.get("annotations") or {}), **(annotations or {})}
    merged_annotations.pop(INJECTED_ANNOTATION, None)
    spec = copy.deepcopy(dict(template.get("spec") or {}))
    by_name = {str(c.get("name")): c for c in containers}
    spec["containers"] = [
        {**c, **by_name.get(str(c.get("name")), {})} for c in spec.get("containers") or []
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": PROBE_PREFIX,
            "namespace": namespace,
            "labels": {k: str(v) for k, v in merged_labels.items()},
            "annotations": {k: str(v) for k, v in merged_annotations.items() if v is not None},
        },
        "spec": spec,
    }


def shape_problem(pod: Mapping[str, Any]) -> str | None:
    """Why the pod the API server returned is not in the injected shape (``None``: it is):
    the init container ``cloudtaser-init`` first, every container started by the wrapper, and
    with ``cloudtaser.io/secret-files`` the init container ``cloudtaser-files``."""
    spec = pod.get("spec") or {}
    inits = [str(c.get("name")) for c in spec.get("initContainers") or [] if isinstance(c, Mapping)]
    commands = {
        str(c.get("name")): (c.get("command") or [""])[0]
        for c in spec.get("containers") or []
        if isinstance(c, Mapping)
    }
    unwrapped = sorted(name for name, command in commands.items() if command != WRAPPER_PATH)
    files = bool(((pod.get("metadata") or {}).get("annotations") or {}).get(SECRET_FILES))
    if files and FILES_INIT_CONTAINER not in inits:
        # an injector that predates secret files would start the pod on empty memory volumes
        return (
            f"the pod carries {SECRET_FILES} but no init container {FILES_INIT_CONTAINER}: "
            "the injector does not serve secret files (upgrade it: cloudtaser target install)"
        )
    if inits[:1] == [INIT_CONTAINER] and commands and not unwrapped:
        return None
    first = f"first init container {inits[0]!r}" if inits else "no init container"
    return (
        f"{first} (not {INIT_CONTAINER}); container(s) not started by the wrapper: "
        f"{', '.join(unwrapped) or '-'}"
    )


def judge(create: Callable[[dict[str, Any]], Mapping[str, Any]], body: dict[str, Any]) -> Admission:
    """Create ``body`` through ``create`` (a ``dryRun=All`` create) and decide: admitted when
    the answer is in the injected shape; else the injector's denial, the API server's failure
    to call it, or "not mutated". An unreachable API server or refused credentials are not an
    answer about admission: they propagate (a webhook's denial, a 403, is one)."""
    try:
        pod = create(body)
    except (ClusterUnreachableError, ClusterAuthError) as exc:
        if not isinstance(exc, ClusterForbiddenError):  # a webhook's denial is a 403
            raise
        return _refused(exc)
    except ClusterError as exc:
        return _refused(exc)
    problem = shape_problem(pod)
    if problem is None:
        return Admission(True, "a dry-run pod came back injected")
    return Admission(
        False, f"not mutated by the injector: the dry-run pod came back with {problem}"
    )


def _refused(exc: ClusterError) -> Admission:
    text = str(exc)
    return Admission(
        False, denial_from(text) or f"the dry-run pod was refused: {one_line(text, QUOTE_LIMIT)}"
    )


def check_admission(
    cluster: WorkloadAPI,
    ref: WorkloadRef,
    template: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str | None] | None = None,
    containers: Sequence[Mapping[str, Any]] = (),
) -> Admission:
    """Would the injector mutate ``ref``'s next pods? One ``dryRun=All`` create of the pod its
    ``template`` makes once the step's ``labels``, ``annotations`` and ``containers`` are
    written (one API call per workload). A refusal says why and what to run."""
    body = admission_pod(
        ref.namespace, template, labels=labels, annotations=annotations, containers=containers
    )
    answer = judge(
        lambda pod: cluster.create_dry_run(
            pod, action=f"dry-run create a pod of {ref}'s template (admission check)"
        ),
        body,
    )
    if answer.admitted:
        return Admission(True, f"admission checked: {answer.reason}")
    reason = answer.reason
    if reason.startswith("not mutated"):
        installed = injector_installed(cluster)
        if installed is False:
            reason += (
                f": the injector is not installed (no MutatingWebhookConfiguration "
                f"{INJECTOR_WEBHOOK_CONFIGURATION}); run `cloudtaser target install`"
            )
        else:
            reason += (
                ": the injector did not answer (failurePolicy Ignore?), or its objectSelector / "
                "namespaceSelector does not match this namespace"
            )
    return Admission(
        False,
        f"admission check failed, nothing was changed: {reason}. {CHECK_HINT} and fix the "
        "injector first",
    )
