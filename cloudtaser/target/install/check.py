"""``target install --check``: is the injector working?

Five checks, each an ok / fail with the reason: the Deployment has all its replicas ready; the
webhook configuration's ``caBundle`` holds a valid PEM CA; in URL mode a TLS connection to the
webhook verifies against that bundle (skipped when the URL is not reachable from here); the
cluster defaults recorded on the webhook configuration
(:data:`~cloudtaser.contract.INJECTOR_DEFAULTS`) are the ones the injector runs with (its
``--default-*`` flags); a server-side dry-run create of an opted-in pod (never stored; without
a vault address when the injector has a default one, so the default is what admits it) comes
back injected — the real path: API server, webhook, mutation; decided by
:func:`cloudtaser.target.engine.admission.judge`, the decision protect and finalize make
before any patch. The injector is found by its fixed names only (not by install's labels,
field manager or record), so a chart- or GitOps-installed injector is checked the same way
(``tests/integration/test_helm_chart.py``). Nothing here prints.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from cloudtaser import contract
from cloudtaser.contract import INJECTOR_WEBHOOK_NAME
from cloudtaser.plan.rules import RUNTIME_NAMESPACE, shown
from cloudtaser.target.engine.admission import judge
from cloudtaser.target.install.manifests import NAME, RUNTIME_BINARY, defaults_from_args
from cloudtaser.target.kube import api
from cloudtaser.target.kube.api import get_object

if TYPE_CHECKING:
    from cloudtaser.target.kube.session import KubeSession

__all__ = ["CHECK_PATH", "CHECK_ROLE", "CheckResult", "check", "check_pod", "describe_defaults"]


@dataclass(frozen=True)
class CheckResult:
    """One check of ``target install --check``."""

    name: str
    ok: bool
    detail: str
    #: The ``cluster defaults`` check: the defaults the injector carries.
    defaults: contract.InjectorDefaults | None = None


CHECK_ROLE: Final = "cloudtaser-install-check"
CHECK_PATH: Final = "secret/data/cloudtaser-install-check/probe"


def check(
    session: KubeSession,
    *,
    namespace: str = RUNTIME_NAMESPACE,
    pod_namespace: str = "default",
    timeout: float = 10.0,
) -> list[CheckResult]:
    """Is the injector working? Deployment ready; the webhook configuration's ``caBundle``
    present and a CA that verifies the webhook's serving certificate (when its URL is
    reachable from here); a server-side dry-run create of an opted-in pod comes back
    mutated (the real path: API server → webhook → mutation)."""
    results = [_check_deployment(session, namespace)]
    mwc = get_object(session, "MutatingWebhookConfiguration", NAME, None)
    hook = None
    if mwc is not None:
        hook = next(
            (w for w in mwc.get("webhooks") or [] if w.get("name") == INJECTOR_WEBHOOK_NAME), None
        )
    if hook is None:
        results.append(
            CheckResult(
                "webhook configuration",
                False,
                f"MutatingWebhookConfiguration {NAME} (webhook {INJECTOR_WEBHOOK_NAME}) not found: "
                "run target install",
            )
        )
        return results
    results.extend(_check_ca(hook, timeout))
    defaults = _check_defaults(session, mwc, namespace)
    results.append(defaults)
    results.append(_check_dry_run_pod(session, namespace, pod_namespace, defaults.defaults))
    return results


def _inject_args(session: KubeSession, namespace: str) -> tuple[str, list[str]] | None:
    """(image, args) of the injector Deployment's container, or None when it is missing."""
    deployment = get_object(session, "Deployment", NAME, namespace)
    if deployment is None:
        return None
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    if not containers:
        return None
    return str(containers[0].get("image") or ""), list(containers[0].get("args") or [])


def describe_defaults(defaults: contract.InjectorDefaults) -> str:
    """One line for people: what a pod without the cluster-specific annotations gets."""
    if not defaults.any:
        return "none: pods carry their vault address (and auth path, method, namespace) themselves"
    effective = defaults.effective()
    parts = [
        f"vault address {defaults.address or '(none: pods must name it)'}",
        f"auth/{effective[contract.AUTH_PATH]}",
        f"auth method {effective[contract.AUTH_METHOD]}",
        f"vault namespace {defaults.namespace or '(none)'}",
    ]
    return ", ".join(parts) + " (for pods without these annotations)"


def _check_defaults(
    session: KubeSession, mwc: Mapping[str, Any] | None, namespace: str
) -> CheckResult:
    name = "cluster defaults"
    meta = (mwc or {}).get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(contract.INJECTOR_DEFAULTS)
    found = _inject_args(session, namespace)
    try:
        recorded = contract.parse_injector_defaults(raw) if raw else contract.InjectorDefaults()
        running = defaults_from_args(found[1]) if found else recorded
    except contract.ContractError as exc:
        return CheckResult(name, False, f"{exc}: re-run target install")
    if recorded != running:
        return CheckResult(
            name,
            False,
            f"the webhook configuration records {describe_defaults(recorded)}, but the "
            f"injector runs with {describe_defaults(running)}: re-run target install",
        )
    return CheckResult(name, True, describe_defaults(running), defaults=running)


