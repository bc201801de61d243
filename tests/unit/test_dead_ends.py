"""Issue 34, no dead ends, the parts without a cluster: which workloads each step takes on
(a named one is never passed over), what it says comes first, the delete question's
default, and how uninstall names a workload that still opts in. The cluster behaviour is in
tests/integration/test_dead_ends.py, test_install.py and test_lifecycle_realnode.py."""

from __future__ import annotations

import io

import pytest

from cloudtaser.cli import lifecycle_cmds
from cloudtaser.plan import Workload
from cloudtaser.plan.model import WorkloadStatus
from cloudtaser.target.finalize.step import FinalizeStep
from cloudtaser.target.install.uninstall import OptedIn
from cloudtaser.target.kube.workloads import WorkloadRef
from cloudtaser.target.protect import ProtectStep, UnprotectStep

VAULT = "https://bao.example:8200"
STATUSES = (WorkloadStatus.PENDING, WorkloadStatus.MIGRATED, WorkloadStatus.SKIPPED)


def _workload(status: WorkloadStatus) -> Workload:
    return Workload(kind="Deployment", name="web", secrets=[], status=status)


def _wanted(step: object) -> set[WorkloadStatus]:
    return {s for s in STATUSES if step.wanted(_workload(s))}  # type: ignore[attr-defined]


def test_a_named_workload_is_taken_on_by_every_step_so_it_is_never_passed_over() -> None:
    for step in (
        ProtectStep(VAULT, named=True),
        ProtectStep(VAULT, named=True, reroll=True),
        UnprotectStep(named=True),
        FinalizeStep(named=True),
    ):
        assert _wanted(step) == set(STATUSES), step


def test_without_names_each_step_takes_on_what_it_can_act_on() -> None:
    assert _wanted(ProtectStep(VAULT)) == {WorkloadStatus.PENDING}
    assert _wanted(ProtectStep(VAULT, reroll=True)) == {
        WorkloadStatus.PENDING,
        WorkloadStatus.MIGRATED,
    }
    assert _wanted(UnprotectStep()) == {WorkloadStatus.PENDING, WorkloadStatus.MIGRATED}
    assert _wanted(FinalizeStep()) == {WorkloadStatus.MIGRATED}


def test_reroll_never_records_a_refusal_or_a_no_as_a_status_change() -> None:
    step = ProtectStep(VAULT, reroll=True, verify_injection=False)
    assert step.records_refusals is False
    assert step.declined_status is None
    assert step.verify_injection is True  # a re-roll always proves
    assert ProtectStep(VAULT).declined_status == WorkloadStatus.SKIPPED


def test_finalize_names_the_step_that_comes_first() -> None:
    ref = WorkloadRef(tenant="t", namespace="ns", kind="Deployment", name="web")
    step = FinalizeStep(named=True)
    pending = step._comes_first(_workload(WorkloadStatus.PENDING), ref)
    assert pending is not None
    assert "cloudtaser target protect --workload ns/Deployment/web" in pending
    skipped = step._comes_first(_workload(WorkloadStatus.SKIPPED), ref)
    assert skipped is not None
    assert "plan set-status PLAN --status pending" in skipped
    assert step._comes_first(_workload(WorkloadStatus.MIGRATED), ref) is None


@pytest.mark.parametrize(
    ("typed", "deletes"),
    [("\n", False), ("", False), ("n\n", False), ("yes please\n", False), ("y\n", True),
     ("YES\n", True)],
)  # fmt: skip
def test_the_delete_question_defaults_to_no(
    typed: str, deletes: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert lifecycle_cmds._confirm_delete("ns", "db", ("password", "username")) is deletes
    err = capsys.readouterr().err
    assert "DELETE Secret ns/db (keys: password, username)?" in err
    assert "[N]o (default, keeps it)" in err


def test_uninstall_says_what_the_next_pods_of_an_opted_in_workload_lack() -> None:
    finalized = OptedIn(namespace="a", kind="Deployment", name="api", finalized=True)
    protected = OptedIn(namespace="a", kind="StatefulSet", name="db", finalized=False)
    assert (
        str(finalized)
        == "Deployment a/api (finalized: its next pods would start with no secret at all)"
    )
    assert "StatefulSet a/db (protected: its next pods would start unwrapped" in str(protected)
