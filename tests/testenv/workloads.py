"""Test helpers that create real objects on a real cluster (lightkube 1.x).

Compact specs -> full manifests (``manifest``), creation helpers, TokenRequest, and
``wait_rollout`` implementing kubectl's rollout-status rules (Deployment, StatefulSet, DaemonSet).

Example::

    ns = create_namespace(client)
    create_secret(client, ns, "db", {"password": "s3cr3t"})
    spec = WorkloadSpec(
        "Deployment", "api", ns, replicas=2,
        containers=[ContainerSpec(secret_env={"DB_PASSWORD": ("db", "password")},
                                  env_from=[("db", "DB_")], mounts={"creds": "/etc/creds"})],
        secret_volumes={"creds": "db"},
    )
    create_workload(client, spec)
    wait_rollout(client, "Deployment", ns, "api", timeout=60)
"""

from __future__ import annotations

import os
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lightkube import ApiError, Client, codecs
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.core_v1 import (
    Namespace,
    Pod,
    Secret,
    ServiceAccount,
    ServiceAccountToken,
)

Kind = Literal["Deployment", "StatefulSet", "DaemonSet"]
KINDS: dict[str, Any] = {
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
    "DaemonSet": DaemonSet,
}
# Never pulled under kwok (fake kubelets); on kind the pause image is preloaded on every node.
DEFAULT_IMAGE = os.environ.get("CLOUDTASER_TEST_IMAGE", "registry.k8s.io/pause:3.10")
FIELD_MANAGER = "cloudtaser-testenv"


class RolloutError(RuntimeError):
    """A rollout failed (ProgressDeadlineExceeded, unsupported strategy) or timed out."""


def unique_name(prefix: str) -> str:
    """``<prefix>-<8 hex>``: a DNS-1123 name unlikely to collide between tests."""
    return f"{prefix}-{_secrets.token_hex(4)}"


# -- compact specs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """A container. Secret consumption in every form discovery must find.

    - ``env``: plain ``NAME: value`` pairs;
    - ``secret_env``: ``ENV_NAME: (secret name, key)`` -> ``env[].valueFrom.secretKeyRef``;
    - ``env_from``: secret name, or ``(secret name, prefix)`` -> ``envFrom[].secretRef``;
    - ``mounts``: ``volume name: mount path`` (volumes come from the ``WorkloadSpec``).
    """

    name: str = "app"
    image: str = DEFAULT_IMAGE
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    env_from: Sequence[str | tuple[str, str]] = ()
    mounts: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] = ()
    optional_secrets: bool = False

    def manifest(self) -> dict[str, Any]:
        c: dict[str, Any] = {"name": self.name, "image": self.image}
        if self.command:
            c["command"] = list(self.command)
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in self.env.items()]
        for var, (secret, key) in self.secret_env.items():
            ref: dict[str, Any] = {"name": secret, "key": key}
            if self.optional_secrets:
                ref["optional"] = True
            env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
        if env:
            c["env"] = env
        env_from = []
        for item in self.env_from:
            secret, prefix = (item, None) if isinstance(item, str) else item
            entry: dict[str, Any] = {"secretRef": {"name": secret}}
            if self.optional_secrets:
                entry["secretRef"]["optional"] = True
            if prefix:
                entry["prefix"] = prefix
            env_from.append(entry)
        if env_from:
            c["envFrom"] = env_from
        if self.mounts:
            c["volumeMounts"] = [
                {"name": vol, "mountPath": path, "readOnly": True}
                for vol, path in self.mounts.items()
            ]
        return c


@dataclass(frozen=True)
class WorkloadSpec:
    """A Deployment, StatefulSet or DaemonSet.

    ``secret_volumes``: ``volume name: secret name``; ``projected_volumes``: ``volume name:
    [secret names]`` (a projected volume with one ``secret`` source each). ``strategy``:
    ``RollingUpdate`` (default), ``Recreate`` (Deployment) or ``OnDelete`` (StatefulSet,
    DaemonSet); ``partition`` for StatefulSets; ``paused`` for Deployments. Pods carry the label
    ``app=<name>`` (the selector) plus ``pod_labels``.
    """

    kind: Kind
    name: str
    namespace: str
    replicas: int = 1
    containers: Sequence[ContainerSpec] = (ContainerSpec(),)
    init_containers: Sequence[ContainerSpec] = ()
    secret_volumes: Mapping[str, str] = field(default_factory=dict)
    projected_volumes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    service_account: str | None = None
    strategy: str | None = None
    partition: int | None = None
    paused: bool = False
    min_ready_seconds: int = 0
    service_name: str | None = None  # StatefulSet only; defaults to the name

    def manifest(self) -> dict[str, Any]:
        return manifest(self)


def manifest(spec: WorkloadSpec) -> dict[str, Any]:
    """The full apps/v1 manifest (plain dict) for a compact spec."""
    if spec.kind not in KINDS:
        raise ValueError(f"unsupported kind {spec.kind!r}; use one of {sorted(KINDS)}")
    selector = {"app": spec.name}
    pod_meta: dict[str, Any] = {"labels": {**selector, **spec.pod_labels}}
    if spec.pod_annotations:
        pod_meta["annotations"] = dict(spec.pod_annotations)
    pod_spec: dict[str, Any] = {
        "containers": [c.manifest() for c in spec.containers],
        "terminationGracePeriodSeconds": 0,
    }
    if spec.init_containers:
        pod_spec["initContainers"] = [c.manifest() for c in spec.init_containers]
    volumes: list[dict[str, Any]] = [
        {"name": vol, "secret": {"secretName": secret}}
        for vol, secret in spec.secret_volumes.items()
    ]
    volumes += [
        {"name": vol, "projected": {"sources": [{"secret": {"name": s}} for s in srcs]}}
        for vol, srcs in spec.projected_volumes.items()
    ]
    if volumes:
        pod_spec["volumes"] = volumes
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    meta: dict[str, Any] = {"name": spec.name, "namespace": spec.namespace}
    if spec.labels:
        meta["labels"] = dict(spec.labels)
    if spec.annotations:
        meta["annotations"] = dict(spec.annotations)
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "template": {"metadata": pod_meta, "spec": pod_spec},
    }
    if spec.min_ready_seconds:
        body["minReadySeconds"] = spec.min_ready_seconds
    if spec.kind == "Deployment":
        body["replicas"] = spec.replicas
        if spec.paused:
            body["paused"] = True
        if spec.strategy:
            body["strategy"] = {"type": spec.strategy}
    elif spec.kind == "StatefulSet":
        body["replicas"] = spec.replicas
        body["serviceName"] = spec.service_name or spec.name
        strategy: dict[str, Any] = {"type": spec.strategy or "RollingUpdate"}
        if spec.partition is not None:
            strategy["rollingUpdate"] = {"partition": spec.partition}
        body["updateStrategy"] = strategy
    elif spec.strategy:  # DaemonSet
        body["updateStrategy"] = {"type": spec.strategy}
    return {"apiVersion": "apps/v1", "kind": spec.kind, "metadata": meta, "spec": body}


# -- creation helpers --------------------------------------------------------------------------


def create_namespace(
    client: Client, name: str | None = None, *, labels: Mapping[str, str] | None = None
) -> str:
    """Create a namespace (``t-<hex>`` when no name is given) and return its name."""
    name = name or unique_name("t")
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    client.create(codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}))
    return name


def delete_namespace(client: Client, name: str) -> None:
    """Delete a namespace without waiting (ignores NotFound)."""
    try:
        client.delete(Namespace, name)
    except ApiError as exc:
        if exc.status.code != 404:
            raise


def create_secret(
    client: Client,
    namespace: str,
    name: str,
    data: Mapping[str, str],
    *,
    type: str = "Opaque",
    labels: Mapping[str, str] | None = None,
) -> Secret:
    """Create a Secret from string data."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": type}
    obj["stringData"] = dict(data)
    return client.create(codecs.from_dict(obj))


