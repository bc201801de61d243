"""The objects ``target install`` applies, as pure functions returning plain dicts.

:class:`InstallOptions` is what to install (validated at the edge, each flag's rule once);
:func:`build_objects` turns it into every object in apply order (``--print`` renders them with
:func:`render_yaml`; the unit tests read them). No cluster access here: the apply is
:mod:`cloudtaser.target.install.apply`.

What is created (``docs/injector.md`` § Installing the injector has the table):

* Namespace ``cloudtaser-system`` (``--namespace``) — only when it does not exist; it then gets
  the annotation :data:`CREATED_ANNOTATION`, and only such a namespace is ever deleted.
* ServiceAccount, Deployment, Service, PodDisruptionBudget (when ``replicas >= 2``), all named
  :data:`NAME`; ClusterRole + ClusterRoleBinding (get / patch / update of the one
  MutatingWebhookConfiguration; ``get secrets`` with ``read_pull_secrets``); Role + RoleBinding
  (pods get / list in its namespace); the MutatingWebhookConfiguration — never its
  ``caBundle``, which the webhook publishes with field manager ``cloudtaser-injector``.

Every object carries the labels :data:`LABELS`.

Cluster defaults (``--default-vault-address``, ``--default-auth-path``, ``--default-auth-method``,
``--default-vault-namespace``; :class:`cloudtaser.contract.InjectorDefaults`) go to the
injector as the same ``inject`` flags and onto the MutatingWebhookConfiguration as the
:data:`cloudtaser.contract.INJECTOR_DEFAULTS` annotation, where protect and ``--check`` read
them with one request (``--check`` also compares it with the Deployment's flags).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from cloudtaser import contract
from cloudtaser.errors import ConfigError
from cloudtaser.plan.rules import RUNTIME_NAMESPACE, is_dns_label, shown, valid_audience
from cloudtaser.target.registry import mirrors_problem, parse_reference, registry_host_problem

__all__ = [
    "CREATED_ANNOTATION",
    "CREATED_VALUE",
    "DEFAULT_FLAGS",
    "FIELD_MANAGER",
    "KINDS",
    "LABELS",
    "MAX_TOKEN_EXPIRATION",
    "MIN_TOKEN_EXPIRATION",
    "NAME",
    "PULL_SECRETS_RULE",
    "RECORD_NAME",
    "RUNTIME_BINARY",
    "InstallOptions",
    "build_objects",
    "cluster_rules",
    "defaults_args",
    "defaults_from_args",
    "inject_args",
    "object_meta",
    "render_yaml",
]

#: The name of every object of the install: the webhook configuration's name in the contract.
NAME: Final = contract.INJECTOR_WEBHOOK_CONFIGURATION
#: Install's field manager (server-side apply).
FIELD_MANAGER: Final = "cloudtaser-install"
#: The ConfigMap listing what install created (``cloudtaser.target.install.apply``).
RECORD_NAME: Final = "cloudtaser-injector-install"
CREATED_ANNOTATION: Final = "cloudtaser.io/created-by"
CREATED_VALUE: Final = "cloudtaser target install"
LABELS: Final = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/part-of": "cloudtaser",
    "app.kubernetes.io/managed-by": "cloudtaser",
}
SELECTOR: Final = {"app.kubernetes.io/name": NAME}
DEFAULT_PORT: Final = 8443
#: The API server's limits of a projected token's ``expirationSeconds`` (the injector's too).
MIN_TOKEN_EXPIRATION: Final = 600
MAX_TOKEN_EXPIRATION: Final = 2**32
#: The runtime binary in its image.
RUNTIME_BINARY: Final = "/cloudtaser-runtime"
#: Every kind install may create, in deletion order (the webhook configuration first, so no
#: pod waits on a webhook being removed; the namespace last).
KINDS: Final = (
    "MutatingWebhookConfiguration",
    "Deployment",
    "PodDisruptionBudget",
    "Service",
    "RoleBinding",
    "Role",
    "ClusterRoleBinding",
    "ClusterRole",
    "ServiceAccount",
    "ConfigMap",
    "Namespace",
)

#: No cluster defaults (pods carry every annotation themselves).
_NO_DEFAULTS: Final = contract.InjectorDefaults()
_SECURITY_CONTEXT: Final = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_RESOURCES: Final = {
    "requests": {"cpu": "20m", "memory": "48Mi"},
    "limits": {"memory": "128Mi"},
}


@dataclass(frozen=True)
class InstallOptions:
    """What to install. Validated by :meth:`validated` (the CLI calls it at the edge)."""

    image: str
    allowed_vault_addresses: tuple[str, ...]
    audience: str
    namespace: str = RUNTIME_NAMESPACE
    #: ``(registry, mirror)`` pairs, e.g. ``("docker.io", "registry.corp:5000")``.
    mirrors: tuple[tuple[str, str], ...] = ()
    read_pull_secrets: bool = False
    #: URL mode: the API server calls this URL (``https://127.0.0.1:PORT/mutate``).
    webhook_url: str | None = None
    #: ``HOST:PORT`` the webhook pods use for the API (clusters without kube-proxy).
    kube_api: str | None = None
    replicas: int = 2
    timeout_seconds: int = 10
    #: The webhook's serving-certificate lifetime (``--cert-validity``; rotated at 2/3 of it);
    #: ``None`` = the webhook's default (24h).
    cert_validity: str | None = None
    #: The cluster's defaults for pods whose annotations leave them out (validated already:
    #: :meth:`cloudtaser.contract.InjectorDefaults.parse`).
    defaults: contract.InjectorDefaults = _NO_DEFAULTS
    #: ``--jwt-token-expiration``: seconds a projected token lives in jwt mode (``None``: the
    #: injector's 600).
    jwt_token_expiration: int | None = None

    def validated(self) -> InstallOptions:
        """These options with normalised values, or :class:`ConfigError` naming the flag."""
        parse_reference(self.image)
        if not self.allowed_vault_addresses:
            raise ConfigError(
                "at least one --allowed-vault-address URL is needed: pods whose "
                "cloudtaser.io/vault-address is not listed are denied"
            )
        addresses = []
        for address in self.allowed_vault_addresses:
            try:  # the runtime contract's one rule for a vault address
                addresses.append(contract.parse_vault_address("--allowed-vault-address", address))
            except contract.ContractError as exc:
                raise ConfigError(str(exc)) from None
        if not self.audience or not valid_audience(self.audience):
            raise ConfigError(
                f"--audience {shown(self.audience)} is not a safe token audience (no blanks or "
                "quotes, at most 256 characters); use the audience of the vault roles "
                "(source apply-plan --audience)"
            )
        if not is_dns_label(self.namespace):
            raise ConfigError(f"--namespace {shown(self.namespace)} is not a DNS label")
        if self.namespace in {"kube-system", "kube-public", "kube-node-lease", "default"}:
            raise ConfigError(
                f"--namespace {self.namespace}: the injector needs a namespace of its own "
                "(it is excluded from injection)"
            )
        problem = mirrors_problem(self.mirrors)
        if problem:
            raise ConfigError(problem)
        if not 1 <= self.replicas <= 20:
            raise ConfigError("--replicas must be between 1 and 20")
        if not 1 <= self.timeout_seconds <= 30:
            raise ConfigError("--timeout-seconds must be between 1 and 30 (Kubernetes' range)")
        if self.webhook_url is not None:
            _url_parts(self.webhook_url)
        if self.kube_api is not None:
            _host_port(self.kube_api, "--kube-api")
        if self.cert_validity is not None:
            try:  # the runtime contract's duration grammar, the webhook's range
                seconds = contract.parse_duration("--cert-validity", self.cert_validity)
            except contract.ContractError as exc:
                raise ConfigError(str(exc)) from None
            if not 30 <= seconds <= 8760 * 3600:
                raise ConfigError("--cert-validity must be between 30s and 8760h")
        if self.defaults.address and self.defaults.address not in addresses:
            raise ConfigError(
                f"--default-vault-address {self.defaults.address} is not one of the "
                "--allowed-vault-address values: a default must itself be allowed"
            )
        if self.jwt_token_expiration is not None and not (
            MIN_TOKEN_EXPIRATION <= self.jwt_token_expiration <= MAX_TOKEN_EXPIRATION
        ):
            raise ConfigError(
                f"--jwt-token-expiration must be between {MIN_TOKEN_EXPIRATION} and "
                f"{MAX_TOKEN_EXPIRATION} seconds (the API server's limits for a projected token)"
            )
        return InstallOptions(
            defaults=self.defaults,
            jwt_token_expiration=self.jwt_token_expiration,
            image=self.image,
            allowed_vault_addresses=tuple(dict.fromkeys(addresses)),
            audience=self.audience,
            namespace=self.namespace,
            mirrors=self.mirrors,
            read_pull_secrets=self.read_pull_secrets,
            webhook_url=self.webhook_url,
            kube_api=self.kube_api,
            replicas=self.replicas,
            timeout_seconds=self.timeout_seconds,
            cert_validity=self.cert_validity,
        )


def _url_parts(url: str) -> tuple[str, int, str]:
    """``https://HOST:PORT/PATH`` → (host, port, path); the rules Kubernetes applies to a
    webhook URL (https, no user info, query or fragment) plus an explicit port."""
    where = f"--webhook-url {shown(url, limit=120)}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where} is not a URL with a valid port") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"{where} must be https://HOST:PORT/PATH (the API server needs TLS)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{where} must not carry user info, a query or a fragment")
    if port is None:
        raise ConfigError(f"{where} needs an explicit port (the webhook listens on it)")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ConfigError(f"{where} contains blanks or control characters")
    return parts.hostname, port, parts.path or "/mutate"


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {shown(text)} is not HOST:PORT (e.g. 127.0.0.1:6443)")
    if registry_host_problem(host if ":" not in host else f"[{host}]"):
        raise ConfigError(f"{what} {shown(text)}: {shown(host)} is not a host name or address")
    return host, int(port)


def object_meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    """``metadata`` of an install object: its name, namespace and :data:`LABELS`."""
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def _listen(opts: InstallOptions) -> tuple[str, int, list[str]]:
    """(listen address, port, SANs) of the webhook server."""
    if opts.webhook_url is None:
        return f":{DEFAULT_PORT}", DEFAULT_PORT, [f"{NAME}.{opts.namespace}.svc"]
    host, port, _path = _url_parts(opts.webhook_url)
    ip_literal = host.replace(".", "").isdigit() or ":" in host
    listen = f"{host}:{port}" if ip_literal else f":{port}"
    if ":" in host:
        listen = f"[{host}]:{port}"
    return listen, port, [host]


def inject_args(opts: InstallOptions) -> list[str]:
    """The ``cloudtaser-runtime inject`` arguments (docs/injector.md, "Installing the injector")."""
    listen, _port, sans = _listen(opts)
    args = ["inject", "--listen", listen, "--runtime-image", opts.image]
    for address in opts.allowed_vault_addresses:
        args += ["--allowed-vault-address", address]
    args += ["--audience", opts.audience]
    for registry, mirror in opts.mirrors:
        args += ["--mirror", f"{registry}={mirror}"]
    if opts.read_pull_secrets:
        args.append("--read-pull-secrets")
    args += ["--webhook-configuration", NAME, "--webhook-name", contract.INJECTOR_WEBHOOK_NAME]
    for san in sans:
        args += ["--san", san]
    if opts.webhook_url is not None:
        args.append("--reuse-port")
    if opts.cert_validity is not None:
        args += ["--cert-validity", opts.cert_validity]
    args += defaults_args(opts.defaults)
    if opts.jwt_token_expiration is not None:
        args += ["--jwt-token-expiration", str(opts.jwt_token_expiration)]
    return args


#: ``inject`` flag of each default (the JSON name of :meth:`InjectorDefaults.to_json`).
DEFAULT_FLAGS: Final = {
    "address": "--default-vault-address",
    "authMount": "--default-auth-path",
    "authMethod": "--default-auth-method",
    "namespace": "--default-vault-namespace",
}


def defaults_args(defaults: contract.InjectorDefaults) -> list[str]:
    """The ``--default-*`` flags of ``cloudtaser-runtime inject`` for ``defaults`` (the auth
    mount as ``auth/<mount>``)."""
    args: list[str] = []
    for key, value in defaults.to_json().items():
        args += [DEFAULT_FLAGS[key], f"auth/{value}" if key == "authMount" else value]
    return args


def defaults_from_args(args: Sequence[str]) -> contract.InjectorDefaults:
    """The defaults an ``inject`` argument list carries (:func:`defaults_args` read back)."""
    given = {
        key: args[i + 1]
        for i, arg in enumerate(args[:-1])
        for key, flag in DEFAULT_FLAGS.items()
        if arg == flag
    }
    return contract.InjectorDefaults.parse(
        address=given.get("address"),
        auth_mount=given.get("authMount"),
        auth_method=given.get("authMethod"),
        namespace=given.get("namespace"),
    )


def _deployment(opts: InstallOptions) -> dict[str, Any]:
    _listen_addr, port, _sans = _listen(opts)
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if opts.kube_api is not None:
        host, api_port = _host_port(opts.kube_api, "--kube-api")
        env += [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
        ]

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        http: dict[str, Any] = {"path": path, "port": port, "scheme": "HTTPS"}
        if opts.webhook_url is not None:
            host = _url_parts(opts.webhook_url)[0]
            if host.replace(".", "").isdigit():
                http["host"] = host  # the server listens on that address only
        return {
            "httpGet": http,
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container: dict[str, Any] = {
        "name": "inject",
        "image": opts.image,
        "command": [RUNTIME_BINARY],
        "args": inject_args(opts),
        "env": env,
        "readinessProbe": probe("/readyz", 2, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "startupProbe": probe("/healthz", 1, 30),
        "resources": _RESOURCES,
        "securityContext": _SECURITY_CONTEXT,
    }
    spec: dict[str, Any] = {
        "serviceAccountName": NAME,
        "automountServiceAccountToken": True,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 30,
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": dict(SELECTOR)},
                        },
                    }
                ]
            }
        },
        "containers": [container],
    }
    if opts.webhook_url is None:
        container["ports"] = [{"name": "https", "containerPort": port, "protocol": "TCP"}]
    else:
        # no containerPort: with hostNetwork it would be a hostPort, and the scheduler would
        # refuse a second replica on the node (they share the port through SO_REUSEPORT)
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(NAME, opts.namespace),
        "spec": {
            "replicas": opts.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": dict(SELECTOR)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": spec},
        },
    }


def _webhook_configuration(opts: InstallOptions) -> dict[str, Any]:
    client: dict[str, Any]
    if opts.webhook_url is not None:
        client = {"url": opts.webhook_url}
    else:
        client = {
            "service": {"name": NAME, "namespace": opts.namespace, "path": "/mutate", "port": 443}
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": object_meta(NAME, **_defaults_annotation(opts.defaults)),
        "webhooks": [
            {
                "name": contract.INJECTOR_WEBHOOK_NAME,
                "clientConfig": client,  # never caBundle: the webhook owns that field
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {"matchLabels": {contract.INJECT_LABEL: "true"}},
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system", opts.namespace],
                        }
                    ]
                },
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": opts.timeout_seconds,
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


def _defaults_annotation(defaults: contract.InjectorDefaults) -> dict[str, Any]:
    """``{"annotations": {INJECTOR_DEFAULTS: <compact JSON>}}`` when any default is set."""
    if not defaults.any:
        return {}
    value = json.dumps(defaults.to_json(), separators=(",", ":"), sort_keys=True)
    return {"annotations": {contract.INJECTOR_DEFAULTS: value}}


def cluster_rules(opts: InstallOptions) -> list[dict[str, Any]]:
    """The ClusterRole's rules: the one webhook configuration; ``get secrets`` (cluster-wide)
    only with ``read_pull_secrets``."""
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [NAME],
            "verbs": ["get", "patch", "update"],
        }
    ]
    if opts.read_pull_secrets:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    return rules


#: What ``--read-pull-secrets`` adds, for the CLI to show.
PULL_SECRETS_RULE: Final = f"ClusterRole {NAME}: get secrets (all namespaces)"


def build_objects(opts: InstallOptions, *, namespace: bool = True) -> list[dict[str, Any]]:
    """Every object of the install in apply order (the namespace first, the webhook
    configuration after the Deployment). ``namespace=False`` leaves the Namespace out (it
    exists and is not ours)."""
    ns = opts.namespace
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]
    objects: list[dict[str, Any]] = []
    if namespace:
        ns_labels = dict(LABELS)
        ns_labels.pop("app.kubernetes.io/name")
        if opts.webhook_url is None:  # hostNetwork (URL mode) is not "restricted"
            ns_labels["pod-security.kubernetes.io/enforce"] = "restricted"
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "labels": ns_labels,
                    "annotations": {CREATED_ANNOTATION: CREATED_VALUE},
                },
            }
        )
    objects += [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": object_meta(NAME, ns),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": object_meta(NAME),
            "rules": cluster_rules(opts),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": object_meta(NAME),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": object_meta(NAME, ns),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": object_meta(NAME, ns),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": subject,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(NAME, ns),
            "spec": {
                "selector": dict(SELECTOR),
                "ports": [
                    {
                        "name": "https",
                        "port": 443,
                        "targetPort": _listen(opts)[1],
                        "protocol": "TCP",
                    }
                ],
            },
        },
        _deployment(opts),
    ]
    if opts.replicas >= 2:
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": object_meta(NAME, ns),
                "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(SELECTOR)}},
            }
        )
    objects.append(_webhook_configuration(opts))
    return objects


def render_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML (``--print``), in apply order."""
    return "".join(
        "---\n" + yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False)
        for obj in objects
    )
