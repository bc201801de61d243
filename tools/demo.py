"""The whole cloudtaser workflow on a local embedded default: one OpenBao dev server and one local
Kubernetes cluster, both real.

Run it with ``nox -s demo`` (which builds the Kubernetes binaries and the Go runtime once). It
creates sample workloads that consume Kubernetes Secrets, runs every step a user would type —
printing each command — and stops everything it started. ``--keep`` leaves the servers running
and prints how to reach them.

Two modes (``--mode auto`` picks the first that can run, and says why when it falls back):

- ``realnode``: a control plane plus a real node (containerd + kubelet + runc; root, as on CI).
  The injector is installed with ``target install``; protect restarts the pods with the wrapper
  and the app prints the value it got from OpenBao (a canary that differs from the Kubernetes
  Secret's); ``finalize --delete-secrets --require-verified verified.json`` (the report of
  ``verify-plan --attest``) removes the Secret references (the ``tls`` volume becomes a memory
  volume the runtime fills from OpenBao, and the app prints the certificate it reads there) and
  deletes the Secrets whose every key is proven in the vault and that nothing uses any more:
  ``kubectl get secrets`` shows none left in the sample namespaces; ``target audit`` writes its
  HTML report.
- ``kwok``: the control plane with kwok's fake nodes (no root needed). Pods run nothing, so
  protect cannot prove injection (``--no-verify-injection``), the wrapper is shown on the host,
  finalize refuses (the pods are not injected: that is the safety rule) and audit reports it.

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

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment

from cloudtaser import plan as planlib
from tests.testenv import workloads as wl
from tests.testenv.binaries import find_bao
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import (
    NODE_NAME,
    PACKAGES_SCRIPT,
    RealNode,
    host_blockers,
    missing_node_binaries,
    missing_node_files,
    missing_packages,
)

ROOT = Path(__file__).resolve().parents[1]

BOLD, DIM, GREEN, YELLOW, RESET = ("\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[33m", "\x1b[0m")
if not sys.stdout.isatty() or "NO_COLOR" in os.environ:
    BOLD = DIM = GREEN = YELLOW = RESET = ""

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
AUDIENCE = "openbao"
#: Real node: the app (busybox) prints what it got; the vault holds these canaries, which
#: differ from the Kubernetes Secrets' values above (those are never printed).
BUSYBOX = "ghcr.io/cloudtaser-test/busybox:1"
APP_SCRIPT = (
    'echo "the app got DB_PASSWORD=$DB_PASSWORD"; '
    "if [ -f /etc/files/tls.crt ]; then "
    'echo "the app read /etc/files/tls.crt: $(cat /etc/files/tls.crt)"; fi; '
    "exec sleep 3600"
)

#: A stand-in for the application: it reports which secrets it received (masked).
APP = """\
import os
masked = {k: len(os.environ[k]) * "*" for k in ("DB_USER", "DB_PASSWORD")}
print("the app sees:", masked)
print("CLOUDTASER_* in its environment:", [k for k in os.environ if k.startswith("CLOUDTASER_")])
"""
PLAN_NAME = "demo"


def step(title: str, proves: str) -> None:
    """One line per step: what it does and what it proves."""
    print(f"\n{BOLD}== {title}{RESET} {DIM}-- {proves}{RESET}", flush=True)


#: Environment variables worth showing in front of a command when the step sets them.
SHOWN_ENV = (
    "KUBECONFIG",
    "BAO_ADDR",
    "CLOUDTASER_VAULT_ADDR",
    "CLOUDTASER_VAULT_AUTH_ROLE",
    "CLOUDTASER_VAULT_AUTH_MOUNT_PATH",
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
    # a binary the demo found (kubectl, cloudtaser-runtime) shows as its name, as people type it
    program = Path(args[0]).name if Path(args[0]).is_absolute() else args[0]
    shown = prefix + " ".join(shlex.quote(a) for a in [program, *args[1:]])
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


def go_binary() -> str | None:
    return shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")


def realnode_unavailable(*, built: bool = True) -> str | None:
    """Why the real node cannot run here (``None``: it can). Debian packages count as present
    when the demo can install them (root and apt-get); with ``built=False`` so do the node
    binaries (``nox -s demo`` builds them after asking this)."""
    blockers = host_blockers()
    if blockers:
        return "this machine lacks " + "; ".join(blockers)
    files = missing_node_files()
    if files and not shutil.which("apt-get"):
        return "no apt-get to install the real node's Debian packages: " + "; ".join(files)
    binaries = missing_node_binaries() if built else []
    if binaries:
        return "the real node's binaries are not built: " + "; ".join(binaries)
    try:
        import cloudtaser.target.install.apply  # noqa: F401, PLC0415
    except ImportError:
        return "this build has no injector installer (`cloudtaser target install`)"
    if not go_binary():
        return "Go is not installed (the runtime image is built from source)"
    return None


def install_packages(workdir: Path) -> str | None:
    """As root with apt-get: install the Debian packages the real node (and approvals) need, the
    list ``.ci/run`` installs. Returns why it failed (``None``: all present now)."""
    packages = missing_packages()
    if not packages or not shutil.which("apt-get"):
        return None  # without apt-get the node's own files are present (realnode_unavailable)
    command = ["apt-get", "install", "-y", "-q", *packages]
    print(
        f"{BOLD}installing the real node's Debian packages (root, apt-get, the list of "
        f"{PACKAGES_SCRIPT.relative_to(ROOT)}): {' '.join(command)}{RESET}",
        flush=True,
    )
    log = workdir / "apt-get.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    started = time.monotonic()
    with log.open("w") as out:
        for argv in (["apt-get", "update", "-q"], command):
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
            if done.returncode != 0:
                tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
                return f"`{' '.join(argv)}` failed (exit {done.returncode}): {tail[0]}"
    still = missing_node_files()
    if still:
        return "; ".join(still)
    print(f"  installed in {time.monotonic() - started:.0f} s", flush=True)
    return None


#: What only the real node shows: the kwok fallback skips (or only dry-runs) these.
REAL_ONLY = (
    "`target install` (the injector)",
    "pods really restarting through the wrapper (protect runs with --no-verify-injection; the "
    "wrapper runs on this host instead)",
    "`target finalize` (a dry run that refuses: the pods are not injected)",
    "the Secret removal (`--delete-secrets` deletes nothing)",
)


def real_thing(reason: str) -> str:
    """The exact command that shows the real node, for the fallback's ``reason``."""
    if reason.startswith("--mode kwok"):
        return "`nox -s demo` (without --mode kwok), as root on a Debian-like machine"
    if "root (" in reason:
        return (
            'on a Debian-like machine (Debian, Ubuntu; a VM will do): `sudo "$(command -v nox)" '
            "-s demo` (as root the demo installs the real node's Debian packages itself)"
        )
    return "fix what `why` names, then `nox -s demo` as root on a Debian-like machine"


