"""Fixtures for integration tests: a real OpenBao dev server and real local clusters.

Session-scoped servers, function-scoped isolation:

- ``openbao`` (session) -> ``BaoServer``; ``kv_mount`` (function) -> a fresh KV v2 mount
  ``kv-<hex>``.
- ``cluster`` (session) -> ``Cluster``; ``kube_client`` (session) -> ``lightkube.Client`` for it;
  ``namespace`` (function) -> a fresh namespace on ``cluster`` (deleted afterwards, not awaited).
- ``cluster_factory`` (session) -> ``(name) -> Cluster``: an independent extra cluster (own etcd,
  ports, CA), started on first use of a name, stopped at session end.

Every test in this directory is marked ``integration``; tests using a cluster fixture are also
marked ``cluster``, tests using OpenBao ``vault``. A missing binary fails under ``CI`` and skips
elsewhere. Logs go under ``$CLOUDTASER_TESTENV_LOGS`` when set, else the pytest temp dir.

``CLOUDTASER_E2E_KUBECONFIGS`` (kubeconfig paths joined by ``os.pathsep``, e.g. two kind
clusters from ``nox -s e2e_kind``) replaces the local clusters: each new cluster name gets the next
kubeconfig (its current context); a test needing more clusters than listed is skipped.

OpenBao restarts (``openbao.restart()`` or ``stop()`` + ``start()``) wipe the dev server's data.
If a test leaves the server stopped, it is started again after that test.

Real node (``tests/testenv/realnode.py``): ``real_node`` (session) -> ``RealNode``, a control
plane plus containerd and a kubelet whose pods really run (one per host, behind a lock);
``node_namespace`` (function) -> a fresh namespace on it; ``node_client`` (function) -> a
``lightkube.Client`` for it. Tests using them are marked ``realnode`` (``pytest -m realnode``).
Missing prerequisites (root, overlayfs, runc, ...) fail under ``CI`` and skip elsewhere.

Every session first sweeps test-bed processes left by a killed runner (``sweep_leftovers``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testenv.binaries import find_bao, find_flux_binaries, find_k8s_binaries, missing
from tests.testenv.cluster import Cluster, ExternalCluster
from tests.testenv.flux import Flux, start_flux
from tests.testenv.openbao import BaoServer
from tests.testenv.process import sweep_leftovers
from tests.testenv.realnode import RealNode, missing_prerequisites
from tests.testenv.workloads import create_namespace, delete_namespace, unique_name

_INTEGRATION_DIR = Path(__file__).parent
_CLUSTER_FIXTURES = {"cluster", "cluster_factory", "namespace", "kube_client"}
_VAULT_FIXTURES = {"openbao", "kv_mount"}
_REALNODE_FIXTURES = {"real_node", "node_namespace", "node_client"}
_STATE: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realnode: needs the real node (root, containerd, kubelet; one per host)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR not in item.path.parents:
            continue
        item.add_marker(pytest.mark.integration)
        names = set(getattr(item, "fixturenames", ()))
        if names & _CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if names & _VAULT_FIXTURES:
            item.add_marker(pytest.mark.vault)
        if names & _REALNODE_FIXTURES:
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="session", autouse=True)
def _sweep_testbed_leftovers() -> None:
    """Kill test-bed processes whose runner is gone (a killed earlier run's servers)."""
    sweep_leftovers()


def _log_root(tmp_path_factory: pytest.TempPathFactory, what: str) -> Path:
    env = os.environ.get("CLOUDTASER_TESTENV_LOGS")
    if env:
        root = Path(env).resolve() / f"{what}-{os.getpid()}"
        root.mkdir(parents=True, exist_ok=True)
        return root
    return tmp_path_factory.mktemp(what)


# -- OpenBao -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A real ``bao server -dev`` on 127.0.0.1 with a random root token and a file audit device."""
    binary = find_bao()
    server = BaoServer(_log_root(tmp_path_factory, "openbao"), binary=binary)
    try:
        server.start()
        _STATE["openbao"] = server
        yield server
    finally:
        _STATE.pop("openbao", None)
        server.stop()


@pytest.fixture(autouse=True)
def _openbao_left_running() -> Iterator[None]:
    """A fault test that leaves the session OpenBao stopped must not break the next test."""
    yield
    server = _STATE.get("openbao")
    if server is not None and not server.running:
        server.start()


@pytest.fixture
def kv_mount(openbao: BaoServer) -> Iterator[str]:
    """A freshly enabled, uniquely named KV v2 mount (``kv-<hex>``), disabled afterwards."""
    mount = f"kv-{secrets.token_hex(4)}"
    openbao.enable_kv2(mount)
    yield mount
    if openbao.running:
        openbao.disable_mount(mount)


# -- Kubernetes --------------------------------------------------------------------------------


def _external_kubeconfigs() -> list[Path]:
    raw = os.environ.get("CLOUDTASER_E2E_KUBECONFIGS", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


@pytest.fixture(scope="session")
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Cluster]]:
    """``factory(name, nodes=2) -> Cluster``: start (or reuse, if still running) a cluster named
    ``name`` with its own etcd, ports and CA. All are stopped at session end."""
    clusters: dict[str, Cluster] = {}
    stopped: list[Cluster] = []
    external = _external_kubeconfigs()
    external_mode = bool(external)
    binaries = None if external_mode else find_k8s_binaries()

    def factory(name: str, *, nodes: int = 2) -> Cluster:
        existing = clusters.get(name)
        if existing is not None and existing.running:
            return existing
        if existing is not None:
            stopped.append(existing)
        root = _log_root(tmp_path_factory, f"cluster-{name}")
        if external_mode:
            if not external:
                pytest.skip("needs more external clusters than CLOUDTASER_E2E_KUBECONFIGS lists")
            ext = ExternalCluster(name, root, source=external.pop(0))
            clusters[name] = ext
            ext.start()
            return ext
        cl = Cluster(name, root, log_dir=root / "logs", nodes=nodes, binaries=binaries)
        clusters[name] = cl
        cl.start()
        return cl

    try:
        yield factory
    finally:
        errors = []
        for cl in [*clusters.values(), *stopped]:
            try:
                cl.stop()
            except Exception as exc:
                errors.append(f"{cl.name}: {exc}")
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="session")
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """The shared session cluster (``ct-main``): 2 kwok nodes, ready for workloads."""
    return cluster_factory("ct-main")


