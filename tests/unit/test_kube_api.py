"""The object layer's kind table: every kind install creates (and uninstall lists) resolves to
its lightkube resource with the right scope, and messages name objects one way."""

from __future__ import annotations

import pytest

from cloudtaser.target.install.manifests import KINDS, InstallOptions, build_objects
from cloudtaser.target.kube import api

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_install_manages_resolves_with_its_scope(kind: str) -> None:
    assert api.resource(kind).__name__ == kind
    assert api.namespaced(kind) is (kind not in CLUSTER_SCOPED)


def test_every_built_object_has_a_namespace_exactly_when_its_kind_is_namespaced() -> None:
    opts = InstallOptions(
        image="registry.corp/cloudtaser-runtime:0.1.0",
        allowed_vault_addresses=("https://vault.corp:8200",),
        audience="vault",
    ).validated()
    for obj in build_objects(opts):
        assert obj["kind"] in KINDS
        assert ("namespace" in obj["metadata"]) is api.namespaced(obj["kind"]), obj["kind"]


def test_where_names_namespaced_and_cluster_scoped_objects() -> None:
    assert api.where("Deployment", "web", "shop") == "Deployment shop/web"
    assert api.where("ClusterRole", "reader", None) == "ClusterRole reader"
