"""The owner forms: one owner's :class:`~cloudtaser.target.gitops.change.TemplateChange` objects
as the files its tool takes (pure functions, bytes out; :mod:`cloudtaser.target.gitops.emit`
groups the changes and writes the files).

Every owner gets the kustomize form, the change in its plainest reviewable shape:

- :data:`PATCHES_FILE`: one strategic-merge patch document per workload (``apiVersion``,
  ``kind``, ``metadata.name`` + ``namespace``, then the patch), sorted; kustomize takes a
  multi-document strategic-merge patch file under ``patches: - path:`` (kustomize v5.8,
  tests/integration/test_gitops_render.py);
- :data:`KUSTOMIZATION_ENTRY_FILE`: the ``patches:`` entries for the team's kustomization.yaml.

and, by :func:`owner_form`, the file its tool reads:

- Flux ``HelmRelease``: :data:`HELMRELEASE_FILE`, ``spec.postRenderers[].kustomize.patches[]``
  (helm-controller API v2: ``{target: {kind, name}, patch: <string>}``; no namespace in the
  target: :func:`_inline_patch`);
- Argo CD ``Application``: :data:`APPLICATION_FILE`, ``spec.source.kustomize.patches[]`` (the
  same entry shape), and :data:`VALUES_FILE` for an Application whose source is a Helm chart
  (Argo CD cannot post-render Helm, argo-cd#3698);
- Helm release: :data:`VALUES_FILE` (``podAnnotations`` / ``podLabels``) and a Helm 4
  post-renderer plugin (:data:`HELM_PLUGINS_DIR`) applying the same inline entries with
  ``kustomize build`` (Helm 4 takes only plugins for ``--post-renderer``).

The patch of a kind kustomize cannot strategic-merge (a custom resource: an Argo Rollout) is
written with every list it touches whole, from the live template
(:func:`cloudtaser.target.kube.kinds.merge_form`), as the live step sends it: kustomize would
otherwise replace the list by the patch's few entries.

Nothing written is a secret value: the patches carry names, vault paths and annotation values.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import yaml

from cloudtaser.contract import RESTARTED_AT
from cloudtaser.errors import OperationError
from cloudtaser.plan.model import Owner
from cloudtaser.target.gitops.change import TemplateChange
from cloudtaser.target.kube.kinds import kind_info, merge_form

__all__ = [
    "APPLICATION_FILE",
    "HELMRELEASE_FILE",
    "HELM_PLUGINS_DIR",
    "KUSTOMIZATION_ENTRY_FILE",
    "NAMESPACE_SED",
    "PATCHES_FILE",
    "POST_RENDERER",
    "VALUES_FILE",
    "Form",
    "dump",
    "owner_files",
    "owner_form",
    "patch_document",
]

PATCHES_FILE: Final = "cloudtaser-patches.yaml"
KUSTOMIZATION_ENTRY_FILE: Final = "kustomization-entry.yaml"
HELMRELEASE_FILE: Final = "helmrelease-postrenderers.yaml"
APPLICATION_FILE: Final = "application-patches.yaml"
VALUES_FILE: Final = "values-snippet.yaml"
#: ``HELM_PLUGINS=<owner dir>/helm-plugins helm upgrade ... --post-renderer cloudtaser-patches``
HELM_PLUGINS_DIR: Final = "helm-plugins"
POST_RENDERER: Final = "cloudtaser-patches"

#: Drops ``metadata.namespace`` (the only key at two spaces named so) from every document.
NAMESPACE_SED: Final = f"sed -i '/^  namespace: /d' {PATCHES_FILE}"
HELMRELEASE_API: Final = "helm.toolkit.fluxcd.io/v2"
APPLICATION_API: Final = "argoproj.io/v1alpha1"
_ACTION_ORDER: Final = ("protect", "finalize", "unprotect")
_NO_VALUE_NOTE: Final = "Holds no secret value: names, vault paths and annotations only."


class Form(enum.StrEnum):
    """What an owner's tool takes besides the kustomize form."""

    KUSTOMIZE = "kustomize"
    HELMRELEASE = "helmrelease"
    ARGOCD = "argocd"
    HELM = "helm"


def owner_form(owner: Owner | None) -> Form:
    """The form of ``owner``: an unknown or ambiguous owner (the evidence could be another
    tool's) and a Flux Kustomization get the kustomize form only."""
    if owner is None or owner.ambiguous:
        return Form.KUSTOMIZE
    if owner.tool == "flux" and owner.kind == "HelmRelease":
        return Form.HELMRELEASE
    if owner.tool == "argocd":
        return Form.ARGOCD
    if owner.tool == "helm":
        return Form.HELM
    return Form.KUSTOMIZE


