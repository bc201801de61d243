"""What a scan hands to the pure plan builder: the workloads read
(:class:`ScannedWorkload`) and the key names of the Secrets their ``envFrom`` and Secret
volumes need
(:class:`SecretLookup`). Plain values: tests build them by hand, without a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudtaser.plan import WorkloadKind
from cloudtaser.plan.model import Owner
from cloudtaser.plan.rules import EnvNameRule
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
    #: Who writes the workload from elsewhere (:func:`cloudtaser.target.owners.workload_owner`).
    owner: Owner | None = None
    #: (kind, name) of the controlling owner (a Job's CronJob), if any.
    controller: tuple[str, str] | None = None
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
    #: (namespace, name) -> who writes the Secret from elsewhere (only Secrets that were read).
    owners: Mapping[tuple[str, str], Owner] = field(default_factory=dict)
    #: (namespace, name) -> the keys whose value is not UTF-8 text (never the values).
    binary: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: Which of these keys reach a container's environment: the cluster's env-name rule
    #: (:func:`cloudtaser.plan.rules.env_name_rule_for`; None: not known, the plan default).
    env_names: EnvNameRule | None = None

    def for_namespace(self, namespace: str) -> SecretKeys:
        def lookup(name: str) -> Sequence[str] | None:
            return self.keys.get((namespace, name))

        return lookup
