"""Helpers for the target connect / runtime wrapper integration tests (not fixtures)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import ApiError, Client, codecs
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from cloudtaser.cli import main
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer

REPO = Path(__file__).resolve().parents[2]


def hexid() -> str:
    return secrets.token_hex(3)


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def token_file(openbao: BaoServer, tmp: Path) -> Path:
    path = tmp / f"bao-token-{hexid()}"
    path.write_text(openbao.token)
    path.chmod(0o600)
    return path


def cli(argv: Sequence[str]) -> CliRun:
    """``cloudtaser.cli.main`` in-process with stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return CliRun(code, out.getvalue(), err.getvalue())


def connect_args(
    cluster: Cluster, openbao: BaoServer, tmp: Path, mount: str, namespace: str, *extra: str
) -> list[str]:
    return [
        "target",
        "connect",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--openbao-addr",
        openbao.address,
        "--token-file",
        str(token_file(openbao, tmp)),
        "--auth-mount",
        mount,
        "--namespace",
        namespace,
        *extra,
    ]


def request_token(
    client: Client,
    namespace: str,
    service_account: str,
    audiences: Sequence[str] = (),
    seconds: int = 600,
) -> str:
    req = ServiceAccountToken(
        metadata=ObjectMeta(name=service_account, namespace=namespace),
        spec=TokenRequestSpec(audiences=list(audiences), expirationSeconds=seconds),
    )
    return str(client.create(req, service_account, namespace=namespace).status.token)


def create_namespace_with_accounts(client: Client, namespace: str, *accounts: str) -> None:
    client.create(
        codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    )
    for sa in accounts:
        client.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": sa, "namespace": namespace},
                }
            )
        )


def cleanup_cluster(client: Client, namespaces: Sequence[str], bindings: Sequence[str]) -> None:
    for name in bindings:
        with contextlib.suppress(ApiError):
            client.delete(ClusterRoleBinding, name)
    for ns in namespaces:
        with contextlib.suppress(ApiError):
            client.delete(Namespace, ns)


def auth_description(openbao: BaoServer, mount: str) -> str:
    return str(openbao.api_ok("GET", "sys/auth")["data"][f"{mount}/"]["description"])


@contextlib.contextmanager
def auth_mount_cleanup(openbao: BaoServer, mount: str) -> Iterator[str]:
    try:
        yield mount
    finally:
        if openbao.running:
            openbao.api("DELETE", f"sys/auth/{mount}")


@dataclass
class WrapRun:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def run_wrapper(
    env: dict[str, str], command: Sequence[str], *, timeout: float = 60, binary: str | None = None
) -> WrapRun:
    """``cloudtaser-runtime wrap -- COMMAND`` (the Go binary) as the injected wrapper runs it."""
    from tests.integration.runtime_binary import runtime_binary

    full = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    full.update(env)
    proc = subprocess.Popen(
        [binary or runtime_binary(), "wrap", "--", *command],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    out, err = proc.communicate(timeout=timeout)
    return WrapRun(proc.pid, proc.returncode, out, err)


DUMP_ENV = (
    "import json, os, sys; "
    "json.dump({'pid': os.getpid(), 'env': dict(os.environ)}, open(sys.argv[1], 'w'))"
)


def env_dump_command(path: Path) -> list[str]:
    return [sys.executable, "-c", DUMP_ENV, str(path)]


def read_dump(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))
