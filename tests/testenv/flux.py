"""A real Flux on the test bed: source-controller + kustomize-controller (+ helm-controller on
request) + a local OCI registry.

No hand-made fake of a GitOps controller: the controllers are Flux's own (source- and
kustomize-controller v1.9.6, helm-controller v1.4.5, built from the Go module proxy by
``build-flux.sh``), run as processes against the test bed's API server with its admin
kubeconfig, loopback only:

- ``crane registry serve`` on ``127.0.0.1:<free port>`` holds the artifacts (``oci.py`` pushes
  manifests with the media types Flux expects; no ``flux`` CLI, no Git server, no network);
- source-controller: artifact storage in ``<workdir>/storage``, served and advertised on
  ``127.0.0.1:<free port>`` (kustomize-controller downloads from there); metrics and health on
  free loopback ports; leader election off (the default);
- kustomize-controller: metrics and health on free loopback ports;
- helm-controller (``helm=True``; off by default, the Kustomization tests do not pay for it):
  metrics and health on free loopback ports, charts from source-controller's storage;
- every CRD of the controllers' modules is applied first (each controller watches all its kinds).

``sync()`` creates an ``OCIRepository`` (``insecure: true``: plain HTTP) and a ``Kustomization``
and waits until both are Ready at the pushed revision; ``reconcile()`` forces the next
reconcile the way ``flux reconcile`` does (the ``reconcile.fluxcd.io/requestedAt`` annotation)
and waits until both controllers have handled it. Every wait reports the controllers' log tails
and the objects' conditions when it fails.

Helm releases: ``push_chart()`` pushes a chart directory as an OCI artifact with the real
``helm package`` + ``helm push --plain-http`` (Helm's media types: config
``application/vnd.cncf.helm.config.v1+json``, layer :data:`HELM_CHART_MEDIA_TYPE`);
``helm_release()`` gives the ``OCIRepository`` (``layerSelector`` on that media type,
``operation: copy``: the chart archive as it is) and the ``HelmRelease`` (``chartRef``) to put
in "Git" or apply; ``wait_release()`` waits until a HelmRelease is Ready at a generation and
``reconcile_release()`` forces its next reconcile (``forceAt`` too: a Helm upgrade).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.testenv.binaries import flux_crd_dir
from tests.testenv.cluster import Cluster
from tests.testenv.oci import MANIFEST_MEDIA_TYPE, Artifact, push_manifests
from tests.testenv.process import ManagedProcess, TestbedError, free_ports, wait_until

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
#: helm-controller v1.4.5's HelmRelease API (``chartRef``, ``postRenderers``).
HELM_API = "helm.toolkit.fluxcd.io/v2"
#: The layer media type ``helm push`` writes (helm.sh/helm registry.ChartLayerMediaType).
HELM_CHART_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
#: With the same token as :data:`REQUESTED_AT`: helm-controller upgrades the release even when
#: nothing changed (``flux reconcile helmrelease --force``).
FORCE_AT = "reconcile.fluxcd.io/forceAt"
#: The labels kustomize-controller puts on every object it applies.
KUSTOMIZE_NAME_LABEL = "kustomize.toolkit.fluxcd.io/name"
KUSTOMIZE_NAMESPACE_LABEL = "kustomize.toolkit.fluxcd.io/namespace"
FIELD_MANAGER = "kustomize-controller"
START_TIMEOUT = 60.0
SYNC_TIMEOUT = 90.0


class Flux:
    """source-controller + kustomize-controller + registry for one ``Cluster`` (see module doc).

    ``extra_args`` per controller name (e.g. ``{"kustomize-controller": ["--override-manager=x"]}``)
    are appended to its command line; ``helm=True`` starts helm-controller too.
    """

    def __init__(
        self,
        cluster: Cluster,
        workdir: Path,
        binaries: Mapping[str, Path],
        *,
        extra_args: Mapping[str, list[str]] | None = None,
        helm: bool = False,
    ) -> None:
        self.cluster = cluster
        self.helm = helm
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
        reg, storage, sc_metrics, sc_health, kc_metrics, kc_health, hc_metrics, hc_health = (
            free_ports(8)
        )
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
        if self.helm:
            health["helm-controller"] = hc_health
            self._spawn(
                "helm-controller",
                [
                    str(self.bin["helm-controller"]),
                    *common,
                    f"--metrics-addr=127.0.0.1:{hc_metrics}",
                    f"--health-addr=127.0.0.1:{hc_health}",
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
        env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
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

    # -- Helm releases (helm-controller, ``helm=True``) ---------------------------------------

    def push_chart(self, helm: Path, chart_dir: Path, repo: str) -> Artifact:
        """``helm package`` of ``chart_dir`` and ``helm push --plain-http`` to
        ``<registry>/<repo>/<chart name>:<chart version>`` (the real helm, its own media types;
        its config, cache and registry login files in the workdir)."""
        chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        home = self.workdir / "helm"
        packages = home / "packages"
        packages.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
        env.update(
            HELM_CONFIG_HOME=str(home / "config"),
            HELM_CACHE_HOME=str(home / "cache"),
            HELM_DATA_HOME=str(home / "data"),
            HELM_REGISTRY_CONFIG=str(home / "registry.json"),
        )
        archive = packages / f"{chart['name']}-{chart['version']}.tgz"
        for argv in (
            [str(helm), "package", str(chart_dir), "--destination", str(packages)],
            [str(helm), "push", str(archive), f"oci://{self.registry}/{repo}", "--plain-http"],
        ):
            run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
            if run.returncode != 0:
                raise TestbedError(f"{' '.join(argv)} failed:\n{run.stdout}{run.stderr}")
        name, tag = f"{repo}/{chart['name']}", str(chart["version"])
        head = requests.head(
            f"http://{self.registry}/v2/{name}/manifests/{tag}",
            headers={"Accept": MANIFEST_MEDIA_TYPE},
            timeout=30,
        )
        head.raise_for_status()
        digest = head.headers["Docker-Content-Digest"]
        return Artifact(url=f"oci://{self.registry}/{name}", tag=tag, digest=digest)

    @staticmethod
    def helm_release(
        name: str,
        chart: Artifact,
        *,
        namespace: str = "",
        values: Mapping[str, Any] | None = None,
        interval: str = "10m",
    ) -> list[dict[str, Any]]:
        """An ``OCIRepository`` for the chart pushed by :meth:`push_chart` (``layerSelector``:
        the Helm chart layer, ``operation: copy``) and a ``HelmRelease`` named ``name`` whose
        ``chartRef`` is it; without ``namespace`` (a Kustomization's ``targetNamespace`` sets
        it) the manifests name none."""
        meta = {"name": name, **({"namespace": namespace} if namespace else {})}
        source = {
            "apiVersion": SOURCE_API,
            "kind": "OCIRepository",
            "metadata": dict(meta),
            "spec": {
                "interval": interval,
                "url": chart.url,
                "ref": {"tag": chart.tag},
                "insecure": True,
                "layerSelector": {"mediaType": HELM_CHART_MEDIA_TYPE, "operation": "copy"},
            },
        }
        release: dict[str, Any] = {
            "apiVersion": HELM_API,
            "kind": "HelmRelease",
            "metadata": dict(meta),
            "spec": {
                "interval": interval,
                "chartRef": {"kind": "OCIRepository", "name": name},
                "values": dict(values or {}),
            },
        }
        return [source, release]

    def _release_state(self, namespace: str, name: str) -> str:
        parts = []
        for kind in ("ocirepository", "helmrelease", "kustomization"):
            got = self.cluster.kubectl("get", kind, "-n", namespace, "-o", "json", check=False)
            if got.returncode != 0:
                parts.append(f"{kind} in {namespace}: {got.stderr.strip()}")
                continue
            for item in json.loads(got.stdout).get("items") or []:
                status = item.get("status") or {}
                conds = [
                    f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
                    for c in status.get("conditions") or []
                ]
                what = f"{kind} {namespace}/{item['metadata']['name']}"
                parts.append(f"{what}: {'; '.join(conds) or 'no conditions'}")
        return "\n".join(parts) + "\n" + self.diagnostics()

    def _release_ready(
        self, namespace: str, name: str, generation: int, token: str, forced: bool
    ) -> dict[str, Any] | None:
        release = self._get("helmrelease", namespace, name)
        status = release.get("status") or {}
        if release["metadata"]["generation"] != generation:
            return None
        if status.get("observedGeneration") != generation:
            return None
        if token and status.get("lastHandledReconcileAt") != token:
            return None
        if forced and status.get("lastHandledForceAt") != token:
            return None
        ready = [
            c
            for c in status.get("conditions") or []
            if c.get("type") == "Ready" and c.get("status") == "True"
        ]
        if not ready or ready[0].get("observedGeneration") != generation:
            return None
        return release

    def wait_release(
        self, namespace: str, name: str, generation: int, *, token: str = "", forced: bool = False
    ) -> dict[str, Any]:
        """The HelmRelease once Ready at ``generation`` (observed, and its Ready condition's;
        with ``token``, having handled that reconcile request, and with ``forced`` that force
        request); on timeout the conditions of the namespace's Flux objects and the
        controllers' log tails."""
        found: dict[str, Any] = {}

        def ready() -> bool:
            release = self._release_ready(namespace, name, generation, token, forced)
            if release is not None:
                found.update(release)
            return release is not None

        wait_until(
            ready,
            timeout=SYNC_TIMEOUT,
            what=f"helmrelease {namespace}/{name} ready at generation {generation}",
            abort=self._any_exited,
            diagnostics=lambda: self._release_state(namespace, name),
            interval=0.5,
        )
        return found

    def reconcile_release(self, namespace: str, name: str, *, force: bool = True) -> str:
        """Request a reconcile of HelmRelease ``name`` now (``requestedAt``; with ``force``
        also ``forceAt``: helm-controller runs a Helm upgrade even when nothing changed, as
        ``flux reconcile helmrelease --force`` does) and wait until it handled it, Ready at
        its generation. Returns the request token."""
        token = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        notes = [f"{REQUESTED_AT}={token}", *([f"{FORCE_AT}={token}"] if force else [])]
        self.cluster.kubectl(
            "annotate", "--overwrite", "helmrelease", "-n", namespace, name, *notes
        )
        generation = int(self._get("helmrelease", namespace, name)["metadata"]["generation"])
        self.wait_release(namespace, name, generation, token=token, forced=force)
        return token


_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "all_proxy", "kubeconfig"})


def start_flux(cluster: Cluster, workdir: Path, binaries: Mapping[str, Path], **kw: Any) -> Flux:
    """A started ``Flux`` (stopped again when starting fails)."""
    flux = Flux(cluster, workdir, binaries, **kw)
    flux.start()
    return flux


__all__ = [
    "FIELD_MANAGER",
    "FORCE_AT",
    "HELM_API",
    "HELM_CHART_MEDIA_TYPE",
    "KUSTOMIZE_NAMESPACE_LABEL",
    "KUSTOMIZE_NAME_LABEL",
    "REQUESTED_AT",
    "Flux",
    "TestbedError",
    "start_flux",
]
