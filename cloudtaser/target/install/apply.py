"""``target install`` / ``target uninstall``: the injector (``cloudtaser-runtime inject``) in a
cluster, by server-side apply, and exactly that removed again.

What is created (``docs/injector.md`` § Installing the injector has the table):

* Namespace ``cloudtaser-system`` (``--namespace``) — only when it does not exist; it then gets
  the annotation :data:`CREATED_ANNOTATION`, and only such a namespace is ever deleted.
* ServiceAccount, Deployment, Service, PodDisruptionBudget (when ``replicas >= 2``), all named
  ``cloudtaser-injector``; ClusterRole + ClusterRoleBinding ``cloudtaser-injector`` (get /
  patch / update of the one MutatingWebhookConfiguration; ``get secrets`` with
  ``read_pull_secrets``); Role + RoleBinding ``cloudtaser-injector`` (pods get / list in its
  namespace); the MutatingWebhookConfiguration ``cloudtaser-injector`` — never its
  ``caBundle``, which the webhook publishes with field manager ``cloudtaser-injector``.
* The install record: ConfigMap :data:`RECORD_NAME` in the namespace, listing every object
  with its UID, and whether the namespace was created by install.

Every object carries the labels :data:`LABELS`; every write is a server-side apply with field
manager :data:`FIELD_MANAGER` and ``force``, so a re-run with the same options changes nothing
(idempotent), a re-run with another image is the upgrade, and an object an earlier install
created but this one does not want any more (the PDB after ``--replicas 1``) is pruned.

Uninstall deletes the objects of the record whose UID still matches (an object replaced by
someone else is left and reported), or, without a record (a ``--print`` install, a deleted
record), the objects of those names that carry all three labels. The namespace goes only when
install created it and nothing else lives in it.

The object builders are pure functions returning plain dicts (``--print`` renders them; the
unit tests read them). Nothing here prints: progress goes to a callback. ``--check`` is
:mod:`cloudtaser.target.install.check`.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from cloudtaser import __version__, contract
from cloudtaser.errors import (
    ClusterNotFoundError,
    ConfigError,
    OperationError,
)
from cloudtaser.plan.rules import is_dns_label, shown, valid_audience
from cloudtaser.target.kube.session import api_errors
from cloudtaser.target.registry import mirrors_problem, parse_reference, registry_host_problem

if TYPE_CHECKING:
    from cloudtaser.target.kube.session import KubeSession

__all__ = [
    "CREATED_ANNOTATION",
    "DEFAULT_NAMESPACE",
    "FIELD_MANAGER",
    "LABELS",
    "NAME",
    "RECORD_NAME",
    "WEBHOOK_NAME",
    "Action",
    "InstallOptions",
    "ObjectChange",
    "build_objects",
    "get_object",
    "install",
    "render_yaml",
    "uninstall",
]

NAME: Final = "cloudtaser-injector"
WEBHOOK_NAME: Final = "inject.cloudtaser.io"
DEFAULT_NAMESPACE: Final = "cloudtaser-system"
FIELD_MANAGER: Final = "cloudtaser-install"
#: The webhook's own field manager (it owns ``caBundle``).
WEBHOOK_FIELD_MANAGER: Final = "cloudtaser-injector"
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
RUNTIME_BINARY: Final = "/cloudtaser-runtime"
#: Names of the injected pod (decisions §1; the webhook produces them, --check looks for them).
INIT_CONTAINER: Final = "cloudtaser-init"
WRAPPER_PATH: Final = "/cloudtaser/bin/cloudtaser-runtime"

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

ProgressFn = Callable[[str], None]


class Action(enum.StrEnum):
    """What install or uninstall does (or, with ``dry_run``, would do) to one object."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    #: Removed (uninstall, or pruned by a re-run of install).
    DELETE = "delete"
    #: Not removed: someone else's object, or a namespace still in use.
    KEEP = "keep"


