"""The injector installed by a real Flux (source-controller + kustomize-controller) on the real
node, and what Flux does to the ``caBundle`` the injector publishes itself.

"Git" holds ``target install --print`` (URL mode, as tests/integration/test_injector_realnode.py
installs), pushed to the local OCI registry as a Flux artifact and applied by a
``Kustomization`` (``tests/testenv/flux.py``). The Namespace document is left out: it exists
already and holds the Kustomization itself (a team's own namespace, as with ``helm install -n``).

The proof, in order: the webhook publishes its CA (field manager ``cloudtaser-injector``, the
rest of the object is kustomize-controller's) and ``target install --check`` passes; a forced
reconcile of the same revision, then a new revision that really changes the
MutatingWebhookConfiguration (so kustomize-controller applies it), each keep the caBundle — the
same CA, still the injector's field — and ``--check`` still passes. Flux's server-side apply
owns only the fields in Git; install never writes caBundle, so there is nothing to fight over.
The contrast last: a revision whose Git does hold a caBundle has Flux take the field over.

Realnode: the webhook must really run to publish its CA.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration

from cloudtaser.target.install.manifests import NAME
from tests.integration.connect_helpers import cli
from tests.integration.test_helm_chart import ca_bundle, check, install_flags
from tests.integration.test_injector_realnode import runtime_image  # noqa: F401
from tests.testenv.binaries import find_flux_binaries
from tests.testenv.flux import FIELD_MANAGER, Flux, start_flux
from tests.testenv.oci import Artifact
from tests.testenv.openbao import BaoServer
from tests.testenv.process import free_ports, wait_until
from tests.testenv.realnode import Image, RealNode
from tests.testenv.workloads import create_namespace, delete_namespace

pytestmark = pytest.mark.integration

#: A caBundle that is not the injector's (for the contrast at the end).
STALE_CA = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\nc3RhbGU=\n-----END CERTIFICATE-----\n"
).decode()
#: The injector's field manager (runtime/internal/webhook/bundle.go).
INJECTOR_MANAGER = "cloudtaser-injector"


@pytest.fixture(scope="module")
def flux(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    started = start_flux(real_node.cluster, tmp_path_factory.mktemp("flux"), find_flux_binaries())
    try:
        yield started
    finally:
        started.stop()


def _git(flags: list[str]) -> dict[str, str]:
    """``target install --print`` without the Namespace document (see the module doc)."""
    run = cli(["target", "install", *flags, "--print"])
    assert run.code == 0, run.text
    docs = [d for d in yaml.safe_load_all(run.stdout) if d and d["kind"] != "Namespace"]
    return {"injector.yaml": yaml.safe_dump_all(docs, sort_keys=False)}


def _bundle_managers(mwc: dict[str, Any]) -> set[str]:
    """Field managers owning ``webhooks[0].clientConfig.caBundle``."""
    owners = set()
    for entry in mwc["metadata"].get("managedFields") or []:
        webhooks = (entry.get("fieldsV1") or {}).get("f:webhooks") or {}
        for item in webhooks.values():
            if isinstance(item, dict) and "f:caBundle" in (item.get("f:clientConfig") or {}):
                owners.add(str(entry["manager"]))
    return owners


def _mwc(real_node: RealNode) -> dict[str, Any]:
    with contextlib.closing(real_node.client()) as client:
        obj: dict[str, Any] = client.get(MutatingWebhookConfiguration, NAME).to_dict()
    return obj


def _passes(real_node: RealNode, namespace: str) -> bool:
    return cli(["target", "install", "--check", "--namespace", namespace,
                "--kubeconfig", str(real_node.kubeconfig)]).code == 0  # fmt: skip


@pytest.fixture(scope="module")
def synced(
    real_node: RealNode,
    openbao: BaoServer,
    runtime_image: Image,  # noqa: F811
    flux: Flux,
) -> Iterator[tuple[str, list[str], Artifact]]:
    (port,) = free_ports(1)
    with contextlib.closing(real_node.client()) as client:
        namespace = create_namespace(client, f"ct-flux-{secrets.token_hex(3)}")
    flags = [*install_flags(real_node, openbao, port), "--namespace", namespace]
    artifact = flux.push(f"{namespace}/injector", _git(flags), revision="r1")
    try:
        flux.sync(namespace, "injector", artifact)
        # as target install waits: the CA published, the replica ready, a pod mutated
        wait_until(lambda: _passes(real_node, namespace), timeout=180,
                   what="target install --check passes", interval=1.0,
                   diagnostics=flux.diagnostics)  # fmt: skip
        yield namespace, flags, artifact
    finally:
        if real_node.running:
            # deleting the Kustomization prunes what it applied (the webhook configuration too)
            real_node.cluster.kubectl("delete", "kustomization", "-n", namespace, "injector",
                                      "--wait=true", "--timeout=120s", check=False)  # fmt: skip
            # the contrast leaves a stale CA: never leave a failing webhook to later modules
            real_node.cluster.kubectl("delete", "mutatingwebhookconfiguration", NAME,
                                      "--ignore-not-found", check=False)  # fmt: skip
            with contextlib.closing(real_node.client()) as client:
                delete_namespace(client, namespace)


def test_flux_keeps_the_cabundle_the_injector_publishes(
    real_node: RealNode, flux: Flux, synced: tuple[str, list[str], Artifact]
) -> None:
    namespace, flags, artifact = synced
    # first: applied by Flux, the CA published by the injector, the injector working
    mwc = _mwc(real_node)
    managers = {m["manager"] for m in mwc["metadata"]["managedFields"]}
    assert FIELD_MANAGER in managers
    bundle = mwc["webhooks"][0]["clientConfig"]["caBundle"]
    assert bundle
    assert _bundle_managers(mwc) == {INJECTOR_MANAGER}
    assert check(real_node, namespace)["mutation"]["ok"]

    # a forced reconcile of the same revision
    flux.reconcile(namespace, "injector", artifact)
    assert _mwc(real_node)["webhooks"][0]["clientConfig"]["caBundle"] == bundle

    # a new revision that changes the webhook configuration: Flux really applies it
    changed = [*flags, "--timeout-seconds", "11"]
    revision = flux.push(f"{namespace}/injector", _git(changed), revision="r2")
    flux.reconcile(namespace, "injector", revision)
    mwc = _mwc(real_node)
    assert mwc["webhooks"][0]["timeoutSeconds"] == 11  # the apply happened
    assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == bundle  # and the CA survived it
    assert _bundle_managers(mwc) == {INJECTOR_MANAGER}
    time.sleep(2)  # one more look after the controllers settle
    assert ca_bundle(real_node) == bundle
    checks = check(real_node, namespace)
    assert all(c["ok"] for c in checks.values()), checks

    # the contrast, why install and the chart never render caBundle: a caBundle in Git is
    # taken over by Flux's forced server-side apply on the next revision — the fight
    files = _git(changed)
    docs = list(yaml.safe_load_all(files["injector.yaml"]))
    for doc in docs:
        if doc["kind"] == "MutatingWebhookConfiguration":
            doc["webhooks"][0]["clientConfig"]["caBundle"] = STALE_CA
    files["injector.yaml"] = yaml.safe_dump_all(docs, sort_keys=False)
    flux.reconcile(namespace, "injector", flux.push(f"{namespace}/injector", files, revision="r3"))
    mwc = _mwc(real_node)
    assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == STALE_CA
    assert FIELD_MANAGER in _bundle_managers(mwc)
