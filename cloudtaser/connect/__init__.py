"""``target connect``: let one cluster's ServiceAccount JWTs log in to the vault.

Two auth methods (``ConnectOptions.auth_method``, the plan's ``metadata.authMethod``):
``jwt`` (the vault checks tokens offline against the cluster's public signing keys, read from
the API server's ``/.well-known/openid-configuration`` and ``/openid/v1/jwks``; one jwt mount
per cluster, its record naming the cluster; nothing in the cluster but the self-test's
ServiceAccount) and ``kubernetes`` (below: a TokenReview call per login).

Cluster side (lightkube, through a :class:`~cloudtaser.target.kube.session.KubeSession`):

* a dedicated namespace (default ``cloudtaser-system``) with the token-reviewer ServiceAccount
  (``cloudtaser-token-reviewer``) and a self-test ServiceAccount (``cloudtaser-connect-selftest``);
* a ClusterRoleBinding ``cloudtaser-token-reviewer-<namespace>`` to ``system:auth-delegator``,
  checked afterwards with a SubjectAccessReview (``can the reviewer create tokenreviews?``);
* a reviewer token from the TokenRequest API with a bounded lifetime, requested only when the
  vault actually needs a new one;
* the API host (kubeconfig ``server``, overridable because the *vault* must reach it) and CA
  (kubeconfig, else the ``kube-root-ca.crt`` ConfigMap), the optional issuer, and the cluster's
  identity: the UID of the ``kube-system`` namespace.

Vault side (:class:`~cloudtaser.source.openbao.OpenBaoClient`): enable the Kubernetes auth
method at the chosen mount (one mount per cluster) and write ``auth/<mount>/config`` with
``kubernetes_host``,
``kubernetes_ca_cert``, ``token_reviewer_jwt`` and ``disable_local_ca_jwt=true``.

Idempotency vs rotation. OpenBao never returns ``token_reviewer_jwt`` and *clears* it when the
config is written without one, so the token cannot be compared and every config write must carry
one. connect therefore records, in the auth mount's **description** (visible in
``bao auth list``; no credential), the cluster identity, the reviewer and the reviewer token's
expiry. A run compares the config read back plus that record, and writes (with a fresh token)
only when a field differs, the reviewer changed, ``--rotate-reviewer-token`` is given, or less
than half of the requested lifetime is left. Otherwise nothing is requested or written.
Rotation = re-run connect (e.g. from a scheduled CI job) more often than every lifetime/2.

The record also protects clusters from each other: a mount that is connected to another cluster
(different ``kube-system`` UID) or that cloudtaser did not configure is never overwritten
without ``force``.

Self-test: a role ``cloudtaser_connect_selftest`` (kept; the underscore keeps it out of
apply-plan's ``cloudtaser-<plan>-<tenant>`` namespace) bound to the self-test ServiceAccount
only, with no policies and batch tokens of 60 s, and a real login with a fresh short-lived
token of that ServiceAccount. OpenBao answers every failed TokenReview with a bare
"permission denied", so the reason is found by elimination from this side: the role binding
and audience (from the login error text), a SubjectAccessReview for the reviewer, the recorded
reviewer token expiry, and a TLS probe of ``kubernetes_host`` with the configured CA.

Air-gap split: :func:`export_connection` (cluster only) returns a :class:`ClusterConnection`
that :func:`write_connection_file` saves; :func:`import_connection` (vault only) configures the
mount from it. Without an explicit opt-in the file holds no credential: the vault then uses
each client's own JWT as the reviewer, which needs every workload ServiceAccount bound to
``system:auth-delegator`` (:func:`export_connection` binds the plan's ServiceAccounts when
given them) and tokens valid for the API server's audience.

Pure library: no printing; progress goes to an optional callback. Tokens never appear in a
message, a repr or the progress stream.
"""

from __future__ import annotations

from cloudtaser.connect.file import (
    read_connection_file,
    write_connection_file,
)
from cloudtaser.connect.flow import (
    check_connection,
    connect,
    export_connection,
    import_connection,
)
from cloudtaser.connect.model import (
    AUTH_DELEGATOR,
    DEFAULT_REVIEWER,
    DEFAULT_REVIEWER_TTL,
    SELFTEST_ROLE,
    SELFTEST_SERVICE_ACCOUNT,
    AuthMethod,
    ClusterConnection,
    ConnectOptions,
    ConnectResult,
    ReviewerMode,
    SelfTest,
    Step,
    jwk_public_pem,
    jwks_public_pems,
    plan_auth_method,
    plan_selection,
    validate_auth_mount,
)

__all__ = [
    "AUTH_DELEGATOR",
    "DEFAULT_REVIEWER",
    "DEFAULT_REVIEWER_TTL",
    "SELFTEST_ROLE",
    "SELFTEST_SERVICE_ACCOUNT",
    "AuthMethod",
    "ClusterConnection",
    "ConnectOptions",
    "ConnectResult",
    "ReviewerMode",
    "SelfTest",
    "Step",
    "check_connection",
    "connect",
    "export_connection",
    "import_connection",
    "jwk_public_pem",
    "jwks_public_pems",
    "plan_auth_method",
    "plan_selection",
    "read_connection_file",
    "validate_auth_mount",
    "write_connection_file",
]
