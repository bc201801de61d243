"""The injector on the real node (issue 14, "Proof on the real node"): `target install` in URL
mode (the API server calls https://127.0.0.1:PORT/mutate; the webhook pods use hostNetwork and
reach the API at 127.0.0.1), then the whole workflow on a Deployment consuming a Secret —
discover, apply-plan (real bao dev server), kv put of a canary different from the Secret's
value, verify-plan, protect — and its new pods run the wrapper and print the OpenBao value.

Then: an image without `command` (ENTRYPOINT read from the local registry by the webhook);
certificate rotation (30 s certificates) under steady pod creation with zero failed admissions;
`protect --pin-entrypoints` with the webhook given no registry access (a mirror pointing to a
dead port); the webhook stopped (an opted-in pod is refused, an ordinary pod is created);
hostile annotations denied with the reason shown; `target install --check`; with an injector
`--check` reports broken, protect refuses before any patch (issue 34); uninstall removes
everything it created.

The runtime image is built from `runtime/` as `nox -s runtime` builds it (static linux/amd64
binary, `tools/build-image` OCI layout) and pushed from the layout with `push_oci_layout`.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, codecs
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from cloudtaser import plan as planlib
from tests.integration.connect_helpers import CliRun, cli, connect_args, token_file
from tests.integration.runtime_binary import REPO, go_binary, go_build
from tests.testenv.openbao import BaoServer
from tests.testenv.process import free_ports
from tests.testenv.realnode import Image, RealNode
from tests.testenv.workloads import create_secret, create_service_account, wait_rollout

pytestmark = pytest.mark.integration

AUDIENCE = "openbao"
WRAPPER = "/cloudtaser/bin/cloudtaser-runtime"
BUSYBOX = "ghcr.io/cloudtaser-test/busybox:inj"
# prints the value it got, then idles; no commas or quotes (crane parses --entrypoint as CSV)
# a vault token (OpenBao ``s.``, Vault ``hvs.``/``hvb.``) or a JWT
TOKEN_LIKE = re.compile(r"\b(?:s|hvs|hvb)\.[A-Za-z0-9]{20,}|eyJ[A-Za-z0-9_-]{10,}\.")
SCRIPT = "echo password=$DB_PASSWORD; exec sleep 3600"


@dataclass
class Injector:
    namespace: str
    port: int
    image: Image
    base_args: list[str]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"


@dataclass
class Bed:
    """The app namespace (Secret ``db`` with the Kubernetes canary), connect's auth mount."""

    namespace: str
    mount: str
    k8s_canary: str
    plan: Path
    token_file: Path


def _cli_ok(argv: list[str]) -> CliRun:
    run = cli(argv)
    assert run.code == 0, run.text
    return run


@pytest.fixture(scope="module")
def runtime_image(real_node: RealNode) -> Image:
    with tempfile.TemporaryDirectory(prefix="ct-inj-image-") as tmp:
        out = Path(tmp)
        binary = go_build(out / "amd64" / "cloudtaser-runtime", arch="amd64")
        subprocess.run(
            [go_binary(), "run", "./tools/build-image", "-out", str(out / "image"),
             "-tag", "cloudtaser-runtime:e2e", "-version", "e2e", f"amd64={binary}"],
            cwd=REPO / "runtime", check=True, capture_output=True, text=True,
        )  # fmt: skip
        return real_node.push_oci_layout(out / "image", "cloudtaser/runtime:e2e")


@pytest.fixture(scope="module")
def busybox(real_node: RealNode) -> str:
    real_node.build_image("cloudtaser-test/busybox:inj", cmd=["sh"])
    return BUSYBOX


