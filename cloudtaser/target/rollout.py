"""Rollout rules: when is a rollout complete, and what keeps a workload from rolling at all.

The completion rules are kubectl's (``kubectl rollout status``, pkg/polymorphichelpers/
rollout_status.go), as pure functions on the workload object as a plain dict (camelCase, as the
API returns it):

* **Deployment** — once ``metadata.generation <= status.observedGeneration``: failed when the
  ``Progressing`` condition has reason ``ProgressDeadlineExceeded``; waiting while
  ``updatedReplicas < spec.replicas``, while ``replicas > updatedReplicas`` (old pods
  terminating), while ``availableReplicas < updatedReplicas``; complete otherwise.
* **DaemonSet** (``RollingUpdate``) — once the generation is observed: waiting while
  ``updatedNumberScheduled < desiredNumberScheduled`` or
  ``numberAvailable < desiredNumberScheduled``.
* **StatefulSet** (``RollingUpdate``) — waiting while the generation is unobserved, while
  ``readyReplicas < spec.replicas``; when ``rollingUpdate`` is set (the API server always sets
  ``partition``, default 0) complete when ``updatedReplicas >= replicas - partition``;
  otherwise waiting while ``updateRevision != currentRevision``.

* **CronJob** — nothing rolls out: its next scheduled run uses the new job template (and
  nothing here starts a run); done at once, ``rolled`` false.
* **Rollout** (Argo Rollouts) — by the controller's ``status.phase`` once its
  ``observedGeneration`` (a numeric string) reaches the generation: ``Healthy`` complete,
  ``Degraded`` failed, ``Paused`` / ``Progressing`` waiting; no status at all means no
  controller: done, ``rolled`` false (the template is patched, nothing rolled).

:func:`blockers` names what would stop a template change from rolling out (a paused
Deployment, an ``OnDelete`` strategy, a StatefulSet partition) and what deserves a warning (a
``Recreate`` Deployment: every pod stops before the new ones start).

:func:`wait_for_rollout` polls the object (a GET per interval) until the rules say complete,
failed, or the deadline passes. Polling rather than a watch keeps the deadline exact and
survives API-server restarts without reconnect logic; one GET per second per workload is
negligible next to a rollout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cloudtaser.errors import OperationError

__all__ = [
    "NO_ROLLOUT_CONTROLLER",
    "PROGRESS_DEADLINE_EXCEEDED",
    "Blockers",
    "RolloutCancelledError",
    "RolloutFailedError",
    "RolloutState",
    "RolloutTimeoutError",
    "argo_rollout_status",
    "blockers",
    "cronjob_status",
    "daemonset_status",
    "deployment_status",
    "dig",
    "rollout_status",
    "statefulset_status",
    "wait_for_rollout",
]

PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"


class RolloutFailedError(OperationError):
    """The rollout cannot complete (e.g. the Deployment's progress deadline was exceeded)."""


class RolloutTimeoutError(OperationError):
    """The rollout did not complete before our deadline."""


class RolloutCancelledError(OperationError):
    """Waiting was cancelled (Ctrl-C); the rollout itself goes on in the cluster."""


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands: complete (``done``), impossible (``failed``) or in progress."""

    done: bool
    message: str
    failed: bool = False
    #: The pods were replaced (False: a CronJob, whose next run uses the template, or a
    #: Rollout without a controller).
    rolled: bool = True


def dig(obj: Mapping[str, Any] | None, *path: str) -> Any:
    """The value at ``path`` in an API object (a dict), ``None`` where it is absent."""
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _generation_observed(obj: Mapping[str, Any]) -> bool:
    generation = _int(dig(obj, "metadata", "generation"))
    observed = _int(dig(obj, "status", "observedGeneration"))
    return generation <= observed


def _waiting(message: str) -> RolloutState:
    return RolloutState(done=False, message=message)


def deployment_status(obj: Mapping[str, Any]) -> RolloutState:
    """kubectl's Deployment rollout-status rule."""
    name = dig(obj, "metadata", "name") or "deployment"
    if not _generation_observed(obj):
        return _waiting(f"waiting for deployment {name!r} spec update to be observed")
    for condition in dig(obj, "status", "conditions") or []:
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "Progressing"
            and condition.get("reason") == PROGRESS_DEADLINE_EXCEEDED
        ):
            return RolloutState(
                done=False,
                failed=True,
                message=f"deployment {name!r} exceeded its progress deadline",
            )
    replicas = _int(dig(obj, "spec", "replicas"), 1)
    updated = _int(dig(obj, "status", "updatedReplicas"))
    total = _int(dig(obj, "status", "replicas"))
    available = _int(dig(obj, "status", "availableReplicas"))
    if updated < replicas:
        return _waiting(f"{updated} out of {replicas} new replicas have been updated")
    if total > updated:
        return _waiting(f"{total - updated} old replicas are pending termination")
    if available < updated:
        return _waiting(f"{available} of {updated} updated replicas are available")
    return RolloutState(done=True, message=f"deployment {name!r} successfully rolled out")


