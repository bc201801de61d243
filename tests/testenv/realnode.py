"""A real Kubernetes node: control plane + containerd + kubelet, pods whose containers really run.

Loopback only: every pod uses ``hostNetwork: true``; images come from a local OCI registry
(``crane registry serve`` on 127.0.0.1) wired into containerd through ``hosts.toml``, with mirror
entries so production-style names (``ghcr.io/...``, ``registry.k8s.io/...``) resolve locally.
Images are built without Docker from a directory or a static binary on top of Debian's
``busybox-static`` (a one-layer root filesystem with a shell).

Only one node per host: the kubelet uses fixed host paths (``/var/lib/kubelet/device-plugins``,
``/var/log/containers``), so ``RealNode.start()`` takes a host-wide lock. Host side effects are
recorded in ``<base>/host-state.json`` before the kubelet starts and undone by ``stop()``; if a run
is killed, the next ``start()`` finds the stale base directory (its owner is dead) and undoes them.

What ``stop()`` undoes: every process (kubelet, containers, shims, containerd, registry, control
plane), every mount under the base, the ``kubepods`` cgroups, the kubelet's host paths, and the
sysctls the kubelet changes (``vm.overcommit_memory``, ``kernel.panic``, ``kernel.panic_on_oops``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.resources.core_v1 import Namespace, Node, Pod, ServiceAccount

from .binaries import k8s_bin_dir
from .cluster import Cluster
from .pki import issue_cert
from .process import (
    ManagedProcess,
    TestbedError,
    _owner_alive,
    free_ports,
    owner_marker,
    pid_alive,
    process_owner,
    wait_until,
)

NODE_NAME = "127.0.0.1"
NODE_BINARIES = ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "crane", "pause")
RUNC = Path("/usr/sbin/runc")
CNI_DIR = Path("/usr/lib/cni")
BUSYBOX = Path("/bin/busybox")
BASE_PREFIX = "rn-"
BASE_PARENT = Path("/tmp")  # short: shim sockets must stay under 108 bytes
LOCK_PATH = Path(os.environ.get("CLOUDTASER_REALNODE_LOCK", "/run/lock/cloudtaser-realnode.lock"))
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
#: Host paths the kubelet writes regardless of ``--root-dir``.
HOST_PATHS = (Path("/var/lib/kubelet"), Path("/var/log/containers"))
CGROUP_ROOT = Path("/sys/fs/cgroup")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # resolved through the mirror to the local registry
#: Registries whose names resolve to the local registry (path and tag kept).
MIRRORED = ("ghcr.io", "registry.k8s.io", "docker.io", "quay.io")
_MNT_DETACH = 2


# -- prerequisites -------------------------------------------------------------------------------


#: Prints the Debian packages this machine lacks (runc, containernetworking-plugins,
#: busybox-static, openssh-client): the one list ``.ci/run`` and the demo install.
PACKAGES_SCRIPT = Path(__file__).with_name("node-packages.sh")


def missing_packages() -> list[str]:
    """The Debian packages of ``node-packages.sh`` this machine lacks (empty list: none)."""
    out = subprocess.run(
        ["bash", str(PACKAGES_SCRIPT)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def host_blockers() -> list[str]:
    """What no package or build can give this host for a real node: root, overlayfs, cgroups."""
    out = []
    if os.geteuid() != 0:
        out.append("root (the kubelet and runc need it)")
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        out.append("overlayfs (`modprobe overlay`)")
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        out.append(f"cgroups mounted under {CGROUP_ROOT}")
    return out


def missing_node_files() -> list[str]:
    """The Debian-packaged files a real node runs with that this host lacks."""
    out = []
    if not os.access(RUNC, os.X_OK):
        out.append(f"{RUNC} (`apt-get install -y runc`)")
    if not os.access(CNI_DIR / "loopback", os.X_OK):
        out.append(f"{CNI_DIR}/loopback (`apt-get install -y containernetworking-plugins`)")
    if not os.access(BUSYBOX, os.X_OK):
        out.append(f"{BUSYBOX} (`apt-get install -y busybox-static`)")
    return out


def missing_node_binaries(bin_dir: Path | None = None) -> list[str]:
    """The node binaries ``build-k8s.sh`` builds that are not in ``bin_dir`` (the cache)."""
    bin_dir = bin_dir or k8s_bin_dir()
    absent = [b for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    return [f"node binaries in {bin_dir}: {', '.join(absent)} (`nox -s testenv`)"] if absent else []


def missing_prerequisites(bin_dir: Path | None = None) -> list[str]:
    """What this host lacks to run a real node (empty list: all present)."""
    return host_blockers() + missing_node_files() + missing_node_binaries(bin_dir)


# -- host state: mounts, cgroups, host paths, sysctls ---------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below ``base`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(base).rstrip("/")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        point = (point.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")).replace(
            "\\134", "\\"
        )
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_all(base: Path) -> None:
    """Lazily unmount everything under ``base`` (repeated: shared mounts propagate copies)."""
    libc = _libc()
    for _ in range(20):
        points = mounts_under(base)
        if not points:
            return
        for point in points:
            libc.umount2(point.encode(), _MNT_DETACH)
    left = mounts_under(base)
    if left:
        raise TestbedError(f"still mounted under {base}: {left[:5]}")


def kubepods_cgroups() -> list[Path]:
    """Every ``kubepods`` cgroup directory (v1 controllers and the unified hierarchy)."""
    out = []
    with contextlib.suppress(OSError):
        for hierarchy in CGROUP_ROOT.iterdir():
            if (hierarchy / "kubepods").is_dir():
                out.append(hierarchy / "kubepods")
    if (CGROUP_ROOT / "kubepods").is_dir():  # pure cgroup v2 host
        out.append(CGROUP_ROOT / "kubepods")
    return out


def _cgroup_pids(group: Path) -> set[int]:
    pids: set[int] = set()
    for dirpath, _dirs, files in os.walk(group):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                text = (Path(dirpath) / "cgroup.procs").read_text()
                pids.update(int(p) for p in text.split())
    return pids


def kill_cgroup_processes(timeout: float = 10.0) -> None:
    """SIGKILL every process in a ``kubepods`` cgroup and wait for them to go."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set().union(*(_cgroup_pids(g) for g in kubepods_cgroups()))
        pids = {p for p in pids if pid_alive(p)}
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise TestbedError(f"container processes survive SIGKILL: {sorted(pids)[:10]}")
        time.sleep(0.1)


