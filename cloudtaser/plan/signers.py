"""Allowed-signers files, in the format of ``ssh-keygen -Y verify -f`` (ssh-keygen(1),
"ALLOWED SIGNERS").

One signer per line, blank lines and ``#`` comments ignored::

    principals [options] keytype base64-key [comment]

- ``principals``: comma-separated patterns (``*`` and ``?`` wildcards, ``!`` negates), the
  whole field may be double-quoted;
- ``options`` (comma-separated, names case-insensitive): ``cert-authority``,
  ``namespaces="pattern,..."``, ``valid-after="TIME"``, ``valid-before="TIME"`` with TIME
  ``YYYYMMDD[HHMM[SS]]`` in local time, or UTC with a trailing ``Z``.

A ``cert-authority`` line trusts certificates signed by that key; cloudtaser approvals are
signed with plain keys, so such a line never matches one (as with ``ssh-keygen``). A line
that cannot be parsed makes the whole file unusable (:class:`ConfigError` naming the line):
``ssh-keygen`` fails on it too, and a typo must never silently drop a signer's limits.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cloudtaser.errors import ConfigError
from cloudtaser.plan.sshsig import PublicKey

__all__ = [
    "MAX_FILE_BYTES",
    "AllowedSigner",
    "find_problem",
    "load_allowed_signers",
    "match_pattern_list",
    "parse",
]

MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_TIME: Final = re.compile(r"^(\d{8})(\d{4})?(\d{2})?(Z?)$")
_KEY_TYPES: Final = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+|"
    r"[a-z0-9.-]+-cert-v01@openssh\.com)$"
)


@dataclass(frozen=True)
class AllowedSigner:
    """One line of an allowed-signers file."""

    line: int
    principals: str
    key_type: str
    key: PublicKey | None
    namespaces: str | None = None
    valid_after: float | None = None
    valid_before: float | None = None
    cert_authority: bool = False

    def problem(self, *, identity: str, key: PublicKey, namespace: str, now: float) -> str | None:
        """Why this line does not allow ``key`` to sign as ``identity`` in ``namespace`` at
        ``now``, or None. ``"principal"`` and ``"key"`` mean the line is about someone else."""
        if match_pattern_list(identity, self.principals) != 1:
            return "principal"
        if self.cert_authority or self.key is None or self.key != key:
            return "key"
        if self.namespaces is not None and match_pattern_list(namespace, self.namespaces) != 1:
            return f"line {self.line} does not allow namespace {namespace!r}"
        if self.valid_after is not None and now < self.valid_after:
            return f"line {self.line}: the key is not valid yet (valid-after)"
        if self.valid_before is not None and now > self.valid_before:
            return f"line {self.line}: the key has expired (valid-before)"
        return None


def _pattern(text: str) -> re.Pattern[str]:
    parts = ["." if c == "?" else ".*" if c == "*" else re.escape(c) for c in text]
    return re.compile("".join(parts), re.DOTALL)


def match_pattern_list(value: str, patterns: str) -> int:
    """OpenSSH ``match_pattern_list``: 1 when a pattern matches, -1 when a negated one does
    (which wins), 0 when none does."""
    result = 0
    for raw in patterns.split(","):
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        if pattern and _pattern(pattern).fullmatch(value):
            if negated:
                return -1
            result = 1
    return result


def _parse_time(text: str, where: str) -> float:
    match = _TIME.match(text)
    if match is None:
        raise ConfigError(f"{where}: time {text[:40]!r} is not YYYYMMDD[HHMM[SS]][Z]")
    day, hm, sec, utc = match.groups()
    stamp = day + (hm or "0000") + (sec or "00")
    try:
        parsed = datetime.strptime(stamp, "%Y%m%d%H%M%S")
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a valid date and time") from None
    if utc:
        return float(calendar.timegm(parsed.replace(tzinfo=UTC).timetuple()))
    return time.mktime(parsed.timetuple())


def _token(text: str, pos: int, where: str, *, keep_quotes: bool = False) -> tuple[str, int]:
    """The next whitespace-delimited field from ``pos`` (double quotes group, as OpenSSH's
    ``strdelimw``; ``keep_quotes`` for the options field), and the position after it."""
    out = []
    quoted = False
    while pos < len(text):
        char = text[pos]
        if char == '"':
            quoted = not quoted
            if keep_quotes:
                out.append(char)
        elif char in " \t" and not quoted:
            break
        else:
            out.append(char)
        pos += 1
    if quoted:
        raise ConfigError(f"{where}: unterminated quote")
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return "".join(out), pos


def _options(text: str, where: str) -> dict[str, str | None]:
    """``name[="value"],...`` (commas inside quotes belong to the value)."""
    found: dict[str, str | None] = {}
    pos = 0
    while pos < len(text):
        match = re.compile(r"([A-Za-z-]+)(=\"((?:[^\"\\]|\\.)*)\")?(,|$)").match(text, pos)
        if match is None:
            raise ConfigError(f"{where}: cannot parse the options {text[:80]!r}")
        name = match[1].lower()
        if name in found:
            raise ConfigError(f"{where}: option {name!r} given twice")
        found[name] = match[3].replace('\\"', '"') if match[2] else None
        pos = match.end()
    return found


def _parse_line(raw: str, number: int, source: str) -> AllowedSigner | None:
    where = f"{source}:{number}"
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    principals, pos = _token(line, 0, where)
    if not principals or pos >= len(line):
        raise ConfigError(f"{where}: expected 'principals [options] keytype key'")
    field, after = _token(line, pos, where, keep_quotes=True)
    options: dict[str, str | None] = {}
    if not _KEY_TYPES.match(field):
        options = _options(field, where)
        field, after = _token(line, after, where)
    key_type = field
    if not _KEY_TYPES.match(key_type):
        raise ConfigError(f"{where}: {key_type[:40]!r} is not an SSH key type")
    blob_text, _rest = _token(line, after, where)
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the key is not valid base64") from None
    if not blob:
        raise ConfigError(f"{where}: missing key")
    unknown = set(options) - {"cert-authority", "namespaces", "valid-after", "valid-before"}
    if unknown:
        raise ConfigError(f"{where}: unknown option {sorted(unknown)[0]!r}")
    for name in ("namespaces", "valid-after", "valid-before"):
        if name in options and options[name] is None:
            raise ConfigError(f'{where}: option {name} needs a value ({name}="...")')
    if "cert-authority" in options and options["cert-authority"] is not None:
        raise ConfigError(f"{where}: cert-authority takes no value")
    key: PublicKey | None = None
    try:
        key = PublicKey.from_blob(blob)
    except ValueError:
        key = None  # another key type (ecdsa, sk-...): valid in the file, never ours
    else:
        if key.type != key_type:
            raise ConfigError(f"{where}: key type {key_type!r} does not match the key")
    after_text, before_text = options.get("valid-after"), options.get("valid-before")
    return AllowedSigner(
        line=number,
        principals=principals,
        key_type=key_type,
        key=key,
        namespaces=options.get("namespaces"),
        valid_after=_parse_time(after_text, where) if after_text is not None else None,
        valid_before=_parse_time(before_text, where) if before_text is not None else None,
        cert_authority="cert-authority" in options,
    )


def parse(text: str, *, source: str = "<allowed signers>") -> list[AllowedSigner]:
    """Every signer line of an allowed-signers file."""
    signers = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\x00" in raw:
            raise ConfigError(f"{source}:{number}: NUL byte")
        entry = _parse_line(raw, number, source)
        if entry is not None:
            signers.append(entry)
    return signers


def load_allowed_signers(path: str | os.PathLike[str]) -> list[AllowedSigner]:
    """Read and parse an allowed-signers file (:class:`ConfigError` when unusable)."""
    source = os.fspath(path)
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the allowed-signers file {source}: {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_FILE_BYTES // 1048576} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text") from None
    signers = parse(text, source=source)
    if not signers:
        raise ConfigError(f"{source} lists no signer")
    return signers


def find_problem(
    signers: Sequence[AllowedSigner], *, identity: str, key: PublicKey, namespace: str, now: float
) -> str | None:
    """None when some line allows ``key`` as ``identity`` in ``namespace`` at ``now``; else
    the most telling reason (an expiry or namespace limit beats "unknown signer")."""
    reasons = []
    for signer in signers:
        problem = signer.problem(identity=identity, key=key, namespace=namespace, now=now)
        if problem is None:
            return None
        if problem not in {"principal", "key"}:
            reasons.append(problem)
    if reasons:
        return reasons[0]
    return (
        f"{identity!r} with key {key.fingerprint} is not in the allowed-signers file "
        "(unknown signer)"
    )