# --- YAML, byte for byte the same for the same input ---------------------------------------


class _Dumper(yaml.SafeDumper):
    """Sorted keys, block style, a multi-line string as a ``|`` block (a patch inside a
    HelmRelease or Application stays readable), no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_Dumper.add_representer(str, _str)


def dump(documents: Sequence[Any]) -> str:
    """``documents`` as YAML documents, each starting with ``---``."""
    return yaml.dump_all(
        documents,
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        explicit_start=True,
        width=4096,
    )


def _dump_one(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=4096)


def _line(text: str) -> str:
    """``text`` safe inside a ``#`` comment line (control characters replaced)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _header(title: str, changes: Sequence[TemplateChange], lines: Sequence[str]) -> str:
    out = [
        f"# {title}",
        "# Written by cloudtaser (target protect / target finalize --emit).",
        f"# {_NO_VALUE_NOTE}",
        "# Workloads:",
        *(
            f"#   {c.action}{' (kept, from the live template)' if c.rebuilt else ''}: "
            f"{c.kind} {c.namespace}/{c.name}"
            for c in changes
        ),
        "#",
        *(f"# {line}" if line else "#" for line in lines),
    ]
    return "\n".join(_line(line) for line in out) + "\n"


# --- the patches -----------------------------------------------------------------------------


def _sort_key(change: TemplateChange) -> tuple[str, str, str, int]:
    order = _ACTION_ORDER.index(change.action) if change.action in _ACTION_ORDER else 99
    return (change.namespace, change.kind, change.name, order)


def _touches_list(node: Any) -> bool:
    if isinstance(node, list):
        return True
    return isinstance(node, Mapping) and any(_touches_list(v) for v in node.values())


def _git_patch(change: TemplateChange) -> dict[str, Any]:
    """The change's patch in the form kustomize applies like the API server: as it is for a
    built-in kind, lists written whole for a custom resource."""
    patch = dict(change.patch)
    info = kind_info(change.kind)
    if info.strategic or not _touches_list(patch):
        return patch
    if change.template is None:
        raise OperationError(
            f"{change.kind} {change.namespace}/{change.name}: kustomize replaces the lists of "
            "a custom resource, so its patch needs the live pod template to write them whole; "
            "build the TemplateChange with template= (the live object's pod template)"
        )
    live: dict[str, Any] = {}
    node = live
    for key in info.template_path[:-1]:
        node = node.setdefault(key, {})
    node[info.template_path[-1]] = dict(change.template)
    return merge_form(live, patch)


def patch_document(change: TemplateChange) -> dict[str, Any]:
    """One strategic-merge patch document: the workload's ``apiVersion``, ``kind``, name and
    namespace, then the patch."""
    patch = _git_patch(change)
    meta = dict(patch.pop("metadata", None) or {})
    meta.update(name=change.name, namespace=change.namespace)
    return {"apiVersion": change.api_version, "kind": change.kind, "metadata": meta, **patch}


def _inline_patch(change: TemplateChange) -> dict[str, Any]:
    """The ``{target, patch}`` entry of Flux's and Argo CD's inline kustomize patches. The
    target names kind and name only: a chart's output, or manifests Argo CD places in the
    destination namespace, often carry no namespace, and kustomize (5.8) silently skips a
    target whose namespace a resource does not spell the same way."""
    return {
        "target": {"kind": change.kind, "name": change.name},
        "patch": _dump_one(patch_document(change)),
    }