@pytest.fixture(scope="session")
def kube_client(cluster: Cluster) -> Iterator[Any]:
    """A ``lightkube.Client`` for the session cluster (admin)."""
    client = cluster.client()
    yield client
    client.close()


@pytest.fixture
def namespace(cluster: Cluster, kube_client: Any) -> Iterator[str]:
    """A fresh, uniquely named namespace on ``cluster``; deleted afterwards (not awaited)."""
    name = create_namespace(kube_client, f"t-{secrets.token_hex(4)}")
    yield name
    delete_namespace(kube_client, name)


# -- the real node -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A control plane plus a real node ``127.0.0.1`` (containerd + kubelet + local registry).

    Restartable (``stop()``/``start()``): ask it for clients per test, do not keep them.
    """
    absent = missing_prerequisites()
    if absent:
        missing(f"the real node needs: {'; '.join(absent)}")
    node = RealNode(_log_root(tmp_path_factory, "realnode"))
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def node_client(real_node: RealNode) -> Iterator[Any]:
    """A ``lightkube.Client`` (admin) for the real node's cluster."""
    client = real_node.client()
    yield client
    client.close()


@pytest.fixture
def node_namespace(real_node: RealNode) -> Iterator[str]:
    """A fresh namespace on the real node's cluster (deleted afterwards, not awaited)."""
    name = real_node.create_namespace(f"rn-{secrets.token_hex(4)}")
    yield name
    if real_node.running:
        real_node.delete_namespace(name)


@pytest.fixture(scope="session")
def flux(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    """Flux's own source-, kustomize- and helm-controller against the session cluster, and a
    local OCI registry for "Git" (tests/testenv/flux.py): started once for every kwok GitOps
    module; each test works in its own namespace (:func:`gitops_ns`)."""
    started = start_flux(cluster, tmp_path_factory.mktemp("flux"), find_flux_binaries(), helm=True)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def gitops_ns(kube_client: Any) -> Iterator[str]:
    """A fresh namespace for one GitOps test's "Git" objects and workloads."""
    name = create_namespace(kube_client, unique_name("gitops"))
    yield name
    delete_namespace(kube_client, name)
