"""What to remove at the source so that a Secret's owner stops writing it (``finalize
--delete-secrets`` refuses an owned Secret and names it, docs/lifecycle.md).

Deleting a Secret that Git, Helm or an operator writes does not last: the owner recreates it at
its next sync (docs/gitops.md). So the deletion is refused and the refusal names the place to
change instead, per owner (:class:`~cloudtaser.plan.model.Owner`):

- Flux ``Kustomization``: the Kustomization is read (``kustomize.toolkit.fluxcd.io/v1``) for
  its ``spec.sourceRef``, ``spec.path`` and ``spec.targetNamespace``; its source
  (``OCIRepository`` / ``GitRepository``, ``source.toolkit.fluxcd.io``) for ``spec.url``; with
  a local checkout of that source (``--gitops-source DIR``) the file(s) under ``spec.path``
  that define the Secret are named (:mod:`cloudtaser.target.gitops.checkout`; the whole
  checkout when none is under ``spec.path``: a kustomize base may sit elsewhere).
- Flux ``HelmRelease`` (``helm.toolkit.fluxcd.io/v2``): the release and its chart
  (``spec.chart.spec.chart`` and its ``sourceRef``, or ``spec.chartRef``).
- Helm release: its name and "the chart value that renders it". The release's own record (a
  ``helm.sh/release.v1`` Secret) is never read: it holds the values.
- Argo CD ``Application`` (``argoproj.io/v1alpha1``): the app and, when readable, its
  ``spec.source.repoURL`` / ``path`` (or each of ``spec.sources``), plus the files of a
  checkout as for Flux.
- ``ExternalSecret`` / ``SealedSecret`` / cert-manager ``Certificate``: that object (and for a
  SealedSecret, with a checkout, the file that defines it).

Only ``get`` of those named objects; a read that is forbidden (403) or finds nothing (404)
still refuses, naming what could not be read and why. Nothing here reads a Secret, a value or
``last-applied-configuration``: the owner objects' fields named above, and only names and URLs
leave this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import ClusterError, ClusterForbiddenError, ClusterNotFoundError
from cloudtaser.target.gitops.checkout import Found, find_secret_files
from cloudtaser.target.gitops.forms import APPLICATION_API, HELMRELEASE_API
from cloudtaser.target.owners import describe
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.plan.model import Owner
    from cloudtaser.target.kube.workloads import WorkloadAPI

__all__ = ["APPLICATION", "HELM_RELEASE", "KUSTOMIZATION", "AtSource", "at_source", "refusal"]

#: (API path prefix, plural) of each object read here; ``get`` on each plural is the RBAC
#: finalize --delete-secrets needs to name the source (docs/security.md, rbac-finalize-owners).
KUSTOMIZATION: Final = ("/apis/kustomize.toolkit.fluxcd.io/v1", "kustomizations")
HELM_RELEASE: Final = (f"/apis/{HELMRELEASE_API}", "helmreleases")
APPLICATION: Final = (f"/apis/{APPLICATION_API}", "applications")
_SOURCES: Final = {
    "OCIRepository": ("/apis/source.toolkit.fluxcd.io/v1", "ocirepositories"),
    "GitRepository": ("/apis/source.toolkit.fluxcd.io/v1", "gitrepositories"),
}
#: Argo CD's own namespace in a default install: where an Application named without a
#: namespace (tracking id ``<app>:…``) lives.
ARGOCD_NAMESPACE: Final = "argocd"
_MAX_FILES_NAMED: Final = 10


@dataclass(frozen=True)
class AtSource:
    """Where to remove or change a Secret at its owner's source (names and URLs only)."""

    #: One line: what to change, where.
    line: str
    #: The files of the checkout that define the Secret (relative to it).
    files: tuple[str, ...] = ()
    #: What could not be read, and why (names the object; the refusal stands).
    unread: tuple[str, ...] = ()


