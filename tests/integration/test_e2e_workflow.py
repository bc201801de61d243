"""The whole workflow end to end (issue 8): two real clusters, one real OpenBao, the real CLI.

Sample applications in several namespaces of two local clusters consume Kubernetes Secrets every
supported way (env ``secretKeyRef``, ``envFrom`` with a prefix, a secret volume, a Vault Agent
injector annotation, an init container, one workload already injected). Every step then runs
``python -m cloudtaser`` in a subprocess with access to only the side it needs:

* ``source …`` commands get an environment with no usable kubeconfig (``KUBECONFIG`` names a
  file that does not exist, ``HOME`` is an empty directory);
* ``target discover`` / ``target protect`` get no ``VAULT_*``/``BAO_*`` variable and never learn
  the OpenBao address: protect writes the *pod network's* vault address
  (``https://openbao.vault.svc:8200``), and the OpenBao audit log proves no request reached the
  vault while they ran;
* ``target connect`` is the one step that gets both.

Steps: 1) discover two plans; 2) review (no canary value in them, ``plan validate``, the reviewer
fills in the fields of the Vault Agent workload); 3) ``source apply-plan`` both, policies and roles
of both clusters coexist; 4) ``bao kv put``; 5) ``source verify-plan`` with one secret missing
(exit 1), then complete (exit 0); 6) ``target connect`` both, ``protect --yes`` for plan A and
``protect --interactive`` with answers on stdin for plan B (one workload declined); 7) the runtime
wrapper, configured from the annotations of the *live* pod templates, with a TokenRequest token of
a protected workload's ServiceAccount gets exactly that workload's secrets.

The plans are byte-identical before and after steps 3 and 5; after step 6 every workload is
``migrated`` or ``skipped``; no canary (cluster or vault) appears in any output of cloudtaser.
Parametrized over the shared path layout and the isolated one (``--isolate``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudtaser import plan as planlib
from tests.integration.connect_helpers import env_dump_command, read_dump, run_wrapper
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import CLI_AGENT, BaoServer
from tests.testenv.workloads import (
    KINDS,
    ContainerSpec,
    create_namespace,
    create_secret,
    create_service_account,
    create_workload,
    daemonset,
    delete_namespace,
    deployment,
    request_token,
    statefulset,
    wait_rollout,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: The vault address as the pods would reach it; the target commands never learn the real one.
POD_VAULT_ADDRESS = "https://openbao.vault.svc:8200"
AUDIENCE = "openbao"
TIMEOUT = 300


# -- running the CLI with one side only ---------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def ok(self, code: int = 0) -> Run:
        assert self.returncode == code, (
            f"`cloudtaser {' '.join(self.argv[:2])}` exited {self.returncode}, expected {code}\n"
            f"stdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"
        )
        assert "Traceback" not in self.stderr
        return self


@dataclass
class Sides:
    """Environments with access to one side only, and a log of every cloudtaser run."""

    tmp: Path
    openbao: BaoServer
    runs: list[Run] = field(default_factory=list)

    def _base(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VAULT_", "BAO_")) and k not in {"KUBECONFIG", "HOME"}
        }
        home = self.tmp / "empty-home"
        home.mkdir(exist_ok=True)
        env["HOME"] = str(home)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["NO_COLOR"] = "1"
        return env

    def cluster_only(self) -> dict[str, str]:
        """No VAULT_*/BAO_* variable at all; the kubeconfig is passed as a flag."""
        return self._base()

    def vault_only(self) -> dict[str, str]:
        """No usable kubeconfig: KUBECONFIG names a missing file, HOME is empty."""
        env = self._base()
        env["KUBECONFIG"] = str(self.tmp / "no-such-dir" / "kubeconfig")
        return env

    def both(self) -> dict[str, str]:
        return self._base()

    def run(self, env: dict[str, str], *argv: str, input: str | None = None) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "cloudtaser", *argv],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            cwd=self.tmp,
        )
        run = Run(list(argv), proc.returncode, proc.stdout, proc.stderr)
        self.runs.append(run)
        return run

    def token_file(self) -> Path:
        path = self.tmp / "operator-token"
        if not path.exists():
            path.write_text(self.openbao.token)
            path.chmod(0o600)
        return path


# -- the sample applications --------------------------------------------------------------------


@dataclass
class Site:
    """One cluster with its sample applications and its plan."""

    label: str
    cluster: Cluster
    client: Any
    plan_name: str
    auth_mount: str
    plan_path: Path
    namespaces: list[str]
    #: Every Secret value put into this cluster (must never leave it through cloudtaser).
    canaries: list[str]


def _canary(tag: str) -> str:
    return f"K8S-CANARY-{tag}-{secrets.token_hex(6)}"


def _namespace(client: Any, name: str, created: list[tuple[Any, str]]) -> str:
    create_namespace(client, name)
    created.append((client, name))
    return name


def _populate_cluster_a(
    client: Any, shop: str, pay: str, kv: str, created: list[tuple[Any, str]]
) -> list[str]:
    canaries: list[str] = []

    def secret(ns: str, name: str, keys: list[str]) -> None:
        values = {k: _canary(f"a-{name}") for k in keys}
        canaries.extend(values.values())
        create_secret(client, ns, name, values)

    _namespace(client, shop, created)
    _namespace(client, pay, created)
    secret(shop, "db", ["username", "password"])
    secret(shop, "cache-cfg", ["url", "auth"])
    secret(shop, "tls", ["tls.key"])
    secret(pay, "stripe", ["api_key"])
    secret(pay, "migrations", ["token"])
    for ns, sa in ((shop, "web"), (shop, "cache"), (pay, "agent"), (pay, "legacy")):
        create_service_account(client, ns, sa)
    specs = [
        # env secretKeyRef
        deployment(
            "web",
            shop,
            replicas=2,
            service_account="web",
            containers=[
                ContainerSpec(
                    secret_env={"DB_USER": ("db", "username"), "DB_PASSWORD": ("db", "password")}
                )
            ],
        ),
        # envFrom with a prefix
        statefulset(
            "cache",
            shop,
            service_account="cache",
            containers=[ContainerSpec(env_from=[("cache-cfg", "CACHE_")])],
        ),
        # a secret volume only: migrated to a memory volume (issue 29)
        deployment(
            "certs",
            shop,
            containers=[ContainerSpec(mounts={"tls": "/etc/tls"})],
            secret_volumes={"tls": "tls"},
        ),
        # already injected: not in the plan at all
        deployment(
            "done",
            shop,
            containers=[ContainerSpec(secret_env={"PW": ("db", "password")})],
            pod_annotations={"cloudtaser.io/inject": "true"},
        ),
        # an init container (and a container) with secretKeyRef
        daemonset(
            "agent",
            pay,
            service_account="agent",
            containers=[ContainerSpec(secret_env={"STRIPE_KEY": ("stripe", "api_key")})],
            init_containers=[
                ContainerSpec(name="migrate", secret_env={"MIGRATE_TOKEN": ("migrations", "token")})
            ],
        ),
        # the HashiCorp Vault Agent injector
        deployment(
            "legacy",
            pay,
            service_account="legacy",
            pod_annotations={
                "vault.hashicorp.com/agent-inject": "true",
                "vault.hashicorp.com/role": "legacy",
                "vault.hashicorp.com/agent-inject-secret-config": f"{kv}/data/legacy/config",
            },
        ),
    ]
    for spec in specs:
        create_workload(client, spec)
    return canaries


def _populate_cluster_b(
    client: Any, shop: str, ops: str, created: list[tuple[Any, str]]
) -> list[str]:
    canaries: list[str] = []

    def secret(ns: str, name: str, keys: list[str]) -> None:
        values = {k: _canary(f"b-{name}") for k in keys}
        canaries.extend(values.values())
        create_secret(client, ns, name, values)

    _namespace(client, shop, created)
    _namespace(client, ops, created)
    secret(shop, "db", ["username", "password"])
    secret(ops, "worker-env", ["token", "region"])
    secret(ops, "queue", ["user", "pass"])
    secret(ops, "ca", ["ca.crt"])
    for ns, sa in ((shop, "web"), (ops, "worker"), (ops, "queue")):
        create_service_account(client, ns, sa)
    specs = [
        # the same application as in cluster A (same namespace and Secret names)
        deployment(
            "web",
            shop,
            service_account="web",
            containers=[
                ContainerSpec(
                    secret_env={"DB_USER": ("db", "username"), "DB_PASSWORD": ("db", "password")}
                )
            ],
        ),
        # envFrom with a prefix plus a secret volume (both migrate)
        deployment(
            "worker",
            ops,
            service_account="worker",
            containers=[ContainerSpec(env_from=[("worker-env", "W_")], mounts={"ca": "/etc/ca"})],
            secret_volumes={"ca": "ca"},
        ),
        # secretKeyRef in an init container and a container
        statefulset(
            "queue",
            ops,
            service_account="queue",
            containers=[ContainerSpec(secret_env={"Q_PASS": ("queue", "pass")})],
            init_containers=[ContainerSpec(name="init", secret_env={"Q_USER": ("queue", "user")})],
        ),
        # declined at the interactive prompt
        daemonset(
            "collector",
            ops,
            containers=[ContainerSpec(secret_env={"COLLECTOR_TOKEN": ("worker-env", "token")})],
        ),
        # already injected
        deployment(
            "already",
            ops,
            containers=[ContainerSpec(secret_env={"Q": ("queue", "pass")})],
            pod_annotations={"cloudtaser.io/inject": "true"},
        ),
    ]
    for spec in specs:
        create_workload(client, spec)
    return canaries


@pytest.fixture(scope="module")
def clusters(
    cluster_factory: Callable[..., Cluster],
) -> Iterator[tuple[Any, Any, Cluster, Cluster]]:
    a, b = cluster_factory("e2e-a"), cluster_factory("e2e-b")
    ca, cb = a.client(), b.client()
    yield ca, cb, a, b
    ca.close()
    cb.close()


@pytest.fixture
def cleanup(openbao: BaoServer) -> Iterator[tuple[list[tuple[Any, str]], list[str]]]:
    namespaces: list[tuple[Any, str]] = []
    auth_mounts: list[str] = []
    yield namespaces, auth_mounts
    for client, ns in namespaces:
        delete_namespace(client, ns)
    for mount in auth_mounts:
        if openbao.running:
            openbao.api("DELETE", f"sys/auth/{mount}")


# -- plan helpers -------------------------------------------------------------------------------


def _workloads(path: Path) -> dict[str, tuple[planlib.Tenant, planlib.Workload]]:
    plan = planlib.load(path)
    return {f"{t.namespace}/{w.kind}/{w.name}": (t, w) for t, w in plan.iter_workloads()}


def _statuses(path: Path) -> dict[str, str]:
    return {k: str(w.effective_status) for k, (_t, w) in _workloads(path).items()}


def _pending_in_order(path: Path) -> list[str]:
    return [k for k, (_t, w) in _workloads(path).items() if str(w.effective_status) == "pending"]


def _needed(paths: list[Path]) -> dict[str, set[str]]:
    """vaultPath -> field names, over the non-skipped workloads of the plans."""
    out: dict[str, set[str]] = {}
    for path in paths:
        for _t, w in _workloads(path).values():
            if str(w.effective_status) == "skipped":
                continue
            for read in w.vault_reads():  # env fields and Secret files' keys
                out.setdefault(read.vault_path, set()).update(read.fields)
    return out


def _template(client: Any, kind: str, ns: str, name: str) -> dict[str, Any]:
    obj = client.get(KINDS[kind], name, namespace=ns).to_dict()
    return dict(obj["spec"]["template"])


# -- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["shared", "isolated"])
def test_two_clusters_one_vault_every_step_with_one_side_only(
    layout: str,
    openbao: BaoServer,
    kv_mount: str,
    clusters: tuple[Any, Any, Cluster, Cluster],
    cleanup: tuple[list[tuple[Any, str]], list[str]],
    tmp_path: Path,
) -> None:
    client_a, client_b, cluster_a, cluster_b = clusters
    created, auth_mounts = cleanup
    tag = secrets.token_hex(3)
    sides = Sides(tmp_path, openbao)
    kv = kv_mount
    shop, pay, ops = f"shop-{tag}", f"pay-{tag}", f"ops-{tag}"
    canaries = _populate_cluster_a(client_a, shop, pay, kv, created)
    canaries += _populate_cluster_b(client_b, shop, ops, created)
    site_a = Site(
        "a", cluster_a, client_a, f"e2e-a-{tag}", f"k8s-a-{tag}", tmp_path / "plan-a.yaml",
        [shop, pay], canaries,
    )  # fmt: skip
    site_b = Site(
        "b", cluster_b, client_b, f"e2e-b-{tag}", f"k8s-b-{tag}", tmp_path / "plan-b.yaml",
        [shop, ops], canaries,
    )  # fmt: skip
    auth_mounts += [site_a.auth_mount, site_b.auth_mount]
    sites = (site_a, site_b)
    for site in sites:  # the sample apps run before anything is migrated
        for ns in site.namespaces:
            for kind, res in KINDS.items():
                for obj in site.client.list(res, namespace=ns):
                    wait_rollout(site.client, kind, ns, obj.metadata.name, timeout=120)

    # 1) discover, cluster only ------------------------------------------------------------------
    mark = openbao.audit_mark()
    for site in sites:
        args = [
            "target", "discover", "--kubeconfig", str(site.cluster.kubeconfig),
            *(a for ns in site.namespaces for a in ("-n", ns)),
            "--name", site.plan_name, "--kv-mount", kv, "--auth-mount", site.auth_mount,
            *(["--isolate"] if layout == "isolated" else []),
            "--output-plan", str(site.plan_path),
        ]  # fmt: skip
        sides.run(sides.cluster_only(), *args).ok()
    requests = openbao.requests_since(mark, client=CLI_AGENT)
    assert requests == [], "discover must not talk to the vault"

    # 2) review: no values, valid, the reviewer completes the Vault Agent entry --------------------
    for site in sites:
        text = site.plan_path.read_text()
        for canary in canaries:
            assert canary not in text, f"a Secret value leaked into {site.plan_path.name}"
    prefix_a = f"{kv}/data/{site_a.plan_name}" if layout == "isolated" else f"{kv}/data"
    prefix_b = f"{kv}/data/{site_b.plan_name}" if layout == "isolated" else f"{kv}/data"
    found_a = _workloads(site_a.plan_path)
    assert _statuses(site_a.plan_path) == {
        f"{shop}/Deployment/certs": "pending",  # files only: served from the vault too
        f"{shop}/Deployment/web": "pending",
        f"{shop}/StatefulSet/cache": "pending",
        f"{pay}/Deployment/legacy": "skipped",  # its agent path is outside the tenant's scope
        f"{pay}/DaemonSet/agent": "pending",
    }
    web_a = found_a[f"{shop}/Deployment/web"][1]
    assert web_a.service_account == "web"
    assert [(s.vault_path, s.fields) for s in web_a.secrets] == [
        (f"{prefix_a}/{shop}/db", {"password": "DB_PASSWORD", "username": "DB_USER"})
    ]
    cache = found_a[f"{shop}/StatefulSet/cache"][1]
    assert cache.secrets[0].fields == {"auth": "CACHE_auth", "url": "CACHE_url"}
    agent = found_a[f"{pay}/DaemonSet/agent"][1]
    assert {e for s in agent.secrets for e in s.fields.values()} == {"STRIPE_KEY", "MIGRATE_TOKEN"}
    legacy = found_a[f"{pay}/Deployment/legacy"][1]
    assert [(s.via, s.vault_path, s.fields) for s in legacy.secrets] == [
        ("vaultAgent", f"{kv}/data/legacy/config", {})
    ]
    found_b = _workloads(site_b.plan_path)
    assert _statuses(site_b.plan_path) == {
        f"{ops}/Deployment/worker": "pending",
        f"{ops}/StatefulSet/queue": "pending",
        f"{ops}/DaemonSet/collector": "pending",
        f"{shop}/Deployment/web": "pending",
    }
    worker = found_b[f"{ops}/Deployment/worker"][1]
    assert [f.source for f in worker.secret_files] == ["ca"]
    assert worker.secrets[0].fields == {"region": "W_region", "token": "W_token"}
    assert found_b[f"{shop}/Deployment/web"][1].secrets[0].vault_path == f"{prefix_b}/{shop}/db"
    if layout == "shared":
        assert prefix_a == prefix_b  # both clusters' web read one secret
    else:
        assert f"{prefix_a}/{shop}/db" != f"{prefix_b}/{shop}/db"

    # the reviewer fills in the fields the Vault Agent template rendered (discover cannot)
    plan_a = planlib.load(site_a.plan_path)
    for _t, w in plan_a.iter_workloads():
        if w.name == "legacy":
            w.secrets[0].fields = {"dsn": "LEGACY_DSN"}
            # the existing path lies outside the tenant's scope: the reviewer grants it on
            # purpose, visibly (issue 18, finding 2)
            w.secrets[0].shared = True
            w.status = planlib.WorkloadStatus.PENDING
    planlib.save(plan_a, site_a.plan_path)
    sides.run(
        sides.cluster_only(), "plan", "validate", str(site_a.plan_path), str(site_b.plan_path)
    ).ok()
    approved = {site.label: site.plan_path.read_bytes() for site in sites}

    # 3) apply-plan, vault only --------------------------------------------------------------------
    vault_args = ["--openbao-addr", openbao.address, "--token-file", str(sides.token_file())]
    for site in sites:
        sides.run(
            sides.vault_only(), "source", "apply-plan", str(site.plan_path), *vault_args,
            "--audience", AUDIENCE, "--enable-auth-mount",
        ).ok()  # fmt: skip
        assert site.plan_path.read_bytes() == approved[site.label]
    for site in sites:  # both clusters' objects coexist, each granting its own plan's paths
        for tenant, workloads in _tenants(site.plan_path).items():
            name = f"cloudtaser-{site.plan_name}-{tenant}".lower()
            policy = openbao.api_ok("GET", f"sys/policies/acl/{name}")["data"]["policy"]
            wanted = {r.vault_path for w in workloads for r in w.vault_reads()}
            assert set(_policy_paths(policy)) == wanted, name
            role = openbao.api_ok("GET", f"auth/{site.auth_mount}/role/{name}")["data"]
            assert role["bound_service_account_namespaces"] == [tenant]
            assert role["token_policies"] == [name]
            assert set(role["bound_service_account_names"]) == {
                w.service_account or "default" for w in workloads
            }
    # the shop tenant exists in both plans: two distinct policies and roles
    assert f"cloudtaser-{site_a.plan_name}-{shop}" != f"cloudtaser-{site_b.plan_name}-{shop}"

    # 4) populate with the real bao CLI ------------------------------------------------------------
    needed = _needed([s.plan_path for s in sites])
    values: dict[tuple[str, str], str] = {}
    held_back = f"{prefix_b}/{ops}/queue"
    assert held_back in needed
    for path in sorted(needed):
        for fld in sorted(needed[path]):
            values[(path, fld)] = f"VAULT-CANARY-{secrets.token_hex(8)}"
    vault_canaries = list(values.values())

    def kv_put(path: str) -> None:
        rest = path.split("/data/", 1)[1]
        pairs = [f"{fld}={values[(path, fld)]}" for fld in sorted(needed[path])]
        openbao.bao("kv", "put", f"-mount={kv}", rest, *pairs)

    for path in sorted(needed):
        if path != held_back:
            kv_put(path)

    # 5) verify-plan, vault only: one secret missing, then complete --------------------------------
    run = sides.run(
        sides.vault_only(), "source", "verify-plan", str(site_b.plan_path), *vault_args,
        "--output", "json",
    ).ok(1)  # fmt: skip
    report = json.loads(run.stdout)
    states = {
        s["vaultPath"]: s["status"]
        for t in report["tenants"]
        for w in t["workloads"]
        for s in w["secrets"]
    }
    assert states.pop(held_back) == "missing"
    assert set(states.values()) == {"ok"}
    text = sides.run(
        sides.vault_only(), "source", "verify-plan", str(site_b.plan_path), *vault_args
    )
    assert f"{held_back}: missing" in text.ok(1).stdout
    sides.run(sides.vault_only(), "source", "verify-plan", str(site_a.plan_path), *vault_args).ok()
    kv_put(held_back)
    for site in sites:
        sides.run(
            sides.vault_only(), "source", "verify-plan", str(site.plan_path), *vault_args
        ).ok()
        assert site.plan_path.read_bytes() == approved[site.label]

    # 6) connect (both sides), then protect (cluster only) -----------------------------------------
    for site in sites:
        sides.run(
            sides.both(), "target", "connect", "--kubeconfig", str(site.cluster.kubeconfig),
            *vault_args, "--plan", str(site.plan_path),
        ).ok()  # fmt: skip
        assert site.plan_path.read_bytes() == approved[site.label]
    mark = openbao.audit_mark()
    common = ["--vault-address", POD_VAULT_ADDRESS, "--poll-interval", "200ms", "--timeout", "120s"]
    sides.run(
        sides.cluster_only(), "target", "protect", "--plan", str(site_a.plan_path),
        "--kubeconfig", str(cluster_a.kubeconfig), *common,
        "--no-verify-injection", "--yes",
    ).ok()  # fmt: skip
    order = _pending_in_order(site_b.plan_path)
    declined = f"{ops}/DaemonSet/collector"
    answers = "".join("n\n" if ref == declined else "y\n" for ref in order)
    run = sides.run(
        sides.cluster_only(), "target", "protect", "--plan", str(site_b.plan_path),
        "--kubeconfig", str(cluster_b.kubeconfig), *common, "--no-verify-injection",
        "--interactive", input=answers,
    ).ok()  # fmt: skip
    assert "[y]es / [n]o" in run.stderr
    requests = openbao.requests_since(mark, client=CLI_AGENT)
    assert requests == [], "protect must not talk to the vault"

    # the files-only certs migrates too now (issue 29): nothing of plan A is left skipped
    assert set(_statuses(site_a.plan_path).values()) == {"migrated"}
    statuses_b = _statuses(site_b.plan_path)
    assert statuses_b.pop(declined) == "skipped"
    assert set(statuses_b.values()) == {"migrated"}
    collector = _workloads(site_b.plan_path)[declined][1]
    assert "declined" in (collector.history[-1].reason or "")
    assert "cloudtaser.io/inject" not in (
        _template(client_b, "DaemonSet", ops, "collector")["metadata"].get("annotations") or {}
    )
    for site in sites:
        for key, (_t, w) in _workloads(site.plan_path).items():
            if str(w.effective_status) != "migrated":
                continue
            ns, kind, name = key.split("/")
            meta = _template(site.client, kind, ns, name)["metadata"]
            assert meta["annotations"]["cloudtaser.io/inject"] == "true", key
            assert meta["annotations"]["cloudtaser.io/vault-address"] == POD_VAULT_ADDRESS
            assert meta["labels"]["cloudtaser.io/inject"] == "true"
            wait_rollout(site.client, kind, ns, name, timeout=30)

    # 7) the runtime wrapper, configured from the live pod templates -------------------------------
    seen: dict[str, dict[str, str]] = {}
    for site, kind, ns, name in (
        (site_a, "Deployment", shop, "web"),
        (site_a, "Deployment", pay, "legacy"),
        (site_a, "DaemonSet", pay, "agent"),
        (site_b, "Deployment", shop, "web"),
        (site_b, "Deployment", ops, "worker"),
        (site_b, "StatefulSet", ops, "queue"),
    ):
        workload = _workloads(site.plan_path)[f"{ns}/{kind}/{name}"][1]
        expected = {
            env: values[(s.vault_path, fld)]
            for s in workload.secrets
            for fld, env in s.fields.items()
        }
        got = _wrap(site, kind, ns, name, openbao, sides)
        mine = {k: v for k, v in got.items() if v in vault_canaries}
        assert mine == expected, f"{site.label}:{ns}/{name}"
        assert not [k for k in got if k.startswith("CLOUDTASER_")]
        seen[f"{site.label}/{ns}/{name}"] = mine
    same = seen[f"a/{shop}/web"]["DB_PASSWORD"] == seen[f"b/{shop}/web"]["DB_PASSWORD"]
    assert same is (layout == "shared")

    # a token of cluster B is refused through cluster A's mount
    web_a_meta = _template(client_a, "Deployment", shop, "web")["metadata"]["annotations"]
    token = tmp_path / "cross-token"
    token.write_text(request_token(client_b, shop, "web", [AUDIENCE], seconds=600))
    cross = run_wrapper(
        {
            "CLOUDTASER_VAULT_ADDR": openbao.address,
            "CLOUDTASER_VAULT_AUTH_ROLE": web_a_meta["cloudtaser.io/vault-role"],
            "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": web_a_meta["cloudtaser.io/vault-auth-path"],
            "CLOUDTASER_SECRET_PATHS": web_a_meta["cloudtaser.io/secret-paths"],
            "CLOUDTASER_ENV_MAP": web_a_meta["cloudtaser.io/env-map"],
            "CLOUDTASER_SA_TOKEN_PATH": str(token),
        },
        env_dump_command(tmp_path / "cross.json"),
    )
    assert cross.returncode == 3, cross.stderr
    assert not (tmp_path / "cross.json").exists()
    sides.runs.append(Run(["wrap", "cross"], cross.returncode, cross.stdout, cross.stderr))

    # no value of either side in any output of cloudtaser ------------------------------------------
    for run in sides.runs:
        for value in [*canaries, *vault_canaries, openbao.token]:
            assert value not in run.stdout, f"a secret leaked into stdout of {run.argv[:2]}"
            assert value not in run.stderr, f"a secret leaked into stderr of {run.argv[:2]}"


def _tenants(path: Path) -> dict[str, list[planlib.Workload]]:
    """namespace -> its non-skipped workloads with secrets."""
    out: dict[str, list[planlib.Workload]] = {}
    for t, w in planlib.load(path).iter_workloads():
        if str(w.effective_status) != "skipped" and w.vault_reads():
            out.setdefault(t.namespace, []).append(w)
    return out


def _policy_paths(hcl: str) -> list[str]:
    return [line.split('"')[1] for line in hcl.splitlines() if line.startswith('path "')]


def _wrap(
    site: Site, kind: str, ns: str, name: str, openbao: BaoServer, sides: Sides
) -> dict[str, str]:
    """Run ``cloudtaser wrap`` as the injected pod would, configured from the live template."""
    template = _template(site.client, kind, ns, name)
    ann = template["metadata"]["annotations"]
    sa = template["spec"].get("serviceAccountName") or "default"
    tmp = sides.tmp
    token = tmp / f"sa-token-{site.label}-{ns}-{name}"
    token.write_text(request_token(site.client, ns, sa, [AUDIENCE], seconds=600))
    dump = tmp / f"env-{site.label}-{ns}-{name}.json"
    env = {
        # the pods' address resolves to this OpenBao in the pod network
        "CLOUDTASER_VAULT_ADDR": openbao.address,
        "CLOUDTASER_VAULT_AUTH_ROLE": ann["cloudtaser.io/vault-role"],
        "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": ann["cloudtaser.io/vault-auth-path"],
        "CLOUDTASER_SECRET_PATHS": ann["cloudtaser.io/secret-paths"],
        "CLOUDTASER_ENV_MAP": ann["cloudtaser.io/env-map"],
        "CLOUDTASER_SA_TOKEN_PATH": str(token),
    }
    assert ann["cloudtaser.io/vault-auth-path"] == f"auth/{site.auth_mount}"
    run = run_wrapper(env, env_dump_command(dump))
    sides.runs.append(Run(["wrap", name], run.returncode, run.stdout, run.stderr))
    assert run.returncode == 0, run.stderr
    child = read_dump(dump)
    assert child["pid"] == run.pid
    return dict(child["env"])