# --- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallOptions:
    """What to install. Validated by :meth:`validated` (the CLI calls it at the edge)."""

    image: str
    allowed_vault_addresses: tuple[str, ...]
    audience: str
    namespace: str = DEFAULT_NAMESPACE
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
        return InstallOptions(
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


# --- the objects (pure) ----------------------------------------------------------------------


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
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
    """The ``cloudtaser-runtime inject`` arguments (decisions.md §2)."""
    listen, _port, sans = _listen(opts)
    args = ["inject", "--listen", listen, "--runtime-image", opts.image]
    for address in opts.allowed_vault_addresses:
        args += ["--allowed-vault-address", address]
    args += ["--audience", opts.audience]
    for registry, mirror in opts.mirrors:
        args += ["--mirror", f"{registry}={mirror}"]
    if opts.read_pull_secrets:
        args.append("--read-pull-secrets")
    args += ["--webhook-configuration", NAME, "--webhook-name", WEBHOOK_NAME]
    for san in sans:
        args += ["--san", san]
    if opts.webhook_url is not None:
        args.append("--reuse-port")
    if opts.cert_validity is not None:
        args += ["--cert-validity", opts.cert_validity]
    return args


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
        "metadata": _meta(NAME, opts.namespace),
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
        "metadata": _meta(NAME),
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
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
PULL_SECRETS_RULE: Final = "ClusterRole cloudtaser-injector: get secrets (all namespaces)"


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
            "metadata": _meta(NAME, ns),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(NAME),
            "rules": cluster_rules(opts),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(NAME),
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
            "metadata": _meta(NAME, ns),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(NAME, ns),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": subject,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(NAME, ns),
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
                "metadata": _meta(NAME, ns),
                "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(SELECTOR)}},
            }
        )
    objects.append(_webhook_configuration(opts))
    return objects


