"""The real node works: containers really run, volumes, rollouts, tokens, logs and exec.

Every test here runs processes in real containers (containerd + runc) on the node ``127.0.0.1``;
figures (bring-up, pod create -> Running) are printed with ``-s`` and kept in the node's log dir.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Node, Pod

from tests.integration.connect_helpers import cli, connect_args
from tests.testenv.binaries import k8s_version
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import RealNode, missing_prerequisites
from tests.testenv.workloads import create_service_account, list_pods, wait_rollout

pytestmark = pytest.mark.integration

BUSYBOX = "ghcr.io/cloudtaser-test/busybox:1"  # production-style name, served by the mirror


@pytest.fixture(scope="module")
def busybox(real_node: RealNode) -> str:
    """A busybox image pushed to the local registry; pods use its ``ghcr.io`` name."""
    real_node.build_image("cloudtaser-test/busybox:1", cmd=["sh"])
    return BUSYBOX


def _container_ids(pod: Pod) -> list[str]:
    assert pod.status is not None
    return sorted(str(c.containerID) for c in (pod.status.containerStatuses or []))


def test_missing_prerequisites_name_what_is_missing(tmp_path: Path) -> None:
    absent = missing_prerequisites(tmp_path)
    assert any(f"node binaries in {tmp_path}: kubelet" in a for a in absent), absent
    assert any("nox -s testenv" in a for a in absent)


def test_node_is_ready_with_the_pinned_versions_within_30s(
    real_node: RealNode, node_client: Any
) -> None:
    node = node_client.get(Node, "127.0.0.1")
    conds = {c.type: c.status for c in node.status.conditions}
    assert conds["Ready"] == "True"
    info = node.status.nodeInfo
    assert info.kubeletVersion == f"v{k8s_version()}"
    assert info.containerRuntimeVersion == "containerd://2.4.2"
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == "127.0.0.1"
    print(f"\nreal node bring-up: {real_node.startup_seconds:.1f} s {real_node.timings}")
    assert real_node.startup_seconds <= 30, real_node.timings


def test_init_container_writes_a_memory_emptydir_that_the_main_container_reads(
    real_node: RealNode, node_namespace: str, busybox: str
) -> None:
    value = secrets.token_hex(8)
    manifest = real_node.pod_manifest(
        "shared",
        busybox,
        ["sh", "-c", "cat /work/value; echo; grep ' /work ' /proc/mounts; sleep 3600"],
        namespace=node_namespace,
        initContainers=[
            {
                "name": "init",
                "image": busybox,
                "command": ["sh", "-c", f"echo -n {value} > /work/value; echo init-done"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            }
        ],
        volumes=[{"name": "work", "emptyDir": {"medium": "Memory"}}],
    )
    manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "work", "mountPath": "/work"}]
    t0 = time.monotonic()
    real_node.run_pod(manifest)
    elapsed = time.monotonic() - t0
    print(f"\npod (init + main) create -> Running: {elapsed:.2f} s")
    deadline = time.monotonic() + 10
    while "tmpfs" not in (logs := real_node.logs(node_namespace, "shared")):
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    lines = logs.splitlines()
    assert lines[0] == value
    assert lines[1].split()[1:3] == ["/work", "tmpfs"]  # medium: Memory is a real tmpfs
    assert real_node.logs(node_namespace, "shared", container="init").strip() == "init-done"
    assert elapsed < 30


def test_deployment_rolls_out_and_a_template_change_replaces_the_real_containers(
    real_node: RealNode, node_namespace: str, node_client: Any, busybox: str
) -> None:
    pod = real_node.pod_manifest(
        "x",
        busybox,
        ["sh", "-c", "echo gen=$GEN; exec sleep 3600"],
        env={"GEN": "1"},
        restart_policy="Always",
    )
    spec = pod["spec"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": node_namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec},
        },
    }
    t0 = time.monotonic()
    node_client.create(codecs.from_dict(deployment))
    wait_rollout(node_client, "Deployment", node_namespace, "web", timeout=90)
    print(f"\nDeployment 2/2 rolled out in {time.monotonic() - t0:.2f} s")
    before = list_pods(node_client, node_namespace, "web")
    assert len(before) == 2
    old_ids = {cid for p in before for cid in _container_ids(p)}
    assert all(cid.startswith("containerd://") for cid in old_ids)
    for p in before:
        assert (
            real_node.exec(node_namespace, p.metadata.name, "sh", "-c", "echo $GEN").stdout == "1\n"
        )

    env = spec["containers"][0]["env"]
    env[-1] = {"name": "GEN", "value": "2"}
    node_client.patch(
        Deployment,
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "env": env}]}}}},
        namespace=node_namespace,
    )
    wait_rollout(node_client, "Deployment", node_namespace, "web", timeout=120)
    deadline = time.monotonic() + 30
    while len(after := list_pods(node_client, node_namespace, "web")) != 2:
        assert time.monotonic() < deadline, [p.metadata.name for p in after]
        time.sleep(0.3)
    assert not {p.metadata.name for p in after} & {p.metadata.name for p in before}
    assert not {cid for p in after for cid in _container_ids(p)} & old_ids
    for p in after:
        # the running process sees the new template, and its log says so
        assert (
            real_node.exec(node_namespace, p.metadata.name, "sh", "-c", "echo $GEN").stdout == "2\n"
        )
        assert real_node.logs(node_namespace, p.metadata.name).strip() == "gen=2"


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


LOGIN = """
T=$(cat /var/run/secrets/openbao/token)
printf '{"role":"%s","jwt":"%s"}' "$ROLE" "$T" > /tmp/login.json
if wget -q -O /tmp/out --header 'Content-Type: application/json' \
     --post-file /tmp/login.json "$BAO_ADDR/v1/auth/$MOUNT/login"; then
  grep -q '"client_token":"[^"]' /tmp/out && echo LOGIN_OK
  grep -o '"service_account_name":"[^"]*"' /tmp/out
  grep -o '"service_account_namespace":"[^"]*"' /tmp/out
