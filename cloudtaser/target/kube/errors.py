"""The one place where lightkube / httpx2 exceptions become cloudtaser errors.

Every call to the API server runs inside :func:`api_errors`, which names the action in the
message and raises the typed error of :mod:`cloudtaser.errors` (``raise ... from exc``), so no
caller looks at a status code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx2
from lightkube import ApiError

from cloudtaser.errors import (
    ClusterAuthError,
    ClusterConflictError,
    ClusterError,
    ClusterForbiddenError,
    ClusterInvalidError,
    ClusterNotFoundError,
    ClusterUnreachableError,
)
from cloudtaser.sanitize import shown

__all__ = ["api_errors"]

_BY_STATUS: dict[int, type[ClusterError]] = {
    400: ClusterInvalidError,
    404: ClusterNotFoundError,
    409: ClusterConflictError,
    422: ClusterInvalidError,
}


@contextlib.contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Translate lightkube / httpx2 failures of ``action`` (e.g. "list deployments in ns x").

    401 → :class:`ClusterAuthError` (credentials), 403 → :class:`ClusterForbiddenError`
    naming the missing permission, 404 → :class:`ClusterNotFoundError`, 409 →
    :class:`ClusterConflictError`, 400/422 → :class:`ClusterInvalidError`, other statuses →
    :class:`ClusterError` with ``status``, transport failures →
    :class:`ClusterUnreachableError`. Callers catch these types; none looks at a status code.
    """
    try:
        yield
    except ApiError as exc:
        code = getattr(exc.status, "code", None) or exc.response.status_code
        reason = shown(str(getattr(exc.status, "message", None) or code))
        if code == 401:
            raise ClusterAuthError(
                f"cannot {action}: the API server rejected the credentials (401); refresh the "
                "kubeconfig's token or certificate",
                status=401,
            ) from exc
        if code == 403:
            raise ClusterForbiddenError(
                f"cannot {action}: permission denied (403): {reason}", status=403
            ) from exc
        typed = _BY_STATUS.get(code, ClusterError)
        raise typed(f"cannot {action}: {reason} ({code})", status=code) from exc
    except httpx2.TimeoutException as exc:
        raise ClusterUnreachableError(f"cannot {action}: the API server timed out") from exc
    except httpx2.TransportError as exc:
        # The library may quote the request it could not send ("Illegal header value
        # b'Bearer eyJ…'"): never copy its text without scrubbing credentials.
        detail = shown(str(exc)) or type(exc).__name__
        raise ClusterUnreachableError(
            f"cannot {action}: cannot reach the API server ({detail})"
        ) from exc
