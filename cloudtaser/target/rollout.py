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
    "PROGRESS_DEADLINE_EXCEEDED",
    "Blockers",
    "RolloutCancelledError",
    "RolloutFailedError",
    "RolloutState",
    "RolloutTimeoutError",
    "blockers",
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


_RULES: Final[dict[str, Callable[[Mapping[str, Any]], RolloutState]]] = {
    "Deployment": deployment_status,
    "StatefulSet": statefulset_status,
    "DaemonSet": daemonset_status,
}


def rollout_status(kind: str, obj: Mapping[str, Any]) -> RolloutState:
    """Dispatch to the rule of ``kind`` (Deployment, StatefulSet, DaemonSet)."""
    try:
        rule = _RULES[kind]
    except KeyError:
        raise ValueError(f"no rollout rule for kind {kind!r}") from None
    return rule(obj)


@dataclass(frozen=True)
class Blockers:
    """Why a template change would not (fully) roll out, and what merely deserves a warning."""

    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def blockers(kind: str, obj: Mapping[str, Any]) -> Blockers:
    """Paused / OnDelete / partition (refusals) and Recreate (warning) for one workload."""
    refusals: list[str] = []
    warnings: list[str] = []
    if kind == "Deployment":
        if dig(obj, "spec", "paused") is True:
            refusals.append(
                "the Deployment is paused: a template change would not roll out; "
                "run 'kubectl rollout resume' first (or skip it in the plan)"
            )
        if dig(obj, "spec", "strategy", "type") == "Recreate":
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
        if observed < min_generation:
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