else
  echo LOGIN_FAILED
fi
rm -f /tmp/out /tmp/login.json
sleep 3600
"""


def test_projected_token_with_audience_logs_in_through_connects_auth_mount(
    real_node: RealNode,
    node_namespace: str,
    node_client: Any,
    openbao: BaoServer,
    busybox: str,
    tmp_path: Path,
) -> None:
    tag = secrets.token_hex(3)
    mount, system_ns = f"k8s-rn-{tag}", f"ct-sys-rn-{tag}"
    run = cli(connect_args(real_node.cluster, openbao, tmp_path, mount, system_ns))
    assert run.code == 0, run.text
    try:
        create_service_account(node_client, node_namespace, "app")
        role = {
            "bound_service_account_names": ["app"],
            "bound_service_account_namespaces": [node_namespace],
            "audience": "openbao",
            "token_policies": ["default"],
            "token_ttl": "5m",
        }
        openbao.api_ok("POST", f"auth/{mount}/role/app", json=role)

        def pod(name: str, audience: str) -> dict[str, Any]:
            m = real_node.pod_manifest(
                name,
                busybox,
                ["sh", "-c", LOGIN],
                namespace=node_namespace,
                service_account="app",
                env={"BAO_ADDR": openbao.address, "MOUNT": mount, "ROLE": "app"},
                volumes=[
                    {
                        "name": "bao-token",
                        "projected": {
                            "sources": [
                                {
                                    "serviceAccountToken": {
                                        "audience": audience,
                                        "expirationSeconds": 600,
                                        "path": "token",
                                    }
                                }
                            ]
                        },
                    }
                ],
            )
            m["spec"]["containers"][0]["volumeMounts"] = [
                {"name": "bao-token", "mountPath": "/var/run/secrets/openbao", "readOnly": True}
            ]
            return m

        real_node.run_pod(pod("login", "openbao"))
        real_node.run_pod(pod("wrong-aud", "someone-else"))
        logs = _wait_logs(real_node, node_namespace, "login", "service_account_namespace")
        assert logs.splitlines() == [
            "LOGIN_OK",
            '"service_account_name":"app"',
            f'"service_account_namespace":"{node_namespace}"',
        ]
        wrong = _wait_logs(real_node, node_namespace, "wrong-aud", "LOGIN")
        # stdout and stderr (wget's message) reach the log in either order
        assert "LOGIN_FAILED" in wrong.splitlines()
        assert "LOGIN_OK" not in wrong
        assert "403 Forbidden" in wrong  # the role's audience is enforced by OpenBao

        token = real_node.exec(
            node_namespace, "login", "cat", "/var/run/secrets/openbao/token"
        ).stdout
        claims = _claims(token)
        assert claims["aud"] == ["openbao"]
        assert claims["sub"] == f"system:serviceaccount:{node_namespace}:app"
        # the token (a canary here) is in no log and no command output
        assert token not in logs
        assert token not in run.text
        assert token not in real_node.processes["kubelet"].tail(2000)
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")


def _wait_logs(node: RealNode, namespace: str, pod: str, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while needle not in (logs := node.logs(namespace, pod)):
        assert time.monotonic() < deadline, logs
        time.sleep(0.3)
    return logs


def test_kubectl_exec_passes_stdin_and_exit_codes_and_logs_follow_the_container(
    real_node: RealNode, node_namespace: str, busybox: str
) -> None:
    real_node.run_pod(
        real_node.pod_manifest(
            "sh", busybox, ["sh", "-c", "echo started; exec sleep 3600"], namespace=node_namespace
        )
    )
    assert (
        real_node.exec(node_namespace, "sh", "cat", input="from-stdin\n").stdout == "from-stdin\n"
    )
    failed = real_node.exec(node_namespace, "sh", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    pid1 = real_node.exec(node_namespace, "sh", "cat", "/proc/1/cmdline").stdout
    assert pid1.split("\0")[:2] == ["sleep", "3600"]
    assert real_node.logs(node_namespace, "sh") == "started\n"
    # in-pod API clients are pointed at the apiserver on loopback
    env = real_node.exec(node_namespace, "sh", "env").stdout.splitlines()
    assert f"KUBERNETES_SERVICE_PORT={real_node.api_port}" in env
    assert "KUBERNETES_SERVICE_HOST=127.0.0.1" in env
    ca = real_node.exec(
        node_namespace, "sh", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    ).stdout
    assert ca.strip() == real_node.ca_pem.strip()


def test_images_from_a_directory_a_static_binary_an_index_and_an_oci_layout(
    real_node: RealNode, node_namespace: str, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "srv").mkdir(parents=True)
    (app / "srv" / "run.sh").write_text(
        '#!/bin/sh\necho "dir-image $1 $(cat /srv/data.txt)"\nsleep 3600\n'
    )
    (app / "srv" / "run.sh").chmod(0o755)
    (app / "srv" / "data.txt").write_text("payload")
    real_node.build_image("t/dir:1", directory=app, entrypoint=["/srv/run.sh"], cmd=["arg1"])
    real_node.run_pod(real_node.pod_manifest("dir", "ghcr.io/t/dir:1", namespace=node_namespace))
    assert _wait_logs(real_node, node_namespace, "dir", "payload") == "dir-image arg1 payload\n"

    # a static binary alone (no shell in the image): the pause program as entrypoint
    static = real_node.build_image("t/static:1", binary=real_node.bin["pause"], busybox=False)
    real_node.run_pod(real_node.pod_manifest("static", static.ref, namespace=node_namespace))

    # a two-platform index: the node picks linux/amd64
    amd = real_node.build_image(
        "t/multi:amd64", files={"/arch": b"amd64\n"}, cmd=["sh", "-c", "cat /arch; sleep 3600"]
    )
    arm = real_node.build_image(
        "t/multi:arm64",
        files={"/arch": b"arm64\n"},
        cmd=["sh", "-c", "cat /arch; sleep 3600"],
        platform="linux/arm64",
    )
    index = real_node.build_index("t/multi:1", [amd, arm])
    manifest = json.loads(real_node.crane("manifest", index.ref))
    assert {m["platform"]["architecture"] for m in manifest["manifests"]} == {"amd64", "arm64"}
    real_node.run_pod(real_node.pod_manifest("multi", index.ref, namespace=node_namespace))
    assert _wait_logs(real_node, node_namespace, "multi", "64") == "amd64\n"

    # an OCI layout directory (as the runtime build writes under build/runtime/image/)
    layout = tmp_path / "layout"
    real_node.crane("pull", "--format=oci", amd.ref, str(layout))
    pushed = real_node.push_oci_layout(layout, "t/from-layout:1")
    assert pushed.digest == amd.digest
    real_node.run_pod(real_node.pod_manifest("layout", pushed.pinned, namespace=node_namespace))
    assert _wait_logs(real_node, node_namespace, "layout", "64") == "amd64\n"
