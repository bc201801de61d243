"""The Git flow's flags (``--emit``, ``--wait-for-git``, ``--deadline``, ``--live-patch-owned``)
refused before anything is touched, and ``plan status`` showing the workloads waiting for Git.
The flow itself runs against a real Flux: tests/integration/test_gitops_emit_flux.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtaser.cli import main
from tests.unit.test_plan import VALID

_PROTECT = ["target", "protect", "--plan", "/nonexistent.yaml", "--yes"]
_FINALIZE = ["target", "finalize", "--plan", "/nonexistent.yaml", "--yes"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([*_PROTECT, "--deadline", "5m"], "--deadline is the deadline of --wait-for-git"),
        ([*_FINALIZE, "--deadline", "5m"], "--deadline is the deadline of --wait-for-git"),
        ([*_PROTECT, "--reroll", "--emit", "out"], "--reroll restarts pods live"),
        ([*_PROTECT, "--reroll", "--wait-for-git"], "--reroll restarts pods live"),
        ([*_FINALIZE, "--delete-secrets", "--emit", "out"], "--delete-secrets needs the refer"),
        ([*_PROTECT, "--emit", "out", "--wait-for-git"], "not allowed with argument"),
        ([*_PROTECT, "--emit", "out", "--live-patch-owned"], "not allowed with argument"),
        ([*_FINALIZE, "--wait-for-git", "--live-patch-owned"], "not allowed with argument"),
    ],
)
def test_git_flow_flags_that_cannot_go_together_are_usage_errors(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_unprotect_has_no_git_flow_flags(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["target", "unprotect", "--plan", "/nonexistent.yaml", "--yes", "--emit", "out"]
    assert main(argv) == 2
    assert "unrecognized arguments: --emit" in capsys.readouterr().err


_WAITING = """\
        gitops:
          action: protect
          emittedAt: "2026-05-16T11:00:00Z"
          files:
            - gitops/flux-kustomization-flux-system-apps/cloudtaser-patches.yaml
            - gitops/flux-kustomization-flux-system-apps/kustomization-entry.yaml
"""


def _plan(tmp_path: Path, *, waiting: bool) -> Path:
    text = VALID.replace("        replicas: 3\n", "        replicas: 3\n" + _WAITING)
    assert (_WAITING in text) is True
    path = tmp_path / "plan.yaml"
    path.write_text(text if waiting else VALID)
    return path


def test_plan_status_lists_the_workloads_waiting_for_git(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(tmp_path, waiting=True)
    assert main(["plan", "status", str(plan), "--workloads"]) == 0
    out = capsys.readouterr().out
    assert "pending, waiting for Git" in out  # the workload line
    assert "waiting for Git: 1 workload(s)" in out
    assert "payments/Deployment/api" in out
    assert "gitops/flux-kustomization-flux-system-apps/cloudtaser-patches.yaml" in out
    assert f"cloudtaser target protect --plan {plan} --wait-for-git --yes" in out

    assert main(["plan", "status", str(plan), "--workloads", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (waiting,) = report["waitingForGit"]
    assert waiting["name"] == "api"
    assert waiting["action"] == "protect"
    assert waiting["emittedAt"] == "2026-05-16T11:00:00+00:00"
    assert len(waiting["files"]) == 2
    assert [w.get("waitingForGit") for w in report["workloads"]] == ["protect", None]


def test_plan_status_without_a_workload_waiting_for_git_is_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(tmp_path, waiting=False)
    assert main(["plan", "status", str(plan), "--workloads"]) == 0
    assert "waiting for Git" not in capsys.readouterr().out
    assert main(["plan", "status", str(plan), "-o", "json"]) == 0
    assert "waitingForGit" not in json.loads(capsys.readouterr().out)
