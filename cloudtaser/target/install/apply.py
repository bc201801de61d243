"""``target install``: the injector (``cloudtaser-runtime inject``) in a cluster, by
server-side apply of the objects :mod:`cloudtaser.target.install.manifests` builds, and the
install record.

Every write is a server-side apply with field manager
:data:`~cloudtaser.target.install.manifests.FIELD_MANAGER` and ``force``, so a re-run with the
same options changes nothing (idempotent), a re-run with another image is the upgrade, and an
object an earlier install created but this one does not want any more (the PDB after
``--replicas 1``) is pruned. Every conflict (an object of the same name that is not ours, an
install in another namespace) is found before anything is written.

The install record: ConfigMap :data:`~cloudtaser.target.install.manifests.RECORD_NAME` in the
namespace, listing every object with its UID, and whether the namespace was created by install.
:mod:`cloudtaser.target.install.uninstall` deletes exactly what it lists. Nothing here prints:
progress goes to a callback. ``--check`` is :mod:`cloudtaser.target.install.check`.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import yaml

from cloudtaser import __version__
from cloudtaser.changes import Action
from cloudtaser.errors import OperationError
from cloudtaser.target.install.check import check
from cloudtaser.target.install.manifests import (
    CREATED_ANNOTATION,
    CREATED_VALUE,
    FIELD_MANAGER,
    KINDS,
    LABELS,
    NAME,
    RECORD_NAME,
    InstallOptions,
    build_objects,
    object_meta,
)
from cloudtaser.target.kube import api
from cloudtaser.target.kube.api import get_object, where
from cloudtaser.target.rollout import wait_for_rollout

if TYPE_CHECKING:
    from cloudtaser.progress import Progress
    from cloudtaser.target.kube.session import KubeSession

__all__ = [
    "InstallRecord",
    "InstallReport",
    "ObjectChange",
    "created_by_install",
    "delete_recorded",
    "install",
    "labelled",
    "read_record",
]


#: Seconds between two admission checks while install waits for the injector.
ADMISSION_POLL: Final = 1.0
_NOISE: Final = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


def _comparable(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    if not obj:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _NOISE}
    return out


def _diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    old = yaml.safe_dump(_comparable(before), sort_keys=True).splitlines() if before else []
    new = yaml.safe_dump(_comparable(after), sort_keys=True).splitlines()
    return [
        line
        for line in difflib.unified_diff(old, new, "live", "applied", lineterm="", n=1)
        if not line.startswith(("---", "+++"))
    ]


@dataclass(frozen=True)
class ObjectChange:
    """What install or uninstall did (or, with ``dry_run``, would do) to one object."""

    kind: str
    name: str
    namespace: str | None
    action: Action
    detail: str = ""
    #: ``--dry-run``, for an update: the unified diff (live → applied) of the object, no status.
    diff: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{where(self.kind, self.name, self.namespace)}: {self.action}" + (
            f" ({self.detail})" if self.detail else ""
        )


@dataclass
class InstallReport:
    """What install did (or, with ``dry_run``, would do), object by object."""

    changes: list[ObjectChange] = field(default_factory=list)
    dry_run: bool = False
    #: When waited for: the Deployment's rollout, then the admission check (ready).
    rollout: str | None = None


@dataclass(frozen=True)
class InstallRecord:
    """The install record as read back from the cluster."""

    #: What install created: ``{"kind", "name", "uid"[, "namespace"]}`` each.
    objects: tuple[Mapping[str, Any], ...]
    #: Install created the namespace (so uninstall may delete it, if nothing else is in it).
    namespace_created: bool
    #: The record ConfigMap's own UID.
    uid: str | None


def install(
    session: KubeSession,
    options: InstallOptions,
    *,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 120.0,
    actor: str = "unknown",
    progress: Progress | None = None,
) -> InstallReport:
    """Server-side apply every object (``dry_run``: the API server's dry run, nothing
    changes), prune what an earlier install created and this one does not want, write the
    record, and (``wait``) wait, within ``timeout``, for the Deployment to roll out and then
    for every check of ``target install --check`` to pass (caBundle, a dry-run pod injected):
    ``report.rollout`` says ready only then; on the deadline an :class:`OperationError`."""
    opts = options.validated()
    say = progress or (lambda _m: None)
    report = InstallReport(dry_run=dry_run)
    ns_live = get_object(session, "Namespace", opts.namespace, None)
    ours = ns_live is None or created_by_install(ns_live)
    record = read_record(session, opts.namespace) if ns_live is not None else None
    wanted = build_objects(opts, namespace=ours)
    if not ours:
        report.changes.append(
            ObjectChange(
                "Namespace",
                opts.namespace,
                None,
                Action.UNCHANGED,
                "exists and was not created by install: used, never changed or deleted",
            )
        )
    namespace_exists = ns_live is not None
    lives = _live_objects(session, opts, wanted, namespace_exists=namespace_exists)
    applied = _apply_objects(
        session, report, wanted, lives, namespace_exists=namespace_exists, say=say
    )
    report.changes += _prune(session, record, wanted, dry_run=dry_run, say=say)
    if dry_run:
        return report
    _write_record(
        session,
        opts,
        applied,
        namespace_created=bool(ours and (record is None or record.namespace_created)),
        actor=actor,
    )
    if wait:
        deadline = time.monotonic() + timeout
        report.rollout = _wait_deployment(session, opts.namespace, timeout, say)
        report.rollout += "; " + _wait_admission(session, opts.namespace, deadline, say)
    return report


def _live_objects(
    session: KubeSession,
    opts: InstallOptions,
    wanted: Sequence[Mapping[str, Any]],
    *,
    namespace_exists: bool,
) -> list[dict[str, Any] | None]:
    """The live object of each wanted one (``None``: absent), or :class:`OperationError` at
    the first conflict, so that every conflict is found before anything is written."""
    lives: list[dict[str, Any] | None] = []
    for body in wanted:
        meta = body["metadata"]
        kind, name, ns = str(body["kind"]), meta["name"], meta.get("namespace")
        absent = ns is not None and not namespace_exists
        live = None if absent else get_object(session, kind, name, ns)
        if live is not None and kind != "Namespace" and not labelled(live):
            raise OperationError(
                f"{where(kind, name, ns)} exists but was not created by cloudtaser (labels "
                f"app.kubernetes.io/part-of=cloudtaser, name={NAME} missing); "
                "remove it or choose another --namespace. Nothing was changed"
            )
        other = _installed_namespace(live) if kind == "ClusterRoleBinding" else None
        if other is not None and other != opts.namespace:
            raise OperationError(
                f"the injector is already installed in namespace {other} (one per cluster: the "
                "webhook configuration and ClusterRole are cluster-wide); run `target uninstall "
                f"--namespace {other}` first, or install with --namespace {other}. Nothing was "
                "changed"
            )
        lives.append(live)
    return lives


def _apply_objects(
    session: KubeSession,
    report: InstallReport,
    wanted: Sequence[Mapping[str, Any]],
    lives: Sequence[Mapping[str, Any] | None],
    *,
    namespace_exists: bool,
    say: Progress,
) -> list[dict[str, Any]]:
    """Server-side apply each wanted object, adding its change to ``report``; the objects
    as applied (for the record)."""
    dry_run = report.dry_run
    applied: list[dict[str, Any]] = []
    for body, live in zip(wanted, lives, strict=True):
        meta = body["metadata"]
        kind, name, ns = str(body["kind"]), meta["name"], meta.get("namespace")
        if dry_run and ns is not None and not namespace_exists:
            # a dry-run create in a namespace that does not exist yet is refused by the server
            report.changes.append(
                ObjectChange(kind, name, ns, Action.CREATE, "namespace created first; not sent")
            )
            continue
        result = api.apply(session, body, field_manager=FIELD_MANAGER, dry_run=dry_run)
        if live is None:
            action = Action.CREATE
        elif _comparable(live) == _comparable(result):
            action = Action.UNCHANGED
        else:
            action = Action.UPDATE
        # a created object is what --print shows; an update is shown as what changes
        diff = tuple(_diff(live, result)) if dry_run and action == Action.UPDATE else ()
        change = ObjectChange(kind, name, ns, action, diff=diff)
        report.changes.append(change)
        if not dry_run:
            say(str(change))
        applied.append(result)
    return applied


def _installed_namespace(binding: Mapping[str, Any] | None) -> str | None:
    """The namespace an existing install's ClusterRoleBinding points to."""
    subjects = (binding or {}).get("subjects") or []
    names = {s.get("namespace") for s in subjects if s.get("name") == NAME}
    return str(names.pop()) if len(names) == 1 else None