@pytest.fixture(scope="module")
def injector(real_node: RealNode, openbao: BaoServer, runtime_image: Image) -> Iterator[Injector]:
    ns = f"ct-inj-{secrets.token_hex(3)}"
    (port,) = free_ports(1)
    image = real_node.image_ref("cloudtaser/runtime:e2e")
    base = [
        "target", "install", "--image", image, "--allowed-vault-address", openbao.address,
        "--audience", AUDIENCE, "--namespace", ns,
        "--webhook-url", f"https://127.0.0.1:{port}/mutate",
        "--kube-api", f"{real_node.api_host}:{real_node.api_port}",
        "--kubeconfig", str(real_node.kubeconfig), "--timeout", "180s",
    ]  # fmt: skip
    t0 = time.monotonic()
    run = cli(base)
    print(f"\ntarget install -> webhook ready: {time.monotonic() - t0:.1f} s")
    assert run.code == 0, run.text + _injector_logs(real_node, ns)
    try:
        yield Injector(ns, port, runtime_image, base)
    finally:
        if real_node.running:
            cli(["target", "uninstall", "--namespace", ns, "--kubeconfig",
                 str(real_node.kubeconfig), "--timeout", "60s",
                 "--ignore-protected-workloads"])  # fmt: skip


def _injector_logs(node: RealNode, namespace: str) -> str:
    got = node.kubectl("-n", namespace, "logs", "-l", "app.kubernetes.io/name=cloudtaser-injector",
                       "--tail", "50", "--all-containers", check=False)  # fmt: skip
    return f"\n--- injector logs ---\n{got.stdout}{got.stderr}"


@pytest.fixture(scope="module")
def bed(
    real_node: RealNode,
    openbao: BaoServer,
    busybox: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Bed]:
    tag = secrets.token_hex(3)
    mount, system_ns = f"k8s-inj-{tag}", f"ct-sys-inj-{tag}"
    namespace = real_node.create_namespace(f"inj-{tag}")
    tmp = tmp_path_factory.mktemp("inj")
    _cli_ok(connect_args(real_node.cluster, openbao, tmp, mount, system_ns))
    k8s_canary = f"K8S-CANARY-{secrets.token_hex(6)}"
    with contextlib.closing(real_node.client()) as client:
        create_secret(client, namespace, "db", {"password": k8s_canary, "username": "app"})
        create_service_account(client, namespace, "app")
        for name, image, command in (
            ("web", busybox, ["sh", "-c", SCRIPT]),
            ("entry", _entry_image(real_node), None),
        ):
            client.create(codecs.from_dict(_deployment(real_node, namespace, name, image, command)))
    try:
        yield Bed(namespace, mount, k8s_canary, tmp / "plan.yaml", token_file(openbao, tmp))
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        if real_node.running:
            real_node.delete_namespace(namespace)
            real_node.delete_namespace(system_ns)


def _entry_image(node: RealNode) -> str:
    """An image whose ENTRYPOINT is the app: pods using it have no ``command``."""
    node.build_image("cloudtaser-test/entry:1", entrypoint=["sh", "-c", SCRIPT])
    return node.image_ref("cloudtaser-test/entry:1")


