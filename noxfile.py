"""Every developer task. Plain ``nox`` runs what CI runs: lint, typecheck, tests, runtime,
integration."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "typecheck", "tests", "runtime", "integration"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"
K8S_VERSION = os.environ.get("CLOUDTASER_K8S_VERSION", "1.36.3")
KWOK_VERSION = os.environ.get("CLOUDTASER_KWOK_VERSION", "v0.8.0")
FLUX_VERSION = os.environ.get("CLOUDTASER_FLUX_VERSION", "v1.9.6")


def _install(session: nox.Session, *groups: str, editable: bool = True) -> None:
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-e", ".", *deps) if editable else session.install(".", *deps)


def _testenv_env() -> dict[str, str]:
    return {
        "CLOUDTASER_K8S_VERSION": K8S_VERSION,
        "CLOUDTASER_KWOK_VERSION": KWOK_VERSION,
        "CLOUDTASER_FLUX_VERSION": FLUX_VERSION,
    }


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import-linter layer contracts (pyproject.toml)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # import-linter reads the source tree; PYTHONPATH makes `cloudtaser` findable uninstalled.
    session.run("lint-imports", env={"PYTHONPATH": str(ROOT)})
    # and each contract can fail: one planted violating import per contract, in a scratch copy
    session.run("python", "tools/check_import_contracts.py")


@nox.session(python=PYTHON)
def fmt(session: nox.Session) -> None:
    """Apply ruff's formatter and autofixes."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "--fix", ".")
    session.run("ruff", "format", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over cloudtaser/."""
    _install(session, "typecheck")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and CLI tests (no servers)."""
    _install(session, "test")
    session.run("pytest", "tests/unit", "tests/cli", *session.posargs)


@nox.session(python=False)
def testenv(session: nox.Session) -> None:
    """Build (once) the real Kubernetes binaries and Flux's source- and kustomize-controller
    from the Go module proxy into the cache.

    Does nothing when the cache is complete, or when CLOUDTASER_TESTENV_BIN /
    KUBEBUILDER_ASSETS point at prebuilt binaries.
    """
    _build_testenv(session)


def _build_testenv(session: nox.Session, *, node: bool = True, silent: bool = False) -> None:
    """Build the test bed's binaries once; ``node=False`` skips the real node's (kubelet,
    containerd...); ``silent`` shows the build's output only when it fails."""
    prebuilt = os.environ.get("CLOUDTASER_TESTENV_BIN") or os.environ.get("KUBEBUILDER_ASSETS")
    if prebuilt:
        session.log(f"using prebuilt binaries from {prebuilt}")
        return
    env = {**_testenv_env(), **({} if node else {"CLOUDTASER_TESTENV_NODE": "0"})}
    session.run(
        "bash", str(ROOT / "tests/testenv/build-k8s.sh"), env=env, silent=silent, external=True
    )


RUNTIME = ROOT / "runtime"
RUNTIME_BUILD = ROOT / "build" / "runtime"
RUNTIME_ARCHES = ("amd64", "arm64")
RUNTIME_MAX_BYTES = 10 * 1024 * 1024


def _go(session: nox.Session) -> tuple[str, dict[str, str]]:
    """The go binary (PATH, else /usr/local/go/bin) and an environment with it on PATH."""
    path = os.environ.get("PATH", "")
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if not go:
        session.error(
            "Go >= 1.26 is required for the runtime (not on PATH or in /usr/local/go/bin)"
        )
    return go, {"PATH": f"{path}{os.pathsep}{Path(go).parent}", "CGO_ENABLED": "0"}


def _version() -> str:
    text = (ROOT / "cloudtaser" / "__init__.py").read_text()
    found = re.search(r'__version__ = "([^"]+)"', text)
    return found.group(1) if found else "dev"


def _static_elf(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP program header (no dynamic loader)."""
    import struct  # noqa: PLC0415

    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    endian = "<" if data[5] == 1 else ">"
    phoff = struct.unpack_from(endian + "Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    types = [struct.unpack_from(endian + "I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def build_runtime(session: nox.Session, out: Path = RUNTIME_BUILD) -> dict[str, Path]:
    """Static, reproducible linux binaries of cloudtaser-runtime under ``out/linux-<arch>/``."""
    go, env = _go(session)
    ldflags = f"-s -w -buildid= -X main.version={_version()}"
    binaries = {}
    for arch in RUNTIME_ARCHES:
        target = out / f"linux-{arch}" / "cloudtaser-runtime"
        session.run(
            go, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", str(target),
            "./cmd/cloudtaser-runtime",
            env={**env, "GOOS": "linux", "GOARCH": arch}, external=True,
        )  # fmt: skip
        size = target.stat().st_size
        if size > RUNTIME_MAX_BYTES:
            session.error(f"{target} is {size} bytes, over the 10 MiB budget")
        if not _static_elf(target):
            session.error(f"{target} is not statically linked")
        session.log(f"{target.relative_to(ROOT)}: {size / 1048576:.2f} MiB, static")
        binaries[arch] = target
    return binaries


@nox.session(python=PYTHON)
def runtime(session: nox.Session) -> None:
    """The Go runtime: gofmt check, go vet, go test -race (end-to-end tests against a real
    bao -dev and, for the injector, etcd + kube-apiserver of the test bed), static binaries
    for linux/amd64 and linux/arm64, the OCI image layout.

    ``nox -s runtime -- --push REF`` also pushes the image index to a registry.
    """
    push = None
    if session.posargs:
        if len(session.posargs) != 2 or session.posargs[0] != "--push":
            session.error("usage: nox -s runtime [-- --push REF]")
        push = session.posargs[1]
    session.install(
        *[d for d in nox.project.dependency_groups(PYPROJECT, "test") if "openbao" in d]
    )
    go, env = _go(session)
    bao = shutil.which("bao", path=str(Path(session.bin)))
    env = {**env, "CLOUDTASER_BAO": bao or ""}
    # the injector's end-to-end test starts etcd + kube-apiserver from the test bed's cache
    _build_testenv(session)  # no-op when the cache is complete
    env = {**env, **_testenv_env()}
    session.chdir(RUNTIME)
    unformatted = session.run(
        str(Path(go).parent / "gofmt"), "-l", ".", silent=True, external=True, env=env
    )
    if isinstance(unformatted, str) and unformatted.strip():
        session.error(f"gofmt: not formatted:\n{unformatted}")
    session.run(go, "vet", "./...", external=True, env=env)
    # -race needs cgo (the binaries themselves are built with CGO_ENABLED=0)
    session.run(
        go, "test", "-race", "-count=1", "./...", external=True, env={**env, "CGO_ENABLED": "1"}
    )
    session.chdir(RUNTIME / "tools" / "push")
    session.run(go, "vet", "./...", external=True, env=env)
    session.run(go, "test", "-count=1", "./...", external=True, env=env)
    session.chdir(RUNTIME)
    binaries = build_runtime(session)
    image = RUNTIME_BUILD / "image"
    args = [f"{arch}={path}" for arch, path in binaries.items()]
    session.run(
        go, "run", "./tools/build-image", "-out", str(image), "-version", _version(),
        "-tag", f"cloudtaser-runtime:{_version()}", *args, external=True, env=env,
    )  # fmt: skip
    if push:
        session.chdir(RUNTIME / "tools" / "push")
        session.run(go, "run", ".", "-layout", str(image), push, external=True, env=env)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Integration tests against a real OpenBao dev server and real local control planes."""
    _build_testenv(session)  # no-op when the cache is complete
    _install(session, "test")
    # `nox -s integration -- tests/integration/test_x.py -k y` runs just that file
    named = any(a.startswith("tests/") for a in session.posargs)
    paths = [] if named else ["tests/integration"]
    session.run("pytest", *paths, *session.posargs, env=_testenv_env())


@nox.session(python=PYTHON)
def realnode(session: nox.Session) -> None:
    """Only the real-node tests (pytest -m realnode): pods whose containers really run.

    Needs root, overlayfs, cgroups, runc and the CNI plugins (see docs/testing.md).
    """
    _build_testenv(session)
    _install(session, "test")
    session.run(
        "pytest", "tests/integration", "-m", "realnode", *session.posargs, env=_testenv_env()
    )


@nox.session(python=PYTHON)
def e2e_kind(session: nox.Session) -> None:
    """The integration suite against two kind clusters (kind-config/) plus a local OpenBao.

    Needs a Docker engine and `kind`; CI machines have neither, so CI never runs this.
    Clusters are deleted afterwards unless `-- --keep-clusters` is given. Node image:
    CLOUDTASER_KIND_NODE_IMAGE (default: the image named in kind-config/*.yaml).
    """
    import shutil  # noqa: PLC0415 - only this session needs them
    import subprocess  # noqa: PLC0415

    docker, kind = shutil.which("docker"), shutil.which("kind")
    if not docker or not kind:
        session.error(
            "e2e_kind needs Docker and kind; this machine has no Docker engine"
            f" (docker: {docker or 'missing'}, kind: {kind or 'missing'})."
            " Use `nox -s integration` (local control planes, no Docker) instead"
        )
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        session.error(
            "e2e_kind: `docker info` failed, so no Docker engine is reachable here."
            " Start Docker, or use `nox -s integration` (no Docker needed)"
        )
    keep = "--keep-clusters" in session.posargs
    posargs = [a for a in session.posargs if a != "--keep-clusters"]
    _install(session, "test")
    workdir = Path(session.create_tmp()) / "kind"
    workdir.mkdir(parents=True, exist_ok=True)
    image = os.environ.get("CLOUDTASER_KIND_NODE_IMAGE")
    kubeconfigs = []
    created = []
    try:
        for cfg in ("cluster-a", "cluster-b"):
            name = f"cloudtaser-{cfg.removeprefix('cluster-')}"
            kubeconfig = workdir / f"{name}.kubeconfig"
            args = ["create", "cluster", "--name", name, "--config", f"kind-config/{cfg}.yaml"]
            args += ["--kubeconfig", str(kubeconfig), "--wait", "180s"]
            if image:
                args += ["--image", image]
            session.run(kind, *args, external=True)
            created.append(name)
            kubeconfigs.append(str(kubeconfig))
        env = {
            **_testenv_env(),
            "CLOUDTASER_E2E_KUBECONFIGS": os.pathsep.join(kubeconfigs),
            "CLOUDTASER_TEST_IMAGE": os.environ.get(
                "CLOUDTASER_TEST_IMAGE", "registry.k8s.io/pause:3.10"
            ),
        }
        session.run("pytest", "tests/integration", *posargs, env=env)
    finally:
        if not keep:
            for name in created:
                session.run(kind, "delete", "cluster", "--name", name, external=True)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: the whole workflow on a local OpenBao and a local cluster.

    ``nox -s demo -- --keep`` leaves both running and prints how to reach them. The real node's
    binaries (kubelet, containerd...) are built only when the real node can run here; build
    output is shown only when a build fails.
    """
    _install(session, "test")
    if any(a.endswith("kwok") for a in session.posargs):  # --mode kwok
        why_not = "--mode kwok"
    else:
        answer = session.run(
            "python", "-m", "tools.demo", "--why-not-realnode", silent=True, env=_testenv_env()
        )
        why_not = answer.strip() if isinstance(answer, str) else ""
    if why_not:
        session.log(f"not building the real node's binaries: the demo cannot use them ({why_not})")
    session.log(
        "building the Kubernetes binaries once into ~/.cache/cloudtaser-testenv (cold: several "
        "minutes on 2 cores, shown only if it fails; warm: nothing to do)"
    )
    _build_testenv(session, node=not why_not, silent=True)
    session.chdir(RUNTIME)
    build_runtime(session)  # the demo's runtime step runs the Go wrapper
    session.chdir(ROOT)
    session.run("python", "-m", "tools.demo", *session.posargs, env=_testenv_env())
    if why_not:  # nox's own last line says "successful": say first that it was the fallback
        session.warn(
            "the demo ran on kwok's fake nodes: target install, pods through the wrapper, "
            "finalize and the Secret removal were SKIPPED (see the banner above)"
        )


@nox.session(python=PYTHON)
def benchmarks(session: nox.Session) -> None:
    """Benchmark scripts, each comparing cloudtaser with the obvious alternative in one run.

    ``nox -s benchmarks -- plan_load`` runs one of them (plan_load, apply_plan, verify_plan,
    discover, protect, runtime_wrapper, injector, login, secret_files, exec_probes: the real node,
    root). Not part of plain ``nox``: they take minutes and measure, they do not test.
    ``injector`` is the Go benchmark of pod creations through the webhook
    (runtime/cmd/cloudtaser-runtime/inject_bench_test.go, docs/injector.md): cases interleaved in
    rounds, CLOUDTASER_BENCH_ROUNDS rounds (default 7).
    """
    _build_testenv(session)
    _install(session, "test")
    names = session.posargs or [
        "plan_load",
        "apply_plan",
        "verify_plan",
        "discover",
        "protect",
        "runtime_wrapper",
        "injector",
        "login",
        "secret_files",
        "exec_probes",
    ]
    if "runtime_wrapper" in names:
        session.chdir(RUNTIME)
        build_runtime(session)
        session.chdir(ROOT)
    for name in names:
        session.log(f"benchmark: {name}")
        if name == "injector":
            go, env = _go(session)
            session.chdir(RUNTIME)
            session.run(
                go, "test", "-v", "-run", "^$", "-bench", "InjectorPodCreation",
                "-benchtime", "1x", "-timeout", "60m", "./cmd/cloudtaser-runtime/",
                external=True, env={**env, **_testenv_env(), **_bench_rounds()},
            )  # fmt: skip
            session.chdir(ROOT)
            continue
        session.run("python", "-m", f"benchmarks.{name}", env=_testenv_env())


def _bench_rounds() -> dict[str, str]:
    rounds = os.environ.get("CLOUDTASER_BENCH_ROUNDS")
    return {"CLOUDTASER_BENCH_ROUNDS": rounds} if rounds else {}
