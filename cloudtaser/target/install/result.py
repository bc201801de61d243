"""``target install|uninstall|install --check -o json``: what was done to the objects install
manages, and the injector checks, as :class:`~cloudtaser.results.Result` documents."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, UnsetType

from cloudtaser.results import Count, Part, Result

__all__ = [
    "CheckEntry",
    "CheckSummary",
    "ClusterDefaults",
    "Install",
    "InstallCheck",
    "ObjectChanges",
    "ObjectEntry",
    "OptedInEntry",
    "Uninstall",
]


class ObjectEntry(Part, kw_only=True):
    """What was (or, with ``dryRun``, would be) done to one object install manages."""

    kind: str
    name: str
    #: ``null`` for a cluster-scoped object.
    namespace: str | None
    action: str
    detail: str
    diff: list[str] | UnsetType = UNSET


class ObjectChanges(Result, kw_only=True):
    """The fields of ``install``."""

    dry_run: bool
    changes: list[ObjectEntry]
    summary: Annotated[
        dict[str, Count],
        Meta(description="objects by action (create, update, unchanged, delete, keep, ...)"),
    ]


class Install(ObjectChanges, kw_only=True):
    """``cloudtaser target install -o json``: what install did (or, with dryRun, would do) to
    each object it manages."""

    kind: Literal["install"] = "install"


class OptedInEntry(Part, kw_only=True):
    """A workload whose pod template still opts in to injection when uninstall ran."""

    namespace: str
    kind: str
    name: str
    #: Its template reads no Kubernetes Secret any more: its next pods would have no secret.
    finalized: bool


class Uninstall(Result, kw_only=True):
    """``cloudtaser target uninstall -o json``: what uninstall did (or, with dryRun, would do)
    to each object install created, and the workloads still opting in to injection (while
    there is one, uninstall refuses without --ignore-protected-workloads: refused, no
    change)."""

    kind: Literal["uninstall"] = "uninstall"
    dry_run: bool
    changes: list[ObjectEntry]
    opted_in: list[OptedInEntry]
    refused: bool
    summary: Annotated[
        dict[str, Count],
        Meta(description="objects by action (delete, keep, ...)"),
    ]


class CheckEntry(Part, kw_only=True):
    name: str
    ok: bool
    detail: str


class CheckSummary(Part, kw_only=True):
    passed: Count
    failed: Count


class ClusterDefaults(Part, kw_only=True):
    """The cluster defaults the injector applies to pods whose annotation is absent (each
    absent here when not set: the built-in default)."""

    address: str | UnsetType = UNSET
    auth_mount: str | UnsetType = UNSET
    auth_method: Literal["kubernetes", "jwt"] | UnsetType = UNSET
    namespace: str | UnsetType = UNSET


class InstallCheck(Result, kw_only=True):
    """``cloudtaser target install --check -o json``: the results of the injector checks."""

    kind: Literal["install-check"] = "install-check"
    #: Every check passed.
    ok: bool
    checks: list[CheckEntry]
    #: The injector's cluster defaults (absent: none, or they could not be read).
    defaults: ClusterDefaults | UnsetType = UNSET
    summary: CheckSummary
