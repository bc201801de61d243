"""Proof that a workload's pods really run through the wrapper, and why not when they do not.

``protect`` used to record ``migrated`` once the rollout completed, even when no webhook
injected anything (the pods then run exactly as before). Now, after the rollout, the pods of
the workload's *new* revision (the current ReplicaSet of a Deployment, the update revision of
a StatefulSet, the newest ControllerRevision of a DaemonSet; selected through the workload's
selector and their owner) must each be **proven injected** (the pod shape is fixed in
``docs/protect.md``, "Proven injected"):

- the init container ``cloudtaser-init`` is present and terminated with exit code 0,
- when the pod carries ``cloudtaser.io/secret-files``: the init container ``cloudtaser-files``
  is present, terminated ``Completed`` with exit code 0, and its report (the termination
  message: volume names and file counts, never content) names every volume of the annotation
  (:func:`files_problems`),
- every container's ``command[0]`` is ``/cloudtaser/bin/cloudtaser-runtime``,
- the pod is Ready.

When they are not, :func:`diagnose` names the likely cause: no injector installed (no
MutatingWebhookConfiguration ``cloudtaser-injector``), the injector denied the pod (the
ReplicaSet's ``FailedCreate`` condition or event, which carries the webhook's message), the
injector was not reached, or the wrapper failed (its own stderr lines, prefixed
``cloudtaser-runtime:``; nothing else of a container's log or termination message is ever
copied, since an application may print anything).

Pure checks (:func:`pod_problems`) are separate from the reads (:func:`revision_pods`,
:func:`prove`, :func:`diagnose`), which go through one
:class:`~cloudtaser.target.kube.workloads.WorkloadAPI`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import ControllerRevision, ReplicaSet
from lightkube.resources.core_v1 import Event, Pod

from cloudtaser.contract import (
    FILES_INIT_CONTAINER,
    INIT_CONTAINER,
    INJECTOR_DEFAULTS,
    INJECTOR_WEBHOOK_CONFIGURATION,
    INJECTOR_WEBHOOK_NAME,
    SECRET_FILES,
    WRAPPER_LOG_PREFIX,
    WRAPPER_PATH,
    ContractError,
    InjectorDefaults,
    parse_injector_defaults,
    parse_secret_files,
)
from cloudtaser.errors import CloudtaserError, ClusterForbiddenError
from cloudtaser.plan.store import one_line
from cloudtaser.target.engine.core import Verified
from cloudtaser.target.kube.kinds import kind_info
from cloudtaser.target.kube.workloads import WorkloadAPI, WorkloadRef
from cloudtaser.target.rollout import dig

__all__ = [
    "REROLL_HINT",
    "Proof",
    "controller_revision_pods",
    "denial_from",
    "denied",
    "diagnose",
    "explain_workload",
    "files_problems",
    "injector_defaults",
    "injector_installed",
    "pod_problems",
    "prove",
    "revision_pods",
    "verify_workload",
    "wrapper_lines",
]

#: How many of the wrapper's own log lines a diagnosis quotes.
WRAPPER_LINES: Final = 3
#: The longest piece of server text (a webhook denial) a diagnosis quotes.
QUOTE_LIMIT: Final = 400
_DENIED: Final = "denied the request: "
_CALL_FAILED: Final = f'failed calling webhook "{INJECTOR_WEBHOOK_NAME}"'
#: The one way to restart a protected workload's pods and prove them injected (a protected
#: workload is never patched again by plain protect: its pods would stay as they are).
REROLL_HINT: Final = (
    "`cloudtaser target protect --reroll` restarts its pods and proves them injected"
)


# --- pure checks --------------------------------------------------------------------------------


def _status_of(statuses: Sequence[Mapping[str, Any]] | None, name: str) -> Mapping[str, Any]:
    for status in statuses or ():
        if isinstance(status, Mapping) and status.get("name") == name:
            return status
    return {}


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in dig(pod, "status", "conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _state_text(status: Mapping[str, Any]) -> str:
    """A container's state as reason and exit code only (never its message: it may hold
    whatever the application printed)."""
    state = status.get("state") or {}
    if "waiting" in state:
        return f"waiting ({one_line(str((state['waiting'] or {}).get('reason') or '?'), 80)})"
    if "terminated" in state:
        term = state["terminated"] or {}
        return (
            f"terminated with exit code {term.get('exitCode')} "
            f"({one_line(str(term.get('reason') or '?'), 80)})"
        )
    if "running" in state:
        return "running"
    return "not started"


def _report_volumes(message: str) -> set[str] | None:
    """The volumes a ``cloudtaser-files`` report names (its termination message:
    ``{"formatVersion": 1, "files": N, "volumes": [{"volume", "files", "skipped"}]}``, names
    and counts only); ``None`` when it is not such a report. The runtime leaves the volume list
    out when the report would pass the kubelet's 4096 bytes: then the empty set."""
    try:
        report = json.loads(message)
    except ValueError:
        return None
    if (
        not isinstance(report, Mapping)
        or report.get("formatVersion") != 1
        or report.get("error")
        or type(report.get("files")) is not int
    ):
        return None
    volumes = report.get("volumes") or []
    if not isinstance(volumes, list):
        return None
    return {str(v.get("volume")) for v in volumes if isinstance(v, Mapping)}