def render_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML (``--print``), in apply order."""
    import yaml  # noqa: PLC0415

    return "".join(
        "---\n" + yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False)
        for obj in objects
    )


# --- cluster access --------------------------------------------------------------------------


#: kind -> (lightkube module, class name, namespaced)
_KINDS: Final = {
    "Namespace": ("core_v1", "Namespace", False),
    "ServiceAccount": ("core_v1", "ServiceAccount", True),
    "ConfigMap": ("core_v1", "ConfigMap", True),
    "Service": ("core_v1", "Service", True),
    "ClusterRole": ("rbac_authorization_v1", "ClusterRole", False),
    "ClusterRoleBinding": ("rbac_authorization_v1", "ClusterRoleBinding", False),
    "Role": ("rbac_authorization_v1", "Role", True),
    "RoleBinding": ("rbac_authorization_v1", "RoleBinding", True),
    "Deployment": ("apps_v1", "Deployment", True),
    "PodDisruptionBudget": ("policy_v1", "PodDisruptionBudget", True),
    "MutatingWebhookConfiguration": (
        "admissionregistration_v1",
        "MutatingWebhookConfiguration",
        False,
    ),
}
#: Deletion order (the webhook configuration first, so no pod waits on a webhook being
#: removed; the namespace last).
_DELETE_ORDER: Final = (
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


def _resource(kind: str) -> Any:
    import importlib  # noqa: PLC0415

    module, cls, _ns = _KINDS[kind]
    return getattr(importlib.import_module(f"lightkube.resources.{module}"), cls)


def to_dict(obj: Any) -> dict[str, Any]:
    import msgspec  # noqa: PLC0415

    data = msgspec.to_builtins(obj)
    return data if isinstance(data, dict) else {}


def where(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def get_object(
    session: KubeSession, kind: str, name: str, namespace: str | None
) -> dict[str, Any] | None:
    try:
        with api_errors(f"read {where(kind, name, namespace)}"):
            obj = session.client.get(_resource(kind), name, namespace=namespace)
    except ClusterNotFoundError:
        return None
    return to_dict(obj)


def _apply(session: KubeSession, body: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]:
    from lightkube.types import PatchType  # noqa: PLC0415

    meta = body["metadata"]
    kind = str(body["kind"])
    action = f"apply {where(kind, meta['name'], meta.get('namespace'))}" + (
        " (server-side dry run)" if dry_run else ""
    )
    with api_errors(action):
        obj = session.client.patch(
            _resource(kind),
            meta["name"],
            dict(body),
            namespace=meta.get("namespace"),
            patch_type=PatchType.APPLY,
            field_manager=FIELD_MANAGER,
            force=True,
            dry_run=dry_run,
        )
    return to_dict(obj)


_NOISE: Final = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


def _comparable(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    if not obj:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _NOISE}
    return out


def _diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    import difflib  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    old = yaml.safe_dump(_comparable(before), sort_keys=True).splitlines() if before else []
    new = yaml.safe_dump(_comparable(after), sort_keys=True).splitlines()
    return [
        line
        for line in difflib.unified_diff(old, new, "live", "applied", lineterm="", n=1)
        if not line.startswith(("---", "+++"))
    ]


@dataclass(frozen=True)
class ObjectChange:
    """What install or uninstall did (or, with ``dry_run``, would do) to one object."""

    kind: str
    name: str
    namespace: str | None
    action: Action
    detail: str = ""
    #: ``--dry-run``, for an update: the unified diff (live → applied) of the object, no status.
    diff: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{where(self.kind, self.name, self.namespace)}: {self.action}" + (
            f" ({self.detail})" if self.detail else ""
        )


@dataclass
class InstallReport:
    changes: list[ObjectChange] = field(default_factory=list)
    dry_run: bool = False
    #: The Deployment's rollout message when waited for.
    rollout: str | None = None


def install(
    session: KubeSession,
    options: InstallOptions,
    *,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 120.0,
    actor: str = "unknown",
    progress: ProgressFn | None = None,
) -> InstallReport:
    """Server-side apply every object (``dry_run``: the API server's dry run, nothing
    changes), prune what an earlier install created and this one does not want, write the
    record, and (``wait``) wait for the Deployment to roll out."""
    opts = options.validated()
    say = progress or (lambda _m: None)
    report = InstallReport(dry_run=dry_run)
    ns_live = get_object(session, "Namespace", opts.namespace, None)
    ours = ns_live is None or _created_by_install(ns_live)
    record = _read_record(session, opts.namespace) if ns_live is not None else None
    wanted = build_objects(opts, namespace=ours)
    if not ours:
        report.changes.append(
            ObjectChange(
                "Namespace",
                opts.namespace,
                None,
                Action.UNCHANGED,
                "exists and was not created by install: used, never changed or deleted",
            )
        )
    lives: list[dict[str, Any] | None] = []
    for body in wanted:  # every conflict is found before anything is written
        meta = body["metadata"]
        kind, name, ns = str(body["kind"]), meta["name"], meta.get("namespace")
        live = None if ns is not None and ns_live is None else get_object(session, kind, name, ns)
        if live is not None and kind != "Namespace" and not _labelled(live):
            raise OperationError(
                f"{where(kind, name, ns)} exists but was not created by cloudtaser (labels "
                "app.kubernetes.io/part-of=cloudtaser, name=cloudtaser-injector missing); "
                "remove it or choose another --namespace. Nothing was changed"
            )
        other = _installed_namespace(live) if kind == "ClusterRoleBinding" else None
        if other is not None and other != opts.namespace:
            raise OperationError(
                f"the injector is already installed in namespace {other} (one per cluster: the "
                "webhook configuration and ClusterRole are cluster-wide); run `target uninstall "
                f"--namespace {other}` first, or install with --namespace {other}. Nothing was "
                "changed"
            )
        lives.append(live)
    applied: list[dict[str, Any]] = []
    for body, live in zip(wanted, lives, strict=True):
        meta = body["metadata"]
        kind, name, ns = str(body["kind"]), meta["name"], meta.get("namespace")
        if dry_run and ns is not None and ns_live is None:
            # a dry-run create in a namespace that does not exist yet is refused by the server
            report.changes.append(
                ObjectChange(kind, name, ns, Action.CREATE, "namespace created first; not sent")
            )
            continue
        result = _apply(session, body, dry_run=dry_run)
        if live is None:
            action = Action.CREATE
        elif _comparable(live) == _comparable(result):
            action = Action.UNCHANGED
        else:
            action = Action.UPDATE
        # a created object is what --print shows; an update is shown as what changes
        diff = tuple(_diff(live, result)) if dry_run and action == Action.UPDATE else ()
        change = ObjectChange(kind, name, ns, action, diff=diff)
        report.changes.append(change)
        if not dry_run:
            say(str(change))
        applied.append(result)
    report.changes += _prune(session, record, wanted, dry_run=dry_run, say=say)
    if dry_run:
        return report
    _write_record(
        session,
        opts,
        applied,
        namespace_created=bool(ours and (record is None or record.get("namespaceCreated"))),
        actor=actor,
    )
    if wait:
        report.rollout = _wait_deployment(session, opts.namespace, timeout, say)
    return report


def _installed_namespace(binding: Mapping[str, Any] | None) -> str | None:
    """The namespace an existing install's ClusterRoleBinding points to."""
    subjects = (binding or {}).get("subjects") or []
    names = {s.get("namespace") for s in subjects if s.get("name") == NAME}
    return str(names.pop()) if len(names) == 1 else None


