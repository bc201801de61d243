"""Every consumer of a migrated variable on the real node (issue 30, items 2-4, the runtime):
the injector of ``target install`` (URL mode) and a Deployment written as ``target finalize``
leaves it — the ``cloudtaser.io/*`` annotations only, no ``secretKeyRef``, and no Kubernetes
Secret at all in the namespace — whose values live in a real bao dev server.

* an init container and the main container both get the values (env and ``$(VAR)`` in args);
* ``$(DB_PASSWORD)`` in args and a composed env value
  (``DATABASE_URL=postgres://$(DB_USER):$(DB_PASSWORD)@db/app``) reach the app with the vault
  values (the values themselves hold ``$(HOME)`` and ``$$``: they are never expanded again);
* a liveness probe every 2 s (``failureThreshold: 1``: one failure restarts the container) and a
  postStart hook that use ``$DB_PASSWORD`` pass, in an exec-mode container (the app is PID 1)
  and a resident one (the app is the wrapper's child), while the vault sees no login at all
  for them: logins per pod per minute measured from OpenBao's audit log.

Values are compared by sha256 computed in the container; no value may appear in any log, event
or pod record.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Secret

from tests.integration import test_injector_realnode as injector_bed
from tests.integration.connect_helpers import cli, connect_args
from tests.integration.test_injector_realnode import AUDIENCE, Injector
from tests.testenv.openbao import BaoServer
from tests.testenv.realnode import RealNode
from tests.testenv.workloads import RolloutError, create_service_account, wait_rollout

pytestmark = pytest.mark.integration

injector = injector_bed.injector
runtime_image = injector_bed.runtime_image
busybox = injector_bed.busybox

APP_USER = 1000
PROBE_PERIOD = 2
WINDOW = 30.0  # seconds of probes counted against the vault's audit log


@dataclass
class Bed:
    namespace: str
    mount: str
    path: str
    role: str
    user: str
    password: str

    def sha(self, text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def url(self) -> str:
        return f"postgres://{self.user}:{self.password}@db/app"


@pytest.fixture(scope="module")
def bed(
    real_node: RealNode, openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bed]:
    tag = secrets.token_hex(3)
    mount, system_ns = f"k8s-cons-{tag}", f"ct-sys-cons-{tag}"
    namespace = real_node.create_namespace(f"cons-{tag}")
    run = cli(
        connect_args(real_node.cluster, openbao, tmp_path_factory.mktemp("cons"), mount, system_ns)
    )
    assert run.code == 0, run.text
    kv = openbao.enable_kv2(f"kv-cons-{tag}")
    # values that would change if anything expanded them a second time
    bed = Bed(namespace, mount, f"{kv}/data/shop/db", f"shop-{tag}",
              f"CANARY-U-{secrets.token_hex(6)}",
              f"CANARY-P-{secrets.token_hex(6)}-$(HOME)-$$-x")  # fmt: skip
    openbao.api_ok("POST", bed.path, {"data": {"username": bed.user, "password": bed.password}})
    policy = f"tenant-cons-{tag}"
    hcl = f'path "{bed.path}" {{\n  capabilities = ["read"]\n}}\n'
    openbao.api_ok("PUT", f"sys/policies/acl/{policy}", {"policy": hcl})
    with contextlib.closing(real_node.client()) as client:
        create_service_account(client, namespace, "shop")
    openbao.api_ok("POST", f"auth/{mount}/role/{bed.role}", {
        "bound_service_account_names": ["shop"], "bound_service_account_namespaces": [namespace],
        "audience": AUDIENCE, "token_policies": [policy], "token_ttl": "5m",
    })  # fmt: skip
    try:
        yield bed
    finally:
        openbao.api("DELETE", f"sys/auth/{mount}")
        openbao.disable_mount(kv)
        openbao.api("DELETE", f"sys/policies/acl/{policy}")
        if real_node.running:
            real_node.delete_namespace(namespace)
            real_node.delete_namespace(system_ns)


def _sha(expr: str) -> str:
    """Shell: the sha256 of ``expr``'s text (never the text)."""
    return f'$(printf %s "{expr}" | sha256sum | cut -c1-64)'


# $1 is the pod spec's "$(DB_PASSWORD)" argument, expanded by the wrapper
INIT = f"echo init: pw={_sha('$DB_PASSWORD')} arg={_sha('$1')}"
APP = (
    f"echo $0: pw={_sha('$DB_PASSWORD')} arg={_sha('$1')} url={_sha('$DATABASE_URL')}; "
    "exec sleep 3600"
)


def _check(bed: Bed, log: str) -> str:
    """A probe/hook script: passes only with the vault's password, and records each run."""
    return (
        f'test "{_sha("$DB_PASSWORD")}" = {bed.sha(bed.password)} && '
        f'test "{_sha("${DATABASE_URL}")}" = {bed.sha(bed.url)} && echo ok >> /work/{log}'
    )


