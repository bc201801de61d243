"""Which files of a local checkout of a GitOps source define a Secret (``--gitops-source DIR``).

When ``finalize --delete-secrets`` refuses a Secret that Git holds, it names the file(s) to
remove at the source. The checkout is the user's: its files are read as untrusted input.

- Only ``*.yaml`` / ``*.yml`` / ``*.json`` regular files under the search root are read; a
  file larger than :data:`MAX_MANIFEST_BYTES` is skipped (and counted), so is one that is not
  UTF-8 or not valid YAML. At most :data:`MAX_FILES` files are looked at.
- Nothing outside DIR is read: a symlink (file or directory) whose target resolves outside DIR
  is skipped; directory symlinks are never descended (``os.walk`` without ``followlinks``); a
  search path (a Kustomization's ``spec.path``) that leaves DIR is refused.
- YAML is parsed by the plan's parser (``yaml_rs``) with a small alias budget (no "billion
  laughs"), every document of a multi-document file, and the items of a ``kind: List``.
- A match is a document of kind ``Secret`` (plain or SOPS-encrypted: SOPS keeps ``kind`` and
  ``metadata`` in clear text) or ``SealedSecret`` (bitnami.com) with that ``metadata.name``,
  and with that ``metadata.namespace`` or none; with ``any_namespace`` (the Kustomization sets
  ``targetNamespace``, which overrides it) every namespace. A kustomize ``secretGenerator``
  entry of that name (or of that name plus kustomize's ``-<hash>`` suffix) matches too.
- Only the path, the kind and whether it is SOPS-encrypted leave this module: never a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml_rs

__all__ = ["MAX_FILES", "MAX_MANIFEST_BYTES", "Found", "SourceFile", "find_secret_files"]

#: A manifest larger than this is skipped, not parsed.
MAX_MANIFEST_BYTES: Final = 1024 * 1024
#: At most this many candidate files are read per search.
MAX_FILES: Final = 20_000
_SUFFIXES: Final = (".yaml", ".yml", ".json")
_ALIASES: Final = yaml_rs.AliasLimits(max_total_replayed_events=10_000)
_SECRET_KINDS: Final = {"Secret": "", "SealedSecret": "bitnami.com/"}
#: kustomize's secretGenerator suffix: ``-`` and 10 characters of the hash, hex with
#: 0 1 3 a e replaced by g h k m t (sigs.k8s.io/kustomize/api/hasher ``encode``).
_HASH_LEN: Final = 10
_HASH_CHARS: Final = frozenset("2456789bcdfghkmt")


@dataclass(frozen=True)
class SourceFile:
    """One file that defines the Secret: its path relative to DIR and how it defines it."""

    path: str
    #: ``Secret``, ``Secret (SOPS-encrypted)``, ``SealedSecret`` or ``secretGenerator``.
    how: str

    def __str__(self) -> str:
        return f"{self.path} ({self.how})"


@dataclass
class Found:
    """The matches and what was skipped (counts only; the reasons name no content)."""

    files: list[SourceFile] = field(default_factory=list)
    #: Files skipped: too large, unreadable, not UTF-8, not YAML, or a symlink out of DIR.
    skipped: int = 0
    #: Why the search did not run at all (a path leaving DIR), else ``""``.
    refused: str = ""
    #: :data:`MAX_FILES` was reached: the search stopped early.
    truncated: bool = False


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _documents(text: str) -> list[Any]:
    data = yaml_rs.loads(
        text,
        parse_datetime=False,
        alias_limits=_ALIASES,
        duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.LastWins,
    )
    docs = data if isinstance(data, list) else [data]
    out: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items")
            out.extend(items if isinstance(items, list) else ())
        else:
            out.append(doc)
    return out


def _generated(doc: dict[Any, Any], name: str) -> bool:
    entries = doc.get("secretGenerator")
    if not isinstance(entries, list):
        return False
    for entry in entries:
        gen = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(gen, str) or not gen:
            continue
        suffix = name[len(gen) + 1 :] if name.startswith(gen + "-") else ""
        if name == gen or (len(suffix) == _HASH_LEN and set(suffix) <= _HASH_CHARS):
            return True
    return False


def _match(doc: Any, name: str, namespace: str, any_namespace: bool) -> str | None:
    """How ``doc`` defines Secret ``namespace/name``, or None."""
    if not isinstance(doc, dict):
        return None
    if _generated(doc, name):
        return "secretGenerator"
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in _SECRET_KINDS:
        return None
    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str) or not api_version.startswith(_SECRET_KINDS[kind]):
        return None
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != name:
        return None
    ns = meta.get("namespace")
    if not any_namespace and ns is not None and ns not in ("", namespace):
        return None
    if kind == "Secret" and isinstance(doc.get("sops"), dict):
        return "Secret (SOPS-encrypted)"
    return str(kind)


def _read(path: Path) -> str | None:
    """The file's text, or None when it is too large, unreadable or not UTF-8."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_MANIFEST_BYTES:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _candidates(start: Path) -> list[Path]:
    paths: list[Path] = []
    for here, dirs, files in os.walk(start):
        dirs.sort()
        paths.extend(Path(here) / f for f in sorted(files) if f.endswith(_SUFFIXES))
        if len(paths) > MAX_FILES:
            break
    return paths


def find_secret_files(
    root: Path, name: str, namespace: str, *, path: str = "", any_namespace: bool = False
) -> Found:
    """The files under ``root`` / ``path`` that define Secret ``namespace/name`` (module doc)."""
    found = Found()
    base = root.resolve()
    start = (base / path.lstrip("/")).resolve() if path else base
    if not start.is_relative_to(base):
        found.refused = f"path {path!r} leaves the checkout"
        return found
    if not start.is_dir():
        found.refused = f"path {path!r} is not a directory of the checkout"
        return found
    paths = _candidates(start)
    if len(paths) > MAX_FILES:
        found.truncated = True
        paths = paths[:MAX_FILES]
    for candidate in paths:
        if not _inside(candidate, base) or not candidate.is_file():
            found.skipped += 1
            continue
        text = _read(candidate)
        if text is None:
            found.skipped += 1
            continue
        try:
            docs = _documents(text)
        except (ValueError, TypeError, RecursionError, OverflowError, MemoryError):
            found.skipped += 1
            continue
        hows = [h for d in docs if (h := _match(d, name, namespace, any_namespace))]
        if hows:
            rel = candidate.relative_to(base).as_posix()
            found.files.append(SourceFile(rel, hows[0]))
    found.files.sort(key=lambda f: f.path)
    return found
