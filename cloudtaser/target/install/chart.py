"""The Helm chart of the injector (``charts/cloudtaser-runtime``), seen from install's side.

The chart renders the objects of :func:`cloudtaser.target.install.manifests.build_objects`
(``tests/integration/test_helm_chart.py`` runs the real ``helm template`` over a matrix of
settings and compares every object with ``target install --print``). Two things belong to
install rather than to the chart, so that each rule exists once:

* :func:`helm_values`: the chart's values for validated :class:`InstallOptions`
  (``target install --print-helm-values``): install's own validation and normalisation
  (addresses, the ``--default-*`` flags, mirrors) apply to a chart install too;
* :data:`ARGOCD_IGNORE_DIFFERENCES`: the Argo CD ``ignoreDifferences`` entry for the one field
  the injector writes itself, the webhook's ``caBundle`` (``--print-argocd-ignore``).

What Helm changes, and why ``--check`` and ``uninstall`` still behave: a chart-installed object
carries ``app.kubernetes.io/managed-by: Helm`` (Helm's ownership label) instead of
``cloudtaser``; ``--check`` finds the injector by its fixed names only, and ``target uninstall``
leaves every object without install's three labels alone (``helm uninstall`` removes them).
No cluster access here.
"""

from __future__ import annotations

from typing import Any, Final

from cloudtaser.target.install.manifests import NAME, InstallOptions

__all__ = [
    "ARGOCD_IGNORE_DIFFERENCES",
    "CA_BUNDLE_POINTER",
    "CHART_NAME",
    "HELM_MANAGED_BY",
    "helm_values",
]

#: The chart's name (``charts/<name>/Chart.yaml``) and OCI repository name.
CHART_NAME: Final = "cloudtaser-runtime"
#: The ``app.kubernetes.io/managed-by`` value Helm gives every object of a release.
HELM_MANAGED_BY: Final = "Helm"
#: The injector's one webhook is the configuration's first (and only) entry.
CA_BUNDLE_POINTER: Final = "/webhooks/0/clientConfig/caBundle"
#: The Argo CD Application ``spec.ignoreDifferences`` entry for the self-published caBundle
#: (and nothing else of the object); ``RespectIgnoreDifferences=true`` keeps a sync from
#: applying it too.
ARGOCD_IGNORE_DIFFERENCES: Final = {
    "group": "admissionregistration.k8s.io",
    "kind": "MutatingWebhookConfiguration",
    "name": NAME,
    "jsonPointers": [CA_BUNDLE_POINTER],
}


def helm_values(opts: InstallOptions) -> dict[str, Any]:
    """The chart's values for ``opts`` (validated: :meth:`InstallOptions.validated`); the
    namespace is not a value, it is the release namespace (``helm install -n``)."""
    return {
        "image": opts.image,
        "allowedVaultAddresses": list(opts.allowed_vault_addresses),
        "audience": opts.audience,
        "mirrors": [{"registry": r, "mirror": m} for r, m in opts.mirrors],
        "readPullSecrets": opts.read_pull_secrets,
        "webhookUrl": opts.webhook_url or "",
        "kubeApi": opts.kube_api or "",
        "replicas": opts.replicas,
        "timeoutSeconds": opts.timeout_seconds,
        "certValidity": opts.cert_validity or "",
        "defaults": {
            "vaultAddress": opts.defaults.address or "",
            "authMount": opts.defaults.auth_mount or "",
            "authMethod": opts.defaults.auth_method or "",
            "vaultNamespace": opts.defaults.namespace or "",
        },
        "jwtTokenExpiration": opts.jwt_token_expiration or 0,
    }