def _deployment(
    node: RealNode, namespace: str, name: str, image: str, command: list[str] | None
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": image,
        "env": [{"name": "DB_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
    }  # fmt: skip
    if command:
        container["command"] = command
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "serviceAccountName": "app",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def workflow(real_node: RealNode, openbao: BaoServer, bed: Bed, injector: Injector) -> Bed:
    """discover -> apply-plan -> kv put (OpenBao canaries) -> verify-plan; nothing protected."""
    kube = ["--kubeconfig", str(real_node.kubeconfig)]
    vault = ["--openbao-addr", openbao.address, "--token-file", str(bed.token_file)]
    _cli_ok(["target", "discover", *kube, "-n", bed.namespace, "--auth-mount", bed.mount,
             "--name", f"inj-{bed.namespace[-6:]}", "--output-plan", str(bed.plan)])  # fmt: skip
    plan = planlib.load(bed.plan)
    assert sorted(w.name for _t, w in plan.iter_workloads()) == ["entry", "web"]
    _cli_ok(["source", "apply-plan", str(bed.plan), *vault, "--audience", AUDIENCE])
    paths = {w.secrets[0].vault_path for _t, w in plan.iter_workloads()}
    assert len(paths) == 1  # both consume Secret db: one vault path
    mount, _, rest = paths.pop().replace("/data/", "/", 1).partition("/")
    value = f"OPENBAO-CANARY-{secrets.token_hex(6)}"
    put = openbao.bao("kv", "put", f"-mount={mount}", rest, f"password={value}", "username=app")
    assert value not in put.stdout + put.stderr
    _CANARIES["db"] = value
    _cli_ok(["source", "verify-plan", str(bed.plan), *vault])
    return bed


_CANARIES: dict[str, str] = {}


def _protect(node: RealNode, bed: Bed, openbao: BaoServer, workload: str, *extra: str) -> CliRun:
    return cli(["target", "protect", "--plan", str(bed.plan), "--kubeconfig", str(node.kubeconfig),
                "--vault-address", openbao.address, "--workload", f"Deployment/{workload}",
                "--yes", "--timeout", "120s", "--poll-interval", "500ms", *extra])  # fmt: skip


def _new_pod(node: RealNode, namespace: str, app: str) -> dict[str, Any]:
    """The one Running pod of ``app`` whose template carries the inject label."""
    deadline = time.monotonic() + 60
    with contextlib.closing(node.client()) as client:
        while True:
            pods = [
                p.to_dict()
                for p in client.list(Pod, namespace=namespace, labels={"app": app})
                if p.metadata and p.metadata.deletionTimestamp is None
                and (p.metadata.labels or {}).get("cloudtaser.io/inject") == "true"
                and p.status and p.status.phase == "Running"
            ]  # fmt: skip
            if pods:
                return pods[0]
            assert time.monotonic() < deadline, f"no injected Running pod of {app}"
            time.sleep(0.5)


def _wait_log(node: RealNode, namespace: str, pod: str, needle: str) -> str:
    deadline = time.monotonic() + 30
    while needle not in (logs := node.logs(namespace, pod)):
        assert time.monotonic() < deadline, logs
        time.sleep(0.3)
    return logs


def _assert_injected(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    assert spec["initContainers"][0]["name"] == "cloudtaser-init"
    assert all(c["command"][0] == WRAPPER for c in spec["containers"])
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert pod["metadata"]["annotations"]["cloudtaser.io/injected"]


def _assert_not_in_records(node: RealNode, namespace: str, *canaries: str) -> None:
    events = node.kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    pods = node.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout
    assert json.loads(pods)["items"]
    for canary in canaries:
        assert canary not in events
        assert canary not in pods


# -- the tests ----------------------------------------------------------------------------------


def test_install_check_passes_against_the_running_webhook(
    real_node: RealNode, injector: Injector
) -> None:
    run = cli(["target", "install", "--check", "--namespace", injector.namespace, "--output",
               "json", "--kubeconfig", str(real_node.kubeconfig)])  # fmt: skip
    assert run.code == 0, run.text
    checks = {c["name"]: c for c in json.loads(run.stdout)["checks"]}
    assert set(checks) == {
        "deployment", "caBundle", "serving certificate", "cluster defaults", "mutation",
    }  # fmt: skip
    assert checks["cluster defaults"]["detail"].startswith("none")  # installed without them
    assert "verifies against it" in checks["serving certificate"]["detail"]
    assert "came back injected" in checks["mutation"]["detail"]


def _injector_pods_gone(node: RealNode, namespace: str) -> None:
    deadline = time.monotonic() + 60
    with contextlib.closing(node.client()) as client:
        while list(client.list(Pod, namespace=namespace)):
            assert time.monotonic() < deadline, "webhook pods did not stop"
            time.sleep(0.5)


def _web(node: RealNode, namespace: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Deployment ``web`` and its pods, as API dicts."""
    with contextlib.closing(node.client()) as client:
        dep = client.get(Deployment, "web", namespace=namespace).to_dict()
        pods = [p.to_dict() for p in client.list(Pod, namespace=namespace, labels={"app": "web"})]
    return dep, pods


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_protect_refuses_before_any_patch_when_install_check_reports_the_injector_broken(
    real_node: RealNode, openbao: BaoServer, workflow: Bed, injector: Injector
) -> None:
    """Issue 34: protect used to patch first; with an empty caBundle (failurePolicy Fail) the
    new pods could not be created and the workload went to 0 Ready. Now it refuses first."""
    bed = workflow
    kube = ["--kubeconfig", str(real_node.kubeconfig)]
    with contextlib.closing(real_node.client()) as client:
        wait_rollout(client, "Deployment", bed.namespace, "web", timeout=120)
    before, pods = _web(real_node, bed.namespace)
    # running and unpatched, so the check below can fail
    assert before["status"]["readyReplicas"] == 1
    assert "cloudtaser.io/inject" not in before["spec"]["template"]["metadata"]["labels"]
    assert pods
    assert all(_ready(p) for p in pods)
    names = sorted(p["metadata"]["name"] for p in pods)
    # broken as install --check sees it: no replica (none publishes its CA), caBundle empty
    real_node.kubectl("-n", injector.namespace, "scale", "deployment", "cloudtaser-injector",
                      "--replicas", "0")  # fmt: skip
    try:
        _injector_pods_gone(real_node, injector.namespace)
        with contextlib.closing(real_node.client()) as client:
            mwc = client.get(MutatingWebhookConfiguration, "cloudtaser-injector").to_dict()
            mwc["metadata"].pop("managedFields", None)  # kept by the server as they are
            for hook in mwc["webhooks"]:
                hook["clientConfig"].pop("caBundle", None)
            client.replace(codecs.from_dict(mwc))
        check = cli(["target", "install", "--check", "--namespace", injector.namespace,
                     "--output", "json", *kube])  # fmt: skip
        assert check.code == 1, check.text
        checks = {c["name"]: c for c in json.loads(check.stdout)["checks"]}
        assert checks["caBundle"]["ok"] is False
        assert checks["mutation"]["ok"] is False

        run = _protect(real_node, bed, openbao, "web")

        assert run.code == 1, run.text
        assert "admission check failed, nothing was changed" in run.text
        assert "could not reach the injector" in run.text
        assert "cloudtaser target install --check" in run.text
        after, pods_after = _web(real_node, bed.namespace)
        assert (after["metadata"]["generation"], after["metadata"]["resourceVersion"]) == (
            before["metadata"]["generation"],
            before["metadata"]["resourceVersion"],
        )
        assert after["spec"]["template"] == before["spec"]["template"]
        assert after["status"]["readyReplicas"] == 1
        assert sorted(p["metadata"]["name"] for p in pods_after) == names  # no new pod
        assert all(_ready(p) for p in pods_after)
        web = next(w for _t, w in planlib.load(bed.plan).iter_workloads() if w.name == "web")
        assert web.effective_status == "pending"
        assert "admission check failed" in (web.last_error or "")
    finally:
        # a re-run of install restores the replicas and waits until every --check passes
        _cli_ok(injector.base_args)
    check = cli(["target", "install", "--check", "--namespace", injector.namespace, *kube])
    assert check.code == 0, check.text  # install said ready: --check agrees


def test_protected_deployment_runs_the_wrapper_and_prints_the_openbao_value(
    real_node: RealNode, openbao: BaoServer, workflow: Bed, injector: Injector
) -> None:
    bed = workflow
    mark = openbao.audit_mark()
    t0 = time.monotonic()
    run = _protect(real_node, bed, openbao, "web")
    assert run.code == 0, run.text
    print(f"\nprotect (patch + rollout of an injected pod): {time.monotonic() - t0:.1f} s")
    pod = _new_pod(real_node, bed.namespace, "web")
    _assert_injected(pod)
    logs = _wait_log(real_node, bed.namespace, pod["metadata"]["name"], "password=")
    assert f"password={_CANARIES['db']}\n" in logs
    assert bed.k8s_canary not in logs  # the Kubernetes Secret's value is not what the app got
    ops = openbao.request_ops_since(mark)
    assert any(op == "update" and path.endswith("/login") for op, path in ops), ops
    _assert_not_in_records(real_node, bed.namespace, _CANARIES["db"])
    # the webhook never sees a value or a token, and logs none
    webhook_logs = _injector_logs(real_node, injector.namespace)
    assert "admission" in webhook_logs or "inject" in webhook_logs  # the logs were read
    assert _CANARIES["db"] not in webhook_logs
    assert bed.k8s_canary not in webhook_logs
    assert not TOKEN_LIKE.search(webhook_logs)
    assert _CANARIES["db"] not in run.text
    assert not TOKEN_LIKE.search(run.text)


def test_an_image_without_command_gets_its_entrypoint_from_the_registry(
    real_node: RealNode, openbao: BaoServer, workflow: Bed
) -> None:
    run = _protect(real_node, workflow, openbao, "entry")
    assert run.code == 0, run.text
    with contextlib.closing(real_node.client()) as client:
        template = client.get(Deployment, "entry", namespace=workflow.namespace).to_dict()
    assert "command" not in template["spec"]["template"]["spec"]["containers"][0]  # not pinned
    pod = _new_pod(real_node, workflow.namespace, "entry")
    _assert_injected(pod)
    command = pod["spec"]["containers"][0]["command"]
    assert command[:3] == [WRAPPER, "wrap", "--"]
    assert command[3:] == ["sh", "-c", SCRIPT.replace("$", "$$")]  # the image's ENTRYPOINT
    logs = _wait_log(real_node, workflow.namespace, pod["metadata"]["name"], "password=")
    assert f"password={_CANARIES['db']}\n" in logs


def _opted_in_pod(
    node: RealNode, namespace: str, name: str, image: str, annotations: dict[str, str],
    command: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    manifest = node.pod_manifest(name, image, command, namespace=namespace, service_account="app")
    manifest["metadata"]["labels"] = {"cloudtaser.io/inject": "true"}
    manifest["metadata"]["annotations"] = {"cloudtaser.io/inject": "true", **annotations}
    return manifest


def _annotations(openbao: BaoServer, bed: Bed, **override: str) -> dict[str, str]:
    plan = planlib.load(bed.plan)
    tenant = plan.tenants[0]
    web = next(w for w in tenant.workloads if w.name == "web")
    base = {
        "cloudtaser.io/vault-address": openbao.address,
        "cloudtaser.io/vault-role": f"cloudtaser-{plan.metadata.name}-{tenant.name}",
        "cloudtaser.io/vault-auth-path": f"auth/{bed.mount}",
        "cloudtaser.io/secret-paths": web.secrets[0].vault_path,
        "cloudtaser.io/env-map": "password=DB_PASSWORD",
    }
    return {**base, **{f"cloudtaser.io/{k.replace('_', '-')}": v for k, v in override.items()}}


def _create(node: RealNode, manifest: dict[str, Any]) -> ApiError | None:
    with contextlib.closing(node.client()) as client:
        try:
            client.create(codecs.from_dict(manifest))
        except ApiError as exc:
            return exc
    return None


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"vault_address": "https://evil.example:8200"}, "not one of the vault addresses"),
        ({"secret_paths": "secret/data/../x"}, "cloudtaser.io/secret-paths"),
        ({"env_map": "password=DB_PASSWORD\nVAULT_ADDR=https://evil.example"}, "env-map"),
        ({"env_map": "password=$(VAULT_ADDR)"}, "env-map"),
    ],
)
def test_hostile_annotations_are_denied_with_the_reason(
    real_node: RealNode, openbao: BaoServer, workflow: Bed, busybox: str,
    override: dict[str, str], reason: str,
) -> None:  # fmt: skip
    name = f"hostile-{secrets.token_hex(3)}"
    annotations = _annotations(openbao, workflow, **override)
    manifest = _opted_in_pod(
        real_node, workflow.namespace, name, busybox, annotations, ["sh", "-c", "true"]
    )
    error = _create(real_node, manifest)
    assert error is not None, "the hostile pod was admitted"
    message = str(error.status.message)
    assert 'admission webhook "inject.cloudtaser.io" denied the request' in message
    assert "cloudtaser: " in message
    assert reason in message, message
    assert error.status.code == 403


def test_pin_entrypoints_works_when_the_webhook_has_no_registry_access(
    real_node: RealNode, openbao: BaoServer, workflow: Bed, injector: Injector
) -> None:
    bed = workflow
    (dead,) = free_ports(1)
    mirror = f"{real_node.registry}=http://127.0.0.1:{dead}"
    _cli_ok([*injector.base_args, "--mirror", mirror])  # upgrade: the webhook loses the registry
    try:
        # proof that the webhook cannot look images up now: a pod without command is denied
        # (retried while the replaced replicas drain: they share the port and had the registry)
        _wait_replicas_replaced(real_node, injector.namespace)
        deadline = time.monotonic() + 30
        while True:
            probe = _opted_in_pod(real_node, bed.namespace, f"probe-{secrets.token_hex(3)}",
                                  _entry_image(real_node), _annotations(openbao, bed))  # fmt: skip
            error = _create(real_node, probe)
            if error is not None and "failed calling webhook" not in str(error.status.message):
                break
            # created: an old replica (with the registry) answered; "failed calling webhook":
            # the API server reached a replica whose shared-port listener was closing (the
            # kernel resets connections queued on it). Both pass once the rollout is over.
            if error is None:
                real_node.kubectl("-n", bed.namespace, "delete", "pod", probe["metadata"]["name"],
                                  "--wait=false")  # fmt: skip
            assert time.monotonic() < deadline, (
                "the webhook still resolves images via the mirror, or cannot be called: "
                f"{error.status.message if error is not None else 'pod created'}"
            )
            time.sleep(1)
        assert "no command" in str(error.status.message), error.status.message
        # unprotect, then protect again with the entrypoint pinned from this machine
        unrun = cli(["target", "unprotect", "--plan", str(bed.plan), "--kubeconfig",
                     str(real_node.kubeconfig), "--workload", "Deployment/entry", "--yes",
                     "--timeout", "120s"])  # fmt: skip
        assert unrun.code == 0, unrun.text
        run = _protect(real_node, bed, openbao, "entry", "--pin-entrypoints")
        assert run.code == 0, run.text
        with contextlib.closing(real_node.client()) as client:
            template = client.get(Deployment, "entry", namespace=bed.namespace).to_dict()
        container = template["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["sh", "-c", SCRIPT.replace("$", "$$")]
        pod = _new_pod(real_node, bed.namespace, "entry")
        _assert_injected(pod)
        logs = _wait_log(real_node, bed.namespace, pod["metadata"]["name"], "password=")
        assert f"password={_CANARIES['db']}\n" in logs
    finally:
        _cli_ok(injector.base_args)  # back to the webhook with registry access


def _wait_replicas_replaced(node: RealNode, namespace: str) -> None:
    """Until only the current ReplicaSet's webhook pods exist (old ones have exited)."""
    deadline = time.monotonic() + 90
    with contextlib.closing(node.client()) as client:
        while True:
            dep = client.get(Deployment, "cloudtaser-injector", namespace=namespace)
            pods = list(client.list(Pod, namespace=namespace))
            hashes = {
                (p.metadata.labels or {}).get("pod-template-hash") for p in pods if p.metadata
            }
            ready = dep.status is not None and dep.status.updatedReplicas == dep.status.replicas
            if ready and len(hashes) == 1 and len(pods) == (dep.spec.replicas if dep.spec else 0):
                return
            assert time.monotonic() < deadline, "old webhook pods did not go away"
            time.sleep(0.5)


def test_webhook_stopped_refuses_opted_in_pods_and_admits_ordinary_ones(
    real_node: RealNode, openbao: BaoServer, workflow: Bed, injector: Injector, busybox: str
) -> None:
    bed = workflow
    real_node.kubectl("-n", injector.namespace, "scale", "deployment", "cloudtaser-injector",
                      "--replicas", "0")  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        with contextlib.closing(real_node.client()) as client:
            while list(client.list(Pod, namespace=injector.namespace)):
                assert time.monotonic() < deadline, "webhook pods did not stop"
                time.sleep(0.5)
            hook = client.get(MutatingWebhookConfiguration, "cloudtaser-injector")
            assert hook.webhooks  # the configuration is still there
        opted = _opted_in_pod(real_node, bed.namespace, f"opted-{secrets.token_hex(3)}", busybox,
                              _annotations(openbao, bed), ["sh", "-c", "sleep 1"])  # fmt: skip
        error = _create(real_node, opted)
        assert error is not None, "an opted-in pod started without the webhook"
        assert "inject.cloudtaser.io" in str(error.status.message)
        plain = real_node.pod_manifest(
            f"plain-{secrets.token_hex(3)}", busybox, ["sh", "-c", "echo ok"],
            namespace=bed.namespace,
        )  # fmt: skip
        real_node.run_pod(plain, until=("Succeeded",), timeout=60)
        assert real_node.logs(bed.namespace, plain["metadata"]["name"]) == "ok\n"
    finally:
        _cli_ok(injector.base_args)  # a re-run of install restores 2 replicas and waits


def _ca_bundle(client: Any) -> str:
    hook = (client.get(MutatingWebhookConfiguration, "cloudtaser-injector").webhooks or [])[0]
    return str(hook.clientConfig.caBundle or "")


def test_certificate_rotation_under_steady_pod_creation_fails_no_admission(
    real_node: RealNode, openbao: BaoServer, workflow: Bed, injector: Injector, busybox: str
) -> None:
    """Serving certificates of 30 s (rotated every 20 s, CA included) while opted-in pods are
    created without pause (server-side dry run: admission runs, nothing is stored)."""
    _cli_ok([*injector.base_args, "--cert-validity", "30s"])
    _wait_replicas_replaced(real_node, injector.namespace)
    manifest = _opted_in_pod(real_node, workflow.namespace, "rot", busybox,
                             _annotations(openbao, workflow), ["sh", "-c", "true"])  # fmt: skip
    del manifest["metadata"]["name"]
    manifest["metadata"]["generateName"] = "rot-"
    failures: list[str] = []
    bundles: list[str] = []
    created = 0
    try:
        with contextlib.closing(real_node.client()) as client:
            bundles.append(_ca_bundle(client))
            t0 = time.monotonic()
            last_look = t0
            while time.monotonic() - t0 < 50:
                try:
                    pod = client.create(codecs.from_dict(manifest), dry_run=True)
                    created += 1
                    spec = pod.to_dict()["spec"]
                    if spec["initContainers"][0]["name"] != "cloudtaser-init":
                        failures.append("not injected")
                except ApiError as exc:
                    failures.append(str(exc.status.message)[:300])
                if time.monotonic() - last_look > 2:
                    last_look = time.monotonic()
                    bundle = _ca_bundle(client)
                    if bundle != bundles[-1]:
                        bundles.append(bundle)
                time.sleep(0.1)
        print(f"\nrotation: {created} admissions in 50 s, {len(bundles) - 1} caBundle changes")
        assert failures == [], failures[:5]
        assert created > 100
        assert len(bundles) >= 2, "no rotation was observed in 50 s"
    finally:
        _cli_ok(injector.base_args)  # back to the default validity


def test_uninstall_removes_everything_install_created(
    real_node: RealNode, injector: Injector
) -> None:
    # the workloads this module protected may still opt in: uninstall anyway
    run = _cli_ok(["target", "uninstall", "--namespace", injector.namespace, "--output", "json",
                   "--kubeconfig", str(real_node.kubeconfig), "--timeout", "90s",
                   "--ignore-protected-workloads"])  # fmt: skip
    changes = json.loads(run.stdout)["changes"]
    assert {c["action"] for c in changes} == {"delete"}, changes
    assert {c["kind"] for c in changes} >= {
        "MutatingWebhookConfiguration", "Deployment", "ClusterRole", "ClusterRoleBinding",
        "Role", "RoleBinding", "ServiceAccount", "Service", "Namespace",
    }  # fmt: skip
    for kind, name in (("mutatingwebhookconfiguration", "cloudtaser-injector"),
                       ("clusterrole", "cloudtaser-injector"),
                       ("clusterrolebinding", "cloudtaser-injector"),
                       ("namespace", injector.namespace)):  # fmt: skip
        got = real_node.kubectl("get", kind, name, "--ignore-not-found", "-o", "name")
        assert got.stdout.strip() == "", (kind, got.stdout)
