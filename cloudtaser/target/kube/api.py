"""Get, create, apply, patch, list and delete one object by its kind name, as plain API dicts:
the one synchronous object layer over a :class:`KubeSession`'s lightkube client.

``target install`` / ``uninstall`` / ``install --check``, the cluster side of ``target connect``
and ``target audit`` use it; the workload engine's concurrent reads and patches are
:class:`cloudtaser.target.kube.workloads.WorkloadAPI` (one ``AsyncClient`` on its own loop),
which shares :func:`resource` and :func:`to_dict` from here. Every call runs inside
:func:`~cloudtaser.target.kube.errors.api_errors`; a missing object is ``None`` (get) or
nothing to do (delete), never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec
from lightkube import ApiError, codecs
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import Status
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.batch_v1 import CronJob, Job
from lightkube.resources.core_v1 import (
    ConfigMap,
    Namespace,
    Pod,
    Secret,
    Service,
    ServiceAccount,
)
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)
from lightkube.types import CascadeType, PatchType

from cloudtaser.errors import ClusterNotFoundError
from cloudtaser.target.kube.errors import api_errors

if TYPE_CHECKING:
    from cloudtaser.target.kube.session import KubeSession

__all__ = [
    "apply",
    "create",
    "delete",
    "get_object",
    "get_path",
    "list_objects",
    "merge_patch",
    "namespaced",
    "resource",
    "to_dict",
    "where",
]

#: Argo Rollouts' ``Rollout`` (a custom resource: lightkube's generic resource; reading it
#: answers 404 where the CRD is not installed).
Rollout: Final[Any] = create_namespaced_resource("argoproj.io", "v1alpha1", "Rollout", "rollouts")

#: The kinds cloudtaser reads or writes by name (kind -> lightkube resource class).
_RESOURCES: Final[Mapping[str, Any]] = {"Rollout": Rollout} | {
    res.__name__: res
    for res in (
        Namespace,
        ServiceAccount,
        ConfigMap,
        Secret,
        Service,
        Pod,
        ClusterRole,
        ClusterRoleBinding,
        Role,
        RoleBinding,
        Deployment,
        StatefulSet,
        DaemonSet,
        Job,
        CronJob,
        PodDisruptionBudget,
        MutatingWebhookConfiguration,
    )
}


def resource(kind: str) -> Any:
    """The lightkube resource class of ``kind`` (e.g. ``"Deployment"``)."""
    return _RESOURCES[kind]


def namespaced(kind: str) -> bool:
    """Whether objects of ``kind`` live in a namespace."""
    return issubclass(_RESOURCES[kind], NamespacedResource)


def to_dict(obj: Any) -> dict[str, Any]:
    """A lightkube object (a msgspec Struct) as its API dict."""
    data = msgspec.to_builtins(obj)
    return data if isinstance(data, dict) else {}


def where(kind: str, name: str, namespace: str | None) -> str:
    """``Kind namespace/name`` (or ``Kind name``), as messages name an object."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def get_object(
    session: KubeSession, kind: str, name: str, namespace: str | None
) -> dict[str, Any] | None:
    """The object as an API dict, ``None`` when it does not exist."""
    try:
        with api_errors(f"read {where(kind, name, namespace)}"):
            obj = session.client.get(resource(kind), name, namespace=namespace)
    except ClusterNotFoundError:
        return None
    return to_dict(obj)


def get_path(
    session: KubeSession, path: str, *, action: str, accept: str = "application/json"
) -> dict[str, Any]:
    """GET a non-resource path of the API server (``/.well-known/openid-configuration``,
    ``/openid/v1/jwks`` with ``accept="application/jwk-set+json"``) as a JSON object; a body
    that is not one is ``{}``."""
    # lightkube's generic client: its httpx client carries the base URL, TLS and auth
    generic: Any = session.client._client  # lightkube has no raw GET
    with api_errors(action):
        request = generic._client.build_request("GET", path, headers={"Accept": accept})
        response = generic._client.send(request)
        if response.is_error:
            try:
                raise ApiError(request=request, response=response)
            except ValueError:  # not a Status document
                raise ApiError(
                    status=Status(code=response.status_code, message=response.reason_phrase)
                ) from None
        try:
            data = response.json()
        except ValueError:
            data = None
    return data if isinstance(data, dict) else {}


def list_objects(
    session: KubeSession, kind: str, namespace: str, *, action: str
) -> list[dict[str, Any]]:
    """Every object of ``kind`` in ``namespace``, as API dicts."""
    with api_errors(action):
        return [to_dict(obj) for obj in session.client.list(resource(kind), namespace=namespace)]


def create(
    session: KubeSession,
    body: Mapping[str, Any],
    *,
    dry_run: bool = False,
    action: str | None = None,
) -> dict[str, Any]:
    """Create ``body`` (any kind lightkube knows, e.g. a SubjectAccessReview); the API
    server's answer. An existing object raises :class:`~cloudtaser.errors.ClusterConflictError`."""
    if action is None:
        meta = body["metadata"]
        action = f"create {where(str(body['kind']), meta['name'], meta.get('namespace'))}"
    with api_errors(action):
        return to_dict(session.client.create(codecs.from_dict(dict(body)), dry_run=dry_run))


def apply(
    session: KubeSession, body: Mapping[str, Any], *, field_manager: str, dry_run: bool
) -> dict[str, Any]:
    """Server-side apply ``body`` with ``field_manager`` and ``force`` (``dry_run``: the API
    server's dry run); the object as applied."""
    meta = body["metadata"]
    kind = str(body["kind"])
    action = f"apply {where(kind, meta['name'], meta.get('namespace'))}" + (
        " (server-side dry run)" if dry_run else ""
    )
    with api_errors(action):
        obj = session.client.patch(
            resource(kind),
            meta["name"],
            dict(body),
            namespace=meta.get("namespace"),
            patch_type=PatchType.APPLY,
            field_manager=field_manager,
            force=True,
            dry_run=dry_run,
        )
    return to_dict(obj)


def merge_patch(
    session: KubeSession,
    kind: str,
    name: str,
    body: Mapping[str, Any],
    *,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A JSON merge patch of one object (the session's field manager); the patched object."""
    with api_errors(f"update {where(kind, name, namespace)}"):
        obj = session.client.patch(
            resource(kind), name, dict(body), namespace=namespace, patch_type=PatchType.MERGE
        )
    return to_dict(obj)


def delete(
    session: KubeSession, kind: str, name: str, namespace: str | None, *, dry_run: bool
) -> None:
    """Delete one object (foreground cascade); an object already gone is fine."""
    try:
        with api_errors(
            f"delete {where(kind, name, namespace)}" + (" (dry run)" if dry_run else "")
        ):
            session.client.delete(
                resource(kind),
                name,
                namespace=namespace,
                cascade=CascadeType.FOREGROUND,
                dry_run=dry_run,
            )
    except ClusterNotFoundError:
        pass
