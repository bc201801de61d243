"""Kubeconfig merging and validation: bad files are one clear ConfigError, never a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cloudtaser.config import ClusterTarget
from cloudtaser.errors import ConfigError
from cloudtaser.target.kube.session import connect, load_kubeconfig

GOOD = """\
apiVersion: v1
kind: Config
clusters: [{name: c1, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u1, user: {token: abc}}]
contexts: [{name: ctx1, context: {cluster: c1, user: u1}}]
current-context: ctx1
"""


def test_first_file_wins_like_kubectl(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(GOOD)
    b.write_text(
        GOOD.replace("6443", "7443").replace("current-context: ctx1", "current-context: x")
    )
    merged = load_kubeconfig((str(a), str(b)))
    assert merged["current-context"] == "ctx1"
    assert [c["cluster"]["server"] for c in merged["clusters"]] == ["https://127.0.0.1:6443"]


@pytest.mark.parametrize(
    "text",
    [
        "contexts: 5\n",
        "clusters: [{name: [1, 2]}]\n",
        "contexts: [{name: x, context: x}]\n",
        "- a\n- b\n",
        "a: [unclosed\n",
        "clusters: [{cluster: {server: x}}]\n",
    ],
)
def test_malformed_kubeconfig_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(ConfigError):
        connect(ClusterTarget(kubeconfig=(str(path),)))


def test_unknown_context_names_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match=r"context 'nope' not found .*ctx1"):
        connect(ClusterTarget(kubeconfig=(str(path),), context="nope"))


def test_insecure_kubeconfig_is_reported_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(GOOD)
    logger = logging.getLogger("cloudtaser")  # the CLI may have turned propagation off
    logger.addHandler(caplog.handler)
    try:
        with connect(ClusterTarget(kubeconfig=(str(path),))) as session:
            assert session.server == "https://127.0.0.1:6443"
    finally:
        logger.removeHandler(caplog.handler)
    assert "TLS verification of the API server" in caplog.text
    assert "DISABLED" in caplog.text
