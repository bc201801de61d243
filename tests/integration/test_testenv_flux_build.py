"""The Flux part of the test-bed build (tests/testenv/build-flux.sh): stamped with its versions,
CRDs next to the binaries, hooked into build-k8s.sh, and an artifact layer that is the same
bytes for the same manifests (a re-push of unchanged "Git" is not a new revision)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.testenv.binaries import FLUX_BINARIES, FLUX_CRDS, flux_crd_dir, k8s_bin_dir
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
    for name in FLUX_BINARIES:
        assert os.access(bin_dir / name, os.X_OK), name
    for crd in FLUX_CRDS:
        assert (flux_crd_dir(bin_dir) / crd).is_file(), crd


def test_the_artifact_layer_is_reproducible() -> None:
    files = {"b.yaml": "kind: B\n", "a.yaml": "kind: A\n"}
    assert tar_gz(files) == tar_gz(dict(reversed(list(files.items()))))
    assert tar_gz(files) != tar_gz({**files, "a.yaml": "kind: A2\n"})
