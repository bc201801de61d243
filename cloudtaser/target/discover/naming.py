"""Vault path naming: the :class:`PathTemplate` a discover run renders every vault path with,
and the plan name derived from the kube context.

Pure. The rules themselves (injective templates, segment and path limits, the tenant scope) are
the rule book's (:mod:`cloudtaser.plan.rules`); this module applies them to one run's choice of
template, KV mount and cluster name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cloudtaser.errors import ConfigError
from cloudtaser.plan import rules
from cloudtaser.plan.rules import (
    DEFAULT_KV_MOUNT,
    PLAN_NAME,
    safe_segment,
    template_problem,
    tenant_scope,
)

__all__ = ["DEFAULT_CLUSTER", "PathTemplate", "default_plan_name", "valid_plan_name"]

#: Value of ``{cluster}`` when neither ``--cluster-name`` nor a plan name gives one.
DEFAULT_CLUSTER: Final = "cluster"

# Always used with ``fullmatch``: the plan patterns end in ``$``, which also matches before a
# trailing newline.
_PLAN_NAME_RE: Final = re.compile(PLAN_NAME)


@dataclass(frozen=True)
class PathTemplate:
    """The vault path naming convention: a template with ``{mount}``, ``{cluster}``,
    ``{namespace}`` and ``{secret}``.

    Both ``{namespace}`` and ``{secret}`` are required, so two tenants (namespaces) can never
    share a path, and two Secrets of one namespace never collide. The rendered path must be a
    KV v2 API path ``<mount>/data/<path>`` and pass the plan's path rules.
    """

    template: str
    mount: str = DEFAULT_KV_MOUNT
    cluster: str = DEFAULT_CLUSTER

    def __post_init__(self) -> None:
        problem = template_problem(self.template)  # the rule book: injective templates only
        if problem is not None:
            raise ConfigError(f"path template {self.template!r} {problem}")
        problem = rules.kv_mount_problem(self.mount)
        if problem is not None:
            raise ConfigError(problem)
        if not safe_segment(self.cluster) or len(self.cluster) > rules.MAX_SEGMENT:
            raise ConfigError(
                f"cluster name {self.cluster!r} is not usable in a vault path (letters, "
                "digits, '.', '_', '-')"
            )
        sample = self.render("namespace", "secret")
        if sample is None:
            raise ConfigError(
                f"path template {self.template!r} does not render a KV v2 API path "
                f"<mount>/data/<path> (got {self._format('namespace', 'secret')!r})"
            )

    @property
    def uses_cluster(self) -> bool:
        return "{cluster}" in self.template

    def _format(self, namespace: str, secret: str) -> str:
        return self.template.format(
            mount=self.mount, cluster=self.cluster, namespace=namespace, secret=secret
        )

    def render(self, namespace: str, secret: str) -> str | None:
        """The vault path of ``secret`` in ``namespace``, or None when it breaks a plan rule
        (the rule book's :func:`~cloudtaser.plan.rules.vault_path_problem`, the same check
        ``plan validate`` and apply-plan make)."""
        path = self._format(namespace, secret)
        return None if rules.vault_path_problem(path) is not None else path

    def render_fitted(self, namespace: str, secret: str) -> tuple[str | None, str | None]:
        """Like :meth:`render`, with a Secret name over the segment limit shortened by
        :func:`~cloudtaser.plan.rules.fit_segment`: ``(path, note saying so)``."""
        segment, adapted = rules.fit_segment(secret)
        path = self.render(namespace, segment)
        if not adapted or path is None:
            return path, None
        return path, (
            f"Secret name is longer than {rules.MAX_SEGMENT} characters (the vault's segment "
            f"limit): its vault path uses {segment!r}"
        )

    def rendered_mount(self) -> str:
        """The KV mount the rendered paths live in."""
        return self._format("namespace", "secret").partition("/data/")[0]

    def scope(self, namespace: str) -> re.Pattern[str]:
        """Every path this template may give ``namespace`` (the rule book's tenant scope)."""
        return tenant_scope(
            self.template, namespace=namespace, mount=self.mount, cluster=self.cluster
        )


def valid_plan_name(name: str) -> bool:
    """``name`` passes the plan's name rule (:data:`~cloudtaser.plan.rules.PLAN_NAME`)."""
    return _PLAN_NAME_RE.fullmatch(name) is not None


def default_plan_name(context: str, cluster_name: str = "") -> str:
    """A valid plan name derived from the kube context (or cluster) name."""
    for candidate in (context, cluster_name):
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", candidate or "")[:63]
        name = name.strip("._-")
        if name and valid_plan_name(name):
            return name
    return DEFAULT_CLUSTER