class _Reader:
    """``get`` of one named object; remembers what could not be read and why."""

    def __init__(self, cluster: WorkloadAPI) -> None:
        self.cluster = cluster
        self.unread: list[str] = []

    def get(self, api: tuple[str, str], kind: str, namespace: str, name: str) -> dict[str, Any]:
        prefix, plural = api
        path = f"{prefix}/namespaces/{namespace}/{plural}/{name}"
        what = f"{kind} {namespace}/{name}"
        try:
            return self.cluster.get_json(path, action=f"read {what}")
        except ClusterNotFoundError:
            self.unread.append(f"{what} not found")
        except ClusterForbiddenError:
            group = prefix.split("/")[2]
            self.unread.append(f"may not read {what} (RBAC: get {plural}.{group})")
        except ClusterError as exc:
            self.unread.append(f"could not read {what}: {exc}")
        return {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _where(found: Found | None, checkout: Path | None, under: str) -> tuple[str, tuple[str, ...]]:
    """Where to remove it: the files of the checkout, or "Git" and why no file is named."""
    if checkout is None:
        return "Git (give --gitops-source DIR, a checkout of that source, to name the file)", ()
    assert found is not None
    if found.refused:
        return f"Git (the checkout {checkout} was not searched: {found.refused})", ()
    skipped = f"; {found.skipped} file(s) skipped" if found.skipped else ""
    more = "; stopped after the first files" if found.truncated else ""
    if not found.files:
        return f"Git (no file of {checkout}{under} defines it{skipped}{more})", ()
    shown = found.files[:_MAX_FILES_NAMED]
    rest = f" and {len(found.files) - len(shown)} more" if len(found.files) > len(shown) else ""
    paths = ", ".join(f"{checkout / f.path} ({f.how})" for f in shown)
    note = f" ({(skipped + more).lstrip('; ')})" if skipped or more else ""
    return f"{paths}{rest}{note}", tuple(f.path for f in found.files)


def _search(
    checkout: Path | None, name: str, namespace: str, path: str, *, any_namespace: bool
) -> tuple[Found | None, str]:
    """Search ``path`` of the checkout, then (nothing there) the whole checkout."""
    if checkout is None:
        return None, ""
    found = find_secret_files(checkout, name, namespace, path=path, any_namespace=any_namespace)
    if found.files or found.refused or not path.strip("./"):
        return found, f" (under {path or './'})"
    whole = find_secret_files(checkout, name, namespace, any_namespace=any_namespace)
    return whole, f" (under {path} or elsewhere)"


def _kustomization(
    reader: _Reader, owner: Owner, namespace: str, name: str, checkout: Path | None
) -> AtSource:
    ns = owner.namespace or namespace
    ks = reader.get(KUSTOMIZATION, "Kustomization", ns, owner.name)
    ref = dig(ks, "spec", "sourceRef") or {}
    kind, src = _str(ref.get("kind")), _str(ref.get("name"))
    src_ns = _str(ref.get("namespace")) or ns
    path = _str(dig(ks, "spec", "path")) or "./"
    source = f"{kind} {src_ns}/{src}" if kind and src else ""
    if source and kind in _SOURCES:
        url = _str(dig(reader.get(_SOURCES[kind], kind, src_ns, src), "spec", "url"))
        source += f" ({url})" if url else ""
    line = f"Flux Kustomization {ns}/{owner.name} applies it"
    line += f" from {source}, path {path}" if source else " (its source could not be read)"
    any_ns = bool(_str(dig(ks, "spec", "targetNamespace")))
    found, under = _search(checkout, name, namespace, path if ks else "", any_namespace=any_ns)
    where, files = _where(found, checkout, under)
    return AtSource(f"{line}: remove it from {where}", files)


def _helm_release(reader: _Reader, owner: Owner, namespace: str) -> AtSource:
    ns = owner.namespace or namespace
    hr = reader.get(HELM_RELEASE, "HelmRelease", ns, owner.name)
    chart = dig(hr, "spec", "chart", "spec") or {}
    chart_ref = dig(hr, "spec", "chartRef") or {}
    if _str(chart.get("chart")):
        src = chart.get("sourceRef") or {}
        source = f"{_str(src.get('kind'))} {_str(src.get('name'))}".strip()
        what = f" from chart {chart['chart']}" + (f" ({source})" if source else "")
    elif _str(chart_ref.get("name")):
        what = f" from chart {_str(chart_ref.get('kind'))} {chart_ref['name']}".replace("  ", " ")
    else:
        what = ""
    return AtSource(
        f"Flux HelmRelease {ns}/{owner.name} renders it{what}: change the chart value that "
        "renders it (e.g. an existingSecret-style value in the HelmRelease's spec.values) or "
        "the chart's template, in Git"
    )


def _plain_helm(owner: Owner, namespace: str) -> AtSource:
    ns = owner.namespace or namespace
    return AtSource(
        f"Helm release {ns}/{owner.name} renders it: change the chart value that renders it, "
        "e.g. an existingSecret-style value, and upgrade the release (its release record is "
        "not read here: it holds the values)"
    )


def _argo(
    reader: _Reader, owner: Owner, namespace: str, name: str, checkout: Path | None
) -> AtSource:
    ns = owner.namespace or ARGOCD_NAMESPACE
    app = reader.get(APPLICATION, "Application", ns, owner.name)
    sources = [dig(app, "spec", "source"), *(dig(app, "spec", "sources") or [])]
    named = [
        f"{_str(s.get('repoURL'))}" + (f", path {_str(s.get('path'))}" if s.get("path") else "")
        for s in sources
        if isinstance(s, dict) and _str(s.get("repoURL"))
    ]
    line = f"Argo CD Application {ns}/{owner.name} syncs it"
    line += f" from {'; '.join(named)}" if named else " (its source could not be read)"
    paths = [_str(s.get("path")) for s in sources if isinstance(s, dict)]
    path = paths[0] if len(paths) == 1 else ""
    found, under = _search(checkout, name, namespace, path, any_namespace=False)
    where, files = _where(found, checkout, under)
    return AtSource(f"{line}: remove it from {where}", files)


def _operator(owner: Owner, namespace: str, checkout: Path | None) -> AtSource:
    ns = owner.namespace or namespace
    if owner.kind == "ExternalSecret":
        return AtSource(
            f"delete or change ExternalSecret {ns}/{owner.name}: its store still holds the "
            "value and external-secrets writes the Secret again"
        )
    if owner.kind == "Certificate":
        return AtSource(
            f"delete or change cert-manager Certificate {ns}/{owner.name}: cert-manager "
            "issues the Secret again"
        )
    found, under = _search(checkout, owner.name, namespace, "", any_namespace=False)
    where, files = _where(found, checkout, under)
    return AtSource(
        f"delete SealedSecret {ns}/{owner.name} (the sealed-secrets controller writes the "
        f"Secret again from it): remove it from {where}",
        files,
    )


def at_source(
    cluster: WorkloadAPI, owner: Owner, namespace: str, name: str, *, checkout: Path | None
) -> AtSource:
    """What to remove or change at ``owner``'s source so that Secret ``namespace/name`` stays
    gone (module doc); ``checkout`` is a local checkout of the owner's Git source, if given."""
    reader = _Reader(cluster)
    if owner.tool == "flux" and owner.kind == "Kustomization":
        found = _kustomization(reader, owner, namespace, name, checkout)
    elif owner.tool == "flux":
        found = _helm_release(reader, owner, namespace)
    elif owner.tool == "helm":
        found = _plain_helm(owner, namespace)
    elif owner.tool == "argocd":
        found = _argo(reader, owner, namespace, name, checkout)
    else:
        found = _operator(owner, namespace, checkout)
    return AtSource(found.line, found.files, tuple(reader.unread))


def refusal(owner: Owner, found: AtSource, *, note: str = "") -> str:
    """The one line that refuses the deletion: who owns it, the evidence, what to do
    (``note``: how the plan's owner and the live one differ, if they do)."""
    why = (
        "the evidence is ambiguous, and a possible owner would probably recreate it"
        if owner.ambiguous
        else "its owner would recreate it"
    )
    text = f"owned by {describe(owner)} ({owner.evidence}{note}): not deleted, {why}; {found.line}"
    if found.unread:
        text += "; could not read: " + "; ".join(found.unread)
    return text