def files_problems(pod: Mapping[str, Any]) -> list[str]:
    """Why the Secret files of ``pod`` are not proven rendered (empty: proven, or the pod
    carries no ``cloudtaser.io/secret-files``). Reads only the ``cloudtaser-files`` init
    container's state and its report (volume names and file counts), never a file."""
    value = dig(pod, "metadata", "annotations", SECRET_FILES)
    if not value:
        return []
    name = dig(pod, "metadata", "name") or "?"
    try:
        volumes = [v["volume"] for v in parse_secret_files(str(value))]
    except ContractError as exc:
        return [f"pod {name}: {SECRET_FILES} is not valid ({exc.code})"]
    inits = [c for c in dig(pod, "spec", "initContainers") or () if isinstance(c, Mapping)]
    if not any(c.get("name") == FILES_INIT_CONTAINER for c in inits):
        return [f"pod {name} has no init container {FILES_INIT_CONTAINER} (files not rendered)"]
    status = _status_of(dig(pod, "status", "initContainerStatuses"), FILES_INIT_CONTAINER)
    term = (status.get("state") or {}).get("terminated")
    if (
        not isinstance(term, Mapping)
        or term.get("exitCode") != 0
        or term.get("reason") != "Completed"
    ):
        return [
            f"pod {name}: init container {FILES_INIT_CONTAINER} did not complete "
            f"({_state_text(status) if status else 'no status yet'})"
        ]
    reported = _report_volumes(str(term.get("message") or ""))
    if reported is None:
        return [f"pod {name}: {FILES_INIT_CONTAINER} left no files report"]
    unreported = [v for v in volumes if reported and v not in reported]
    if unreported:
        return [
            f"pod {name}: {FILES_INIT_CONTAINER} did not report volume(s) "
            f"{', '.join(unreported)} as rendered"
        ]
    return []


def pod_problems(pod: Mapping[str, Any]) -> list[str]:
    """Why ``pod`` is not proven injected (empty: proven). Names only, never a value."""
    name = dig(pod, "metadata", "name") or "?"
    spec = pod.get("spec") or {}
    problems: list[str] = []
    inits = [c for c in spec.get("initContainers") or () if isinstance(c, Mapping)]
    if not any(c.get("name") == INIT_CONTAINER for c in inits):
        problems.append(f"pod {name} has no init container {INIT_CONTAINER} (not injected)")
    else:
        status = _status_of(dig(pod, "status", "initContainerStatuses"), INIT_CONTAINER)
        term = (status.get("state") or {}).get("terminated") or {}
        if term.get("exitCode") != 0 or "terminated" not in (status.get("state") or {}):
            problems.append(
                f"pod {name}: init container {INIT_CONTAINER} did not complete "
                f"({_state_text(status) if status else 'no status yet'})"
            )
    problems.extend(files_problems(pod))
    for container in spec.get("containers") or ():
        if not isinstance(container, Mapping):
            continue
        command = container.get("command") or []
        if not command or command[0] != WRAPPER_PATH:
            problems.append(
                f"pod {name}: container {container.get('name')} does not start through the "
                f"wrapper (command[0] is not {WRAPPER_PATH})"
            )
    if not _ready(pod):
        waiting = [
            f"{s.get('name')}: {_state_text(s)}"
            for s in dig(pod, "status", "containerStatuses") or ()
            if isinstance(s, Mapping) and not s.get("ready")
        ]
        detail = f" ({'; '.join(waiting)})" if waiting else ""
        problems.append(f"pod {name} is not Ready{detail}")
    return problems