def _container(bed: Bed, image: str, name: str, resident: bool) -> dict[str, Any]:
    env: list[dict[str, str]] = [
        {"name": "DATABASE_URL", "value": "postgres://$(DB_USER):$(DB_PASSWORD)@db/app"},
    ]
    if resident:
        env.append({"name": "CLOUDTASER_MODE", "value": "resident"})
    return {
        "name": name,
        "image": image,
        "command": ["sh", "-c", APP, name, "$(DB_PASSWORD)"],
        "env": env,
        "volumeMounts": [{"name": f"work-{name}", "mountPath": "/work"}],
        "livenessProbe": {
            "exec": {"command": ["sh", "-c", _check(bed, "liveness")]},
            "periodSeconds": PROBE_PERIOD, "failureThreshold": 1, "timeoutSeconds": 5,
        },
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", _check(bed, "poststart")]}}},
    }  # fmt: skip


def _manifest(bed: Bed, openbao: BaoServer, image: str) -> dict[str, Any]:
    """The Deployment as finalize leaves it: annotations, no secretKeyRef, no Secret."""
    template = {
        "metadata": {
            "labels": {"app": "shop", "cloudtaser.io/inject": "true"},
            "annotations": {
                "cloudtaser.io/inject": "true",
                "cloudtaser.io/vault-address": openbao.address,
                "cloudtaser.io/vault-role": bed.role,
                "cloudtaser.io/vault-auth-path": f"auth/{bed.mount}",
                "cloudtaser.io/secret-paths": bed.path,
                "cloudtaser.io/env-map": "username=DB_USER,password=DB_PASSWORD",
            },
        },
        "spec": {
            "hostNetwork": True,
            "dnsPolicy": "Default",
            "serviceAccountName": "shop",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsUser": APP_USER, "runAsGroup": APP_USER},
            "volumes": [
                {"name": f"work-{n}", "emptyDir": {"medium": "Memory"}} for n in ("app", "side")
            ],
            "initContainers": [
                {
                    "name": "migrate",
                    "image": image,
                    "command": ["sh", "-c", INIT, "migrate", "$(DB_PASSWORD)"],
                }
            ],
            "containers": [
                _container(bed, image, "app", resident=False),
                _container(bed, image, "side", resident=True),
            ],
        },
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": bed.namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop"}}, "template": template},
    }  # fmt: skip


@dataclass
class Shop:
    pod: str
    created_mark: int


def _logins(openbao: BaoServer, bed: Bed, mark: int) -> int:
    return sum(
        1
        for e in openbao.requests_since(mark)
        if e["request"].get("path") == f"auth/{bed.mount}/login"
    )


@pytest.fixture(scope="module")
def shop(
    real_node: RealNode, openbao: BaoServer, bed: Bed, injector: Injector, busybox: str
) -> Shop:
    mark = openbao.audit_mark()
    with contextlib.closing(real_node.client()) as client:
        client.create(codecs.from_dict(_manifest(bed, openbao, busybox)))
        try:
            wait_rollout(client, Deployment, bed.namespace, "shop", timeout=120)
        except RolloutError:
            for p in client.list(Pod, namespace=bed.namespace):
                assert p.metadata is not None
                name = str(p.metadata.name)
                print(real_node.pod_diagnostics(bed.namespace, name))
                for c in ("migrate", "app", "side"):
                    got = real_node.kubectl("-n", bed.namespace, "logs", name, "-c", c,
                                            check=False)  # fmt: skip
                    print(f"--- {c}\n{got.stdout[-1500:]}{got.stderr[-500:]}")
            raise
        (pod,) = client.list(Pod, namespace=bed.namespace, labels={"app": "shop"})
    assert pod.metadata is not None
    assert pod.metadata.name is not None
    return Shop(pod.metadata.name, mark)


