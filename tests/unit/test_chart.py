"""The Helm chart ``charts/cloudtaser-runtime`` renders exactly ``target install --print``.

One source of truth: the objects are :func:`cloudtaser.target.install.manifests.build_objects`;
the chart is checked against them here with the real ``helm template`` (v4, built from the Go
module proxy by ``tests/testenv/build-gitops-tools.sh``) over a matrix of settings, the chart's
values coming from ``target install --print-helm-values`` for the same flags. What may differ,
and why (nothing else is normalised):

* ``app.kubernetes.io/managed-by``: ``Helm`` in the chart (``helm install`` sets it on every
  object of a release anyway; it is also how ``target uninstall`` tells a Helm install apart
  and leaves it alone) instead of ``cloudtaser``;
* the Namespace's ``cloudtaser.io/created-by: cloudtaser target install`` annotation: a chart's
  Namespace was not created by ``target install`` (``uninstall`` deletes only a namespace
  carrying it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtaser import __version__
from cloudtaser.cli import main
from cloudtaser.target.install import chart
from cloudtaser.target.install.manifests import CREATED_ANNOTATION, LABELS, NAME, InstallOptions
from tests.testenv.binaries import find_gitops_tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / chart.CHART_NAME
MANAGED_BY = "app.kubernetes.io/managed-by"
BASE = ["--image", "registry.corp/cloudtaser-runtime:0.1.0", "--audience", "openbao",
        "--allowed-vault-address", "https://vault.corp:8200"]  # fmt: skip

#: (namespace, flags): every flag of install, each in at least one case.
MATRIX: dict[str, tuple[str, list[str]]] = {
    "minimal": ("cloudtaser-system", []),
    "everything-service-mode": (
        "ct-fleet",
        ["--allowed-vault-address", "http://openbao.vault.svc:8200/", "--replicas", "1",
         "--mirror", "docker.io=registry.corp:5000", "--mirror", "ghcr.io=mirror.corp/ghcr",
         "--read-pull-secrets", "--timeout-seconds", "5", "--cert-validity", "1h",
         "--default-vault-address", "http://openbao.vault.svc:8200/",
         "--default-auth-path", "/auth/k8s-prod/", "--default-auth-method", "jwt",
         "--default-vault-namespace", "team-a", "--jwt-token-expiration", "4294967296"],
    ),
    "url-mode-ipv4": (
        "ct-url",
        ["--webhook-url", "https://127.0.0.1:9443/mutate", "--kube-api", "10.0.0.1:6443",
         "--replicas", "3", "--default-auth-method", "kubernetes"],
    ),
    "url-mode-hostname": (
        "ct-host",
        ["--webhook-url", "https://injector.corp:8443/hook", "--kube-api", "[fd00::1]:6443",
         "--jwt-token-expiration", "900", "--default-vault-namespace", "ns/child"],
    ),
    "url-mode-ipv6-digest": (
        "ct-v6",
        ["--image", "registry.corp/rt@sha256:" + "a" * 64,
         "--webhook-url", "https://[::1]:9443/mutate"],
    ),
}  # fmt: skip


def _cli(argv: list[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, out.getvalue() + err.getvalue()
    return out.getvalue()


def _helm() -> Path:
    return find_gitops_tools()["helm"]


def _template(namespace: str, values: str, tmp: Path, *extra: str) -> list[dict[str, Any]]:
    path = tmp / "values.yaml"
    path.write_text(values)
    run = subprocess.run(
        [str(_helm()), "template", "cloudtaser", str(CHART), "--namespace", namespace,
         "--values", str(path), *extra],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def _normalised(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the two documented differences taken out (the module docstring)."""
    obj = json.loads(json.dumps(obj))
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata")):
        if meta and MANAGED_BY in meta.get("labels", {}):
            meta["labels"][MANAGED_BY] = "<managed-by>"
    if obj["kind"] == "Namespace":
        annotations = obj["metadata"].pop("annotations", {})
        annotations.pop(CREATED_ANNOTATION, None)
        if annotations:
            obj["metadata"]["annotations"] = annotations
    return obj


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keyed = {f"{o['kind']}/{o['metadata']['name']}": _normalised(o) for o in objects}
    assert len(keyed) == len(objects), "two objects of the same kind and name"
    return keyed


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_helm_template_renders_exactly_the_objects_of_install_print(
    case: str, tmp_path: Path
) -> None:
    namespace, flags = MATRIX[case]
    argv = ["target", "install", *BASE, "--namespace", namespace, *flags]
    printed = list(yaml.safe_load_all(_cli([*argv, "--print"])))
    values = _cli([*argv, "--print-helm-values"])
    rendered = _template(namespace, values, tmp_path, "--set", "createNamespace=true")
    want, got = _by_kind(printed), _by_kind(rendered)
    assert sorted(got) == sorted(want)
    for key, obj in want.items():
        assert got[key] == obj, key
    # the differences normalised above are exactly the documented ones
    assert {o["metadata"]["labels"][MANAGED_BY] for o in rendered} == {chart.HELM_MANAGED_BY}
    assert {o["metadata"]["labels"][MANAGED_BY] for o in printed} == {LABELS[MANAGED_BY]}