def created_by_install(namespace: Mapping[str, Any]) -> bool:
    """The namespace carries install's :data:`CREATED_ANNOTATION`."""
    annotations = (namespace.get("metadata") or {}).get("annotations") or {}
    return annotations.get(CREATED_ANNOTATION) == CREATED_VALUE


def labelled(obj: Mapping[str, Any]) -> bool:
    """The object carries all of install's :data:`LABELS`."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in LABELS.items())


def _ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out = {"kind": obj.get("kind"), "name": meta.get("name"), "uid": meta.get("uid")}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    return out


def read_record(session: KubeSession, namespace: str) -> InstallRecord | None:
    """The install record in ``namespace`` (``None``: none, or not labelled as ours);
    :class:`OperationError` when it is damaged."""
    live = get_object(session, "ConfigMap", RECORD_NAME, namespace)
    if live is None or not labelled(live):
        return None
    data = live.get("data") or {}
    try:
        objects = json.loads(data.get("objects", "[]"))
    except ValueError:
        raise OperationError(
            f"the install record ConfigMap {namespace}/{RECORD_NAME} is damaged (objects is not "
            "JSON); delete it and run install again"
        ) from None
    if not isinstance(objects, list) or not all(
        isinstance(o, dict) and o.get("kind") in KINDS and isinstance(o.get("name"), str)
        for o in objects
    ):
        raise OperationError(
            f"the install record ConfigMap {namespace}/{RECORD_NAME} lists unknown objects; "
            "delete it and run install again"
        )
    return InstallRecord(
        objects=tuple(objects),
        namespace_created=data.get("namespaceCreated") == "true",
        uid=(live.get("metadata") or {}).get("uid"),
    )


def _write_record(
    session: KubeSession,
    opts: InstallOptions,
    applied: Sequence[Mapping[str, Any]],
    *,
    namespace_created: bool,
    actor: str,
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(RECORD_NAME, opts.namespace),
        "data": {
            "objects": json.dumps([_ref(o) for o in applied], sort_keys=True),
            "namespaceCreated": "true" if namespace_created else "false",
            "image": opts.image,
            "version": __version__,
            "installedBy": actor,
            "installedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    api.apply(session, body, field_manager=FIELD_MANAGER, dry_run=False)


def _prune(
    session: KubeSession,
    record: InstallRecord | None,
    wanted: Sequence[Mapping[str, Any]],
    *,
    dry_run: bool,
    say: Progress,
) -> list[ObjectChange]:
    """Delete what the earlier install recorded and this one no longer wants."""
    if record is None:
        return []
    keep = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in wanted}
    stale = [o for o in record.objects if (o["kind"], o["name"], o.get("namespace")) not in keep]
    changes = []
    for entry in stale:
        if entry["kind"] == "Namespace":
            continue
        change = delete_recorded(session, entry, dry_run=dry_run, detail="no longer wanted")
        say(str(change))
        changes.append(change)
    return changes


def _wait_deployment(session: KubeSession, namespace: str, timeout: float, say: Progress) -> str:
    def fetch() -> Mapping[str, Any]:
        obj = get_object(session, "Deployment", NAME, namespace)
        if obj is None:
            raise OperationError(f"Deployment {namespace}/{NAME} disappeared while rolling out")
        return obj

    generation = int((fetch().get("metadata") or {}).get("generation") or 0)
    try:
        state = wait_for_rollout(
            fetch,
            "Deployment",
            min_generation=generation,
            timeout=timeout,
            on_progress=lambda m: say(f"Deployment {namespace}/{NAME}: {m}"),
        )
    except OperationError as exc:
        raise OperationError(
            f"the injector did not become ready: {exc}. Look at `kubectl -n {namespace} "
            f"describe pods -l app.kubernetes.io/name={NAME}` and the pods' logs"
        ) from None
    return state.message


def _wait_admission(session: KubeSession, namespace: str, deadline: float, say: Progress) -> str:
    """Until ``deadline``: every check of ``target install --check`` passes (the caBundle
    published, a dry-run opted-in pod comes back injected), so install never says ready while
    ``--check`` would fail. On the deadline an :class:`OperationError` with what still fails."""
    said = ""
    while True:
        failing = [c for c in check(session, namespace=namespace) if not c.ok]
        if not failing:
            return "caBundle published and a dry-run opted-in pod came back injected"
        if time.monotonic() >= deadline:
            raise OperationError(
                "the injector is not ready: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failing)
                + ". Run `cloudtaser target install --check`; look at `kubectl -n "
                f"{namespace} logs -l app.kubernetes.io/name={NAME}`"
            )
        now = f"waiting for the injector: {failing[0].name}: {failing[0].detail}"
        if now != said:  # each new reason once
            say(now)
            said = now
        time.sleep(ADMISSION_POLL)


def delete_recorded(
    session: KubeSession, entry: Mapping[str, Any], *, dry_run: bool, detail: str = ""
) -> ObjectChange:
    """Delete one object of the record (``entry``: kind, name, namespace, uid) if it is still
    the one install created: same UID, still labelled; otherwise it is kept and reported."""
    kind, name, ns = entry["kind"], entry["name"], entry.get("namespace")
    live = get_object(session, kind, name, ns)
    if live is None:
        return ObjectChange(kind, name, ns, Action.UNCHANGED, "already gone")
    uid = (live.get("metadata") or {}).get("uid")
    if entry.get("uid") and uid != entry["uid"]:
        return ObjectChange(
            kind, name, ns, Action.KEEP, "replaced since install (another UID): left alone"
        )
    if kind != "Namespace" and not labelled(live):
        return ObjectChange(kind, name, ns, Action.KEEP, "labels removed since install: left")
    api.delete(session, kind, name, ns, dry_run=dry_run)
    return ObjectChange(kind, name, ns, Action.DELETE, detail)