def fallback_banner(reason: str, *, end: bool) -> None:
    """The banner at the start and at the end of a run on kwok's fake nodes."""
    rule = "!" * 100
    head = (
        "the demo ran on FAKE NODES (kwok), so these steps were SKIPPED (or only dry-run)"
        if end
        else "FALLING BACK to the kwok cluster (fake nodes: pods run nothing), so it does NOT show"
    )
    print(f"\n{YELLOW}{BOLD}{rule}", flush=True)
    print(f"!! {head}:")
    for item in REAL_ONLY:
        print(f"!!   - {item}")
    print(f"!! why: {reason}")
    print(f"!! the real thing: {real_thing(reason)}")
    print(f"{rule}{RESET}", flush=True)


def ssh_key(workdir: Path, name: str, identity: str, env: dict[str, str]) -> None:
    """An ed25519 key pair ``name`` and ``name.pub`` in the demo's directory, as people make
    one."""
    if shutil.which("ssh-keygen"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", identity, "-f", name],
            env=env, cwd=workdir)  # fmt: skip
        return
    print(f"{DIM}(no ssh-keygen here: the same OpenSSH key is written with Python){RESET}")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    (workdir / name).write_bytes(private)
    (workdir / name).chmod(0o600)
    (workdir / f"{name}.pub").write_text(f"{public.decode()} {identity}\n")


