"""Push Kubernetes manifests to an OCI registry as a Flux artifact (no ``flux`` CLI, no Docker).

What source-controller v1.9.6 accepts (``internal/controller/ocirepository_controller.go``,
``selectLayer`` and the ``tar.Untar`` after it; media types from ``github.com/fluxcd/pkg/oci``
``globals.go``, which ``flux push artifact`` writes):

- an OCI image manifest (``application/vnd.oci.image.manifest.v1+json``);
- config media type ``application/vnd.cncf.flux.config.v1+json`` (``CanonicalConfigMediaType``;
  the content is not read: ``flux push`` writes ``{}``);
- without ``spec.layerSelector`` the FIRST layer is taken, whatever its media type; it must be a
  gzip-compressed tar (``tar.Untar`` gunzips). ``flux push`` types it
  ``application/vnd.cncf.flux.content.v1.tar+gzip`` (``CanonicalContentMediaType``), as we do.
- the revision source-controller records is ``<tag>@sha256:<manifest digest>``.

The registry is plain HTTP on loopback (``crane registry serve``): the ``OCIRepository`` needs
``spec.insecure: true``. Uploads use the OCI distribution API: a monolithic blob upload
(``POST /v2/<repo>/blobs/uploads/`` then ``PUT <location>?digest=``) and ``PUT`` of the manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.flux.config.v1+json"
CONTENT_MEDIA_TYPE = "application/vnd.cncf.flux.content.v1.tar+gzip"
_TIMEOUT = 30


@dataclass(frozen=True)
class Artifact:
    """A pushed artifact: ``url`` for ``OCIRepository.spec.url`` (``oci://host:port/repo``),
    ``tag``, ``digest`` (``sha256:...`` of the manifest) and ``revision`` as Flux records it."""

    url: str
    tag: str
    digest: str

    @property
    def revision(self) -> str:
        return f"{self.tag}@{self.digest}"


def tar_gz(files: Mapping[str, str]) -> bytes:
    """A reproducible tar+gzip of ``files`` (relative path -> text): fixed mtimes, owners, order."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name].encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_blob(registry: str, repo: str, data: bytes) -> str:
    digest = _digest(data)
    base = f"http://{registry}"
    if requests.head(f"{base}/v2/{repo}/blobs/{digest}", timeout=_TIMEOUT).ok:
        return digest
    started = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=_TIMEOUT)
    started.raise_for_status()
    location = urljoin(f"{base}/", started.headers["Location"])
    sep = "&" if "?" in location else "?"
    done = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=_TIMEOUT,
    )
    done.raise_for_status()
    return digest


def push_manifests(
    registry: str,
    repo: str,
    files: Mapping[str, str],
    *,
    tag: str = "latest",
    revision: str = "",
) -> Artifact:
    """Push ``files`` (path -> YAML text) as one Flux artifact ``registry/repo:tag``.

    ``revision`` goes into the ``org.opencontainers.image.revision`` annotation (as
    ``flux push artifact --revision`` does); pushing new content under the same tag is the next
    artifact revision.
    """
    layer = tar_gz(files)
    config = b"{}"
    layer_digest = _push_blob(registry, repo, layer)
    config_digest = _push_blob(registry, repo, config)
    annotations = {"org.opencontainers.image.source": "cloudtaser-testenv"}
    if revision:
        annotations["org.opencontainers.image.revision"] = revision
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": CONTENT_MEDIA_TYPE, "digest": layer_digest, "size": len(layer)}],
        "annotations": annotations,
    }
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    put = requests.put(
        f"http://{registry}/v2/{repo}/manifests/{tag}",
        data=body,
        headers={"Content-Type": MANIFEST_MEDIA_TYPE},
        timeout=_TIMEOUT,
    )
    put.raise_for_status()
    return Artifact(url=f"oci://{registry}/{repo}", tag=tag, digest=_digest(body))
