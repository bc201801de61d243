"""``cloudtaser target discover`` against a real API server (etcd + kube-apiserver).

Discovery reads objects only (no rollouts), so this module runs its own control plane with just
etcd and kube-apiserver (the testenv ``Cluster`` without controllers, scheduler or kwok): lighter
on small machines, and independent of the node simulation. Every test creates its objects in
namespaces of its own and scopes discovery with ``-n`` (or a unique label selector), so tests
never see each other's objects. The CLI runs as a subprocess, exactly as an operator runs it;
canary Secret values must never appear in the plan, stdout or stderr.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment

from cloudtaser import plan as planlib
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import (
    ContainerSpec,
    create_namespace,
    create_secret,
    create_service_account,
    create_workload,
    daemonset,
    delete_namespace,
    deployment,
    statefulset,
)

pytestmark = pytest.mark.integration

CANARY = f"CANARY-{secrets.token_hex(8)}"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    plan_text: str

    @property
    def plan(self) -> planlib.MigrationPlan:
        return planlib.loads(self.plan_text)

    def assert_no_canary(self) -> None:
        for where, text in (
            ("plan", self.plan_text),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
        ):
            assert CANARY not in text, f"a Secret value leaked into {where}"
            assert base64.b64encode(CANARY.encode()).decode()[:16] not in text, where
        assert "Traceback" not in self.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Discovery needs objects, not rollouts: etcd and kube-apiserver only."""
    root = tmp_path_factory.mktemp("discover-cluster")
    api = Cluster("disc", root, log_dir=root / "logs", controllers=False)
    try:
        api.start()
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def kube_client(cluster: Cluster) -> Iterator[Any]:
    client = cluster.client()
    yield client
    client.close()


@pytest.fixture
def namespace(kube_client: Any) -> Iterator[str]:
    name = create_namespace(kube_client)
    yield name
    delete_namespace(kube_client, name)


def discover(kubeconfig: Path, out: Path | str, *args: str) -> Run:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudtaser",
            "target",
            "discover",
            "--kubeconfig",
            str(kubeconfig),
            "--output-plan",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if str(out) == "-":
        plan_text = result.stdout
    else:
        plan_text = Path(out).read_text() if Path(out).exists() else ""
    return Run(result.returncode, result.stdout, result.stderr, plan_text)


def workloads_of(plan: planlib.MigrationPlan) -> dict[tuple[str, str, str], planlib.Workload]:
    return {(t.namespace, str(w.kind), w.name): w for t, w in plan.iter_workloads()}


def sa_token(client: Any, ns: str, name: str) -> str:
    """TokenRequest for a ServiceAccount (``kubectl create token``)."""
    from lightkube.models.authentication_v1 import TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccountToken

    req = ServiceAccountToken(
        metadata=ObjectMeta(name=name, namespace=ns),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
    )
    return str(client.create(req, name, namespace=ns).status.token)


def apply(client: Any, obj: dict[str, Any]) -> None:
    client.create(codecs.from_dict(obj))


# -- one realistic namespace, discovered once --------------------------------------------------


@dataclass
class Scene:
    ns: str
    other: str
    run: Run


