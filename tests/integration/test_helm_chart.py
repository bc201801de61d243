"""The Helm chart ``charts/cloudtaser-runtime`` with the real ``helm`` (v4, built from the Go
module proxy with the test bed): first what it renders, then the chart installed on the real node.

**Rendered (no server).** One source of truth: the objects are
:func:`cloudtaser.target.install.manifests.build_objects`; ``helm template`` of the chart, with the
values ``target install --print-helm-values`` writes, must give exactly ``target install
--print``'s objects for the same flags, over a matrix that uses every install flag. What may
differ, and why (nothing else is normalised):

* ``app.kubernetes.io/managed-by``: ``Helm`` in the chart (``helm install`` sets it on every
  object of a release anyway; it is also how ``target uninstall`` tells a Helm install apart
  and leaves it alone) instead of ``cloudtaser``;
* the Namespace's ``cloudtaser.io/created-by: cloudtaser target install`` annotation: a chart's
  Namespace was not created by ``target install`` (``uninstall`` deletes only a namespace
  carrying it).

Also: the chart refuses what install would refuse, never renders caBundle, passes
``helm lint --strict``, and ``helm package`` is byte-reproducible with ``SOURCE_DATE_EPOCH``
(and not without it).

**Installed (real node).** ``helm package`` (reproducible: ``SOURCE_DATE_EPOCH`` plus the
archive's modification time, see docs/gitops.md) → ``helm push --plain-http`` to
``oci://<local registry>/charts`` → ``helm install`` from there with the values ``target install
--print-helm-values`` writes (URL mode, as tests/integration/test_injector_realnode.py installs:
the API server calls https://127.0.0.1:PORT/mutate) → ``target install --check`` passes against
the running webhook (the dry-run pod is mutated). Then what cloudtaser does to a Helm-owned
injector: ``target uninstall`` deletes nothing of it, and ``target install`` refuses to take it
over; ``helm upgrade`` keeps the caBundle the injector published. ``helm uninstall`` removes it.
The webhook must really run to publish its caBundle and mutate the dry-run pod: realnode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace

from cloudtaser.target.install import chart
from cloudtaser.target.install.chart import CHART_NAME, HELM_MANAGED_BY
from cloudtaser.target.install.manifests import CREATED_ANNOTATION, LABELS, NAME
from tests.integration.connect_helpers import cli
from tests.integration.test_injector_realnode import AUDIENCE, runtime_image  # noqa: F401
from tests.testenv.binaries import find_gitops_tools
from tests.testenv.openbao import BaoServer
from tests.testenv.process import free_ports
from tests.testenv.realnode import Image, RealNode

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / CHART_NAME
EPOCH = 1700000000
MANAGED_BY = "app.kubernetes.io/managed-by"


def _printed(argv: list[str]) -> str:
    """stdout of ``cloudtaser <argv>`` (asserting exit code 0)."""
    run = cli(argv)
    assert run.code == 0, run.text
    return run.stdout


def _helm() -> Path:
    return find_gitops_tools()["helm"]


BASE = ["--image", "registry.corp/cloudtaser-runtime:0.1.0", "--audience", "openbao",
        "--allowed-vault-address", "https://vault.corp:8200"]  # fmt: skip

#: (namespace, flags): every flag of install, each in at least one case.


MATRIX: dict[str, tuple[str, list[str]]] = {
    "minimal": ("cloudtaser-system", []),
    "everything-service-mode": (
        "ct-fleet",
        ["--allowed-vault-address", "http://openbao.vault.svc:8200/", "--replicas", "1",
         "--mirror", "docker.io=registry.corp:5000", "--mirror", "ghcr.io=mirror.corp/ghcr",
         "--read-pull-secrets", "--timeout-seconds", "5", "--cert-validity", "1h",
         "--default-vault-address", "http://openbao.vault.svc:8200/",
         "--default-auth-path", "/auth/k8s-prod/", "--default-auth-method", "jwt",
         "--default-vault-namespace", "team-a", "--jwt-token-expiration", "4294967296"],
    ),
    "url-mode-ipv4": (
        "ct-url",
        ["--webhook-url", "https://127.0.0.1:9443/mutate", "--kube-api", "10.0.0.1:6443",
         "--replicas", "3", "--default-auth-method", "kubernetes"],
    ),
    "url-mode-hostname": (
        "ct-host",
        ["--webhook-url", "https://injector.corp:8443/hook", "--kube-api", "[fd00::1]:6443",
         "--jwt-token-expiration", "900", "--default-vault-namespace", "ns/child"],
    ),
    "url-mode-ipv6-digest": (
        "ct-v6",
        ["--image", "registry.corp/rt@sha256:" + "a" * 64,
         "--webhook-url", "https://[::1]:9443/mutate"],
    ),
}  # fmt: skip


def _template(namespace: str, values: str, tmp: Path, *extra: str) -> list[dict[str, Any]]:
    path = tmp / "values.yaml"
    path.write_text(values)
    run = subprocess.run(
        [str(_helm()), "template", "cloudtaser", str(CHART), "--namespace", namespace,
         "--values", str(path), *extra],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def _normalised(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the two documented differences taken out (the module docstring)."""
    obj = json.loads(json.dumps(obj))
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata")):
        if meta and MANAGED_BY in meta.get("labels", {}):
            meta["labels"][MANAGED_BY] = "<managed-by>"
    if obj["kind"] == "Namespace":
        annotations = obj["metadata"].pop("annotations", {})
        annotations.pop(CREATED_ANNOTATION, None)
        if annotations:
            obj["metadata"]["annotations"] = annotations
    return obj


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keyed = {f"{o['kind']}/{o['metadata']['name']}": _normalised(o) for o in objects}
    assert len(keyed) == len(objects), "two objects of the same kind and name"
    return keyed


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_helm_template_renders_exactly_the_objects_of_install_print(
    case: str, tmp_path: Path
) -> None:
    namespace, flags = MATRIX[case]
    argv = ["target", "install", *BASE, "--namespace", namespace, *flags]
    printed = list(yaml.safe_load_all(_printed([*argv, "--print"])))
    values = _printed([*argv, "--print-helm-values"])
    rendered = _template(namespace, values, tmp_path, "--set", "createNamespace=true")
    want, got = _by_kind(printed), _by_kind(rendered)
    assert sorted(got) == sorted(want)
    for key, obj in want.items():
        assert got[key] == obj, key
    # the differences normalised above are exactly the documented ones
    assert {o["metadata"]["labels"][MANAGED_BY] for o in rendered} == {chart.HELM_MANAGED_BY}
    assert {o["metadata"]["labels"][MANAGED_BY] for o in printed} == {LABELS[MANAGED_BY]}


