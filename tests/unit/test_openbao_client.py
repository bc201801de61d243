"""The OpenBao client's own logic: secrecy of the token, error translation, retry rules.

Most behaviour is tested against the real server in tests/integration. Two tests here use a
minimal stand-in HTTP server, because a real dev server cannot be driven into the situation:
a ``307`` redirect (only an HA standby that cannot forward sends it) and ``Retry-After`` on a
``503`` (OpenBao sends Retry-After only with 429). Each stand-in does exactly one thing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudtaser.config import VaultTarget
from cloudtaser.errors import (
    VaultAuthError,
    VaultHTTPError,
    VaultSealedError,
    VaultUnreachableError,
)
from cloudtaser.source.openbao import OpenBaoClient, Reply, RetryPolicy

CANARY_TOKEN = "s.CANARY-token-never-shown-42"


def _client(address: str = "http://127.0.0.1:9", **kwargs: Any) -> OpenBaoClient:
    return OpenBaoClient(VaultTarget(address=address, token=CANARY_TOKEN, timeout=3.0), **kwargs)


def test_repr_never_shows_the_token() -> None:
    client = _client()
    assert CANARY_TOKEN not in repr(client)
    assert "<set>" in repr(client)


def test_unreachable_error_is_plain_and_tokenless() -> None:
    client = _client(retry=RetryPolicy(max_attempts=2, backoff_base=0.01))
    with pytest.raises(VaultUnreachableError) as info:
        client.read("sys/policies/acl/x")
    assert "cannot reach the vault at http://127.0.0.1:9" in str(info.value)
    assert CANARY_TOKEN not in str(info.value)
    assert client.requests_sent == 2  # connection refused: nothing sent, so retried


@pytest.mark.parametrize(
    ("status", "errors", "kind", "words"),
    [
        (
            403,
            ["1 error occurred:\n\t* permission denied\n\n"],
            VaultAuthError,
            "permission denied",
        ),
        (503, ["Vault is sealed"], VaultSealedError, "is sealed"),
        (503, [], VaultSealedError, "unavailable"),
        (400, ["bad"], VaultHTTPError, "failed (HTTP 400): bad"),
        (429, ["rate limit quota exceeded"], VaultHTTPError, "rate-limit"),
    ],
)
def test_error_translation(status: int, errors: list[str], kind: type, words: str) -> None:
    client = _client()
    with pytest.raises(kind) as info:
        client._raise_for(
            Reply(status=status, body={"errors": errors}, headers={}),
            method="POST",
            path="sys/policies/acl/p",
        )
    error = info.value
    assert words in str(error)
    assert error.status == status
    assert error.path == "sys/policies/acl/p"
    assert error.method == "POST"
    assert "\n" not in str(error)
    assert CANARY_TOKEN not in str(error)


def test_retry_after_is_honoured_and_backoff_is_capped() -> None:
    policy = RetryPolicy(backoff_base=0.1, backoff_cap=2.0, retry_after_cap=5.0)
    assert 3.0 <= policy.delay(1, 3.0) <= 3.1
    assert 5.0 <= policy.delay(1, 120.0) <= 5.1
    # Retry-After: 0 does not mean "hammer": the jittered back-off (half to full ceiling) is added
    assert all(0.8 <= policy.delay(5, 0.0) <= 1.6 for _ in range(200))
    assert all(policy.delay(n, None) <= 2.0 for n in range(1, 20))
    assert 0.05 <= policy.delay(1, None) <= 0.1


# --- minimal stand-ins for what a real dev server cannot produce --------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str], bytes]]
    script: list[tuple[int, dict[str, str], Any]]

    def log_message(self, *_args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        status, headers, payload = self.script.pop(0)
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _handle  # noqa: N815


@pytest.fixture
def stand_in() -> Iterator[type[_Recorder]]:
    handler = type("Handler", (_Recorder,), {"seen": [], "script": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.address = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_307_from_a_standby_is_followed_keeping_method_and_body(stand_in: Any) -> None:
    # A real HA standby that cannot forward answers 307; a dev server is never a standby.
    stand_in.script = [
        (307, {"Location": "/v1/sys/policies/acl/p?from=standby"}, None),
        (204, {}, None),
    ]
    client = _client(stand_in.address)
    client.policy_write("p", 'path "kv/data/x" {}')
    (m1, p1, _h1, b1), (m2, p2, h2, b2) = stand_in.seen
    assert (m1, m2) == ("POST", "POST")
    assert p1 == "/v1/sys/policies/acl/p"
    assert p2 == "/v1/sys/policies/acl/p?from=standby"
    assert b1 == b2
    assert json.loads(b2) == {"policy": 'path "kv/data/x" {}'}
    assert h2["X-Vault-Request"] == "true"


def test_retry_after_on_503_is_honoured_for_idempotent_reads(stand_in: Any) -> None:
    # OpenBao sends Retry-After only with 429 quotas; a proxy in front of it may send it on 503.
    stand_in.script = [
        (503, {"Retry-After": "1"}, {"errors": ["maintenance"]}),
        (200, {}, {"data": {"policy": "# hcl"}}),
    ]
    client = _client(stand_in.address, retry=RetryPolicy(backoff_base=0.01))
    started = time.monotonic()
    assert client.policy_read("p") == "# hcl"
    assert time.monotonic() - started >= 1.0
    assert len(stand_in.seen) == 2


def test_5xx_on_a_login_is_not_retried(stand_in: Any) -> None:
    # A login creates a token: repeating it after a 500 could mint a second one.
    stand_in.script = [(500, {}, {"errors": ["internal"]})]
    client = _client(stand_in.address, retry=RetryPolicy(backoff_base=0.01))
    with pytest.raises(VaultHTTPError) as info:
        client.login_kubernetes("kubernetes", "r", "jwt-canary")
    assert info.value.status == 500
    assert "jwt-canary" not in str(info.value)
    assert len(stand_in.seen) == 1
