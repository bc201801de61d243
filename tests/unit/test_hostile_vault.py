"""Issue 18, findings 4, 6 and 8: the vault client against a *hostile* server.

A real OpenBao cannot be driven into these answers (a 3 GiB body, an endless chunked body, a
body dripped one byte at a time, redirects to another origin, escape sequences and 200,000
entries in ``errors``), so a small scripted socket server plays the hostile vault here; every
ordinary behaviour of the client is tested against the real ``bao server -dev``.
"""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cloudtaser.config import VaultTarget
from cloudtaser.errors import VaultError, VaultHTTPError, VaultUnreachableError
from cloudtaser.source.openbao import MAX_RESPONSE_BYTES, OpenBaoClient, RetryPolicy

TOKEN = "s.HostileCanaryToken0123456789abcdef"

Handler = Callable[[socket.socket, bytes], None]


class HostileServer:
    """Accepts connections on 127.0.0.1 and hands each request to ``handler``; records what
    was received (to prove what the client sent where)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.address = f"http://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            conn.settimeout(5)
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.received.append(data)
                self.handler(conn, data)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def hostile() -> Iterator[Callable[[Handler], HostileServer]]:
    servers: list[HostileServer] = []

    def make(handler: Handler) -> HostileServer:
        server = HostileServer(handler)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _client(address: str, **retry: float) -> OpenBaoClient:
    policy = RetryPolicy(max_attempts=1, **retry)  # type: ignore[arg-type]
    return OpenBaoClient(VaultTarget(address=address, token=TOKEN, timeout=10.0), retry=policy)


_REDIRECT = (
    "HTTP/1.1 307 X\r\nConnection: close\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
)


def _head(status: int = 200, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Type: application/json\r\n"
    return (head + extra).encode()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- finding 4: bounded memory and time -------------------------------------------------------


def test_declared_huge_body_is_refused_without_reading_it(hostile) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, _req: bytes) -> None:
        conn.sendall(_head(extra=f"Content-Length: {3 * 1024**3}\r\n\r\n") + b"{" + b" " * 65536)
        time.sleep(1)

    server = hostile(handler)
    with _client(server.address) as client, pytest.raises(VaultError, match="larger than 32 MiB"):
        client.read("secret/data/x")


def test_endless_chunked_body_is_cut_at_the_cap(hostile) -> None:  # type: ignore[no-untyped-def]
    chunk = b"a" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    def handler(conn: socket.socket, _req: bytes) -> None:
        conn.sendall(_head(extra="Transfer-Encoding: chunked\r\n\r\n"))
        for _ in range(4 * MAX_RESPONSE_BYTES // len(chunk)):  # never ends before the cap
            conn.sendall(frame)

    server = hostile(handler)
    before = _rss_mib()
    started = time.monotonic()
    with _client(server.address) as client, pytest.raises(VaultError, match="larger than"):
        client.read("secret/data/x")
    assert time.monotonic() - started < 30
    assert _rss_mib() - before < 200  # the cap (32 MiB) plus the join, never gigabytes


def test_dripped_body_hits_the_per_request_deadline(hostile) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, _req: bytes) -> None:
        conn.sendall(_head(extra="Content-Length: 100000\r\n\r\n"))
        for _ in range(100000):
            conn.sendall(b" ")
            time.sleep(0.5)  # every read succeeds well within the socket timeout

    server = hostile(handler)
    started = time.monotonic()
    with (
        _client(server.address, exchange_deadline=2.0) as client,
        pytest.raises(VaultUnreachableError, match="deadline"),
    ):
        client.read("secret/data/x")
    assert time.monotonic() - started < 4.0


def test_command_deadline_bounds_all_requests_of_a_client(hostile) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, _req: bytes) -> None:
        time.sleep(1.2)
        conn.sendall(_head(extra="Content-Length: 2\r\n\r\n") + b"{}")

    server = hostile(handler)
    started = time.monotonic()
    with _client(server.address, command_deadline=2.0) as client:
        client.read("a")  # 1.2 s
        with pytest.raises(VaultUnreachableError, match="per command"):
            client.read("b")  # would end at 2.4 s
    assert time.monotonic() - started < 3.0


# --- finding 6: the token stays with its origin -----------------------------------------------


@pytest.mark.parametrize("allow", [False, True])
def test_redirect_to_another_origin_is_not_followed_with_the_token(hostile, allow: bool) -> None:  # type: ignore[no-untyped-def]
    def ok(conn: socket.socket, _req: bytes) -> None:
        conn.sendall(_head(extra="Content-Length: 11\r\n\r\n") + b'{"data":{}}')

    elsewhere = hostile(ok)  # another port on the same host: another origin

    def redirect(conn: socket.socket, _req: bytes) -> None:
        location = f"{elsewhere.address}/v1/secret/data/x"
        conn.sendall(_REDIRECT.format(location=location).encode())

    server = hostile(redirect)
    target = VaultTarget(
        address=server.address, token=TOKEN, timeout=5.0, cross_origin_redirects=allow
    )
    with OpenBaoClient(target, retry=RetryPolicy(max_attempts=1)) as client:
        if allow:
            assert client.read("secret/data/x") == {}
            assert TOKEN.encode() in elsewhere.received[0]
        else:
            with pytest.raises(VaultError, match="another origin") as caught:
                client.read("secret/data/x")
            assert TOKEN not in str(caught.value)
            assert elsewhere.received == []


def test_same_origin_redirect_is_still_followed(hostile) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, req: bytes) -> None:
        if b"/v1/moved" in req:
            conn.sendall(_head(extra="Content-Length: 11\r\n\r\n") + b'{"data":{}}')
        else:
            conn.sendall(_REDIRECT.format(location="/v1/moved").encode())

    server = hostile(handler)
    with _client(server.address) as client:
        assert client.read("secret/data/x") == {}


# --- finding 8: server text reaches the terminal escaped and capped ---------------------------


def _errors_server(hostile, errors: list[str]) -> HostileServer:  # type: ignore[no-untyped-def]
    body = json.dumps({"errors": errors}).encode()

    def handler(conn: socket.socket, _req: bytes) -> None:
        conn.sendall(_head(400, f"Content-Length: {len(body)}\r\n\r\n") + body)

    return hostile(handler)  # type: ignore[no-any-return]


def test_escape_sequences_in_server_errors_are_escaped(hostile) -> None:  # type: ignore[no-untyped-def]
    server = _errors_server(
        hostile, ["\x1b]0;pwned\x07\x1b[2J\u202eevil", f"echo X-Vault-Token: {TOKEN}"]
    )
    with _client(server.address) as client, pytest.raises(VaultHTTPError) as caught:
        client.read("secret/data/x")
    text = str(caught.value) + " ".join(caught.value.errors)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "\x07" not in text
    assert "\\x1b]0;pwned" in text
    assert TOKEN not in text


def test_two_hundred_thousand_errors_become_one_short_line(hostile) -> None:  # type: ignore[no-untyped-def]
    server = _errors_server(hostile, ["permission denied \x1b[2J"] * 200_000)
    with _client(server.address) as client, pytest.raises(VaultHTTPError) as caught:
        client.read("secret/data/x")
    message = str(caught.value)
    assert len(message) < 5000
    assert "\n" not in message
    assert "199990 more errors not shown" in message


def test_rate_limit_message_counts_the_attempts_really_made(hostile) -> None:  # type: ignore[no-untyped-def]
    body = b'{"errors": ["request path \\"x\\": rate limit quota exceeded"]}'

    def handler(conn: socket.socket, _req: bytes) -> None:
        conn.sendall(_head(429, f"Retry-After: 1\r\nContent-Length: {len(body)}\r\n\r\n") + body)

    server = hostile(handler)
    policy = RetryPolicy(max_rate_limited_attempts=60, deadline=2.5, backoff_base=0.01)
    target = VaultTarget(address=server.address, token=TOKEN, timeout=5.0)
    with OpenBaoClient(target, retry=policy) as client, pytest.raises(VaultHTTPError) as caught:
        client.read("x")
    sent = len(server.received)
    assert 1 < sent < 60
    assert f"after {sent} attempts" in str(caught.value)
