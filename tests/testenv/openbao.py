"""A real OpenBao dev server (``bao server -dev``) with a file audit device.

Dev mode keeps everything in memory: ``restart()`` (and ``stop()`` + ``start()``) gives a fresh,
empty vault on the same address with the same root token; mounts, policies, auth methods and
secrets written before are gone. The audit log file survives (it is appended to), so audit marks
taken before a restart stay valid.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from .process import ManagedProcess, TestbedError, free_port, wait_until

AUDIT_DEVICE = "testbed"


CLI_AGENT = "cloudtaser/"
"""User-Agent prefix of every request the cloudtaser CLI and library send to a vault."""


def user_agent(entry: dict[str, Any]) -> str:
    """The audited User-Agent of one audit entry ("" when none was sent or audited)."""
    headers = (entry.get("request") or {}).get("headers") or {}
    value = headers.get("user-agent") or [""]
    return value[0] if isinstance(value, list) else str(value)


class BaoCommandError(TestbedError):
    """``bao …`` exited non-zero. Carries the result; the message names only the subcommand."""

    def __init__(self, result: subprocess.CompletedProcess[str], what: str, stderr: str) -> None:
        super().__init__(f"`bao {what}` exited with {result.returncode}: {stderr.strip()[-2000:]}")
        self.result = result


class BaoServer:
    """``bao server -dev`` on ``127.0.0.1:<free port>`` with a random root token.

    Attributes: ``address`` (``http://127.0.0.1:PORT``), ``port``, ``token``, ``log_path``,
    ``audit_path``, ``binary``. The root token is passed through the environment (not argv) and
    masked in every log tail this class reports.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binary: str,
        port: int | None = None,
        token: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = workdir
        self.binary = binary
        self.port = port or free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.token = token or f"root-{secrets.token_hex(16)}"
        self.log_path = workdir / "bao.log"
        self.audit_path = workdir / "audit.log"
        self.config_path = workdir / "bao.hcl"
        self.start_timeout = start_timeout
        self._session = requests.Session()
        self._proc: ManagedProcess | None = None

    def __repr__(self) -> str:  # never show the token
        return f"BaoServer(address={self.address!r}, running={self.running})"

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start the dev server and wait until ``/v1/sys/health`` says active and unsealed."""
        if self.running:
            raise TestbedError(f"OpenBao at {self.address} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.audit_path.touch()
        self.config_path.write_text(
            f'audit "file" "{AUDIT_DEVICE}" {{\n'
            f"  options {{\n    file_path = {json.dumps(str(self.audit_path))}\n  }}\n}}\n"
        )
        env = {
            **os.environ,
            "BAO_DEV_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            "BAO_DEV_ROOT_TOKEN_ID": self.token,
            "HOME": str(self.workdir),  # no token helper file in the real home
        }
        for var in ("BAO_ADDR", "BAO_TOKEN", "VAULT_ADDR", "VAULT_TOKEN"):
            env.pop(var, None)
        self._proc = ManagedProcess(
            "openbao",
            [
                self.binary,
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-config={self.config_path}",
            ],
            self.log_path,
            env=env,
            cwd=self.workdir,
            redact=(self.token,),
        )
        self._proc.start()
        proc = self._proc
        try:
            wait_until(
                self._healthy,
                timeout=self.start_timeout,
                what=f"OpenBao dev server at {self.address}",
                abort=proc.exit_reason,
                diagnostics=proc.report,
            )
            # Audit each request's User-Agent (not HMAC'd), so a test can tell cloudtaser's own
            # requests from those of anything else still talking to this shared server (a wrapper
            # in a pod left by an earlier test renews its token on its own schedule).
            self.api_ok("PUT", "sys/config/auditing/request-headers/user-agent", {"hmac": False})
        except BaseException:
            proc.stop()
            raise

    def _healthy(self) -> bool:
        r = self._session.get(f"{self.address}/v1/sys/health", timeout=2)
        return r.status_code == 200 and r.json().get("sealed") is False

    def stop(self) -> None:
        """Stop the server (process group SIGTERM, SIGKILL after 10 s). Idempotent."""
        if self._proc is not None:
            self._proc.stop()

    def restart(self) -> None:
        """Stop and start on the same port with the same token. Dev mode: all data is lost."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        return self._proc.report(lines) if self._proc else "<OpenBao never started>"

    # -- clients -----------------------------------------------------------------------------

    def env(self, token: str | None = None) -> dict[str, str]:
        """Environment for a vault client pointing at this server (``BAO_*`` and ``VAULT_*``)."""
        tok = token or self.token
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env.update(BAO_ADDR=self.address, BAO_TOKEN=tok, VAULT_ADDR=self.address, VAULT_TOKEN=tok)
        env["HOME"] = str(self.workdir)  # keep the bao token helper away from the real home
        return env

    def bao(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``bao`` CLI against this server (``BAO_ADDR``/``BAO_TOKEN`` set).

        With ``check=True`` a non-zero exit raises ``BaoCommandError`` whose message names only
        the first two arguments (never ``key=value`` pairs, which may hold secret values).
        """
        result = subprocess.run(
            [self.binary, *args],
            env=self.env(token),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            what = " ".join(a for a in args[:2] if "=" not in a)
            raise BaoCommandError(result, what, result.stderr.replace(self.token, "<redacted>"))
        return result

    def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> requests.Response:
        """Raw HTTP call for test setup: ``api("POST", "sys/mounts/kv-x", json={...})``.

        ``path`` is relative to ``/v1/``. Uses the root token unless ``token`` is given
        (``token=""`` sends no token). Does not raise on HTTP errors.
        """
        hdrs = dict(headers or {})
        tok = self.token if token is None else token
        if tok:
            hdrs["X-Vault-Token"] = tok
        return self._session.request(
            method.upper(),
            f"{self.address}/v1/{path.lstrip('/')}",
            json=json,
            headers=hdrs,
            timeout=timeout,
        )

    def api_ok(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        """``api`` with the root token that raises on a non-2xx status; returns the JSON body."""
        r = self.api(method, path, json=json)
        if not r.ok:
            raise TestbedError(f"OpenBao {method.upper()} /v1/{path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else {}

    # -- setup helpers -----------------------------------------------------------------------

    def enable_kv2(self, mount: str) -> str:
        """Enable a KV v2 secrets engine at ``mount`` and return the mount name."""
        self.api_ok("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})
        return mount

    def disable_mount(self, mount: str) -> None:
        self.api("DELETE", f"sys/mounts/{mount}")

    # -- audit -------------------------------------------------------------------------------

    def audit_mark(self) -> int:
        """A position in the audit log; pass it to ``audit_since``/``requests_since``."""
        try:
            return self.audit_path.stat().st_size
        except FileNotFoundError:
            return 0

    def audit_since(self, mark: int, *, client: str | None = None) -> list[dict[str, Any]]:
        """Every JSON audit entry (requests and responses) written after ``mark``.

        The file device writes synchronously before the HTTP response goes out, so entries for
        every call that has returned are already in the file. Values are HMAC'd (no raw log).
        ``client`` keeps only entries whose audited User-Agent starts with it (``CLI_AGENT``:
        cloudtaser's own requests): the session server is shared, and a wrapper left running by
        an earlier test may log in or renew at any moment.
        """
        with self.audit_path.open("rb") as fh:
            fh.seek(mark)
            data = fh.read()
        # a caller polling while the server writes (test_vault_faults) can catch the last
        # entry half written: only complete lines count, the rest is read next time
        data = data[: data.rfind(b"\n") + 1]
        entries = []
        for raw in data.splitlines():
            line = raw.strip()
            if line:
                entries.append(json.loads(line))
        if client is not None:
            entries = [e for e in entries if user_agent(e).startswith(client)]
        return entries

    def requests_since(self, mark: int, *, client: str | None = None) -> list[dict[str, Any]]:
        """Only ``type == "request"`` entries after ``mark`` (``client``: see ``audit_since``)."""
        return [e for e in self.audit_since(mark, client=client) if e.get("type") == "request"]

    def request_ops_since(self, mark: int, *, client: str | None = None) -> list[tuple[str, str]]:
        """``(operation, path)`` of each request after ``mark``, e.g. ``("read", "kv/data/a")``."""
        return [
            (e["request"].get("operation", ""), e["request"].get("path", ""))
            for e in self.requests_since(mark, client=client)
        ]

    def writes_since(self, mark: int, *, client: str | None = None) -> list[tuple[str, str]]:
        """Requests after ``mark`` whose operation is create, update, delete or patch."""
        return [
            (op, path)
            for op, path in self.request_ops_since(mark, client=client)
            if op in {"create", "update", "delete", "patch"}
        ]
