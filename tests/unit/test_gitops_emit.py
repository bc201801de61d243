"""The emitter (issue 32): every owner form, the same bytes for the same changes, owner names
from cluster metadata never leave the output directory, the patches land where each kind keeps
its template, and no Secret value ever reaches a file.

The changes are built by the engine's own functions (protect's ``build_patch`` with
``build_annotations``, finalize's ``finalize_edit``, ``placed``, ``for_git``); the
integration test (tests/integration/test_gitops_render.py) imports the same cases.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtaser.errors import OperationError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from cloudtaser.plan.model import FileMount, Owner, SecretFile, SecretFileKey
from cloudtaser.plan.rules import MAX_SEGMENT, safe_segment
from cloudtaser.target import annotations as ann
from cloudtaser.target.engine.secret_refs import finalize_edit
from cloudtaser.target.gitops.change import TemplateChange, for_git, protection
from cloudtaser.target.gitops.emit import (
    APPLICATION_FILE,
    HELMRELEASE_FILE,
    KUSTOMIZATION_ENTRY_FILE,
    PATCHES_FILE,
    UNOWNED,
    VALUES_FILE,
    Emitter,
    owner_slug,
    summary,
)
from cloudtaser.target.kube.kinds import kind_info, placed
from cloudtaser.target.protect import build_patch

NAMESPACE = "shop"
CANARY = "canary-Emit-7d3a-never-written"
#: The cluster's Secrets: their data is what must never reach a file.
SECRETS: dict[str, dict[str, str]] = {
    "web-db": {"db-password": CANARY, "db-user": CANARY + "-user"},
    "web-tls": {"tls.crt": CANARY + "-crt", "tls.key": CANARY + "-key"},
}
MARKER = "2026-12-06T22:00:00Z"
OWNERS = {
    "kustomization": Owner(
        tool="flux",
        kind="Kustomization",
        name="apps",
        namespace="flux-system",
        evidence="labels kustomize.toolkit.fluxcd.io/name, kustomize.toolkit.fluxcd.io/namespace",
    ),
    "helmrelease": Owner(
        tool="flux",
        kind="HelmRelease",
        name="web",
        namespace=NAMESPACE,
        evidence="labels helm.toolkit.fluxcd.io/name, helm.toolkit.fluxcd.io/namespace",
    ),
    "argocd": Owner(
        tool="argocd",
        kind="Application",
        name="shop",
        namespace="argocd",
        evidence="annotation argocd.argoproj.io/tracking-id",
    ),
    "helm": Owner(
        tool="helm",
        kind="Release",
        name="web",
        namespace=NAMESPACE,
        evidence="annotations meta.helm.sh/release-name, meta.helm.sh/release-namespace",
    ),
    "ambiguous": Owner(
        tool="argocd",
        kind="Application",
        name="web",
        evidence="label app.kubernetes.io/instance",
        ambiguous=True,
    ),
}


def secret_keys(name: str) -> list[str] | None:
    data = SECRETS.get(name)
    return sorted(data) if data is not None else None


def pod_spec() -> dict[str, Any]:
    """A bitnami-like pod: the password by env, the TLS Secret as a file volume."""
    return {
        "containers": [
            {
                "name": "web",
                "image": "registry.example/web:1.0",
                "env": [
                    {"name": "WEB_MODE", "value": "production"},
                    {
                        "name": "DB_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "web-db", "key": "db-password"}},
                    },
                    {
                        "name": "DB_USER",
                        "valueFrom": {"secretKeyRef": {"name": "web-db", "key": "db-user"}},
                    },
                ],
                "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": True}],
            }
        ],
        "volumes": [
            {"name": "tls", "secret": {"secretName": "web-tls"}},
            {"name": "cache", "emptyDir": {}},
        ],
    }


def template(labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {"app": "web"}}, "spec": pod_spec()}


def manifest(kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The workload as Git (or the chart) has it."""
    info = kind_info(kind)
    obj: dict[str, Any] = {
        "apiVersion": info.api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {},
    }
    tpl = template({"app": name})
    if kind == "CronJob":
        tpl["spec"]["restartPolicy"] = "OnFailure"
        obj["spec"] = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": tpl}}}
    else:
        obj["spec"] = {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": tpl,
        }
    return obj


