"""The emitted files, rendered by the real tools, give the pod templates a live protect /
finalize gives (issue 32): ``kustomize build`` (v5.8) for the kustomize form, for an Argo CD
Application's inline patches (what Argo CD runs for a kustomize source) and for a Flux
HelmRelease's post-renderer patches (what helm-controller runs over the chart's output);
``helm template`` (v4.3) with the values snippet and with the Helm 4 post-renderer plugin.

The reference is the test bed's API server: the original object is created, the engine's own
patch (protect's ``build_patch``, finalize's ``finalize_edit``, placed for the kind) is applied
live as a strategic merge, and its pod template is compared with the rendered object's, which
goes through a server-side dry-run create (so both carry the same server defaults). The one
expected difference, the restart marker, is removed from the live side: Git does not carry it
(a change in Git rolls the pods by itself). Each test first shows that the live change did
change the template, so the comparisons can fail.

The manifests are shaped like a real chart's: a bitnami-like Deployment reading a password by
env and a TLS Secret as a file volume, and a CronJob (tests/unit/test_gitops_emit.py builds
them; kwok is enough, no pod has to run). Argo Rollouts is not on the test bed: its form is
covered by the unit tests only.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client, codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import CronJob
from lightkube.types import PatchType

from cloudtaser.plan.model import Owner
from cloudtaser.target import annotations as ann
from cloudtaser.target.gitops.change import TemplateChange, for_git
from cloudtaser.target.gitops.emit import (
    APPLICATION_FILE,
    HELMRELEASE_FILE,
    KUSTOMIZATION_ENTRY_FILE,
    PATCHES_FILE,
    VALUES_FILE,
    Emitter,
    owner_slug,
)
from cloudtaser.target.kube.kinds import kind_info, pod_template
from tests.testenv.binaries import find_gitops_tools
from tests.unit.test_gitops_emit import CANARY, finalize_patch, manifest, protect_patch

pytestmark = pytest.mark.integration

RESOURCES: Mapping[str, Any] = {"Deployment": Deployment, "CronJob": CronJob}
WORKLOADS = (("Deployment", "web"), ("CronJob", "report"))


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    return find_gitops_tools()


def run(
    argv: Sequence[str | Path], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{argv[0]} failed: {done.stderr[-2000:]}"
    assert CANARY not in done.stdout + done.stderr
    return done.stdout


# --- the live reference ------------------------------------------------------------------------


def live_patch(kind: str, action: str, name: str) -> dict[str, Any]:
    """The engine's own patch of ``action`` (with the restart marker; no resourceVersion: the
    test object's differs)."""
    patch = protect_patch(kind, name) if action == "protect" else finalize_patch(kind, name)
    patch.pop("metadata", None)
    return patch


def live_template(
    client: Client, namespace: str, obj: Mapping[str, Any], actions: Sequence[str]
) -> dict[str, Any]:
    """Create ``obj``, apply the engine's patches of ``actions`` live (strategic merge, the
    real API server), return the pod template without the restart marker."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    client.create(codecs.from_dict(copy.deepcopy(dict(obj))), namespace=namespace)
    before = copy.deepcopy(
        pod_template(kind, client.get(RESOURCES[kind], name, namespace=namespace).to_dict())
    )
    for action in actions:
        client.patch(
            RESOURCES[kind],
            name,
            live_patch(kind, action, name),
            namespace=namespace,
            patch_type=PatchType.STRATEGIC,
            field_manager="cloudtaser",
        )
    after = dict(
        pod_template(kind, client.get(RESOURCES[kind], name, namespace=namespace).to_dict())
    )
    after["metadata"]["annotations"].pop(ann.RESTARTED_AT)
    assert after != before  # the live change changed the template: the comparisons can fail
    return after


def normalised(client: Client, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod template of a rendered ``obj`` as the API server stores it (server-side
    dry-run create under another name: nothing is stored)."""
    body = copy.deepcopy(dict(obj))
    body["metadata"] = {"name": f"{obj['metadata']['name']}-rendered", "namespace": namespace}
    created = client.create(codecs.from_dict(body), namespace=namespace, dry_run=True)
    return dict(pod_template(obj["kind"], created.to_dict()))


def rendered_objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