@pytest.fixture(scope="module")
def scene(
    cluster: Cluster, kube_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    ns = create_namespace(kube_client, f"disc-{secrets.token_hex(4)}")
    other = create_namespace(kube_client, f"disc-{secrets.token_hex(4)}")
    try:
        c = kube_client
        create_secret(c, ns, "db", {"password": CANARY, "username": CANARY + "-user"})
        create_secret(c, ns, "api", {"token": CANARY, "ca.crt": CANARY})
        create_secret(c, ns, "tls", {"tls.key": CANARY})
        create_secret(c, ns, "alt", {"pw": CANARY})
        create_secret(c, other, "db", {"password": CANARY})
        create_service_account(c, ns, "api-sa")
        # Deployment: secretKeyRef + envFrom with prefix, two containers, an init container
        create_workload(
            c,
            deployment(
                "api",
                ns,
                replicas=3,
                service_account="api-sa",
                containers=[
                    ContainerSpec(name="app", secret_env={"DB_PASSWORD": ("db", "password")}),
                    ContainerSpec(name="side", env_from=[("api", "API_")]),
                ],
                init_containers=[
                    ContainerSpec(name="migrate", secret_env={"MIGRATE_USER": ("db", "username")})
                ],
            ),
        )
        # StatefulSet: envFrom without prefix (shares Secret db with the Deployment)
        create_workload(c, statefulset("store", ns, containers=[ContainerSpec(env_from=["db"])]))
        # a DaemonSet with one secret key reference
        create_workload(
            c,
            daemonset(
                "agent", ns, containers=[ContainerSpec(secret_env={"PW": ("db", "password")})]
            ),
        )
        # optional references to Secrets that do not exist
        create_workload(
            c,
            deployment(
                "optional",
                ns,
                containers=[
                    ContainerSpec(
                        secret_env={"MAYBE": ("nowhere", "k")},
                        env_from=["nothing"],
                        optional_secrets=True,
                    )
                ],
            ),
        )
        # a non-optional envFrom of a Secret that does not exist
        create_workload(c, deployment("broken", ns, containers=[ContainerSpec(env_from=["ghost"])]))
        # files only, and mixed (env + projected volume)
        create_workload(
            c,
            deployment(
                "files",
                ns,
                containers=[ContainerSpec(mounts={"certs": "/certs"})],
                secret_volumes={"certs": "tls"},
            ),
        )
        create_workload(
            c,
            deployment(
                "mixed",
                ns,
                containers=[
                    ContainerSpec(
                        secret_env={"PW": ("db", "password")}, mounts={"bundle": "/bundle"}
                    )
                ],
                projected_volumes={"bundle": ["tls", "api"]},
            ),
        )
        # Vault Agent injector
        create_workload(
            c,
            deployment(
                "legacy",
                ns,
                pod_annotations={
                    "vault.hashicorp.com/agent-inject": "true",
                    "vault.hashicorp.com/role": "legacy",
                    "vault.hashicorp.com/agent-inject-secret-db": "secret/data/legacy/db",
                    "vault.hashicorp.com/agent-inject-secret-config": "secret/legacy/config",
                },
            ),
        )
        # skips: already protected, no secrets
        create_workload(
            c,
            deployment(
                "done",
                ns,
                containers=[ContainerSpec(secret_env={"PW": ("db", "password")})],
                pod_annotations={"cloudtaser.io/inject": "true"},
            ),
        )
        create_workload(c, deployment("plain", ns, containers=[ContainerSpec(env={"A": "b"})]))
        # two Secrets feed one env var
        create_workload(
            c,
            deployment(
                "clash",
                ns,
                containers=[
                    ContainerSpec(name="one", secret_env={"PASS": ("db", "password")}),
                    ContainerSpec(name="two", secret_env={"PASS": ("alt", "pw")}),
                ],
            ),
        )
        # the other namespace: same Secret name, different tenant
        create_workload(c, deployment("api", other, containers=[ContainerSpec(env_from=["db"])]))
        out = tmp_path_factory.mktemp("discover") / "plan.yaml"
        run = discover(cluster.kubeconfig, out, "-n", ns, "-n", other, "--name", "itest")
        yield Scene(ns, other, run)
    finally:
        delete_namespace(kube_client, ns)
        delete_namespace(kube_client, other)


def test_discover_writes_a_valid_plan_without_secret_values(scene: Scene, cluster: Cluster) -> None:
    run = scene.run
    assert run.returncode == 0, run.stderr
    run.assert_no_canary()
    plan = run.plan
    assert plan.metadata.name == "itest"
    assert plan.metadata.cluster == cluster.server
    assert plan.metadata.created_at is not None
    assert plan.metadata.created_at.utcoffset() is not None
    assert plan.metadata.created_at.microsecond == 0
    assert plan.metadata.created_by
    assert [t.namespace for t in plan.tenants] == sorted([scene.ns, scene.other])
    assert "plan: 2 tenants" in run.stderr


def _discover_on_a_terminal(kubeconfig: Path, out: Path, *args: str) -> tuple[int, str]:
    """Run discover with stderr on a pseudo-terminal, as an operator's shell has it."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    try:
        # a 40-row, 200-column window: the status line is cut to the terminal's width
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "cloudtaser", "target", "discover"),
                *("--kubeconfig", str(kubeconfig), "--output-plan", str(out), *args),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env={**os.environ, "TERM": "xterm"},
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        return proc.wait(timeout=120), b"".join(chunks).decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_discover_on_a_terminal_shows_a_live_counter_with_eta_and_a_tally(
    scene: Scene, cluster: Cluster, tmp_path: Path
) -> None:
    code, screen = _discover_on_a_terminal(
        cluster.kubeconfig, tmp_path / "p.yaml", "-n", scene.ns, "-n", scene.other
    )
    assert code == 0, screen
    assert CANARY not in screen
    # the status line is redrawn in place ("\r" + erase line), never a new line per step
    drawn = [part.split("\x1b[2K", 1)[1] for part in screen.split("\r") if "\x1b[2K" in part]
    status = [line for line in drawn if line.startswith("[")]
    # listing: 5 kinds (CloudTaser's three, CronJobs and Jobs; no Rollout CRD here) x 2
    # namespaces = 10 list calls
    assert any(line.startswith("[10/10] ") and "listed jobs" in line for line in status)
    assert any(line.startswith("[1/10] ") and "ETA" in line for line in status)
    # reading the key names: one step per Secret envFrom or a Secret volume needs (db, api,
    # ghost, tls, alt in one namespace, db in the other)
    reads = [line for line in status if "Secrets (namespace" in line]
    assert reads
    assert all("elapsed" in line for line in reads)
    assert reads[-1].startswith("[6/6] ")
    assert "workloads scanned" in screen.rsplit("\x1b[2K", 1)[-1]  # the closing tally


def test_discover_piped_prints_no_line_per_list_or_secret(scene: Scene) -> None:
    lines = scene.run.stderr.splitlines()
    assert not [line for line in lines if "listed " in line or "Secrets (namespace" in line]
    assert any("workloads scanned" in line for line in lines)


def test_discover_maps_deployment_containers_and_init_containers(scene: Scene) -> None:
    w = workloads_of(scene.run.plan)[(scene.ns, "Deployment", "api")]
    assert w.status is planlib.WorkloadStatus.PENDING
    assert w.replicas == 3
    assert w.service_account == "api-sa"
    mapping = {(s.source, s.via): (s.vault_path, s.fields) for s in w.secrets}
    assert mapping[("db", "env")] == (
        f"secret/data/{scene.ns}/db",
        {"password": "DB_PASSWORD", "username": "MIGRATE_USER"},
    )
    # envFrom with prefix: every key, ca.crt too (the cluster's relaxed env-name rule, 1.32+)
    assert scene.run.plan.metadata.env_name_rule == "relaxed"
    path, fields = mapping[("api", "envFrom")]
    assert path == f"secret/data/{scene.ns}/api"
    assert fields == {"ca.crt": "API_ca.crt", "token": "API_token"}


def test_discover_env_from_without_prefix_and_shared_secret_paths(scene: Scene) -> None:
    found = workloads_of(scene.run.plan)
    store = found[(scene.ns, "StatefulSet", "store")]
    (ref,) = store.secrets
    assert ref.via == "envFrom"
    assert ref.fields == {"password": "password", "username": "username"}
    agent = found[(scene.ns, "DaemonSet", "agent")]
    assert agent.replicas is None
    assert agent.secrets[0].vault_path == ref.vault_path == f"secret/data/{scene.ns}/db"
    # same Secret name in another namespace: another tenant, another path
    other = found[(scene.other, "Deployment", "api")]
    assert other.secrets[0].vault_path == f"secret/data/{scene.other}/db"


def test_discover_records_optional_and_missing_secrets_with_warnings(scene: Scene) -> None:
    found = workloads_of(scene.run.plan)
    optional = found[(scene.ns, "Deployment", "optional")]
    assert optional.status is planlib.WorkloadStatus.PENDING
    assert all(s.optional for s in optional.secrets)
    by_source = {s.source: s for s in optional.secrets}
    assert by_source["nowhere"].fields == {"k": "MAYBE"}
    assert "optional" in (by_source["nothing"].note or "")
    broken = found[(scene.ns, "Deployment", "broken")]
    assert "not found" in (broken.secrets[0].note or "")
    assert "ghost does not exist" in scene.run.stderr


def test_discover_records_secret_files(scene: Scene) -> None:
    found = workloads_of(scene.run.plan)
    files = found[(scene.ns, "Deployment", "files")]
    # read only as files: migrated to memory volumes now (issue 29), no longer skipped
    assert files.status is planlib.WorkloadStatus.PENDING, files.reason
    (certs,) = files.secret_files
    assert (certs.source, certs.volume, certs.vault_path) == (
        "tls",
        "certs",
        f"secret/data/{scene.ns}/tls",
    )
    assert [(f.key, f.file) for f in certs.files] == [("tls.key", "tls.key")]
    assert [(m.container, m.mount_path, m.read_only) for m in certs.mounts] == [
        ("app", "/certs", True)
    ]
    mixed = found[(scene.ns, "Deployment", "mixed")]
    assert mixed.status is planlib.WorkloadStatus.PENDING
    assert [(f.source, f.volume, f.projected) for f in mixed.secret_files] == [
        ("tls", "bundle", True),
        ("api", "bundle", True),
    ]
    assert [f.file for f in mixed.secret_files[1].files] == ["ca.crt", "token"]


def test_discover_records_vault_agent_paths(scene: Scene) -> None:
    legacy = workloads_of(scene.run.plan)[(scene.ns, "Deployment", "legacy")]
    assert {(s.source, s.vault_path) for s in legacy.secrets} == {
        ("vault-agent:db", "secret/data/legacy/db"),
        ("vault-agent:config", "secret/data/legacy/config"),
    }
    assert all(s.via == "vaultAgent" for s in legacy.secrets)
    # paths outside the namespace's scope: kept for review, never granted (issue 18, finding 2)
    assert legacy.status is planlib.WorkloadStatus.SKIPPED
    assert "outside namespace" in (legacy.reason or "")


def test_discover_skips_protected_and_secretless_workloads(scene: Scene) -> None:
    found = workloads_of(scene.run.plan)
    assert (scene.ns, "Deployment", "done") not in found
    assert (scene.ns, "Deployment", "plain") not in found
    assert "already protected" in scene.run.stderr
    assert "uses no Secrets" in scene.run.stderr


def test_discover_flags_two_secrets_feeding_one_env_var(scene: Scene) -> None:
    clash = workloads_of(scene.run.plan)[(scene.ns, "Deployment", "clash")]
    assert clash.status is planlib.WorkloadStatus.SKIPPED
    assert "PASS" in (clash.reason or "")
    assert "alt.pw" in (clash.reason or "")
    assert "db.password" in (clash.reason or "")


def test_discover_orders_workloads_by_kind_then_name(scene: Scene) -> None:
    tenant = next(t for t in scene.run.plan.tenants if t.namespace == scene.ns)
    order = [(str(w.kind), w.name) for w in tenant.workloads]
    kinds = ["Deployment", "StatefulSet", "DaemonSet"]
    assert order == sorted(order, key=lambda kw: (kinds.index(kw[0]), kw[1]))


def test_discover_is_deterministic(scene: Scene, cluster: Cluster, tmp_path: Path) -> None:
    again = discover(cluster.kubeconfig, "-", "-n", scene.other, "-n", scene.ns, "--name", "itest")
    assert again.returncode == 0, again.stderr
    again.assert_no_canary()
    strip = lambda text: [line for line in text.splitlines() if "createdAt" not in line]  # noqa: E731
    assert strip(again.plan_text) == strip(scene.run.plan_text)


# -- scope, naming and output options ----------------------------------------------------------


def test_discover_selector_exclusions_and_system_namespaces(
    cluster: Cluster, kube_client: Any, tmp_path: Path
) -> None:
    label = f"disc-{secrets.token_hex(4)}"
    keep = create_namespace(kube_client)
    drop = create_namespace(kube_client)
    try:
        for ns in (keep, drop, "kube-system"):
            create_workload(
                kube_client,
                deployment(
                    f"sel-{label}",
                    ns,
                    labels={"suite": label},
                    containers=[ContainerSpec(secret_env={"PW": ("db", "pw")})],
                ),
            )
        create_workload(
            kube_client,
            deployment(
                "unlabelled", keep, containers=[ContainerSpec(secret_env={"PW": ("db", "pw")})]
            ),
        )
        run = discover(
            cluster.kubeconfig,
            tmp_path / "p.yaml",
            "-l",
            f"suite={label}",
            "--exclude-namespace",
            drop,
        )
        assert run.returncode == 0, run.stderr
        found = workloads_of(run.plan)
        assert set(found) == {(keep, "Deployment", f"sel-{label}")}
        assert "excluded namespace" in run.stderr
        assert "listing deployments in all namespaces" in run.stderr
    finally:
        delete_namespace(kube_client, keep)
        delete_namespace(kube_client, drop)
        kube_client.delete(Deployment, f"sel-{label}", namespace="kube-system")


def test_discover_isolated_paths_mounts_and_stdout(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_workload(
        kube_client,
        deployment("api", namespace, containers=[ContainerSpec(secret_env={"PW": ("db", "pw")})]),
    )
    run = discover(
        cluster.kubeconfig,
        "-",
        "-n",
        namespace,
        "--isolate",
        "--cluster-name",
        "eu-1",
        "--kv-mount",
        "kv",
        "--auth-mount",
        "kubernetes-eu-1",
    )
    assert run.returncode == 0, run.stderr
    plan = run.plan
    assert plan.metadata.kv_mount == "kv"
    assert plan.metadata.auth_mount == "kubernetes-eu-1"
    assert plan.metadata.path_template == "{mount}/data/{cluster}/{namespace}/{secret}"
    (w,) = workloads_of(plan).values()
    assert w.secrets[0].vault_path == f"kv/data/eu-1/{namespace}/db"
    assert "apiVersion: cloudtaser.io/v1" in run.stdout
    assert "cloudtaser:" not in run.stdout  # progress goes to stderr


def test_discover_custom_template_and_bad_template(
    cluster: Cluster, kube_client: Any, namespace: str
) -> None:
    create_workload(
        kube_client,
        deployment("api", namespace, containers=[ContainerSpec(secret_env={"PW": ("db", "pw")})]),
    )
    run = discover(
        cluster.kubeconfig,
        "-",
        "-n",
        namespace,
        "--path-template",
        "apps/data/k8s/{namespace}/{secret}",
    )
    assert run.returncode == 0, run.stderr
    (w,) = workloads_of(run.plan).values()
    assert w.secrets[0].vault_path == f"apps/data/k8s/{namespace}/db"
    bad = discover(
        cluster.kubeconfig, "-", "-n", namespace, "--path-template", "secret/data/{secret}"
    )
    assert bad.returncode == 2
    assert "{namespace}" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_discover_refuses_to_overwrite_recorded_progress(
    cluster: Cluster, kube_client: Any, namespace: str, tmp_path: Path
) -> None:
    create_workload(
        kube_client,
        deployment("api", namespace, containers=[ContainerSpec(secret_env={"PW": ("db", "pw")})]),
    )
    out = tmp_path / "plan.yaml"
    first = discover(cluster.kubeconfig, out, "-n", namespace)
    assert first.returncode == 0, first.stderr
    # a plain re-run replaces a plan without progress
    assert discover(cluster.kubeconfig, out, "-n", namespace).returncode == 0
    plan = planlib.load(out)
    next(iter(plan.tenants[0].workloads)).set_status(planlib.WorkloadStatus.MIGRATED, by="test")
    planlib.save(plan, out)
    before = out.read_text()
    refused = discover(cluster.kubeconfig, out, "-n", namespace)
    assert refused.returncode == 2
    assert "progress" in refused.stderr
    assert "--force" in refused.stderr
    assert out.read_text() == before
    forced = discover(cluster.kubeconfig, out, "-n", namespace, "--force")
    assert forced.returncode == 0, forced.stderr
    assert planlib.load(out).tenants[0].workloads[0].status is planlib.WorkloadStatus.PENDING
    # a file that is not a plan is never overwritten silently
    notes = tmp_path / "notes.yaml"
    notes.write_text("important: true\n")
    assert discover(cluster.kubeconfig, notes, "-n", namespace).returncode == 2
    assert notes.read_text() == "important: true\n"


# -- errors ----------------------------------------------------------------------------------


def kubeconfig_for(
    cluster: Cluster, path: Path, user: dict[str, Any], server: str | None = None
) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": server or cluster.server,
                    "certificate-authority-data": base64.b64encode(
                        cluster.ca_pem.encode()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_discover_unreachable_cluster(cluster: Cluster, tmp_path: Path) -> None:
    cfg = kubeconfig_for(cluster, tmp_path / "kc", {"token": "x"}, server="https://127.0.0.1:1")
    run = discover(cfg, tmp_path / "p.yaml", "-n", "default")
    assert run.returncode == 3
    assert "cannot reach the API server" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_discover_bad_kubeconfig_and_context(cluster: Cluster, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("{not: [yaml")
    run = discover(garbage, tmp_path / "p.yaml")
    assert run.returncode == 2
    assert "kubeconfig" in run.stderr
    run = discover(cluster.kubeconfig, tmp_path / "p.yaml", "--context", "nope")
    assert run.returncode == 2
    assert "context 'nope' not found" in run.stderr
    missing = discover(tmp_path / "missing", tmp_path / "p.yaml")
    assert missing.returncode == 2
    for r in (run, missing):
        assert "Traceback" not in r.stderr


def test_discover_rejected_credentials_401(cluster: Cluster, tmp_path: Path) -> None:
    token = "not-a-token-" + secrets.token_hex(8)
    cfg = kubeconfig_for(cluster, tmp_path / "kc", {"token": token})
    run = discover(cfg, tmp_path / "p.yaml", "-n", "default")
    assert run.returncode == 3
    assert "401" in run.stderr
    assert token not in run.stderr
    assert "Traceback" not in run.stderr


@pytest.fixture
def restricted(
    cluster: Cluster, kube_client: Any, tmp_path: Path
) -> Iterator[tuple[Path, str, str]]:
    """A ServiceAccount that may list workloads in namespace ``ok`` only, and read no Secrets."""
    ok = create_namespace(kube_client)
    closed = create_namespace(kube_client)
    try:
        create_service_account(kube_client, ok, "reader")
        apply(
            kube_client,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "reader", "namespace": ok},
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "resources": ["deployments", "statefulsets", "daemonsets"],
                        "verbs": ["list"],
                    }
                ],
            },
        )
        apply(
            kube_client,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "reader", "namespace": ok},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ok}],
            },
        )
        create_secret(kube_client, ok, "db", {"password": CANARY})
        create_workload(
            kube_client,
            deployment(
                "env", ok, containers=[ContainerSpec(secret_env={"PW": ("db", "password")})]
            ),
        )
        create_workload(
            kube_client, deployment("bulk", ok, containers=[ContainerSpec(env_from=["db"])])
        )
        create_workload(
            kube_client, deployment("hidden", closed, containers=[ContainerSpec(env_from=["db"])])
        )
        token = sa_token(kube_client, ok, "reader")
        yield kubeconfig_for(cluster, tmp_path / "kc", {"token": token}), ok, closed
    finally:
        delete_namespace(kube_client, ok)
        delete_namespace(kube_client, closed)


def test_discover_403_on_a_namespace_and_on_secrets_continues_and_records(
    restricted: tuple[Path, str, str], tmp_path: Path
) -> None:
    cfg, ok, closed = restricted
    out = tmp_path / "p.yaml"
    run = discover(cfg, out, "-n", ok, "-n", closed)
    assert run.returncode == 1, run.stderr  # written, but incomplete
    run.assert_no_canary()
    plan = run.plan
    found = workloads_of(plan)
    assert found[(ok, "Deployment", "env")].status is planlib.WorkloadStatus.PENDING
    bulk = found[(ok, "Deployment", "bulk")]
    assert bulk.status is planlib.WorkloadStatus.SKIPPED
    assert "could not be read" in (bulk.reason or "")
    assert not any(ns == closed for ns, _k, _n in found)
    unread = "\n".join(plan.metadata.unread)
    assert f"list deployments.apps in namespace {closed}" in unread
    assert f"keys of Secret {ok}/db" in unread
    assert "get secrets" in unread
    assert "could not read" in run.stderr
    assert "INCOMPLETE" in run.stderr


def test_discover_403_cluster_wide_names_the_missing_permission(
    restricted: tuple[Path, str, str], tmp_path: Path
) -> None:
    cfg, _ok, _closed = restricted
    run = discover(cfg, tmp_path / "p.yaml")
    assert run.returncode == 3
    assert "403" in run.stderr
    assert "list deployments" in run.stderr
    assert "--namespace" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "p.yaml").exists()