def remove_kubepods_cgroups(timeout: float = 10.0) -> None:
    """rmdir every ``kubepods`` cgroup bottom-up (after their processes are gone)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        for group in kubepods_cgroups():
            for dirpath, _dirs, _files in os.walk(group, topdown=False):
                try:
                    Path(dirpath).rmdir()
                except OSError as exc:
                    busy.append(f"{dirpath}: {exc.strerror}")
        if not kubepods_cgroups():
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"kubepods cgroups not removable: {busy[:5]}")
        kill_cgroup_processes()
        time.sleep(0.1)


def read_sysctls() -> dict[str, str]:
    return {k: Path(f"/proc/sys/{k}").read_text().strip() for k in SYSCTLS}


def _snapshot(root: Path) -> list[str] | None:
    """Every path below ``root`` (``None``: ``root`` does not exist)."""
    if not root.exists():
        return None
    out = []
    for dirpath, dirs, files in os.walk(root):
        out.extend(str(Path(dirpath) / n) for n in (*dirs, *files))
    return out


def record_host_state(path: Path) -> dict[str, Any]:
    state = {
        "owner": owner_marker(),
        "sysctls": read_sysctls(),
        "host_paths": {str(p): _snapshot(p) for p in HOST_PATHS},
    }
    path.write_text(json.dumps(state))
    return state


def restore_host_state(state: Mapping[str, Any]) -> None:
    """Restore sysctls; remove what the kubelet added under the host paths."""
    for key, value in state["sysctls"].items():
        with contextlib.suppress(OSError):
            if Path(f"/proc/sys/{key}").read_text().strip() != value:
                Path(f"/proc/sys/{key}").write_text(value)
    for root_s, before in state["host_paths"].items():
        root = Path(root_s)
        if before is None:
            shutil.rmtree(root, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                root.unlink()  # a dangling symlink
            continue
        keep = set(before)
        now = _snapshot(root) or []
        for p in sorted(now, key=lambda s: -s.count("/")):
            if p in keep:
                continue
            path = Path(p)
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()


def host_state_differences(state: Mapping[str, Any]) -> list[str]:
    """What differs from a recorded host state (empty: the host is as it was)."""
    diffs = []
    now = read_sysctls()
    for key, value in state["sysctls"].items():
        if now[key] != value:
            diffs.append(f"sysctl {key}: {now[key]} (was {value})")
    for root_s, before in state["host_paths"].items():
        after = _snapshot(Path(root_s))
        if after is None and before is None:
            continue
        if (after is None) != (before is None):
            diffs.append(f"{root_s}: {'created' if before is None else 'removed'}")
            continue
        added = sorted(set(after or []) - set(before or []))
        if added:
            diffs.append(f"{root_s}: added {added[:5]}")
    return diffs


def _kill_base_processes(base: Path) -> None:
    """Kill every process whose command line mentions ``base`` (shims, leftover servers)."""
    needle = str(base).encode()
    victims = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                victims.append(int(entry.name))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(p) for p in victims):
        time.sleep(0.05)


def cleanup_base(base: Path) -> None:
    """Undo everything a node under ``base`` left: processes, mounts, cgroups, host state."""
    _kill_base_processes(base)
    kill_cgroup_processes()
    unmount_all(base)
    remove_kubepods_cgroups()
    state_file = base / "host-state.json"
    if state_file.is_file():
        with contextlib.suppress(ValueError, KeyError, OSError):
            restore_host_state(json.loads(state_file.read_text()))
    shutil.rmtree(base, ignore_errors=True)


def sweep_stale_nodes() -> list[Path]:
    """Clean up node base directories whose runner is gone (call with the host lock held)."""
    cleaned = []
    for base in sorted(BASE_PARENT.glob(f"{BASE_PREFIX}*")):
        owner_file = base / "owner"
        if not owner_file.is_file():
            continue
        with contextlib.suppress(OSError):
            if not _owner_alive(owner_file.read_text().strip()):
                cleanup_base(base)
                cleaned.append(base)
    return cleaned


# -- the lock ---------------------------------------------------------------------------------


class HostLock:
    """``flock`` on a host-wide file: one real node per machine."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self, timeout: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.close()
                    raise TestbedError(
                        f"another real node holds {self.path} for more than {timeout:.0f}s "
                        "(only one per host: the kubelet uses fixed host paths)"
                    ) from None
                time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{owner_marker()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# -- images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An image pushed to the local registry: ``ref`` (``127.0.0.1:PORT/repo:tag``), ``digest``."""

    ref: str
    digest: str

    @property
    def pinned(self) -> str:
        return f"{self.ref.rsplit(':', 1)[0]}@{self.digest}"


def _add(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    mode: int = 0o755,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, 0, 0, 0
    info.linkname = link
    if data is not None:
        info.size = len(data)
    tar.addfile(info, None if data is None else io.BytesIO(data))


def write_layer(
    path: Path,
    *,
    busybox: bool = True,
    directory: Path | None = None,
    files: Mapping[str, bytes | Path] | None = None,
    mode: int = 0o755,
) -> Path:
    """A tar layer: busybox (``/bin/busybox`` + applet links), ``directory``'s tree, ``files``."""
    seen: set[str] = set()

    def parents(tar: tarfile.TarFile, name: str) -> None:
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in seen:
                seen.add(d)
                _add(tar, d, kind=tarfile.DIRTYPE)

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("tmp", "etc", "proc", "sys", "dev", "var", "bin"):
            seen.add(d)
            _add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n", mode=0o644)
        _add(tar, "etc/group", data=b"root:x:0:\n", mode=0o644)
        if busybox:
            _add(tar, "bin/busybox", data=BUSYBOX.read_bytes())
            listed = subprocess.run(
                [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
            ).stdout.split()
            for applet in listed:
                if applet != "busybox":
                    _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        if directory is not None:
            for src in sorted(directory.rglob("*")):
                rel = src.relative_to(directory).as_posix()
                parents(tar, rel)
                if src.is_symlink():
                    _add(tar, rel, kind=tarfile.SYMTYPE, link=str(src.readlink()), mode=0o777)
                elif src.is_dir():
                    seen.add(rel)
                    _add(tar, rel, kind=tarfile.DIRTYPE, mode=src.stat().st_mode & 0o7777)
                else:
                    _add(tar, rel, data=src.read_bytes(), mode=src.stat().st_mode & 0o7777)
        for name, content in (files or {}).items():
            parents(tar, name)
            data = content.read_bytes() if isinstance(content, Path) else content
            _add(tar, name, data=data, mode=mode)
    return path


# -- the node -----------------------------------------------------------------------------------


class RealNode:
    """A control plane and one real node named ``127.0.0.1``. ``start()``/``stop()`` repeatable.

    After ``start()``: ``cluster`` (the ``Cluster``: ``kubeconfig``, ``server``, ``ca_cert``,
    ``ca_pem``, ``issuer``, ``client()``, ``kubectl()``), ``api_host``/``api_port`` (what pods use
    as ``KUBERNETES_SERVICE_HOST``/``PORT``), ``registry`` (``127.0.0.1:PORT``), ``base`` (the
    short base directory), ``log_dir``, ``timings`` (seconds per bring-up step) and
    ``startup_seconds``. See docs/testing.md for the helpers.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        binaries: Mapping[str, Path] | None = None,
        lock_timeout: float = float(os.environ.get("CLOUDTASER_REALNODE_LOCK_TIMEOUT", "900")),
        ready_timeout: float = 60.0,
    ) -> None:
        self.log_dir = log_dir
        bin_dir = k8s_bin_dir()
        self.bin = {n: bin_dir / n for n in (*NODE_BINARIES, "kubectl")}
        if binaries:
            self.bin.update(binaries)
        self.lock_timeout = lock_timeout
        self.ready_timeout = ready_timeout
        self.lock = HostLock()
        self.processes: dict[str, ManagedProcess] = {}
        self.timings: dict[str, float] = {}
        self.startup_seconds = 0.0
        self.host_state: dict[str, Any] = {}
        self.base = Path()
        self.registry = ""
        self._cluster: Cluster | None = None
        self._starts = 0

    def __repr__(self) -> str:
        return f"RealNode(base={str(self.base)!r}, registry={self.registry!r})"

    # -- properties --------------------------------------------------------------------------

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise TestbedError("the real node has not been started")
        return self._cluster

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def server(self) -> str:
        return self.cluster.server

    @property
    def ca_cert(self) -> Path:
        return self.cluster.ca_cert

    @property
    def ca_pem(self) -> str:
        return self.cluster.ca_pem

    api_host = NODE_NAME

    @property
    def api_port(self) -> int:
        return self.cluster.api_port

    @property
    def running(self) -> bool:
        return self._cluster is not None and all(p.alive() for p in self.processes.values())

    def api_env(self) -> list[dict[str, str]]:
        """Container ``env`` entries that point in-pod API clients at the apiserver (no
        kube-proxy here, so the ``kubernetes`` Service IP does not work)."""
        return [
            {"name": "KUBERNETES_SERVICE_HOST", "value": self.api_host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.api_port)},
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Lock, sweep stale nodes, start everything; node ``Ready`` or ``TestbedError``."""
        absent = missing_prerequisites(self.bin["kubelet"].parent)
        if absent:
            raise TestbedError(f"real node prerequisites missing: {'; '.join(absent)}")
        self.lock.acquire(self.lock_timeout)
        try:
            sweep_stale_nodes()
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        t0 = time.monotonic()
        self._starts += 1
        logs = self.log_dir / f"run-{self._starts}"
        self.base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX, dir=BASE_PARENT))
        (self.base / "owner").write_text(owner_marker() + "\n")
        self.host_state = record_host_state(self.base / "host-state.json")

        cluster = Cluster(
            "realnode",
            self.base / "cp",
            log_dir=logs,
            kwok=False,
            extra_args={
                "kube-apiserver": [
                    "--enable-admission-plugins=NodeRestriction",
                    "--kubelet-preferred-address-types=InternalIP,Hostname",
                ],
                "kube-controller-manager": ["--use-service-account-credentials=true"],
            },
        )
        # The kubelet client cert flags need the PKI, which Cluster creates in start(): add them
        # through paths that exist by then (the admin cert is in system:masters).
        pki_dir = cluster.workdir / "pki"
        cluster.extra_args["kube-apiserver"] += [
            f"--kubelet-client-certificate={pki_dir / 'admin.crt'}",
            f"--kubelet-client-key={pki_dir / 'admin.key'}",
            f"--kubelet-certificate-authority={pki_dir / 'ca.crt'}",
        ]
        self._cluster = cluster
        cluster.start()
        self.timings["control plane"] = time.monotonic() - t0

        t1 = time.monotonic()
        reg_port, kubelet_port, healthz_port, stream_port = free_ports(4)
        self.registry = f"127.0.0.1:{reg_port}"
        (self.base / "registry").mkdir()
        reg = self._spawn(
            "registry",
            [
                str(self.bin["crane"]),
                "registry",
                "serve",
                "--address",
                self.registry,
                "--disk",
                str(self.base / "registry"),
            ],
            logs,
        )
        _wait(
            lambda: requests.get(f"http://{self.registry}/v2/", timeout=2).ok,
            15,
            "local registry",
            reg,
        )
        self.timings["registry"] = time.monotonic() - t1

        t2 = time.monotonic()
        self._write_containerd_config(stream_port)
        ctrd = self._spawn(
            "containerd",
            [str(self.bin["containerd"]), "--config", str(self.base / "ctrd.toml")],
            logs,
        )
        _wait((self.base / "ctrd.sock").is_socket, 15, "containerd socket", ctrd)
        self.timings["containerd"] = time.monotonic() - t2

        t3 = time.monotonic()
        # containerd pulls PAUSE_IMAGE through the registry.k8s.io mirror entry.
        self.build_image(
            "pause:3.10", files={"/pause": self.bin["pause"]}, busybox=False, entrypoint=["/pause"]
        )
        self.timings["pause image"] = time.monotonic() - t3

        t4 = time.monotonic()
        self._write_kubelet_files(cluster, kubelet_port, healthz_port)
        kubelet = self._spawn(
            "kubelet",
            [
                str(self.bin["kubelet"]),
                f"--config={self.base / 'kubelet.yaml'}",
                f"--kubeconfig={self.base / 'kubelet.kubeconfig'}",
                f"--root-dir={self.base / 'kubelet'}",
                f"--cert-dir={self.base / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
            logs,
        )
        client = cluster.client()
        try:
            _wait(
                lambda: self._node_ready(client),
                self.ready_timeout,
                "node 127.0.0.1 Ready",
                kubelet,
                self.diagnostics,
            )
        finally:
            client.close()
        self.timings["kubelet → node Ready"] = time.monotonic() - t4
        self.startup_seconds = time.monotonic() - t0
        (logs / "timings.txt").write_text(
            "".join(f"{k:24s} {v:6.2f} s\n" for k, v in self.timings.items())
            + f"{'total':24s} {self.startup_seconds:6.2f} s\n"
        )

    def _spawn(self, name: str, argv: list[str], logs: Path) -> ManagedProcess:
        proc = ManagedProcess(name, argv, logs / f"{name}.log", cwd=self.base)
        self.processes[name] = proc
        proc.start()
        return proc

    def _node_ready(self, client: Client) -> bool:
        node = client.get(Node, NODE_NAME)
        conds = {c.type: c.status for c in (node.status.conditions or [])}
        if conds.get("Ready") != "True":
            return False
        client.get(ServiceAccount, "default", namespace="default")
        return True

    def _write_containerd_config(self, stream_port: int) -> None:
        b = self.base
        hosts = b / "certs.d"
        for name in (self.registry, *MIRRORED):
            d = hosts / name
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts.toml").write_text(
                f'server = "http://{self.registry}"\n\n'
                f'[host."http://{self.registry}"]\n  capabilities = ["pull", "resolve"]\n'
            )
        cni = b / "cni"
        cni.mkdir()
        (cni / "10-loopback.conflist").write_text(
            json.dumps({"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]})
        )
        cri_rt = '[plugins."io.containerd.cri.v1.runtime"'
        (b / "ctrd.toml").write_text(f"""version = 3
root = "{b}/ctrd-root"
state = "{b}/ctrd-state"
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.image-verifier.v1.bindir",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{b}/ctrd.sock"
[ttrpc]
  address = "{b}/ctrd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/ctrd-opt"
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "{b}/s"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"
{cri_rt}]
  restrict_oom_score_adj = true
  enable_selinux = false
{cri_rt}.cni]
  bin_dirs = ["{CNI_DIR}"]
  conf_dir = "{cni}"
{cri_rt}.containerd]
  default_runtime_name = "runc"
{cri_rt}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri_rt}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  SystemdCgroup = false
  Root = "{b}/runc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{hosts}"
[plugins."io.containerd.transfer.v1.local"]
  config_path = "{hosts}"
""")

    def _write_kubelet_files(self, cluster: Cluster, port: int, healthz_port: int) -> None:
        b = self.base
        pki = cluster.pki
        node_crt, node_key = issue_cert(
            pki, "node-client", cn=f"system:node:{NODE_NAME}", org="system:nodes"
        )
        srv_crt, srv_key = issue_cert(
            pki, "kubelet-serving", cn=NODE_NAME, server_ips=(NODE_NAME,), client=False
        )
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": cluster.server,
                        "certificate-authority": str(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "node",
                    "user": {"client-certificate": str(node_crt), "client-key": str(node_key)},
                }
            ],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "node"}}],
            "current-context": "c",
        }
        (b / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "readOnlyPort": 0,
            "tlsCertFile": str(srv_crt),
            "tlsPrivateKeyFile": str(srv_key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{b}/ctrd.sock",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "makeIPTablesUtilChains": False,
            "protectKernelDefaults": False,
            "podLogsDir": str(b / "pod-logs"),
            "volumePluginDir": str(b / "volume-plugins"),
            "clusterDomain": "cluster.local",
            "evictionHard": {
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "memory.available": "20Mi",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusReportFrequency": "10s",
        }
        (b / "kubelet.yaml").write_text(yaml.safe_dump(config))

    def stop(self) -> None:
        """Stop everything and undo every host side effect; raise if anything is left."""
        errors: list[str] = []
        if self.processes:
            self._record_memory()

        def step(what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{what}: {exc}")

        if "kubelet" in self.processes:
            step("kubelet", self.processes["kubelet"].stop)
        step("container processes", kill_cgroup_processes)
        for name in ("containerd", "registry"):
            if name in self.processes:
                step(name, self.processes[name].stop)
        if self.base != Path():
            step("shims", lambda: _kill_base_processes(self.base))
        if self._cluster is not None:
            step("control plane", self._cluster.stop)
        if self.base != Path():
            step("mounts", lambda: unmount_all(self.base))
        step("cgroups", remove_kubepods_cgroups)
        if self.host_state:
            step("host state", lambda: restore_host_state(self.host_state))
        if self.base != Path():
            shutil.rmtree(self.base, ignore_errors=True)
        self.processes = {}
        self.lock.release()
        if errors:
            raise TestbedError(f"real node: stopping failed: {'; '.join(errors)}")

    def leftovers(self, base: Path | None = None) -> list[str]:
        """What a stopped node left on the host (empty list: nothing). For the tear-down test."""
        base = base or self.base
        out = []
        marker = owner_marker()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            pid = int(entry.name)
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes()
                if pid_alive(pid) and (
                    str(base).encode() in cmd
                    or (process_owner(pid) == marker and b"containerd-shim" in cmd)
                ):
                    shown = cmd.replace(b"\0", b" ")[:120].decode("utf-8", "replace")
                    out.append(f"process {pid}: {shown}")
        out += [f"mount {m}" for m in mounts_under(base)]
        out += [f"cgroup {g}" for g in kubepods_cgroups()]
        if self.host_state:
            out += host_state_differences(self.host_state)
        if base.exists():
            out.append(f"directory {base}")
        return out

    def memory_kib(self) -> dict[str, tuple[int, int]]:
        """Per node process (current RSS, peak RSS) in KiB, plus the control plane's."""
        out = self.cluster.memory_kib() if self._cluster else {}
        for name, proc in self.processes.items():
            if proc.pid is None:
                continue
            fields = {}
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    k, _, v = line.partition(":")
                    fields[k] = v
            rss = int(fields.get("VmRSS", "0 kB").split()[0])
            hwm = int(fields.get("VmHWM", "0 kB").split()[0])
            out[name] = (rss, hwm)
        return out

    def _record_memory(self) -> None:
        mem = self.memory_kib()
        lines = [
            f"{n:26s} rss {r / 1024:7.1f} MiB  peak {h / 1024:7.1f} MiB"
            for n, (r, h) in mem.items()
        ]
        with contextlib.suppress(OSError):
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"memory-{self._starts}.txt").write_text("\n".join(lines) + "\n")

    def diagnostics(self, lines: int = 25) -> str:
        parts = [p.report(lines) for p in self.processes.values()]
        if self._cluster is not None:
            parts.append(self._cluster.diagnostics(lines))
        return "\n".join(parts)

    # -- clients -----------------------------------------------------------------------------

    def client(self, *, field_manager: str | None = None) -> Client:
        return self.cluster.client(field_manager=field_manager)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, input=input, timeout=timeout)

    # -- images ------------------------------------------------------------------------------

    def crane(self, *args: str, timeout: float = 120.0) -> str:
        """Run the built crane against the local registry; stdout, or ``TestbedError``."""
        env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY")}
        env.update(HOME=str(self.base), DOCKER_CONFIG=str(self.base / "docker"))
        r = subprocess.run(
            [str(self.bin["crane"]), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise TestbedError(f"crane {args[0]} failed ({r.returncode}): {r.stderr[-1500:]}")
        return r.stdout.strip()

    def image_ref(self, name: str) -> str:
        """``repo:tag`` -> ``127.0.0.1:PORT/repo:tag`` (a name with a registry is kept)."""
        first = name.split("/", 1)[0]
        return name if ("." in first or ":" in first) and "/" in name else f"{self.registry}/{name}"

    def build_image(
        self,
        name: str,
        *,
        directory: Path | None = None,
        binary: Path | None = None,
        binary_path: str = "/app",
        files: Mapping[str, bytes | Path] | None = None,
        entrypoint: Sequence[str] | None = None,
        cmd: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        platform: str = "linux/amd64",
        busybox: bool = True,
    ) -> Image:
        """Build a one-layer image and push it to the local registry (no Docker).

        The layer holds busybox (a shell: ``/bin/sh``) unless ``busybox=False``, the tree of
        ``directory``, ``binary`` at ``binary_path`` (default entrypoint when given), and
        ``files`` (image path -> bytes or host file). ``name`` is ``repo:tag`` in the local
        registry, or a full reference.
        """
        ref = self.image_ref(name)
        all_files = dict(files or {})
        if binary is not None:
            all_files[binary_path] = binary
            if entrypoint is None:
                entrypoint = [binary_path]
        with tempfile.TemporaryDirectory(dir=self.base) as tmp:
            layer = write_layer(
                Path(tmp) / "layer.tar", busybox=busybox, directory=directory, files=all_files
            )
            self.crane("append", "--oci-empty-base", "-f", str(layer), "-t", ref)
        args = ["mutate", ref, "-t", ref, "--set-platform", platform]
        if entrypoint is not None:
            args += [f"--entrypoint={','.join(entrypoint)}"]
        if cmd is not None:
            args += [f"--cmd={','.join(cmd)}"]
        for k, v in {"PATH": "/bin:/usr/bin:/sbin:/usr/sbin", **(env or {})}.items():
            args += ["-e", f"{k}={v}"]
        if workdir:
            args += ["-w", workdir]
        self.crane(*args)
        return Image(ref, self.crane("digest", ref))

    def build_index(self, name: str, images: Sequence[Image]) -> Image:
        """A multi-platform index (``crane index append``) of already pushed images."""
        ref = self.image_ref(name)
        args = ["index", "append", "-t", ref]
        for image in images:
            args += ["-m", image.pinned]
        self.crane(*args)
        return Image(ref, self.crane("digest", ref))

    def push_oci_layout(self, layout: Path, name: str) -> Image:
        """Push an OCI image layout directory (e.g. ``build/runtime/image/``) to the registry;
        a layout holding an index (several platforms) is pushed as that index."""
        ref = self.image_ref(name)
        index = json.loads((layout / "index.json").read_text())
        manifests = index.get("manifests", [])
        nested = any(m.get("mediaType", "").endswith("image.index.v1+json") for m in manifests)
        self.crane("push", *(["--index"] if len(manifests) > 1 or nested else []), str(layout), ref)
        return Image(ref, self.crane("digest", ref))

    def copy_image(self, src: str, dst: str) -> None:
        self.crane("copy", self.image_ref(src), self.image_ref(dst))

    # -- pods --------------------------------------------------------------------------------

    def pod_manifest(
        self,
        name: str,
        image: str,
        command: Sequence[str] | None = None,
        *,
        namespace: str = "default",
        env: Mapping[str, str] | None = None,
        service_account: str | None = None,
        restart_policy: str = "Never",
        api_env: bool = True,
        **spec: Any,
    ) -> dict[str, Any]:
        """A hostNetwork pod with one container ``main``; ``spec`` adds/overrides pod spec keys."""
        container: dict[str, Any] = {"name": "main", "image": image}
        if command is not None:
            container["command"] = list(command)
        envs = self.api_env() if api_env else []
        envs += [{"name": k, "value": v} for k, v in (env or {}).items()]
        if envs:
            container["env"] = envs
        pod_spec: dict[str, Any] = {
            "hostNetwork": True,
            "dnsPolicy": "Default",
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
        }
        if service_account:
            pod_spec["serviceAccountName"] = service_account
        pod_spec.update(spec)
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": pod_spec,
        }

    def run_pod(
        self,
        manifest: Mapping[str, Any],
        *,
        until: Iterable[str] = ("Running",),
        timeout: float = 60.0,
    ) -> Pod:
        """Create the pod and wait until its phase is one of ``until`` (see ``wait_pod``)."""
        with contextlib.closing(self.client()) as client:
            pod = client.create(codecs.from_dict(dict(manifest)))
        assert pod.metadata is not None
        return self.wait_pod(
            str(pod.metadata.namespace), str(pod.metadata.name), until=until, timeout=timeout
        )

    def wait_pod(
        self,
        namespace: str,
        name: str,
        *,
        until: Iterable[str] = ("Running",),
        timeout: float = 60.0,
    ) -> Pod:
        """Wait for the phase (``Running`` also needs every container ready); fail fast on
        ``Failed`` or an image pull error, with the pod's events and the kubelet log."""
        want = set(until)
        deadline = time.monotonic() + timeout
        with contextlib.closing(self.client()) as client:
            while True:
                pod = client.get(Pod, name, namespace=namespace)
                status = pod.status
                phase = status.phase if status else None
                statuses = (status.containerStatuses or []) if status else []
                ready = all(c.ready for c in statuses) and bool(statuses)
                if phase in want and (phase != "Running" or ready):
                    return pod
                waiting = [
                    c.state.waiting.reason
                    for c in [*statuses, *((status.initContainerStatuses or []) if status else [])]
                    if c.state and c.state.waiting and c.state.waiting.reason
                ]
                bad = [
                    w
                    for w in waiting
                    if w
                    in (
                        "ErrImagePull",
                        "ImagePullBackOff",
                        "CreateContainerError",
                        "InvalidImageName",
                    )
                ]
                if (phase == "Failed" and "Failed" not in want) or bad:
                    raise TestbedError(
                        f"pod {namespace}/{name}: {phase} {bad}\n"
                        f"{self.pod_diagnostics(namespace, name)}"
                    )
                if time.monotonic() > deadline:
                    raise TestbedError(
                        f"pod {namespace}/{name}: phase {phase}, not {sorted(want)} after "
                        f"{timeout:.0f}s\n{self.pod_diagnostics(namespace, name)}"
                    )
                time.sleep(0.2)

    def pod_diagnostics(self, namespace: str, name: str) -> str:
        described = self.kubectl("-n", namespace, "describe", "pod", name, check=False)
        kubelet = self.processes.get("kubelet")
        tail = kubelet.report(30) if kubelet else ""
        return f"{described.stdout[-3000:]}\n{tail}"

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """``kubectl logs`` (through the apiserver and the kubelet)."""
        args = ["-n", namespace, "logs", name]
        if container:
            args += ["-c", container]
        return self.kubectl(*args).stdout

    def exec(
        self,
        namespace: str,
        name: str,
        *command: str,
        container: str | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl exec`` (``-i`` when ``input`` is given)."""
        args = ["-n", namespace, "exec"]
        if input is not None:
            args.append("-i")
        args += [name]
        if container:
            args += ["-c", container]
        return self.kubectl(*args, "--", *command, input=input, check=check)

    def create_namespace(self, name: str) -> str:
        with contextlib.closing(self.client()) as client:
            client.create(
                codecs.from_dict(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                )
            )
            _wait(
                lambda: client.get(ServiceAccount, "default", namespace=name) is not None,
                30,
                f"default ServiceAccount in {name}",
            )
        return name

    def delete_namespace(self, name: str) -> None:
        with contextlib.closing(self.client()) as client, contextlib.suppress(ApiError):
            client.delete(Namespace, name)


def _wait(
    check: Any,
    timeout: float,
    what: str,
    proc: ManagedProcess | None = None,
    diagnostics: Any = None,
) -> None:
    wait_until(
        check,
        timeout=timeout,
        what=what,
        abort=proc.exit_reason if proc else (lambda: None),
        diagnostics=diagnostics or (proc.report if proc else (lambda: "")),
    )