def assert_same_templates(
    client: Client,
    namespace: str,
    rendered: Mapping[tuple[str, str], Mapping[str, Any]],
    live: Mapping[tuple[str, str], Mapping[str, Any]],
) -> None:
    assert set(live) <= set(rendered)
    for key, want in live.items():
        got = normalised(client, namespace, rendered[key])
        assert got == want, f"{key}: rendered from Git != live"


# --- the emitted files ----------------------------------------------------------------------------


def changes(
    namespace: str, owner: Owner, actions: Sequence[str], workloads: Sequence[tuple[str, str]]
) -> list[TemplateChange]:
    out = []
    for kind, name in workloads:
        for action in actions:
            patch = protect_patch(kind, name) if action == "protect" else finalize_patch(kind, name)
            out.append(
                TemplateChange(
                    action=action,  # type: ignore[arg-type]  # protect | finalize
                    api_version=kind_info(kind).api_version,
                    kind=kind,
                    namespace=namespace,
                    name=name,
                    owner=owner,
                    patch=for_git(patch),
                )
            )
    return out


def emit(out: Path, items: Sequence[TemplateChange]) -> Path:
    emitter = Emitter(out)
    for item in items:
        emitter.add(item)
    assert emitter.write()
    return out / owner_slug(items[0])


def kustomize_dir(root: Path, resources: str, patches: list[Any]) -> Path:
    root.mkdir(parents=True)
    (root / "manifests.yaml").write_text(resources)
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["manifests.yaml"], "patches": patches})
    )
    return root


def originals(
    namespace: str, workloads: Sequence[tuple[str, str]] = WORKLOADS
) -> list[dict[str, Any]]:
    return [manifest(kind, name, namespace) for kind, name in workloads]


def lives(
    client: Client, namespace: str, objs: Sequence[Mapping[str, Any]], actions: Sequence[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["kind"], o["metadata"]["name"]): live_template(client, namespace, o, actions)
        for o in objs
    }


# --- the kustomize form (Flux Kustomization, plain kustomize, unknown owner) ------------------


@pytest.mark.parametrize("actions", [("protect",), ("protect", "finalize")])
def test_kustomize_build_of_the_emitted_patches_gives_the_live_templates(
    kube_client: Client,
    namespace: str,
    tools: dict[str, Path],
    tmp_path: Path,
    actions: tuple[str, ...],
) -> None:
    owner = Owner(
        tool="flux", kind="Kustomization", name="apps", namespace="flux-system", evidence="labels"
    )
    objs = originals(namespace)
    owner_dir = emit(tmp_path / "out", changes(namespace, owner, actions, WORKLOADS))
    # the team's directory: its manifests, the emitted file next to them, the entries added
    entry = yaml.safe_load((owner_dir / KUSTOMIZATION_ENTRY_FILE).read_text())
    repo = kustomize_dir(tmp_path / "git", yaml.safe_dump_all(objs), entry["patches"])
    shutil.copy(owner_dir / PATCHES_FILE, repo / PATCHES_FILE)
    rendered = rendered_objects(run([tools["kustomize"], "build", repo]))
    assert_same_templates(
        kube_client, namespace, rendered, lives(kube_client, namespace, objs, actions)
    )