def workload(kind: str = "Deployment", name: str = "web") -> Workload:
    return Workload(
        kind=kind,  # type: ignore[arg-type]  # a WorkloadKind value
        name=name,
        secrets=[
            SecretRef(
                source="web-db",
                vault_path=f"secret/data/{NAMESPACE}/{name}/web-db",
                fields={"db-password": "DB_PASSWORD", "db-user": "DB_USER"},
                via="env",
            )
        ],
        secret_files=[
            SecretFile(
                source="web-tls",
                volume="tls",
                vault_path=f"secret/data/{NAMESPACE}/{name}/web-tls",
                files=[
                    SecretFileKey(key="tls.crt", file="tls.crt"),
                    SecretFileKey(key="tls.key", file="tls.key"),
                ],
                mounts=[FileMount(container="web", mount_path="/tls", read_only=True)],
            )
        ],
    )


def plan(*workloads: Workload) -> MigrationPlan:
    return MigrationPlan(
        api_version="cloudtaser.io/v1",
        kind="MigrationPlan",
        metadata=PlanMetadata(name="prod-eu"),
        tenants=[Tenant(name=NAMESPACE, namespace=NAMESPACE, workloads=list(workloads))],
    )


def protect_patch(kind: str = "Deployment", name: str = "web") -> dict[str, Any]:
    """protect's own patch (restart marker, resourceVersion), placed for ``kind``."""
    w = workload(kind, name)
    p = plan(w)
    intended = ann.build_annotations(p, p.tenants[0], w, "https://vault.example.com:8200")
    out = placed(kind, build_patch(intended, MARKER, "4711"))
    assert out is not None
    return out


def finalize_patch(kind: str = "Deployment", name: str = "web") -> dict[str, Any]:
    """finalize's own patch (``finalize_edit``, as finalize/step.py builds it), placed."""
    edit = finalize_edit(template(), workload(kind, name), secret_keys)
    assert not edit.problems
    assert not edit.kept
    out = placed(
        kind,
        {"spec": {"template": {"spec": edit.spec_patch}}, "metadata": {"resourceVersion": "4712"}},
    )
    assert out is not None
    return out


def change(
    action: str,
    kind: str = "Deployment",
    name: str = "web",
    owner: Owner | None = None,
    *,
    live_template: bool = False,
) -> TemplateChange:
    build: Callable[[str, str], dict[str, Any]] = (
        protect_patch if action == "protect" else finalize_patch
    )
    return TemplateChange(
        action=action,  # type: ignore[arg-type]  # protect | finalize
        api_version=kind_info(kind).api_version,
        kind=kind,
        namespace=NAMESPACE,
        name=name,
        owner=owner,
        patch=for_git(build(kind, name)),
        template=template({"app": name}) if live_template else None,
    )


def emitted(tmp: Path, changes: list[TemplateChange]) -> dict[str, bytes]:
    """Every file written, by path relative to ``tmp``."""
    emitter = Emitter(tmp)
    for c in changes:
        emitter.add(c)
    paths = emitter.write()
    assert paths == sorted(paths)
    assert all(p.is_file() for p in paths)
    return {str(p.relative_to(tmp)): p.read_bytes() for p in paths}


def documents(data: bytes) -> list[Any]:
    return list(yaml.safe_load_all(data))


# --- determinism -----------------------------------------------------------------------------


def all_changes() -> list[TemplateChange]:
    out = []
    for owner in [None, *OWNERS.values()]:
        for name in ("web", "api"):
            out += [
                change("protect", "Deployment", name, owner),
                change("finalize", "Deployment", name, owner),
            ]
        out.append(change("protect", "CronJob", "report", owner))
    return out


def test_the_same_changes_give_the_same_bytes_in_any_order(tmp_path: Path) -> None:
    changes = all_changes()
    first = emitted(tmp_path / "a", changes)
    shuffled = list(changes)
    random.Random(32).shuffle(shuffled)
    second = emitted(tmp_path / "b", shuffled)
    assert first == second
    third = emitted(tmp_path / "a", changes)  # written again over itself
    assert third == first


