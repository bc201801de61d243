"""Who in a namespace still names a Secret: the reference scan ``finalize --delete-secrets``
and ``target audit`` share.

A Secret is deleted only when this scan finds no user in its namespace. It reads (names only,
never a value) everything that can name a Secret in the same namespace:

- pod specs — of Deployments, StatefulSets, DaemonSets, ReplicaSets not owned by a
  Deployment, ReplicationControllers, Jobs still running, CronJobs, and every Pod that is not
  finished or terminating (bare Pods included; a running container re-reads its env from the
  Secret when it restarts): ``env[].valueFrom.secretKeyRef``, ``envFrom[].secretRef`` (in
  containers, init containers and ephemeral containers), ``secret`` and ``projected``
  volumes, the ``secretRef`` / ``nodePublishSecretRef`` of volume plugins (CSI, CephFS,
  Cinder, FlexVolume, iSCSI, RBD, ScaleIO, StorageOS), ``azureFile.secretName`` and
  ``imagePullSecrets``;
- ServiceAccounts: ``secrets[]`` and ``imagePullSecrets[]``;
- Ingresses: ``spec.tls[].secretName``.

ReplicaSets owned by a Deployment are its revision history: they are not counted (their pods
are), so a rollback to a revision from before ``finalize`` would need the Secret again
(``docs/lifecycle.md`` says so). Anything the scan cannot list is reported in
:attr:`Scan.unreadable`, and a caller must then keep every Secret of that namespace: what
cannot be read cannot be proven unused. Custom resources that name Secrets (cert-manager,
external-secrets, operators reading a Secret by name) are not visible to it; the docs say so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import ClusterForbiddenError, ClusterNotFoundError
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.target.workloads import WorkloadAPI

__all__ = [
    "Scan",
    "SecretUse",
    "object_uses",
    "pod_spec_uses",
    "scan",
]

#: Volume plugins that name a Secret through ``<plugin>.secretRef.name``.
_SECRET_REF_PLUGINS: Final = (
    "cephfs",
    "cinder",
    "flexVolume",
    "iscsi",
    "rbd",
    "scaleIO",
    "storageos",
)
_FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, order=True)
class SecretUse:
    """One place that names a Secret: the object and how (names only)."""

    secret: str
    kind: str
    name: str
    #: ``env``, ``envFrom``, ``volume``, ``projected``, ``plugin``, ``imagePullSecret``,
    #: ``serviceAccount`` or ``ingressTLS``.
    via: str
    #: Human detail: the container, the variable or the volume.
    detail: str = ""

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.name}: {self.via}{detail}"


@dataclass
class Scan:
    """The Secret references found in one namespace."""

    namespace: str
    uses: list[SecretUse] = field(default_factory=list)
    #: What could not be listed (e.g. "jobs: permission denied (403)"): no Secret of this
    #: namespace can be proven unused then.
    unreadable: list[str] = field(default_factory=list)
    #: The listed objects by kind (only with ``keep=True``; audit reads them again).
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def users(self, secret: str) -> list[SecretUse]:
        return sorted(u for u in self.uses if u.secret == secret)

    def by_secret(self) -> dict[str, list[SecretUse]]:
        out: dict[str, list[SecretUse]] = defaultdict(list)
        for use in sorted(self.uses):
            out[use.secret].append(use)
        return dict(out)


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str]]:
    for key, what in (
        ("initContainers", "init container"),
        ("containers", "container"),
        ("ephemeralContainers", "ephemeral container"),
    ):
        for container in spec.get(key) or ():
            if isinstance(container, Mapping):
                yield container, f"{what} {container.get('name') or '?'}"


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def pod_spec_uses(spec: Mapping[str, Any], kind: str, name: str) -> list[SecretUse]:
    """Every Secret a pod spec names (see the module docstring for what counts)."""
    uses: list[SecretUse] = []

    def add(secret: Any, via: str, detail: str) -> None:
        found = _name(secret)
        if found:
            uses.append(SecretUse(found, kind, name, via, detail))

    for container, where in _containers(spec):
        for entry in container.get("env") or ():
            if isinstance(entry, Mapping):
                ref = dig(entry, "valueFrom", "secretKeyRef")
                if isinstance(ref, Mapping):
                    add(
                        ref.get("name"),
                        "env",
                        f"{where}, {entry.get('name')} <- key {ref.get('key')}",
                    )
        for source in container.get("envFrom") or ():
            ref = source.get("secretRef") if isinstance(source, Mapping) else None
            if isinstance(ref, Mapping):
                add(ref.get("name"), "envFrom", where)
    for volume in spec.get("volumes") or ():
        if not isinstance(volume, Mapping):
            continue
        vname = f"volume {volume.get('name') or '?'}"
        add(dig(volume, "secret", "secretName"), "volume", vname)
        for source in dig(volume, "projected", "sources") or ():
            if isinstance(source, Mapping):
                add(dig(source, "secret", "name"), "projected", vname)
        for plugin in _SECRET_REF_PLUGINS:
            add(dig(volume, plugin, "secretRef", "name"), "plugin", f"{vname} ({plugin})")
        add(dig(volume, "csi", "nodePublishSecretRef", "name"), "plugin", f"{vname} (csi)")
        add(dig(volume, "azureFile", "secretName"), "plugin", f"{vname} (azureFile)")
    for pull in spec.get("imagePullSecrets") or ():
        if isinstance(pull, Mapping):
            add(pull.get("name"), "imagePullSecret", "imagePullSecrets")
    return uses


def _owner_kinds(obj: Mapping[str, Any]) -> set[str]:
    return {
        str(o.get("kind"))
        for o in dig(obj, "metadata", "ownerReferences") or ()
        if isinstance(o, Mapping)
    }


def _job_finished(obj: Mapping[str, Any]) -> bool:
    return any(
        isinstance(c, Mapping)
        and c.get("type") in {"Complete", "Failed"}
        and c.get("status") == "True"
        for c in dig(obj, "status", "conditions") or ()
    )


def object_uses(kind: str, obj: Mapping[str, Any]) -> list[SecretUse]:
    """The Secret references of one object of ``kind`` (an API dict); ``[]`` for an object
    that does not count (a Deployment's ReplicaSet, a finished Job or Pod, a terminating
    Pod)."""
    name = str(dig(obj, "metadata", "name") or "?")
    if kind == "Pod":
        if dig(obj, "status", "phase") in _FINISHED_PHASES or dig(
            obj, "metadata", "deletionTimestamp"
        ):
            return []
        return pod_spec_uses(obj.get("spec") or {}, kind, name)
    if kind == "ReplicaSet" and "Deployment" in _owner_kinds(obj):
        return []
    if kind == "Job" and _job_finished(obj):
        return []
    if kind == "CronJob":
        return pod_spec_uses(
            dig(obj, "spec", "jobTemplate", "spec", "template", "spec") or {}, kind, name
        )
    if kind == "ServiceAccount":
        uses = [
            SecretUse(s["name"], kind, name, "serviceAccount", "secrets")
            for s in obj.get("secrets") or ()
            if isinstance(s, Mapping) and _name(s.get("name"))
        ]
        uses += [
            SecretUse(s["name"], kind, name, "imagePullSecret", "imagePullSecrets")
            for s in obj.get("imagePullSecrets") or ()
            if isinstance(s, Mapping) and _name(s.get("name"))
        ]
        return uses
    if kind == "Ingress":
        return [
            SecretUse(t["secretName"], kind, name, "ingressTLS", ", ".join(t.get("hosts") or ()))
            for t in dig(obj, "spec", "tls") or ()
            if isinstance(t, Mapping) and _name(t.get("secretName"))
        ]
    return pod_spec_uses(dig(obj, "spec", "template", "spec") or {}, kind, name)


def _scanned() -> list[tuple[str, Any, str]]:
    """(kind, lightkube resource, plural) in the order they are listed."""
    from lightkube.resources.apps_v1 import (  # noqa: PLC0415
        DaemonSet,
        Deployment,
        ReplicaSet,
        StatefulSet,
    )
    from lightkube.resources.batch_v1 import CronJob, Job  # noqa: PLC0415
    from lightkube.resources.core_v1 import (  # noqa: PLC0415
        Pod,
        ReplicationController,
        ServiceAccount,
    )
    from lightkube.resources.networking_v1 import Ingress  # noqa: PLC0415

    return [
        ("Deployment", Deployment, "deployments"),
        ("StatefulSet", StatefulSet, "statefulsets"),
        ("DaemonSet", DaemonSet, "daemonsets"),
        ("ReplicaSet", ReplicaSet, "replicasets"),
        ("ReplicationController", ReplicationController, "replicationcontrollers"),
        ("Job", Job, "jobs"),
        ("CronJob", CronJob, "cronjobs"),
        ("Pod", Pod, "pods"),
        ("ServiceAccount", ServiceAccount, "serviceaccounts"),
        ("Ingress", Ingress, "ingresses"),
    ]


def scan(cluster: WorkloadAPI, namespace: str, *, keep: bool = False) -> Scan:
    """List everything in ``namespace`` that can name a Secret (``cluster``: a
    :class:`~cloudtaser.target.workloads.WorkloadAPI`). A kind that cannot be listed goes to
    :attr:`Scan.unreadable` (never an exception: the caller decides, and keeps the Secrets)."""
    found = Scan(namespace=namespace)
    for kind, resource, plural in _scanned():
        try:
            objects = cluster.list_objects(
                resource, namespace, action=f"list {plural} in {namespace}"
            )
        except (ClusterForbiddenError, ClusterNotFoundError) as exc:
            found.unreadable.append(f"{plural}: {exc}")
            continue
        for obj in objects:
            found.uses.extend(object_uses(kind, obj))
        if keep:
            found.objects[kind] = objects
    found.uses.sort()
    return found