def runtime_image_layout(workdir: Path) -> Path:
    """The runtime's OCI image layout (what ``nox -s runtime`` builds), from source."""
    layout = ROOT / "build" / "runtime" / "image"
    if (layout / "index.json").is_file():
        return layout
    go = go_binary()
    assert go is not None
    binary = Path(runtime_binary())
    out = workdir / "runtime-image"
    subprocess.run(
        [go, "run", "./tools/build-image", "-out", str(out), "-tag", "cloudtaser-runtime:demo",
         f"amd64={binary}"],
        cwd=ROOT / "runtime", check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out


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
        # env plus a secret volume (both served from the vault: env and a memory volume)
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
        # files only: migrated too (a memory volume rendered from the vault)
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
def servers(workdir: Path, *, real: bool) -> Iterator[tuple[BaoServer, Cluster, RealNode | None]]:
    """Start both servers; stop them when the block ends, however it ends."""
    bao = BaoServer(workdir / "openbao", binary=find_bao())
    (workdir / "openbao").mkdir()
    node = RealNode(workdir / "node") if real else None
    cluster = Cluster("demo", workdir / "cluster", nodes=1) if node is None else None
    (workdir / "cluster").mkdir()
    try:
        bao.start()
        print(f"  OpenBao dev server at {bao.address}")
        if node is not None:
            node.start()
            kube = node.cluster
            print(
                f"  Kubernetes API server at {kube.server} with a real node (containerd + kubelet)"
                f" ({node.startup_seconds:.0f} s)"
            )
        else:
            assert cluster is not None
            cluster.start()
            kube = cluster
            print(f"  Kubernetes API server at {kube.server} ({cluster.startup_seconds:.0f} s)")
        yield bao, kube, node
    finally:
        if node is not None:
            node.stop()
        if cluster is not None:
            cluster.stop()
        bao.stop()
        print("\nstopped the OpenBao dev server and the local cluster", flush=True)


def create_real_samples(node: RealNode) -> None:
    """Real node: busybox Deployments (hostNetwork, so they reach OpenBao on loopback) that
    print the DB_PASSWORD they were given; one also mounts Secret ``tls`` as files and prints
    the certificate it reads from them."""
    node.build_image("cloudtaser-test/busybox:1", cmd=["sh"])
    client = node.client()
    used = {"payments": ("postgres",), "shop": ("redis", "tls")}
    for namespace, names in used.items():
        wl.create_namespace(client, namespace)
        for name in names:
            wl.create_secret(client, namespace, name, SECRETS[namespace][name])
    wl.create_service_account(client, "payments", "api")
    wl.create_service_account(client, "shop", "web")
    samples = [
        ("payments", "api",
         [("DB_PASSWORD", "postgres", "password"), ("DB_USER", "postgres", "username")], None),
        ("shop", "web", [("DB_PASSWORD", "redis", "password")], "tls"),
    ]  # fmt: skip
    for namespace, name, env, files in samples:
        mounts = [{"name": "files", "mountPath": "/etc/files"}] if files else []
        spec: dict[str, object] = {
            "hostNetwork": True,
            "dnsPolicy": "Default",
            "serviceAccountName": name,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": BUSYBOX,
                    "command": ["sh", "-c", APP_SCRIPT],
                    "env": [
                        {"name": e, "valueFrom": {"secretKeyRef": {"name": s, "key": k}}}
                        for e, s, k in env
                    ],
                    **({"volumeMounts": mounts} if mounts else {}),
                }
            ],
            **({"volumes": [{"name": "files", "secret": {"secretName": files}}]} if files else {}),
        }  # fmt: skip
        client.create(
            codecs.from_dict(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {
                        "replicas": 1,
                        "strategy": {"type": "Recreate"},  # hostNetwork pods never overlap
                        "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
                    },
                }
            )
        )
        print(f"  created Deployment {namespace}/{name} (a real busybox pod)")
    for namespace, name, _env, _files in samples:
        wl.wait_rollout(client, "Deployment", namespace, name, timeout=180)