def _created_by_install(namespace: Mapping[str, Any]) -> bool:
    annotations = (namespace.get("metadata") or {}).get("annotations") or {}
    return annotations.get(CREATED_ANNOTATION) == CREATED_VALUE


def _labelled(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in LABELS.items())


def _ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out = {"kind": obj.get("kind"), "name": meta.get("name"), "uid": meta.get("uid")}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    return out


def _read_record(session: KubeSession, namespace: str) -> dict[str, Any] | None:
    live = get_object(session, "ConfigMap", RECORD_NAME, namespace)
    if live is None or not _labelled(live):
        return None
    data = live.get("data") or {}
    try:
        objects = json.loads(data.get("objects", "[]"))
    except ValueError:
        raise OperationError(
            f"the install record ConfigMap {namespace}/{RECORD_NAME} is damaged (objects is not "
            "JSON); delete it and run install again"
        ) from None
    if not isinstance(objects, list) or not all(
        isinstance(o, dict) and o.get("kind") in _KINDS and isinstance(o.get("name"), str)
        for o in objects
    ):
        raise OperationError(
            f"the install record ConfigMap {namespace}/{RECORD_NAME} lists unknown objects; "
            "delete it and run install again"
        )
    return {
        "objects": objects,
        "namespaceCreated": data.get("namespaceCreated") == "true",
        "uid": (live.get("metadata") or {}).get("uid"),
    }


