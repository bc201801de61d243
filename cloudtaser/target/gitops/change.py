"""The one representation of a change to a workload's pod template that leaves the cluster as
files: the engine's strategic-merge patch (the step's own patch, in the kind's layout:
:func:`cloudtaser.target.kube.kinds.placed`) plus who the workload is and who owns it.

The patch is what a live protect / finalize would send, minus what only makes sense live:
``metadata.resourceVersion`` (a precondition) and the restart marker (a change in Git rolls the
pods by itself). Nothing in it is a secret value: names, vault paths, annotation values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from cloudtaser.contract import INJECT_LABEL, MANAGED_KEYS, RESTARTED_AT
from cloudtaser.plan.model import Owner

__all__ = ["ChangeAction", "TemplateChange", "for_git", "protection"]

ChangeAction = Literal["protect", "finalize", "unprotect"]
_RESTART_FIELDS: Final = ("restartAt",)


@dataclass(frozen=True)
class TemplateChange:
    """One workload's change, ready to be emitted for its owner."""

    action: ChangeAction
    api_version: str
    kind: str
    namespace: str
    name: str
    owner: Owner | None
    #: The placed strategic-merge patch without resourceVersion and restart marker
    #: (:func:`for_git`).
    patch: Mapping[str, Any]
    #: The live pod template the patch was built against. Needed only for a kind the API
    #: server and kustomize cannot strategic-merge (an Argo Rollout, a custom resource):
    #: kustomize replaces such a kind's lists, so the emitter writes every list the patch
    #: touches whole (:func:`cloudtaser.target.kube.kinds.merge_form`), as the live step does.
    template: Mapping[str, Any] | None = None
    #: A protect change rebuilt from the live template (:func:`protection`), not from the plan:
    #: ``finalize --emit`` writes it with its own change, so that its file can replace the
    #: one protect wrote without taking the injection out of Git.
    rebuilt: bool = False


def for_git(patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` without ``metadata.resourceVersion`` and without the restart marker (the
    template annotation, or a kind's restart field such as a Rollout's ``spec.restartAt``)."""
    out = copy.deepcopy(dict(patch))
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("resourceVersion", None)
        if not meta:
            out.pop("metadata")
    _drop_marker(out)
    return out


def _drop_marker(node: Any) -> None:
    if not isinstance(node, dict):
        return
    for key in list(node):
        if key == RESTARTED_AT or key in _RESTART_FIELDS:
            node.pop(key)
            continue
        _drop_marker(node[key])
        if (
            key in ("annotations", "metadata", "spec", "template", "jobTemplate")
            and node[key] == {}
        ):
            node.pop(key)


def protection(template: Mapping[str, Any]) -> dict[str, Any] | None:
    """The protection a live pod template carries, as a patch with the template at
    ``spec.template`` (place it for the kind): the inject label and every cloudtaser annotation
    but the restart marker, with their live values; ``None`` when it carries none.

    ``finalize --emit`` adds it to its own change: the team may replace the file protect wrote
    with finalize's, and without protect's annotations the new pods would not be injected while
    their Secret references are gone. Once Git's protect change is applied, the live template's
    values are Git's."""
    meta = template.get("metadata") if isinstance(template, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    raw_labels, raw_annotations = meta.get("labels"), meta.get("annotations")
    labels: Mapping[str, Any] = raw_labels if isinstance(raw_labels, Mapping) else {}
    annotations: Mapping[str, Any] = raw_annotations if isinstance(raw_annotations, Mapping) else {}
    kept = {
        key: value
        for key, value in sorted(annotations.items())
        if key in MANAGED_KEYS and key != RESTARTED_AT and isinstance(value, str)
    }
    if labels.get(INJECT_LABEL) != "true" or not kept:
        return None
    return {
        "spec": {"template": {"metadata": {"labels": {INJECT_LABEL: "true"}, "annotations": kept}}}
    }
