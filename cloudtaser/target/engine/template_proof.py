"""Proof of injection for a workload whose template change starts no pod: a CronJob (its
next scheduled run creates the pods; protect never starts a run) and an Argo Rollout that no
controller reconciles. Nothing runs, so nothing can be proven on a pod: the proof is the
admission check on the **stored** template (:func:`cloudtaser.target.engine.admission.
check_admission`: a ``dryRun=All`` pod of the template the object now carries comes back
injected; the webhook mutates it, nothing is stored or started). The real run is proven when
it happens: ``target audit`` reads its pods (``docs/protect.md``, "CronJobs, Jobs and Argo
Rollouts").

Every other workload is proven on the pods of its new revision
(:mod:`cloudtaser.target.engine.injection`); which case applies is the rollout rule's word
(:attr:`cloudtaser.target.rollout.RolloutState.rolled`), not a kind test here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudtaser.target.engine.admission import check_admission
from cloudtaser.target.engine.core import Verified
from cloudtaser.target.engine.injection import prove, verify_workload
from cloudtaser.target.kube.kinds import pod_template
from cloudtaser.target.kube.workloads import WorkloadAPI, WorkloadRef
from cloudtaser.target.rollout import rollout_status

__all__ = ["NEXT_RUN", "live_proof", "verify_injection"]

#: What a template proof leaves to the next run (said in the plan's history).
NEXT_RUN = "no pod ran: the next run proves it on its pods (`cloudtaser target audit` shows them)"


def _template_proof(cluster: WorkloadAPI, ref: WorkloadRef, obj: Mapping[str, Any]) -> Verified:
    state = rollout_status(ref.kind, obj)
    answer = check_admission(cluster, ref, pod_template(ref.kind, obj))
    if not answer.admitted:
        return Verified(False, f"injection not proven: {answer.reason}")
    return Verified(True, f"{state.message}; {answer.reason} of the stored template; {NEXT_RUN}")


def _unrolled(ref: WorkloadRef, obj: Mapping[str, Any]) -> bool:
    return not rollout_status(ref.kind, obj).rolled


def verify_injection(cluster: WorkloadAPI, ref: WorkloadRef) -> Verified:
    """The engine's check after a patch: the new pods proven injected, or, when the change
    starts no pod (a CronJob, a Rollout without a controller), the stored template."""
    obj = cluster.get(ref)
    if obj is None:
        return Verified(False, f"injection not proven: {ref} was deleted")
    if _unrolled(ref, obj):
        return _template_proof(cluster, ref, obj)
    return verify_workload(cluster, ref)


def live_proof(cluster: WorkloadAPI, ref: WorkloadRef, obj: Mapping[str, Any]) -> Verified:
    """finalize's check before it removes anything: the live pods proven injected; for a
    workload that runs no pod from its template yet (a CronJob between runs, a Rollout
    without a controller), its stored template (the dry-run pod)."""
    if _unrolled(ref, obj):
        return _template_proof(cluster, ref, obj)
    proof = prove(cluster, ref, obj)
    return Verified(proof.proven, proof.message())
