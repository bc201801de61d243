"""The plan's mapping against a live pod template, by (Secret, key, env) triple.

- :func:`plan_triples`: what the plan says a workload consumes from Kubernetes Secrets;
- :func:`live_triples`: what its live pod template consumes
  (:func:`cloudtaser.target.podspec.consumed_env`);
- :func:`drift`: the differences, as lines a reviewer reads (names only);
- :func:`file_drift`: the same for the plan's migrated Secret volumes (volume name, Secret
  names, ``items``) against the template's volumes;
- :func:`kept_reasons`: the mapped variables whose Secret reference must stay because
  something the runtime does not serve reads them (:mod:`cloudtaser.target.consumers`).

Shared by the steps: protect refuses on drift and warns of what finalize will keep; finalize
refuses on drift and keeps those references. Its own module so neither step imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudtaser.plan.model import Workload
from cloudtaser.target.consumers import Coverage, keep_reasons
from cloudtaser.target.podspec import SecretKeys, consumed_env, env_consumptions, secret_files

__all__ = ["Triple", "drift", "file_drift", "kept_reasons", "live_triples", "plan_triples"]

#: (Secret, key, env): one variable a workload takes from one key of one Secret.
Triple = tuple[str, str, str]


def plan_triples(workload: Workload) -> set[Triple]:
    """(Secret, key, env) triples the plan says the workload consumes from Kubernetes Secrets.

    Secrets found through Vault Agent annotations (``via: vaultAgent``) are not Kubernetes
    Secrets and are left out.
    """
    return {
        (secret.source, key, env)
        for secret in workload.secrets
        if secret.via != "vaultAgent"
        for key, env in secret.fields.items()
    }


def live_triples(
    template: Mapping[str, Any], secret_keys: SecretKeys, *, env_names: str | None = None
) -> set[Triple]:
    """(Secret, key, env) triples the pod ``template`` (``spec.template``) consumes, names
    read with the plan's env-name rule ``env_names`` (``metadata.envNameRule``)."""
    return set(consumed_env(template, secret_keys, env_names=env_names))


def drift(planned: set[Triple], live: set[Triple]) -> list[str]:
    """Human-readable differences between the plan's triples and the live ones (names only)."""
    lines = [
        f"the plan maps Secret {s} key {k} to {e}, but the workload no longer consumes it so"
        for s, k, e in sorted(planned - live)
    ]
    lines += [
        f"the workload now consumes Secret {s} key {k} as {e}, which the plan does not list"
        for s, k, e in sorted(live - planned)
    ]
    return lines


def kept_reasons(
    template: Mapping[str, Any],
    workload: Workload,
    secret_keys: SecretKeys,
    *,
    coverage: Coverage | None = None,
) -> dict[tuple[str, bool, str], list[str]]:
    """Why a variable the plan maps must keep its Secret reference, by (container, init, env)
    (:func:`cloudtaser.target.consumers.keep_reasons` over the template's plan-mapped
    consumptions): every use ``coverage`` does not serve (None: none is served)."""
    planned = plan_triples(workload)
    # the widest rule: only what the plan maps is kept, and the plan's names passed its rule
    mapped = [
        c
        for c in env_consumptions(template, secret_keys, env_names="relaxed")
        if (c.secret, c.key, c.env) in planned
    ]
    return keep_reasons(template, mapped, workload.env_uses, coverage=coverage)


def file_drift(workload: Workload, template: Mapping[str, Any]) -> list[str]:
    """Differences between the plan's migrated Secret volumes and the template's volumes
    (names only): a migrated volume that is gone, that no longer reads the planned Secrets,
    or whose ``items`` changed. A volume finalize already replaced (recorded in
    ``finalizedVolumes``) is not compared."""
    finalized = {v.volume for v in workload.finalized_volumes}
    live: dict[str, dict[str, set[tuple[str, str]] | None]] = {}
    for use in secret_files(template):
        items = None if use.items is None else {(i.key, i.path) for i in use.items}
        live.setdefault(use.volume, {})[use.secret] = items
    planned: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for entry in workload.migrated_files:
        planned.setdefault(entry.volume, {})[entry.source] = {(f.key, f.file) for f in entry.files}
    lines: list[str] = []
    for volume, sources in planned.items():
        if volume in finalized:
            continue
        if volume not in live:
            lines.append(f"the plan migrates volume {volume}, which the workload no longer has")
            continue
        if set(sources) != set(live[volume]):
            lines.append(
                f"volume {volume} now reads Secret(s) {', '.join(sorted(live[volume]))}, the "
                f"plan {', '.join(sorted(sources))}"
            )
            continue
        for secret, files in sorted(sources.items()):
            items = live[volume][secret]
            if items is not None and items != files:
                lines.append(f"the items of Secret {secret} in volume {volume} changed")
    return lines
