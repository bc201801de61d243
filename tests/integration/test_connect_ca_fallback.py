"""``target connect`` with a kubeconfig that carries no CA: the CA comes from the cluster's
``kube-root-ca.crt`` ConfigMap, and the disabled TLS verification is reported loudly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.connect_helpers import cleanup_cluster, cli, connect_args, hexid
from tests.testenv.cluster import Cluster
from tests.testenv.openbao import BaoServer

pytestmark = [pytest.mark.integration]


@pytest.fixture
def site(openbao: BaoServer, kube_client: Any) -> Iterator[dict[str, str]]:
    tag = hexid()
    info = {"mount": f"k8s-ca-{tag}", "ns": f"ct-ca-{tag}"}
    yield info
    openbao.api("DELETE", f"sys/auth/{info['mount']}")
    cleanup_cluster(kube_client, [info["ns"]], [f"cloudtaser-token-reviewer-{info['ns']}"])


def _kubeconfig_without_ca(cluster: Cluster, tmp_path: Path) -> Path:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"].pop("certificate-authority-data", None)
        entry["cluster"].pop("certificate-authority", None)
        entry["cluster"]["insecure-skip-tls-verify"] = True
    path = tmp_path / "no-ca.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_connect_takes_the_ca_from_kube_root_ca_configmap_and_warns(
    cluster: Cluster, openbao: BaoServer, tmp_path: Path, site: dict[str, str]
) -> None:
    args = connect_args(cluster, openbao, tmp_path, site["mount"], site["ns"])
    args[args.index("--kubeconfig") + 1] = str(_kubeconfig_without_ca(cluster, tmp_path))

    run = cli(args)

    assert run.code == 0, run.stderr
    assert "TLS verification of the API server" in run.stderr
    assert "DISABLED" in run.stderr
    config = openbao.api("GET", f"auth/{site['mount']}/config").json()["data"]
    assert config["kubernetes_ca_cert"].strip() == cluster.ca_pem.strip()
    assert config["kubernetes_host"] == cluster.server
    assert openbao.token not in run.stdout + run.stderr
