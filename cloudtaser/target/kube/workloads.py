"""The few workload API calls the engine makes (read, patch, Secret keys), safe to call from
many threads at once and genuinely concurrent.

lightkube clients must not be shared between threads (lightkube 1.0.1 / httpx2 crashed the
interpreter with SIGSEGV when threads shared one, see ``benchmarks/discover.py``). So every
call runs on one ``lightkube.AsyncClient`` inside one event loop, in its own thread; callers
in any thread submit a coroutine and wait for its result. The client is used by one thread
only, yet up to ``--parallel`` requests are in flight at once (one pooled HTTP/1.1
connection each).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from lightkube import ApiError, codecs
from lightkube.core.resource import GlobalResource
from lightkube.models.meta_v1 import Status
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from cloudtaser.errors import ClusterConflictError, ClusterNotFoundError
from cloudtaser.target.kube import api
from cloudtaser.target.kube.errors import api_errors
from cloudtaser.target.kube.kinds import kind_info, merge_form
from cloudtaser.target.kube.session import FIELD_MANAGER

if TYPE_CHECKING:
    from lightkube import AsyncClient

    from cloudtaser.target.kube.session import KubeSession

__all__ = ["LAST_APPLIED", "SecretHead", "WorkloadAPI", "WorkloadRef"]

_T = TypeVar("_T")

#: ``kubectl apply``'s copy of the whole manifest: for a Secret, its values.
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class WorkloadRef:
    """Which workload: tenant, namespace, kind, name."""

    tenant: str
    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class SecretHead:
    """A Secret as read for a deletion decision: identity, version and key names (never a
    value). ``uid`` and ``resource_version`` become the delete's preconditions."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    keys: tuple[str, ...]
    #: What an owner is recognised by (:func:`cloudtaser.target.owners.secret_owner`), read
    #: with the rest: ``labels``, ``annotations`` without :data:`LAST_APPLIED` (it can hold
    #: the whole manifest, values included) and ``ownerReferences``. Names, never a value.
    owner_metadata: Mapping[str, Any] = field(default_factory=dict, repr=False)


