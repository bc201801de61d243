"""The plan half of the rule book: the rules that need a whole plan, not one value.

:mod:`cloudtaser.plan.rules` holds every pattern and limit of a single name or path
(standard library only); this module applies the rules that read several parts of a
:class:`~cloudtaser.plan.model.MigrationPlan` at once. Together they are the one rule book:
``plan validate`` (through :func:`cloudtaser.plan.yamlio.loads`), apply-plan, protect and
discover call the same functions.

* :func:`rule_problem`: what no Struct pattern can express (segment lengths, reserved mounts
  in any case), dangerous loader variables a workload does not accept, ``finalizedRefs`` that
  are not reviewed mappings. Every loaded plan passes it.
* :func:`isolation_problems` / :func:`check_isolation`: one tenant never gains another
  tenant's secrets through the plan (below).

One tenant must never gain another tenant's secrets through the plan. Discover names paths
with an injective template (``{namespace}`` is a whole segment), so each tenant owns a disjoint
*scope*; discover skips (with a reason) anything outside it; apply-plan, protect and
``plan validate`` refuse a plan in which an active workload names a path outside its tenant's
scope, a path inside another tenant's scope, a path several tenants use, or a second KV mount,
unless a reviewer marked that secret ``shared: true``.
"""

from __future__ import annotations

from typing import Any, Final

from cloudtaser.errors import PlanError
from cloudtaser.plan import rules
from cloudtaser.plan.model import (
    FinalizedRef,
    FinalizedVolume,
    MigrationPlan,
    Tenant,
    Workload,
    WorkloadStatus,
)
from cloudtaser.plan.rules import (
    DEFAULT_KV_MOUNT,
    DEFAULT_PATH_TEMPLATE,
    template_problem,
    tenant_scope,
)

__all__ = [
    "check_isolation",
    "dangerous_env_violation",
    "env_name_violation",
    "finalized_ref_problem",
    "finalized_refs_violation",
    "finalized_volume_problem",
    "finalized_volumes_violation",
    "isolation_problems",
    "plan_kv_mount",
    "rule_problem",
]


def rule_problem(plan: MigrationPlan) -> tuple[str, str] | None:
    """The first rule-book violation the schema cannot express, as ``(location, message)``.

    The Struct patterns are the schema (and the JSON schema); the rules no pattern can carry
    (a vault path segment over 128 characters, a reserved mount in any letter case, a mount
    over the length limit) come from :mod:`cloudtaser.plan.rules`, the same functions
    apply-plan, verify-plan, protect and discover call. ``loads`` runs this on every plan, so
    ``plan validate`` accepts exactly what those commands accept.

    Per workload it also refuses a vault field mapped to a loader / interpreter variable the
    workload does not accept (:func:`dangerous_env_violation`) and a ``finalizedRefs`` entry
    that is not one of the workload's reviewed mappings (:func:`finalized_refs_violation`):
    both change what runs, so every command that loads a plan refuses them.
    """
    meta = plan.metadata
    if meta.auth_mount is not None:
        problem = rules.auth_mount_problem(meta.auth_mount)
        if problem:
            return "$.metadata.authMount", problem
    if meta.kv_mount is not None:
        problem = rules.kv_mount_problem(meta.kv_mount)
        if problem:
            return "$.metadata.kvMount", problem
    for t_index, tenant in enumerate(plan.tenants):
        for w_index, workload in enumerate(tenant.workloads):
            for read in workload.vault_reads():
                problem = rules.vault_path_problem(read.vault_path)
                if problem:
                    where = f"$.tenants[{t_index}].workloads[{w_index}].{read.location}"
                    return f"{where}.vaultPath", problem
            violation = env_name_violation(
                workload, f"$.tenants[{t_index}].workloads[{w_index}]", meta.env_name_rule
            ) or _workload_problem(tenant, workload, f"$.tenants[{t_index}].workloads[{w_index}]")
            if violation is not None:
                return violation
    return None


def _workload_problem(tenant: Tenant, workload: Workload, where: str) -> tuple[str, str] | None:
    """The first dangerous-target or forged-run-state problem of one workload."""
    who = f"tenant {tenant.name}, {workload.kind} {workload.name}"
    return (
        dangerous_env_violation(workload, where, who)
        or finalized_refs_violation(workload, where, who)
        or finalized_volumes_violation(workload, where, who)
    )