def wrapper_lines(lines: Sequence[str], limit: int = WRAPPER_LINES) -> list[str]:
    """The wrapper's own stderr lines among a container's log lines (the last ``limit``).

    Only lines starting with ``cloudtaser-runtime:`` are kept: the wrapper never prints a
    value; anything else in the log is the application's and is never copied."""
    own = [
        one_line(line.strip(), QUOTE_LIMIT)
        for line in lines
        if line.strip().startswith(WRAPPER_LOG_PREFIX.strip())
    ]
    return own[-limit:]


def denial_from(message: str) -> str | None:
    """What a ``FailedCreate`` message says about the injector (``None``: not about it)."""
    text = one_line(message, 2000)
    if INJECTOR_WEBHOOK_NAME not in text:
        return None
    if _DENIED in text:
        why = text.split(_DENIED, 1)[1]
        return f"the injector denied the pods: {one_line(why, QUOTE_LIMIT)}"
    if _CALL_FAILED in text:
        why = text.split(_CALL_FAILED, 1)[1].lstrip(": ")
        return (
            "the API server could not reach the injector (failurePolicy Fail: no pod is "
            f"created): {one_line(why, QUOTE_LIMIT)}; check `kubectl -n cloudtaser-system get "
            "pods` and re-run `cloudtaser target install`"
        )
    return f"pod creation failed at the injector: {one_line(text, QUOTE_LIMIT)}"


# --- reads ----------------------------------------------------------------------------------------


def _owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    return any(
        isinstance(o, Mapping) and o.get("uid") == uid and o.get("controller")
        for o in dig(obj, "metadata", "ownerReferences") or ()
    )


def _match_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = dig(obj, "spec", "selector", "matchLabels") or {}
    return {str(k): str(v) for k, v in labels.items()}


#: Kinds whose revisions are ReplicaSets, and how the current one is known: the Deployment's
#: revision annotation, or an Argo Rollout's ``status.currentPodHash`` (the ReplicaSet's
#: ``rollouts-pod-template-hash`` label).
_REPLICASET_REVISION: Final = {
    "Deployment": (("metadata", "annotations", "deployment.kubernetes.io/revision"),
                   ("metadata", "annotations", "deployment.kubernetes.io/revision")),
    "Rollout": (("status", "currentPodHash"),
                ("metadata", "labels", "rollouts-pod-template-hash")),
}  # fmt: skip


def _current_replicaset(
    cluster: WorkloadAPI, ref: WorkloadRef, obj: Mapping[str, Any]
) -> dict[str, Any] | None:
    ours, theirs = _REPLICASET_REVISION[ref.kind]
    revision = dig(obj, *ours)
    uid = dig(obj, "metadata", "uid")
    sets = cluster.list_objects(
        ReplicaSet,
        ref.namespace,
        labels=_match_labels(obj),
        action=f"list the ReplicaSets of {ref}",
    )
    owned = [rs for rs in sets if _owned_by(rs, uid)]
    for rs in owned:
        if revision is not None and dig(rs, *theirs) == revision:
            return rs
    return None


