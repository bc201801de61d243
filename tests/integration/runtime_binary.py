"""The Go runtime binary for integration tests: ``CLOUDTASER_RUNTIME_BIN`` if set, else built
once per test session from ``runtime/`` (static, as ``nox -s runtime`` builds it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.testenv.binaries import missing

REPO = Path(__file__).resolve().parents[2]
_BUILT: dict[str, str] = {}


def go_binary() -> str:
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if not go:
        missing("Go >= 1.26 is needed to build the runtime (not on PATH or in /usr/local/go/bin)")
    return go


def go_build(out: Path, *, arch: str = "amd64", extra_env: dict[str, str] | None = None) -> Path:
    """``go build`` of cmd/cloudtaser-runtime exactly as ``nox -s runtime`` does."""
    env = {**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": arch, **(extra_env or {})}
    subprocess.run(
        [go_binary(), "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=",
         "-o", str(out), "./cmd/cloudtaser-runtime"],
        cwd=REPO / "runtime", env=env, check=True, capture_output=True,
    )  # fmt: skip
    return out


def runtime_binary() -> str:
    given = os.environ.get("CLOUDTASER_RUNTIME_BIN")
    if given:
        return given
    if "path" not in _BUILT:
        out = Path(tempfile.mkdtemp(prefix="ct-runtime-")) / "cloudtaser-runtime"
        _BUILT["path"] = str(go_build(out))
    return _BUILT["path"]