def test_no_time_stamp_or_absolute_path_in_any_file(tmp_path: Path) -> None:
    files = emitted(tmp_path, all_changes())
    for name, data in files.items():
        text = data.decode()
        assert MARKER not in text, name  # the restart marker (a time) never leaves the cluster
        assert str(tmp_path) not in text, name
        assert "resourceVersion" not in text, name


# --- the owner forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, {PATCHES_FILE, KUSTOMIZATION_ENTRY_FILE}),
        ("kustomization", {PATCHES_FILE, KUSTOMIZATION_ENTRY_FILE}),
        ("ambiguous", {PATCHES_FILE, KUSTOMIZATION_ENTRY_FILE}),
        ("helmrelease", {PATCHES_FILE, KUSTOMIZATION_ENTRY_FILE, HELMRELEASE_FILE}),
        ("argocd", {PATCHES_FILE, KUSTOMIZATION_ENTRY_FILE, APPLICATION_FILE, VALUES_FILE}),
        (
            "helm",
            {
                PATCHES_FILE,
                KUSTOMIZATION_ENTRY_FILE,
                VALUES_FILE,
                "helm-plugins/cloudtaser-patches/patches.yaml",
                "helm-plugins/cloudtaser-patches/plugin.yaml",
                "helm-plugins/cloudtaser-patches/render.sh",
            },
        ),
    ],
)
def test_every_owner_form_writes_its_files(
    tmp_path: Path, key: str | None, expected: set[str]
) -> None:
    owner = OWNERS[key] if key else None
    c = change("protect", owner=owner)
    files = emitted(tmp_path, [c, change("finalize", owner=owner)])
    slug = owner_slug(c)
    assert {str(Path(n).relative_to(slug)) for n in files} == expected
    for name, data in files.items():
        text = data.decode()
        first = text.splitlines()[0]
        assert first.startswith("#"), name
        if name.endswith(".yaml"):
            assert "holds no secret value" in text.lower(), name
            documents(data)  # every file parses


def test_the_kustomize_form_is_one_document_per_workload_and_its_entry(tmp_path: Path) -> None:
    owner = OWNERS["kustomization"]
    changes = [change("protect", name=n, owner=owner) for n in ("web", "api")]
    files = emitted(tmp_path, changes)
    slug = owner_slug(changes[0])
    assert slug == "flux-kustomization-flux-system-apps"
    docs = documents(files[f"{slug}/{PATCHES_FILE}"])
    assert [(d["kind"], d["metadata"]) for d in docs] == [
        ("Deployment", {"name": "api", "namespace": NAMESPACE}),
        ("Deployment", {"name": "web", "namespace": NAMESPACE}),
    ]
    tpl_meta = docs[1]["spec"]["template"]["metadata"]
    assert tpl_meta["labels"] == {ann.INJECT_LABEL: "true"}
    assert tpl_meta["annotations"][ann.SECRET_PATHS] == f"secret/data/{NAMESPACE}/web/web-db"
    assert ann.RESTARTED_AT not in tpl_meta["annotations"]
    assert documents(files[f"{slug}/{KUSTOMIZATION_ENTRY_FILE}"]) == [
        {"patches": [{"path": PATCHES_FILE}]}
    ]


def test_the_helmrelease_form_carries_each_patch_inline_with_its_target(tmp_path: Path) -> None:
    owner = OWNERS["helmrelease"]
    changes = [change("protect", owner=owner), change("finalize", owner=owner)]
    files = emitted(tmp_path, changes)
    slug = owner_slug(changes[0])
    (release,) = documents(files[f"{slug}/{HELMRELEASE_FILE}"])
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    assert release["kind"] == "HelmRelease"
    assert release["metadata"] == {"name": "web", "namespace": NAMESPACE}
    (renderer,) = release["spec"]["postRenderers"]
    patches = renderer["kustomize"]["patches"]
    plain = documents(files[f"{slug}/{PATCHES_FILE}"])
    assert [yaml.safe_load(p["patch"]) for p in patches] == plain
    assert all(p["target"] == {"kind": "Deployment", "name": "web"} for p in patches)
    assert "REPLACES" in files[f"{slug}/{HELMRELEASE_FILE}"].decode()