def test_without_create_namespace_the_chart_leaves_the_namespace_to_helm(tmp_path: Path) -> None:
    argv = ["target", "install", *BASE, "--print-helm-values"]
    rendered = _template("cloudtaser-system", _cli(argv), tmp_path)
    assert "Namespace" not in {o["kind"] for o in rendered}
    assert {o["metadata"].get("namespace", "cloudtaser-system") for o in rendered} == {
        "cloudtaser-system"
    }


def test_the_chart_never_renders_the_cabundle_the_injector_publishes(tmp_path: Path) -> None:
    for namespace, flags in MATRIX.values():
        argv = ["target", "install", *BASE, "--namespace", namespace, *flags]
        rendered = _template(namespace, _cli([*argv, "--print-helm-values"]), tmp_path)
        (mwc,) = [o for o in rendered if o["kind"] == "MutatingWebhookConfiguration"]
        assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]


def test_the_chart_values_are_the_keys_print_helm_values_writes() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    opts = InstallOptions(image="r/i:1", allowed_vault_addresses=("https://v:8200",),
                          audience="a").validated()  # fmt: skip
    written = chart.helm_values(opts)
    assert set(defaults) == set(written) | {"createNamespace"}
    assert set(schema["properties"]) == set(defaults)
    assert set(defaults["defaults"]) == set(written["defaults"])


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"audience": "a", "allowedVaultAddresses": ["https://v:8200"]}, "image is required"),
        ({"image": "r/i:1", "audience": "a"}, "allowedVaultAddresses needs"),
        ({"image": "r/i:1", "audience": "a", "allowedVaultAddresses": ["https://v:8200"],
          "replicas": 0}, "replicas"),
        ({"image": "r/i:1", "audience": "a", "allowedVaultAddresses": ["https://v:8200"],
          "unknownKey": 1}, "unknownKey"),
    ],
)  # fmt: skip
def test_helm_refuses_values_install_would_refuse(
    values: dict[str, Any], needle: str, tmp_path: Path
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    run = subprocess.run(
        [str(_helm()), "template", "cloudtaser", str(CHART), "--values", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert needle in run.stderr


def test_print_argocd_ignore_names_only_the_cabundle_of_the_injectors_configuration() -> None:
    (rule,) = yaml.safe_load(_cli(["target", "install", "--print-argocd-ignore"]))[
        "ignoreDifferences"
    ]
    assert rule == {
        "group": "admissionregistration.k8s.io",
        "kind": "MutatingWebhookConfiguration",
        "name": NAME,
        "jsonPointers": ["/webhooks/0/clientConfig/caBundle"],
    }
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert chart.CA_BUNDLE_POINTER in notes
    assert "RespectIgnoreDifferences=true" in notes


def _package(dest: Path, epoch: str | None) -> bytes:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env.update(HELM_CACHE_HOME=str(dest / "c"), HELM_CONFIG_HOME=str(dest / "f"),
               HELM_DATA_HOME=str(dest / "d"))  # fmt: skip
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    subprocess.run([str(_helm()), "package", str(CHART), "--destination", str(dest)],
                   check=True, capture_output=True, env=env, timeout=60)  # fmt: skip
    (tgz,) = dest.glob(f"{chart.CHART_NAME}-*.tgz")
    return tgz.read_bytes()


def test_helm_package_is_byte_reproducible_with_source_date_epoch(tmp_path: Path) -> None:
    """The release recipe (docs/gitops-install.md): with SOURCE_DATE_EPOCH the archive's bytes
    depend on the chart's content only; without it, on the files' modification times."""
    first = _package(tmp_path / "a", "1700000000")
    for path in CHART.rglob("*"):  # new modification times, same content
        os.utime(path, (time.time() + 5, time.time() + 5))
    assert _package(tmp_path / "b", "1700000000") == first
    assert _package(tmp_path / "c", None) != first  # the finding: not reproducible by default


def test_the_chart_is_released_with_the_runtime_version() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["name"] == chart.CHART_NAME
    assert meta["appVersion"] == meta["version"] == __version__


def test_helm_lint_passes_on_install_written_values(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(_cli(["target", "install", *BASE, "--print-helm-values"]))
    run = subprocess.run(
        [str(_helm()), "lint", "--strict", str(CHART), "--values", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
