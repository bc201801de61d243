"""A real Flux on the test bed: source-controller + kustomize-controller + a local OCI registry.

No hand-made fake of a GitOps controller: the two controllers are Flux's own (v1.9.6, built from
the Go module proxy by ``build-flux.sh``), run as processes against the test bed's API server
with its admin kubeconfig, loopback only:

- ``crane registry serve`` on ``127.0.0.1:<free port>`` holds the artifacts (``oci.py`` pushes
  manifests with the media types Flux expects; no ``flux`` CLI, no Git server, no network);
- source-controller: artifact storage in ``<workdir>/storage``, served and advertised on
  ``127.0.0.1:<free port>`` (kustomize-controller downloads from there); metrics and health on
  free loopback ports; leader election off (the default);
- kustomize-controller: metrics and health on free loopback ports;
- every CRD of both controllers' modules is applied first (each controller watches all its kinds).

``sync()`` creates an ``OCIRepository`` (``insecure: true``: plain HTTP) and a ``Kustomization``
and waits until both are Ready at the pushed revision; ``reconcile()`` forces the next
reconcile the way ``flux reconcile`` does (the ``reconcile.fluxcd.io/requestedAt`` annotation)
and waits until both controllers have handled it. Every wait reports the controllers' log tails
and the objects' conditions when it fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from tests.testenv.binaries import flux_crd_dir
from tests.testenv.cluster import Cluster
from tests.testenv.oci import Artifact, push_manifests
from tests.testenv.process import ManagedProcess, TestbedError, free_ports, wait_until

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
#: The labels kustomize-controller puts on every object it applies.
KUSTOMIZE_NAME_LABEL = "kustomize.toolkit.fluxcd.io/name"
KUSTOMIZE_NAMESPACE_LABEL = "kustomize.toolkit.fluxcd.io/namespace"
FIELD_MANAGER = "kustomize-controller"
START_TIMEOUT = 60.0
SYNC_TIMEOUT = 90.0


class Flux:
    """source-controller + kustomize-controller + registry for one ``Cluster`` (see module doc).

    ``extra_args`` per controller name (e.g. ``{"kustomize-controller": ["--override-manager=x"]}``)
    are appended to its command line.
    """

    def __init__(
        self,
        cluster: Cluster,
        workdir: Path,
        binaries: Mapping[str, Path],
        *,
        extra_args: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.bin = dict(binaries)
        self.extra_args = dict(extra_args or {})
        self.registry = ""
        self.storage = ""
        self.processes: dict[str, ManagedProcess] = {}
        self._argv: dict[str, list[str]] = {}
        self._health: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Flux(cluster={self.cluster.name!r}, registry={self.registry!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start_once()
        except BaseException:
            self.stop()
            raise

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        reg, storage, sc_metrics, sc_health, kc_metrics, kc_health = free_ports(6)
        self.registry = f"127.0.0.1:{reg}"
        self.storage = f"127.0.0.1:{storage}"
        (self.workdir / "registry").mkdir(exist_ok=True)
        (self.workdir / "storage").mkdir(exist_ok=True)
        registry = self._spawn(
            "registry",
            [
                str(self.bin["crane"]),
                "registry",
                "serve",
                "--address",
                self.registry,
                "--disk",
                str(self.workdir / "registry"),
            ],
            logs,
        )
        wait_until(
            lambda: requests.get(f"http://{self.registry}/v2/", timeout=2).ok,
            timeout=15,
            what="local OCI registry",
            abort=registry.exit_reason,
            diagnostics=self.diagnostics,
        )
        crds = str(flux_crd_dir(self.bin["crane"].parent))
        self.cluster.kubectl("apply", "--server-side", "-f", crds)
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", crds)
        common = ["--log-level=info", "--log-encoding=console", "--watch-all-namespaces=true"]
        health = self._health = {
            "source-controller": sc_health,
            "kustomize-controller": kc_health,
        }
        self._spawn(
            "source-controller",
            [
                str(self.bin["source-controller"]),
                *common,
                f"--metrics-addr=127.0.0.1:{sc_metrics}",
                f"--health-addr=127.0.0.1:{sc_health}",
                f"--storage-addr={self.storage}",
                f"--storage-adv-addr={self.storage}",
                f"--storage-path={self.workdir / 'storage'}",
            ],
            logs,
        )
        self._spawn(
            "kustomize-controller",
            [
                str(self.bin["kustomize-controller"]),
                *common,
                f"--metrics-addr=127.0.0.1:{kc_metrics}",
                f"--health-addr=127.0.0.1:{kc_health}",
                "--no-remote-bases=true",
            ],
            logs,
        )
        for name, port in health.items():
            wait_until(
                lambda port=port: requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok,
                timeout=START_TIMEOUT,
                what=f"{name} /readyz",
                abort=self._any_exited,
                diagnostics=self.diagnostics,
                interval=0.3,
            )

    def restart(self, name: str, extra_args: list[str]) -> None:
        """Restart controller ``name`` with ``extra_args`` instead of the ones it had (e.g.
        ``--override-manager=cloudtaser``; ``[]`` restores the defaults); waits for /readyz."""
        old = self.processes[name]
        old.stop()
        self.extra_args[name] = list(extra_args)
        self._spawn(name, self._argv[name], old.log_path.parent)
        port = self._health[name]
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok,
            timeout=START_TIMEOUT,
            what=f"restarted {name} /readyz",
            abort=self._any_exited,
            diagnostics=self.diagnostics,
            interval=0.3,
        )

    def _spawn(self, name: str, argv: list[str], logs: Path) -> ManagedProcess:
        self._argv[name] = list(argv)
        argv = [*argv, *self.extra_args.get(name, ())]
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "kubeconfig"}
        }
        env["KUBECONFIG"] = str(self.cluster.kubeconfig)
        proc = ManagedProcess(name, argv, logs / f"{name}.log", env=env, cwd=self.workdir)
        self.processes[name] = proc
        proc.start()
        return proc

    def _any_exited(self) -> str | None:
        for proc in self.processes.values():
            reason = proc.exit_reason()
            if reason:
                return reason
        return None

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes.values())

    def diagnostics(self, lines: int = 25) -> str:
        return "\n".join(p.report(lines) for p in self.processes.values())

    # -- artifacts and sync ------------------------------------------------------------------

    def push(self, repo: str, files: Mapping[str, str], *, revision: str = "") -> Artifact:
        """Push ``files`` (path -> YAML) as ``<registry>/<repo>:latest`` (the next revision)."""
        return push_manifests(self.registry, repo, files, revision=revision)

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", kind, "-n", namespace, name, "-o", "json").stdout
        obj: dict[str, Any] = json.loads(out)
        return obj

    def _state(self, namespace: str, name: str) -> str:
        parts = []
        for kind in ("ocirepository", "kustomization"):
            got = self.cluster.kubectl(
                "get", kind, "-n", namespace, name, "-o", "json", check=False
            )
            if got.returncode != 0:
                parts.append(f"{kind} {namespace}/{name}: {got.stderr.strip()}")
                continue
            status = json.loads(got.stdout).get("status") or {}
            conds = [
                f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
                for c in status.get("conditions") or []
            ]
            parts.append(f"{kind} {namespace}/{name}: {'; '.join(conds) or 'no conditions'}")
        return "\n".join(parts) + "\n" + self.diagnostics()

    def _ready_at(self, kind: str, namespace: str, name: str, revision: str, token: str) -> bool:
        status = self._get(kind, namespace, name).get("status") or {}
        if token and status.get("lastHandledReconcileAt") != token:
            return False
        key = "lastAppliedRevision" if kind == "kustomization" else None
        applied = status.get(key) if key else (status.get("artifact") or {}).get("revision")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return ready and applied == revision

    def wait_synced(
        self, namespace: str, name: str, artifact: Artifact, *, token: str = ""
    ) -> None:
        """Both objects Ready at ``artifact.revision`` (and, with ``token``, having handled
        that reconcile request); on timeout the conditions and both controllers' log tails."""
        for kind in ("ocirepository", "kustomization"):
            wait_until(
                lambda kind=kind: self._ready_at(kind, namespace, name, artifact.revision, token),
                timeout=SYNC_TIMEOUT,
                what=f"{kind} {namespace}/{name} ready at {artifact.revision}",
                abort=self._any_exited,
                diagnostics=lambda: self._state(namespace, name),
                interval=0.5,
            )

    def sync(self, namespace: str, name: str, artifact: Artifact, *, interval: str = "10m") -> None:
        """An ``OCIRepository`` and a ``Kustomization`` named ``name`` in ``namespace`` that
        apply the artifact's root into ``namespace`` (``targetNamespace``, ``prune: true``);
        waits until both are Ready at the artifact's revision."""
        source = {
            "apiVersion": SOURCE_API,
            "kind": "OCIRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "interval": interval,
                "url": artifact.url,
                "ref": {"tag": artifact.tag},
                "insecure": True,
            },
        }
        kustomization = {
            "apiVersion": KUSTOMIZE_API,
            "kind": "Kustomization",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "interval": interval,
                "path": "./",
                "prune": True,
                "targetNamespace": namespace,
                "sourceRef": {"kind": "OCIRepository", "name": name},
            },
        }
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": [source, kustomization]})
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=body)
        self.wait_synced(namespace, name, artifact)

    def reconcile(self, namespace: str, name: str, artifact: Artifact) -> str:
        """Request a reconcile of both objects now (``reconcile.fluxcd.io/requestedAt``, as
        ``flux reconcile kustomization --with-source`` does) and wait until both handled it at
        ``artifact``'s revision. Returns the request token."""
        token = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for kind in ("ocirepository", "kustomization"):
            self.cluster.kubectl(
                "annotate", "--overwrite", kind, "-n", namespace, name, f"{REQUESTED_AT}={token}"
            )
            wait_until(
                lambda kind=kind: self._ready_at(kind, namespace, name, artifact.revision, token),
                timeout=SYNC_TIMEOUT,
                what=f"{kind} {namespace}/{name} reconciled for request {token}",
                abort=self._any_exited,
                diagnostics=lambda: self._state(namespace, name),
                interval=0.3,
            )
        return token


def start_flux(cluster: Cluster, workdir: Path, binaries: Mapping[str, Path], **kw: Any) -> Flux:
    """A started ``Flux`` (stopped again when starting fails)."""
    flux = Flux(cluster, workdir, binaries, **kw)
    flux.start()
    return flux


__all__ = [
    "FIELD_MANAGER",
    "KUSTOMIZE_NAMESPACE_LABEL",
    "KUSTOMIZE_NAME_LABEL",
    "REQUESTED_AT",
    "Flux",
    "TestbedError",
    "start_flux",
]
