"""Secret volumes through the whole lifecycle on a real API server with controllers and kwok:
discover reads them (key names and binary marks, never a value), protect writes
``cloudtaser.io/secret-files`` in its one patch and proves the files report, finalize turns the
volumes into memory volumes (and the reference scan stops seeing the Secret), unprotect puts
the sources back exactly, ``--delete-secrets`` deletes such a Secret only with the proof.

kwok pods run nothing and there is no injector here (as in tests/integration/test_lifecycle.py):
the templates are created in the injected shape, init containers ``cloudtaser-init`` and
``cloudtaser-files`` included, and since kwok writes exit codes but no termination message, a
reporter thread writes the report the ``cloudtaser-files`` init container would (volume names
and file counts, from the pod's own annotation). The runtime itself renders files on the real
node (tests/integration/test_secret_files_realnode.py, test_secret_files_lifecycle_realnode.py).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import PatchType

from cloudtaser import contract
from cloudtaser import plan as planlib
from cloudtaser.target.references.scan import object_uses
from tests.integration.source_helpers import run_cli
from tests.integration.test_lifecycle import _finalize, _protect, _run
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer
from tests.testenv.workloads import wait_rollout

CANARY = "k8s-secret-canary-5521"  # the value test_lifecycle._run refuses to see in any output
KEYSTORE = b"\xfe\xed\xfe\xed\x00\x00\x00\x02" + CANARY.encode()  # binary: not UTF-8


def _secret(client: Any, namespace: str, name: str, data: dict[str, bytes]) -> None:
    client.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
        )
    )


def _template() -> dict[str, Any]:
    """A pod template in the injected shape reading two Secret volumes: ``certs`` (items,
    defaultMode, a per-file mode, a binary keystore; two containers and an init container) and
    ``config`` (an all-secret projected volume mounted with ``subPath``)."""
    wrapped = [contract.WRAPPER_PATH, "wrap", "--", "/app"]
    return {
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "initContainers": [
                {"name": contract.INIT_CONTAINER, "image": "busybox", "command": ["/install"]},
                {"name": contract.FILES_INIT_CONTAINER, "image": "busybox", "command": ["/files"]},
                {
                    "name": "wait",
                    "image": "busybox",
                    "volumeMounts": [{"name": "certs", "mountPath": "/init-certs"}],
                },
            ],
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "command": wrapped,
                    "volumeMounts": [
                        {"name": "certs", "mountPath": "/etc/tls", "readOnly": True},
                        {"name": "config", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
                    ],
                },
                {
                    "name": "sidecar",
                    "image": "busybox",
                    "command": wrapped,
                    "volumeMounts": [{"name": "certs", "mountPath": "/certs"}],
                },
            ],
            "volumes": [
                {
                    "name": "certs",
                    "secret": {
                        "secretName": "tls",
                        "defaultMode": 0o440,
                        "items": [
                            {"key": "tls.crt", "path": "tls.crt"},
                            {"key": "tls.key", "path": "private/tls.key", "mode": 0o400},
                            {"key": "keystore.jks", "path": "keystore.jks"},
                        ],
                    },
                },
                {
                    "name": "config",
                    "projected": {
                        "sources": [
                            {
                                "secret": {
                                    "name": "config",
                                    "items": [{"key": "app.conf", "path": "app.conf"}],
                                }
                            }
                        ]
                    },
                },
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }


def _setup(client: Any, namespace: str) -> None:
    _secret(
        client,
        namespace,
        "tls",
        {"tls.crt": CANARY.encode(), "tls.key": CANARY.encode(), "keystore.jks": KEYSTORE},
    )
    _secret(client, namespace, "config", {"app.conf": f"password={CANARY}".encode()})
    client.create(
        codecs.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {
                    "replicas": 2,
                    # the rollout completes only after the reporter has written the report
                    "minReadySeconds": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": _template(),
                },
            }
        )
    )
    wait_rollout(client, "Deployment", namespace, "web", timeout=90)


def _report(pod: Any) -> str | None:
    """The report ``cloudtaser-files`` would write for ``pod`` (names and counts only)."""
    value = (pod.metadata.annotations or {}).get(contract.SECRET_FILES)
    if not value:
        return None
    volumes = contract.parse_secret_files(value)
    counts = [{"volume": v["volume"], "files": len(v["files"])} for v in volumes]
    total = sum(c["files"] for c in counts)
    return json.dumps({"formatVersion": 1, "files": total, "volumes": counts})


@contextlib.contextmanager
def _reporter(client: Any, namespace: str) -> Iterator[None]:
    """Write the files report into every terminated ``cloudtaser-files`` status that lacks it
    (what the kubelet copies from the init container's /dev/termination-log)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.2):
            try:
                for pod in client.list(Pod, namespace=namespace):
                    message = _report(pod)
                    statuses = (pod.status and pod.status.initContainerStatuses) or []
                    if message is None or not statuses:
                        continue
                    raw = [s.to_dict() for s in statuses]
                    files = next(
                        (s for s in raw if s["name"] == contract.FILES_INIT_CONTAINER), None
                    )
                    term = ((files or {}).get("state") or {}).get("terminated")
                    if not term or term.get("message"):
                        continue
                    term["message"] = message
                    client.patch(
                        Pod.Status,
                        pod.metadata.name,
                        {"status": {"initContainerStatuses": raw}},
                        namespace=namespace,
                        patch_type=PatchType.MERGE,
                    )
            except Exception:  # the next round tries again
                pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _discover(cluster: Cluster, namespace: str, plan: Path) -> planlib.Workload:
    result = _run(
        cluster, "target", "discover", "-n", namespace, "--name", "files",
        "--output-plan", str(plan),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert CANARY not in plan.read_text()
    (pair,) = list(planlib.load(plan).iter_workloads())
    return pair[1]


def _deployment(client: Any, namespace: str) -> dict[str, Any]:
    return dict(client.get(Deployment, "web", namespace=namespace).to_dict())


def _volumes(client: Any, namespace: str) -> list[dict[str, Any]]:
    return list(_deployment(client, namespace)["spec"]["template"]["spec"]["volumes"])


def _users(client: Any, namespace: str) -> set[str]:
    """The Secrets the Deployment names, as the reference scan of --delete-secrets sees it."""
    return {u.secret for u in object_uses("Deployment", _deployment(client, namespace))}


def _workload(plan: Path) -> planlib.Workload:
    (pair,) = list(planlib.load(plan).iter_workloads())
    return pair[1]


@pytest.fixture
def files_namespace(kube_client: Any, namespace: str) -> Iterator[str]:
    _setup(kube_client, namespace)
    with _reporter(kube_client, namespace):
        yield namespace


def test_discover_records_secret_volumes_as_migratable_files_without_a_value(
    cluster: Cluster, kube_client: Any, files_namespace: str, tmp_path: Path
) -> None:
    workload = _discover(cluster, files_namespace, tmp_path / "plan.yaml")

    assert workload.effective_status == "pending", workload.reason  # files only: not skipped
    assert workload.secrets == []
    certs, config = workload.secret_files
    assert certs.vault_path == f"secret/data/{files_namespace}/tls"
    assert certs.default_mode == 0o440
    assert [(f.key, f.file, f.mode, f.encoding) for f in certs.files] == [
        ("tls.crt", "tls.crt", None, None),
        ("tls.key", "private/tls.key", 0o400, None),
        ("keystore.jks", "keystore.jks", None, "base64"),
    ]
    assert [(m.container, m.init, m.read_only) for m in certs.mounts] == [
        ("wait", True, False),
        ("app", False, True),
        ("sidecar", False, False),
    ]
    assert config.projected
    assert [(m.mount_path, m.sub_path) for m in config.mounts] == [("/etc/app.conf", "app.conf")]


def test_protect_finalize_and_unprotect_move_secret_volumes_and_back(
    cluster: Cluster, kube_client: Any, files_namespace: str, tmp_path: Path
) -> None:
    ns = files_namespace
    plan = tmp_path / "plan.yaml"
    _discover(cluster, ns, plan)
    original = _volumes(kube_client, ns)

    protect = _protect(cluster, plan)

    assert protect.returncode == 0, protect.stdout + protect.stderr
    assert _workload(plan).effective_status == "migrated"
    annotations = _deployment(kube_client, ns)["spec"]["template"]["metadata"]["annotations"]
    assert contract.SECRET_PATHS not in annotations  # files only
    volumes = contract.parse_secret_files(annotations[contract.SECRET_FILES])
    assert [v["volume"] for v in volumes] == ["certs", "config"]
    assert _volumes(kube_client, ns) == original  # protect never touches the volumes
    # the Secrets are still read through the template, so the checks below can fail
    assert _users(kube_client, ns) == {"tls", "config"}

    finalize = _finalize(cluster, plan)

    assert finalize.returncode == 0, finalize.stdout + finalize.stderr
    memory = {"emptyDir": {"medium": "Memory"}}
    assert _volumes(kube_client, ns) == [
        {"name": "certs", **memory},
        {"name": "config", **memory},
        {"name": "scratch", "emptyDir": {}},
    ]
    workload = _workload(plan)
    assert workload.finalized_at is not None
    assert [v.volume for v in workload.finalized_volumes] == ["certs", "config"]
    assert workload.finalized_volumes[0].secret == original[0]["secret"]
    assert _users(kube_client, ns) == set()  # the reference scan no longer sees them

    undo = _run(cluster, "target", "unprotect", "--plan", str(plan), "--yes")

    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert _volumes(kube_client, ns) == original
    workload = _workload(plan)
    assert workload.effective_status == "pending"
    assert workload.finalized_volumes == []
    template = _deployment(kube_client, ns)["spec"]["template"]
    assert contract.SECRET_FILES not in (template["metadata"].get("annotations") or {})


def test_protect_refuses_a_secret_volume_that_drifted_and_changes_nothing(
    cluster: Cluster, kube_client: Any, files_namespace: str, tmp_path: Path
) -> None:
    ns = files_namespace
    plan = tmp_path / "plan.yaml"
    _discover(cluster, ns, plan)
    _secret(kube_client, ns, "other", {"x": b"1"})
    obj = _deployment(kube_client, ns)
    volumes = copy.deepcopy(obj["spec"]["template"]["spec"]["volumes"])
    volumes[0]["secret"]["secretName"] = "other"
    kube_client.patch(
        Deployment, "web", {"spec": {"template": {"spec": {"volumes": volumes}}}}, namespace=ns
    )
    wait_rollout(kube_client, "Deployment", ns, "web", timeout=90)
    before = _deployment(kube_client, ns)["spec"]["template"]

    result = _protect(cluster, plan)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "volume certs now reads Secret(s) other, the plan tls" in (
        _workload(plan).last_error or ""
    )
    assert _deployment(kube_client, ns)["spec"]["template"] == before


def test_delete_secrets_deletes_a_files_secret_only_once_its_keys_are_proven(
    cluster: Cluster,
    kube_client: Any,
    files_namespace: str,
    openbao: BaoServer,
    tmp_path: Path,
) -> None:
    ns = files_namespace
    plan = tmp_path / "plan.yaml"
    _discover(cluster, ns, plan)
    assert _protect(cluster, plan).returncode == 0
    assert _finalize(cluster, plan).returncode == 0
    # both Secrets exist, so the checks below can fail
    assert kube_client.get(Secret, "tls", namespace=ns) is not None
    assert kube_client.get(Secret, "config", namespace=ns) is not None

    refused = _finalize(cluster, plan, "--delete-secrets", "--output", "json")

    assert refused.returncode == 1, refused.stdout + refused.stderr
    decisions = {d["name"]: d for d in json.loads(refused.stdout)["secrets"]}
    assert decisions["tls"]["action"] == "kept"
    assert "not proven in the vault" in decisions["tls"]["reason"]
    assert {s.metadata.name for s in kube_client.list(Secret, namespace=ns)} >= {"tls", "config"}

    # the values go into the vault (the binary one as base64 text), verify-plan proves them
    keystore = base64.b64encode(KEYSTORE).decode()
    openbao.bao(
        "kv", "put", f"secret/{ns}/tls", "tls.crt=c", "tls.key=k", f"keystore.jks={keystore}"
    )
    openbao.bao("kv", "put", f"secret/{ns}/config", "app.conf=x")
    report = tmp_path / "verified.json"
    attest = run_cli(openbao, "source", "verify-plan", str(plan), "--attest", str(report))
    assert attest.returncode == 0, attest.stdout + attest.stderr

    result = _finalize(
        cluster, plan, "--delete-secrets", "--require-verified", str(report), "--output", "json"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    decisions = {d["name"]: d for d in json.loads(result.stdout)["secrets"]}
    assert decisions["tls"]["action"] == decisions["config"]["action"] == "deleted"
    names = {s.metadata.name for s in kube_client.list(Secret, namespace=ns)}
    assert not {"tls", "config"} & names
    # unprotect refuses: the sources it would put back name deleted Secrets
    undo = _run(cluster, "target", "unprotect", "--plan", str(plan), "--yes")
    assert undo.returncode == 1, undo.stdout + undo.stderr
    assert "Recreate the Secret(s) from the vault first" in undo.stdout + undo.stderr