def test_the_argocd_form_is_the_applications_inline_patches_without_ignore_differences(
    tmp_path: Path,
) -> None:
    owner = OWNERS["argocd"]
    changes = [change("protect", owner=owner), change("finalize", owner=owner)]
    files = emitted(tmp_path, changes)
    slug = owner_slug(changes[0])
    (app,) = documents(files[f"{slug}/{APPLICATION_FILE}"])
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["metadata"] == {"name": "shop", "namespace": "argocd"}
    patches = app["spec"]["source"]["kustomize"]["patches"]
    assert [yaml.safe_load(p["patch"]) for p in patches] == documents(
        files[f"{slug}/{PATCHES_FILE}"]
    )
    assert "ignoreDifferences" not in app["spec"]
    assert "argo-cd#3698" in files[f"{slug}/{APPLICATION_FILE}"].decode()


def test_ignore_differences_only_for_a_change_that_still_sets_the_restart_marker(
    tmp_path: Path,
) -> None:
    owner = OWNERS["argocd"]
    raw = TemplateChange(
        action="protect",
        api_version="apps/v1",
        kind="Deployment",
        namespace=NAMESPACE,
        name="web",
        owner=owner,
        patch=protect_patch(),  # not passed through for_git: the marker is still there
    )
    files = emitted(tmp_path, [raw])
    (app,) = documents(files[f"{owner_slug(raw)}/{APPLICATION_FILE}"])
    assert app["spec"]["ignoreDifferences"] == [
        {
            "group": "apps",
            "kind": "Deployment",
            "name": "web",
            "namespace": NAMESPACE,
            "jsonPointers": ["/spec/template/metadata/annotations/cloudtaser.io~1restartedAt"],
        }
    ]


def test_the_helm_values_are_the_protect_labels_and_annotations(tmp_path: Path) -> None:
    owner = OWNERS["helm"]
    c = change("protect", owner=owner)
    files = emitted(tmp_path, [c, change("finalize", owner=owner)])
    values_bytes = files[f"{owner_slug(c)}/{VALUES_FILE}"]
    (values,) = documents(values_bytes)
    meta = c.patch["spec"]["template"]["metadata"]
    assert values == {"podAnnotations": meta["annotations"], "podLabels": meta["labels"]}
    text = values_bytes.decode()
    assert "podAnnotations and podLabels" in text  # the chart must expose them
    assert "finalize of Deployment shop/web cannot be written as values" in text
    assert "--post-renderer cloudtaser-patches" in text


def test_helm_values_refuse_workloads_that_need_different_annotations(tmp_path: Path) -> None:
    owner = OWNERS["helm"]
    changes = [
        change("protect", name="web", owner=owner),
        change("protect", name="api", owner=owner),
    ]
    files = emitted(tmp_path, changes)
    data = files[f"{owner_slug(changes[0])}/{VALUES_FILE}"]
    assert documents(data) == [{}]
    assert "need different annotations" in data.decode()


# --- owner names from the cluster ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/cron.d",
        "..",
        ".hidden",
        "a/b",
        "a\\b",
        "x\ny",
        "tab\there",
        "ü-nicode",
        "x" * 300,
        "",
    ],
)
def test_hostile_owner_names_stay_one_safe_file_name_inside_the_output(
    tmp_path: Path, name: str
) -> None:
    # constructed without validation, as a hand-edited plan loaded by a careless caller could
    owner = Owner(tool="helm", kind="Release", name=name, namespace="..", evidence="e")
    c = change("protect", owner=owner)
    slug = owner_slug(c)
    assert safe_segment(slug)
    assert len(slug) <= MAX_SEGMENT
    out = tmp_path / "out"
    files = emitted(out, [c])
    for rel in files:
        assert (out / rel).resolve().is_relative_to(out.resolve())
        assert rel.split("/")[0] == slug
    assert sorted(p.name for p in out.iterdir()) == [slug]
    # the name is in the comment headers and commands: it never breaks out of its line
    (values,) = documents(files[f"{slug}/{VALUES_FILE}"])
    assert set(values) == {"podAnnotations", "podLabels"}
    assert [d["kind"] for d in documents(files[f"{slug}/{PATCHES_FILE}"])] == ["Deployment"]


