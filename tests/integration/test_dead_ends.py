"""Issue 34, no dead ends: ``protect --reroll``, a named workload a step cannot act on, and the
separate question before each irreversible Secret delete (``finalize --interactive
--delete-secrets``, driven through a pseudo-terminal), against a real API server with
controllers and kwok.

As in tests/integration/test_lifecycle.py there is no injector here: "injected" workloads are
created with their pod template already in the injected shape; the re-roll of a workload
protected before the injector existed is shown on the real node
(tests/integration/test_lifecycle_realnode.py).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lightkube.resources.core_v1 import Secret

from tests.integration.source_helpers import run_cli
from tests.integration.test_lifecycle import (
    CANARY,
    _app,
    _finalize,
    _plan,
    _protect,
    _setup,
    _workload,
)
from tests.integration.test_protect import REPO, _env, _owned_count
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer

REROLL = "cloudtaser target protect --reroll"


# -- a named workload a step cannot act on -----------------------------------------------------


def test_finalize_of_a_named_pending_workload_exits_1_saying_protect_comes_first(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _workload(plan, "web").effective_status == "pending"
    before, app = plan.read_text(), _app(kube_client, namespace, "web")
    assert any("secretKeyRef" in str(e.get("valueFrom")) for e in app["env"])

    result = _finalize(cluster, plan, "--workload", "Deployment/web")

    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "still pending: protect comes first" in text
    assert "cloudtaser target protect --workload" in text
    assert plan.read_text() == before
    assert _app(kube_client, namespace, "web") == app


def test_protect_of_a_named_migrated_workload_not_injected_names_the_reroll(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["plain"], injected=False)
    plan = _plan(tmp_path / "plan.yaml", namespace, ["plain"])
    first = _protect(cluster, plan, "--no-verify-injection")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _workload(plan, "plain").effective_status == "migrated"
    revisions = _owned_count(kube_client, "Deployment", namespace, "plain")

    result = _protect(cluster, plan, "--workload", "Deployment/plain")

    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "already migrated, but injection not proven" in text
    assert REROLL in text
    assert _owned_count(kube_client, "Deployment", namespace, "plain") == revisions
    assert _workload(plan, "plain").effective_status == "migrated"  # not recorded pending


def test_protect_of_a_named_proven_workload_says_so_and_names_finalize(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0

    result = _protect(cluster, plan, "--workload", "Deployment/web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "next: `cloudtaser target finalize`" in result.stdout + result.stderr


# -- protect --reroll --------------------------------------------------------------------------


def test_reroll_without_an_injector_is_refused_before_any_restart(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    """Without an injector a re-roll could only restart the pods into the same uninjected
    state: the admission check refuses it before any patch, and the plan keeps what it
    recorded (on the real node the same command restarts and proves the pods injected:
    test_lifecycle_realnode.py)."""
    _setup(kube_client, namespace, ["plain"], injected=False)
    plan = _plan(tmp_path / "plan.yaml", namespace, ["plain"])
    assert _protect(cluster, plan, "--no-verify-injection").returncode == 0
    assert _workload(plan, "plain").effective_status == "migrated"
    revisions = _owned_count(kube_client, "Deployment", namespace, "plain")

    result = _protect(cluster, plan, "--reroll")

    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # refused
    assert "admission check failed, nothing was changed" in output
    assert "the injector is not installed" in output
    assert _owned_count(kube_client, "Deployment", namespace, "plain") == revisions  # no restart
    assert _workload(plan, "plain").effective_status == "migrated"  # the plan is left alone


def test_reroll_leaves_a_workload_whose_pods_are_proven_injected_alone(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    revisions = _owned_count(kube_client, "Deployment", namespace, "web")
    history = len(_workload(plan, "web").history)

    result = _protect(cluster, plan, "--reroll")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "not re-rolled: injection proven on 2 pod(s)" in result.stdout + result.stderr
    assert _owned_count(kube_client, "Deployment", namespace, "web") == revisions
    assert len(_workload(plan, "web").history) == history


# -- the separate question before each irreversible delete -------------------------------------


def _in_a_terminal(
    argv: list[str], answers: list[tuple[str, str]], timeout: float = 240
) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, stdout and stderr; each time the next
    ``(marker, answer)`` marker appears in the output, type the answer."""
    main, child = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudtaser", *argv],
        stdin=child, stdout=child, stderr=child, cwd=REPO, env=_env(), start_new_session=True,
    )  # fmt: skip
    os.close(child)
    out, searched, pending = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            text = out.decode(errors="replace")
            while pending and pending[0][0] in text[searched:]:
                marker, answer = pending.pop(0)
                searched = text.index(marker, searched) + len(marker)
                os.write(main, answer.encode())
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    text = out.decode(errors="replace")
    assert not pending, f"never asked {pending[0][0]!r}:\n{text}"
    return code, text


def test_interactive_delete_secrets_asks_before_each_delete_and_enter_keeps_it(
    cluster: Cluster, kube_client: Any, namespace: str, openbao: BaoServer, tmp_path: Path
) -> None:
    _setup(kube_client, namespace, ["web"])
    plan = _plan(tmp_path / "plan.yaml", namespace, ["web"])
    assert _protect(cluster, plan).returncode == 0
    for name, pairs in (("db", ["password=v", "username=v"]), ("api", ["token=v"])):
        openbao.bao("kv", "put", f"secret/{namespace}/{name}", *pairs)
    report = tmp_path / "verified.json"
    attest = run_cli(openbao, "source", "verify-plan", str(plan), "--attest", str(report))
    assert attest.returncode == 0, attest.stdout + attest.stderr
    # both Secrets exist, so the checks below can fail
    api_uid = kube_client.get(Secret, "api", namespace=namespace).metadata.uid
    assert kube_client.get(Secret, "db", namespace=namespace).metadata.uid

    code, text = _in_a_terminal(
        ["target", "finalize", "--plan", str(plan), "--poll-interval", "200ms",
         "--timeout", "90s", "--interactive", "--delete-secrets",
         "--require-verified", str(report), "--kubeconfig", str(cluster.kubeconfig)],
        [
            (f"finalize Deployment {namespace}/web?", "y\n"),
            (f"DELETE Secret {namespace}/api (keys: token)?", "\n"),  # Enter: the default, No
            (f"DELETE Secret {namespace}/db (keys: password, username)?", "y\n"),
        ],
    )  # fmt: skip

    assert code == 0, text
    assert CANARY not in text
    assert "[y]es / [N]o (default, keeps it)" in text
    assert f"Secret {namespace}/api: kept (answered no)" in text
    assert kube_client.get(Secret, "api", namespace=namespace).metadata.uid == api_uid
    names = {s.metadata.name for s in kube_client.list(Secret, namespace=namespace)}
    assert "db" not in names
    assert {"api", "other"} <= names
    assert _workload(plan, "web").finalized_at is not None
