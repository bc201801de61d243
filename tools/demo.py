"""The whole cloudtaser workflow on a local embedded default: one OpenBao dev server and one local
Kubernetes control plane (etcd, kube-apiserver, controllers, scheduler, kwok), both real.

Run it with ``nox -s demo`` (which builds the Kubernetes binaries once). It creates sample
workloads that consume Kubernetes Secrets, runs every step a user would type — printing each
command — shows the final plan, and stops everything it started. ``--keep`` leaves the servers
running and prints how to reach them.

The demo's sample secret values are made up here; cloudtaser itself never prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightkube.resources.apps_v1 import Deployment  # noqa: E402

from cloudtaser import plan as planlib  # noqa: E402
from tests.testenv import workloads as wl  # noqa: E402
from tests.testenv.binaries import find_bao  # noqa: E402
from tests.testenv.cluster import Cluster  # noqa: E402
from tests.testenv.openbao import BaoServer  # noqa: E402

BOLD, DIM, GREEN, RESET = ("\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[0m")
if not sys.stdout.isatty() or "NO_COLOR" in os.environ:
    BOLD = DIM = GREEN = RESET = ""

#: Sample data: namespace -> Secret -> key -> value (demo values, never printed).
SECRETS = {
    "payments": {
        "postgres": {"username": "payments_app", "password": "demo-pg-password-1"},
        "stripe": {"api_key": "demo-stripe-key-2", "webhook_secret": "demo-webhook-3"},
    },
    "shop": {
        "redis": {"password": "demo-redis-4"},
        "tls": {"tls.crt": "demo-cert", "tls.key": "demo-key-5"},
        "shipping": {"token": "demo-shipping-6"},
    },
}
AUTH_MOUNT = "kubernetes-demo"
#: A stand-in for the application: it reports which secrets it received (masked).
APP = """\
import os
masked = {k: len(os.environ[k]) * "*" for k in ("DB_USER", "DB_PASSWORD")}
print("the app sees:", masked)
print("CLOUDTASER_* in its environment:", [k for k in os.environ if k.startswith("CLOUDTASER_")])
"""
PLAN_NAME = "demo"


def step(title: str, why: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}\n{DIM}{why}{RESET}", flush=True)


#: Environment variables worth showing in front of a command when the step sets them.
SHOWN_ENV = (
    "KUBECONFIG",
    "BAO_ADDR",
    "VAULT_ADDR",
    "VAULT_AUTH_ROLE",
    "VAULT_AUTH_MOUNT_PATH",
    "CLOUDTASER_SECRET_PATHS",
    "CLOUDTASER_ENV_MAP",
    "CLOUDTASER_SA_TOKEN_PATH",
)


def run(args: list[str], *, env: dict[str, str], cwd: Path, input: str | None = None) -> int:
    """Run one command as a user would type it (the command line is printed first)."""
    prefix = "".join(
        f"{name}={shlex.quote(env[name])} "
        for name in SHOWN_ENV
        if env.get(name)
        and env.get(name) != os.environ.get(name)
        and "no-kubeconfig" not in env[name]
    )
    shown = prefix + " ".join(shlex.quote(a) for a in args)
    print(f"{GREEN}$ {shown}{RESET}", flush=True)
    argv = [sys.executable, "-m", "cloudtaser", *args[1:]] if args[0] == "cloudtaser" else args
    result = subprocess.run(argv, env=env, cwd=cwd, input=input, text=True, check=False)
    if result.returncode not in (0, 1):
        raise SystemExit(f"demo: step failed with exit code {result.returncode}: {shown}")
    return result.returncode


def runtime_binary() -> str:
    """The Go wrapper: CLOUDTASER_RUNTIME_BIN, else the one ``nox -s runtime`` (and so
    ``nox -s demo``) builds, else built here with ``go``."""
    given = os.environ.get("CLOUDTASER_RUNTIME_BIN")
    if given:
        return given
    built = ROOT / "build" / "runtime" / "linux-amd64" / "cloudtaser-runtime"
    if not built.is_file():
        go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
        if not go:
            raise SystemExit(
                "demo: the Go runtime is not built and Go is not installed (nox -s runtime)"
            )
        subprocess.run(
            [go, "build", "-trimpath", "-o", str(built), "./cmd/cloudtaser-runtime"],
            cwd=ROOT / "runtime", env={**os.environ, "CGO_ENABLED": "0"}, check=True,
        )  # fmt: skip
    return str(built)


def create_samples(cluster: Cluster) -> None:
    client = cluster.client()
    for namespace, secrets in SECRETS.items():
        wl.create_namespace(client, namespace)
        for name, data in secrets.items():
            wl.create_secret(client, namespace, name, data)
    wl.create_service_account(client, "payments", "api")
    wl.create_service_account(client, "payments", "ledger")
    specs = [
        # env secretKeyRef, two keys of one Secret
        wl.deployment(
            "api",
            "payments",
            replicas=2,
            service_account="api",
            containers=[
                wl.ContainerSpec(
                    name="api",
                    secret_env={
                        "DB_USER": ("postgres", "username"),
                        "DB_PASSWORD": ("postgres", "password"),
                    },
                )
            ],
        ),
        # envFrom with a prefix, in an init container too
        wl.statefulset(
            "ledger",
            "payments",
            replicas=2,
            service_account="ledger",
            containers=[wl.ContainerSpec(name="ledger", env_from=[("stripe", "STRIPE_")])],
            init_containers=[
                wl.ContainerSpec(
                    name="migrate", secret_env={"DB_PASSWORD": ("postgres", "password")}
                )
            ],
        ),
        # env plus a secret volume (files cannot be replaced by env injection: noted)
        wl.deployment(
            "web",
            "shop",
            containers=[
                wl.ContainerSpec(
                    name="web",
                    secret_env={"REDIS_PASSWORD": ("redis", "password")},
                    mounts={"tls": "/etc/tls"},
                )
            ],
            secret_volumes={"tls": "tls"},
        ),
        # files only: discover marks it skipped with the reason
        wl.deployment(
            "cert-sync",
            "shop",
            containers=[wl.ContainerSpec(name="sync", mounts={"tls": "/etc/tls"})],
            secret_volumes={"tls": "tls"},
        ),
        # a DaemonSet
        wl.daemonset(
            "shipping-agent",
            "shop",
            containers=[
                wl.ContainerSpec(name="agent", secret_env={"SHIPPING_TOKEN": ("shipping", "token")})
            ],
        ),
    ]
    for spec in specs:
        wl.create_workload(client, spec)
        print(f"  created {spec.kind} {spec.namespace}/{spec.name}")
    for spec in specs:
        wl.wait_rollout(client, spec.kind, spec.namespace, spec.name, timeout=120)


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[BaoServer, Cluster]]:
    """Start both servers; stop them when the block ends, however it ends."""
    bao = BaoServer(workdir / "openbao", binary=find_bao())
    (workdir / "openbao").mkdir()
    cluster = Cluster("demo", workdir / "cluster", nodes=1)
    (workdir / "cluster").mkdir()
    try:
        bao.start()
        print(f"  OpenBao dev server at {bao.address}")
        cluster.start()
        print(f"  Kubernetes API server at {cluster.server} ({cluster.startup_seconds:.0f} s)")
        yield bao, cluster
    finally:
        cluster.stop()
        bao.stop()
        print("\nstopped the OpenBao dev server and the local cluster", flush=True)


def populate(bao: BaoServer, plan_path: Path) -> None:
    """What people do in step 4: write the values with the real `bao` CLI."""
    plan = planlib.load(plan_path)
    done: set[str] = set()
    for tenant, workload in plan.iter_workloads():
        for secret in workload.secrets:
            if secret.vault_path in done or secret.source not in SECRETS[tenant.namespace]:
                continue
            done.add(secret.vault_path)
            mount, rest = planlib.split_vault_path(secret.vault_path)
            pairs = [f"{k}={v}" for k, v in SECRETS[tenant.namespace][secret.source].items()]
            shown = " ".join(f"{k}=…" for k in SECRETS[tenant.namespace][secret.source])
            print(f"{GREEN}$ bao kv put -mount={mount} {rest} {shown}{RESET}")
            bao.bao("kv", "put", f"-mount={mount}", rest, *pairs)


def demo(workdir: Path, keep: bool) -> None:
    step("0. start a local OpenBao and a local Kubernetes cluster", "both real, on loopback")
    with servers(workdir) as (bao, cluster):
        token_file = workdir / "vault-token"
        token_file.write_text(bao.token)
        token_file.chmod(0o600)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        base["KUBECONFIG"] = str(workdir / "no-kubeconfig-here")
        # cluster side: a kubeconfig, no vault credentials
        cluster_env = {**base, "KUBECONFIG": str(cluster.kubeconfig)}
        # vault side: vault address and token, no kubeconfig
        vault_env = {**base, "BAO_ADDR": bao.address}
        plan = workdir / "plan.yaml"

        step(
            "sample workloads",
            "Deployments, a StatefulSet and a DaemonSet consuming Secrets as env, envFrom, "
            "init containers and files",
        )
        create_samples(cluster)

        step(
            "connect the cluster to the vault (once per cluster)",
            "token reviewer + system:auth-delegator, one auth mount per cluster, a real login",
        )
        both_env = {**cluster_env, "BAO_ADDR": bao.address}
        run(
            ["cloudtaser", "target", "connect", "--auth-mount", AUTH_MOUNT,
             "--token-file", str(token_file)],
            env=both_env, cwd=workdir,
        )  # fmt: skip

        step("1. discover (cluster side only)", "scan workloads; the plan holds no secret value")
        run(
            ["cloudtaser", "target", "discover", "--name", PLAN_NAME, "--auth-mount", AUTH_MOUNT,
             "--output-plan", "plan.yaml"],
            env=cluster_env, cwd=workdir,
        )  # fmt: skip

        step("2. review (no system access)", "validate and summarise; read the file itself")
        run(["cloudtaser", "plan", "validate", "plan.yaml"], env=base, cwd=workdir)
        run(["cloudtaser", "plan", "status", "plan.yaml"], env=base, cwd=workdir)
        print(plan.read_text())

        step("3. apply (vault side only)", "one policy and one role per tenant; the plan is read")
        run(
            ["cloudtaser", "source", "apply-plan", "plan.yaml", "--dry-run",
             "--token-file", str(token_file)],
            env=vault_env, cwd=workdir,
        )  # fmt: skip
        run(
            ["cloudtaser", "source", "apply-plan", "plan.yaml", "--token-file", str(token_file)],
            env=vault_env,
            cwd=workdir,
        )

        step("4. populate", "people put the values into the vault with the bao CLI")
        populate(bao, plan)

        step("5. verify (vault side only)", "every path and field exists; no value is read")
        run(
            ["cloudtaser", "source", "verify-plan", "plan.yaml", "--token-file", str(token_file)],
            env=vault_env,
            cwd=workdir,
        )

        step("6. protect (cluster side only)", "annotate, roll out once, record in the plan")
        run(
            ["cloudtaser", "target", "protect", "--plan", "plan.yaml", "--vault-address",
             bao.address, "--yes"],
            env=cluster_env, cwd=workdir,
        )  # fmt: skip

        step(
            "runtime: the wrapper in a pod of payments/api",
            "logs in with the pod's ServiceAccount token, fetches its secrets, execs the app",
        )
        client = cluster.client()
        jwt = wl.request_token(client, "payments", "api", seconds=600)
        sa_token = workdir / "sa-token"
        sa_token.write_text(jwt)
        annotations = client.get(Deployment, "api", namespace="payments").spec.template.metadata
        notes = annotations.annotations or {}
        pod_env = {
            **base,
            "VAULT_ADDR": bao.address,
            "VAULT_AUTH_ROLE": notes["cloudtaser.io/vault-role"],
            "VAULT_AUTH_MOUNT_PATH": notes.get("cloudtaser.io/vault-auth-path", "auth/kubernetes"),
            "CLOUDTASER_SECRET_PATHS": notes["cloudtaser.io/secret-paths"],
            "CLOUDTASER_ENV_MAP": notes["cloudtaser.io/env-map"],
            "CLOUDTASER_SA_TOKEN_PATH": str(sa_token),
        }
        app = workdir / "app.py"
        app.write_text(APP)
        run([runtime_binary(), "wrap", "--", "python3", "app.py"], env=pod_env, cwd=workdir)

        step("the final plan: the compliance evidence", "every workload migrated or skipped")
        run(["cloudtaser", "plan", "status", "plan.yaml"], env=base, cwd=workdir)
        print(plan.read_text())

        if keep:
            print(f"\n{BOLD}servers kept running{RESET} (stop them with Ctrl-C):")
            print(f"  export KUBECONFIG={cluster.kubeconfig}")
            print(f"  export BAO_ADDR={bao.address}   # token in {token_file}")
            print(f"  plan: {plan}", flush=True)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the servers running")
    parser.add_argument("--workdir", help="where to put the plan, kubeconfig and logs")
    args = parser.parse_args()
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=False)
        demo(workdir, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="cloudtaser-demo-") as tmp:
            demo(Path(tmp), args.keep)


if __name__ == "__main__":
    main()