def test_an_owner_name_in_a_suggested_command_is_quoted_for_the_shell(tmp_path: Path) -> None:
    owner = Owner(
        tool="helm", kind="Release", name="web; rm -rf ~", namespace=NAMESPACE, evidence="e"
    )
    c = change("protect", owner=owner)
    text = emitted(tmp_path, [c])[f"{owner_slug(c)}/{VALUES_FILE}"].decode()
    assert "helm upgrade 'web; rm -rf ~' <chart> -n shop" in text
    assert "helm upgrade web; rm" not in text


def test_two_owners_that_differ_only_in_unsafe_characters_get_two_directories() -> None:
    slugs = {
        owner_slug(
            change("protect", owner=Owner(tool="helm", kind="Release", name=n, evidence="e"))
        )
        for n in ("a/b", "a\\b", "a_b", "a?b")
    }
    assert len(slugs) == 4


def test_a_valid_owner_keeps_its_readable_slug() -> None:
    assert owner_slug(change("protect", owner=OWNERS["helm"])) == "helm-release-shop-web"
    assert owner_slug(change("protect", owner=OWNERS["ambiguous"])) == "argocd-application-web"
    assert owner_slug(change("protect")) == UNOWNED


# --- where each kind keeps its template ------------------------------------------------------


def test_a_cronjob_patch_lands_in_the_job_template(tmp_path: Path) -> None:
    c = change("protect", "CronJob", "report", OWNERS["kustomization"])
    f = change("finalize", "CronJob", "report", OWNERS["kustomization"])
    files = emitted(tmp_path, [c, f])
    docs = documents(files[f"{owner_slug(c)}/{PATCHES_FILE}"])
    assert [d["apiVersion"] for d in docs] == ["batch/v1", "batch/v1"]
    for d in docs:
        assert set(d["spec"]) == {"jobTemplate"}
    assert docs[0]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"] == {
        ann.INJECT_LABEL: "true"
    }
    assert "volumes" in docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_a_rollout_protect_has_no_restart_field_and_its_finalize_writes_lists_whole(
    tmp_path: Path,
) -> None:
    owner = OWNERS["argocd"]
    p = change("protect", "Rollout", "web", owner)
    assert "restartAt" not in p.patch.get("spec", {})  # for_git dropped Argo Rollouts' restart
    assert protect_patch("Rollout")["spec"]["restartAt"] == MARKER  # ...which placed() had set
    with pytest.raises(OperationError, match="live pod template"):
        emitted(tmp_path / "x", [change("finalize", "Rollout", "web", owner)])
    f = change("finalize", "Rollout", "web", owner, live_template=True)
    files = emitted(tmp_path, [p, f])
    docs = documents(files[f"{owner_slug(p)}/{PATCHES_FILE}"])
    spec = docs[1]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    # kustomize replaces a custom resource's lists: they are written as they must end up
    assert container["env"] == [{"name": "WEB_MODE", "value": "production"}]
    assert container["image"] == "registry.example/web:1.0"
    assert spec["volumes"] == [
        {"name": "tls", "emptyDir": {"medium": "Memory"}},
        {"name": "cache", "emptyDir": {}},
    ]
    text = files[f"{owner_slug(p)}/{PATCHES_FILE}"].decode()
    assert "$patch" not in text
    assert "Rollout shop/web: a custom resource, whose lists kustomize replaces" in text


def test_finalize_deletes_env_entries_by_name_and_turns_the_secret_volume_into_memory(
    tmp_path: Path,
) -> None:
    f = change("finalize", owner=OWNERS["kustomization"])
    files = emitted(tmp_path, [f])
    (doc,) = documents(files[f"{owner_slug(f)}/{PATCHES_FILE}"])
    spec = doc["spec"]["template"]["spec"]
    assert spec["containers"] == [
        {
            "name": "web",
            "env": [
                {"name": "DB_PASSWORD", "$patch": "delete"},
                {"name": "DB_USER", "$patch": "delete"},
            ],
        }
    ]
    assert spec["volumes"] == [{"name": "tls", "secret": None, "emptyDir": {"medium": "Memory"}}]
    # a finalize alone: the header says not to replace the protect patches committed before
    assert "KEEP the protect patches" in files[f"{owner_slug(f)}/{PATCHES_FILE}"].decode()
    both = emitted(tmp_path / "both", [f, change("protect", owner=OWNERS["kustomization"])])
    assert "KEEP" not in both[f"{owner_slug(f)}/{PATCHES_FILE}"].decode()


