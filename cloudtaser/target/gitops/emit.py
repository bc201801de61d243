"""Write :class:`~cloudtaser.target.gitops.change.TemplateChange` objects as files the owning
team commits.

STUB on main (integration placeholder, replaced by the emit helper): every owner gets the
kustomize form only. The layout, which the real emitter keeps:

- ``<out>/<owner-slug>/`` per owner (``unowned`` for none);
- ``<owner-slug>/cloudtaser-patches.yaml``: the strategic-merge patches, one YAML document per
  workload (``apiVersion``, ``kind``, ``metadata.name`` + ``namespace``, then the patch), sorted;
- ``<owner-slug>/kustomization-entry.yaml``: ``patches:`` entries to add to the team's
  ``kustomization.yaml`` (``- path: cloudtaser-patches.yaml``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml

from cloudtaser.fileio import atomic_write
from cloudtaser.target.gitops.change import TemplateChange

__all__ = ["KUSTOMIZATION_ENTRY_FILE", "PATCHES_FILE", "Emitter", "owner_slug"]

PATCHES_FILE = "cloudtaser-patches.yaml"
KUSTOMIZATION_ENTRY_FILE = "kustomization-entry.yaml"


def owner_slug(change: TemplateChange) -> str:
    o = change.owner
    if o is None:
        return "unowned"
    parts = [o.tool, o.kind.lower(), *([o.namespace] if o.namespace else []), o.name]
    return "-".join(parts)


class Emitter:
    """Collects changes (``add``) and writes them under ``out_dir`` (``write``), deterministic."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.changes: list[TemplateChange] = []

    def add(self, change: TemplateChange) -> None:
        self.changes.append(change)

    def write(self) -> list[Path]:
        """Write every file; returns the paths written (sorted)."""
        by_owner: dict[str, list[TemplateChange]] = defaultdict(list)
        for c in self.changes:
            by_owner[owner_slug(c)].append(c)
        written: list[Path] = []
        for slug, changes in sorted(by_owner.items()):
            docs = [
                {
                    "apiVersion": c.api_version,
                    "kind": c.kind,
                    "metadata": {"name": c.name, "namespace": c.namespace},
                    **{k: v for k, v in c.patch.items() if k != "metadata"},
                }
                for c in sorted(changes, key=lambda c: (c.namespace, c.kind, c.name, c.action))
            ]
            directory = self.out_dir / slug
            directory.mkdir(parents=True, exist_ok=True)
            patches = directory / PATCHES_FILE
            atomic_write(patches, yaml.safe_dump_all(docs, sort_keys=True).encode())
            entry = directory / KUSTOMIZATION_ENTRY_FILE
            atomic_write(entry, yaml.safe_dump({"patches": [{"path": PATCHES_FILE}]}).encode())
            written += [patches, entry]
        return sorted(written)
