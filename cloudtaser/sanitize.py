"""Text from elsewhere made safe to show: the one place credentials are scrubbed and control
characters escaped.

Two rules, each defined once and used by every module that puts foreign text into a message:

* :func:`scrub_credentials` removes credentials from a library exception's text or a server's
  message before it reaches a :mod:`cloudtaser.errors` message (``kube.errors.api_errors`` and
  ``openbao.OpenBaoClient._raise_for`` / ``_errors_of`` call it). A library may quote the
  request it failed to send (``Illegal header value b'Bearer eyJ…'``), and a hostile server may
  echo our token back; neither must ever reach a plan, stdout, stderr or a log line.
* :func:`printable` escapes C0/C1 control characters (ANSI escape sequences, NUL, bidi
  overrides) and caps the length, so text from a plan file or a server cannot rewrite the
  terminal (title change, screen clear, right-to-left override) or flood it.

The length cap is :func:`clip`, the one truncation of shown text: :func:`printable` and the
rule book's :func:`cloudtaser.plan.rules.shown` (a name, quoted, every non-ASCII character
escaped) both cut with it.

Standard library only: the CLI imports this at error time without pulling in heavy modules.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final

__all__ = [
    "MAX_SHOWN_CHARS",
    "REDACTED",
    "clip",
    "has_control_chars",
    "printable",
    "scrub_credentials",
    "shown",
]

REDACTED: Final = "<redacted>"

#: Default cap on foreign text shown in one message (a server's errors, a library's text).
MAX_SHOWN_CHARS: Final = 1000

# An HTTP authorization scheme followed by its credentials ("Bearer eyJ…", "Basic dXNlcjpw…").
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|negotiate)(\s+|%20)[^\s'\",;)}\]]+")
# A header or key/value carrying a credential: "X-Vault-Token: s.xyz", "token=…", '"jwt": "…"'.
_CREDENTIAL_KEY = re.compile(
    r"(?i)(\b(?:x-vault-token|authorization|proxy-authorization|cookie|set-cookie|"
    r"client_token|accessor|token|jwt|password|id_token|access_token|refresh_token)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s'\",;)}\]]+"
)
# A JWT (header.payload[.signature], base64url; the header always starts with '{"' = eyJ).
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")
# OpenBao / Vault service, batch and recovery tokens (s., b., r., hvs., hvb., hvr.).
_VAULT_TOKEN = re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{20,}")


def scrub_credentials(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every credential replaced by ``<redacted>``.

    Removes the exact ``secrets`` given (e.g. the token the caller holds, stripped and not),
    ``Authorization``-style scheme credentials, credential-named keys and headers, JWT-shaped
    strings and vault-token-shaped strings.
    """
    for secret in secrets:
        if not secret:
            continue
        for variant in {secret, secret.strip()}:
            if len(variant) >= 4:
                text = text.replace(variant, REDACTED)
                text = text.replace(repr(variant)[1:-1], REDACTED)  # escaped form: b'…\n'
    text = _JWT.sub(REDACTED, text)
    text = _VAULT_TOKEN.sub(REDACTED, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _CREDENTIAL_KEY.sub(lambda m: f"{m[1]}{REDACTED}", text)


def _is_control(char: str) -> bool:
    """C0, DEL, C1, and the Unicode format characters that reorder or hide text (bidi
    overrides and isolates, zero-width joiners): category Cc or Cf."""
    return unicodedata.category(char) in {"Cc", "Cf"}


def has_control_chars(text: str, *, allow: str = "") -> bool:
    """True when ``text`` holds a control or format character not in ``allow``."""
    return any(_is_control(c) and c not in allow for c in text)


def clip(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters, with a note of how many were left out (``None``:
    never cut)."""
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters not shown)"


def printable(text: str, *, limit: int | None = MAX_SHOWN_CHARS) -> str:
    """``text`` safe for a terminal line: control and format characters escaped (``\\x1b``,
    ``\\u202e``), newlines and tabs as ``\\n`` / ``\\t``, and at most ``limit`` characters (a
    note says how many were left out)."""
    out: list[str] = []
    for char in text:
        if _is_control(char):
            code = ord(char)
            if char == "\n":
                out.append("\\n")
            elif char == "\t":
                out.append("\\t")
            elif code <= 0xFF:
                out.append(f"\\x{code:02x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return clip("".join(out), limit)


def shown(text: str, *, secrets: Iterable[str | None] = (), limit: int = MAX_SHOWN_CHARS) -> str:
    """Foreign text ready for a message: credentials scrubbed, then :func:`printable`."""
    return printable(scrub_credentials(text, secrets), limit=limit)