def create_service_account(client: Client, namespace: str, name: str) -> ServiceAccount:
    return client.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
        )
    )


def bind_cluster_role(
    client: Client, binding: str, cluster_role: str, namespace: str, service_account: str
) -> None:
    """Bind ``cluster_role`` to the ServiceAccount ``namespace/service_account``."""
    client.create(
        codecs.from_dict(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": binding},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": cluster_role,
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
                ],
            }
        )
    )


def request_token(
    client: Client,
    namespace: str,
    service_account: str,
    audiences: Sequence[str] | None = None,
    seconds: int = 3600,
) -> str:
    """TokenRequest (``kubectl create token``). No audiences = the API server's own audience."""
    req = ServiceAccountToken(
        metadata=ObjectMeta(),
        spec=TokenRequestSpec(audiences=list(audiences or []), expirationSeconds=seconds),
    )
    res = client.create(req, service_account, namespace=namespace)
    return str(res.status.token)


def create_workload(client: Client, spec: WorkloadSpec) -> Any:
    """Create the workload described by ``spec``; returns the created object."""
    return client.create(codecs.from_dict(manifest(spec)), field_manager=FIELD_MANAGER)


def deployment(name: str, namespace: str, **kw: Any) -> WorkloadSpec:
    return WorkloadSpec("Deployment", name, namespace, **kw)


def statefulset(name: str, namespace: str, **kw: Any) -> WorkloadSpec:
    return WorkloadSpec("StatefulSet", name, namespace, **kw)


def daemonset(name: str, namespace: str, **kw: Any) -> WorkloadSpec:
    return WorkloadSpec("DaemonSet", name, namespace, **kw)


