"""Write :class:`~cloudtaser.target.gitops.change.TemplateChange` objects as files the owning
team commits: one directory per owner under the output directory, the files of the owner's
form in it (:mod:`cloudtaser.target.gitops.forms`), deterministic (the same changes give the
same bytes: sorted, no time stamp), each file replaced atomically.

The layout:

- ``<out>/<owner-slug>/`` per owner (:func:`owner_slug`; ``unowned`` for none);
- ``<owner-slug>/cloudtaser-patches.yaml`` (:data:`PATCHES_FILE`): the strategic-merge
  patches, one YAML document per workload, sorted;
- ``<owner-slug>/kustomization-entry.yaml`` (:data:`KUSTOMIZATION_ENTRY_FILE`): the
  ``patches:`` entries for the team's ``kustomization.yaml``;
- by owner: ``helmrelease-postrenderers.yaml`` (Flux HelmRelease), ``application-patches.yaml``
  (Argo CD), ``values-snippet.yaml`` (Helm, Argo CD with a Helm source),
  ``helm-plugins/cloudtaser-patches/`` (Helm 4 post-renderer plugin).

An owner's name comes from cluster metadata: the slug is a single safe file name whatever it
holds (the rule book's :func:`~cloudtaser.plan.rules.safe_segment`), never a path.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cloudtaser.fileio import atomic_write
from cloudtaser.plan.model import Owner
from cloudtaser.plan.rules import MAX_SEGMENT, safe_segment
from cloudtaser.target.gitops.change import TemplateChange
from cloudtaser.target.gitops.forms import (
    APPLICATION_FILE,
    HELMRELEASE_FILE,
    KUSTOMIZATION_ENTRY_FILE,
    PATCHES_FILE,
    VALUES_FILE,
    owner_files,
)
from cloudtaser.target.owners import describe

__all__ = [
    "APPLICATION_FILE",
    "HELMRELEASE_FILE",
    "KUSTOMIZATION_ENTRY_FILE",
    "PATCHES_FILE",
    "UNOWNED",
    "VALUES_FILE",
    "Emitter",
    "owner_slug",
    "summary",
]

#: The directory of the changes of workloads without an owner.
UNOWNED: Final = "unowned"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")
_DIGEST: Final = 8


def _slug(owner: Owner) -> str:
    raw = "-".join(
        [
            owner.tool,
            owner.kind.lower(),
            *([owner.namespace] if owner.namespace else []),
            owner.name,
        ]
    )
    if safe_segment(raw) and len(raw) <= MAX_SEGMENT:
        return raw
    # Anything else (a '/', '..', a control character, a name too long for a file name):
    # the safe characters kept, the rest '_', and 8 hex of the SHA-256 of the raw slug, so
    # two owners that differ only in what was replaced still get two directories.
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST]
    cleaned = _UNSAFE.sub("_", raw).lstrip(".")
    return f"{cleaned[: MAX_SEGMENT - _DIGEST - 1]}-{digest}"


def owner_slug(change: TemplateChange) -> str:
    """The directory name of ``change``'s owner: ``flux-kustomization-flux-system-apps``, or
    ``unowned``; always one safe file name (:func:`~cloudtaser.plan.rules.safe_segment`, at most
    :data:`~cloudtaser.plan.rules.MAX_SEGMENT` characters)."""
    return UNOWNED if change.owner is None else _slug(change.owner)


def _by_owner(changes: Iterable[TemplateChange]) -> dict[str, list[TemplateChange]]:
    groups: dict[str, list[TemplateChange]] = defaultdict(list)
    for change in changes:
        groups[owner_slug(change)].append(change)
    return dict(sorted(groups.items()))


def summary(changes: Iterable[TemplateChange], out_dir: Path) -> list[str]:
    """One line per owner, for the CLI: ``Flux Kustomization flux-system/apps: 2 workloads ->
    <out>/flux-kustomization-flux-system-apps``."""
    lines = []
    for slug, group in _by_owner(changes).items():
        owner = group[0].owner
        who = describe(owner) if owner is not None else "No owner"
        count = len({(c.namespace, c.kind, c.name) for c in group})
        noun = "workload" if count == 1 else "workloads"
        lines.append(f"{who}: {count} {noun} -> {Path(out_dir) / slug}")
    return lines


class Emitter:
    """Collects changes (``add``) and writes them under ``out_dir`` (``write``)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.changes: list[TemplateChange] = []

    def add(self, change: TemplateChange) -> None:
        self.changes.append(change)

    def summary(self) -> list[str]:
        """:func:`summary` of the changes added so far."""
        return summary(self.changes, self.out_dir)

    def write(self) -> list[Path]:
        """Write every owner's files (each atomically); returns the paths written, sorted.
        Raises :class:`~cloudtaser.errors.OperationError` for a change that cannot be
        written (a custom resource's list change without its live template) before writing
        anything, and :class:`OSError`."""
        rendered = {
            slug: owner_files(group[0].owner, group)
            for slug, group in _by_owner(self.changes).items()
        }
        written: list[Path] = []
        for slug, files in rendered.items():
            directory = self.out_dir / slug
            for name, data in files.items():
                path = directory / name
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data)
                written.append(path)
        return sorted(written)
