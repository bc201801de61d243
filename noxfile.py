"""Every developer task. Plain ``nox`` runs what CI runs: lint, typecheck, tests, integration."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "typecheck", "tests", "integration"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"
K8S_VERSION = os.environ.get("CLOUDTASER_K8S_VERSION", "1.36.3")
KWOK_VERSION = os.environ.get("CLOUDTASER_KWOK_VERSION", "v0.8.0")


def _install(session: nox.Session, *groups: str, editable: bool = True) -> None:
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-e", ".", *deps) if editable else session.install(".", *deps)


def _testenv_env() -> dict[str, str]:
    return {
        "CLOUDTASER_K8S_VERSION": K8S_VERSION,
        "CLOUDTASER_KWOK_VERSION": KWOK_VERSION,
    }


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    _install(session, "lint", editable=False)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


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
    """Build (once) the real Kubernetes binaries from the Go module proxy into the cache.

    Does nothing when the cache is complete, or when CLOUDTASER_TESTENV_BIN /
    KUBEBUILDER_ASSETS point at prebuilt binaries.
    """
    _build_testenv(session)


def _build_testenv(session: nox.Session) -> None:
    prebuilt = os.environ.get("CLOUDTASER_TESTENV_BIN") or os.environ.get("KUBEBUILDER_ASSETS")
    if prebuilt:
        session.log(f"using prebuilt binaries from {prebuilt}")
        return
    session.run("bash", str(ROOT / "tests/testenv/build-k8s.sh"), env=_testenv_env())


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Integration tests against a real OpenBao dev server and real local control planes."""
    _build_testenv(session)  # no-op when the cache is complete
    _install(session, "test")
    session.run("pytest", "tests/integration", *session.posargs, env=_testenv_env())
