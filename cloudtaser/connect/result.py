"""The ``-o json`` documents of ``target connect`` (also ``--check`` and ``--export FILE``) and
``source connect --import FILE``, as :class:`~cloudtaser.results.Result` Structs. Never the
reviewer token."""

from __future__ import annotations

from typing import Literal

from msgspec import UNSET, UnsetType

from cloudtaser.changes import Action
from cloudtaser.connect.model import AuthMethod, ReviewerMode
from cloudtaser.results import Count, Part, Result

__all__ = ["Connect", "ConnectExport", "SelfTestEntry", "StepEntry", "StepSummary"]


class StepEntry(Part, kw_only=True):
    """One object connect configured on one side."""

    #: ``cluster`` or ``vault``
    side: str
    kind: str
    name: str
    action: Action
    detail: str


class StepSummary(Part, kw_only=True):
    """Steps by action; ``connect`` adds the self-test's verdict (``null``: not run)."""

    create: Count
    update: Count
    unchanged: Count
    self_test: Literal["passed", "failed"] | UnsetType | None = UNSET


class SelfTestEntry(Part, kw_only=True):
    """The outcome of a real ServiceAccount login through the configured mount."""

    ok: bool
    #: A stable code (``ok``, ``role-not-bound``, ``ca-mismatch``, ...).
    reason: str
    message: str
    role: str
    service_account: str


class Connect(Result, kw_only=True):
    """``cloudtaser target connect / source connect -o json``: the steps of connect and its
    self-test."""

    kind: Literal["connect"] = "connect"
    auth_mount: str
    #: ``jwt``: the vault checks tokens offline (no ``kubernetesHost``, reviewer ``none``).
    auth_method: AuthMethod
    cluster: str
    #: Empty with ``jwt``.
    kubernetes_host: str
    reviewer_mode: ReviewerMode
    #: ISO 8601; ``null`` without a reviewer token.
    reviewer_token_expires: str | None
    dry_run: bool
    changed: bool
    steps: list[StepEntry]
    self_test: SelfTestEntry | None
    summary: StepSummary


class ConnectExport(Result, kw_only=True):
    """``cloudtaser target connect --export FILE -o json``: what the connection file holds
    (never the token itself)."""

    kind: Literal["connect-export"] = "connect-export"
    export: str
    dry_run: bool
    auth_mount: str
    auth_method: AuthMethod
    cluster: str
    #: Empty with ``jwt``.
    kubernetes_host: str
    reviewer_mode: ReviewerMode
    #: The cluster's token issuer (``jwt``; with ``kubernetes`` only if ``--issuer``).
    issuer: str | None
    #: How many public signing keys the file holds (``jwt``; 0 otherwise).
    public_keys: int
    #: The file holds a reviewer token (a credential).
    contains_credential: bool
    steps: list[StepEntry]
    summary: StepSummary