def test_without_create_namespace_the_chart_leaves_the_namespace_to_helm(tmp_path: Path) -> None:
    argv = ["target", "install", *BASE, "--print-helm-values"]
    rendered = _template("cloudtaser-system", _printed(argv), tmp_path)
    assert "Namespace" not in {o["kind"] for o in rendered}
    assert {o["metadata"].get("namespace", "cloudtaser-system") for o in rendered} == {
        "cloudtaser-system"
    }


def test_the_chart_never_renders_the_cabundle_the_injector_publishes(tmp_path: Path) -> None:
    for namespace, flags in MATRIX.values():
        argv = ["target", "install", *BASE, "--namespace", namespace, *flags]
        rendered = _template(namespace, _printed([*argv, "--print-helm-values"]), tmp_path)
        (mwc,) = [o for o in rendered if o["kind"] == "MutatingWebhookConfiguration"]
        assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"audience": "a", "allowedVaultAddresses": ["https://v:8200"]}, "image is required"),
        ({"image": "r/i:1", "audience": "a"}, "allowedVaultAddresses needs"),
        ({"image": "r/i:1", "audience": "a", "allowedVaultAddresses": ["https://v:8200"],
          "replicas": 0}, "replicas"),
        ({"image": "r/i:1", "audience": "a", "allowedVaultAddresses": ["https://v:8200"],
          "unknownKey": 1}, "unknownKey"),
    ],
)  # fmt: skip
def test_helm_refuses_values_install_would_refuse(
    values: dict[str, Any], needle: str, tmp_path: Path
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    run = subprocess.run(
        [str(_helm()), "template", "cloudtaser", str(CHART), "--values", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert needle in run.stderr


def _package(dest: Path, epoch: str | None) -> bytes:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env.update(HELM_CACHE_HOME=str(dest / "c"), HELM_CONFIG_HOME=str(dest / "f"),
               HELM_DATA_HOME=str(dest / "d"))  # fmt: skip
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    subprocess.run([str(_helm()), "package", str(CHART), "--destination", str(dest)],
                   check=True, capture_output=True, env=env, timeout=60)  # fmt: skip
    (tgz,) = dest.glob(f"{chart.CHART_NAME}-*.tgz")
    return tgz.read_bytes()


def test_helm_package_is_byte_reproducible_with_source_date_epoch(tmp_path: Path) -> None:
    """The release recipe (docs/gitops.md): with SOURCE_DATE_EPOCH the archive's bytes
    depend on the chart's content only; without it, on the files' modification times."""
    first = _package(tmp_path / "a", "1700000000")
    for path in CHART.rglob("*"):  # new modification times, same content
        os.utime(path, (time.time() + 5, time.time() + 5))
    assert _package(tmp_path / "b", "1700000000") == first
    assert _package(tmp_path / "c", None) != first  # the finding: not reproducible by default


def test_helm_lint_passes_on_install_written_values(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(_printed(["target", "install", *BASE, "--print-helm-values"]))
    run = subprocess.run(
        [str(_helm()), "lint", "--strict", str(CHART), "--values", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


@dataclass
class Helm:
    """The built ``helm`` with its own cache/config/data homes (nothing from ``~``)."""

    binary: Path
    home: Path
    kubeconfig: Path

    def run(self, *args: str, check: bool = True, epoch: bool = False) -> str:
        drop = {"KUBECONFIG", "SOURCE_DATE_EPOCH"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
            KUBECONFIG=str(self.kubeconfig),
        )
        if epoch:
            env["SOURCE_DATE_EPOCH"] = str(EPOCH)
        run = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                             env=env, timeout=300, check=False)  # fmt: skip
        if check:
            assert run.returncode == 0, f"helm {' '.join(args)}: {run.stdout}{run.stderr}"
        return run.stdout + run.stderr

    def package(self, dest: Path) -> Path:
        """The chart packaged reproducibly: SOURCE_DATE_EPOCH for the archive's entries and
        the archive's own mtime (``helm push`` records it as org.opencontainers.image.created)."""
        self.run("package", str(CHART), "--destination", str(dest), epoch=True)
        (tgz,) = dest.glob(f"{CHART_NAME}-*.tgz")
        os.utime(tgz, (EPOCH, EPOCH))
        return tgz


def push(helm: Helm, tgz: Path, url: str) -> str:
    """``helm push`` → the manifest digest it reports."""
    out = helm.run("push", str(tgz), url, "--plain-http")
    (digest,) = [line.split()[-1] for line in out.splitlines() if line.startswith("Digest:")]
    return digest


def install_flags(real_node: RealNode, openbao: BaoServer, port: int, *extra: str) -> list[str]:
    """The ``target install`` flags of a URL-mode injector on the real node."""
    return [
        "--image", real_node.image_ref("cloudtaser/runtime:e2e"),
        "--allowed-vault-address", openbao.address, "--audience", AUDIENCE,
        "--webhook-url", f"https://127.0.0.1:{port}/mutate",
        "--kube-api", f"{real_node.api_host}:{real_node.api_port}", "--replicas", "1", *extra,
    ]  # fmt: skip


def check(real_node: RealNode, namespace: str) -> dict[str, dict[str, Any]]:
    """``target install --check`` → its checks by name (asserting exit code 0)."""
    run = cli(["target", "install", "--check", "--namespace", namespace, "--output", "json",
               "--kubeconfig", str(real_node.kubeconfig)])  # fmt: skip
    assert run.code == 0, run.text
    return {c["name"]: c for c in json.loads(run.stdout)["checks"]}


def ca_bundle(real_node: RealNode) -> str:
    with contextlib.closing(real_node.client()) as client:
        mwc = client.get(MutatingWebhookConfiguration, NAME).to_dict()
    return str(mwc["webhooks"][0]["clientConfig"].get("caBundle") or "")


@dataclass
class Release:
    namespace: str
    flags: list[str]
    digest: str
    layer: str
    chart: str
    version: str
    values: Path


@pytest.fixture(scope="module")
def helm(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(find_gitops_tools()["helm"], tmp_path_factory.mktemp("helm"), real_node.kubeconfig)


@pytest.fixture(scope="module")
def release(
    real_node: RealNode,
    openbao: BaoServer,
    runtime_image: Image,  # noqa: F811
    helm: Helm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    """The chart pushed to the local registry and installed from there with ``helm install``."""
    tmp = tmp_path_factory.mktemp("chart")
    tgz = helm.package(tmp / "a")
    url = f"oci://{real_node.registry}/charts"
    digest = push(helm, tgz, url)
    (port,) = free_ports(1)
    namespace = f"ct-helm-{secrets.token_hex(3)}"
    flags = install_flags(real_node, openbao, port)
    values = cli(["target", "install", *flags, "--print-helm-values"])
    assert values.code == 0, values.text
    (tmp / "values.yaml").write_text(values.stdout)
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    helm.run("install", "cloudtaser", f"{url}/{CHART_NAME}", "--version", version,
             "--plain-http", "--namespace", namespace, "--create-namespace",
             "--values", str(tmp / "values.yaml"), "--wait", "--timeout", "180s")  # fmt: skip
    try:
        layer = hashlib.sha256(tgz.read_bytes()).hexdigest()
        yield Release(namespace, flags, digest, layer, f"{url}/{CHART_NAME}", version,
                      tmp / "values.yaml")  # fmt: skip
    finally:
        if real_node.running:
            helm.run("uninstall", "cloudtaser", "--namespace", namespace, "--wait",
                     "--timeout", "120s", check=False)  # fmt: skip
            with contextlib.closing(real_node.client()) as client, contextlib.suppress(ApiError):
                client.delete(Namespace, namespace)


def test_the_chart_artifact_is_reproducible_and_holds_the_packaged_chart(
    real_node: RealNode, helm: Helm, release: Release, tmp_path: Path
) -> None:
    again = helm.package(tmp_path)  # a second package, pushed to another repository
    assert hashlib.sha256(again.read_bytes()).hexdigest() == release.layer
    assert push(helm, again, f"oci://{real_node.registry}/charts-again") == release.digest
    # what helm pulls back is the chart that was packaged
    (tmp_path / "pulled").mkdir()
    helm.run("pull", f"oci://{real_node.registry}/charts/{CHART_NAME}", "--plain-http",
             "--destination", str(tmp_path / "pulled"))  # fmt: skip
    (pulled,) = (tmp_path / "pulled").glob("*.tgz")
    assert hashlib.sha256(pulled.read_bytes()).hexdigest() == release.layer


def test_install_check_passes_on_the_chart_installed_injector(
    real_node: RealNode, release: Release
) -> None:
    with contextlib.closing(real_node.client()) as client:
        deployment = client.get(Deployment, NAME, namespace=release.namespace).to_dict()
    meta = deployment["metadata"]
    # installed by Helm, not by target install: Helm's labels and annotations, no record
    assert meta["labels"][MANAGED_BY] == HELM_MANAGED_BY
    assert meta["annotations"]["meta.helm.sh/release-name"] == "cloudtaser"
    assert "cloudtaser-install" not in {m["manager"] for m in meta["managedFields"]}
    checks = check(real_node, release.namespace)
    assert set(checks) == {
        "deployment", "caBundle", "serving certificate", "cluster defaults", "mutation",
    }  # fmt: skip
    assert all(c["ok"] for c in checks.values()), checks
    assert "verifies against it" in checks["serving certificate"]["detail"]
    assert "came back injected" in checks["mutation"]["detail"]


def test_target_uninstall_and_install_leave_a_helm_release_alone(
    real_node: RealNode, release: Release
) -> None:
    # first: the release's objects exist and the webhook has published its CA
    bundle = ca_bundle(real_node)
    assert bundle
    run = cli(["target", "uninstall", "--namespace", release.namespace, "--output", "json",
               "--ignore-protected-workloads",
               "--kubeconfig", str(real_node.kubeconfig)])  # fmt: skip
    assert run.code == 0, run.text
    report = json.loads(run.stdout)
    deleted = [c for c in report["changes"] if c["action"] == "delete"]
    assert deleted == [], deleted
    assert {c["action"] for c in report["changes"]} == {"keep"}, report
    assert any("left alone" in c["detail"] for c in report["changes"]), report
    # then: nothing of it went away, and it still works
    with contextlib.closing(real_node.client()) as client:
        client.get(Deployment, NAME, namespace=release.namespace)
    assert ca_bundle(real_node) == bundle
    # install refuses to take over what Helm owns
    run = cli(["target", "install", *release.flags, "--namespace", release.namespace,
               "--kubeconfig", str(real_node.kubeconfig), "--timeout", "60s"])  # fmt: skip
    assert run.code != 0, run.text
    assert "was not created by cloudtaser" in run.text
    assert check(real_node, release.namespace)["mutation"]["ok"]


def test_helm_upgrade_keeps_the_cabundle_the_injector_published(
    real_node: RealNode, helm: Helm, release: Release
) -> None:
    """Helm v4 applies server-side (field manager helm): the chart never names caBundle, so
    an upgrade that changes the webhook configuration leaves the injector's field alone."""
    bundle = ca_bundle(real_node)
    assert bundle  # first: published
    helm.run("upgrade", "cloudtaser", release.chart, "--version", release.version,
             "--plain-http", "--namespace", release.namespace, "--values", str(release.values),
             "--set", "timeoutSeconds=11", "--wait", "--timeout", "180s")  # fmt: skip
    with contextlib.closing(real_node.client()) as client:
        mwc = client.get(MutatingWebhookConfiguration, NAME).to_dict()
    assert mwc["webhooks"][0]["timeoutSeconds"] == 11  # the upgrade applied the object
    managers = {(m["manager"], m["operation"]) for m in mwc["metadata"]["managedFields"]}
    assert ("helm", "Apply") in managers, managers
    assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == bundle  # and the CA survived
    checks = check(real_node, release.namespace)
    assert all(c["ok"] for c in checks.values()), checks
