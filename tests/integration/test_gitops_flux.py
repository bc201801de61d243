"""A real Flux (source-controller + kustomize-controller v1.9.6) against the test bed: what it
does to a live ``target protect`` of a workload it owns, and to a deleted Secret it owns.

The manifests are "Git": pushed to the test bed's local OCI registry as a Flux artifact
(``tests/testenv/oci.py``), reconciled by an ``OCIRepository`` and applied by a
``Kustomization`` (``tests/testenv/flux.py``). kwok is enough: no pod has to run.

Every destructive step first proves the thing exists, then what happened to it. What these tests
assert is what docs/gitops.md records as the truth about Flux.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Secret

from cloudtaser import plan as planlib
from cloudtaser.target import annotations as ann
from tests.testenv.binaries import find_flux_binaries
from tests.testenv.cluster import Cluster
from tests.testenv.flux import (
    FIELD_MANAGER,
    KUSTOMIZE_NAME_LABEL,
    KUSTOMIZE_NAMESPACE_LABEL,
    Flux,
    start_flux,
)
from tests.testenv.process import wait_until
from tests.testenv.workloads import DEFAULT_IMAGE, create_namespace, delete_namespace, unique_name

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAULT = "http://openbao.vault.svc:8200"
#: A value that must never appear in any output (the Secret in "Git").
CANARY = "flux-canary-7d1c0e"


@pytest.fixture(scope="module")
def flux(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    """Flux's two controllers and a local OCI registry against the session cluster."""
    binaries = find_flux_binaries()
    started = start_flux(cluster, tmp_path_factory.mktemp("flux"), binaries)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def app_ns(kube_client: Any) -> Iterator[str]:
    name = create_namespace(kube_client, unique_name("flux"))
    yield name
    delete_namespace(kube_client, name)


def _manifests(name: str) -> dict[str, str]:
    """What "Git" holds: a Secret and a Deployment reading two of its keys as env."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "type": "Opaque",
        "stringData": {"password": CANARY, "username": "app"},
    }
    env = [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": "db", "key": key}}}
        for var, key in (("DB_PASSWORD", "password"), ("DB_USER", "username"))
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"team": "shop"}},
                "spec": {"containers": [{"name": "app", "image": DEFAULT_IMAGE, "env": env}]},
            },
        },
    }
    return {
        "secret.yaml": yaml.safe_dump(secret, sort_keys=False),
        "deployment.yaml": yaml.safe_dump(deployment, sort_keys=False),
    }


def _synced(flux: Flux, namespace: str, name: str = "api") -> Any:
    artifact = flux.push(f"{namespace}/app", _manifests(name), revision="r1")
    flux.sync(namespace, "app", artifact)
    return artifact


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "NO_COLOR"}}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=REPO,
        env=env,
    )


def _deployment(client: Any, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.get(Deployment, name, namespace=namespace).to_dict()
    return obj


def _template_meta(obj: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    meta = obj["spec"]["template"]["metadata"]
    return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})


def _managers(obj: dict[str, Any]) -> dict[str, str]:
    return {
        str(m["manager"]): str(m["operation"]) for m in obj["metadata"].get("managedFields") or []
    }


def test_flux_applies_the_artifact_and_labels_what_it_owns(
    flux: Flux, kube_client: Any, app_ns: str
) -> None:
    artifact = _synced(flux, app_ns)
    obj = _deployment(kube_client, app_ns, "api")
    labels = obj["metadata"]["labels"]
    assert labels[KUSTOMIZE_NAME_LABEL] == "app"
    assert labels[KUSTOMIZE_NAMESPACE_LABEL] == app_ns
    assert _managers(obj)[FIELD_MANAGER] == "Apply"
    secret = kube_client.get(Secret, "db", namespace=app_ns)
    assert secret.metadata.labels[KUSTOMIZE_NAME_LABEL] == "app"
    assert artifact.revision.startswith("latest@sha256:")


def test_a_deleted_secret_that_git_holds_is_recreated_at_the_next_reconcile(
    flux: Flux, kube_client: Any, app_ns: str
) -> None:
    artifact = _synced(flux, app_ns)
    before = kube_client.get(Secret, "db", namespace=app_ns)
    assert sorted(before.data or {}) == ["password", "username"]  # it exists
    kube_client.delete(Secret, "db", namespace=app_ns)
    with pytest.raises(ApiError) as gone:
        kube_client.get(Secret, "db", namespace=app_ns)
    assert gone.value.status.code == 404  # it is really gone
    flux.reconcile(app_ns, "app", artifact)
    after = kube_client.get(Secret, "db", namespace=app_ns)
    assert after.metadata.uid != before.metadata.uid  # recreated, not the old object
    assert after.data == before.data