def test_manifests_without_a_namespace_take_the_patches_after_the_documented_sed(
    kube_client: Client, namespace: str, tools: dict[str, Path], tmp_path: Path
) -> None:
    """Manifests that leave the namespace to the kustomization's ``namespace:``: the patches
    (which name it) match nothing, kustomize says so; the header's ``sed`` makes them match."""
    actions = ("protect", "finalize")
    owner = Owner(tool="flux", kind="Kustomization", name="apps", evidence="labels")
    objs = originals(namespace)
    bare = copy.deepcopy(objs)
    for obj in bare:
        del obj["metadata"]["namespace"]
    owner_dir = emit(tmp_path / "out", changes(namespace, owner, actions, WORKLOADS))
    header = (owner_dir / PATCHES_FILE).read_text()
    sed = "sed -i '/^  namespace: /d' cloudtaser-patches.yaml"
    assert sed in header
    repo = tmp_path / "git"
    repo.mkdir()
    (repo / "manifests.yaml").write_text(yaml.safe_dump_all(bare))
    entry = yaml.safe_load((owner_dir / KUSTOMIZATION_ENTRY_FILE).read_text())
    kustomization = {"namespace": namespace, "resources": ["manifests.yaml"], **entry}
    (repo / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    shutil.copy(owner_dir / PATCHES_FILE, repo / PATCHES_FILE)
    failed = subprocess.run(
        [tools["kustomize"], "build", repo], capture_output=True, text=True, check=False
    )
    assert failed.returncode != 0
    assert "no resource matches strategic merge patch" in failed.stderr
    run(["sh", "-c", sed], cwd=repo)
    rendered = rendered_objects(run([tools["kustomize"], "build", repo]))
    assert_same_templates(
        kube_client, namespace, rendered, lives(kube_client, namespace, objs, actions)
    )


# --- Argo CD: the Application's inline patches, as Argo CD hands them to kustomize ------------


@pytest.mark.parametrize("namespaced", [True, False], ids=["namespaced", "destination-namespace"])
def test_the_argocd_inline_patches_rendered_by_kustomize_give_the_live_templates(
    kube_client: Client, namespace: str, tools: dict[str, Path], tmp_path: Path, namespaced: bool
) -> None:
    actions = ("protect", "finalize")
    owner = Owner(
        tool="argocd", kind="Application", name="shop", namespace="argocd", evidence="annotation"
    )
    objs = originals(namespace)
    source = copy.deepcopy(objs)
    if not namespaced:  # Argo CD places them in spec.destination.namespace when it applies
        for obj in source:
            del obj["metadata"]["namespace"]
    owner_dir = emit(tmp_path / "out", changes(namespace, owner, actions, WORKLOADS))
    (app,) = yaml.safe_load_all((owner_dir / APPLICATION_FILE).read_text())
    patches = app["spec"]["source"]["kustomize"]["patches"]
    # Argo CD writes spec.source.kustomize.patches into the source's kustomization.yaml
    repo = kustomize_dir(tmp_path / "git", yaml.safe_dump_all(source), patches)
    rendered = rendered_objects(run([tools["kustomize"], "build", repo]))
    assert_same_templates(
        kube_client, namespace, rendered, lives(kube_client, namespace, objs, actions)
    )


# --- Helm: a chart exposing podAnnotations / podLabels -----------------------------------------

CHART_VALUES = "podAnnotations: {}\npodLabels: {}\n"


def _chart_template(kind: str, name: str, *, namespaced: bool) -> str:
    """``manifest(kind, name)`` as a chart template: the release's namespace (bitnami's
    charts render it; many charts leave it to Helm: ``namespaced=False``), the pod template's
    labels and annotations from the values."""
    obj = manifest(kind, name, "RELEASE_NAMESPACE")
    if not namespaced:
        del obj["metadata"]["namespace"]
    tpl = pod_template(kind, obj)
    labels = tpl["metadata"]["labels"]  # type: ignore[index]
    tpl["metadata"] = "POD_METADATA"  # type: ignore[index]
    lines = []
    for line in yaml.safe_dump(obj, sort_keys=False).splitlines():
        if line.strip() != "metadata: POD_METADATA":
            lines.append(line.replace("RELEASE_NAMESPACE", "{{ .Release.Namespace }}"))
            continue
        pad = line[: len(line) - len(line.lstrip())]
        lines += [
            f"{pad}metadata:",
            f"{pad}  labels:",
            *(f"{pad}    {k}: {v}" for k, v in labels.items()),
            f"{pad}    {{{{- with .Values.podLabels }}}}",
            f"{pad}    {{{{- toYaml . | nindent {len(pad) + 4} }}}}",
            f"{pad}    {{{{- end }}}}",
            f"{pad}  {{{{- with .Values.podAnnotations }}}}",
            f"{pad}  annotations:",
            f"{pad}    {{{{- toYaml . | nindent {len(pad) + 4} }}}}",
            f"{pad}  {{{{- end }}}}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(params=[True, False], ids=["chart-renders-namespace", "chart-without-namespace"])
def chart(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    root = tmp_path / "chart"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: web\nversion: 0.1.0\n")
    (root / "values.yaml").write_text(CHART_VALUES)
    for kind, name in WORKLOADS:
        text = _chart_template(kind, name, namespaced=request.param)
        (root / "templates" / f"{name}.yaml").write_text(text)
    return root


@pytest.fixture
def helm_env(tmp_path: Path, tools: dict[str, Path]) -> dict[str, str]:
    home = tmp_path / "helm-home"
    return {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": f"{tools['kustomize'].parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def helm_template(
    tools: dict[str, Path], chart: Path, namespace: str, env: Mapping[str, str], *extra: str | Path
) -> str:
    return run([tools["helm"], "template", "web", chart, "-n", namespace, *extra], env=env)


def test_the_chart_renders_the_originals(
    tools: dict[str, Path], chart: Path, helm_env: dict[str, str], namespace: str
) -> None:
    """The chart stands for the manifests: without values it renders them exactly (so the
    comparisons below compare the emitted change, not the chart)."""
    rendered = rendered_objects(helm_template(tools, chart, namespace, helm_env))
    for obj in originals(namespace):
        got = rendered[(obj["kind"], obj["metadata"]["name"])]
        got["metadata"].setdefault("namespace", namespace)  # Helm installs it there
        assert got == obj


def test_helm_template_with_the_values_snippet_gives_the_live_protect(
    kube_client: Client,
    namespace: str,
    tools: dict[str, Path],
    chart: Path,
    helm_env: dict[str, str],
    tmp_path: Path,
) -> None:
    owner = Owner(
        tool="helm", kind="Release", name="web", namespace=namespace, evidence="annotations"
    )
    workloads = [("Deployment", "web")]  # podAnnotations apply to every pod: one workload
    owner_dir = emit(tmp_path / "out", changes(namespace, owner, ("protect",), workloads))
    text = helm_template(tools, chart, namespace, helm_env, "-f", owner_dir / VALUES_FILE)
    rendered = rendered_objects(text)
    objs = originals(namespace, workloads)
    assert_same_templates(
        kube_client, namespace, rendered, lives(kube_client, namespace, objs, ("protect",))
    )


def test_helm_template_with_the_post_renderer_plugin_gives_the_live_finalize(
    kube_client: Client,
    namespace: str,
    tools: dict[str, Path],
    chart: Path,
    helm_env: dict[str, str],
    tmp_path: Path,
) -> None:
    actions = ("protect", "finalize")
    owner = Owner(
        tool="helm", kind="Release", name="web", namespace=namespace, evidence="annotations"
    )
    owner_dir = emit(tmp_path / "out", changes(namespace, owner, actions, WORKLOADS))
    # the command the values snippet's header documents (Helm 4: post-renderers are plugins)
    env = {**helm_env, "HELM_PLUGINS": str(owner_dir / "helm-plugins")}
    text = helm_template(tools, chart, namespace, env, "--post-renderer", "cloudtaser-patches")
    rendered = rendered_objects(text)
    assert_same_templates(
        kube_client,
        namespace,
        rendered,
        lives(kube_client, namespace, originals(namespace), actions),
    )


# --- Flux HelmRelease: the post-renderer patches over the chart's output -----------------------


def test_the_helmrelease_post_renderer_patches_over_the_chart_give_the_live_templates(
    kube_client: Client,
    namespace: str,
    tools: dict[str, Path],
    chart: Path,
    helm_env: dict[str, str],
    tmp_path: Path,
) -> None:
    actions = ("protect", "finalize")
    owner = Owner(
        tool="flux", kind="HelmRelease", name="web", namespace=namespace, evidence="labels"
    )
    owner_dir = emit(tmp_path / "out", changes(namespace, owner, actions, WORKLOADS))
    (release,) = yaml.safe_load_all((owner_dir / HELMRELEASE_FILE).read_text())
    (renderer,) = release["spec"]["postRenderers"]
    # helm-controller: the chart's rendered manifests, then a kustomization with these patches
    chart_output = helm_template(tools, chart, namespace, helm_env)
    repo = kustomize_dir(tmp_path / "render", chart_output, renderer["kustomize"]["patches"])
    rendered = rendered_objects(run([tools["kustomize"], "build", repo]))
    assert_same_templates(
        kube_client,
        namespace,
        rendered,
        lives(kube_client, namespace, originals(namespace), actions),
    )