def env_name_violation(workload: Workload, where: str, rule: str | None) -> tuple[str, str] | None:
    """``(location, message)`` for the first mapped variable (or ``envUses`` name) the plan's
    env-name ``rule`` (``metadata.envNameRule``, :func:`cloudtaser.plan.rules.env_name_problem`)
    refuses, or None. The Struct pattern admits the widest rule; this narrows it."""
    for s_index, secret in enumerate(workload.secrets):
        for field, env in secret.fields.items():
            problem = rules.env_name_problem(env, rule)
            if problem is not None:
                return (
                    f"{where}.secrets[{s_index}].fields.{field}",
                    f"{workload.kind} {workload.name}, secret {secret.source}: {problem}",
                )
    for u_index, use in enumerate(workload.env_uses):
        for name in (use.env, use.target):
            problem = None if name is None else rules.env_name_problem(name, rule)
            if problem is not None:
                return f"{where}.envUses[{u_index}]", f"{workload.kind} {workload.name}: {problem}"
    return None


def dangerous_env_violation(workload: Workload, where: str, who: str) -> tuple[str, str] | None:
    """``(location, message)`` when the workload maps a vault field to a dangerous variable
    it does not accept (:func:`cloudtaser.plan.rules.dangerous_env_problem`), or its
    ``acceptedDangerousEnv`` holds an entry that accepts nothing.

    A skipped workload gets no grant and no annotation, so it may hold such a mapping (that is
    how discover writes it, with the reason): only its ``acceptedDangerousEnv`` is checked.
    """
    accepted = workload.accepted_dangerous_env
    if workload.effective_status is not WorkloadStatus.SKIPPED:
        for s_index, secret in enumerate(workload.secrets):
            for field, env in secret.fields.items():
                problem = rules.dangerous_env_problem(env, accepted)
                if problem is not None:
                    return (
                        f"{where}.secrets[{s_index}].fields.{field}",
                        f"{who}, secret {secret.source}, field {field!r}: {problem}",
                    )
    mapped = set(workload.env_names)
    seen: set[str] = set()
    for index, name in enumerate(accepted):
        problem = rules.accepted_dangerous_env_problem(name, mapped)
        if problem is None and name in seen:
            problem = f"{rules.shown(name)} is listed twice; remove one"
        if problem is not None:
            return (
                f"{where}.acceptedDangerousEnv[{index}]",
                f"{who}: acceptedDangerousEnv: {problem}",
            )
        seen.add(name)
    return None


def finalized_ref_problem(workload: Workload, ref: FinalizedRef) -> str | None:
    """Why ``ref`` is not a reference ``target finalize`` could have recorded for
    ``workload``, or None.

    ``finalizedRefs`` is run state, outside the signed reviewed content, and ``target
    unprotect`` puts back whatever it lists. So each entry must be one of the workload's
    reviewed mappings, exactly as :func:`cloudtaser.target.finalize.step.finalize_edit` records
    them (it removes only references whose (Secret, key, env) triples the plan maps):

    * ``via: env``: a secret of the workload with ``source`` = the Secret maps ``key`` to
      ``env`` (``via`` env, envFrom or absent: the same reviewed key-to-variable pair);
    * ``via: envFrom``: a secret with ``source`` = the Secret and ``via`` envFrom (or absent,
      as in plans without ``via``) maps some key ``k`` to ``<prefix>k``: the prefix is one a
      reviewer saw, so every restored variable is named the way the review showed.
    """
    candidates = [s for s in workload.secrets if s.source == ref.secret and s.via != "vaultAgent"]
    if ref.via == "env":
        if any(s.fields.get(ref.key or "") == ref.env for s in candidates):
            return None
        return (
            f"env {ref.env} from Secret {ref.secret} key {ref.key} (container {ref.container}) "
            "is not a mapping of the workload's reviewed secrets"
        )
    prefix = ref.prefix or ""
    if any(
        env == prefix + key
        for s in candidates
        if s.via in {None, "envFrom"}
        for key, env in s.fields.items()
    ):
        return None
    shown_prefix = f" with prefix {prefix}" if prefix else ""
    return (
        f"envFrom of Secret {ref.secret}{shown_prefix} (container {ref.container}) is not an "
        "envFrom mapping of the workload's reviewed secrets"
    )


def finalized_refs_violation(workload: Workload, where: str, who: str) -> tuple[str, str] | None:
    """``(location, message)`` for the first ``finalizedRefs`` entry that is not one of the
    workload's reviewed mappings (:func:`finalized_ref_problem`), or None."""
    for index, ref in enumerate(workload.finalized_refs):
        problem = finalized_ref_problem(workload, ref)
        if problem is not None:
            return (
                f"{where}.finalizedRefs[{index}]",
                f"{who}: finalizedRefs[{index}]: {problem}. finalizedRefs is run state, not "
                "signed by the approvals, and `target unprotect` would put it into the "
                "workload: the plan was edited after finalize. Restore the plan file from "
                "the run that wrote it, or remove the entry",
            )
    return None


