"""The plan-mapped Secret references of a pod template, both ways: what finalize removes (and
what it keeps, and why), and how unprotect puts back what finalize removed.

- :func:`finalize_edit`: the ``env[].valueFrom.secretKeyRef`` entries the plan maps, and the
  ``envFrom[].secretRef`` entries whose every key it maps, as :class:`FinalizedRef` entries
  (recorded in the plan as ``finalizedRefs``), the Secret volumes the plan migrates, whose
  ``secret``/``projected`` source becomes ``emptyDir {medium: Memory}`` of the same name
  (recorded, source as it was, as ``finalizedVolumes``), and the ``spec.template.spec``
  fragment of the strategic-merge patch doing exactly that; what must stay goes into ``kept``
  (:class:`KeptRef`, with the reason: :func:`cloudtaser.target.engine.consumption.kept_reasons`);
- :func:`missing_refs`, :func:`restore_fragment`, :func:`restore_for_unprotect`,
  :func:`with_restore`: the way back, from the recorded ``finalizedRefs`` (unprotect puts them
  back in the same patch that removes the annotations: one rollout);
- :func:`clear_finalized`: forget finalize in the plan once the references are back.

One concept, the two directions of the same edit, kept together so they stay each other's
inverse; shared by the finalize and unprotect steps, which do not import each other.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.plan.model import FinalizedRef, FinalizedVolume, Workload
from cloudtaser.target.engine.consumption import Triple, kept_reasons, plan_triples
from cloudtaser.target.kube.kinds import pod_template
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.target.consumers import Coverage
    from cloudtaser.target.kube.workloads import WorkloadAPI, WorkloadRef
    from cloudtaser.target.podspec import SecretKeys

__all__ = [
    "MEMORY_VOLUME",
    "FinalizeEdit",
    "KeptRef",
    "clear_finalized",
    "describe",
    "finalize_edit",
    "missing_refs",
    "missing_volumes",
    "restore_for_unprotect",
    "restore_fragment",
    "restore_volumes",
    "volume_secrets",
    "with_restore",
]

_CONTAINER_KEYS: Final = (("initContainers", True), ("containers", False))
#: The source of a migrated Secret volume after finalize (the injector renders into it).
MEMORY_VOLUME: Final = {"medium": "Memory"}


# --- what finalize removes ------------------------------------------------------------------


@dataclass
class FinalizeEdit:
    """What finalize removes from one pod template, and what it keeps."""

    refs: list[FinalizedRef] = field(default_factory=list)
    #: ``spec.template.spec`` fragment of the strategic-merge patch.
    spec_patch: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Plan-mapped references left in place because something the runtime does not serve
    #: reads them (:mod:`cloudtaser.target.consumers`).
    kept: list[KeptRef] = field(default_factory=list)
    #: The migrated Secret volumes whose source becomes a memory volume.
    volumes: list[FinalizedVolume] = field(default_factory=list)


@dataclass(frozen=True)
class KeptRef:
    """A plan-mapped reference finalize leaves in the template, and why (names only)."""

    ref: FinalizedRef
    why: str

    def __str__(self) -> str:
        return f"kept {_named(self.ref)}: {self.why}"


def _named(ref: FinalizedRef) -> str:
    where = f"{'init container' if ref.init else 'container'} {ref.container}"
    if ref.via == "env":
        return f"env {ref.env} (Secret {ref.secret} key {ref.key}, {where})"
    prefix = f" prefix {ref.prefix}" if ref.prefix else ""
    return f"envFrom Secret {ref.secret}{prefix} ({where})"


def _env_edit(
    container: Mapping[str, Any],
    init: bool,
    planned: set[Triple],
    reasons: Mapping[tuple[str, bool, str], list[str]],
    edit: FinalizeEdit,
) -> list[dict[str, Any]]:
    """The ``env`` deletions of one container (``$patch: delete`` by name); what must stay
    goes into ``edit.kept``."""
    cname = str(container.get("name") or "")
    deletes: list[dict[str, Any]] = []
    for entry in container.get("env") or ():
        ref = dig(entry, "valueFrom", "secretKeyRef") if isinstance(entry, Mapping) else None
        if not isinstance(ref, Mapping):
            continue
        triple = (
            str(ref.get("name") or ""),
            str(ref.get("key") or ""),
            str(entry.get("name") or ""),
        )
        if triple not in planned:
            continue
        finalized = FinalizedRef(
            container=cname,
            init=init,
            via="env",
            secret=triple[0],
            key=triple[1],
            env=triple[2],
            optional=bool(ref.get("optional")),
        )
        why = reasons.get((cname, init, triple[2]))
        if why:
            edit.kept.append(KeptRef(finalized, "; ".join(why)))
            continue
        deletes.append({"name": triple[2], "$patch": "delete"})
        edit.refs.append(finalized)
    return deletes


def _env_from_edit(
    container: Mapping[str, Any],
    init: bool,
    planned: set[Triple],
    reasons: Mapping[tuple[str, bool, str], list[str]],
    *,
    secret_keys: SecretKeys,
    edit: FinalizeEdit,
) -> tuple[bool, list[Any]]:
    """Whether an ``envFrom`` Secret entry of one container goes, and the entries that stay.
    An entry goes only when the plan maps every key it provides and no provided variable
    must stay; one with unmapped keys is a problem (the workload is refused)."""
    cname = str(container.get("name") or "")
    kept_from: list[Any] = []
    removed = False
    for source in container.get("envFrom") or ():
        ref = source.get("secretRef") if isinstance(source, Mapping) else None
        if not isinstance(ref, Mapping):
            kept_from.append(source)
            continue
        secret = str(ref.get("name") or "")
        prefix = str(source.get("prefix") or "")
        provided = {(secret, k, prefix + k) for k in secret_keys(secret) or []}
        if not provided & planned:
            kept_from.append(source)
            continue
        unmapped = sorted(k for s, k, e in provided if (s, k, e) not in planned)
        if unmapped:
            edit.problems.append(
                f"envFrom of Secret {secret} in container {cname} also provides key(s) "
                f"{', '.join(unmapped)} that the plan does not map; removing it would take "
                "those variables away (map them in the plan, or remove them yourself)"
            )
            kept_from.append(source)
            continue
        finalized = FinalizedRef(
            container=cname,
            init=init,
            via="envFrom",
            secret=secret,
            prefix=prefix or None,
            optional=bool(ref.get("optional")),
        )
        why = [
            reason if init else f"for {env}, {reason}"
            for env in sorted(e for _s, _k, e in provided)
            for reason in reasons.get((cname, init, env), ())
        ]
        if why:
            why = list(dict.fromkeys(why))
            edit.kept.append(KeptRef(finalized, "; ".join(why)))
            kept_from.append(source)
            continue
        removed = True
        edit.refs.append(finalized)
    return removed, kept_from


def finalize_edit(
    template: Mapping[str, Any],
    workload: Workload,
    secret_keys: SecretKeys,
    *,
    coverage: Coverage | None = None,
) -> FinalizeEdit:
    """The references of ``template`` (``spec.template``) that the plan maps and nothing but
    the wrapped process reads, as :class:`FinalizedRef` entries and the patch fragment
    removing exactly them. The others go into ``kept`` with the reason: every init container
    reference, and a variable used by ``$(VAR)``, an exec probe or hook, or an ``envFrom``
    providing one (:func:`cloudtaser.target.consumers.keep_reasons`), unless ``coverage`` (what
    the injected pods show the runtime serving) covers the use."""
    planned = plan_triples(workload)
    reasons = kept_reasons(template, workload, secret_keys, coverage=coverage)
    edit = FinalizeEdit()
    spec = template.get("spec") or {}
    for key, init in _CONTAINER_KEYS:
        fragments: list[dict[str, Any]] = []
        for container in spec.get(key) or ():
            if not isinstance(container, Mapping):
                continue
            fragment: dict[str, Any] = {}
            deletes = _env_edit(container, init, planned, reasons, edit)
            if deletes:
                fragment["env"] = deletes
            removed, env_from = _env_from_edit(
                container, init, planned, reasons, secret_keys=secret_keys, edit=edit
            )
            if removed:  # envFrom has no merge key: the list is sent whole
                fragment["envFrom"] = copy.deepcopy(env_from) or None
            if fragment:
                fragments.append({"name": str(container.get("name") or ""), **fragment})
        if fragments:
            edit.spec_patch[key] = fragments
    _volume_edit(spec, workload, edit)
    return edit


def _volume_edit(spec: Mapping[str, Any], workload: Workload, edit: FinalizeEdit) -> None:
    """The migrated Secret volumes of ``spec`` that still read a Secret: their source, as it
    is, into ``edit.volumes``; the patch replaces it by ``emptyDir {medium: Memory}``."""
    migrated = {f.volume for f in workload.migrated_files}
    patches: list[dict[str, Any]] = []
    for volume in spec.get("volumes") or ():
        if not isinstance(volume, Mapping) or volume.get("name") not in migrated:
            continue
        name = str(volume["name"])
        for kind in ("secret", "projected"):
            source = volume.get(kind)
            if isinstance(source, Mapping):
                edit.volumes.append(
                    FinalizedVolume(volume=name, **{kind: copy.deepcopy(dict(source))})
                )
                patches.append({"name": name, kind: None, "emptyDir": dict(MEMORY_VOLUME)})
                break
    if patches:
        edit.spec_patch["volumes"] = patches


def describe(refs: Sequence[FinalizedRef], volumes: Sequence[FinalizedVolume] = ()) -> str:
    """The removed references and replaced volumes in one line (names only), for the plan
    history."""
    parts = [
        f"env {r.env} (Secret {r.secret} key {r.key}, container {r.container})"
        if r.via == "env"
        else f"envFrom Secret {r.secret} (container {r.container})"
        for r in refs
    ]
    parts += [f"Secret volume {v.volume} (now a memory volume)" for v in volumes]
    return ", ".join(parts) if parts else "nothing"


def volume_secrets(volume: FinalizedVolume) -> list[tuple[str, bool]]:
    """``(Secret name, optional)`` of every Secret a recorded volume source reads."""
    if volume.secret is not None:
        return [(str(volume.secret.get("secretName") or ""), bool(volume.secret.get("optional")))]
    return [
        (str(s["secret"].get("name") or ""), bool(s["secret"].get("optional")))
        for s in (volume.projected or {}).get("sources") or ()
        if isinstance(s, Mapping) and isinstance(s.get("secret"), Mapping)
    ]


def missing_volumes(
    template: Mapping[str, Any], volumes: Sequence[FinalizedVolume]
) -> list[FinalizedVolume]:
    """The recorded volumes whose source ``template`` no longer carries (to restore): the
    volume exists and reads no Secret (finalize's memory volume)."""
    live = {
        str(v.get("name")): v
        for v in (template.get("spec") or {}).get("volumes") or ()
        if isinstance(v, Mapping)
    }
    return [
        v
        for v in volumes
        if v.volume in live
        and not isinstance(live[v.volume].get("secret"), Mapping)
        and not isinstance(live[v.volume].get("projected"), Mapping)
    ]


# --- the way back (unprotect) --------------------------------------------------------------


def _restored_env(ref: FinalizedRef) -> dict[str, Any]:
    key_ref: dict[str, Any] = {"name": ref.secret, "key": ref.key}
    if ref.optional:
        key_ref["optional"] = True
    return {"name": ref.env, "valueFrom": {"secretKeyRef": key_ref}}


def _restored_from(ref: FinalizedRef) -> dict[str, Any]:
    secret_ref: dict[str, Any] = {"name": ref.secret}
    if ref.optional:
        secret_ref["optional"] = True
    entry: dict[str, Any] = {"secretRef": secret_ref}
    if ref.prefix:
        entry["prefix"] = ref.prefix
    return entry


def _has(container: Mapping[str, Any], ref: FinalizedRef) -> bool:
    if ref.via == "env":
        return any(
            isinstance(e, Mapping)
            and e.get("name") == ref.env
            and dig(e, "valueFrom", "secretKeyRef", "name") == ref.secret
            and dig(e, "valueFrom", "secretKeyRef", "key") == ref.key
            for e in container.get("env") or ()
        )
    return any(
        isinstance(e, Mapping)
        and dig(e, "secretRef", "name") == ref.secret
        and (e.get("prefix") or None) == ref.prefix
        for e in container.get("envFrom") or ()
    )


def missing_refs(template: Mapping[str, Any], refs: Sequence[FinalizedRef]) -> list[FinalizedRef]:
    """The recorded references that ``template`` no longer carries (the ones to restore)."""
    spec = template.get("spec") or {}
    out: list[FinalizedRef] = []
    for ref in refs:
        key = "initContainers" if ref.init else "containers"
        container = next(
            (
                c
                for c in spec.get(key) or ()
                if isinstance(c, Mapping) and c.get("name") == ref.container
            ),
            None,
        )
        if container is not None and not _has(container, ref):
            out.append(ref)
    return out


def restore_fragment(template: Mapping[str, Any], refs: Sequence[FinalizedRef]) -> dict[str, Any]:
    """The ``spec.template.spec`` patch fragment putting back ``refs`` that are missing (an
    empty dict when none is): env entries are merged by name, ``envFrom`` (no merge key) is
    sent whole — the live entries plus the restored ones."""
    spec = template.get("spec") or {}
    missing = missing_refs(template, refs)
    out: dict[str, Any] = {}
    for key, init in _CONTAINER_KEYS:
        fragments: list[dict[str, Any]] = []
        for container in spec.get(key) or ():
            if not isinstance(container, Mapping):
                continue
            mine = [r for r in missing if r.init == init and r.container == container.get("name")]
            if not mine:
                continue
            fragment: dict[str, Any] = {"name": container.get("name")}
            env = [_restored_env(r) for r in mine if r.via == "env"]
            if env:
                fragment["env"] = env
            froms = [_restored_from(r) for r in mine if r.via == "envFrom"]
            if froms:
                fragment["envFrom"] = [*copy.deepcopy(list(container.get("envFrom") or ())), *froms]
            fragments.append(fragment)
        if fragments:
            out[key] = fragments
    return out


def restore_volumes(
    template: Mapping[str, Any], volumes: Sequence[FinalizedVolume]
) -> list[dict[str, Any]]:
    """The ``volumes`` patch entries putting back the recorded sources ``template`` lacks (the
    memory volume goes, the source as it was comes back)."""
    out: list[dict[str, Any]] = []
    for volume in missing_volumes(template, volumes):
        kind, source = (
            ("secret", volume.secret)
            if volume.secret is not None
            else ("projected", volume.projected)
        )
        out.append({"name": volume.volume, "emptyDir": None, kind: copy.deepcopy(source)})
    return out


def restore_for_unprotect(
    cluster: WorkloadAPI, ref: WorkloadRef, workload: Workload, obj: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The ``spec.template.spec`` fragment that puts back what finalize removed (empty when
    nothing is missing), or a refusal when a Secret it needs was deleted."""
    template = pod_template(ref.kind, obj)
    missing = missing_refs(template, workload.finalized_refs)
    needed = {(r.secret, r.optional) for r in missing}
    needed |= {
        pair
        for volume in missing_volumes(template, workload.finalized_volumes)
        for pair in volume_secrets(volume)
    }
    gone = sorted(
        {
            secret
            for secret, optional in needed
            if not optional and cluster.secret_keys(ref.namespace, secret) is None
        }
    )
    if gone:
        return {}, (
            f"finalize removed its references to Secret(s) {', '.join(gone)}, which no longer "
            "exist (finalize --delete-secrets?): putting the references back would stop the pods. "
            "Recreate the Secret(s) from the vault first, then re-run unprotect"
        )
    fragment = restore_fragment(template, workload.finalized_refs)
    volumes = restore_volumes(template, workload.finalized_volumes)
    if volumes:
        fragment["volumes"] = volumes
    return fragment, None


def with_restore(
    patch: dict[str, Any] | None, obj: Mapping[str, Any], fragment: Mapping[str, Any]
) -> dict[str, Any] | None:
    """``patch`` (unprotect's annotation removal, or ``None``) plus the restore ``fragment``,
    in one strategic-merge patch (one rollout)."""
    if not fragment:
        return patch
    out = copy.deepcopy(patch) if patch is not None else {}
    out.setdefault("spec", {}).setdefault("template", {})["spec"] = dict(fragment)
    rv = dig(obj, "metadata", "resourceVersion")
    if rv:
        out["metadata"] = {"resourceVersion": rv}
    return out


def clear_finalized(workload: Workload) -> None:
    """Forget finalize (unprotect has put the references back)."""
    workload.finalized_at = None
    workload.finalized_refs = []
    workload.finalized_volumes = []
