"""`target install` / `target uninstall` against a real kube-apiserver (kwok nodes: the
Deployment rolls out, nothing runs in its pods).

A cluster of its own (``ct-install``): the webhook configuration is cluster-scoped and fails
closed for opted-in pods, which other tests on the shared cluster create.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from lightkube import ApiError, Client
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, ServiceAccount
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.resources.rbac_authorization_v1 import ClusterRole
from lightkube.types import PatchType

from tests.integration.connect_helpers import CliRun, cli, hexid
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import ContainerSpec, create_workload, deployment, wait_rollout

IMAGE_V1 = "registry.corp:5000/cloudtaser/runtime:0.1.0"
IMAGE_V2 = "registry.corp:5000/cloudtaser/runtime:0.2.0"
VAULT = "https://vault.corp:8200"
NAME = "cloudtaser-injector"

SCHEMAS = Path(__file__).resolve().parents[2] / "schema"


def _doc(stdout: str) -> Any:
    """A ``-o json`` result, validated against its committed schema (``schema/output-<kind>``)."""
    doc = json.loads(stdout)
    schema = json.loads((SCHEMAS / f"output-{doc['kind']}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    return doc


@pytest.fixture(scope="module")
def icluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory("ct-install", nodes=2)


@pytest.fixture
def kclient(icluster: Cluster) -> Iterator[Client]:
    client = icluster.client()
    yield client
    client.close()


@pytest.fixture
def ns(icluster: Cluster, kclient: Client) -> Iterator[str]:
    """A namespace name for the install; everything is uninstalled afterwards."""
    name = f"ct-sys-{hexid()}"
    yield name
    cli(["target", "uninstall", "--namespace", name, "--kubeconfig", str(icluster.kubeconfig),
         "--timeout", "60s"])  # fmt: skip


def _install(
    cl: Cluster, ns: str, *extra: str, image: str = IMAGE_V1, wait: bool = False
) -> CliRun:
    """``target install``, by default ``--no-wait``: no webhook runs on kwok, so install's wait
    (every ``--check`` passes) can only end in its deadline
    (:func:`test_install_waits_for_the_cabundle_and_a_mutation_and_never_says_ready_without`)."""
    return cli(
        ["target", "install", "--image", image, "--allowed-vault-address", VAULT,
         "--audience", "vault", "--namespace", ns, "--kubeconfig", str(cl.kubeconfig),
         "--timeout", "60s", "--output", "json", *([] if wait else ["--no-wait"]), *extra]
    )  # fmt: skip


def _exists(client: Client, kind: Any, name: str, namespace: str | None) -> bool:
    try:
        client.get(kind, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
    return True


def _changes(run: CliRun) -> dict[str, str]:
    assert run.code == 0, run.text
    result = _doc(run.stdout)
    assert (result["formatVersion"], result["kind"]) == ("1", "install")
    actions = {c["kind"]: c["action"] for c in result["changes"]}
    assert sum(result["summary"].values()) == len(result["changes"])
    return actions


def _rv(client: Client, res: Any, name: str, namespace: str | None = None) -> str:
    obj = client.get(res, name, namespace=namespace)
    assert obj.metadata is not None
    return str(obj.metadata.resourceVersion)


def _fake_ca() -> str:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test webhook CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _publish_ca(client: Client, pem: str) -> None:
    """What the webhook does: patch caBundle with its own field manager."""
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {"name": "inject.cloudtaser.io",
             "clientConfig": {"caBundle": base64.b64encode(pem.encode()).decode()}}
        ],
    }  # fmt: skip
    client.patch(
        MutatingWebhookConfiguration, NAME, body, patch_type=PatchType.APPLY,
        field_manager="cloudtaser-injector", force=True,
    )  # fmt: skip


def test_install_creates_everything_rerun_changes_nothing_and_keeps_the_cabundle(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    first = _changes(_install(icluster, ns))
    assert set(first.values()) == {"create"}, first
    assert set(first) == {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
        "RoleBinding", "Service", "Deployment", "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    }  # fmt: skip
    namespace = kclient.get(Namespace, ns)
    assert namespace.metadata is not None
    assert (namespace.metadata.labels or {})["app.kubernetes.io/managed-by"] == "cloudtaser"
    mwc = kclient.get(MutatingWebhookConfiguration, NAME)
    assert mwc.metadata is not None
    managers = {f.manager for f in mwc.metadata.managedFields or []}
    assert managers == {"cloudtaser-install"}
    record = kclient.get(ConfigMap, "cloudtaser-injector-install", namespace=ns)
    listed = json.loads((record.data or {})["objects"])
    assert {o["kind"] for o in listed} == set(first)
    assert all(o["uid"] for o in listed)
    wait_rollout(kclient, "Deployment", ns, NAME)  # kwok marks the pods ready
    dep = kclient.get(Deployment, NAME, namespace=ns)
    assert dep.status is not None
    assert dep.status.readyReplicas == 2

    ca = _fake_ca()
    _publish_ca(kclient, ca)
    versions = {kind: _rv(kclient, res, NAME, namespace)
                for kind, res, namespace in (("Deployment", Deployment, ns),
                                             ("ClusterRole", ClusterRole, None),
                                             ("ServiceAccount", ServiceAccount, ns))}  # fmt: skip
    mwc_rv = _rv(kclient, MutatingWebhookConfiguration, NAME)

    again = _changes(_install(icluster, ns))
    assert set(again.values()) == {"unchanged"}, again
    for kind, res, namespace in (("Deployment", Deployment, ns), ("ClusterRole", ClusterRole, None),
                                 ("ServiceAccount", ServiceAccount, ns)):  # fmt: skip
        assert _rv(kclient, res, NAME, namespace) == versions[kind], kind
    assert _rv(kclient, MutatingWebhookConfiguration, NAME) == mwc_rv
    hook = (kclient.get(MutatingWebhookConfiguration, NAME).webhooks or [])[0]
    assert base64.b64decode(hook.clientConfig.caBundle or "").decode() == ca  # not wiped


def test_upgrade_is_a_rerun_with_a_new_image_and_dry_run_shows_it_first(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    _changes(_install(icluster, ns))
    # --no-wait returned before kwok finished the rollout: its status updates would move the
    # resourceVersion the dry run must leave alone
    wait_rollout(kclient, "Deployment", ns, NAME, timeout=60)
    before = _rv(kclient, Deployment, NAME, ns)
    dry = _install(icluster, ns, "--dry-run", image=IMAGE_V2)
    assert dry.code == 0, dry.text
    report = _doc(dry.stdout)
    changed = {c["kind"]: c for c in report["changes"] if c["action"] != "unchanged"}
    assert set(changed) == {"Deployment"}, report
    diff = "\n".join(changed["Deployment"]["diff"])
    assert f"-        image: {IMAGE_V1}" in diff
    assert f"+        image: {IMAGE_V2}" in diff
    assert _rv(kclient, Deployment, NAME, ns) == before  # the dry run changed nothing

    up = _changes(_install(icluster, ns, image=IMAGE_V2))
    assert up["Deployment"] == "update"
    assert {k for k, v in up.items() if v != "unchanged"} == {"Deployment"}
    dep = kclient.get(Deployment, NAME, namespace=ns)
    assert dep.spec is not None
    container = dep.spec.template.spec.containers[0]  # type: ignore[union-attr]
    assert container.image == IMAGE_V2
    args = container.args or []
    assert args[args.index("--runtime-image") + 1] == IMAGE_V2  # injected pods get it too


def test_rerun_prunes_what_is_no_longer_wanted_and_pull_secrets_widen_only_the_cluster_role(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    _changes(_install(icluster, ns))
    run = _install(icluster, ns, "--replicas", "1", "--read-pull-secrets")
    changes = _changes(run)
    assert changes["PodDisruptionBudget"] == "delete"
    assert changes["ClusterRole"] == "update"
    assert "get secrets (all namespaces)" in run.stderr
    deadline = time.monotonic() + 30  # --no-wait: the prune's delete is not awaited
    while _exists(kclient, PodDisruptionBudget, NAME, ns):
        assert time.monotonic() < deadline, "the pruned PodDisruptionBudget is still there"
        time.sleep(0.2)
    rules = kclient.get(ClusterRole, NAME).rules or []
    assert [(r.resources, r.verbs) for r in rules][1:] == [(["secrets"], ["get"])]


def test_uninstall_removes_exactly_what_install_created(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    _changes(_install(icluster, ns))
    dry = cli(["target", "uninstall", "--namespace", ns, "--dry-run", "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig)])  # fmt: skip
    assert dry.code == 0, dry.text
    assert {c["action"] for c in _doc(dry.stdout)["changes"]} == {"delete"}
    kclient.get(MutatingWebhookConfiguration, NAME)  # still there after the dry run

    run = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig), "--timeout", "60s"])  # fmt: skip
    assert run.code == 0, run.text
    actions = {(c["kind"], c["action"]) for c in _doc(run.stdout)["changes"]}
    assert ("Namespace", "delete") in actions
    assert ("MutatingWebhookConfiguration", "delete") in actions
    for res, namespace in ((MutatingWebhookConfiguration, None), (ClusterRole, None),
                           (Namespace, None)):  # fmt: skip
        name = ns if res is Namespace else NAME
        with pytest.raises(Exception, match="not found"):
            kclient.get(res, name, namespace=namespace)
    again = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
                 "--kubeconfig", str(icluster.kubeconfig)])  # fmt: skip
    assert again.code == 0, again.text
    assert _doc(again.stdout)["changes"] == []


def test_a_namespace_install_did_not_create_is_used_never_changed_nor_deleted(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    kclient.create(Namespace.from_dict({"metadata": {"name": ns, "labels": {"team": "sec"}}}))
    kclient.create(ConfigMap.from_dict({"metadata": {"name": "theirs", "namespace": ns},
                                        "data": {"k": "v"}}))  # fmt: skip
    changes = _changes(_install(icluster, ns))
    assert changes["Namespace"] == "unchanged"
    labels = kclient.get(Namespace, ns).metadata.labels or {}  # type: ignore[union-attr]
    assert "app.kubernetes.io/managed-by" not in labels
    run = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig), "--timeout", "60s"])  # fmt: skip
    assert run.code == 0, run.text
    actions = {c["kind"]: c["action"] for c in _doc(run.stdout)["changes"]}
    assert actions["Namespace"] == "keep"
    assert actions["Deployment"] == "delete"
    kclient.get(Namespace, ns)
    kclient.get(ConfigMap, "theirs", namespace=ns)
    with pytest.raises(Exception, match="not found"):
        kclient.get(Deployment, NAME, namespace=ns)
    kclient.delete(Namespace, ns)


def test_a_created_namespace_that_now_holds_other_objects_is_kept_and_so_are_they(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    _changes(_install(icluster, ns))
    kclient.create(ServiceAccount.from_dict({"metadata": {"name": "reviewer", "namespace": ns}}))
    run = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig), "--timeout", "60s"])  # fmt: skip
    assert run.code == 0, run.text
    by_kind = {c["kind"]: c for c in _doc(run.stdout)["changes"]}
    assert by_kind["Namespace"]["action"] == "keep"
    assert "ServiceAccount reviewer" in by_kind["Namespace"]["detail"]
    kclient.get(ServiceAccount, "reviewer", namespace=ns)
    kclient.delete(Namespace, ns)


def test_without_a_record_uninstall_goes_by_names_and_labels_and_spares_foreign_objects(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    _changes(_install(icluster, ns))
    kclient.delete(ConfigMap, "cloudtaser-injector-install", namespace=ns)
    # someone relabels the Service: it is no longer recognisably ours
    kclient.patch(
        __import__("lightkube.resources.core_v1", fromlist=["Service"]).Service, NAME,
        {"metadata": {"labels": {"app.kubernetes.io/part-of": "other"}}}, namespace=ns,
    )  # fmt: skip
    run = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig), "--timeout", "60s"])  # fmt: skip
    assert run.code == 0, run.text
    by_kind = {c["kind"]: c["action"] for c in _doc(run.stdout)["changes"]}
    assert by_kind["Service"] == "keep"
    assert by_kind["Deployment"] == "delete"
    assert by_kind["MutatingWebhookConfiguration"] == "delete"
    assert by_kind["Namespace"] == "keep"  # the Service still lives in it
    kclient.delete(Namespace, ns)


def test_an_unlabelled_object_of_the_same_name_stops_install_with_a_clear_error(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    kclient.create(ClusterRole.from_dict({"metadata": {"name": NAME}, "rules": []}))
    try:
        run = _install(icluster, ns)
        assert run.code == 4, run.text
        assert "ClusterRole cloudtaser-injector exists but was not created by cloudtaser" in (
            run.stderr
        )
        assert "Traceback" not in run.stderr
        assert not kclient.get(ClusterRole, NAME).rules
        with pytest.raises(Exception, match="not found"):
            kclient.get(Namespace, ns)  # nothing was written before the conflict was found
    finally:
        kclient.delete(ClusterRole, NAME)


def test_install_waits_for_the_cabundle_and_a_mutation_and_never_says_ready_without(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    # no webhook runs on kwok: the Deployment rolls out, its CA is never published
    run = _install(icluster, ns, "--timeout", "30s", "--output", "text", wait=True)

    assert run.code == 4, run.text  # docs/cli.md: the injector did not become ready
    assert "injector ready" not in run.stdout
    assert "the injector is not ready: caBundle: empty" in run.stderr
    assert "mutation:" in run.stderr  # the dry-run pod's answer is named too
    assert "cloudtaser target install --check" in run.stderr
    wait_rollout(kclient, "Deployment", ns, NAME)  # it was the caBundle, not the rollout
    check = cli(["target", "install", "--check", "--namespace", ns, "--kubeconfig",
                 str(icluster.kubeconfig)])  # fmt: skip
    assert check.code == 1, check.text  # what install said, --check says


def test_check_reports_a_missing_cabundle_and_exits_1(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    _changes(_install(icluster, ns))
    wait_rollout(kclient, "Deployment", ns, NAME)  # kwok marks the pods ready
    run = cli(["target", "install", "--check", "--namespace", ns, "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig)])  # fmt: skip
    assert run.code == 1, run.text
    checks = {c["name"]: c for c in _doc(run.stdout)["checks"]}
    assert checks["deployment"]["ok"] is True
    assert checks["caBundle"]["ok"] is False
    assert "not published its CA" in checks["caBundle"]["detail"]
    _publish_ca(kclient, "not a certificate")
    run = cli(["target", "install", "--check", "--namespace", ns, "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig)])  # fmt: skip
    checks = {c["name"]: c for c in _doc(run.stdout)["checks"]}
    assert run.code == 1
    assert "no valid PEM CA" in checks["caBundle"]["detail"]


def test_dry_run_on_an_empty_cluster_creates_nothing(icluster: Cluster, kclient: Client) -> None:
    name = f"ct-sys-{hexid()}"
    run = _install(icluster, name, "--dry-run")
    assert run.code == 0, run.text
    changes = _doc(run.stdout)["changes"]
    assert {c["action"] for c in changes} == {"create"}
    with pytest.raises(Exception, match="not found"):
        kclient.get(Namespace, name)
    with pytest.raises(Exception, match="not found"):
        kclient.get(MutatingWebhookConfiguration, NAME)


def test_install_check_and_uninstall_with_exactly_the_documented_rbac(
    icluster: Cluster, kclient: Client, ns: str, tmp_path: Any
) -> None:
    from tests.integration.test_least_privilege import Identity, doc_cluster_role

    ident = Identity(icluster, kclient, tmp_path)
    try:
        ident.grant(doc_cluster_role("rbac-install"))
        kubeconfig = str(ident.kubeconfig())
        args = ["target", "install", "--image", IMAGE_V1, "--allowed-vault-address", VAULT,
                "--audience", "vault", "--namespace", ns, "--kubeconfig", kubeconfig,
                "--timeout", "60s", "--output", "json", "--no-wait"]  # fmt: skip
        first = cli(args)
        assert first.code == 0, first.text
        assert {c["action"] for c in _doc(first.stdout)["changes"]} == {"create"}
        again = cli(args)
        assert again.code == 0, again.text
        check = cli(["target", "install", "--check", "--namespace", ns, "--kubeconfig",
                     kubeconfig, "--output", "json"])  # fmt: skip
        assert check.code == 1, check.text  # no webhook runs on kwok: caBundle empty
        assert "permission denied" not in check.text
        run = cli(["target", "uninstall", "--namespace", ns, "--kubeconfig", kubeconfig,
                   "--output", "json", "--timeout", "60s"])  # fmt: skip
        assert run.code == 0, run.text
        assert {c["action"] for c in _doc(run.stdout)["changes"]} == {"delete"}
    finally:
        ident.close()


def test_install_without_a_documented_rule_fails_naming_it(
    icluster: Cluster, kclient: Client, ns: str, tmp_path: Any
) -> None:
    from tests.integration.test_least_privilege import Identity, doc_cluster_role

    role = doc_cluster_role("rbac-install")
    role["rules"] = [
        r for r in role["rules"] if "mutatingwebhookconfigurations" not in r["resources"]
    ]
    ident = Identity(icluster, kclient, tmp_path)
    try:
        ident.grant(role)
        run = cli(["target", "install", "--image", IMAGE_V1, "--allowed-vault-address", VAULT,
                   "--audience", "vault", "--namespace", ns, "--no-wait",
                   "--kubeconfig", str(ident.kubeconfig())])  # fmt: skip
        assert run.code == 3, run.text  # credentials fine, a permission missing: docs/cli.md
        assert "cannot read MutatingWebhookConfiguration cloudtaser-injector" in run.stderr
        assert "permission denied (403)" in run.stderr
        with pytest.raises(Exception, match="not found"):
            kclient.get(Namespace, ns)  # refused before anything was written
    finally:
        ident.close()


def test_a_second_install_in_another_namespace_is_refused(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    _changes(_install(icluster, ns))
    other = f"ct-sys-{hexid()}"
    run = _install(icluster, other)
    assert run.code == 4, run.text
    assert f"already installed in namespace {ns}" in run.stderr
    with pytest.raises(Exception, match="not found"):
        kclient.get(Namespace, other)
    hook = (kclient.get(MutatingWebhookConfiguration, NAME).webhooks or [])[0]
    assert hook.clientConfig.service is not None
    assert hook.clientConfig.service.namespace == ns  # untouched


def test_printed_yaml_applies_as_is_and_uninstall_finds_it_by_labels(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    printed = cli(["target", "install", "--image", IMAGE_V1, "--allowed-vault-address", VAULT,
                   "--audience", "vault", "--namespace", ns, "--print"])  # fmt: skip
    assert printed.code == 0, printed.text
    applied = icluster.kubectl("apply", "--server-side", "--field-manager", "gitops", "-f", "-",
                               input=printed.stdout)  # fmt: skip
    assert "mutatingwebhookconfiguration" in applied.stdout
    kclient.get(Deployment, NAME, namespace=ns)
    run = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
               "--kubeconfig", str(icluster.kubeconfig), "--timeout", "60s"])  # fmt: skip
    assert run.code == 0, run.text
    by_kind = {c["kind"]: c["action"] for c in _doc(run.stdout)["changes"]}
    assert by_kind["MutatingWebhookConfiguration"] == "delete"
    assert by_kind["Namespace"] == "delete"  # annotated as created by install, nothing else in it
    assert "ConfigMap" not in by_kind  # a --print install has no record


def test_uninstall_lists_workloads_still_opting_in_and_refuses_without_the_flag(
    icluster: Cluster, kclient: Client, ns: str
) -> None:
    """A protected workload's next pods would start unwrapped, a finalized one's with no
    secret at all: uninstall names them and deletes nothing unless told to go on."""
    _changes(_install(icluster, ns))
    apps = f"ct-apps-{hexid()}"
    kclient.create(Namespace.from_dict({"metadata": {"name": apps}}))
    inject = {"cloudtaser.io/inject": "true"}
    try:
        # protected (still reads its Secret) and finalized (reads none any more)
        create_workload(kclient, deployment("web", apps, pod_labels=inject, containers=[
            ContainerSpec(secret_env={"DB_PASSWORD": ("db", "password")})]))  # fmt: skip
        create_workload(kclient, deployment("api", apps, pod_labels=inject))
        create_workload(kclient, deployment("plain", apps))
        # they exist and opt in, so the checks below can fail
        for name in ("web", "api"):
            obj = kclient.get(Deployment, name, namespace=apps)
            assert obj.spec.template.metadata.labels["cloudtaser.io/inject"] == "true"
        kclient.get(MutatingWebhookConfiguration, NAME)

        refused = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
                       "--kubeconfig", str(icluster.kubeconfig)])  # fmt: skip

        assert refused.code == 1, refused.text
        doc = _doc(refused.stdout)
        assert doc["refused"] is True
        assert doc["changes"] == []
        listed = {(w["namespace"], w["kind"], w["name"], w["finalized"]) for w in doc["optedIn"]}
        assert {(apps, "Deployment", "web", False), (apps, "Deployment", "api", True)} <= listed
        assert not any(w[2] == "plain" for w in listed)
        assert f"Deployment {apps}/api (finalized: its next pods would start with no secret" in (
            refused.stderr
        )
        assert "--ignore-protected-workloads" in refused.stderr
        # nothing was deleted
        kclient.get(MutatingWebhookConfiguration, NAME)
        kclient.get(Deployment, NAME, namespace=ns)
        kclient.get(Namespace, ns)

        run = cli(["target", "uninstall", "--namespace", ns, "--output", "json",
                   "--kubeconfig", str(icluster.kubeconfig), "--timeout", "60s",
                   "--ignore-protected-workloads"])  # fmt: skip

        assert run.code == 0, run.text
        doc = _doc(run.stdout)
        assert doc["refused"] is False
        assert ("MutatingWebhookConfiguration", "delete") in {
            (c["kind"], c["action"]) for c in doc["changes"]
        }
        assert {w["name"] for w in doc["optedIn"]} >= {"web", "api"}
        with pytest.raises(Exception, match="not found"):
            kclient.get(MutatingWebhookConfiguration, NAME)
    finally:
        for name in ("web", "api", "plain"):
            with contextlib.suppress(Exception):
                kclient.delete(Deployment, name, namespace=apps)
        kclient.delete(Namespace, apps)
