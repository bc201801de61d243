"""What a scan hands to the pure plan builder: the workloads read
(:class:`ScannedWorkload`) and the key names of the Secrets their ``envFrom`` needs
(:class:`SecretLookup`). Plain values: tests build them by hand, without a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudtaser.plan import WorkloadKind
from cloudtaser.target.podspec import SecretKeys

__all__ = ["ScannedWorkload", "SecretLookup"]


@dataclass(frozen=True)
class ScannedWorkload:
    """A workload as read from the cluster: identity and its pod template in API-dict form."""

    namespace: str
    kind: WorkloadKind
    name: str
    template: Mapping[str, Any]
    replicas: int | None = None
    #: (kind, name) of the controlling owner (a Job's CronJob), if any.
    owner: tuple[str, str] | None = None
    #: A Job with active pods (still running).
    running: bool = False

    @property
    def where(self) -> str:
        """``<kind> <namespace>/<name>``, for messages."""
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class SecretLookup:
    """Key names of the Secrets discovery read, and what it could not read."""

    keys: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    missing: frozenset[tuple[str, str]] = frozenset()
    #: (namespace, name) -> why the keys are unknown (e.g. permission denied).
    unreadable: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def for_namespace(self, namespace: str) -> SecretKeys:
        def lookup(name: str) -> Sequence[str] | None:
            return self.keys.get((namespace, name))

        return lookup
