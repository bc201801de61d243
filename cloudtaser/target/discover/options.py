"""What a discover run scans and how it names things: :class:`DiscoverOptions`, resolved by
the CLI (nothing here reads the environment) and checked before anything is sent to the
cluster."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from cloudtaser.errors import ConfigError
from cloudtaser.plan import rules
from cloudtaser.plan.rules import (
    DEFAULT_KV_MOUNT,
    DEFAULT_PATH_TEMPLATE,
    DNS_LABEL,
    RUNTIME_NAMESPACE,
    safe_segment,
)
from cloudtaser.target.discover.naming import DEFAULT_CLUSTER, PathTemplate, valid_plan_name

__all__ = ["DEFAULT_EXCLUDED_NAMESPACES", "DiscoverOptions"]

#: Namespaces discovery never scans (the compat contract's three, plus our own operator's).
DEFAULT_EXCLUDED_NAMESPACES: Final = (
    RUNTIME_NAMESPACE,
    "kube-node-lease",
    "kube-public",
    "kube-system",
)

# Always used with ``fullmatch``: the plan patterns end in ``$``, which also matches before a
# trailing newline.
_LABEL_RE: Final = re.compile(DNS_LABEL)


@dataclass(frozen=True)
class DiscoverOptions:
    """What to scan and how to name things. Resolved by the CLI; nothing here reads env."""

    #: Namespaces to scan (empty: every namespace).
    namespaces: tuple[str, ...] = ()
    #: A Kubernetes label selector (``app=web,tier!=cache``), passed to the API server.
    selector: str | None = None
    #: Namespaces to leave out, in addition to :data:`DEFAULT_EXCLUDED_NAMESPACES`.
    exclude_namespaces: tuple[str, ...] = ()
    #: Plan name (default: derived from the kube context).
    name: str | None = None
    #: Value of ``{cluster}`` in the path template (default: the plan name).
    cluster_name: str | None = None
    path_template: str = DEFAULT_PATH_TEMPLATE
    #: KV mount recorded in the plan (``metadata.kvMount``) and used for ``{mount}``.
    kv_mount: str | None = None
    #: Kubernetes auth mount recorded in the plan (``metadata.authMount``).
    auth_mount: str | None = None
    #: How the pods log in, recorded in the plan (``metadata.authMethod``: ``kubernetes`` or
    #: ``jwt``); absent: not recorded (``kubernetes``).
    auth_method: Literal["kubernetes", "jwt"] | None = None
    #: List only CloudTaser's own kinds (Deployment, StatefulSet, DaemonSet), so the plan is
    #: valid for CloudTaser's tools (``--cloudtaser-kinds-only``); default: every kind.
    cloudtaser_kinds_only: bool = False
    created_by: str | None = None
    #: Creation time (default: now, UTC, second precision).
    now: datetime | None = None

    def excluded(self) -> frozenset[str]:
        return frozenset(DEFAULT_EXCLUDED_NAMESPACES) | frozenset(self.exclude_namespaces)

    def validate(self) -> None:
        """Refuse bad names before anything is sent to the cluster."""
        for what, values in (
            ("--namespace", self.namespaces),
            ("--exclude-namespace", self.exclude_namespaces),
        ):
            for value in values:
                if not _LABEL_RE.fullmatch(value):  # the pattern caps the length at 63
                    raise ConfigError(f"{what} {value!r} is not a valid namespace name")
        if self.name is not None and not valid_plan_name(self.name):
            raise ConfigError(
                f"plan name {self.name!r} is not valid: letters, digits, '.', '_', '-', at most "
                "63, starting and ending with a letter or digit"
            )
        for what, mount, check in (
            ("--kv-mount", self.kv_mount, rules.kv_mount_problem),
            ("--auth-mount", self.auth_mount, rules.auth_mount_problem),
        ):
            problem = None if mount is None else check(mount)
            if problem is not None:
                raise ConfigError(f"{what}: {problem}")
        if self.selector is not None and (
            not self.selector.strip() or not self.selector.isprintable()
        ):
            raise ConfigError("--selector is empty or contains control characters")
        if self.cluster_name is not None and (
            not safe_segment(self.cluster_name) or len(self.cluster_name) > rules.MAX_SEGMENT
        ):
            raise ConfigError(
                f"--cluster-name {self.cluster_name!r} is not usable in a vault path (letters, "
                f"digits, '.', '_', '-'; at most {rules.MAX_SEGMENT} characters)"
            )
        PathTemplate(
            self.path_template,
            mount=self.kv_mount or DEFAULT_KV_MOUNT,
            cluster=self.cluster_name or DEFAULT_CLUSTER,
        )

    def naming(self, plan_name: str) -> PathTemplate:
        """The naming of a run (``{cluster}`` defaults to the plan name), checked against
        ``--kv-mount``."""
        template = PathTemplate(
            self.path_template,
            mount=self.kv_mount or DEFAULT_KV_MOUNT,
            cluster=self.cluster_name or plan_name,
        )
        if self.kv_mount is not None and template.rendered_mount() != self.kv_mount:
            raise ConfigError(
                f"path template {self.path_template!r} puts paths in mount "
                f"{template.rendered_mount()!r}, not in --kv-mount {self.kv_mount!r}"
            )
        return template
