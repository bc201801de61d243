"""Users of a Secret that live outside its namespace or in kinds cloudtaser does not know:
PersistentVolumes, StorageClasses, Ingress annotations and Gateway API objects of any
namespace, and custom resources. Listed once per run (:class:`ScanCache`) and matched against
each scanned namespace by :func:`cloudtaser.target.references.scan.scan`.

What counts (names only; never a value):

- PersistentVolume: ``spec.csi.{controllerPublish,nodeStage,nodePublish,controllerExpand,
  nodeExpand}SecretRef`` and ``spec.<plugin>.secretRef`` (CephFS, Cinder, FlexVolume, iSCSI,
  RBD, ScaleIO, StorageOS), ``spec.azureFile.secretName``/``secretNamespace``. A reference
  without a namespace may resolve to the claim's namespace: it counts in every namespace.
- StorageClass ``parameters``: every key ending in ``secret-name`` / ``secretName`` (the
  ``csi.storage.k8s.io/*-secret-name`` family and in-tree ones such as ``adminSecretName``),
  with the namespace from the same key ending in ``secret-namespace`` / ``secretNamespace``. A
  namespace that is absent or a template (``${pvc.namespace}``) means any namespace: every
  claim of the class, including future ones, may need the Secret in its own namespace. A name
  that is a template is resolved against the class's PersistentVolumeClaims (``${pvc.name}``,
  ``${pvc.namespace}``, ``${pvc.annotations['k']}``, ``${pv.name}``); what cannot be resolved
  means any Secret of the namespace.
- Ingress annotations in other namespaces that name ``<namespace>/<secret>`` (same-namespace
  ones are counted by the namespace scan; the key rule is
  :func:`cloudtaser.target.references.uses.ingress_annotation_refs`).
- Gateway API (only when the API group is served): ``Gateway``/``ListenerSet`` listeners'
  ``tls.certificateRefs`` and every other Secret reference (``kind: Secret``, core group) in
  any object of the group (``BackendTLSPolicy`` ``caCertificateRefs``, client-certificate
  validation), with cross-namespace references honoured.
- Custom resources (every listable kind of every API group that is not built into Kubernetes,
  found by API discovery): a conservative string match. A custom resource names a Secret when
  any string in it (``metadata.managedFields`` excepted, ``metadata.name`` included: an
  ExternalSecret's target defaults to its own name) equals the Secret's name, in the custom
  resource's namespace (any namespace for a cluster-scoped one); a string ``<ns>/<name>`` or a
  mapping with a ``namespace`` key next to the name names it in that namespace. Bounded: at
  most :data:`MAX_CUSTOM_KINDS` kinds and :data:`MAX_OBJECTS_PER_KIND` objects per kind; over
  a bound, the kind (or all custom resources) is unreadable, so every Secret is kept.

Each kind is listed cluster-wide once per run; when that is forbidden, a namespaced kind is
listed in each scanned namespace instead (references from other namespaces are then not seen,
and the scan says so in ``unreadable``). What cannot be listed at all is unreadable: for a
cluster-scoped kind or a cluster-wide list that means every namespace. A group that does not
exist is not unreadable.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import ClusterError, ClusterForbiddenError, ClusterNotFoundError
from cloudtaser.target.references.readers import ApiReaders
from cloudtaser.target.references.uses import SecretUse, ingress_annotation_refs, listing_failure
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.target.kube.workloads import WorkloadAPI

__all__ = [
    "MAX_CUSTOM_KINDS",
    "MAX_OBJECTS_PER_KIND",
    "ClusterRef",
    "CustomKind",
    "ScanCache",
    "custom_resource_strings",
    "gateway_refs",
    "pv_refs",
    "storage_class_refs",
]

#: At most this many custom resource kinds are listed; more: custom resources are unreadable.
MAX_CUSTOM_KINDS: Final = 250
#: At most this many objects of one custom kind are read; more: the kind is unreadable.
MAX_OBJECTS_PER_KIND: Final = 5000

_CSI_REFS: Final = (
    "controllerPublishSecretRef",
    "nodeStageSecretRef",
    "nodePublishSecretRef",
    "controllerExpandSecretRef",
    "nodeExpandSecretRef",
)
_PV_PLUGINS: Final = ("cephfs", "cinder", "flexVolume", "iscsi", "rbd", "scaleIO", "storageos")
GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
#: API groups built into Kubernetes (their kinds are scanned by name, or name no Secret), and
#: the metrics APIs (aggregated, never naming a Secret). Every other group is custom.
_BUILTIN_GROUPS: Final = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "custom.metrics.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "external.metrics.k8s.io",
        "extensions",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "metrics.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)
_AGGREGATED: Final = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_TEMPLATE: Final = re.compile(r"\$\{([^}]*)\}")
_ANNOTATION: Final = re.compile(r"""pvc\.annotations\[['"]([^'"]+)['"]\]""")


@dataclass(frozen=True)
class ClusterRef:
    """A Secret reference from outside the scanned namespace. ``namespace`` ``None``: any
    namespace; ``secret`` ``None``: any Secret of the namespace."""

    namespace: str | None
    secret: str | None
    kind: str
    name: str
    via: str
    detail: str

    def matches(self, namespace: str, secrets: Sequence[str]) -> list[str]:
        if self.namespace is not None and self.namespace != namespace:
            return []
        if self.secret is None:
            return list(secrets)
        return [self.secret] if self.secret in secrets else []


def _ns(value: Any) -> str | None:
    """A concrete namespace, or ``None`` (absent or a template: any namespace)."""
    return value if isinstance(value, str) and value and "${" not in value else None


def pv_refs(pv: Mapping[str, Any]) -> list[ClusterRef]:
    """The Secrets a PersistentVolume names (see the module docstring)."""
    name = str(dig(pv, "metadata", "name") or "?")
    spec = pv.get("spec") or {}
    out: list[ClusterRef] = []

    def add(ref: Any, where: str) -> None:
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and ref["name"]:
            ns = _ns(ref.get("namespace"))
            detail = f"spec.{where}" + ("" if ns else " (no namespace: counted in every one)")
            out.append(
                ClusterRef(ns, ref["name"], "PersistentVolume", name, "persistentVolume", detail)
            )

    for key in _CSI_REFS:
        add(dig(spec, "csi", key), f"csi.{key}")
    for plugin in _PV_PLUGINS:
        add(dig(spec, plugin, "secretRef"), f"{plugin}.secretRef")
    azure = spec.get("azureFile")
    if isinstance(azure, Mapping):
        add(
            {"name": azure.get("secretName"), "namespace": azure.get("secretNamespace")},
            "azureFile",
        )
    return out


def _resolve(template: str, pvc: Mapping[str, Any]) -> str | None:
    """``template`` with the claim's values, ``None`` when a part cannot be resolved."""
    values = {
        "pvc.name": dig(pvc, "metadata", "name"),
        "pvc.namespace": dig(pvc, "metadata", "namespace"),
        "pv.name": dig(pvc, "spec", "volumeName"),
    }
    annotations = dig(pvc, "metadata", "annotations") or {}
    failed = False

    def sub(match: re.Match[str]) -> str:
        nonlocal failed
        key = match.group(1).strip()
        found = _ANNOTATION.fullmatch(key)
        value = annotations.get(found.group(1)) if found else values.get(key)
        if not isinstance(value, str) or not value:
            failed = True
            return ""
        return value

    resolved = _TEMPLATE.sub(sub, template)
    return None if failed or not resolved else resolved


