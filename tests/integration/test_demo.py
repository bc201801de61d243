"""The README's main job (`nox -s demo`) works end to end and never shows a secret value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]

pytestmark = [pytest.mark.integration]


def test_demo_runs_the_whole_workflow_and_stops_everything(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import demo  # tools/demo.py
    finally:
        sys.path.remove(str(ROOT / "tools"))
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py"), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "NO_COLOR": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "the app sees: {'DB_USER': '" in result.stdout
    assert "CLOUDTASER_* in its environment: []" in result.stdout
    assert "stopped the OpenBao dev server and the local cluster" in result.stdout
    values = [v for secrets in demo.SECRETS.values() for d in secrets.values() for v in d.values()]
    leaked = [v for v in values if v in output]
    assert not leaked, f"{len(leaked)} demo secret value(s) appear in the demo's output"
    plan = yaml.safe_load((workdir / "plan.yaml").read_text())
    statuses = [w["status"] for t in plan["tenants"] for w in t["workloads"]]
    assert statuses
    assert set(statuses) <= {"migrated", "skipped"}
    assert "migrated" in statuses
