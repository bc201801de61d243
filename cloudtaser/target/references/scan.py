"""Who still uses a Secret: the reference scan ``finalize --delete-secrets`` and
``target audit`` share. It errs on the side of keeping: a Secret is deleted only when this scan
finds no user and nothing it needed was unreadable.

It reads (names and metadata only, never a value):

- pod specs in the namespace — of Deployments, StatefulSets, DaemonSets, ReplicaSets not owned
  by a Deployment, ReplicationControllers, Jobs still running, CronJobs, core PodTemplates, and
  every Pod that is not finished or terminating (bare Pods included; a running container
  re-reads its env from the Secret when it restarts): ``env[].valueFrom.secretKeyRef``,
  ``envFrom[].secretRef`` (in containers, init containers and ephemeral containers),
  ``secret`` and ``projected`` volumes, the ``secretRef`` / ``nodePublishSecretRef`` of volume
  plugins (CSI, CephFS, Cinder, FlexVolume, iSCSI, RBD, ScaleIO, StorageOS),
  ``azureFile.secretName`` and ``imagePullSecrets``;
- ServiceAccounts: ``secrets[]`` and ``imagePullSecrets[]``;
- Ingresses: ``spec.tls[].secretName``, and annotations that name Secrets
  (:func:`~cloudtaser.target.references.uses.ingress_annotation_refs`: a key whose name part
  is ``auth-secret``, ``auth-tls-secret`` or ends in ``-secret``, ``secret-name`` or
  ``secretName``; the value may be ``name`` or ``namespace/name``, several separated by
  commas) — of any namespace;
- cluster-wide and unknown users (:mod:`cloudtaser.target.references.cluster`):
  PersistentVolumes, StorageClasses, Gateway API objects, custom resources (string match);
- the Secret's own metadata: an owner or manager (:mod:`cloudtaser.target.references.managers`:
  ownerReferences, token types, Helm, cert-manager, external-secrets, sealed-secrets, Argo CD,
  Flux) means it is never deletable here;
- RBAC: ServiceAccounts of running pods that may read it through the API
  (:mod:`cloudtaser.target.references.readers`, SubjectAccessReviews).

Every reason to keep a Secret is a :class:`~cloudtaser.target.references.uses.SecretUse` in
:meth:`Scan.users`. ReplicaSets owned by a Deployment are its revision history: they are not
counted (their pods are), so a rollback to a revision from before ``finalize`` would need the
Secret again (``docs/lifecycle.md`` says so). Anything the scan cannot list is reported in
:attr:`Scan.unreadable`, and a caller must then keep every Secret of that namespace: what cannot
be read cannot be proven unused (a cluster-scoped kind that cannot be listed is unreadable in
every namespace). A :class:`~cloudtaser.target.references.cluster.ScanCache` shared by the scans
of one run lists the cluster-wide kinds once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from lightkube.resources.apps_v1 import DaemonSet, Deployment, ReplicaSet, StatefulSet
from lightkube.resources.batch_v1 import CronJob, Job
from lightkube.resources.core_v1 import Pod, PodTemplate, ReplicationController, ServiceAccount
from lightkube.resources.networking_v1 import Ingress

from cloudtaser.errors import ClusterError, ClusterInvalidError
from cloudtaser.target.references.cluster import ScanCache
from cloudtaser.target.references.managers import manager_uses
from cloudtaser.target.references.uses import (
    SecretMeta,
    SecretUse,
    ingress_annotation_refs,
    listing_failure,
    secret_meta,
)
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.target.kube.workloads import WorkloadAPI

__all__ = ["Scan", "job_finished", "object_uses", "pod_gone", "pod_spec_uses", "scan"]

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
    #: The namespace's Secrets by name, metadata only (uid and resourceVersion for a delete
    #: precondition).
    secrets: dict[str, SecretMeta] = field(default_factory=dict)

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


def pod_gone(obj: Mapping[str, Any]) -> bool:
    """A finished (Succeeded, Failed) or terminating Pod: it reads nothing any more."""
    return bool(
        dig(obj, "status", "phase") in _FINISHED_PHASES or dig(obj, "metadata", "deletionTimestamp")
    )


def job_finished(obj: Mapping[str, Any]) -> bool:
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
        if pod_gone(obj):
            return []
        return pod_spec_uses(obj.get("spec") or {}, kind, name)
    if kind == "ReplicaSet" and "Deployment" in _owner_kinds(obj):
        return []
    if kind == "Job" and job_finished(obj):
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
        own = dig(obj, "metadata", "namespace")
        return [
            SecretUse(t["secretName"], kind, name, "ingressTLS", ", ".join(t.get("hosts") or ()))
            for t in dig(obj, "spec", "tls") or ()
            if isinstance(t, Mapping) and _name(t.get("secretName"))
        ] + [
            SecretUse(secret, kind, name, "ingressAnnotation", f"annotation {key}")
            for key, namespace, secret in ingress_annotation_refs(obj)
            if namespace is None or namespace == own
        ]
    if kind == "PodTemplate":
        return [
            SecretUse(u.secret, kind, name, "podTemplate", f"{u.via}: {u.detail}")
            for u in pod_spec_uses(dig(obj, "template", "spec") or {}, kind, name)
        ]
    return pod_spec_uses(dig(obj, "spec", "template", "spec") or {}, kind, name)


def _scanned() -> list[tuple[str, Any, str]]:
    """(kind, lightkube resource, plural) in the order they are listed."""
    return [
        ("Deployment", Deployment, "deployments"),
        ("StatefulSet", StatefulSet, "statefulsets"),
        ("DaemonSet", DaemonSet, "daemonsets"),
        ("ReplicaSet", ReplicaSet, "replicasets"),
        ("ReplicationController", ReplicationController, "replicationcontrollers"),
        ("Job", Job, "jobs"),
        ("CronJob", CronJob, "cronjobs"),
        ("Pod", Pod, "pods"),
        ("PodTemplate", PodTemplate, "podtemplates"),
        ("ServiceAccount", ServiceAccount, "serviceaccounts"),
        ("Ingress", Ingress, "ingresses"),
    ]


_TABLE: Final = "application/json;as=Table;v=v1;g=meta.k8s.io"


def list_secret_metadata(cluster: WorkloadAPI, namespace: str) -> list[SecretMeta]:
    """The Secrets of ``namespace``, metadata and type only: the server's Table form with
    ``includeObject=Metadata`` carries each Secret's ``metadata`` and its ``Type`` column, and
    no key or value ever reaches this process."""
    rows, first = cluster.list_json(
        f"/api/v1/namespaces/{namespace}/secrets",
        params={"includeObject": "Metadata"},
        accept=_TABLE,
        action=f"list secrets in {namespace} (metadata only)",
    )
    columns = [str(c.get("name") or "").lower() for c in first.get("columnDefinitions") or ()]
    if first.get("kind") != "Table" or "type" not in columns:
        raise ClusterInvalidError(
            f"cannot list secrets in {namespace}: the server did not answer with a Table "
            "holding a Type column",
            status=None,
        )
    at = columns.index("type")
    out = []
    for row in rows:
        cells = row.get("cells") or []
        type_ = str(cells[at]) if len(cells) > at else ""
        out.append(secret_meta(row.get("object") or {}, namespace, type_))
    return out


def scan(
    cluster: WorkloadAPI,
    namespace: str,
    *,
    keep: bool = False,
    cache: ScanCache | None = None,
) -> Scan:
    """List everything that can use a Secret of ``namespace`` (``cluster``: a
    :class:`~cloudtaser.target.kube.workloads.WorkloadAPI`). A kind that cannot be listed goes to
    :attr:`Scan.unreadable` (never an exception: the caller decides, and keeps the Secrets).
    ``cache``: one :class:`~cloudtaser.target.references.cluster.ScanCache` per run, so the
    cluster-wide kinds are listed once (default: a new one for this call)."""
    cache = cache if cache is not None else ScanCache()
    found = Scan(namespace=namespace)
    for kind, resource, plural in _scanned():
        try:
            objects = cluster.list_objects(
                resource, namespace, action=f"list {plural} in {namespace}"
            )
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            found.unreadable.append(f"{plural}: {exc}")
            continue
        for obj in objects:
            found.uses.extend(object_uses(kind, obj))
        if keep:
            found.objects[kind] = objects
    try:
        metas = list_secret_metadata(cluster, namespace)
    except ClusterError as exc:
        if not listing_failure(exc):
            raise
        found.unreadable.append(f"secrets: {exc}")
        metas = []
    found.secrets = {m.name: m for m in metas}
    names = sorted(found.secrets)
    for meta in metas:
        found.uses.extend(manager_uses(meta))
    refs, unreadable = cache.cluster_refs(cluster)
    found.unreadable.extend(unreadable)
    for ref in refs:
        found.uses.extend(
            SecretUse(secret, ref.kind, ref.name, ref.via, ref.detail)
            for secret in ref.matches(namespace, names)
        )
    custom, unreadable = cache.custom_uses(cluster, namespace, names)
    found.uses.extend(custom)
    found.unreadable.extend(unreadable)
    readers, unreadable = cache.readers().uses(cluster, namespace, names)
    found.uses.extend(readers)
    found.unreadable.extend(unreadable)
    found.uses = sorted(set(found.uses))
    return found
