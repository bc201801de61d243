"""The Secret reader: the *key names* of the Secrets ``envFrom`` and Secret volumes need,
read the cheapest way the caller's permissions allow (GETs, per-namespace lists or one
cluster-wide list, each paginated), and the owner of every Secret it reads
(:func:`cloudtaser.target.owners.secret_owner`).

Secret values are never kept: a Secret object read from the API is reduced to its sorted key
names, its owner (names only), and the names of the keys whose value is not UTF-8 text
(decoded once, in memory, to tell; :func:`binary_keys`), at once; nothing else of it leaves the
function that read it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec
from lightkube.resources.core_v1 import Secret

from cloudtaser.errors import ClusterForbiddenError, ClusterNotFoundError
from cloudtaser.plan.model import Owner
from cloudtaser.progress import Counter, Progress
from cloudtaser.target.discover.scan import CHUNK_SIZE
from cloudtaser.target.discover.scanned import SecretLookup
from cloudtaser.target.kube.errors import api_errors
from cloudtaser.target.owners import secret_owner

if TYPE_CHECKING:
    from lightkube import Client

__all__ = ["GET_SECRETS_LIMIT", "binary_keys", "read_secret_keys", "read_secret_owners"]

#: Up to this many Secrets are read with one GET each; beyond it, Secrets are listed.
GET_SECRETS_LIMIT: Final = 16


def _keys_of(secret: Any) -> tuple[str, ...]:
    """The key names of a Secret object; the values are not touched."""
    data = getattr(secret, "data", None) or {}
    return tuple(sorted(str(k) for k in data))


def _owner_of(secret: Any) -> Owner | None:
    """The Secret's owner from its metadata (names only; never its data)."""
    meta = getattr(secret, "metadata", None)
    if meta is None:
        return None
    return secret_owner(
        {
            "labels": meta.labels or {},
            "annotations": meta.annotations or {},
            "ownerReferences": msgspec.to_builtins(meta.ownerReferences or []),
        }
    )


def read_secret_owners(
    client: Client, wanted: Mapping[str, set[str]]
) -> dict[tuple[str, str], Owner]:
    """The owners of more Secrets ({namespace: {name}}: those only ``secretKeyRef`` reads, whose
    keys the plan does not need): one GET each, or one list per namespace with many. A Secret
    that is missing or may not be read just has no owner recorded (its keys are not needed)."""
    owners: dict[tuple[str, str], Owner] = {}
    for ns in sorted(wanted):
        names = wanted[ns]
        try:
            if len(names) <= GET_SECRETS_LIMIT:
                objs = []
                for name in sorted(names):
                    try:
                        with api_errors(f"get secret {ns}/{name}"):
                            objs.append(client.get(Secret, name=name, namespace=ns))
                    except ClusterNotFoundError:
                        continue
            else:
                with api_errors(f"list secrets in namespace {ns}"):
                    objs = list(client.list(Secret, namespace=ns, chunk_size=CHUNK_SIZE))
        except ClusterForbiddenError:
            continue
        for obj in objs:
            name = str(obj.metadata.name) if obj.metadata else ""
            owner = _owner_of(obj) if name in names else None
            if owner is not None:
                owners[(ns, name)] = owner
        del objs
    return owners


def binary_keys(data: Mapping[str, Any] | None) -> frozenset[str]:
    """The keys of a Secret's ``data`` (base64, as the API returns it) whose value is not
    UTF-8 text: a file of such a key is stored in the vault as base64 (``encoding: base64``).
    Only the verdict leaves: the decoded bytes are dropped at once, never logged or returned."""
    out: set[str] = set()
    for key, encoded in (data or {}).items():
        try:
            base64.b64decode(str(encoded or ""), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            out.add(str(key))
    return frozenset(out)


def read_secret_keys(
    client: Client,
    needed: Mapping[str, set[str]],
    *,
    cluster_wide: bool,
    progress: Progress,
) -> SecretLookup:
    """Read the key names of the ``needed`` Secrets ({namespace: {name}}), cheapest way first.

    Few Secrets: one GET each. Many, in few namespaces (or when namespaces were chosen): one
    paginated list per namespace. Many across many namespaces: one cluster-wide paginated list.
    When a list is forbidden, fall back to the narrower form (namespace lists, then GETs) so a
    user allowed to ``get`` only named Secrets still gets a complete plan.
    """
    keys: dict[tuple[str, str], tuple[str, ...]] = {}
    owners: dict[tuple[str, str], Owner] = {}
    binary: dict[tuple[str, str], frozenset[str]] = {}
    missing: set[tuple[str, str]] = set()
    unreadable: dict[tuple[str, str], str] = {}
    total = sum(len(v) for v in needed.values())
    if not total:
        return SecretLookup()
    progress(f"reading the key names of {total} Secret(s) in {len(needed)} namespace(s)")
    secrets_read = Counter(progress, total, "read {done}/{total} Secrets ({where})", min_step=200)

    def settled(count: int, where: str) -> None:
        """``count`` more Secrets answered (keys read, missing or unreadable)."""
        secrets_read.advance(count, where=where)

    def get_each(ns: str, names: Iterable[str]) -> None:
        for name in sorted(names):
            try:
                try:
                    with api_errors(f"get secret {ns}/{name}"):
                        obj = client.get(Secret, name=name, namespace=ns)
                except ClusterNotFoundError:
                    missing.add((ns, name))
                    continue
                keys[(ns, name)] = _keys_of(obj)
                owner = _owner_of(obj)
                if owner is not None:
                    owners[(ns, name)] = owner
                binary[(ns, name)] = binary_keys(getattr(obj, "data", None))
                del obj
            except ClusterForbiddenError:
                unreadable[(ns, name)] = f"permission denied: get secrets in namespace {ns}"
            finally:
                settled(1, f"namespace {ns}")

    def take(objs: Iterable[Any], wanted: Mapping[str, set[str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for obj in objs:
            ident = (str(obj.metadata.namespace), str(obj.metadata.name))
            if ident[1] in wanted.get(ident[0], ()):
                keys[ident] = _keys_of(obj)
                owner = _owner_of(obj)
                if owner is not None:
                    owners[ident] = owner
                binary[ident] = binary_keys(getattr(obj, "data", None))
                found.add(ident)
        return found

    def list_namespace(ns: str, names: set[str]) -> None:
        try:
            with api_errors(f"list secrets in namespace {ns}"):
                found = take(client.list(Secret, namespace=ns, chunk_size=CHUNK_SIZE), {ns: names})
        except ClusterForbiddenError:
            get_each(ns, names)
            return
        missing.update((ns, n) for n in names if (ns, n) not in found)
        settled(len(names), f"namespace {ns}")

    if total <= GET_SECRETS_LIMIT:
        for ns in sorted(needed):
            get_each(ns, needed[ns])
    elif not cluster_wide or len(needed) <= GET_SECRETS_LIMIT:
        for ns in sorted(needed):
            list_namespace(ns, needed[ns])
    else:
        try:
            with api_errors("list secrets in all namespaces"):
                found = take(client.list(Secret, namespace="*", chunk_size=CHUNK_SIZE), needed)
            for ns, names in needed.items():
                missing.update((ns, n) for n in names if (ns, n) not in found)
            settled(total, "all namespaces")
        except ClusterForbiddenError:
            progress("listing secrets cluster-wide is forbidden; reading per namespace")
            for ns in sorted(needed):
                list_namespace(ns, needed[ns])
    return SecretLookup(
        keys=keys,
        missing=frozenset(missing),
        unreadable=unreadable,
        owners=owners,
        binary=binary,
    )