# --- no Secret value -------------------------------------------------------------------------


def test_no_secret_value_reaches_any_file(tmp_path: Path) -> None:
    changes = [
        *all_changes(),
        change("finalize", "Rollout", "web", OWNERS["argocd"], live_template=True),
    ]
    files = emitted(tmp_path, changes)
    # the checks below can fail: the plan's Secrets hold the canary, the patches name them
    assert all(CANARY in v for data in SECRETS.values() for v in data.values())
    assert any(b"web-db" in data for data in files.values())
    for name, data in files.items():
        assert CANARY.encode() not in data, name
        assert base64.b64encode(CANARY.encode())[:16] not in data, name


def test_summary_is_one_line_per_owner(tmp_path: Path) -> None:
    changes = [
        change("protect", name="web", owner=OWNERS["kustomization"]),
        change("finalize", name="web", owner=OWNERS["kustomization"]),
        change("protect", name="api", owner=OWNERS["kustomization"]),
        change("protect", owner=None),
    ]
    flux_dir = tmp_path / "flux-kustomization-flux-system-apps"
    assert summary(changes, tmp_path) == [
        f"Flux Kustomization flux-system/apps: 2 workloads -> {flux_dir}",
        f"No owner: 1 workload -> {tmp_path / UNOWNED}",
    ]
    emitter = Emitter(tmp_path)
    for c in changes:
        emitter.add(copy.copy(c))
    assert emitter.summary() == summary(changes, tmp_path)


# --- finalize keeps protect's injection in Git ------------------------------------------------


def protected_template() -> dict[str, Any]:
    """The live template once Git's protect change is applied (what the patch set)."""
    tpl = template()
    meta = protect_patch("Deployment", "web")["spec"]["template"]["metadata"]
    tpl["metadata"]["labels"].update(meta["labels"])
    tpl["metadata"]["annotations"] = {
        **{k: v for k, v in meta["annotations"].items() if v is not None},
        "unrelated.example/keep-out": "x",
    }
    return tpl


def test_protection_is_the_live_inject_label_and_annotations_without_the_restart_marker() -> None:
    live = protected_template()
    assert ann.RESTARTED_AT in live["metadata"]["annotations"]  # so its removal can show
    kept = protection(live)
    assert kept is not None
    meta = kept["spec"]["template"]["metadata"]
    assert meta["labels"] == {ann.INJECT_LABEL: "true"}
    assert ann.RESTARTED_AT not in meta["annotations"]
    assert "unrelated.example/keep-out" not in meta["annotations"]
    expected = for_git(protect_patch("Deployment", "web"))["spec"]["template"]["metadata"]
    assert meta["annotations"] == {k: v for k, v in expected["annotations"].items() if v}
    assert protection(template()) is None  # not protected: nothing to keep


def test_a_finalize_with_the_rebuilt_protection_may_replace_protects_file(tmp_path: Path) -> None:
    owner = OWNERS["kustomization"]
    f = change("finalize", owner=owner)
    rebuilt = dataclasses.replace(
        f, action="protect", patch=protection(protected_template()) or {}, rebuilt=True
    )
    files = emitted(tmp_path, [f, rebuilt])
    text = files[f"{owner_slug(f)}/{PATCHES_FILE}"].decode()
    assert "KEEP the protect patches" not in text
    assert "protect (kept, from the live template): Deployment shop/web" in text
    assert "--pin-entrypoints" in text
    first, second = documents(text.encode())
    assert first["spec"]["template"]["metadata"]["labels"] == {ann.INJECT_LABEL: "true"}
    assert "env" in second["spec"]["template"]["spec"]["containers"][0]