def _parameter_pairs(params: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    for key, value in params.items():
        if not isinstance(value, str) or not value:
            continue
        for suffix, ns_suffix in (
            ("secret-name", "secret-namespace"),
            ("SecretName", "SecretNamespace"),
            ("secretName", "secretNamespace"),
        ):
            if key.endswith(suffix):
                yield key, value, params.get(key[: -len(suffix)] + ns_suffix)
                break


def storage_class_refs(
    sc: Mapping[str, Any], claims: Sequence[Mapping[str, Any]] | None
) -> list[ClusterRef]:
    """The Secrets a StorageClass's parameters name; ``claims``: the PersistentVolumeClaims of
    the class (for templated names; ``None``: unreadable, a templated name means any Secret)."""
    name = str(dig(sc, "metadata", "name") or "?")
    out: list[ClusterRef] = []

    def ref(ns: str | None, secret: str | None, detail: str) -> None:
        out.append(ClusterRef(ns, secret, "StorageClass", name, "storageClass", detail))

    for key, secret, namespace in _parameter_pairs(sc.get("parameters") or {}):
        templated_ns = isinstance(namespace, str) and "${" in namespace
        ns = _ns(namespace)
        if "${" not in secret:
            why = (
                f" (namespace {namespace}: every claim of the class, future ones included, may "
                "need it in its own namespace)"
                if templated_ns
                else ""
                if ns
                else " (no namespace: counted in every one)"
            )
            ref(ns, secret, f"parameter {key}{why}")
        elif claims is None:
            ref(ns, None, f"parameter {key}={secret} (a template; claims unreadable: any Secret)")
        else:
            for claim in claims:
                claim_ns = _resolve(namespace, claim) if templated_ns else ns
                resolved = _resolve(secret, claim)
                who = f"{dig(claim, 'metadata', 'namespace')}/{dig(claim, 'metadata', 'name')}"
                unresolved = "" if resolved else " (unresolved: any Secret)"
                ref(claim_ns, resolved, f"parameter {key}={secret} for claim {who}{unresolved}")
    return out


def gateway_refs(kind: str, obj: Mapping[str, Any]) -> list[ClusterRef]:
    """Every core ``Secret`` an object of the Gateway API names: ``certificateRefs`` entries
    (kind defaults to Secret) and any reference with ``kind: Secret``; the namespace defaults
    to the object's own."""
    own_ns = str(dig(obj, "metadata", "namespace") or "")
    name = str(dig(obj, "metadata", "name") or "?")
    out: list[ClusterRef] = []

    def walk(node: Any, path: str, default_secret: bool) -> None:
        if isinstance(node, Mapping):
            group = node.get("group") or ""
            ref_kind = node.get("kind") or ("Secret" if default_secret else None)
            secret = node.get("name")
            if ref_kind == "Secret" and group == "" and isinstance(secret, str) and secret:
                ns = node.get("namespace") if isinstance(node.get("namespace"), str) else own_ns
                out.append(ClusterRef(ns or None, secret, kind, name, "gatewayRef", path))
            for key, value in node.items():
                walk(value, f"{path}.{key}", key == "certificateRefs")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]", default_secret)

    walk(obj.get("spec") or {}, "spec", False)
    return out


