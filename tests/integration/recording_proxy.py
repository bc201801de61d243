"""A real HTTP proxy that records every connection, and a TCP relay (test helpers).

``RecordingProxy`` is what an enterprise app's ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``
points at: ``CONNECT host:port`` tunnels and absolute-URI requests (``GET http://h:p/path``)
are forwarded for real, and each connection's first request line is recorded, so a test can
assert who went through it. ``TcpRelay`` exposes a loopback server (the dev OpenBao) on another
address of this machine: Go never proxies loopback addresses, so a vault on ``127.0.0.1`` could
not show whether a client honours the proxy variables.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import subprocess
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 << 10


@dataclass(frozen=True)
class Seen:
    """One connection to the proxy: its first request line (method and target) and the peer."""

    method: str
    target: str
    peer: str


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes."""

    def copy(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=copy, args=(b, a), daemon=True)
    t.start()
    copy(a, b)
    t.join(timeout=30)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class RecordingProxy:
    """An HTTP proxy on ``127.0.0.1:<free port>``; ``seen`` lists every connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request, f"{self.client_address[0]}:{self.client_address[1]}")

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, conn: socket.socket, peer: str) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        target = rest.rsplit(" ", 1)[0]
        with self._lock:
            self._seen.append(Seen(method, target, peer))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            try:
                up = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            except (OSError, ValueError):
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                return
            with up:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _, _, early = head.partition(b"\r\n\r\n")
                if early:
                    up.sendall(early)
                _pipe(conn, up)
            return
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            up = socket.create_connection((url.hostname, url.port or 80), timeout=10)
        except OSError:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with up:
            origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
            _, _, others = head.partition(b"\r\n")
            up.sendall(f"{method} {origin} HTTP/1.0\r\n".encode("latin-1") + others)
            _pipe(conn, up)


class TcpRelay:
    """Listens on ``host:<free port>`` and forwards every connection to ``target``."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        relay_target = target

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError), socket.create_connection(relay_target, 10) as up:
                    _pipe(self.request, up)

        self._server = _Server((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def host_ip() -> str:
    """An IPv4 address of this machine that is not loopback (the one of the default route, else
    the first global one ``ip`` lists)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source
        ip = str(s.getsockname()[0])
        if not ip.startswith("127.") and ip != "0.0.0.0":
            return ip
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    raise RuntimeError("this machine has no non-loopback IPv4 address for the relay")
