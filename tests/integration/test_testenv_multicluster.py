"""Several clusters at once: independent state, independent trust; stop() leaves nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from lightkube import ApiError
from lightkube.resources.core_v1 import Namespace

from tests.testenv.cluster import Cluster
from tests.testenv.process import pid_alive
from tests.testenv.workloads import create_namespace, delete_namespace, unique_name

pytestmark = pytest.mark.integration


def test_two_clusters_do_not_see_each_others_objects(
    cluster: Cluster, kube_client: Any, cluster_factory: Callable[..., Cluster]
) -> None:
    other = cluster_factory("ct-second")
    assert other.server != cluster.server
    assert other.ca_pem != cluster.ca_pem
    other_client = other.client()
    try:
        here = create_namespace(kube_client, unique_name("only-main"))
        there = create_namespace(other_client, unique_name("only-second"))
        assert kube_client.get(Namespace, here).metadata.name == here
        assert other_client.get(Namespace, there).metadata.name == there
        for client, absent in ((kube_client, there), (other_client, here)):
            with pytest.raises(ApiError) as info:
                client.get(Namespace, absent)
            assert info.value.status.code == 404
        delete_namespace(kube_client, here)
        delete_namespace(other_client, there)
    finally:
        other_client.close()


def test_one_clusters_ca_does_not_verify_the_others_server(
    cluster: Cluster, cluster_factory: Callable[..., Cluster]
) -> None:
    if not cluster.local:
        pytest.skip("external clusters may share a CA")
    other = cluster_factory("ct-second")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{other.server}/readyz", verify=str(cluster.ca_cert), timeout=5)


def test_stop_leaves_no_process_behind(cluster_factory: Callable[..., Cluster]) -> None:
    throwaway = cluster_factory("ct-leak-check", nodes=1)
    if not throwaway.local:
        pytest.skip("external clusters are not ours to stop")
    pids = throwaway.pids()
    assert set(pids) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }
    assert all(pid_alive(pid) for pid in pids.values())
    throwaway.stop()
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
    assert throwaway.leftover_pids() == []
    assert not throwaway.running
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{throwaway.server}/readyz", verify=False, timeout=3)