def custom_resource_strings(obj: Mapping[str, Any]) -> tuple[set[str], set[tuple[str, str]]]:
    """Every string of a custom resource (``metadata.managedFields`` excepted), and the
    ``(namespace, name)`` pairs it spells out (``ns/name``, or a mapping with a ``namespace``
    key next to other strings)."""
    strings: set[str] = set()
    pairs: set[tuple[str, str]] = set()

    def walk(node: Any, top: bool) -> None:
        if isinstance(node, str):
            strings.add(node)
            head, sep, tail = node.partition("/")
            if sep and head and tail and "/" not in tail:
                pairs.add((head, tail))
        elif isinstance(node, Mapping):
            ns = node.get("namespace")
            for key, value in node.items():
                if top and key == "metadata" and isinstance(value, Mapping):
                    walk({k: v for k, v in value.items() if k != "managedFields"}, False)
                    continue
                walk(value, False)
                if isinstance(ns, str) and ns and key != "namespace" and isinstance(value, str):
                    pairs.add((ns, value))
        elif isinstance(node, list):
            for item in node:
                walk(item, False)

    walk(obj, True)
    return strings, pairs


@dataclass(frozen=True)
class CustomKind:
    """A listable kind of a custom (or Gateway) API group."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    def path(self, namespace: str | None = None) -> str:
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"/apis/{self.group}/{self.version}{where}/{self.plural}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}"


def _aggregated_kinds(doc: Mapping[str, Any]) -> list[CustomKind]:
    found: dict[tuple[str, str], CustomKind] = {}
    for group in doc.get("items") or ():
        gname = str(dig(group, "metadata", "name") or "")
        for version in group.get("versions") or ():
            for res in version.get("resources") or ():
                plural = str(res.get("resource") or "")
                if not plural or "list" not in (res.get("verbs") or ()):
                    continue
                kind = str(dig(res, "responseKind", "kind") or plural)
                found.setdefault(
                    (gname, plural),
                    CustomKind(
                        gname,
                        str(version.get("version")),
                        plural,
                        kind,
                        res.get("scope") == "Namespaced",
                    ),
                )
    return list(found.values())


def _legacy_kinds(cluster: WorkloadAPI, doc: Mapping[str, Any]) -> list[CustomKind]:
    out: list[CustomKind] = []
    for group in doc.get("groups") or ():
        gname = str(group.get("name") or "")
        if gname in _BUILTIN_GROUPS:
            continue
        gv = str(dig(group, "preferredVersion", "groupVersion") or "")
        if not gv:
            continue
        listing = cluster.get_json(f"/apis/{gv}", action=f"discover the resources of {gv}")
        out.extend(
            CustomKind(
                gname,
                gv.split("/", 1)[1],
                str(r["name"]),
                str(r.get("kind") or r["name"]),
                bool(r.get("namespaced")),
            )
            for r in listing.get("resources") or ()
            if isinstance(r.get("name"), str)
            and "/" not in r["name"]
            and "list" in (r.get("verbs") or ())
        )
    return out


def discover_custom_kinds(cluster: WorkloadAPI) -> list[CustomKind]:
    """Every listable kind of every non-built-in API group (aggregated discovery, or the
    per-group documents of older servers). Raises the cluster error of a failed read."""
    doc = cluster.get_json(
        "/apis", accept=f"{_AGGREGATED},application/json", action="discover the API groups"
    )
    if doc.get("kind") == "APIGroupDiscoveryList":
        kinds = [k for k in _aggregated_kinds(doc) if k.group not in _BUILTIN_GROUPS]
    else:
        kinds = _legacy_kinds(cluster, doc)
    return sorted(kinds, key=lambda k: (k.group, k.plural))


@dataclass
class _Listed:
    """One kind, listed cluster-wide (``objects``) or not (``error``)."""

    objects: list[dict[str, Any]] | None
    error: str = ""
    forbidden: bool = False


@dataclass
class _CustomIndex:
    """Strings of custom resources: per namespace (``None``: cluster-scoped) and as pairs."""

    strings: dict[str | None, dict[str, set[tuple[str, str]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    pairs: dict[tuple[str, str], set[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(set)
    )

    def add(self, kind: CustomKind, obj: Mapping[str, Any]) -> None:
        ns = dig(obj, "metadata", "namespace") if kind.namespaced else None
        who = (
            kind.kind,
            f"{ns}/{dig(obj, 'metadata', 'name')}" if ns else str(dig(obj, "metadata", "name")),
        )
        strings, pairs = custom_resource_strings(obj)
        for s in strings:
            self.strings[ns][s].add(who)
        for p in pairs:
            self.pairs[p].add(who)


class ScanCache:
    """What one run lists once and every namespace's scan reuses: PersistentVolumes,
    StorageClasses (and their claims), Ingresses and Gateway API objects of all namespaces,
    custom resources, and the ServiceAccounts that may read Secrets through the API
    (:class:`~cloudtaser.target.references.readers.ApiReaders`). Not thread-safe: one per run."""

    def __init__(self) -> None:
        self._lists: dict[tuple[str, str | None], _Listed] = {}
        self._kinds: list[CustomKind] | None = None
        self._kinds_error = ""
        self._cluster_refs: tuple[list[ClusterRef], list[str]] | None = None
        self._custom: _CustomIndex | None = None
        self._custom_unreadable: list[str] = []
        self._custom_per_ns: list[CustomKind] = []
        self._readers: ApiReaders | None = None

    # -- listing --

    def _list(
        self,
        cluster: WorkloadAPI,
        key: str,
        path: str,
        namespace: str | None,
        max_items: int | None = None,
    ) -> _Listed:
        cache_key = (path, namespace)
        if cache_key in self._lists:
            return self._lists[cache_key]
        where = f" in {namespace}" if namespace else " (all namespaces)"
        try:
            items, _first = cluster.list_json(
                path, max_items=max_items, action=f"list {key}{where}"
            )
        except ClusterNotFoundError:
            listed = _Listed([])  # the kind is gone (a CRD deleted since discovery): no user
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            listed = _Listed(None, f"{key}: {exc}", isinstance(exc, ClusterForbiddenError))
        else:
            if max_items is not None and len(items) > max_items:
                listed = _Listed(
                    None, f"{key}{where}: more than {max_items} objects (bound of the scan)"
                )
            else:
                listed = _Listed(items)
        self._lists[cache_key] = listed
        return listed

    def custom_kinds(self, cluster: WorkloadAPI) -> tuple[list[CustomKind], str]:
        """The custom kinds, or an error text (discovery failed)."""
        if self._kinds is None:
            try:
                self._kinds = discover_custom_kinds(cluster)
            except ClusterError as exc:
                if not listing_failure(exc):
                    raise
                self._kinds, self._kinds_error = [], f"API discovery: {exc}"
        return self._kinds, self._kinds_error

    # -- cluster-wide references: volumes, classes, Ingress annotations, Gateway API --

    def cluster_refs(self, cluster: WorkloadAPI) -> tuple[list[ClusterRef], list[str]]:
        """Every reference listed cluster-wide, and what could not be listed (then every
        namespace is affected)."""
        if self._cluster_refs is not None:
            return self._cluster_refs
        refs: list[ClusterRef] = []
        unreadable: list[str] = []
        pvs = self._list(cluster, "persistentvolumes", "/api/v1/persistentvolumes", None)
        if pvs.objects is None:
            unreadable.append(pvs.error)
        for pv in pvs.objects or ():
            refs.extend(pv_refs(pv))
        classes = self._list(
            cluster, "storageclasses", "/apis/storage.k8s.io/v1/storageclasses", None
        )
        if classes.objects is None:
            unreadable.append(classes.error)
        claims: dict[str, list[dict[str, Any]]] | None = None
        for sc in classes.objects or ():
            templated = any("${" in v for _k, v, _n in _parameter_pairs(sc.get("parameters") or {}))
            if templated and claims is None:
                listed = self._list(
                    cluster, "persistentvolumeclaims", "/api/v1/persistentvolumeclaims", None
                )
                claims = defaultdict(list)
                for claim in listed.objects or ():
                    claims[str(dig(claim, "spec", "storageClassName") or "")].append(claim)
                if listed.objects is None:
                    claims = None
            name = str(dig(sc, "metadata", "name"))
            refs.extend(storage_class_refs(sc, None if claims is None else claims.get(name, [])))
        ingresses = self._list(cluster, "ingresses", "/apis/networking.k8s.io/v1/ingresses", None)
        if ingresses.objects is None:
            unreadable.append(
                f"{ingresses.error} (annotations of other namespaces' Ingresses may name "
                "Secrets here as namespace/name)"
            )
        for ing in ingresses.objects or ():
            own = str(dig(ing, "metadata", "namespace") or "")
            name = f"{own}/{dig(ing, 'metadata', 'name')}"
            refs.extend(
                ClusterRef(ns, secret, "Ingress", name, "ingressAnnotation", f"annotation {key}")
                for key, ns, secret in ingress_annotation_refs(ing)
                if ns and ns != own
            )
        kinds, error = self.custom_kinds(cluster)
        if error:
            unreadable.append(error)
        for kind in kinds:
            if kind.group != GATEWAY_GROUP:
                continue
            listed = self._list(cluster, str(kind), kind.path(), None)
            if listed.objects is None:
                unreadable.append(listed.error)
            for obj in listed.objects or ():
                refs.extend(gateway_refs(kind.kind, obj))
        self._cluster_refs = (refs, unreadable)
        return self._cluster_refs

    # -- custom resources --

    def _custom_index(self, cluster: WorkloadAPI) -> _CustomIndex:
        if self._custom is not None:
            return self._custom
        index = _CustomIndex()
        kinds, error = self.custom_kinds(cluster)
        if error:
            self._custom_unreadable.append(f"custom resources: {error}")
        elif len(kinds) > MAX_CUSTOM_KINDS:
            self._custom_unreadable.append(
                f"custom resources: {len(kinds)} kinds, more than the scan's bound of "
                f"{MAX_CUSTOM_KINDS}"
            )
            kinds = []
        for kind in kinds:
            listed = self._list(cluster, str(kind), kind.path(), None, MAX_OBJECTS_PER_KIND)
            if listed.objects is None:
                if listed.forbidden and kind.namespaced:
                    self._custom_per_ns.append(kind)
                else:
                    self._custom_unreadable.append(listed.error)
                continue
            for obj in listed.objects:
                index.add(kind, obj)
        self._custom = index
        return index

    def custom_uses(
        self, cluster: WorkloadAPI, namespace: str, secrets: Sequence[str]
    ) -> tuple[list[SecretUse], list[str]]:
        """The custom resources that name a Secret of ``namespace`` (string match), and what
        could not be read."""
        index = self._custom_index(cluster)
        unreadable = list(self._custom_unreadable)
        found: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for secret in secrets:
            found[secret] |= index.strings.get(namespace, {}).get(secret, set())
            found[secret] |= index.strings.get(None, {}).get(secret, set())
            found[secret] |= index.pairs.get((namespace, secret), set())
        for kind in self._custom_per_ns:
            listed = self._list(
                cluster, str(kind), kind.path(namespace), namespace, MAX_OBJECTS_PER_KIND
            )
            if listed.objects is None:
                unreadable.append(listed.error)
                continue
            local = _CustomIndex()
            for obj in listed.objects:
                local.add(kind, obj)
            for secret in secrets:
                found[secret] |= local.strings.get(namespace, {}).get(secret, set())
        uses = [
            SecretUse(
                secret,
                kind,
                name,
                "customResource",
                "a string in it equals the Secret's name; delete or change it first if it "
                "really does not use the Secret",
            )
            for secret, whos in found.items()
            for kind, name in sorted(whos)
        ]
        return uses, unreadable

    # -- Secrets read through the API --

    def readers(self) -> ApiReaders:
        if self._readers is None:
            self._readers = ApiReaders()
        return self._readers