def _write_record(
    session: KubeSession,
    opts: InstallOptions,
    applied: Sequence[Mapping[str, Any]],
    *,
    namespace_created: bool,
    actor: str,
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(RECORD_NAME, opts.namespace),
        "data": {
            "objects": json.dumps([_ref(o) for o in applied], sort_keys=True),
            "namespaceCreated": "true" if namespace_created else "false",
            "image": opts.image,
            "version": __version__,
            "installedBy": actor,
            "installedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    _apply(session, body, dry_run=False)


def _prune(
    session: KubeSession,
    record: Mapping[str, Any] | None,
    wanted: Sequence[Mapping[str, Any]],
    *,
    dry_run: bool,
    say: ProgressFn,
) -> list[ObjectChange]:
    """Delete what the earlier install recorded and this one no longer wants."""
    if record is None:
        return []
    keep = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in wanted}
    stale = [o for o in record["objects"] if (o["kind"], o["name"], o.get("namespace")) not in keep]
    changes = []
    for entry in stale:
        if entry["kind"] == "Namespace":
            continue
        change = _delete_recorded(session, entry, dry_run=dry_run, detail="no longer wanted")
        say(str(change))
        changes.append(change)
    return changes


def _wait_deployment(session: KubeSession, namespace: str, timeout: float, say: ProgressFn) -> str:
    from cloudtaser.target.rollout import wait_for_rollout  # noqa: PLC0415

    def fetch() -> Mapping[str, Any]:
        obj = get_object(session, "Deployment", NAME, namespace)
        if obj is None:
            raise OperationError(f"Deployment {namespace}/{NAME} disappeared while rolling out")
        return obj

    generation = int((fetch().get("metadata") or {}).get("generation") or 0)
    try:
        state = wait_for_rollout(
            fetch,
            "Deployment",
            min_generation=generation,
            timeout=timeout,
            on_progress=lambda m: say(f"Deployment {namespace}/{NAME}: {m}"),
        )
    except OperationError as exc:
        raise OperationError(
            f"the injector did not become ready: {exc}. Look at `kubectl -n {namespace} "
            f"describe pods -l app.kubernetes.io/name={NAME}` and the pods' logs"
        ) from None
    return state.message


# --- uninstall -------------------------------------------------------------------------------


@dataclass
class UninstallReport:
    changes: list[ObjectChange] = field(default_factory=list)
    dry_run: bool = False
    #: How the objects were found: "record" or "labels".
    found_by: str = "record"


def _delete_recorded(
    session: KubeSession, entry: Mapping[str, Any], *, dry_run: bool, detail: str = ""
) -> ObjectChange:
    kind, name, ns = entry["kind"], entry["name"], entry.get("namespace")
    live = get_object(session, kind, name, ns)
    if live is None:
        return ObjectChange(kind, name, ns, Action.UNCHANGED, "already gone")
    uid = (live.get("metadata") or {}).get("uid")
    if entry.get("uid") and uid != entry["uid"]:
        return ObjectChange(
            kind, name, ns, Action.KEEP, "replaced since install (another UID): left alone"
        )
    if kind != "Namespace" and not _labelled(live):
        return ObjectChange(kind, name, ns, Action.KEEP, "labels removed since install: left")
    _delete(session, kind, name, ns, dry_run=dry_run)
    return ObjectChange(kind, name, ns, Action.DELETE, detail)


def _delete(session: KubeSession, kind: str, name: str, ns: str | None, *, dry_run: bool) -> None:
    from lightkube.types import CascadeType  # noqa: PLC0415

    try:
        with api_errors(f"delete {where(kind, name, ns)}" + (" (dry run)" if dry_run else "")):
            session.client.delete(
                _resource(kind),
                name,
                namespace=ns,
                cascade=CascadeType.FOREGROUND,
                dry_run=dry_run,
            )
    except ClusterNotFoundError:
        pass


#: What may stay in a namespace install created without making it "used by someone else".
_DEFAULTS: Final = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
_FOREIGN_KINDS: Final = (
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "Role",
    "RoleBinding",
    "PodDisruptionBudget",
)


def _foreign_objects(session: KubeSession, namespace: str, ours: set[tuple[str, str]]) -> list[str]:
    """Objects in ``namespace`` that install did not create (so it must stay)."""
    from lightkube.resources.apps_v1 import DaemonSet, StatefulSet  # noqa: PLC0415
    from lightkube.resources.batch_v1 import Job  # noqa: PLC0415
    from lightkube.resources.core_v1 import Pod, Secret  # noqa: PLC0415

    extra = {"Secret": Secret, "StatefulSet": StatefulSet, "DaemonSet": DaemonSet, "Job": Job}
    found: list[str] = []
    with api_errors(f"list the objects in namespace {namespace}"):
        for kind in (*_FOREIGN_KINDS, *extra, "Pod"):
            res = Pod if kind == "Pod" else extra.get(kind) or _resource(kind)
            for obj in session.client.list(res, namespace=namespace):
                meta = to_dict(obj).get("metadata") or {}
                name = str(meta.get("name") or "")
                if kind == "Pod":
                    if (meta.get("labels") or {}).get("app.kubernetes.io/name") != NAME:
                        found.append(f"Pod {name}")
                elif (kind, name) not in ours and (kind, name) not in _DEFAULTS:
                    found.append(f"{kind} {name}")
    return found


def _fixed_objects(namespace: str) -> list[dict[str, Any]]:
    """Without a record: every object install may have created, by its fixed name."""
    out: list[dict[str, Any]] = []
    for kind, (_m, _c, namespaced) in _KINDS.items():
        if kind == "Namespace":
            continue
        name = RECORD_NAME if kind == "ConfigMap" else NAME
        out.append({"kind": kind, "name": name, **({"namespace": namespace} if namespaced else {})})
    return out


def uninstall(
    session: KubeSession,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 120.0,
    progress: ProgressFn | None = None,
) -> UninstallReport:
    """Delete exactly what install created: the record's objects (UID checked), else the
    fixed-name objects carrying all three labels; the namespace only when install created it
    and nothing else is in it. The webhook configuration goes first."""
    if not is_dns_label(namespace):
        raise ConfigError(f"--namespace {shown(namespace)} is not a DNS label")
    say = progress or (lambda _m: None)
    report = UninstallReport(dry_run=dry_run)
    ns_live = get_object(session, "Namespace", namespace, None)
    record = _read_record(session, namespace) if ns_live is not None else None
    if record is not None:
        entries = list(record["objects"])
        entries.append({"kind": "ConfigMap", "name": RECORD_NAME, "namespace": namespace,
                        "uid": record.get("uid")})  # fmt: skip
    else:
        report.found_by = "labels"
        entries = _fixed_objects(namespace)
    entries = [e for e in entries if e["kind"] != "Namespace"]
    entries.sort(key=lambda e: _DELETE_ORDER.index(e["kind"]))
    deleted: list[Mapping[str, Any]] = []
    for entry in entries:
        if record is None:
            live = get_object(session, entry["kind"], entry["name"], entry.get("namespace"))
            if live is None:
                continue
            if not _labelled(live):
                change = ObjectChange(
                    entry["kind"], entry["name"], entry.get("namespace"), Action.KEEP,
                    "not labelled as cloudtaser's injector: left alone",
                )  # fmt: skip
                report.changes.append(change)
                say(str(change))
                continue
        change = _delete_recorded(session, entry, dry_run=dry_run)
        report.changes.append(change)
        say(str(change))
        if change.action == Action.DELETE:
            deleted.append(entry)
    if ns_live is not None:
        ours = {(str(e["kind"]), str(e["name"])) for e in deleted}
        change = _namespace_change(session, namespace, ns_live, record, ours, dry_run=dry_run)
        report.changes.append(change)
        say(str(change))
        if change.action == Action.DELETE:
            deleted.append({"kind": "Namespace", "name": namespace})
    if wait and not dry_run and deleted:
        _wait_gone(session, deleted, timeout, say)
    return report


def _namespace_change(
    session: KubeSession,
    namespace: str,
    ns_live: Mapping[str, Any],
    record: Mapping[str, Any] | None,
    ours: set[tuple[str, str]],
    *,
    dry_run: bool,
) -> ObjectChange:
    """Delete the namespace when install created it and nothing but what this uninstall
    deleted (``ours``) and the defaults is in it."""
    created = _created_by_install(ns_live) and (record is None or record["namespaceCreated"])
    if not created:
        return ObjectChange("Namespace", namespace, None, Action.KEEP, "not created by install")
    foreign = _foreign_objects(session, namespace, ours)
    if foreign:
        listed = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        return ObjectChange(
            "Namespace", namespace, None, Action.KEEP,
            f"created by install, but it now holds other objects ({listed}): left",
        )  # fmt: skip
    _delete(session, "Namespace", namespace, None, dry_run=dry_run)
    return ObjectChange("Namespace", namespace, None, Action.DELETE)


def _wait_gone(
    session: KubeSession, deleted: Sequence[Mapping[str, Any]], timeout: float, say: ProgressFn
) -> None:
    deadline = time.monotonic() + timeout
    for entry in deleted:
        kind, name, ns = entry["kind"], entry["name"], entry.get("namespace")
        announced = False
        while get_object(session, kind, name, ns) is not None:
            if time.monotonic() > deadline:
                raise OperationError(
                    f"{where(kind, name, ns)} is still being deleted after {timeout:g}s "
                    "(a finalizer?); it will go on in the cluster"
                )
            if not announced:
                say(f"waiting for {where(kind, name, ns)} to be gone")
                announced = True
            time.sleep(0.5)
