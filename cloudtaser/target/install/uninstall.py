"""``target uninstall``: exactly what ``target install`` created, removed again.

First, every Deployment, StatefulSet and DaemonSet of the cluster whose pod template still
opts in to injection is listed (:func:`opted_in_workloads`): without the injector their next
pods start unwrapped, and a finalized one (its template reads no Secret any more) with no
secret at all. While there is one, uninstall refuses and deletes nothing, unless told to go
on (``ignore_protected``, ``--ignore-protected-workloads``).

The objects of the install record whose UID still matches are deleted (an object replaced by
someone else is left and reported), or, without a record (a ``--print`` install, a deleted
record), the objects of install's fixed names that carry all three labels. The webhook
configuration goes first. The namespace goes only when install created it and nothing else
lives in it. Nothing here prints: progress goes to a callback.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.changes import Action
from cloudtaser.errors import ConfigError, OperationError
from cloudtaser.plan.rules import RUNTIME_NAMESPACE, is_dns_label, shown
from cloudtaser.target.annotations import INJECT_LABEL
from cloudtaser.target.install.apply import (
    InstallRecord,
    ObjectChange,
    created_by_install,
    delete_recorded,
    labelled,
    read_record,
)
from cloudtaser.target.install.manifests import KINDS, NAME, RECORD_NAME
from cloudtaser.target.kube import api
from cloudtaser.target.kube.api import get_object, where
from cloudtaser.target.podspec import env_consumptions, env_refs_from, is_protected
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.progress import Progress
    from cloudtaser.target.kube.session import KubeSession

__all__ = ["OptedIn", "UninstallReport", "opted_in_workloads", "uninstall"]


#: The workload kinds protect patches (their pod templates opt in to injection).
_WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet")


@dataclass(frozen=True)
class OptedIn:
    """A workload whose pod template still opts in to injection (names only)."""

    namespace: str
    kind: str
    name: str
    #: Its template reads no Kubernetes Secret any more (finalize removed the references).
    finalized: bool

    def __str__(self) -> str:
        what = (
            "finalized: its next pods would start with no secret at all"
            if self.finalized
            else "protected: its next pods would start unwrapped, without the vault's values"
        )
        return f"{self.kind} {self.namespace}/{self.name} ({what})"


@dataclass
class UninstallReport:
    """What uninstall did (or, with ``dry_run``, would do), object by object."""

    changes: list[ObjectChange] = field(default_factory=list)
    dry_run: bool = False
    #: How the objects were found: "record" or "labels".
    found_by: str = "record"
    #: The workloads still opted in to injection when uninstall ran.
    opted_in: list[OptedIn] = field(default_factory=list)
    #: Nothing was deleted because of :attr:`opted_in` (``ignore_protected`` not given).
    refused: bool = False


def opted_in_workloads(session: KubeSession) -> list[OptedIn]:
    """Every Deployment, StatefulSet and DaemonSet (all namespaces) whose pod template opts
    in to injection (the inject label or annotation), in namespace, kind, name order."""
    found: list[OptedIn] = []
    for kind in _WORKLOAD_KINDS:
        for obj in api.list_objects(session, kind, "*", action=f"list {kind}s (all namespaces)"):
            template = dig(obj, "spec", "template") or {}
            labels = dig(template, "metadata", "labels") or {}
            if labels.get(INJECT_LABEL) != "true" and not is_protected(template):
                continue
            reads_secrets = bool(env_refs_from(template)) or bool(
                env_consumptions(template, lambda _name: None)
            )
            found.append(
                OptedIn(
                    namespace=str(dig(obj, "metadata", "namespace") or ""),
                    kind=kind,
                    name=str(dig(obj, "metadata", "name") or ""),
                    finalized=not reads_secrets,
                )
            )
    found.sort(key=lambda w: (w.namespace, _WORKLOAD_KINDS.index(w.kind), w.name))
    return found


#: What may stay in a namespace install created without making it "used by someone else".
_DEFAULTS: Final = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
_FOREIGN_KINDS: Final = (
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "Role",
    "RoleBinding",
    "PodDisruptionBudget",
    "Secret",
    "StatefulSet",
    "DaemonSet",
    "Job",
)


def _foreign_objects(session: KubeSession, namespace: str, ours: set[tuple[str, str]]) -> list[str]:
    """Objects in ``namespace`` that install did not create (so it must stay)."""
    action = f"list the objects in namespace {namespace}"
    found: list[str] = []
    for kind in (*_FOREIGN_KINDS, "Pod"):
        for obj in api.list_objects(session, kind, namespace, action=action):
            meta = obj.get("metadata") or {}
            name = str(meta.get("name") or "")
            if kind == "Pod":
                if (meta.get("labels") or {}).get("app.kubernetes.io/name") != NAME:
                    found.append(f"Pod {name}")
            elif (kind, name) not in ours and (kind, name) not in _DEFAULTS:
                found.append(f"{kind} {name}")
    return found


def _fixed_objects(namespace: str) -> list[dict[str, Any]]:
    """Without a record: every object install may have created, by its fixed name."""
    out: list[dict[str, Any]] = []
    for kind in KINDS:
        if kind == "Namespace":
            continue
        name = RECORD_NAME if kind == "ConfigMap" else NAME
        scope = {"namespace": namespace} if api.namespaced(kind) else {}
        out.append({"kind": kind, "name": name, **scope})
    return out


def uninstall(
    session: KubeSession,
    *,
    namespace: str = RUNTIME_NAMESPACE,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 120.0,
    progress: Progress | None = None,
    ignore_protected: bool = False,
) -> UninstallReport:
    """Delete exactly what install created: the record's objects (UID checked), else the
    fixed-name objects carrying all three labels; the namespace only when install created it
    and nothing else is in it. The webhook configuration goes first.

    While a workload still opts in to injection (:func:`opted_in_workloads`), nothing is
    deleted and the report says ``refused``, unless ``ignore_protected``."""
    if not is_dns_label(namespace):
        raise ConfigError(f"--namespace {shown(namespace)} is not a DNS label")
    say = progress or (lambda _m: None)
    report = UninstallReport(dry_run=dry_run, opted_in=opted_in_workloads(session))
    if report.opted_in and not ignore_protected:
        report.refused = True
        return report
    ns_live = get_object(session, "Namespace", namespace, None)
    record = read_record(session, namespace) if ns_live is not None else None
    if record is not None:
        entries = [dict(o) for o in record.objects]
        entries.append({"kind": "ConfigMap", "name": RECORD_NAME, "namespace": namespace,
                        "uid": record.uid})  # fmt: skip
    else:
        report.found_by = "labels"
        entries = _fixed_objects(namespace)
    entries = [e for e in entries if e["kind"] != "Namespace"]
    entries.sort(key=lambda e: KINDS.index(e["kind"]))
    deleted: list[Mapping[str, Any]] = []
    for entry in entries:
        if record is None:
            live = get_object(session, entry["kind"], entry["name"], entry.get("namespace"))
            if live is None:
                continue
            if not labelled(live):
                change = ObjectChange(
                    entry["kind"], entry["name"], entry.get("namespace"), Action.KEEP,
                    "not labelled as cloudtaser's injector: left alone",
                )  # fmt: skip
                report.changes.append(change)
                say(str(change))
                continue
        change = delete_recorded(session, entry, dry_run=dry_run)
        report.changes.append(change)
        say(str(change))
        if change.action == Action.DELETE:
            deleted.append(entry)
    if ns_live is not None:
        ours = {(str(e["kind"]), str(e["name"])) for e in deleted}
        change = _namespace_change(session, namespace, ns_live, record, ours, dry_run=dry_run)
        report.changes.append(change)
        say(str(change))
        if change.action == Action.DELETE:
            deleted.append({"kind": "Namespace", "name": namespace})
    if wait and not dry_run and deleted:
        _wait_gone(session, deleted, timeout, say)
    return report


def _namespace_change(
    session: KubeSession,
    namespace: str,
    ns_live: Mapping[str, Any],
    record: InstallRecord | None,
    ours: set[tuple[str, str]],
    *,
    dry_run: bool,
) -> ObjectChange:
    """Delete the namespace when install created it and nothing but what this uninstall
    deleted (``ours``) and the defaults is in it."""
    created = created_by_install(ns_live) and (record is None or record.namespace_created)
    if not created:
        return ObjectChange("Namespace", namespace, None, Action.KEEP, "not created by install")
    foreign = _foreign_objects(session, namespace, ours)
    if foreign:
        listed = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        return ObjectChange(
            "Namespace", namespace, None, Action.KEEP,
            f"created by install, but it now holds other objects ({listed}): left",
        )  # fmt: skip
    api.delete(session, "Namespace", namespace, None, dry_run=dry_run)
    return ObjectChange("Namespace", namespace, None, Action.DELETE)


def _wait_gone(
    session: KubeSession, deleted: Sequence[Mapping[str, Any]], timeout: float, say: Progress
) -> None:
    deadline = time.monotonic() + timeout
    for entry in deleted:
        kind, name, ns = entry["kind"], entry["name"], entry.get("namespace")
        announced = False
        while get_object(session, kind, name, ns) is not None:
            if time.monotonic() > deadline:
                raise OperationError(
                    f"{where(kind, name, ns)} is still being deleted after {timeout:g}s "
                    "(a finalizer?); it will go on in the cluster"
                )
            if not announced:
                say(f"waiting for {where(kind, name, ns)} to be gone")
                announced = True
            time.sleep(0.5)