def patch_pod_template(
    client: Client,
    kind: Kind | str,
    namespace: str,
    name: str,
    *,
    annotations: Mapping[str, str | None] | None = None,
    image: str | None = None,
    container: str = "app",
) -> Any:
    """Strategic-merge-patch the pod template (annotations and/or one container image)."""
    template: dict[str, Any] = {}
    if annotations:
        template["metadata"] = {"annotations": dict(annotations)}
    if image:
        template["spec"] = {"containers": [{"name": container, "image": image}]}
    return client.patch(
        _resource(kind),
        name,
        {"spec": {"template": template}},
        namespace=namespace,
        field_manager=FIELD_MANAGER,
    )


def restart(client: Client, kind: Kind | str, namespace: str, name: str) -> Any:
    """``kubectl rollout restart``: bump a restart annotation on the pod template."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f"-{_secrets.token_hex(2)}"
    return patch_pod_template(
        client, kind, namespace, name, annotations={"kubectl.kubernetes.io/restartedAt": stamp}
    )


def list_pods(client: Client, namespace: str, app: str | None = None) -> list[Pod]:
    labels = {"app": app} if app else None
    return list(client.list(Pod, namespace=namespace, labels=labels))


# -- rollout status (kubectl's rules, reference kubernetes-api.md §2) --------------------------


def _resource(kind: Kind | str | type) -> Any:
    if isinstance(kind, type):
        return kind
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unsupported kind {kind!r}; use one of {sorted(KINDS)}") from None


def rollout_status(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """``(done, message)`` for a workload dict, as ``kubectl rollout status`` decides.

    Raises ``RolloutError`` for a failed rollout (ProgressDeadlineExceeded) or a strategy
    kubectl cannot watch (OnDelete).
    """
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    gen = meta.get("generation") or 0
    observed = st.get("observedGeneration") or 0
    name = f"{kind} {meta.get('namespace')}/{meta.get('name')}"
    if kind == "Deployment":
        if gen > observed:
            return False, f"{name}: waiting for the rollout to be observed"
        for cond in st.get("conditions") or []:
            if (
                cond.get("type") == "Progressing"
                and cond.get("reason") == "ProgressDeadlineExceeded"
            ):
                raise RolloutError(f"{name} exceeded its progress deadline")
        want = spec.get("replicas", 1)
        updated = st.get("updatedReplicas") or 0
        replicas = st.get("replicas") or 0
        available = st.get("availableReplicas") or 0
        if updated < want:
            return False, f"{name}: {updated} of {want} updated replicas are available"
        if replicas > updated:
            return False, f"{name}: {replicas - updated} old replicas are pending termination"
        if available < updated:
            return False, f"{name}: {available} of {updated} updated replicas are available"
        return True, f"{name} successfully rolled out"
    if kind == "DaemonSet":
        if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
            raise RolloutError(f"{name}: rollout status is only available for RollingUpdate")
        if gen > observed:
            return False, f"{name}: waiting for the rollout to be observed"
        desired = st.get("desiredNumberScheduled") or 0
        updated = st.get("updatedNumberScheduled") or 0
        available = st.get("numberAvailable") or 0
        if updated < desired:
            return False, f"{name}: {updated} of {desired} updated pods are available"
        if available < desired:
            return False, f"{name}: {available} of {desired} updated pods are available"
        return True, f"{name} successfully rolled out"
    if kind == "StatefulSet":
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type") == "OnDelete":
            raise RolloutError(f"{name}: rollout status is only available for RollingUpdate")
        if observed == 0 or gen > observed:
            return False, f"{name}: waiting for the statefulset spec update to be observed"
        want = spec.get("replicas", 1)
        ready = st.get("readyReplicas") or 0
        if ready < want:
            return False, f"{name}: {ready} of {want} pods are ready"
        rolling = strategy.get("rollingUpdate")
        if rolling is not None:  # the API server defaults partition to 0
            partition = rolling.get("partition")
            updated = st.get("updatedReplicas") or 0
            if partition is not None and updated < want - partition:
                return False, f"{name}: {updated} of {want - partition} partitioned pods updated"
            return True, f"{name}: partitioned roll out complete ({updated} new pods)"
        if st.get("updateRevision") != st.get("currentRevision"):
            return False, f"{name}: waiting for the rolling update to finish"
        return True, f"{name}: rolling update complete"
    raise ValueError(f"unsupported kind {kind!r}")


def wait_rollout(
    client: Client,
    kind: Kind | str,
    namespace: str,
    name: str,
    timeout: float = 60.0,
    *,
    interval: float = 0.25,
) -> dict[str, Any]:
    """Poll until the rollout is complete by kubectl's rules; returns the final object dict.

    Raises ``RolloutError`` on failure or when ``timeout`` passes (with the last status line).
    """
    res = _resource(kind)
    deadline = time.monotonic() + timeout
    msg = "not observed yet"
    while True:
        obj = client.get(res, name, namespace=namespace).to_dict()
        obj.setdefault("kind", res.__name__)
        done, msg = rollout_status(obj)
        if done:
            return obj
        if time.monotonic() >= deadline:
            raise RolloutError(f"timed out after {timeout:.0f}s: {msg}; status={obj.get('status')}")
        time.sleep(interval)