def _not_rolling_update(obj: Mapping[str, Any]) -> RolloutState | None:
    """kubectl has no rollout status for DaemonSets and StatefulSets without the
    ``RollingUpdate`` strategy: a failed state for them, ``None`` otherwise."""
    strategy = dig(obj, "spec", "updateStrategy", "type") or "RollingUpdate"
    if strategy != "RollingUpdate":
        return RolloutState(
            done=False,
            failed=True,
            message="rollout status is only available for RollingUpdate strategy type",
        )
    return None


def daemonset_status(obj: Mapping[str, Any]) -> RolloutState:
    """kubectl's DaemonSet rollout-status rule (``RollingUpdate`` only)."""
    name = dig(obj, "metadata", "name") or "daemonset"
    if refused := _not_rolling_update(obj):
        return refused
    if not _generation_observed(obj):
        return _waiting(f"waiting for daemon set {name!r} spec update to be observed")
    desired = _int(dig(obj, "status", "desiredNumberScheduled"))
    updated = _int(dig(obj, "status", "updatedNumberScheduled"))
    available = _int(dig(obj, "status", "numberAvailable"))
    if updated < desired:
        return _waiting(f"{updated} out of {desired} new pods have been updated")
    if available < desired:
        return _waiting(f"{available} of {desired} updated pods are available")
    return RolloutState(done=True, message=f"daemon set {name!r} successfully rolled out")


def statefulset_status(obj: Mapping[str, Any]) -> RolloutState:
    """kubectl's StatefulSet rollout-status rule (``RollingUpdate`` only)."""
    name = dig(obj, "metadata", "name") or "statefulset"
    if refused := _not_rolling_update(obj):
        return refused
    observed = _int(dig(obj, "status", "observedGeneration"))
    if observed == 0 or not _generation_observed(obj):
        return _waiting("waiting for statefulset spec update to be observed")
    replicas = _int(dig(obj, "spec", "replicas"), 1)
    ready = _int(dig(obj, "status", "readyReplicas"))
    if ready < replicas:
        return _waiting(f"{replicas - ready} pods are not ready yet")
    rolling = dig(obj, "spec", "updateStrategy", "rollingUpdate")
    if isinstance(rolling, Mapping):
        # kubectl takes this branch whenever rollingUpdate is set, and the API server
        # defaults it to {partition: 0}: complete once every pod at or above the partition
        # runs the update revision.
        partition = rolling.get("partition")
        updated = _int(dig(obj, "status", "updatedReplicas"))
        if (
            isinstance(partition, int)
            and not isinstance(partition, bool)
            and updated < replicas - partition
        ):
            return _waiting(
                f"waiting for partitioned roll out to finish: {updated} out of "
                f"{replicas - partition} new pods have been updated"
            )
        return RolloutState(
            done=True,
            message=f"partitioned roll out complete: {updated} new pods have been updated",
        )
    update_revision = dig(obj, "status", "updateRevision")
    current_revision = dig(obj, "status", "currentRevision")
    if update_revision != current_revision:
        updated = _int(dig(obj, "status", "updatedReplicas"))
        return _waiting(f"{updated} of {replicas} pods run the update revision")
    return RolloutState(done=True, message=f"statefulset {name!r} successfully rolled out")


