"""The test-bed build script: no SIGPIPE-prone pipeline, and the real-node binaries it stamps."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.testenv.binaries import k8s_bin_dir, k8s_version
from tests.testenv.realnode import NODE_BINARIES

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "tests/testenv/build-k8s.sh"


def _first_line_function() -> str:
    text = SCRIPT.read_text()
    match = re.search(r"^first_line\(\) \{.*?^\}", text, re.M | re.S)
    assert match, "first_line() not found in build-k8s.sh"
    return match.group(0)


def test_no_pipeline_in_the_build_ends_before_its_writer() -> None:
    # `cmd | head`, `| grep -q`, `| sed q` exit early: under pipefail the writer's SIGPIPE (141)
    # fails the build whenever it is still writing - which depends on timing.
    code = [ln for ln in SCRIPT.read_text().splitlines() if not ln.lstrip().startswith("#")]
    early = [ln for ln in code if re.search(r"\|\s*(head|grep -q|grep -m|sed -n 1p|sed q)", ln)]
    assert early == []


def test_first_line_survives_a_writer_that_is_still_writing() -> None:
    writer = "seq 1 2000000"  # far more than a pipe buffer: the writer is mid-write when head exits
    old = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {writer} | head -1 >/dev/null"], check=False
    )
    assert old.returncode == 141  # what a fresh machine hit with `etcd --version | head -1`
    new = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {_first_line_function()}\nfirst_line {writer}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (new.returncode, new.stdout) == (0, "1\n")


def test_node_binaries_are_stamped_separately_with_their_versions() -> None:
    bin_dir = k8s_bin_dir()
    stamp = bin_dir / ".complete-node"
    if not stamp.is_file():
        pytest.skip(f"no real-node build in {bin_dir} (prebuilt binaries?); run `nox -s testenv`")
    assert (bin_dir / ".complete").read_text().strip() == f"k8s=v{k8s_version()} kwok=v0.8.0"
    fields = dict(f.split("=", 1) for f in stamp.read_text().split())
    assert fields["kubelet"] == f"v{k8s_version()}"
    assert fields["containerd"] == "v2.4.2"
    for name in NODE_BINARIES:
        assert os.access(bin_dir / name, os.X_OK), name
    kubelet = subprocess.run(
        [str(bin_dir / "kubelet"), "--version"], capture_output=True, text=True, check=True
    )
    assert kubelet.stdout.strip() == f"Kubernetes v{k8s_version()}"
    containerd = subprocess.run(
        [str(bin_dir / "containerd"), "--version"], capture_output=True, text=True, check=True
    )
    assert " v2.4.2 " in containerd.stdout
