"""The workload kinds, one row each: where a kind keeps its pod template, whether a template
change replaces its pods, how it is restarted and patched. The one place that knows a
CronJob's template is ``spec.jobTemplate.spec.template``; discover, protect, finalize,
unprotect and audit read and patch templates through :func:`pod_template` and
:func:`placed`, never with an ``if kind == ...`` of their own.

The steps build their patches in one canonical shape, the pod template at
``spec.template`` (a Deployment's); :func:`placed` moves it to the kind's path (and, for an
Argo Rollout, the restart marker to ``spec.restartAt``, Argo Rollouts' own restart field:
pods older than it are evicted and recreated without a new revision). Custom resources
take no strategic-merge patch (the API server answers 415): :func:`merge_form` turns the
canonical patch into a JSON merge patch against the live object (lists merged by name are
sent whole, which the ``resourceVersion`` precondition makes safe).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cloudtaser.contract import RESTARTED_AT
from cloudtaser.plan.model import WorkloadKind

__all__ = [
    "CANONICAL_TEMPLATE",
    "KINDS",
    "KindInfo",
    "kind_info",
    "merge_form",
    "placed",
    "pod_template",
]

#: Where the steps put the pod template in the patches they build (a Deployment's path).
CANONICAL_TEMPLATE: Final = ("spec", "template")


@dataclass(frozen=True)
class KindInfo:
    """What the engine and discover need to know about one workload kind."""

    kind: WorkloadKind
    #: ``apiVersion`` and the plural of the API path.
    api_version: str
    plural: str
    #: Where the pod template lives in the object.
    template_path: tuple[str, ...]
    #: A template change replaces the running pods (a rollout to wait for). A CronJob's
    #: next run uses the new template; nothing else changes.
    rolls_out: bool = True
    #: The pod template may be changed at all (a Job's is immutable).
    mutable: bool = True
    #: The API server takes strategic-merge patches (built-in kinds; not custom resources).
    strategic: bool = True
    #: Where a restart time goes instead of the template's ``cloudtaser.io/restartedAt``
    #: annotation (``None``: the annotation, a template change that rolls the pods).
    restart_field: tuple[str, ...] | None = None
    #: ``spec.replicas`` means something (absent: 1).
    replicas: bool = True

    @property
    def group(self) -> str:
        """The API group (``""`` for the core group)."""
        return self.api_version.rpartition("/")[0]


KINDS: Final[Mapping[str, KindInfo]] = {
    info.kind: info
    for info in (
        KindInfo(
            kind=WorkloadKind.DEPLOYMENT,
            api_version="apps/v1",
            plural="deployments",
            template_path=CANONICAL_TEMPLATE,
        ),
        KindInfo(
            kind=WorkloadKind.STATEFUL_SET,
            api_version="apps/v1",
            plural="statefulsets",
            template_path=CANONICAL_TEMPLATE,
        ),
        KindInfo(
            kind=WorkloadKind.DAEMON_SET,
            api_version="apps/v1",
            plural="daemonsets",
            template_path=CANONICAL_TEMPLATE,
            replicas=False,
        ),
        KindInfo(
            kind=WorkloadKind.CRON_JOB,
            api_version="batch/v1",
            plural="cronjobs",
            template_path=("spec", "jobTemplate", "spec", "template"),
            rolls_out=False,
            replicas=False,
        ),
        KindInfo(
            kind=WorkloadKind.JOB,
            api_version="batch/v1",
            plural="jobs",
            template_path=CANONICAL_TEMPLATE,
            rolls_out=False,
            mutable=False,
            replicas=False,
        ),
        KindInfo(
            kind=WorkloadKind.ROLLOUT,
            api_version="argoproj.io/v1alpha1",
            plural="rollouts",
            template_path=CANONICAL_TEMPLATE,
            strategic=False,
            restart_field=("spec", "restartAt"),
        ),
    )
}


def kind_info(kind: str) -> KindInfo:
    """The row of ``kind`` (a :class:`WorkloadKind` value)."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown workload kind {kind!r}") from None


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def pod_template(kind: str, obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The pod template of ``obj`` (a workload of ``kind`` as an API dict); ``{}`` if none."""
    found = _dig(obj, kind_info(kind).template_path)
    return found if isinstance(found, Mapping) else {}


def placed(kind: str, patch: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A canonical patch (pod template at ``spec.template``) in ``kind``'s layout: the
    template moved to the kind's path and, for a kind with a restart field, the restart
    marker annotation moved there (a removal of the annotation is dropped: the field is
    not the template's). Everything else of the patch is kept as it is."""
    if patch is None:
        return None
    info = kind_info(kind)
    out = copy.deepcopy(dict(patch))
    spec = out.get("spec")
    if not isinstance(spec, dict) or "template" not in spec:
        return out
    template = spec.pop("template")
    restart: str | None = None
    if info.restart_field is not None and isinstance(template, dict):
        annotations = (template.get("metadata") or {}).get("annotations")
        if isinstance(annotations, dict) and RESTARTED_AT in annotations:
            value = annotations.pop(RESTARTED_AT)
            restart = value if isinstance(value, str) else None
    node = out
    for key in info.template_path[:-1]:
        node = node.setdefault(key, {})
    node[info.template_path[-1]] = template
    if restart is not None and info.restart_field is not None:
        node = out
        for key in info.restart_field[:-1]:
            node = node.setdefault(key, {})
        node[info.restart_field[-1]] = restart
    return out


# --- strategic merge -> JSON merge patch (custom resources) ----------------------------------


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, Mapping) and "name" in i for i in items)


def _apply_list(live: Any, patch: list[Any]) -> list[Any]:
    """The whole list after a strategic merge of ``patch`` into ``live``: entries merged by
    ``name`` (``$patch: delete`` removes one), a list without names replaced."""
    if not _named(patch):
        return copy.deepcopy(patch)
    out = [copy.deepcopy(i) for i in live] if isinstance(live, list) else []
    for entry in patch:
        name = entry["name"]
        index = next(
            (i for i, e in enumerate(out) if isinstance(e, Mapping) and e.get("name") == name),
            None,
        )
        if entry.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append(_apply({}, entry))
        else:
            out[index] = _apply(out[index], entry)
    return out


def _apply(live: Any, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The whole object after a strategic merge of ``patch`` into ``live``."""
    out = copy.deepcopy(dict(live)) if isinstance(live, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            out[key] = _apply(out.get(key), value)
        elif isinstance(value, list):
            out[key] = _apply_list(out.get(key), value)
        else:
            out[key] = value
    return out


def merge_form(live: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` (a strategic-merge patch as the steps build them) as a JSON merge patch of
    ``live`` with the same result: maps stay maps (``null`` removes a key), every list the
    patch touches is sent whole as it would be after the strategic merge."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = live.get(key) if isinstance(live, Mapping) else None
        if isinstance(value, Mapping):
            out[key] = merge_form(current if isinstance(current, Mapping) else {}, value)
        elif isinstance(value, list):
            out[key] = _apply_list(current, value)
        else:
            out[key] = value
    return out
