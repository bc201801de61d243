"""The one exception tree of cloudtaser.

::

    CloudtaserError                  base; every error the library raises on purpose
    ├── PlanError                    a plan file is unreadable, malformed or unsafe
    ├── ConfigError                  flags / environment / kubeconfig resolve to nothing usable
    ├── ClusterError                 the Kubernetes API refused or failed a request
    │   ├── ClusterUnreachableError  no connection, TLS failure, timeout
    │   ├── ClusterAuthError         401 / 403 from the API server
    │   │   └── ClusterForbiddenError  403: authenticated, but RBAC denies the verb
    │   ├── ClusterNotFoundError     404: the object (or its namespace) does not exist
    │   ├── ClusterConflictError     409: resourceVersion precondition failed / already exists
    │   └── ClusterInvalidError      400 / 422: the server refused the request as invalid
    ├── VaultError                   OpenBao / Vault problems
    │   ├── VaultUnreachableError    no connection, TLS failure, timeout
    │   └── VaultHTTPError           the server answered with an error status
    │       ├── VaultAuthError       401 / 403: bad token or missing capability
    │       └── VaultSealedError     503: sealed or in maintenance
    ├── RegistryError                an image registry refused or failed a lookup
    ├── LockError                    another run holds the plan's lock
    └── OperationError               a step ran but did not succeed (rollout failed, drift, ...)

Rules every raiser follows: a message says what failed, where (namespace/workload/path) and
what to do next; no secret value and no token ever appears in a message or a repr. Exceptions
from ``requests`` and lightkube are translated in exactly one place each (``openbao`` and
``kube``), always with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CloudtaserError",
    "ClusterAuthError",
    "ClusterConflictError",
    "ClusterError",
    "ClusterForbiddenError",
    "ClusterInvalidError",
    "ClusterNotFoundError",
    "ClusterUnreachableError",
    "ConfigError",
    "LockError",
    "OperationError",
    "PlanError",
    "RegistryError",
    "VaultAuthError",
    "VaultError",
    "VaultHTTPError",
    "VaultSealedError",
    "VaultUnreachableError",
]


class CloudtaserError(Exception):
    """Base class of every error cloudtaser raises on purpose."""


class PlanError(CloudtaserError):
    """A plan is unreadable, malformed, or unsafe.

    ``source`` names the file (or ``<string>``), ``location`` the JSON path inside it
    (``$.tenants[0].workloads[2].secrets[0].vaultPath``) when known.
    """

    def __init__(self, message: str, *, source: str = "<plan>", location: str | None = None):
        self.source = source
        self.location = location
        self.detail = message
        where = f"{source}: {location}: " if location else f"{source}: "
        super().__init__(where + message)


class ConfigError(CloudtaserError):
    """Flags, environment or kubeconfig do not resolve to a usable configuration."""


class ClusterError(CloudtaserError):
    """The Kubernetes API refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


class ClusterUnreachableError(ClusterError):
    """The API server could not be reached (connection, TLS, timeout)."""


class ClusterAuthError(ClusterError):
    """The API server answered 401 or 403."""


class ClusterForbiddenError(ClusterAuthError):
    """403: the credentials are fine, RBAC does not allow the verb (the message names it)."""


class ClusterNotFoundError(ClusterError):
    """404: the object or its namespace does not exist."""


class ClusterConflictError(ClusterError):
    """409: a precondition (``resourceVersion``) failed, or the object already exists."""


class ClusterInvalidError(ClusterError):
    """400 / 422: the API server refused the request (bad selector, invalid object)."""


class VaultError(CloudtaserError):
    """An OpenBao / Vault problem."""


class VaultUnreachableError(VaultError):
    """The vault could not be reached (connection, TLS, timeout)."""


class VaultHTTPError(VaultError):
    """The vault answered with an error status.

    Carries the HTTP ``status``, the API ``path`` (without ``/v1/``), and the server's
    ``errors`` list. None of these ever contains the token.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        path: str,
        errors: Sequence[str] = (),
        method: str = "GET",
    ):
        self.status = status
        self.path = path
        self.errors = tuple(errors)
        self.method = method
        super().__init__(message)


class VaultAuthError(VaultHTTPError):
    """401/403: the token is invalid or lacks a capability."""


class VaultSealedError(VaultHTTPError):
    """503: the vault is sealed or in maintenance mode."""


class RegistryError(CloudtaserError):
    """An image registry lookup failed: unreachable, refused, not found, or a malformed answer
    (the message names the image; never a credential or token)."""


class LockError(CloudtaserError):
    """Another cloudtaser run holds the lock on this plan."""


class OperationError(CloudtaserError):
    """A step ran but did not succeed (rollout failed, drift detected, ...)."""
