"""The objects `target install` applies (docs/injector.md), as pure dicts, and its flag rules."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cloudtaser.cli import main
from cloudtaser.errors import ConfigError
from cloudtaser.target.install import manifests as lib

IMAGE = "registry.corp:5000/cloudtaser/runtime:0.1.0"
VAULT = "https://vault.corp:8200"


def _opts(**kw: Any) -> lib.InstallOptions:
    base: dict[str, Any] = {
        "image": IMAGE,
        "allowed_vault_addresses": (VAULT,),
        "audience": "vault",
    }
    return lib.InstallOptions(**{**base, **kw}).validated()


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_every_object_is_labelled_and_named_as_agreed() -> None:
    objects = lib.build_objects(_opts())
    kinds = [o["kind"] for o in objects]
    assert kinds == [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
        "RoleBinding", "Service", "Deployment", "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    ]  # fmt: skip
    for obj in objects[1:]:
        assert obj["metadata"]["name"] == "cloudtaser-injector"
        assert obj["metadata"]["labels"] == lib.LABELS
    namespace = objects[0]
    assert namespace["metadata"]["name"] == "cloudtaser-system"
    assert namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "cloudtaser"
    assert namespace["metadata"]["annotations"] == {lib.CREATED_ANNOTATION: lib.CREATED_VALUE}


def test_webhook_configuration_fails_closed_for_opted_in_pods_only_and_never_sets_cabundle() -> (
    None
):
    mwc = _by_kind(lib.build_objects(_opts(namespace="ct-inj", timeout_seconds=7)))[
        "MutatingWebhookConfiguration"
    ]
    (hook,) = mwc["webhooks"]
    assert hook["name"] == "inject.cloudtaser.io"
    assert hook["clientConfig"] == {
        "service": {"name": "cloudtaser-injector", "namespace": "ct-inj", "path": "/mutate",
                    "port": 443}
    }  # fmt: skip
    assert "caBundle" not in str(mwc)
    assert hook["rules"] == [
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods"], "scope": "Namespaced"}
    ]  # fmt: skip
    assert hook["objectSelector"] == {"matchLabels": {"cloudtaser.io/inject": "true"}}
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
         "values": ["kube-system", "ct-inj"]}
    ]  # fmt: skip
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["timeoutSeconds"] == 7
    assert hook["admissionReviewVersions"] == ["v1"]


def test_deployment_is_two_restricted_replicas_with_probes_and_the_inject_flags() -> None:
    opts = _opts(mirrors=(("docker.io", "registry.corp:5000"),), read_pull_secrets=True)
    dep = _by_kind(lib.build_objects(opts))["Deployment"]
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cloudtaser-injector"
    assert "hostNetwork" not in pod
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["/cloudtaser-runtime"]
    assert container["args"] == [
        "inject", "--listen", ":8443", "--runtime-image", IMAGE,
        "--allowed-vault-address", VAULT, "--audience", "vault",
        "--mirror", "docker.io=registry.corp:5000", "--read-pull-secrets",
        "--webhook-configuration", "cloudtaser-injector", "--webhook-name", "inject.cloudtaser.io",
        "--san", "cloudtaser-injector.cloudtaser-system.svc",
    ]  # fmt: skip
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz", "port": 8443, "scheme": "HTTPS"
    }  # fmt: skip
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "KUBERNETES_SERVICE_HOST" not in env
    pdb = _by_kind(lib.build_objects(opts))["PodDisruptionBudget"]
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "cloudtaser-injector"}},
    }


def test_url_mode_uses_host_network_the_url_port_and_the_kube_api() -> None:
    opts = _opts(webhook_url="https://127.0.0.1:9443/mutate", kube_api="127.0.0.1:6443")
    objects = _by_kind(lib.build_objects(opts))
    hook = objects["MutatingWebhookConfiguration"]["webhooks"][0]
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate"}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--listen") + 1] == "127.0.0.1:9443"
    assert args[args.index("--san") + 1] == "127.0.0.1"
    assert "--reuse-port" in args
    assert "ports" not in container  # a hostPort would keep the second replica off the node
    assert container["readinessProbe"]["httpGet"]["host"] == "127.0.0.1"
    assert container["readinessProbe"]["httpGet"]["port"] == 9443
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    # hostNetwork is not "restricted": the namespace must not enforce it
    labels = objects["Namespace"]["metadata"]["labels"]
    assert "pod-security.kubernetes.io/enforce" not in labels


def test_rbac_is_least_privilege_and_pull_secrets_add_exactly_get_secrets() -> None:
    plain = _by_kind(lib.build_objects(_opts()))
    assert plain["ClusterRole"]["rules"] == [
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": ["cloudtaser-injector"], "verbs": ["get", "patch", "update"]}
    ]  # fmt: skip
    assert plain["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
    ]
    wider = _by_kind(lib.build_objects(_opts(read_pull_secrets=True)))["ClusterRole"]["rules"]
    assert wider[1:] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    for binding in ("ClusterRoleBinding", "RoleBinding"):
        assert plain[binding]["subjects"] == [
            {"kind": "ServiceAccount", "name": "cloudtaser-injector",
             "namespace": "cloudtaser-system"}
        ]  # fmt: skip


def test_mirrors_may_name_plain_http_and_a_path_prefix() -> None:
    opts = _opts(mirrors=(("docker.io", "http://127.0.0.1:5000/hub"), ("ghcr.io", "m.corp:443")))
    args = _by_kind(lib.build_objects(opts))["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "docker.io=http://127.0.0.1:5000/hub" in args
    assert "ghcr.io=m.corp:443" in args


def test_cert_validity_is_passed_to_the_webhook_only_when_given() -> None:
    def args(opts: lib.InstallOptions) -> list[str]:
        dep = _by_kind(lib.build_objects(opts))["Deployment"]
        return list(dep["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--cert-validity" not in args(_opts())
    given = args(_opts(cert_validity="90s"))
    assert given[given.index("--cert-validity") + 1] == "90s"


def test_one_replica_gets_no_pdb_that_would_block_every_drain() -> None:
    kinds = [o["kind"] for o in lib.build_objects(_opts(replicas=1))]
    assert "PodDisruptionBudget" not in kinds


def test_an_existing_foreign_namespace_is_left_out() -> None:
    kinds = [o["kind"] for o in lib.build_objects(_opts(), namespace=False)]
    assert "Namespace" not in kinds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"allowed_vault_addresses": ()}, "at least one --allowed-vault-address"),
        ({"allowed_vault_addresses": ("ftp://vault",)}, "not an http(s) URL"),
        ({"allowed_vault_addresses": ("https://user:pw@vault",)}, "must not carry credentials"),
        ({"audience": "a b"}, "not a safe token audience"),
        ({"audience": ""}, "not a safe token audience"),
        ({"image": "Bad Image"}, "blanks"),
        ({"image": "reg:5000/app@sha256:abc"}, "digest"),
        ({"namespace": "kube-system"}, "namespace of its own"),
        ({"namespace": "Not_DNS"}, "DNS label"),
        ({"mirrors": (("docker.io", "bad host!"),)}, "not a registry host"),
        ({"mirrors": (("docker.io", "ftp://m"),)}, "not a registry host"),
        ({"mirrors": (("docker.io", "m.corp/Bad Prefix"),)}, "not a repository path prefix"),
        ({"mirrors": (("http://docker.io", "m.corp"),)}, "--mirror registry"),
        ({"replicas": 0}, "--replicas"),
        ({"timeout_seconds": 31}, "--timeout-seconds"),
        ({"webhook_url": "http://127.0.0.1:9443/mutate"}, "https"),
        ({"webhook_url": "https://127.0.0.1/mutate"}, "explicit port"),
        ({"webhook_url": "https://127.0.0.1:9443/mutate?x=1"}, "query"),
        ({"kube_api": "127.0.0.1"}, "HOST:PORT"),
        ({"cert_validity": "10s"}, "between 30s and 8760h"),
        ({"cert_validity": "1y"}, "--cert-validity"),
        ({"kube_api": "127.0.0.1:99999"}, "HOST:PORT"),
    ],
)
def test_bad_options_are_one_clear_config_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)")):
        _opts(**change)


def test_print_is_yaml_of_the_objects_with_no_cluster_access(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    args = ["target", "install", "--image", IMAGE, "--allowed-vault-address", VAULT,
            "--audience", "vault", "--read-pull-secrets", "--print",
            "--kubeconfig", str(tmp_path / "absent")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr()
    docs = list(yaml.safe_load_all(out.out))
    assert [d["kind"] for d in docs] == [o["kind"] for o in lib.build_objects(
        _opts(read_pull_secrets=True))]  # fmt: skip
    assert docs == lib.build_objects(_opts(read_pull_secrets=True))
    assert "get secrets (all namespaces)" in out.err  # the extra RBAC is shown


def test_install_without_the_required_flags_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["target", "install", "--image", IMAGE, "--print"]) == 2
    err = capsys.readouterr().err
    assert "--allowed-vault-address URL" in err
    assert "--audience AUD" in err
    assert "Traceback" not in err


def test_bad_flag_value_exits_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["target", "install", "--image", IMAGE, "--allowed-vault-address",
                 "https://u:hunter2@vault", "--audience", "a", "--print"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "hunter2" not in err
    assert "must not carry credentials" in err