def populate(bao: BaoServer, plan_path: Path, *, canaries: bool) -> None:
    """What people do in step 4: write the values with the real `bao` CLI. With
    ``canaries`` the vault gets demo canaries (shown when the app prints them), different from
    the Kubernetes Secrets' values (never shown)."""
    plan = planlib.load(plan_path)
    done: set[str] = set()
    for tenant, workload in plan.iter_workloads():
        for secret in workload.vault_reads():  # env fields and Secret files alike
            if secret.vault_path in done or secret.source not in SECRETS[tenant.namespace]:
                continue
            done.add(secret.vault_path)
            mount, rest = planlib.split_vault_path(secret.vault_path)
            values = {
                k: (f"from-openbao-{secret.source}-{k}" if canaries else v)
                for k, v in SECRETS[tenant.namespace][secret.source].items()
            }
            pairs = [f"{k}={v}" for k, v in values.items()]
            shown = " ".join(f"{k}={v}" if canaries else f"{k}=…" for k, v in values.items())
            print(f"{GREEN}$ bao kv put -mount={mount} {rest} {shown}{RESET}")
            bao.bao("kv", "put", f"-mount={mount}", rest, *pairs)


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The reviewers of the demo: one approves plans, the other signs verification reports.
SECURITY = ("security.key", "security@example.com")
VAULT_OPS = ("vault-ops.key", "vault-ops@example.com")
#: The gate every step that acts on the plan runs behind (docs/approval.md).
GATE = ["--require-approval", "--allowed-signers", "allowed_signers"]


def choose_mode(workdir: Path, mode: str) -> str | None:
    """Why the demo runs on kwok (``None``: on the real node, after installing its packages)."""
    if mode == "kwok":
        return "--mode kwok"
    reason = realnode_unavailable()
    if reason is None:
        failed = install_packages(workdir)
        if failed:
            reason = f"the real node's Debian packages could not be installed: {failed}"
    if mode == "realnode" and reason:
        raise SystemExit(f"demo: the real node cannot run here: {reason}")
    return reason


def demo(workdir: Path, keep: bool, mode: str) -> None:
    reason = choose_mode(workdir, mode)
    real = reason is None
    if real:
        step(
            "0. start a local OpenBao and a cluster with a real node",
            "control plane + containerd + kubelet: the pods really run",
        )
    else:
        assert reason is not None
        fallback_banner(reason, end=False)
        step(
            "0. start a local OpenBao and a local Kubernetes cluster (kwok)",
            "control plane + kwok's fake nodes: pods are scheduled but run nothing",
        )
    try:
        with servers(workdir, real=real) as (bao, cluster, node):
            workflow(workdir, bao, cluster, node, keep=keep)
    finally:
        if reason is not None:
            fallback_banner(reason, end=True)
    if real:
        print(
            f"\n{BOLD}demo finished on a real node: every step ran{RESET} (install, protect "
            "through the wrapper, finalize, the Secret removal, audit)",
            flush=True,
        )