def controller_revision_pods(
    cluster: WorkloadAPI, ref: WorkloadRef, obj: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The object that creates the new pods (the Deployment's current ReplicaSet, else the
    workload itself) and the pods of the workload's current revision. A kind whose template
    change replaces no pod (a CronJob: its Jobs' pods are not its revision) has none."""
    if not kind_info(ref.kind).rolls_out:
        return dict(obj), []
    labels = _match_labels(obj)
    pods = cluster.list_objects(Pod, ref.namespace, labels=labels, action=f"list the pods of {ref}")
    pods = [p for p in pods if not dig(p, "metadata", "deletionTimestamp")]
    if ref.kind in _REPLICASET_REVISION:
        rs = _current_replicaset(cluster, ref, obj)
        if rs is None:
            return None, []
        uid = dig(rs, "metadata", "uid")
        return rs, [p for p in pods if _owned_by(p, uid)]
    uid = dig(obj, "metadata", "uid")
    if ref.kind == "StatefulSet":
        revision = dig(obj, "status", "updateRevision")
    else:
        revisions = [
            cr
            for cr in cluster.list_objects(
                ControllerRevision,
                ref.namespace,
                labels=labels,
                action=f"list the controller revisions of {ref}",
            )
            if _owned_by(cr, uid)
        ]
        newest = max(revisions, key=lambda cr: int(cr.get("revision") or 0), default=None)
        revision = dig(newest or {}, "metadata", "labels", "controller-revision-hash")
    own = [p for p in pods if _owned_by(p, uid)]
    return dict(obj), [
        p for p in own if dig(p, "metadata", "labels", "controller-revision-hash") == revision
    ]


def revision_pods(
    cluster: WorkloadAPI, ref: WorkloadRef, obj: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The pods of the workload's current revision (see :func:`controller_revision_pods`)."""
    return controller_revision_pods(cluster, ref, obj)[1]


@dataclass
class Proof:
    """The injection check of one workload's current revision."""

    #: Every pod of the current revision is proven injected (and there is at least one).
    proven: bool
    pods: int
    #: Per pod, why it is not proven (names and states only).
    problems: list[str] = field(default_factory=list)
    #: The likely cause when not proven (:func:`diagnose`).
    cause: str | None = None

    def message(self) -> str:
        if self.proven:
            return f"injection proven on {self.pods} pod(s) of the new revision"
        shown = "; ".join(self.problems[:3]) + (
            f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        )
        cause = f"likely cause: {self.cause}. " if self.cause else ""
        return f"injection not proven: {cause}{shown}".strip()


def prove(
    cluster: WorkloadAPI, ref: WorkloadRef, obj: Mapping[str, Any], *, explain: bool = True
) -> Proof:
    """Check every pod of ``obj``'s current revision; with ``explain``, say why not."""
    controller, pods = controller_revision_pods(cluster, ref, obj)
    problems = [p for pod in pods for p in pod_problems(pod)]
    proven = bool(pods) and not problems
    if not pods:
        problems = [f"no pod of the current revision of {ref} exists"]
    proof = Proof(proven=proven, pods=len(pods), problems=problems)
    if not proven and explain:
        proof.cause = diagnose(cluster, ref, controller, pods)
    return proof


def _webhook_configuration(cluster: WorkloadAPI) -> dict[str, Any] | None:
    """The injector's MutatingWebhookConfiguration (``None``: absent; a forbidden read raises
    :class:`~cloudtaser.errors.ClusterForbiddenError`)."""
    return cluster.get_object(
        MutatingWebhookConfiguration,
        INJECTOR_WEBHOOK_CONFIGURATION,
        None,
        action=f"read MutatingWebhookConfiguration {INJECTOR_WEBHOOK_CONFIGURATION}",
    )


def injector_installed(cluster: WorkloadAPI) -> bool | None:
    """Is the injector's MutatingWebhookConfiguration there (``None``: reading it is
    forbidden)?"""
    try:
        return _webhook_configuration(cluster) is not None
    except ClusterForbiddenError:
        return None


def injector_defaults(cluster: WorkloadAPI) -> InjectorDefaults | None:
    """The installed injector's cluster defaults, from the
    :data:`~cloudtaser.contract.INJECTOR_DEFAULTS` annotation ``target install`` writes on its
    MutatingWebhookConfiguration (one request). None set (the built-in ones) when there is no
    injector or no annotation; ``None`` when reading it is forbidden. Either way protect then
    writes every cluster-specific annotation, which is right whatever the injector does. An
    unreadable annotation is a :class:`~cloudtaser.errors.CloudtaserError`."""
    try:
        mwc = _webhook_configuration(cluster)
    except ClusterForbiddenError:
        return None
    raw = dig(mwc or {}, "metadata", "annotations", INJECTOR_DEFAULTS)
    if not isinstance(raw, str) or not raw:
        return InjectorDefaults()
    try:
        return parse_injector_defaults(raw)
    except ContractError as exc:
        raise CloudtaserError(
            f"MutatingWebhookConfiguration {INJECTOR_WEBHOOK_CONFIGURATION}: {exc}; re-run "
            "cloudtaser target install"
        ) from exc


def _failed_create(
    cluster: WorkloadAPI, ref: WorkloadRef, controller: Mapping[str, Any] | None
) -> str | None:
    """The injector's word from the creating object's ``ReplicaFailure`` condition or its
    newest ``FailedCreate`` event."""
    if controller is None:
        return None
    for cond in dig(controller, "status", "conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "ReplicaFailure":
            found = denial_from(str(cond.get("message") or ""))
            if found:
                return found
    name = dig(controller, "metadata", "name")
    try:
        events = cluster.list_objects(
            Event,
            ref.namespace,
            fields={"involvedObject.name": str(name), "reason": "FailedCreate"},
            action=f"list the events of {controller.get('kind') or 'the controller'} {name}",
        )
    except CloudtaserError:
        return None
    events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    for event in reversed(events):
        found = denial_from(str(event.get("message") or ""))
        if found:
            return found
    return None


def _wrapper_failure(cluster: WorkloadAPI, pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The wrapper's own last words from a not-ready injected container."""
    for pod in pods:
        if _ready(pod) or not any(
            c.get("name") == INIT_CONTAINER for c in dig(pod, "spec", "initContainers") or ()
        ):
            continue
        namespace = dig(pod, "metadata", "namespace")
        name = dig(pod, "metadata", "name")
        for status in dig(pod, "status", "containerStatuses") or ():
            if status.get("ready"):
                continue
            try:
                lines = cluster.pod_log(str(namespace), str(name), str(status.get("name")))
            except CloudtaserError:
                lines = []
            own = wrapper_lines(lines)
            if own:
                return (
                    f"the wrapper in container {status.get('name')} of pod {name} failed: "
                    + " / ".join(own)
                )
            state = _state_text(status)
            if "CrashLoopBackOff" in state or "terminated" in state:
                return (
                    f"container {status.get('name')} of pod {name} is {state} and the wrapper "
                    "logged nothing (the application itself may fail; see kubectl logs)"
                )
    return None


def diagnose(
    cluster: WorkloadAPI,
    ref: WorkloadRef,
    controller: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> str:
    """The likely cause why ``ref``'s new pods are not proven injected (one line)."""
    installed = injector_installed(cluster)
    if installed is False:
        return (
            f"no injector is installed (no MutatingWebhookConfiguration "
            f"{INJECTOR_WEBHOOK_CONFIGURATION}), so the pods run exactly as before; run "
            f"`cloudtaser target install`, then {REROLL_HINT}"
        )
    denial = _failed_create(cluster, ref, controller)
    if denial:
        return denial
    wrapped = [
        p
        for p in pods
        if any(c.get("name") == INIT_CONTAINER for c in dig(p, "spec", "initContainers") or ())
    ]
    if pods and not wrapped:
        unknown = (
            " (whether it is installed is unknown: reading MutatingWebhookConfigurations is "
            "forbidden)"
            if installed is None
            else ""
        )
        return (
            f"the pods were created without injection although the template opts in{unknown}: "
            "the namespace may be excluded by the webhook's namespaceSelector, or the pods were "
            f"created before the injector was installed ({REROLL_HINT})"
        )
    failure = _wrapper_failure(cluster, wrapped)
    if failure:
        return failure
    if not pods:
        return "no pod of the new revision was created (see kubectl describe of the workload)"
    return "the injected pods are not Ready yet (see kubectl describe pod)"


def verify_workload(cluster: WorkloadAPI, ref: WorkloadRef) -> Verified:
    """The engine's check after a rollout: the workload's new pods are proven injected.

    A workload scaled to zero has no pod to prove anything by: it passes with a message that
    says so (finalize, which removes the Secret references, proves again on live pods)."""
    obj = cluster.get(ref)
    if obj is None:
        return Verified(False, f"injection not proven: {ref} was deleted")
    if ref.kind != "DaemonSet" and dig(obj, "spec", "replicas") == 0:
        return Verified(True, "injection not provable: 0 replicas (no pod to check)")
    proof = prove(cluster, ref, obj)
    return Verified(proof.proven, proof.message())


def explain_workload(cluster: WorkloadAPI, ref: WorkloadRef) -> str | None:
    """After a failed rollout: the likely cause, when the new pods are not proven injected."""
    obj = cluster.get(ref)
    if obj is None:
        return None
    controller, pods = controller_revision_pods(cluster, ref, obj)
    if pods and all(not pod_problems(p) for p in pods):
        return None
    return diagnose(cluster, ref, controller, pods)


def denied(cluster: WorkloadAPI, ref: WorkloadRef) -> str | None:
    """While a rollout is awaited: the injector's denial of the new pods, when the creating
    object reports one (a denial is definitive; an unreachable injector may recover, so it is
    left to the rollout timeout). ``None``: no denial seen."""
    if ref.kind != "Deployment":
        # a StatefulSet's or DaemonSet's events may be about an earlier revision: only a
        # Deployment's current ReplicaSet (one per template) speaks for this rollout alone
        return None
    obj = cluster.get(ref)
    if obj is None:
        return None
    found = _failed_create(cluster, ref, _current_replicaset(cluster, ref, obj))
    if found and found.startswith("the injector denied"):
        return f"{found} (no pod of the new revision can be created; not waiting any longer)"
    return None
