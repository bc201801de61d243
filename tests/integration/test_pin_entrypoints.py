"""`target protect --pin-entrypoints` against a real registry (`crane registry serve`) and a real
API server (kwok nodes): the image ENTRYPOINT/CMD are read from this machine and written as
explicit command/args in the one protect patch (shown by --dry-run and at the prompt).

Also the registry client's pull path against that real registry: tags, digests, a two-platform
index (default linux/amd64, --platform linux/arm64).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from cloudtaser import plan as planlib
from cloudtaser.errors import RegistryError
from cloudtaser.plan import MigrationPlan, PlanMetadata, SecretRef, Tenant, Workload
from cloudtaser.target.registry import RegistryClient
from tests.integration.connect_helpers import CliRun, cli, hexid
from tests.testenv.binaries import k8s_bin_dir, missing
from tests.testenv.cluster import Cluster
from tests.testenv.process import ManagedProcess, free_ports, wait_until
from tests.testenv.workloads import (
    ContainerSpec,
    WorkloadSpec,
    create_namespace,
    create_secret,
    create_workload,
    delete_namespace,
    wait_rollout,
)

VAULT = "http://openbao.vault.svc:8200"


@dataclass
class Registry:
    host: str
    crane_bin: Path
    home: Path

    def crane(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY")}
        env.update(HOME=str(self.home), DOCKER_CONFIG=str(self.home / "docker"))
        run = subprocess.run([str(self.crane_bin), *args], capture_output=True, text=True,
                             env=env, timeout=120, check=False)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    def image(self, name: str, *, entrypoint: list[str] | None, cmd: list[str] | None,
              platform: str = "linux/amd64") -> str:  # fmt: skip
        """A one-file image pushed as ``host/name``; returns its ``repo@digest``."""
        ref = f"{self.host}/{name}"
        layer = self.home / f"layer-{hexid()}.tar"
        with tarfile.open(layer, "w") as tar:
            data = b"#!/bin/sh\necho hi\n"
            info = tarfile.TarInfo("app")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        self.crane("append", "--oci-empty-base", "-f", str(layer), "-t", ref)
        args = ["mutate", ref, "-t", ref, "--set-platform", platform]
        if entrypoint is not None:
            args.append(f"--entrypoint={','.join(entrypoint)}")
        if cmd is not None:
            args.append(f"--cmd={','.join(cmd)}")
        self.crane(*args)
        return f"{ref.rsplit(':', 1)[0]}@{self.crane('digest', ref)}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    crane = k8s_bin_dir() / "crane"
    if not os.access(crane, os.X_OK):
        missing(f"{crane} (`nox -s testenv` builds it with the node binaries)")
    home = tmp_path_factory.mktemp("crane")
    (port,) = free_ports(1)
    host = f"127.0.0.1:{port}"
    proc = ManagedProcess("registry", [str(crane), "registry", "serve", "--address", host],
                          home / "registry.log")  # fmt: skip
    proc.start()
    try:
        wait_until(lambda: requests.get(f"http://{host}/v2/", timeout=2).ok, timeout=15,
                   what="crane registry")  # fmt: skip
        yield Registry(host, crane, home)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def images(registry: Registry) -> dict[str, str]:
    amd = registry.image("app:amd", entrypoint=["/app", "--mode=$(MODE)"], cmd=["serve"])
    arm = registry.image("app:arm", entrypoint=["/app-arm"], cmd=["serve"],
                         platform="linux/arm64")  # fmt: skip
    index = f"{registry.host}/app:multi"
    registry.crane("index", "append", "-t", index, "-m", amd, "-m", arm)
    registry.image("shell:1", entrypoint=None, cmd=["/bin/sh", "-c", "run"])
    return {"amd": amd, "arm": arm, "index": index, "shell": f"{registry.host}/shell:1"}


def test_the_client_reads_entrypoint_and_cmd_from_a_real_registry(
    registry: Registry, images: dict[str, str]
) -> None:
    with RegistryClient() as client:
        tagged = client.image_config(f"{registry.host}/app:amd")
        assert tagged.entrypoint == ("/app", "--mode=$(MODE)")
        assert tagged.cmd == ("serve",)
        pinned = client.image_config(images["amd"])
        assert pinned.manifest_digest == images["amd"].split("@")[1]
        from_index = client.image_config(images["index"])
        assert from_index.entrypoint == ("/app", "--mode=$(MODE)")  # linux/amd64 by default
        shell = client.image_config(images["shell"])
        assert (shell.entrypoint, shell.cmd) == ((), ("/bin/sh", "-c", "run"))
        with pytest.raises(RegistryError, match="not found"):
            client.image_config(f"{registry.host}/app:missing")
    with RegistryClient(platform="linux/arm64") as client:
        assert client.image_config(images["index"]).entrypoint == ("/app-arm",)
    with (
        RegistryClient(platform="linux/s390x") as client,
        pytest.raises(RegistryError, match=r"no linux/s390x image \(platforms: linux/amd64"),
    ):
        client.image_config(images["index"])


# -- protect ----------------------------------------------------------------------------------


def _plan(path: Path, namespace: str, names: list[str]) -> Path:
    workloads = [
        Workload(kind="Deployment", name=name, secrets=[SecretRef(
            source="db", vault_path=f"secret/data/{namespace}/db",
            fields={"password": "DB_PASSWORD"}, via="env")])
        for name in names
    ]  # fmt: skip
    planlib.save(
        MigrationPlan(
            api_version="cloudtaser.io/v1", kind="MigrationPlan",
            metadata=PlanMetadata(name="pin", cluster="ct-main"),
            tenants=[Tenant(name=namespace, namespace=namespace, workloads=workloads)],
        ),
        path,
    )  # fmt: skip
    return path


def _deploy(client: Any, namespace: str, name: str, containers: list[ContainerSpec]) -> None:
    create_workload(client, WorkloadSpec("Deployment", name, namespace, containers=containers))
    wait_rollout(client, "Deployment", namespace, name, timeout=90)


def _protect(cluster: Cluster, plan: Path, *args: str) -> CliRun:
    return cli(["target", "protect", "--plan", str(plan), "--kubeconfig", str(cluster.kubeconfig),
                "--vault-address", VAULT, "--poll-interval", "200ms", "--pin-entrypoints",
                "--no-verify-injection",  # kwok: no injector (proof: the real-node tests)
                *args])  # fmt: skip


@pytest.fixture
def pin_ns(kube_client: Any) -> Iterator[str]:
    name = create_namespace(kube_client, f"pin-{hexid()}")
    create_secret(kube_client, name, "db", {"password": "not-a-real-value"})
    yield name
    delete_namespace(kube_client, name)


def _containers(kube_client: Any, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    from lightkube.resources.apps_v1 import Deployment

    obj = kube_client.get(Deployment, name, namespace=namespace).to_dict()
    return {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}


def test_pin_entrypoints_writes_command_and_args_into_the_one_patch(
    cluster: Cluster, kube_client: Any, pin_ns: str, images: dict[str, str], tmp_path: Path
) -> None:
    secret = {"DB_PASSWORD": ("db", "password")}
    _deploy(kube_client, pin_ns, "web", [
        ContainerSpec(name="app", image=images["index"], secret_env=secret),
        ContainerSpec(name="side", image=images["shell"], command=["/mine", "x"]),
    ])  # fmt: skip
    _deploy(kube_client, pin_ns, "job", [ContainerSpec(name="sh", image=images["shell"],
                                                      secret_env=secret)])  # fmt: skip
    plan = _plan(tmp_path / "plan.yaml", pin_ns, ["web", "job"])

    dry = _protect(cluster, plan, "--dry-run", "--output", "json")
    assert dry.code == 0, dry.text
    patches = {r["name"]: r["patch"] for r in json.loads(dry.stdout)["results"]}
    web = patches["web"]["spec"]["template"]
    assert web["spec"] == {
        "containers": [{"name": "app", "command": ["/app", "--mode=$$(MODE)"], "args": ["serve"]}]
    }  # fmt: skip  (the side car has a command: not touched; $ kept literal)
    assert web["metadata"]["labels"] == {"cloudtaser.io/inject": "true"}
    assert patches["job"]["spec"]["template"]["spec"] == {
        "containers": [{"name": "sh", "command": ["/bin/sh", "-c", "run"]}]
    }
    assert "command" not in _containers(kube_client, pin_ns, "web")["app"]  # dry run

    run = _protect(cluster, plan, "--yes")
    assert run.code == 0, run.text
    live = _containers(kube_client, pin_ns, "web")
    assert live["app"]["command"] == ["/app", "--mode=$$(MODE)"]
    assert live["app"]["args"] == ["serve"]
    assert live["side"]["command"] == ["/mine", "x"]
    assert "args" not in live["side"]
    assert _containers(kube_client, pin_ns, "job")["sh"]["command"] == ["/bin/sh", "-c", "run"]
    statuses = {w.name: str(w.status) for _t, w in planlib.load(plan).iter_workloads()}
    assert statuses == {"web": "migrated", "job": "migrated"}


def test_the_interactive_prompt_shows_the_pinned_command(
    cluster: Cluster, kube_client: Any, pin_ns: str, images: dict[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _deploy(kube_client, pin_ns, "web", [ContainerSpec(name="app", image=images["amd"],
            secret_env={"DB_PASSWORD": ("db", "password")})])  # fmt: skip
    plan = _plan(tmp_path / "plan.yaml", pin_ns, ["web"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    run = _protect(cluster, plan, "--interactive")
    assert run.code == 0, run.text
    prompt = run.stderr[: run.stderr.index("[y]es")]
    assert '"command": [\n' in prompt
    assert '"/app",' in prompt
    assert "command" not in _containers(kube_client, pin_ns, "web")["app"]


def test_an_image_that_cannot_be_looked_up_is_refused_and_nothing_is_patched(
    cluster: Cluster, kube_client: Any, pin_ns: str, tmp_path: Path
) -> None:
    (dead,) = free_ports(1)
    image = f"127.0.0.1:{dead}/gone:1"
    _deploy(kube_client, pin_ns, "web", [ContainerSpec(name="app", image=image,
            secret_env={"DB_PASSWORD": ("db", "password")})])  # fmt: skip
    plan = _plan(tmp_path / "plan.yaml", pin_ns, ["web"])
    run = _protect(cluster, plan, "--yes")
    assert run.code == 1, run.text
    assert "--pin-entrypoints: 127.0.0.1:" in run.stderr
    assert "cannot reach" in run.stderr
    assert "Traceback" not in run.text
    assert "command" not in _containers(kube_client, pin_ns, "web")["app"]
    (workload,) = [w for _t, w in planlib.load(plan).iter_workloads()]
    assert str(workload.status) == "pending"