_SECRET_SOURCE_KEYS: Final = frozenset({"secretName", "items", "defaultMode", "optional"})
_PROJECTED_KEYS: Final = frozenset({"sources", "defaultMode"})
_PROJECTED_SECRET_KEYS: Final = frozenset({"name", "items", "optional"})
_ITEM_KEYS: Final = frozenset({"key", "path", "mode"})


def _items_problem(items: Any) -> str | None:
    if items is None:
        return None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and set(i) <= _ITEM_KEYS for i in items
    ):
        return "its 'items' are not a list of {key, path, mode}"
    return None


def finalized_volume_problem(workload: Workload, volume: FinalizedVolume) -> str | None:
    """Why ``volume`` is not a volume source ``target finalize`` could have recorded for
    ``workload``, or None: it must be a ``secret`` (or all-``secret`` ``projected``) source of
    Kubernetes' own fields, naming only Secrets the workload's reviewed ``secretFiles``
    migrate in that very volume (``finalizedVolumes`` is run state, outside the approvals, and
    ``target unprotect`` puts it into the pod template)."""
    reviewed = {f.source for f in workload.migrated_files if f.volume == volume.volume}
    names: list[Any] = []
    if volume.secret is not None:
        if not set(volume.secret) <= _SECRET_SOURCE_KEYS:
            return "its secret source has fields finalize never records"
        names.append(volume.secret.get("secretName"))
        problem = _items_problem(volume.secret.get("items"))
        if problem:
            return problem
    else:
        projected = volume.projected or {}
        sources = projected.get("sources")
        if not set(projected) <= _PROJECTED_KEYS or not isinstance(sources, list) or not sources:
            return "its projected source is not a list of secret sources"
        for source in sources:
            secret = source.get("secret") if isinstance(source, dict) else None
            if set(source) != {"secret"} or not isinstance(secret, dict):
                return "its projected source holds a source that is not a Secret"
            if not set(secret) <= _PROJECTED_SECRET_KEYS:
                return "its projected secret source has fields finalize never records"
            problem = _items_problem(secret.get("items"))
            if problem:
                return problem
            names.append(secret.get("name"))
    stray = sorted(str(n) for n in names if n not in reviewed)
    if stray:
        return (
            f"Secret(s) {', '.join(stray)} of volume {volume.volume} are not migrated files of "
            "the workload's reviewed secretFiles"
        )
    return None


def finalized_volumes_violation(workload: Workload, where: str, who: str) -> tuple[str, str] | None:
    """``(location, message)`` for the first ``finalizedVolumes`` entry
    :func:`finalized_volume_problem` refuses, or None."""
    for index, volume in enumerate(workload.finalized_volumes):
        problem = finalized_volume_problem(workload, volume)
        if problem is not None:
            return (
                f"{where}.finalizedVolumes[{index}]",
                f"{who}: finalizedVolumes[{index}]: {problem}. finalizedVolumes is run state, "
                "not signed by the approvals, and `target unprotect` would put it into the "
                "workload: the plan was edited after finalize. Restore the plan file from "
                "the run that wrote it, or remove the entry",
            )
    return None


def plan_kv_mount(plan: MigrationPlan) -> str | None:
    """The one KV mount of the plan: ``kvMount``, else the template's literal mount, else the
    mount every active non-shared path uses (None when they use several, or none)."""
    if plan.metadata.kv_mount:
        return plan.metadata.kv_mount
    template = plan.metadata.path_template or DEFAULT_PATH_TEMPLATE
    literal = template.partition("/data/")[0]
    if "{" not in literal and literal:
        return literal
    mounts = {
        secret.vault_path.partition("/data/")[0]
        for _tenant, workload in plan.iter_workloads()
        if workload.effective_status is not WorkloadStatus.SKIPPED
        for secret in workload.vault_reads()
        if not secret.shared
    }
    return mounts.pop() if len(mounts) == 1 else None