def workflow(
    workdir: Path, bao: BaoServer, cluster: Cluster, node: RealNode | None, *, keep: bool
) -> None:
    """Every step a user types, on the servers ``servers()`` started."""
    token_file = workdir / "vault-token"
    token_file.write_text(bao.token)
    token_file.chmod(0o600)
    token = ["--token-file", token_file.name]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    base["KUBECONFIG"] = str(workdir / "no-kubeconfig-here")
    kubectl = str(Path(cluster.binaries["kubectl"])) if hasattr(cluster, "binaries") else "kubectl"
    # cluster side: a kubeconfig, no vault credentials
    cluster_env = {**base, "KUBECONFIG": str(cluster.kubeconfig)}
    # vault side: vault address and token, no kubeconfig
    vault_env = {**base, "BAO_ADDR": bao.address}
    plan = workdir / "plan.yaml"

    if node is not None:
        step("sample workloads", "busybox Deployments reading Kubernetes Secrets as env")
        create_real_samples(node)
    else:
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
    run(["cloudtaser", "target", "connect", "--auth-mount", AUTH_MOUNT, *token],
        env=both_env, cwd=workdir)  # fmt: skip

    step("1. discover (cluster side only)", "scans workloads; the plan holds no secret value")
    run(
        ["cloudtaser", "target", "discover", "--name", PLAN_NAME, "--auth-mount", AUTH_MOUNT,
         "-o", "plan.yaml"],
        env=cluster_env, cwd=workdir,
    )  # fmt: skip

    step("2. review (no system access)", "the plan is valid; read the file itself")
    run(["cloudtaser", "plan", "validate", "plan.yaml"], env=base, cwd=workdir)
    run(["cloudtaser", "plan", "status", "plan.yaml"], env=base, cwd=workdir)
    print(plan.read_text())

    step(
        "approve (the security team, no system access)",
        "an SSH signature binds the approval to the plan's reviewed content; every later step "
        "refuses a plan that changed since (--require-approval)",
    )
    for name, identity in (SECURITY, VAULT_OPS):
        ssh_key(workdir, name, identity, base)
    allowed = workdir / "allowed_signers"
    allowed.write_text(
        "".join(
            f'{identity} namespaces="{space}" '
            + " ".join((workdir / f"{name}.pub").read_text().split()[:2])
            + "\n"
            for (name, identity), space in (
                (SECURITY, "cloudtaser-plan"),
                (VAULT_OPS, "cloudtaser-verification"),
            )
        )
    )
    print(
        f"{DIM}allowed_signers: {SECURITY[1]} may approve plans, {VAULT_OPS[1]} may sign "
        f"verification reports (the format of ssh-keygen -Y verify){RESET}"
    )
    run(
        ["cloudtaser", "plan", "approve", "plan.yaml", "--key", SECURITY[0],
         "--identity", SECURITY[1], "--comment", "demo change reviewed"],
        env=base, cwd=workdir,
    )  # fmt: skip
    run(
        ["cloudtaser", "plan", "verify-approvals", "plan.yaml", "--allowed-signers",
         "allowed_signers"],
        env=base, cwd=workdir,
    )  # fmt: skip

    step("3. apply (vault side only)", "one policy and one role per tenant, for an approved plan")
    audience = ["--audience", AUDIENCE] if node is not None else []
    run(["cloudtaser", "source", "apply-plan", "plan.yaml", "--dry-run", *GATE, *token,
          *audience],
        env=vault_env, cwd=workdir)  # fmt: skip
    run(["cloudtaser", "source", "apply-plan", "plan.yaml", *GATE, *token, *audience],
        env=vault_env, cwd=workdir)  # fmt: skip

    step("4. populate", "people put the values into the vault with the bao CLI")
    populate(bao, plan, canaries=node is not None)

    step(
        "5. verify (vault side only)",
        "every path and field exists, no value read; the signed report (names only) is what "
        "protect and finalize --delete-secrets require",
    )
    run(
        ["cloudtaser", "source", "verify-plan", "plan.yaml", *token, "--attest",
         "verified.json", "--key", VAULT_OPS[0], "--identity", VAULT_OPS[1]],
        env=vault_env, cwd=workdir,
    )  # fmt: skip

    if node is not None:
        real_lifecycle(workdir, bao, node, cluster_env, kubectl)
    else:
        kwok_lifecycle(workdir, bao, cluster, base, cluster_env)

    step("the final plan: the compliance evidence", "every workload migrated or skipped")
    run(["cloudtaser", "plan", "status", "plan.yaml"], env=base, cwd=workdir)

    if keep:
        print(f"\n{BOLD}servers kept running{RESET} (stop them with Ctrl-C):")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print(f"  export BAO_ADDR={bao.address}   # token in {token_file}")
        print(f"  plan: {plan}", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def real_lifecycle(
    workdir: Path, bao: BaoServer, node: RealNode, cluster_env: dict[str, str], kubectl: str
) -> None:
    """Steps 6-9 on the real node: install the injector, protect, finalize, delete, audit."""
    step(
        "6. install the injector (cluster side only)",
        "the mutating webhook from the runtime image, ready before protect relies on it",
    )
    image = node.push_oci_layout(runtime_image_layout(workdir), "cloudtaser/runtime:demo")
    port = _free_port()
    run(
        ["cloudtaser", "target", "install", "--image", image.pinned,
         "--allowed-vault-address", bao.address, "--audience", AUDIENCE,
         "--webhook-url", f"https://127.0.0.1:{port}/mutate",
         "--kube-api", f"{NODE_NAME}:{node.api_port}", "--replicas", "1"],
        env=cluster_env, cwd=workdir,
    )  # fmt: skip

    step(
        "7. protect (cluster side only)",
        "approved plan, values proven: annotate, roll out once; the new pods restart through the "
        "wrapper and protect proves it",
    )
    run(
        ["cloudtaser", "target", "protect", "--plan", "plan.yaml", "--vault-address",
         bao.address, "--yes", *GATE, "--require-verified", "verified.json"],
        env=cluster_env, cwd=workdir,
    )  # fmt: skip
    print(
        f"{DIM}the app prints the values it got, as env and from a file: from OpenBao, not the "
        f"Kubernetes Secret's{RESET}"
    )
    for namespace, name in (("payments", "api"), ("shop", "web")):
        run([kubectl, "logs", "-n", namespace, f"deployment/{name}", "-c", "app"],
            env=cluster_env, cwd=workdir)  # fmt: skip

    step(
        "8. finalize --delete-secrets (cluster side only)",
        "removes the Secret references the vault now serves (the tls volume becomes a memory "
        "volume the runtime fills from OpenBao), then deletes each Secret whose every key the "
        "report proves in the vault and that nothing uses: no Kubernetes Secret is left. "
        "IRREVERSIBLE",
    )
    for namespace in ("payments", "shop"):
        run([kubectl, "get", "secrets", "-n", namespace], env=cluster_env, cwd=workdir)
    run(
        ["cloudtaser", "target", "finalize", "--plan", "plan.yaml", "--yes", *GATE,
         "--require-verified", "verified.json", "--delete-secrets"],
        env=cluster_env, cwd=workdir,
    )  # fmt: skip
    for namespace in ("payments", "shop"):
        run([kubectl, "get", "secrets", "-n", namespace], env=cluster_env, cwd=workdir)
    for namespace, name in (("payments", "api"), ("shop", "web")):
        run([kubectl, "logs", "-n", namespace, f"deployment/{name}", "-c", "app"],
            env=cluster_env, cwd=workdir)  # fmt: skip

    audit(workdir, cluster_env)


def kwok_lifecycle(
    workdir: Path, bao: BaoServer, cluster: Cluster, base: dict[str, str],
    cluster_env: dict[str, str],
) -> None:  # fmt: skip
    """Steps 6-8 on kwok: pods run nothing, so injection cannot happen or be proven."""
    step(
        "6. protect (cluster side only)",
        "approved plan, values proven: annotate, roll out once, record in the plan. kwok pods "
        "run nothing, so the proof of injection is off (--no-verify-injection, loudly)",
    )
    run(
        ["cloudtaser", "target", "protect", "--plan", "plan.yaml", "--vault-address",
         bao.address, "--yes", *GATE, "--require-verified", "verified.json",
         "--no-verify-injection"],
        env=cluster_env, cwd=workdir,
    )  # fmt: skip

    step(
        "runtime: the wrapper for a pod of payments/api, run on this host",
        "it logs in with the pod's ServiceAccount token, fetches its secrets, execs the app",
    )
    client = cluster.client()
    jwt = wl.request_token(client, "payments", "api", seconds=600)
    sa_token = workdir / "sa-token"
    sa_token.write_text(jwt)
    annotations = client.get(Deployment, "api", namespace="payments").spec.template.metadata
    notes = annotations.annotations or {}
    pod_env = {
        **base,
        "CLOUDTASER_VAULT_ADDR": bao.address,
        "CLOUDTASER_VAULT_AUTH_ROLE": notes["cloudtaser.io/vault-role"],
        "CLOUDTASER_VAULT_AUTH_MOUNT_PATH": notes.get(
            "cloudtaser.io/vault-auth-path", "auth/kubernetes"
        ),
        "CLOUDTASER_SECRET_PATHS": notes["cloudtaser.io/secret-paths"],
        "CLOUDTASER_ENV_MAP": notes["cloudtaser.io/env-map"],
        "CLOUDTASER_SA_TOKEN_PATH": str(sa_token),
    }
    app = workdir / "app.py"
    app.write_text(APP)
    run([runtime_binary(), "wrap", "--", "python3", "app.py"], env=pod_env, cwd=workdir)

    step(
        "7. finalize --delete-secrets (cluster side only), DRY RUN",
        "finalize acts only on workloads whose live pods are proven injected; on kwok they are "
        "not, so it refuses every workload (the safety rule) and deletes nothing",
    )
    run(
        ["cloudtaser", "target", "finalize", "--plan", "plan.yaml", "--dry-run", *GATE,
         "--require-verified", "verified.json", "--delete-secrets"],
        env=cluster_env, cwd=workdir,
    )  # fmt: skip

    audit(workdir, cluster_env)


def audit(workdir: Path, cluster_env: dict[str, str]) -> None:
    step(
        "audit (cluster side only)",
        "per namespace: who still reads Secrets, what is protected and finalized, Secrets left",
    )
    run(
        ["cloudtaser", "target", "audit", "-n", "payments", "-n", "shop"],
        env=cluster_env,
        cwd=workdir,
    )
    run(
        ["cloudtaser", "target", "audit", "-n", "payments", "-n", "shop", "--output", "html",
         "--report", "audit.html"],
        env=cluster_env, cwd=workdir,
    )  # fmt: skip
    print(
        f"  the audit report for the compliance ticket: {workdir / 'audit.html'}"
        " (kept with --workdir DIR or --keep)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the servers running")
    parser.add_argument("--workdir", help="where to put the plan, kubeconfig and logs")
    parser.add_argument(
        "--mode",
        choices=("auto", "realnode", "kwok"),
        default="auto",
        help="realnode: pods really run (root); kwok: fake nodes; auto (default): the real "
        "node when it can run here, else kwok, saying why",
    )
    parser.add_argument(
        "--why-not-realnode",
        action="store_true",
        help="print why the real node cannot run here (nothing: it can, once nox builds its "
        "binaries and the demo installs its packages) and exit",
    )
    args = parser.parse_args()
    if args.why_not_realnode:
        print(realnode_unavailable(built=False) or "")
        return
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=False)
        demo(workdir, args.keep, args.mode)
    else:
        with tempfile.TemporaryDirectory(prefix="cloudtaser-demo-") as tmp:
            demo(Path(tmp), args.keep, args.mode)


if __name__ == "__main__":
    main()
