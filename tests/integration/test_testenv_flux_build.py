"""The Flux part of the test-bed build (tests/testenv/build-flux.sh): stamped with its versions
(helm-controller's the script's default),
CRDs next to the binaries, hooked into build-k8s.sh, and an artifact layer that is the same
bytes for the same manifests (a re-push of unchanged "Git" is not a new revision). The same for
the GitOps renderers (tests/testenv/build-gitops-tools.sh: helm, kustomize): hooked in, stamped
with the versions the script builds, and the binaries report them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.testenv.binaries import (
    FLUX_BINARIES,
    FLUX_CRDS,
    GITOPS_TOOLS,
    find_gitops_tools,
    flux_crd_dir,
    k8s_bin_dir,
)
from tests.testenv.oci import tar_gz

pytestmark = pytest.mark.integration

TESTENV = Path(__file__).resolve().parents[2] / "tests/testenv"


def test_flux_build_is_hooked_into_the_test_bed_build_and_has_no_early_pipeline() -> None:
    main = TESTENV.joinpath("build-k8s.sh").read_text()
    assert 'bash "$HERE/build-flux.sh"' in main
    code = [
        ln
        for ln in TESTENV.joinpath("build-flux.sh").read_text().splitlines()
        if not ln.lstrip().startswith("#")
    ]
    assert [ln for ln in code if re.search(r"\|\s*(head|grep -q|grep -m|sed q)", ln)] == []


def test_flux_binaries_and_crds_are_stamped_with_their_versions() -> None:
    bin_dir = k8s_bin_dir()
    stamp = bin_dir / ".complete-flux"
    if not stamp.is_file():
        pytest.skip(f"no Flux build in {bin_dir} (prebuilt binaries?); run `nox -s testenv`")
    fields = dict(f.split("=", 1) for f in stamp.read_text().split())
    assert fields["source-controller"] == fields["kustomize-controller"] == "v1.9.6"
    assert fields["helm-controller"] == _script_default("HELM_CTRL_V", "build-flux.sh")
    assert set(fields) == set(FLUX_BINARIES)  # a binary missing from the stamp: a stale cache
    for name in FLUX_BINARIES:
        assert os.access(bin_dir / name, os.X_OK), name
    for crd in FLUX_CRDS:
        assert (flux_crd_dir(bin_dir) / crd).is_file(), crd


def test_the_artifact_layer_is_reproducible() -> None:
    files = {"b.yaml": "kind: B\n", "a.yaml": "kind: A\n"}
    assert tar_gz(files) == tar_gz(dict(reversed(list(files.items()))))
    assert tar_gz(files) != tar_gz({**files, "a.yaml": "kind: A2\n"})


def test_gitops_tools_build_is_hooked_into_the_test_bed_build_and_has_no_early_pipeline() -> None:
    main = TESTENV.joinpath("build-k8s.sh").read_text()
    assert 'bash "$HERE/build-gitops-tools.sh"' in main
    code = [
        ln
        for ln in TESTENV.joinpath("build-gitops-tools.sh").read_text().splitlines()
        if not ln.lstrip().startswith("#")
    ]
    assert [ln for ln in code if re.search(r"\|\s*(head|grep -q|grep -m|sed q)", ln)] == []


def _script_default(name: str, script_name: str = "build-gitops-tools.sh") -> str:
    """``NAME=${CLOUDTASER_..._VERSION:-<default>}`` of a build script."""
    script = TESTENV.joinpath(script_name).read_text()
    match = re.search(rf"^{name}=\$\{{[A-Z_]+:-([^}}]+)\}}$", script, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_helm_and_kustomize_are_stamped_with_the_versions_the_script_builds() -> None:
    bin_dir = k8s_bin_dir()
    stamp = bin_dir / ".complete-gitops-tools"
    if not stamp.is_file():
        pytest.skip(f"no GitOps tools in {bin_dir} (prebuilt binaries?); run `nox -s testenv`")
    fields = dict(f.split("=", 1) for f in stamp.read_text().split())
    helm_v, kustomize_v = _script_default("HELM_V"), _script_default("KUSTOMIZE_V")
    assert fields == {"helm": helm_v, "kustomize": kustomize_v}
    tools = find_gitops_tools()
    assert set(tools) == set(GITOPS_TOOLS)
    # the binaries are those versions (helm built by `go install` reports major.minor only)
    kustomize = subprocess.run([str(tools["kustomize"]), "version"], capture_output=True,
                               text=True, check=True, timeout=30)  # fmt: skip
    assert kustomize.stdout.strip() == kustomize_v
    helm = subprocess.run([str(tools["helm"]), "version", "--template", "{{.Version}}"],
                          capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    assert helm_v.startswith(helm.stdout.strip()), (helm.stdout, helm_v)
    assert helm.stdout.strip().count(".") >= 1