def _line(node: RealNode, bed: Bed, pod: str, container: str, prefix: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        logs = node.logs(bed.namespace, pod, container)
        found = [line for line in logs.splitlines() if line.startswith(prefix)]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no {prefix!r} line in {container}'s log"
        time.sleep(0.3)


def _pod(node: RealNode, bed: Bed, name: str) -> Pod:
    with contextlib.closing(node.client()) as client:
        return client.get(Pod, name, namespace=bed.namespace)


def test_no_secret_and_no_secret_key_ref_anywhere(
    real_node: RealNode, bed: Bed, shop: Shop
) -> None:
    with contextlib.closing(real_node.client()) as client:
        assert list(client.list(Secret, namespace=bed.namespace)) == []
    pods = real_node.kubectl("-n", bed.namespace, "get", "pods", "-o", "json").stdout
    assert '"name": "migrate"' in pods  # so the check below looks at the right record
    assert "secretKeyRef" not in pods


def test_init_and_main_containers_get_the_vault_values_also_through_var_references(
    real_node: RealNode, bed: Bed, shop: Shop
) -> None:
    pw, url = bed.sha(bed.password), bed.sha(bed.url)
    assert _line(real_node, bed, shop.pod, "migrate", "init: ") == f"init: pw={pw} arg={pw}"
    for name in ("app", "side"):
        got = _line(real_node, bed, shop.pod, name, f"{name}: ")
        assert got == f"{name}: pw={pw} arg={pw} url={url}", name
    pod = _pod(real_node, bed, shop.pod)
    assert pod.spec is not None
    (migrate,) = [c for c in pod.spec.initContainers or [] if c.name == "migrate"]
    assert migrate.command is not None
    assert migrate.command[:2] == ["/cloudtaser/bin/cloudtaser-runtime", "wrap"]


def test_probes_and_hooks_pass_without_a_vault_login_per_run(
    real_node: RealNode, openbao: BaoServer, bed: Bed, shop: Shop
) -> None:
    startup = _logins(openbao, bed, shop.created_mark)
    # one login per wrapped container (migrate, app, side), at start only
    assert startup == 3, startup
    mark = openbao.audit_mark()
    before = {n: _runs(real_node, bed, shop, n, "liveness") for n in ("app", "side")}
    time.sleep(WINDOW)
    runs = {n: _runs(real_node, bed, shop, n, "liveness") - before[n] for n in ("app", "side")}
    logins = _logins(openbao, bed, mark)
    per_minute = logins * 60 / WINDOW
    print(f"\nprobes: {runs} liveness runs in {WINDOW:.0f} s (every {PROBE_PERIOD} s), "
          f"vault logins {logins} -> {per_minute:.1f} per pod per minute")  # fmt: skip
    for name, count in runs.items():
        assert count >= WINDOW / PROBE_PERIOD / 2, (name, count)  # they really ran
    assert per_minute <= 1
    assert logins == 0  # the design: a probe or hook never logs in
    for name in ("app", "side"):
        assert _runs(real_node, bed, shop, name, "poststart") == 1, name
    pod = _pod(real_node, bed, shop.pod)
    assert pod.status is not None
    assert {s.name: s.restartCount for s in pod.status.containerStatuses or []} == {
        "app": 0, "side": 0,
    }  # fmt: skip
    assert pod.spec is not None
    for c in pod.spec.containers:
        assert c.livenessProbe is not None
        assert c.livenessProbe.exec is not None
        assert c.livenessProbe.exec.command is not None
        assert c.livenessProbe.exec.command[:3] == [
            "/cloudtaser/bin/cloudtaser-runtime",
            "exec",
            "--",
        ]
    _assert_no_value_anywhere(real_node, bed, shop.pod)


def _runs(node: RealNode, bed: Bed, shop: Shop, container: str, log: str) -> int:
    got = node.exec(bed.namespace, shop.pod, "sh", "-c", f"cat /work/{log} 2>/dev/null | wc -l",
                    container=container, check=False)  # fmt: skip
    return int(got.stdout.strip() or 0)


def test_the_runner_takes_the_apps_environment_or_fails_closed(
    real_node: RealNode, bed: Bed, shop: Shop
) -> None:
    """Run by hand in the container (kubectl exec: the container's user), the runner gives a
    command the app's values; when no process of the container holds every mapped variable
    it does not run the command (exit 4): never with the spec's (empty) variables."""
    got = real_node.kubectl(
        "-n", bed.namespace, "exec", shop.pod, "-c", "app", "--", "env",
        "CLOUDTASER_START_TIMEOUT=1s", "/cloudtaser/bin/cloudtaser-runtime", "exec", "--",
        "sh", "-c", f'echo RAN {_sha("$DB_PASSWORD")}', check=False,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["RAN", bed.sha(bed.password)]
    other = real_node.exec(bed.namespace, shop.pod, "sh", "-c",
                           "CLOUDTASER_START_TIMEOUT=1s CLOUDTASER_ENV_MAP=username=NOT_THERE "
                           "/cloudtaser/bin/cloudtaser-runtime exec -- sh -c 'echo RAN'; "
                           "echo exit=$?", container="app", check=False)  # fmt: skip
    assert other.stdout.split() == ["exit=4"], other.stdout + other.stderr
    assert "not running sh without its secrets" in other.stderr


def _assert_no_value_anywhere(node: RealNode, bed: Bed, pod: str) -> None:
    names = ["migrate", "app", "side"]
    logs = [node.kubectl("-n", bed.namespace, "logs", pod, "-c", n, check=False).stdout
            for n in names]  # fmt: skip
    events = node.kubectl("-n", bed.namespace, "get", "events", "-o", "json").stdout
    pods = node.kubectl("-n", bed.namespace, "get", "pods", "-o", "json").stdout
    kubelet = node.processes["kubelet"].tail(3000)
    for canary in (bed.user, bed.password.split("-$")[0]):
        for where, text in (("events", events), ("pods", pods), ("kubelet", kubelet),
                            *zip(names, logs, strict=True)):  # fmt: skip
            assert canary not in text, f"a value in {where}"