def _check_deployment(session: KubeSession, namespace: str) -> CheckResult:
    obj = get_object(session, "Deployment", NAME, namespace)
    if obj is None:
        return CheckResult(
            "deployment", False, f"Deployment {namespace}/{NAME} not found: run target install"
        )
    want = int((obj.get("spec") or {}).get("replicas") or 0)
    status = obj.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    if want == 0:
        return CheckResult("deployment", False, "scaled to 0: opted-in pods are refused")
    if ready < want:
        return CheckResult(
            "deployment", False, f"{ready}/{want} replicas ready (a replica is ready once its "
            "CA is in the caBundle): look at the pods' logs",
        )  # fmt: skip
    return CheckResult("deployment", True, f"{ready}/{want} replicas ready")


def _pem_certificates(bundle: bytes) -> list[str]:
    text = base64.b64decode(bundle).decode("ascii", "replace") if bundle else ""
    return re.findall(
        r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----", text
    )


def _check_ca(hook: Mapping[str, Any], timeout: float) -> list[CheckResult]:
    client = hook.get("clientConfig") or {}
    raw = client.get("caBundle")
    if not raw:
        return [
            CheckResult(
                "caBundle",
                False,
                "empty: the webhook has not published its CA yet (is it running? may its "
                "ServiceAccount patch the configuration?)",
            )
        ]
    try:
        certs = _pem_certificates(raw.encode("ascii") if isinstance(raw, str) else raw)
        context = ssl.create_default_context(cadata="\n".join(certs)) if certs else None
    except (ValueError, ssl.SSLError):
        context = None
    if context is None:
        return [CheckResult("caBundle", False, "present but holds no valid PEM CA certificate")]
    results = [CheckResult("caBundle", True, f"{len(certs)} CA certificate(s)")]
    url = client.get("url")
    if not url:
        results.append(
            CheckResult(
                "serving certificate",
                True,
                "service mode: not reachable from here; the dry-run pod below proves the API "
                "server trusts it",
            )
        )
        return results
    parts = urlsplit(url)
    try:
        with (
            socket.create_connection(
                (parts.hostname, parts.port or 443), timeout=timeout
            ) as raw_sock,
            context.wrap_socket(raw_sock, server_hostname=parts.hostname) as tls,
        ):
            tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        results.append(
            CheckResult(
                "serving certificate",
                False,
                f"{parts.hostname}:{parts.port} does not verify against the caBundle "
                f"({shown(exc.verify_message or 'verification failed', limit=120)})",
            )
        )
    except (OSError, ssl.SSLError) as exc:
        results.append(
            CheckResult(
                "serving certificate",
                True,
                f"{parts.hostname}:{parts.port} not reachable from here ({type(exc).__name__}); "
                "skipped",
            )
        )
    else:
        results.append(
            CheckResult(
                "serving certificate", True, f"{parts.hostname}:{parts.port} verifies against it"
            )
        )
    return results


def check_pod(namespace: str, image: str, vault_address: str | None) -> dict[str, Any]:
    """The opted-in pod ``--check`` creates with ``dryRun=All`` (never stored); without a
    vault address (``None``) it relies on the injector's default one."""
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "cloudtaser-install-check-",
            "namespace": namespace,
            "labels": {contract.INJECT_LABEL: "true"},
            "annotations": {
                contract.INJECT: "true",
                contract.VAULT_ADDRESS: vault_address,
                contract.VAULT_ROLE: CHECK_ROLE,
                contract.SECRET_PATHS: CHECK_PATH,
                contract.ENV_MAP: "probe=INSTALL_CHECK_PROBE",
            },
        },
        "spec": {
            "containers": [
                {"name": "check", "image": image, "command": [RUNTIME_BINARY, "version"]}
            ],
            "restartPolicy": "Never",
        },
    }
    if vault_address is None:
        del pod["metadata"]["annotations"][contract.VAULT_ADDRESS]
    return pod


def _check_dry_run_pod(
    session: KubeSession,
    namespace: str,
    pod_namespace: str,
    defaults: contract.InjectorDefaults | None,
) -> CheckResult:
    image, args = _inject_args(session, namespace) or ("", [])
    addresses = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--allowed-vault-address"]
    if not image or not addresses:
        return CheckResult("mutation", False, "cannot tell the image or an allowed vault address")
    answer = judge(
        lambda body: api.create(
            session,
            body,
            dry_run=True,
            action=f"dry-run create an opted-in pod in namespace {pod_namespace}",
        ),
        check_pod(pod_namespace, image, None if defaults and defaults.address else addresses[0]),
    )
    if answer.admitted:
        how = " without a vault-address annotation" if defaults and defaults.address else ""
        return CheckResult("mutation", True, f"{answer.reason}{how} (namespace {pod_namespace})")
    hint = (
        ": is the webhook configuration's objectSelector or namespaceSelector changed?"
        if answer.reason.startswith("not mutated")
        else ""
    )
    return CheckResult("mutation", False, f"{answer.reason} (namespace {pod_namespace}){hint}")