def _pointer(path: Sequence[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def _markers(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Where ``node`` (a patch) sets a restart marker: the template annotation, or a kind's
    restart field (``spec.restartAt``)."""
    if not isinstance(node, Mapping):
        return
    for key in sorted(node):
        here = (*path, str(key))
        if key == RESTARTED_AT or here == ("spec", "restartAt"):
            yield here
        else:
            yield from _markers(node[key], here)


def _ignore_differences(changes: Sequence[TemplateChange]) -> list[dict[str, Any]]:
    """The ``ignoreDifferences`` entries an Application needs: one per workload whose change
    still sets a restart marker (a value cloudtaser changes live, later); none for a change
    passed through :func:`cloudtaser.target.gitops.change.for_git`."""
    out: list[dict[str, Any]] = []
    for c in changes:
        pointers = sorted({_pointer(p) for p in _markers(c.patch)})
        if pointers:
            group = kind_info(c.kind).group
            out.append(
                {
                    **({"group": group} if group else {}),
                    "kind": c.kind,
                    "name": c.name,
                    "namespace": c.namespace,
                    "jsonPointers": pointers,
                }
            )
    return out


# --- the files of each form ------------------------------------------------------------------


def _where(owner: Owner | None) -> str:
    if owner is None:
        return "no owner found"
    return f"{owner.namespace}/{owner.name}" if owner.namespace else owner.name


def _kustomize_files(changes: Sequence[TemplateChange], form: Form) -> dict[str, str]:
    if form is Form.KUSTOMIZE:
        use = [
            "Copy this file next to the kustomization.yaml that lists these workloads (for a",
            "Flux Kustomization: the one under its spec.path), add the entries of",
            f"{KUSTOMIZATION_ENTRY_FILE} to its `patches:`, check, commit and push:",
            "  kustomize build <that directory>",
            f"  git add <that directory>/{PATCHES_FILE} <that directory>/kustomization.yaml",
            "  git commit -m 'cloudtaser: <what>' && git push",
            "The owner applies it at its next sync; the new pods are injected.",
            "Each document names its workload's namespace. Manifests that leave it to the",
            "kustomization's `namespace:` make kustomize say 'no resource matches strategic",
            "merge patch': then drop the documents' namespace lines first:",
            f"  {NAMESPACE_SED}",
        ]
    elif form is Form.HELM:
        use = [
            "The same change in plain kustomize form, for review; the Helm post-renderer",
            f"plugin in {HELM_PLUGINS_DIR}/ carries it (see {VALUES_FILE} for the commands).",
        ]
    else:
        other = HELMRELEASE_FILE if form is Form.HELMRELEASE else APPLICATION_FILE
        use = [
            "The same change in plain kustomize form, for review: commit",
            f"{other} (see its header), which carries these patches inline.",
        ]
    protected = {(c.namespace, c.kind, c.name) for c in changes if c.action == "protect"}
    alone = sorted(
        f"{c.kind} {c.namespace}/{c.name}"
        for c in changes
        if c.action == "finalize" and (c.namespace, c.kind, c.name) not in protected
    )
    if alone:
        use += [
            f"KEEP the protect patches committed earlier for {', '.join(alone)}: add these",
            "documents to that file, do not replace it. Without protect's annotations the new",
            "pods would not be injected while their Secret references are gone.",
        ]
    rebuilt = sorted(f"{c.kind} {c.namespace}/{c.name}" for c in changes if c.rebuilt)
    if rebuilt:
        use += [
            f"The protect documents of {', '.join(rebuilt)} are rebuilt from the live template",
            "(the protection Git applied), so this file may replace the one protect wrote. A",
            "container `command` that protect --pin-entrypoints wrote is not in them: keep",
            "those lines from the earlier file.",
        ]
    whole = sorted(
        {
            f"{c.kind} {c.namespace}/{c.name}"
            for c in changes
            if not kind_info(c.kind).strategic and _touches_list(c.patch)
        }
    )
    if whole:
        use += [
            f"{', '.join(whole)}: a custom resource, whose lists kustomize replaces instead of",
            "merging by name: every list the change touches is written whole, as it must end up.",
        ]
    patches = _header("Strategic-merge patches (kustomize `patches: - path:`)", changes, use)
    patches += dump([patch_document(c) for c in changes])
    entry = _header(
        f"`patches:` entries for the kustomization.yaml next to {PATCHES_FILE}",
        changes,
        ["Add these entries to the kustomization.yaml's `patches:` list (keep the others)."],
    )
    entry += _dump_one({"patches": [{"path": PATCHES_FILE}]})
    return {PATCHES_FILE: patches, KUSTOMIZATION_ENTRY_FILE: entry}


def _helmrelease_file(owner: Owner, changes: Sequence[TemplateChange]) -> str:
    meta = {"name": owner.name, **({"namespace": owner.namespace} if owner.namespace else {})}
    document = {
        "apiVersion": HELMRELEASE_API,
        "kind": "HelmRelease",
        "metadata": meta,
        "spec": {
            "postRenderers": [{"kustomize": {"patches": [_inline_patch(c) for c in changes]}}]
        },
    }
    lines = [
        f"For the Flux HelmRelease {_where(owner)}: helm-controller applies these kustomize",
        "patches to the chart's rendered manifests (works for any chart), then upgrades the",
        "release. Merge spec.postRenderers into the HelmRelease manifest in Git.",
        "spec.postRenderers is a list: a merge (kustomize patch, kubectl patch, Flux) REPLACES",
        "it whole. If the HelmRelease already has post-renderers, add these `patches` entries",
        "to its existing kustomize post-renderer instead of pasting this list.",
        "  git add <the HelmRelease file> && git commit -m 'cloudtaser: <what>' && git push",
        f"  flux reconcile helmrelease {shlex.quote(owner.name)} -n "
        f"{shlex.quote(owner.namespace) if owner.namespace else '<namespace>'} "
        "--with-source",
    ]
    header = _header("Flux HelmRelease post-renderer patches", changes, lines)
    return header + dump([document])


def _application_file(owner: Owner, changes: Sequence[TemplateChange]) -> str:
    meta = {"name": owner.name, **({"namespace": owner.namespace} if owner.namespace else {})}
    spec: dict[str, Any] = {
        "source": {"kustomize": {"patches": [_inline_patch(c) for c in changes]}}
    }
    ignore = _ignore_differences(changes)
    if ignore:
        spec["ignoreDifferences"] = ignore
        drift = [
            "ignoreDifferences: these changes set a restart marker, which cloudtaser changes",
            "live later; without the entry Argo CD would report it as drift (set the sync",
            "option RespectIgnoreDifferences=true so self-heal leaves it alone).",
        ]
    else:
        drift = [
            "No ignoreDifferences entry: the restart marker is not part of this change (a change",
            "in Git rolls the pods by itself) and every field it sets is Git's once committed, so",
            "Argo CD reports no drift; the injector changes only the pods, which Argo CD does not",
            "compare with Git.",
        ]
    lines = [
        f"For the Argo CD Application {_where(owner)} whose source is a kustomize directory:",
        "add these entries to spec.source.kustomize.patches (keep the ones there; a",
        "multi-source Application: under the spec.sources[] entry that renders these",
        "workloads), commit the Application, let Argo CD sync:",
        "  argocd app diff <app> && argocd app sync <app>",
        f"A plain directory source: use {PATCHES_FILE} with a kustomization.yaml instead.",
        f"A Helm chart source: Argo CD cannot post-render Helm (argo-cd#3698): use {VALUES_FILE}.",
        *drift,
    ]
    header = _header("Argo CD Application inline kustomize patches", changes, lines)
    return header + dump(
        [{"apiVersion": APPLICATION_API, "kind": "Application", "metadata": meta, "spec": spec}]
    )


def _template_meta(change: TemplateChange) -> Mapping[str, Any]:
    node: Any = change.patch
    for key in kind_info(change.kind).template_path:
        node = node.get(key) if isinstance(node, Mapping) else None
    meta = node.get("metadata") if isinstance(node, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}


def _values(changes: Sequence[TemplateChange]) -> tuple[dict[str, Any], list[str]]:
    """``podAnnotations`` / ``podLabels`` of the protect changes, and what the values cannot
    say (a finalize removal, workloads of one chart that need different annotations)."""
    found: list[dict[str, Any]] = []
    notes: list[str] = []
    for c in changes:
        if c.action == "unprotect":
            notes.append(
                f"unprotect of {c.kind} {c.namespace}/{c.name}: remove the podAnnotations and "
                "podLabels cloudtaser added (its earlier values snippet) from the values."
            )
            continue
        if c.action != "protect":
            notes.append(
                f"{c.action} of {c.kind} {c.namespace}/{c.name} cannot be written as values (a "
                "removal of env / envFrom / volume entries the chart renders): use the "
                "post-renderer form."
            )
            continue
        meta = _template_meta(c)
        values: dict[str, Any] = {}
        for key, value_key in (("annotations", "podAnnotations"), ("labels", "podLabels")):
            given = meta.get(key)
            if isinstance(given, Mapping):
                kept = {k: v for k, v in given.items() if v is not None}
                if kept:
                    values[value_key] = kept
        found.append(values)
    distinct = {_dump_one(v) for v in found}
    if len(distinct) > 1:
        notes.append(
            "These workloads need different annotations, and a chart's podAnnotations apply to "
            "every pod it renders: these values cannot say it; use the post-renderer form."
        )
        return {}, notes
    return (found[0] if found else {}), notes


def _values_file(owner: Owner, changes: Sequence[TemplateChange], form: Form) -> str:
    values, notes = _values(changes)
    # names in a command the reader may paste: quoted for the shell
    release = shlex.quote(owner.name)
    ns = shlex.quote(owner.namespace) if owner.namespace else "<namespace>"
    lines = [
        "Helm values: the chart must expose podAnnotations and podLabels and put them on the",
        "pod template (most charts do, e.g. bitnami's; check the chart's values.yaml).",
    ]
    if form is Form.HELM:
        lines += [
            f"  helm upgrade {release} <chart> -n {ns} --reuse-values -f {VALUES_FILE}",
            "or, for every change (also finalize's removals), with the post-renderer (Helm 4",
            "takes only a post-renderer plugin; it runs `kustomize build`, kustomize on PATH):",
            f'  HELM_PLUGINS="$PWD/{HELM_PLUGINS_DIR}" helm upgrade {release} <chart> -n {ns} \\',
            f"    --reuse-values -f {VALUES_FILE} --post-renderer {POST_RENDERER}",
            "(run from this directory; or `helm plugin install "
            f"{HELM_PLUGINS_DIR}/{POST_RENDERER}`).",
        ]
    else:
        lines += [
            "For an Argo CD Application whose source is a Helm chart: add these values to",
            "spec.source.helm.valuesObject (or the values file it reads), commit, sync.",
        ]
    lines += notes
    if not values:
        lines.append("Nothing here can be expressed as values.")
    header = _header(f"Helm values for {_where(owner)}", changes, lines)
    return header + _dump_one(values)


def _plugin_files(changes: Sequence[TemplateChange]) -> dict[str, str]:
    """A Helm 4 post-renderer plugin (``postrenderer/v1``, subprocess) applying the changes
    with ``kustomize build`` over the chart's output: its own ``patches.yaml`` holds the same
    inline entries as a HelmRelease's post-renderer (targets by kind and name)."""
    base = f"{HELM_PLUGINS_DIR}/{POST_RENDERER}"
    plugin = {
        "apiVersion": "v1",
        "type": "postrenderer/v1",
        "name": POST_RENDERER,
        "version": "1.0.0",
        "runtime": "subprocess",
        "runtimeConfig": {
            "platformCommand": [{"command": "/bin/sh", "args": ["${HELM_PLUGIN_DIR}/render.sh"]}]
        },
    }
    script = "\n".join(
        [
            "#!/bin/sh",
            "# Helm 4 post-renderer (written by cloudtaser; holds no secret value): applies",
            "# patches.yaml to the chart's rendered manifests with `kustomize build`.",
            "set -eu",
            "work=$(mktemp -d)",
            "trap 'rm -rf \"$work\"' EXIT",
            'cat > "$work/rendered.yaml"',
            "{ printf 'resources:\\n- rendered.yaml\\n'; "
            'cat "$HELM_PLUGIN_DIR/patches.yaml"; } > "$work/kustomization.yaml"',
            '"${KUSTOMIZE:-kustomize}" build "$work"',
            "",
        ]
    )
    usage = (
        f"HELM_PLUGINS=<this owner's directory>/{HELM_PLUGINS_DIR} helm upgrade ... "
        f"--post-renderer {POST_RENDERER}"
    )
    header = (
        "# Helm 4 post-renderer plugin (written by cloudtaser; holds no secret value):\n"
        f"# {usage}\n"
    )
    patches = _header(
        "kustomize patches of the Helm post-renderer plugin (render.sh)",
        changes,
        [
            f"The same change as ../../{PATCHES_FILE}, as inline entries that target each",
            "workload by kind and name (a chart's manifests often carry no namespace).",
            f"Use: {usage}",
        ],
    )
    return {
        f"{base}/plugin.yaml": header + _dump_one(plugin),
        f"{base}/render.sh": script,
        f"{base}/patches.yaml": patches
        + _dump_one({"patches": [_inline_patch(c) for c in changes]}),
    }


def owner_files(owner: Owner | None, changes: Sequence[TemplateChange]) -> dict[str, bytes]:
    """Every file of one owner (path relative to the owner's directory -> bytes); the changes
    in a fixed order, so the same changes give the same bytes."""
    ordered = sorted(changes, key=_sort_key)
    form = owner_form(owner)
    files = _kustomize_files(ordered, form)
    if owner is not None and form is Form.HELMRELEASE:
        files[HELMRELEASE_FILE] = _helmrelease_file(owner, ordered)
    elif owner is not None and form is Form.ARGOCD:
        files[APPLICATION_FILE] = _application_file(owner, ordered)
        if any(c.action == "protect" for c in ordered):
            files[VALUES_FILE] = _values_file(owner, ordered, form)
    elif owner is not None and form is Form.HELM:
        files[VALUES_FILE] = _values_file(owner, ordered, form)
        files.update(_plugin_files(ordered))
    return {name: text.encode() for name, text in sorted(files.items())}