def isolation_problems(plan: MigrationPlan) -> list[tuple[str, str]]:
    """``(location, problem)`` for every active secret that could widen a tenant's policy.

    Skipped workloads are ignored (they get no grant). A secret marked ``shared: true`` is
    allowed anywhere in a KV mount (the reviewer decided it); everything else must lie in its
    tenant's scope (template or ``pathPrefix``), in no other tenant's scope, in the plan's one
    KV mount, and be used by this tenant only.
    """
    template = plan.metadata.path_template or DEFAULT_PATH_TEMPLATE
    problem = template_problem(template)
    if problem is not None:
        return [("$.metadata.pathTemplate", f"path template {template!r} {problem}")]
    mount = plan_kv_mount(plan)
    cluster = plan.metadata.path_cluster or plan.metadata.name
    problems: list[tuple[str, str]] = []
    scopes = {
        tenant.name: tenant_scope(
            template,
            namespace=tenant.namespace,
            mount=mount or DEFAULT_KV_MOUNT,
            cluster=cluster,
        )
        for tenant in plan.tenants
    }
    users: dict[str, set[str]] = {}
    for t_index, tenant in enumerate(plan.tenants):
        for w_index, workload in enumerate(tenant.workloads):
            if workload.effective_status is WorkloadStatus.SKIPPED:
                continue
            for secret in workload.vault_reads():
                path = secret.vault_path
                users.setdefault(path, set())
                if not secret.shared:
                    users[path].add(tenant.name)
                if secret.shared:
                    continue
                where = f"$.tenants[{t_index}].workloads[{w_index}].{secret.location}.vaultPath"
                hint = (
                    "; if this is intended, mark the secret 'shared: true' (a reviewer's "
                    "decision, see docs/plan-format.md)"
                )
                if mount is None:
                    problems.append(
                        (
                            where,
                            f"{path!r}: the plan's paths span several KV mounts; set "
                            f"metadata.kvMount or mark the other mounts' secrets shared{hint}",
                        )
                    )
                    continue
                if secret.vault_path.partition("/data/")[0] != mount:
                    problems.append(
                        (where, f"{path!r} is outside the plan's KV mount {mount!r}{hint}")
                    )
                    continue
                own = bool(scopes[tenant.name].fullmatch(path)) or rules.path_in_prefix(
                    path, tenant.path_prefix
                )
                if not own:
                    problems.append(
                        (
                            where,
                            _outside_scope(
                                path,
                                tenant,
                                t_index,
                                template=template,
                                mount=mount,
                                cluster=cluster,
                            ),
                        )
                    )
                    continue
                others = sorted(
                    other.name
                    for other in plan.tenants
                    if other.name != tenant.name
                    and (
                        scopes[other.name].fullmatch(path)
                        or rules.path_in_prefix(path, other.path_prefix)
                    )
                )
                if others:
                    problems.append(
                        (
                            where,
                            f"{path!r} also lies in the scope of tenant(s) {', '.join(others)}"
                            f"{hint}",
                        )
                    )
    for path, tenants in users.items():
        if len(tenants) > 1:
            problems.append(
                (
                    "$.tenants",
                    f"{path!r} is used by tenants {', '.join(sorted(tenants))}: each of them would "
                    "get read on it; mark every use 'shared: true' if this is intended",
                )
            )
    return problems


def _outside_scope(
    path: str, tenant: Tenant, t_index: int, *, template: str, mount: str, cluster: str
) -> str:
    """The problem of a path outside its tenant's scope, with the fixes that keep the tenants
    isolated first (the path, or the layout fields) and ``shared: true`` last, as what it is:
    a wider grant."""
    example = template.format(
        mount=mount, cluster=cluster, namespace=tenant.namespace, secret=path.rsplit("/", 1)[-1]
    )
    return (
        f"{path!r} is outside the scope of tenant {tenant.name!r} (namespace "
        f"{tenant.namespace}, path template {template!r}: its paths look like {example!r}). "
        "To keep the tenants isolated, move the secret to such a path, or describe the layout "
        "the paths really follow: metadata.pathTemplate (for every tenant) or "
        f"tenants[{t_index}].pathPrefix (for this one; a reviewer's field, docs/plan-format.md). "
        "'shared: true' on the secret also lets it through, but widens access: the path is then "
        "exempt from the tenant checks and other tenants may use it too"
    )


def check_isolation(plan: MigrationPlan, *, source: str = "<plan>") -> None:
    """Raise :class:`PlanError` naming every :func:`isolation_problems` entry (at most 20)."""
    problems = isolation_problems(plan)
    if not problems:
        return
    shown = "; ".join(f"{where}: {what}" for where, what in problems[:20])
    more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
    raise PlanError(
        f"the plan would let a tenant read secrets outside its own scope: {shown}{more}",
        source=source,
    )