def cronjob_status(obj: Mapping[str, Any]) -> RolloutState:
    """A CronJob rolls nothing out: its next run creates its Job from the new template.
    Nothing is started here (protect never starts a run)."""
    name = dig(obj, "metadata", "name") or "cronjob"
    suspended = " (suspended: no run until it is resumed)" if dig(obj, "spec", "suspend") else ""
    return RolloutState(
        done=True,
        rolled=False,
        message=f"cronjob {name!r}: job template updated, no run started; the next scheduled "
        f"run uses it{suspended}",
    )


#: The message of a Rollout nobody reconciles (no Argo Rollouts controller wrote a status).
NO_ROLLOUT_CONTROLLER: Final = (
    "no Argo Rollouts controller (the Rollout has no status): template patched, not rolled"
)


def _generation(value: Any) -> int:
    """``status.observedGeneration``: an int, or Argo Rollouts' numeric string."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return _int(value)


def argo_rollout_status(obj: Mapping[str, Any]) -> RolloutState:
    """An Argo Rollout by its controller's ``status.phase`` (what ``kubectl argo rollouts
    status`` reports): ``Healthy`` complete, ``Degraded`` failed, ``Paused`` (a canary
    step, or ``spec.paused``) and ``Progressing`` waiting. Without any status no controller
    runs: done, not rolled (:data:`NO_ROLLOUT_CONTROLLER`)."""
    name = dig(obj, "metadata", "name") or "rollout"
    status = obj.get("status")
    if not status:
        return RolloutState(done=True, rolled=False, message=NO_ROLLOUT_CONTROLLER)
    if _generation(dig(obj, "status", "observedGeneration")) < _int(
        dig(obj, "metadata", "generation")
    ):
        return _waiting(f"waiting for rollout {name!r} spec update to be observed")
    phase = dig(obj, "status", "phase")
    message = str(dig(obj, "status", "message") or "")
    if phase == "Healthy":
        return RolloutState(done=True, message=f"rollout {name!r} is Healthy")
    if phase == "Degraded":
        return RolloutState(
            done=False, failed=True, message=f"rollout {name!r} is Degraded: {message}".strip()
        )
    if phase == "Paused":
        return _waiting(
            f"rollout {name!r} is paused ({message or 'a canary step'}): promote it with "
            "`kubectl argo rollouts promote`"
        )
    return _waiting(f"rollout {name!r} is {phase or 'progressing'} {message}".strip())


@dataclass(frozen=True)
class _Rule:
    status: Callable[[Mapping[str, Any]], RolloutState]
    #: The rule counts only once the controller observed our generation (the wait checks
    #: ``status.observedGeneration`` first); other rules judge that themselves.
    gated: bool = True


_RULES: Final[dict[str, _Rule]] = {
    "Deployment": _Rule(deployment_status),
    "StatefulSet": _Rule(statefulset_status),
    "DaemonSet": _Rule(daemonset_status),
    "CronJob": _Rule(cronjob_status, gated=False),
    "Rollout": _Rule(argo_rollout_status, gated=False),
}


def _rule(kind: str) -> _Rule:
    try:
        return _RULES[kind]
    except KeyError:
        raise ValueError(f"no rollout rule for kind {kind!r}") from None


def rollout_status(kind: str, obj: Mapping[str, Any]) -> RolloutState:
    """Dispatch to the rule of ``kind`` (Deployment, StatefulSet, DaemonSet, CronJob,
    Rollout)."""
    return _rule(kind).status(obj)


@dataclass(frozen=True)
class Blockers:
    """Why a template change would not (fully) roll out, and what merely deserves a warning."""

    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def blockers(kind: str, obj: Mapping[str, Any]) -> Blockers:
    """Paused / OnDelete / partition (refusals) and Recreate (warning) for one workload."""
    refusals: list[str] = []
    warnings: list[str] = []
    if kind == "Job":
        refusals.append(
            "a Job's pod template is immutable: a standalone Job cannot be protected; let it "
            "finish, then run it again from a protected CronJob or Deployment (or delete it)"
        )
    if kind == "CronJob" and dig(obj, "spec", "suspend") is True:
        warnings.append("the CronJob is suspended: no run proves the injection until it is resumed")
    if kind in {"Deployment", "Rollout"}:
        if dig(obj, "spec", "paused") is True:
            refusals.append(
                f"the {kind} is paused: a template change would not roll out; "
                + (
                    "run 'kubectl rollout resume' first"
                    if kind == "Deployment"
                    else "run 'kubectl argo rollouts resume' first"
                )
                + " (or skip it in the plan)"
            )
        if kind == "Deployment" and dig(obj, "spec", "strategy", "type") == "Recreate":
            warnings.append(
                "the Deployment uses the Recreate strategy: every pod stops before the new "
                "ones start (downtime during the rollout)"
            )
    elif kind in {"StatefulSet", "DaemonSet"}:
        strategy = dig(obj, "spec", "updateStrategy", "type") or "RollingUpdate"
        if strategy == "OnDelete":
            refusals.append(
                f"the {kind} uses updateStrategy OnDelete: changing the template replaces no "
                "pod, so the injection would only reach pods deleted later; switch to "
                "RollingUpdate (or skip it in the plan)"
            )
        partition = dig(obj, "spec", "updateStrategy", "rollingUpdate", "partition")
        if (
            kind == "StatefulSet"
            and strategy == "RollingUpdate"
            and isinstance(partition, int)
            and partition > 0
        ):
            replicas = _int(dig(obj, "spec", "replicas"), 1)
            stay = min(partition, replicas)
            refusals.append(
                f"the StatefulSet has rollingUpdate.partition={partition}: pods with ordinal "
                f"below {partition} ({stay} of {replicas}) would keep the old template; set the "
                "partition to 0 first (or skip it in the plan)"
            )
    return Blockers(refusals=refusals, warnings=warnings)


def wait_for_rollout(
    fetch: Callable[[], Mapping[str, Any]],
    kind: str,
    *,
    min_generation: int = 0,
    timeout: float,
    interval: float = 1.0,
    cancel: threading.Event | None = None,
    on_progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RolloutState:
    """Poll ``fetch()`` until ``kind``'s rule says complete; return the final state.

    ``min_generation``: the generation our patch produced; the rollout only counts once the
    controller observed at least that. ``on_progress`` receives each new waiting message.
    Raises :class:`RolloutFailedError`, :class:`RolloutTimeoutError` (after ``timeout``
    seconds) or :class:`RolloutCancelledError` (``cancel`` set).
    """
    deadline = clock() + timeout
    last_message = ""
    while True:
        obj = fetch()
        observed = _int(dig(obj, "status", "observedGeneration"))
        if _rule(kind).gated and observed < min_generation:
            state = _waiting("waiting for the controller to observe the new template")
        else:
            state = rollout_status(kind, obj)
        if state.done:
            return state
        if state.failed:
            raise RolloutFailedError(state.message)
        if state.message != last_message:
            last_message = state.message
            if on_progress is not None:
                on_progress(state.message)
        remaining = deadline - clock()
        if remaining <= 0:
            raise RolloutTimeoutError(f"rollout not complete after {timeout:g}s ({last_message})")
        pause = min(interval, remaining)
        if cancel is not None:
            if cancel.wait(pause):
                raise RolloutCancelledError(
                    f"stopped waiting for the rollout ({last_message}); it continues in the cluster"
                )
        else:
            time.sleep(pause)