class WorkloadAPI:
    """Read and patch workloads of one cluster from any thread; :meth:`close` when done."""

    def __init__(self, session: KubeSession) -> None:
        self._client: AsyncClient = session.async_client()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="cloudtaser-kube-io", daemon=True
        )
        self._thread.start()
        self._secret_keys: dict[tuple[str, str], list[str] | None] = {}
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _get(self, resource: Any, name: str, namespace: str | None, action: str) -> Any:
        try:
            with api_errors(action):
                return await self._client.get(resource, name, namespace=namespace)
        except ClusterNotFoundError:
            return None

    def get(self, ref: WorkloadRef) -> dict[str, Any] | None:
        """The workload as an API dict, ``None`` when it does not exist."""
        obj = self._run(self._get(api.resource(ref.kind), ref.name, ref.namespace, f"read {ref}"))
        return None if obj is None else api.to_dict(obj)

    async def _patch(self, ref: WorkloadRef, body: dict[str, Any], dry_run: bool) -> Any:

        action = f"patch {ref}" + (" (server-side dry run)" if dry_run else "")
        patch_type = PatchType.STRATEGIC
        if not kind_info(ref.kind).strategic:
            # a custom resource takes no strategic merge: the same change as a JSON merge
            # patch of the object as it is now (its resourceVersion must be the patch's)
            live = await self._get(api.resource(ref.kind), ref.name, ref.namespace, f"read {ref}")
            if live is None:
                raise ClusterNotFoundError(f"{action}: {ref} does not exist")
            live_dict = api.to_dict(live)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and (live_dict.get("metadata") or {}).get("resourceVersion") != wanted:
                raise ClusterConflictError(f"{action}: {ref} changed since it was read (409)")
            body = merge_form(live_dict, body)
            patch_type = PatchType.MERGE
        with api_errors(action):
            return await self._client.patch(
                api.resource(ref.kind),
                ref.name,
                body,
                namespace=ref.namespace,
                patch_type=patch_type,
                field_manager=FIELD_MANAGER,
                dry_run=dry_run,
            )

    def patch(self, ref: WorkloadRef, body: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]:
        """One strategic-merge patch (field manager ``cloudtaser``); the patched object. A
        kind that takes none (an Argo Rollout) gets the same change as a JSON merge patch
        (:func:`cloudtaser.target.kube.kinds.merge_form`)."""
        return api.to_dict(self._run(self._patch(ref, dict(body), dry_run)))

    async def _create_dry_run(self, body: dict[str, Any], action: str) -> Any:
        with api_errors(action):
            return await self._client.create(codecs.from_dict(body), dry_run=True)

    def create_dry_run(self, body: Mapping[str, Any], *, action: str) -> dict[str, Any]:
        """Create ``body`` with ``dryRun=All`` (the whole admission chain runs, nothing is
        stored); the object as the API server would have stored it."""
        return api.to_dict(self._run(self._create_dry_run(dict(body), action)))

    def secret_keys(self, namespace: str, name: str) -> list[str] | None:
        """The keys (never the values) of a Secret, ``None`` when it does not exist. Cached:
        only the main thread checks drift."""

        key = (namespace, name)
        if key not in self._secret_keys:
            action = f"read the keys of Secret {namespace}/{name} (drift check)"
            secret = self._run(self._get(Secret, name, namespace, action))
            self._secret_keys[key] = (
                sorted((secret.data or {}).keys()) if secret is not None else None
            )
            del secret
        return self._secret_keys[key]

    # -- reads for injection proof, finalize, the reference scan and audit --

    async def _list(
        self,
        resource: Any,
        namespace: str | None,
        labels: Mapping[str, str] | None,
        fields: Mapping[str, str] | None,
        action: str,
    ) -> list[Any]:

        # "*" lists a namespaced kind in every namespace; a cluster-scoped kind (Namespace,
        # PersistentVolume, ...) takes no namespace at all (lightkube refuses "*" for it)
        everywhere = None if issubclass(resource, GlobalResource) else "*"
        with api_errors(action):
            return [
                item
                async for item in self._client.list(
                    resource,
                    namespace=namespace if namespace is not None else everywhere,
                    labels=dict(labels) if labels else None,
                    fields=dict(fields) if fields else None,
                )
            ]

    def list_objects(
        self,
        resource: Any,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        action: str,
    ) -> list[dict[str, Any]]:
        """Every object of ``resource`` (a lightkube resource class) in ``namespace``
        (``None``: all namespaces, or a cluster-scoped kind), as API dicts."""
        items = self._run(self._list(resource, namespace, labels, fields, action))
        return [api.to_dict(item) for item in items]

    def get_object(
        self, resource: Any, name: str, namespace: str | None, *, action: str
    ) -> dict[str, Any] | None:
        """One object as an API dict, ``None`` when it does not exist."""
        obj = self._run(self._get(resource, name, namespace, action))
        return None if obj is None else api.to_dict(obj)

    # -- raw reads of the reference scan: API discovery, custom resources, Secret metadata,
    # -- SubjectAccessReviews (lightkube has no typed call for these)

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        accept: str | None,
        body: Any,
        action: str,
    ) -> dict[str, Any]:

        # lightkube's generic client: its httpx client carries the base URL, TLS and auth
        generic = self._client._client
        headers = {"Accept": accept or "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        with api_errors(action):
            request = generic._client.build_request(
                method,
                path,
                params=dict(params or {}),
                headers=headers,
                content=None if body is None else json.dumps(body).encode(),
            )
            response = await generic._client.send(request)
            if response.is_error:
                try:
                    raise ApiError(request=request, response=response)
                except ValueError:  # not a Status document
                    raise ApiError(
                        status=Status(code=response.status_code, message=response.reason_phrase)
                    ) from None
            data = response.json()
        return data if isinstance(data, dict) else {}

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        action: str,
    ) -> dict[str, Any]:
        """One GET of an API path (``/apis``, ``/apis/g/v``), as JSON."""
        return self._run(
            self._raw("GET", path, params=params, accept=accept, body=None, action=action)
        )

    async def _pages(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None,
        accept: str | None,
        limit: int,
        max_items: int | None,
        action: str,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        items: list[dict[str, Any]] = []
        first: dict[str, Any] = {}
        cont = ""
        while True:
            query = {**(params or {}), "limit": str(limit)} | ({"continue": cont} if cont else {})
            page = await self._raw(
                "GET", path, params=query, accept=accept, body=None, action=action
            )
            first = first or page
            found = page.get("items") if "items" in page else page.get("rows")
            items.extend(i for i in found or () if isinstance(i, dict))
            if max_items is not None and len(items) > max_items:
                break
            cont = str((page.get("metadata") or {}).get("continue") or "")
            if not cont:
                break
        return items, first

    def list_json(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        limit: int = 500,
        max_items: int | None = None,
        action: str,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every item of a list path (``items``, or ``rows`` of a Table), page by page, and
        the first page (a Table's column definitions). Stops after more than ``max_items``."""
        return self._run(
            self._pages(
                path,
                params=params,
                accept=accept,
                limit=limit,
                max_items=max_items,
                action=action,
            )
        )

    async def _reviews(
        self, bodies: list[dict[str, Any]], parallel: int, action: str
    ) -> list[dict[str, Any]]:
        gate = asyncio.Semaphore(parallel)
        path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

        async def one(body: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                return await self._raw(
                    "POST", path, params=None, accept=None, body=body, action=action
                )

        return list(await asyncio.gather(*(one(b) for b in bodies)))

    def access_reviews(
        self, bodies: list[dict[str, Any]], *, parallel: int = 16
    ) -> list[dict[str, Any]]:
        """Create SubjectAccessReviews (at most ``parallel`` in flight); their answers in
        order."""
        action = "create SubjectAccessReviews (needs create on subjectaccessreviews)"
        return self._run(self._reviews(bodies, parallel, action)) if bodies else []

    async def _log(self, namespace: str, pod: str, container: str, tail: int) -> list[str]:
        with api_errors(f"read the log of container {container} of pod {namespace}/{pod}"):
            return [
                line
                async for line in self._client.log(
                    pod, namespace=namespace, container=container, tail_lines=tail
                )
            ]

    def pod_log(self, namespace: str, pod: str, container: str, *, tail: int = 50) -> list[str]:
        """The last ``tail`` lines a container wrote (callers keep only the wrapper's own)."""
        return self._run(self._log(namespace, pod, container, tail))

    def secret_head(self, namespace: str, name: str) -> SecretHead | None:
        """The Secret's uid, resourceVersion, key names and owner metadata, read now (not
        cached); ``None`` when it does not exist. The values are dropped as soon as the keys
        are taken; ``last-applied-configuration`` is never kept."""

        action = f"read Secret {namespace}/{name} (its key names, before deleting it)"
        secret = self._run(self._get(Secret, name, namespace, action))
        if secret is None:
            return None
        meta = secret.metadata
        annotations = {k: v for k, v in (meta.annotations or {}).items() if k != LAST_APPLIED}
        head = SecretHead(
            namespace=namespace,
            name=name,
            uid=str(meta.uid or ""),
            resource_version=str(meta.resourceVersion or ""),
            keys=tuple(sorted((secret.data or {}).keys())),
            owner_metadata={
                "labels": dict(meta.labels or {}),
                "annotations": annotations,
                "ownerReferences": [
                    {"apiVersion": r.apiVersion, "kind": r.kind, "name": r.name}
                    for r in meta.ownerReferences or ()
                ],
            },
        )
        del meta, annotations
        del secret
        return head

    async def _delete_with_preconditions(self, head: SecretHead) -> None:
        # lightkube's ``delete`` sends no body, and preconditions exist only in the body
        # (DeleteOptions): build the request with its own request builder, add the body.

        generic: Any = self._client._client  # lightkube.core.generic_client
        request = generic.prepare_request(
            "delete", res=Secret, name=head.name, namespace=head.namespace
        )
        request.data = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": head.uid, "resourceVersion": head.resource_version},
        }
        with api_errors(f"delete Secret {head.namespace}/{head.name}"):
            response = await generic.send(generic.build_adapter_request(request))
            generic.handle_response("delete", response, request)

    def delete_secret(self, head: SecretHead) -> None:
        """Delete one Secret (irreversible) only if it is still the object ``head`` describes:
        the API server checks ``uid`` and ``resourceVersion`` and answers 409
        (:class:`~cloudtaser.errors.ClusterConflictError`) when it changed since."""
        if not head.uid or not head.resource_version:
            raise ClusterConflictError(
                f"Secret {head.namespace}/{head.name} was read without uid or resourceVersion: "
                "not deleted without preconditions"
            )
        try:
            self._run(self._delete_with_preconditions(head))
        finally:
            self._secret_keys.pop((head.namespace, head.name), None)

    def close(self) -> None:
        """Close the client and stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> WorkloadAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
