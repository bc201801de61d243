"""The runtime image is reproducible: the same source gives the same index digest twice.

The second build uses a fresh, empty Go build cache in another directory, so nothing is
reused: both binaries (linux/amd64 and linux/arm64) and the OCI layout are made from scratch.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.runtime_binary import REPO, go_binary, go_build


def _image(tmp: Path, *, fresh_cache: bool) -> tuple[str, dict[str, bytes]]:
    extra = {"GOCACHE": str(tmp / "gocache")} if fresh_cache else {}
    bins = {
        arch: go_build(tmp / arch / "cloudtaser-runtime", arch=arch, extra_env=extra)
        for arch in ("amd64", "arm64")
    }
    out = subprocess.run(
        [go_binary(), "run", "./tools/build-image", "-out", str(tmp / "image"),
         *(f"{a}={p}" for a, p in bins.items())],
        cwd=REPO / "runtime", check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip(), {a: p.read_bytes() for a, p in bins.items()}


def test_the_image_is_reproducible(tmp_path: Path) -> None:
    first, bins_a = _image(tmp_path / "a", fresh_cache=False)
    second, bins_b = _image(tmp_path / "b", fresh_cache=True)
    assert bins_a == bins_b, "the binaries differ between builds"
    assert first == second
    assert first.startswith("sha256:")
    layout = tmp_path / "a" / "image"
    top = json.loads((layout / "index.json").read_text())
    assert top["manifests"][0]["digest"] == first
    index = json.loads((layout / "blobs" / "sha256" / first.removeprefix("sha256:")).read_bytes())
    platforms = [m["platform"] for m in index["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    for arch in ("amd64", "arm64"):
        assert len(bins_a[arch]) <= 10 * 1024 * 1024
