"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (fake kubelets) with fake nodes. No Docker, no containers.

Setup (B) of the test-bed reference: every process is a child in its own session, logs under
``log_dir``, loopback only, its own ports, etcd data and CA. Pods never run anything; kwok's stages
make them Running and Ready so Deployments, StatefulSets and DaemonSets roll out for real.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from lightkube import Client, KubeConfig, codecs
from lightkube.resources.core_v1 import Node, ServiceAccount

from .binaries import find_k8s_binaries, kwok_stages_file
from .pki import ClusterPKI, create_cluster_pki
from .process import ManagedProcess, TestbedError, free_ports, pid_alive, rss_kib, wait_until

STOP_ORDER = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
SERVICE_CIDR = "10.0.0.0/24"


def fake_node(name: str) -> dict[str, Any]:
    """A kwok-managed Node without taints (reference: kwok kustomize/kwokctl/resource/node.yaml)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


class Cluster:
    """One local control plane. ``start()`` blocks until it is usable; ``stop()`` is idempotent.

    Attributes (valid after ``start()``): ``name``, ``workdir``, ``log_dir``, ``kubeconfig``
    (admin client-cert kubeconfig, context = cluster name), ``server`` (``https://127.0.0.1:PORT``),
    ``api_port``, ``ca_cert`` (PEM of the CA that signed the serving cert), ``ca_pem``, ``issuer``
    (ServiceAccount token issuer), ``pki``, ``processes`` (name -> ``ManagedProcess``),
    ``node_names``, ``startup_seconds``; ``local`` is True (``ExternalCluster`` has False).
    """

    local = True

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        log_dir: Path | None = None,
        nodes: int = 2,
        binaries: Mapping[str, Path] | None = None,
        stages: Path | None = None,
        start_timeout: float = 120.0,
        controllers: bool = True,
        kwok: bool = True,
        extra_args: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.log_dir = log_dir or workdir / "logs"
        self.kubeconfig = workdir / "kubeconfig"
        #: False: only etcd and kube-apiserver (objects, RBAC, tokens; nothing rolls out).
        self.controllers = controllers
        #: False: no kwok and no fake nodes (a real kubelet registers its own node).
        self.kwok = kwok and controllers
        #: Extra flags per component name (e.g. ``{"kube-apiserver": ["--v=2"]}``).
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)] if self.kwok else []
        self.binaries = dict(binaries) if binaries is not None else find_k8s_binaries()
        stages = stages or kwok_stages_file(self.binaries["kube-apiserver"].parent)
        if stages is None and self.kwok:
            raise TestbedError("kwok stage file not found; run `nox -s testenv`")
        self.stages = stages
        self.start_timeout = start_timeout
        self.processes: dict[str, ManagedProcess] = {}
        self.api_port = 0
        self.server = ""
        self.issuer = ""
        self.startup_seconds = 0.0
        self._pki: ClusterPKI | None = None

    def __repr__(self) -> str:
        return f"Cluster(name={self.name!r}, server={self.server!r})"

    # -- properties --------------------------------------------------------------------------

    @property
    def pki(self) -> ClusterPKI:
        if self._pki is None:
            raise TestbedError(f"cluster {self.name} has not been started")
        return self._pki

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text()

    @property
    def context(self) -> str:
        return self.name

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every component and wait until the cluster is ready; on failure stop all and
        raise ``TestbedError`` with the log tails. Retries once on a port race."""
        t0 = time.monotonic()
        for attempt in (1, 2):
            try:
                self._start_once()
                break
            except BaseException as exc:
                self.stop()
                port_race = isinstance(exc, TestbedError) and "address already in use" in str(exc)
                if attempt == 2 or not port_race:
                    raise
        self.startup_seconds = time.monotonic() - t0

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port, kcm_port, sched_port = free_ports(5)
        self.api_port = api_port
        self.server = f"https://127.0.0.1:{api_port}"
        self.issuer = self.server
        self._pki = pki = create_cluster_pki(self.workdir / "pki", cluster_name=self.name)
        self._write_kubeconfig()
        b = self.binaries
        etcd_dir = self.workdir / "etcd"
        shutil.rmtree(etcd_dir, ignore_errors=True)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"

        etcd = self._spawn(
            "etcd",
            [
                str(b["etcd"]),
                f"--name={self.name}",
                f"--data-dir={etcd_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster={self.name}={peer_url}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync=true",
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=1073741824",
                "--log-level=warn",
            ],
        )
        wait_until(
            lambda: requests.get(f"{etcd_url}/health", timeout=2).json().get("health") == "true",
            timeout=30,
            what=f"etcd of cluster {self.name}",
            abort=etcd.exit_reason,
            diagnostics=self.diagnostics,
        )

        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(b["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={self.issuer}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until(
            self._readyz,
            timeout=self.start_timeout,
            what=f"kube-apiserver /readyz of cluster {self.name}",
            abort=apiserver.exit_reason,
            diagnostics=self.diagnostics,
            interval=0.3,
        )
        if not self.controllers:
            return

        kcfg = str(self.kubeconfig)
        common = [
            f"--kubeconfig={kcfg}",
            f"--authentication-kubeconfig={kcfg}",
            f"--authorization-kubeconfig={kcfg}",
            "--bind-address=127.0.0.1",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--leader-elect=false",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                str(b["kube-controller-manager"]),
                *common,
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--cluster-name={self.name}",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(b["kube-scheduler"]),
                *common,
                f"--secure-port={sched_port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--v=1",
            ],
        )
        if not self.kwok:
            return
        self._spawn(
            "kwok",
            [
                str(b["kwok"]),
                f"--kubeconfig={kcfg}",
                f"--config={self.stages}",
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.0/16",
            ],
        )
        client = self.client()
        try:
            for node in self.node_names:
                client.create(codecs.from_dict(fake_node(node)))
            wait_until(
                lambda: self._ready(client),
                timeout=self.start_timeout,
                what=f"cluster {self.name}: nodes Ready and untainted, default ServiceAccount",
                abort=self._any_exited,
                diagnostics=self.diagnostics,
                interval=0.3,
            )
        finally:
            client.close()

    def restart_apiserver(
        self, *, signing_key: Path | None = None, verify_keys: Sequence[Path] = ()
    ) -> None:
        """Restart only kube-apiserver, as a signing-key rotation does: etcd and its data stay
        (the cluster keeps its objects and its ``kube-system`` UID). ``signing_key`` replaces
        ``--service-account-signing-key-file`` (new tokens are signed with it); each of
        ``verify_keys`` adds a ``--service-account-key-file`` (accepted, and published in
        ``/openid/v1/jwks``). The cluster's own key stays accepted."""
        old = self.processes["kube-apiserver"]
        argv = [
            f"--service-account-signing-key-file={signing_key}"
            if signing_key is not None and arg.startswith("--service-account-signing-key-file=")
            else arg
            for arg in old.argv
        ]
        argv += [f"--service-account-key-file={key}" for key in verify_keys]
        old.stop()
        proc = ManagedProcess(
            "kube-apiserver", argv, self.log_dir / "kube-apiserver.log", cwd=self.workdir
        )
        self.processes["kube-apiserver"] = proc
        proc.start()
        wait_until(
            self._readyz,
            timeout=self.start_timeout,
            what=f"restarted kube-apiserver /readyz of cluster {self.name}",
            abort=proc.exit_reason,
            diagnostics=self.diagnostics,
            interval=0.3,
        )

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        argv = [*argv, *self.extra_args.get(name, ())]
        proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log", cwd=self.workdir)
        self.processes[name] = proc
        proc.start()
        return proc

    def _any_exited(self) -> str | None:
        for proc in self.processes.values():
            reason = proc.exit_reason()
            if reason:
                return reason
        return None

    def _tls(self) -> dict[str, Any]:
        """``requests`` keyword arguments: verify with the cluster CA, admin client cert."""
        return {
            "verify": str(self.ca_cert),
            "cert": (str(self.pki.admin_cert), str(self.pki.admin_key)),
        }

    def _readyz(self) -> bool:
        return requests.get(f"{self.server}/readyz", timeout=3, **self._tls()).status_code == 200

    def _ready(self, client: Client) -> bool:
        ready = 0
        for node in client.list(Node):
            conds = {c.type: c.status for c in (node.status.conditions or [])}
            taints = [
                t for t in (node.spec.taints or []) if t.effect in ("NoSchedule", "NoExecute")
            ]
            if conds.get("Ready") == "True" and not taints:
                ready += 1
        if ready < len(self.node_names):
            return False
        client.get(ServiceAccount, "default", namespace="default")
        return True

    def stop(self) -> None:
        """Stop every component (kwok first, etcd last); no process is left behind."""
        errors: list[str] = []
        if any(p.alive() for p in self.processes.values()):
            self._record_memory()
        names = [n for n in STOP_ORDER if n in self.processes]
        names += [n for n in self.processes if n not in names]
        for name in names:
            try:
                self.processes[name].stop()
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        if errors:
            raise TestbedError(f"cluster {self.name}: stopping failed: {'; '.join(errors)}")

    @property
    def running(self) -> bool:
        return any(p.alive() for p in self.processes.values())

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.processes.items() if p.pid is not None}

    def leftover_pids(self) -> list[int]:
        """Every process still alive whose session is one this cluster started (should be [])."""
        sessions = set(self.pids().values())
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields: state ppid pgrp session ...
            if int(fields[3]) in sessions and pid_alive(int(entry.name)):
                left.append(int(entry.name))
        return left

    def memory_kib(self) -> dict[str, tuple[int, int]]:
        """Per process (current RSS, peak RSS) in KiB, from /proc."""
        out = {}
        for name, pid in self.pids().items():
            hwm = 0
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
            except OSError:
                pass
            out[name] = (rss_kib(pid), hwm)
        return out

    def _record_memory(self) -> None:
        """Write peak RSS per process to ``log_dir/memory.txt`` (for CI reports)."""
        mem = self.memory_kib()
        lines = [
            f"{n:26s} rss {r / 1024:7.1f} MiB  peak {h / 1024:7.1f} MiB"
            for n, (r, h) in mem.items()
        ]
        lines.append(f"{'total':26s} peak {sum(h for _, h in mem.values()) / 1024:7.1f} MiB")
        with contextlib.suppress(OSError):
            (self.log_dir / "memory.txt").write_text("\n".join(lines) + "\n")

    def diagnostics(self, lines: int = 25) -> str:
        return "\n".join(p.report(lines) for p in self.processes.values())

    # -- clients -----------------------------------------------------------------------------

    def _write_kubeconfig(self) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        user = f"{self.name}-admin"
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(self.pki.admin_cert),
                        "client-key-data": b64(self.pki.admin_key),
                    },
                }
            ],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user}}],
            "current-context": self.name,
            "preferences": {},
        }
        self.kubeconfig.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def client(self, *, field_manager: str | None = None) -> Client:
        """A new ``lightkube.Client`` built from the admin kubeconfig (caller may ``close()``)."""
        config = KubeConfig.from_file(self.kubeconfig).get(context_name=self.name)
        return Client(config=config, field_manager=field_manager, trust_env=False)

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl with this cluster's kubeconfig."""
        kubectl = self.binaries.get("kubectl")
        if kubectl is None or not os.access(kubectl, os.X_OK):
            raise TestbedError(f"kubectl not found at {kubectl}; run `nox -s testenv`")
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["KUBECONFIG"] = str(self.kubeconfig)
        result = subprocess.run(
            [str(kubectl), f"--cache-dir={self.workdir / 'kubectl-cache'}", *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise TestbedError(
                f"`kubectl {' '.join(args[:2])}` on cluster {self.name} exited with "
                f"{result.returncode}: {result.stderr.strip()[-2000:]}"
            )
        return result

    def get_raw(self, path: str) -> Any:
        """GET an API path with the admin certificate; returns parsed JSON (e.g. ``/version``)."""
        r = requests.get(f"{self.server}{path}", timeout=10, **self._tls())
        r.raise_for_status()
        return json.loads(r.text)


class ExternalCluster(Cluster):
    """An existing cluster (e.g. kind) behind a kubeconfig, with the ``Cluster`` interface.

    Used by ``nox -s e2e_kind``. ``start()`` only checks ``/readyz``; ``stop()`` does nothing (the
    cluster is not ours). The chosen context is copied into ``workdir/kubeconfig`` under the
    context name ``name``, so ``kubeconfig``/``context`` behave as for a local cluster.
    """

    local = False

    def __init__(self, name: str, workdir: Path, *, source: Path, context: str | None = None):
        self.name = name
        self.workdir = workdir
        self.log_dir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.source = source
        self.source_context = context
        kubectl = shutil.which("kubectl")
        self.binaries = {"kubectl": Path(kubectl)} if kubectl else {}
        self.processes = {}
        self.node_names = []
        self.startup_seconds = 0.0
        self._pki = None
        self.server = ""
        self.issuer = ""
        self.api_port = 0

    @property
    def ca_cert(self) -> Path:
        return self.workdir / "ca.crt"

    def _tls(self) -> dict[str, Any]:
        cert = (str(self.workdir / "client.crt"), str(self.workdir / "client.key"))
        return {"verify": str(self.ca_cert), "cert": cert if Path(cert[0]).exists() else None}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = yaml.safe_load(self.source.read_text())
        ctx_name = self.source_context or cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cl = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.server = cl["server"].rstrip("/")
        if "certificate-authority-data" in cl:
            self.ca_cert.write_bytes(base64.b64decode(cl["certificate-authority-data"]))
        else:
            shutil.copyfile(cl["certificate-authority"], self.ca_cert)
        for key, fname in (
            ("client-certificate-data", "client.crt"),
            ("client-key-data", "client.key"),
        ):
            if key in user:
                (self.workdir / fname).write_bytes(base64.b64decode(user[key]))
        own = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.name, "cluster": cl}],
            "users": [{"name": f"{self.name}-user", "user": user}],
            "contexts": [
                {"name": self.name, "context": {"cluster": self.name, "user": f"{self.name}-user"}}
            ],
            "current-context": self.name,
        }
        self.kubeconfig.write_text(yaml.safe_dump(own, sort_keys=False))
        self.kubeconfig.chmod(0o600)
        wait_until(self._readyz, timeout=60, what=f"external cluster {self.name} /readyz")
        self.issuer = self.get_raw("/.well-known/openid-configuration")["issuer"]

    def stop(self) -> None:
        return None

    @property
    def running(self) -> bool:
        return True
