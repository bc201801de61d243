"""``target protect`` / ``target unprotect``: annotate workloads for injection, roll them out
once, record every outcome in the plan.

Per pending workload, in plan order (``docs/protect.md`` tells the whole story):

1. ``migrated`` and ``skipped`` workloads are never touched again (that is what resumes).
2. Drift check: the live pod template must still consume exactly the (Secret, key, env)
   triples the plan lists (``cloudtaser.discover.consumed_env``). On drift nothing is patched;
   the workload stays ``pending`` with the reason recorded.
3. Refusals (paused Deployment, ``OnDelete``, StatefulSet partition) leave it pending too;
   warnings (Recreate strategy, Argo CD / Flux / Helm ownership) are reported.
4. One strategic-merge patch of the pod template with a ``metadata.resourceVersion``
   precondition and field manager ``cloudtaser``: every annotation of
   :mod:`cloudtaser.annotations`, the inject label and the restart marker at once, so exactly
   one rollout happens. A workload that already carries exactly the intended annotations (the
   marker aside) is not patched again: it is only waited for and recorded. That is what makes
   a run killed between patch and plan write resume without a second rollout.
5. Wait by kubectl's rules (:mod:`cloudtaser.rollout`), then write the new status to the plan
   at once (atomic save), with time and actor.

The library never prints: progress goes to ``progress`` (a callable taking an
:class:`Event`), questions to ``decide`` (a callable taking a :class:`Proposal`, returning a
:class:`Decision`). ``cancel`` (a :class:`threading.Event`) asks the run to stop between
steps; a plan write in progress is always completed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import cloudtaser.annotations as ann
from cloudtaser import plan as planlib
from cloudtaser.errors import CloudtaserError, ClusterError, ConfigError, LockError
from cloudtaser.kube import FIELD_MANAGER, KubeSession, api_errors
from cloudtaser.plan import MigrationPlan, Tenant, Workload, WorkloadStatus
from cloudtaser.rollout import (
    RolloutCancelledError,
    RolloutFailedError,
    RolloutTimeoutError,
    blockers,
    dig,
    wait_for_rollout,
)
from cloudtaser.sanitize import printable

__all__ = [
    "Decision",
    "Event",
    "Outcome",
    "PlanLock",
    "Proposal",
    "RunOptions",
    "RunReport",
    "Selection",
    "WorkloadRef",
    "WorkloadResult",
    "build_patch",
    "build_removal_patch",
    "drift",
    "gitops_owners",
    "lock_path",
    "plan_triples",
    "protect",
    "unprotect",
]

#: How often a 409 Conflict (the object changed between our GET and PATCH) is retried.
CONFLICT_RETRIES: Final = 5

_KIND_ALIASES: Final = {
    "deployment": "Deployment",
    "deployments": "Deployment",
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "statefulsets": "StatefulSet",
    "sts": "StatefulSet",
    "daemonset": "DaemonSet",
    "daemonsets": "DaemonSet",
    "ds": "DaemonSet",
}


# --- values exchanged with the caller ------------------------------------------------------


@dataclass(frozen=True)
class WorkloadRef:
    """Which workload: tenant, namespace, kind, name."""

    tenant: str
    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class Outcome(enum.StrEnum):
    """What happened to one workload in this run."""

    #: Rolled out (or found already rolled out) and recorded ``migrated``.
    MIGRATED = "migrated"
    #: ``--no-wait``: patched and recorded without waiting for the rollout.
    APPLIED = "applied"
    #: Declined at the prompt: recorded ``skipped`` (protect) / left alone (unprotect).
    SKIPPED = "skipped"
    #: Not touched: drift, paused, OnDelete, partition, not found, nothing to inject.
    REFUSED = "refused"
    #: Patch or rollout failed or timed out; left ``pending`` with the error recorded.
    FAILED = "failed"
    #: The run was interrupted while this workload was waited for; it stays ``pending``.
    INTERRUPTED = "interrupted"
    #: ``--dry-run``: the server accepted the patch; nothing was changed.
    DRY_RUN = "dry-run"
    #: Unprotect: annotations removed, rolled out, back to ``pending``.
    UNPROTECTED = "unprotected"


class Decision(enum.StrEnum):
    """The answer to a :class:`Proposal`."""

    YES = "yes"
    NO = "no"
    QUIT = "quit"


@dataclass(frozen=True)
class MappingLine:
    """One secret of a workload as shown to the reviewer: source → vaultPath, field → ENV."""

    source: str
    vault_path: str
    fields: dict[str, str]
    via: str | None = None


@dataclass(frozen=True)
class Proposal:
    """What is about to happen to one workload, for a yes / no / quit decision."""

    action: str  # "protect" or "unprotect"
    ref: WorkloadRef
    replicas: int | None
    mapping: list[MappingLine]
    warnings: list[str]
    patch: dict[str, Any]
    #: The workload already carries the intended state: no patch, only wait and record.
    already_applied: bool


@dataclass(frozen=True)
class Event:
    """A progress line: ``ref`` may be ``None`` for run-level messages."""

    ref: WorkloadRef | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}" if self.ref else self.message


@dataclass
class WorkloadResult:
    """The outcome of one workload in this run."""

    ref: WorkloadRef
    outcome: Outcome
    message: str
    warnings: list[str] = field(default_factory=list)
    #: The exact patch sent (or, with ``--dry-run``, that would be sent).
    patch: dict[str, Any] | None = None
    already_applied: bool = False


@dataclass
class RunReport:
    """Everything a run did, in plan order."""

    results: list[WorkloadResult] = field(default_factory=list)
    interrupted: bool = False
    quit: bool = False
    stopped_on_error: bool = False
    #: Workloads selected but never reached (quit, interrupt, stop-on-error).
    not_reached: list[WorkloadRef] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def problems(self) -> bool:
        return any(r.outcome in {Outcome.REFUSED, Outcome.FAILED} for r in self.results)

    @property
    def failed(self) -> bool:
        return any(r.outcome == Outcome.FAILED for r in self.results)


@dataclass(frozen=True)
class Selection:
    """Limit a run to some tenants and/or workloads (empty: everything).

    ``tenants``: tenant names or namespaces. ``workloads``: ``kind/name``, ``namespace/name``
    or ``namespace/kind/name`` (kinds case-insensitive, with kubectl short names). A workload
    is selected when it matches any ``--workload`` (if given) and its tenant matches any
    ``--tenant`` (if given).
    """

    tenants: tuple[str, ...] = ()
    workloads: tuple[str, ...] = ()

    @functools.cached_property
    def _parsed(self) -> list[tuple[str | None, str | None, str]]:
        """The parsed ``workloads`` (parsed once, not once per workload of the plan)."""
        out: list[tuple[str | None, str | None, str]] = []
        for raw in self.workloads:
            parts = raw.strip().split("/")
            if len(parts) == 3 and all(parts):
                kind = _KIND_ALIASES.get(parts[1].lower())
                if kind is None:
                    raise ConfigError(f"--workload {raw!r}: unknown kind {parts[1]!r}")
                out.append((parts[0], kind, parts[2]))
            elif len(parts) == 2 and all(parts):
                kind = _KIND_ALIASES.get(parts[0].lower())
                out.append((None, kind, parts[1]) if kind else (parts[0], None, parts[1]))
            else:
                raise ConfigError(
                    f"--workload {raw!r}: expected KIND/NAME, NAMESPACE/NAME or NAMESPACE/KIND/NAME"
                )
        return out

    def matches(self, tenant: Tenant, workload: Workload) -> bool:
        if self.tenants and not ({tenant.name, tenant.namespace} & set(self.tenants)):
            return False
        if not self.workloads:
            return True
        return any(_match(p, tenant, workload) for p in self._parsed)

    def check(self, plan: MigrationPlan) -> None:
        """Raise :class:`ConfigError` for a ``--tenant`` / ``--workload`` that matches nothing."""
        for name in self.tenants:
            if not any(name in {t.name, t.namespace} for t in plan.tenants):
                raise ConfigError(f"--tenant {name!r} matches no tenant or namespace of the plan")
        for raw, parsed in zip(self.workloads, self._parsed, strict=True):
            if not any(_match(parsed, t, w) for t, w in plan.iter_workloads()):
                raise ConfigError(f"--workload {raw!r} matches no workload of the plan")


def _match(parsed: tuple[str | None, str | None, str], tenant: Tenant, workload: Workload) -> bool:
    namespace, kind, name = parsed
    return (
        workload.name == name
        and (kind is None or str(workload.kind) == kind)
        and (namespace is None or namespace == tenant.namespace)
    )


@dataclass(frozen=True)
class RunOptions:
    """How to run. ``vault_address`` is required by :func:`protect` (validated URL)."""

    actor: str
    vault_address: str | None = None
    dry_run: bool = False
    wait: bool = True
    timeout: float = 300.0
    poll_interval: float = 1.0
    parallel: int = 1
    stop_on_error: bool = True
    selection: Selection = Selection()


ProgressFn = Callable[[Event], None]
DecideFn = Callable[[Proposal], Decision]


# --- pure helpers ---------------------------------------------------------------------------


def plan_triples(workload: Workload) -> set[tuple[str, str, str]]:
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


def drift(planned: set[tuple[str, str, str]], live: set[tuple[str, str, str]]) -> list[str]:
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


#: Workload metadata that reveals a GitOps controller (or Helm) owning the object.
_ARGO_TRACKING = "argocd.argoproj.io/tracking-id"
_FLUX_LABELS = (
    ("kustomize.toolkit.fluxcd.io/name", "Flux Kustomization"),
    ("helm.toolkit.fluxcd.io/name", "Flux HelmRelease"),
)
_GITOPS_MANAGERS = {
    "argocd-controller": "Argo CD",
    "argocd-application-controller": "Argo CD",
    "argocd": "Argo CD",
    "kustomize-controller": "Flux (kustomize-controller)",
    "helm-controller": "Flux (helm-controller)",
    "gotk-sync-manager": "Flux",
}


def gitops_owners(obj: Mapping[str, Any]) -> list[str]:
    """Who else writes this workload: Argo CD, Flux, Helm (from labels, annotations and
    ``managedFields`` managers). Each entry is a short description for a warning."""
    meta = obj.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    owners: list[str] = []
    tracking = annotations.get(_ARGO_TRACKING)
    if tracking:
        app = str(tracking).split(":", 1)[0]
        owners.append(f"Argo CD (application {app!r}, tracking annotation)")
    for label, what in _FLUX_LABELS:
        if labels.get(label):
            ns = labels.get(label.replace("/name", "/namespace"), "")
            owners.append(f"{what} {ns + '/' if ns else ''}{labels[label]}")
    instance = labels.get("app.kubernetes.io/instance")
    helm = labels.get("app.kubernetes.io/managed-by") == "Helm" or bool(
        annotations.get("meta.helm.sh/release-name")
    )
    if instance and not tracking:
        owners.append(
            f"possibly Argo CD (label app.kubernetes.io/instance={instance}; also set by Helm)"
        )
    if helm:
        release = annotations.get("meta.helm.sh/release-name") or instance or "?"
        owners.append(f"Helm release {release!r} (the next helm upgrade rewrites the template)")
    seen: set[str] = set()
    for entry in meta.get("managedFields") or []:
        manager = str((entry or {}).get("manager") or "")
        tool = _GITOPS_MANAGERS.get(manager)
        if tool and manager not in seen:
            seen.add(manager)
            owners.append(f"{tool} (field manager {manager!r})")
    return owners


def build_patch(
    intended: Mapping[str, str],
    marker: str,
    resource_version: str | None,
    live_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The one strategic-merge patch of protect: inject label, annotations, restart marker,
    conditional on ``resource_version``.

    A managed key present on the live template but not intended any more (e.g. a
    ``vault-auth-path`` from an earlier plan) is set to ``null``, so after the patch the
    template matches the intent exactly and a re-run does not patch again.
    """
    stale = {
        key: None
        for key in ann.MANAGED_KEYS
        if key != ann.RESTARTED_AT and key in (live_annotations or {}) and key not in intended
    }
    patch: dict[str, Any] = {
        "spec": {
            "template": {
                "metadata": {
                    "labels": {ann.INJECT_LABEL: "true"},
                    "annotations": {**stale, **intended, ann.RESTARTED_AT: marker},
                }
            }
        }
    }
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def _template_meta(obj: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    meta = dig(obj, "spec", "template", "metadata") or {}
    return dict(meta.get("annotations") or {}), dict(meta.get("labels") or {})


def carries_protection(obj: Mapping[str, Any]) -> bool:
    """True when any annotation (or the label) protect writes is on the pod template."""
    live_ann, live_labels = _template_meta(obj)
    return any(k in live_ann for k in ann.MANAGED_KEYS) or ann.INJECT_LABEL in live_labels


def build_removal_patch(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The one patch of unprotect: ``null`` for each annotation (and the label) protect adds
    that is present; ``None`` when nothing is there."""
    live_ann, live_labels = _template_meta(obj)
    annotations: dict[str, None] = {k: None for k in ann.MANAGED_KEYS if k in live_ann}
    template_meta: dict[str, Any] = {}
    if annotations:
        template_meta["annotations"] = annotations
    if ann.INJECT_LABEL in live_labels:
        template_meta["labels"] = {ann.INJECT_LABEL: None}
    if not template_meta:
        return None
    patch: dict[str, Any] = {"spec": {"template": {"metadata": template_meta}}}
    rv = dig(obj, "metadata", "resourceVersion")
    if rv:
        patch["metadata"] = {"resourceVersion": rv}
    return patch


def _is_applied(obj: Mapping[str, Any], intended: Mapping[str, str]) -> bool:
    live_ann, live_labels = _template_meta(obj)
    return ann.matches_intended(live_ann, intended) and live_labels.get(ann.INJECT_LABEL) == "true"


def _replicas(kind: str, obj: Mapping[str, Any]) -> int | None:
    if kind == "DaemonSet":
        value = dig(obj, "status", "desiredNumberScheduled")
    else:
        value = dig(obj, "spec", "replicas")
        if value is None:
            value = 1
    return value if isinstance(value, int) else None


def _mapping(workload: Workload) -> list[MappingLine]:
    return [
        MappingLine(source=s.source, vault_path=s.vault_path, fields=dict(s.fields), via=s.via)
        for s in workload.secrets
    ]


def _one_line(text: str, limit: int = 1000) -> str:
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


# --- lock -----------------------------------------------------------------------------------


def lock_path(plan_path: str | os.PathLike[str]) -> Path:
    """``<plan>.lock`` next to the plan."""
    return Path(f"{os.fspath(plan_path)}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PlanLock:
    """An exclusive lock on a plan: ``<plan>.lock`` created with ``O_CREAT | O_EXCL``.

    The file holds JSON ``{pid, host, started, actor}``. A lock left behind by a dead process
    (same host, pid no longer alive — e.g. after ``kill -9``) is stale and taken over; a lock
    held by a live process, or by another host, makes :meth:`acquire` raise
    :class:`LockError` naming who holds it and how to clear it.
    """

    def __init__(self, plan_path: str | os.PathLike[str], *, actor: str = "") -> None:
        self.path = lock_path(plan_path)
        self.actor = actor
        self._held = False

    def _content(self) -> bytes:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "actor": self.actor,
            }
        ).encode()

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise LockError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        try:
            os.write(fd, self._content())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The holder recorded in the lock at ``path`` (None: no lock).

        The lock may sit in a shared directory: it is opened without following a symlink and
        without blocking (a FIFO would hang the run), and only a regular file is accepted;
        anything else is a :class:`LockError` that never echoes what the path points to.
        """
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._not_a_lock(path, "a symbolic link or unreadable") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._not_a_lock(path, "not a regular file")
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            data = json.loads(raw.decode("utf-8") or "null")
        except (ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _not_a_lock(path: Path, what: str) -> LockError:
        return LockError(
            f"the plan lock {path} exists but is {what}; cloudtaser only creates regular "
            "files there. Remove it (and check who put it there) and run again"
        )

    def _stale(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        return (
            holder.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and pid > 0
            and not _pid_alive(pid)
        )

    def acquire(self) -> None:
        for _attempt in range(5):
            if self._try_create():
                self._held = True
                return
            holder = self._read(self.path)
            if holder is None:  # released meanwhile
                continue
            if not self._stale(holder):
                raise self._busy(holder)
            # Break the stale lock: move it aside under a unique name first, so two runs
            # breaking the same stale lock cannot remove each other's fresh lock.
            aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
            try:
                self.path.rename(aside)
            except FileNotFoundError:
                continue
            moved = self._read(aside) or {}
            if moved != holder and not self._stale(moved):
                # we moved a fresh lock of another run: put it back (unless a third took over)
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
            with contextlib.suppress(OSError):
                aside.unlink()
        holder = self._read(self.path) or {}
        raise self._busy(holder)

    def _busy(self, holder: Mapping[str, Any]) -> LockError:
        def field(key: str) -> str:
            value = holder.get(key, "?")
            return printable(str(value) if isinstance(value, str | int) else "?", limit=80)

        who = f"pid {field('pid')} on {field('host')}, started {field('started')}" + (
            f" by {field('actor')}" if holder.get("actor") else ""
        )
        return LockError(
            f"another cloudtaser run holds the plan lock {self.path} ({_one_line(who, 300)}); "
            "wait for it to finish. If no such run is alive (e.g. it was killed on another "
            "machine), delete the lock file and run again"
        )

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> PlanLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- the cluster side ----------------------------------------------------------------------


def _resource(kind: str) -> Any:
    from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet  # noqa: PLC0415

    return {"Deployment": Deployment, "StatefulSet": StatefulSet, "DaemonSet": DaemonSet}[kind]


def _to_dict(obj: Any) -> dict[str, Any]:
    import msgspec  # noqa: PLC0415

    data = msgspec.to_builtins(obj)
    return data if isinstance(data, dict) else {}


class _Cluster:
    """The few API calls protect makes, each wrapped in :func:`api_errors`.

    The wait workers of ``--parallel`` share the session's one lightkube client with the main
    thread. lightkube 1.0.1 / httpx2 crashed the interpreter (SIGSEGV) when several threads used
    it at once (``benchmarks/discover.py``), so the calls take turns: waiting is mostly sleeping,
    and one GET per interval per workload does not need to overlap another.
    """

    def __init__(self, session: KubeSession) -> None:
        self.client = session.client
        self._secret_keys: dict[tuple[str, str], list[str] | None] = {}
        self._lock = threading.Lock()

    def _get(self, resource: Any, name: str, namespace: str, action: str) -> Any:
        """GET one object, ``None`` when it does not exist (404)."""
        try:
            with self._lock, api_errors(action):
                return self.client.get(resource, name, namespace=namespace)
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def get(self, ref: WorkloadRef) -> dict[str, Any] | None:
        obj = self._get(_resource(ref.kind), ref.name, ref.namespace, f"read {ref}")
        return None if obj is None else _to_dict(obj)

    def patch(self, ref: WorkloadRef, body: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]:
        from lightkube.types import PatchType  # noqa: PLC0415

        action = f"patch {ref}" + (" (server-side dry run)" if dry_run else "")
        with self._lock, api_errors(action):
            obj = self.client.patch(
                _resource(ref.kind),
                ref.name,
                dict(body),
                namespace=ref.namespace,
                patch_type=PatchType.STRATEGIC,
                field_manager=FIELD_MANAGER,
                dry_run=dry_run,
            )
        return _to_dict(obj)

    def secret_keys(self, namespace: str, name: str) -> list[str] | None:
        """The keys (never the values) of a Secret, ``None`` when it does not exist."""
        from lightkube.resources.core_v1 import Secret  # noqa: PLC0415

        key = (namespace, name)
        if key not in self._secret_keys:  # only the main thread checks drift
            secret = self._get(
                Secret, name, namespace, f"read the keys of Secret {namespace}/{name} (drift check)"
            )
            self._secret_keys[key] = (
                sorted((secret.data or {}).keys()) if secret is not None else None
            )
            del secret
        return self._secret_keys[key]


def _live_triples(
    cluster: _Cluster, ref: WorkloadRef, obj: Mapping[str, Any]
) -> set[tuple[str, str, str]]:
    from cloudtaser.discover import consumed_env  # noqa: PLC0415

    template = dig(obj, "spec", "template") or {}
    return set(consumed_env(template, lambda name: cluster.secret_keys(ref.namespace, name)))


# --- the run --------------------------------------------------------------------------------


class _Runner:
    """State shared by one protect / unprotect run (main thread + wait workers)."""

    def __init__(
        self,
        session: KubeSession,
        plan_path: Path,
        plan: MigrationPlan,
        options: RunOptions,
        *,
        progress: ProgressFn | None,
        decide: DecideFn | None,
        cancel: threading.Event,
    ) -> None:
        self.cluster = _Cluster(session)
        self.plan_path = plan_path
        self.plan = plan
        self.options = options
        self._progress = progress
        self.decide = decide
        self.cancel = cancel
        self.report = RunReport()
        self._plan_lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(max(1, options.parallel))

    # -- reporting and recording --

    def emit(self, ref: WorkloadRef | None, message: str, *, warning: bool = False) -> None:
        if self._progress is not None:
            self._progress(Event(ref=ref, message=message, warning=warning))

    def result(self, res: WorkloadResult) -> None:
        with self._plan_lock:
            self.report.results.append(res)
        if res.outcome == Outcome.FAILED and self.options.stop_on_error:
            self._stop.set()

    def record(
        self,
        workload: Workload,
        status: WorkloadStatus,
        *,
        reason: str,
        error: str | None = None,
    ) -> None:
        """Change the workload's status (history entry with time and actor) and save the plan
        atomically. Never interrupted halfway: the save is a single rename."""
        if self.options.dry_run:
            return
        with self._plan_lock:
            workload.set_status(status, by=self.options.actor, reason=_one_line(reason))
            workload.last_error = _one_line(error) if error else None
            planlib.save(self.plan, self.plan_path)

    # -- scheduling --

    def acquire_slot(self) -> bool:
        """Wait for a free worker slot; False when the run must stop instead."""
        while True:
            if self.cancel.is_set() or self._stop.is_set():
                return False
            if self._slots.acquire(timeout=0.2):
                if self.cancel.is_set() or self._stop.is_set():
                    self._slots.release()
                    return False
                return True

    def release_slot(self) -> None:
        self._slots.release()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- waiting --

    def wait_and_record(
        self,
        ref: WorkloadRef,
        workload: Workload,
        *,
        generation: int,
        done_status: WorkloadStatus,
        done_outcome: Outcome,
        done_reason: str,
        warnings: list[str],
        patch: dict[str, Any] | None,
        already: bool,
    ) -> None:
        try:
            if self.options.wait:
                state = wait_for_rollout(
                    lambda: self._fetch_for_wait(ref),
                    ref.kind,
                    min_generation=generation,
                    timeout=self.options.timeout,
                    interval=self.options.poll_interval,
                    cancel=self.cancel,
                    on_progress=lambda msg: self.emit(ref, msg),
                )
                message = state.message
                reason = done_reason
                outcome = done_outcome
            else:
                message = "rollout started; not waited for (--no-wait)"
                reason = f"{done_reason}; rollout not awaited (--no-wait)"
                outcome = Outcome.APPLIED
            self.record(workload, done_status, reason=reason)
            self.emit(ref, f"{message}; recorded {done_status}")
            self.result(
                WorkloadResult(ref, outcome, message, warnings, patch, already_applied=already)
            )
        except RolloutCancelledError as exc:
            error = f"interrupted while waiting for the rollout: {exc}; re-run to resume"
            self.record(workload, WorkloadStatus.PENDING, reason="interrupted", error=error)
            self.result(WorkloadResult(ref, Outcome.INTERRUPTED, error, warnings, patch, already))
        except (RolloutFailedError, RolloutTimeoutError, CloudtaserError) as exc:
            error = f"rollout did not complete: {exc}"
            self.emit(ref, error, warning=True)
            self.record(workload, WorkloadStatus.PENDING, reason="rollout failed", error=error)
            self.result(WorkloadResult(ref, Outcome.FAILED, error, warnings, patch, already))

    def _fetch_for_wait(self, ref: WorkloadRef) -> Mapping[str, Any]:
        obj = self.cluster.get(ref)
        if obj is None:
            raise RolloutFailedError(f"{ref} was deleted while rolling out")
        return obj


def _ref(tenant: Tenant, workload: Workload) -> WorkloadRef:
    return WorkloadRef(
        tenant=tenant.name, namespace=tenant.namespace, kind=str(workload.kind), name=workload.name
    )


@dataclass
class _Inspection:
    obj: dict[str, Any] | None = None
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _inspect_for_protect(
    runner: _Runner, ref: WorkloadRef, workload: Workload, intended: Mapping[str, str]
) -> _Inspection:
    obj = runner.cluster.get(ref)
    if obj is None:
        return _Inspection(refusals=[f"{ref} does not exist in the cluster"])
    found = _Inspection(obj=obj)
    if _is_applied(obj, intended):
        # Our own earlier patch (a run killed before recording): no drift check is possible
        # against an injected template that still carries the Secret refs - and none needed.
        found.warnings.extend(f"GitOps: {o}" for o in gitops_owners(obj))
        return found
    differences = drift(plan_triples(workload), _live_triples(runner.cluster, ref, obj))
    if differences:
        found.refusals.append(
            "drift since discovery: "
            + "; ".join(differences)
            + ". Nothing was changed; re-run discover (or fix the plan) and review again"
        )
    rules = blockers(ref.kind, obj)
    found.refusals.extend(rules.refusals)
    found.warnings.extend(rules.warnings)
    found.warnings.extend(
        f"GitOps: owned by {o}: the annotations must also be committed to Git or they will be "
        "reverted (docs/protect.md)"
        for o in gitops_owners(obj)
    )
    return found


def _check_options(options: RunOptions) -> None:
    if options.parallel < 1 or options.parallel > 64:
        raise ConfigError("--parallel must be between 1 and 64")
    if options.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    if options.poll_interval <= 0:
        raise ConfigError("the poll interval must be positive")
    if not options.actor or not options.actor.isprintable():
        raise ConfigError("the actor name must be a non-empty printable string")


@contextlib.contextmanager
def _maybe_locked(plan_path: Path, options: RunOptions) -> Iterator[None]:
    if options.dry_run:
        yield
        return
    with PlanLock(plan_path, actor=options.actor):
        yield


def protect(
    session: KubeSession,
    plan_path: str | os.PathLike[str],
    options: RunOptions,
    *,
    progress: ProgressFn | None = None,
    decide: DecideFn | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Protect every selected ``pending`` workload of the plan at ``plan_path``.

    Takes the plan lock (not with ``dry_run``), loads the plan, and for each workload in plan
    order checks, asks ``decide`` (when given), patches once, waits (in up to
    ``options.parallel`` workers) and saves the plan after each status change.
    """
    _check_options(options)
    if not options.vault_address:
        raise ConfigError("protect needs the vault address the pods will use (--vault-address)")
    from cloudtaser.config import validate_vault_address  # noqa: PLC0415

    vault_address = validate_vault_address(options.vault_address, what="--vault-address")
    return _run(
        session,
        Path(plan_path),
        options,
        progress=progress,
        decide=decide,
        cancel=cancel or threading.Event(),
        wanted=lambda w: w.effective_status == WorkloadStatus.PENDING,
        summary="{todo} pending of {selected} selected workload(s)",
        step=lambda runner, t, w: _protect_one(runner, t, w, vault_address),
        isolate=True,
    )


def unprotect(
    session: KubeSession,
    plan_path: str | os.PathLike[str],
    options: RunOptions,
    *,
    progress: ProgressFn | None = None,
    decide: DecideFn | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Undo protect for the selected ``migrated`` (or half-protected ``pending``) workloads:
    remove exactly the annotations and label protect adds (one patch, one rollout), wait,
    and record the workload as ``pending`` again."""
    _check_options(options)
    return _run(
        session,
        Path(plan_path),
        options,
        progress=progress,
        decide=decide,
        cancel=cancel or threading.Event(),
        wanted=lambda w: w.effective_status != WorkloadStatus.SKIPPED,
        summary="{todo} of {selected} selected workload(s) may carry protection",
        step=_unprotect_one,
    )


def _run(
    session: KubeSession,
    path: Path,
    options: RunOptions,
    *,
    progress: ProgressFn | None,
    decide: DecideFn | None,
    cancel: threading.Event,
    wanted: Callable[[Workload], bool],
    summary: str,
    step: Callable[[_Runner, Tenant, Workload], Callable[[], None] | None],
    isolate: bool = False,
) -> RunReport:
    """What protect and unprotect share: take the plan lock (not with ``dry_run``), load the
    plan, select the ``wanted`` workloads, say how many (``summary`` is formatted with
    ``todo`` and ``selected``) and :func:`_drive` ``step`` over them."""
    with _maybe_locked(path, options):
        plan = planlib.load(path)
        if isolate:
            # the rule book: never point a tenant's pods at paths outside its scope
            planlib.check_isolation(plan, source=str(path))
        options.selection.check(plan)
        selected = [(t, w) for t, w in plan.iter_workloads() if options.selection.matches(t, w)]
        runner = _Runner(
            session, path, plan, options, progress=progress, decide=decide, cancel=cancel
        )
        todo = [(t, w) for t, w in selected if wanted(w)]
        runner.emit(
            None,
            summary.format(todo=len(todo), selected=len(selected))
            + (" (server-side dry run: nothing will change)" if options.dry_run else ""),
        )
        _drive(runner, todo, lambda t, w: step(runner, t, w))
        return runner.report


def _drive(
    runner: _Runner,
    todo: Sequence[tuple[Tenant, Workload]],
    step: Callable[[Tenant, Workload], Callable[[], None] | None],
) -> None:
    """Run ``step`` per workload in the main thread (inspect, ask, patch); a returned callable
    (wait + record) runs in a worker while the next workload is prepared."""
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(
        max_workers=max(1, runner.options.parallel), thread_name_prefix="cloudtaser-wait"
    ) as pool:
        try:
            for index, (tenant, workload) in enumerate(todo):
                if not runner.acquire_slot():
                    runner.report.not_reached.extend(_ref(t, w) for t, w in todo[index:])
                    break
                waiter: Callable[[], None] | None = None
                try:
                    waiter = step(tenant, workload)
                finally:
                    if waiter is None:
                        runner.release_slot()
                if waiter is not None:
                    futures.append(pool.submit(_release_after, runner, waiter))
                if runner.report.quit:
                    runner.report.not_reached.extend(_ref(t, w) for t, w in todo[index + 1 :])
                    break
        except BaseException:
            runner.cancel.set()
            raise
        finally:
            unexpected = [e for e in (f.exception() for f in futures) if e is not None]
    if unexpected:
        raise unexpected[0]  # a bug in a wait worker: surface it, never swallow it
    runner.report.interrupted = runner.cancel.is_set()
    runner.report.stopped_on_error = runner.stopped and not runner.report.interrupted
    order = {_ref(t, w): i for i, (t, w) in enumerate(todo)}
    runner.report.results.sort(key=lambda r: order.get(r.ref, len(order)))


def _release_after(runner: _Runner, waiter: Callable[[], None]) -> None:
    try:
        waiter()
    finally:
        runner.release_slot()


@dataclass(frozen=True)
class _Step:
    """One inspected workload, ready for the steps protect and unprotect share."""

    obj: dict[str, Any]
    #: What to send; ``None`` when the workload already carries the intended state (a run
    #: killed after its patch, before recording): then it is only waited for and recorded.
    patch: dict[str, Any] | None
    #: What the reviewer is shown (protect shows its patch even when it is not sent again).
    shown_patch: dict[str, Any]
    warnings: list[str]


@dataclass(frozen=True)
class _Flow:
    """What protect and unprotect say and record differently around the shared steps of
    :func:`_apply` (ask, patch with 409 retries, dry run, wait, record). A message that is
    ``None`` is not emitted."""

    action: str
    done_status: WorkloadStatus
    done_outcome: Outcome
    #: Plan reasons once the rollout is done: after our patch / found already applied.
    patched_reason: str
    found_reason: str
    #: Declined at the prompt: the status recorded (``None``: the plan is not touched).
    declined_status: WorkloadStatus | None
    declined_message: str
    already_message: str | None
    already_dry_run: str
    already_dry_run_applied: bool
    conflict_message: str | None
    dry_run_message: str | None
    dry_run_result: str
    patched_message: str
    patched_no_wait_message: str
    #: An error leaves the workload ``pending`` with this reason (``None``: plan not touched).
    failed_reason: str | None


_PROTECT: Final = _Flow(
    action="protect",
    done_status=WorkloadStatus.MIGRATED,
    done_outcome=Outcome.MIGRATED,
    patched_reason="protected: annotations applied and rolled out",
    found_reason="protected: annotations found applied; rollout confirmed",
    declined_status=WorkloadStatus.SKIPPED,
    declined_message="skipped (recorded in the plan)",
    already_message="already carries the intended annotations: not patched again",
    already_dry_run="already annotated; a real run would only wait and record",
    already_dry_run_applied=True,
    conflict_message="changed while we looked at it (409); checking again",
    dry_run_message="server-side dry run accepted the patch",
    dry_run_result="patch accepted (dry run)",
    patched_message="patched (one rollout); waiting",
    patched_no_wait_message="patched",
    failed_reason="protect failed",
)

_UNPROTECT: Final = _Flow(
    action="unprotect",
    done_status=WorkloadStatus.PENDING,
    done_outcome=Outcome.UNPROTECTED,
    patched_reason="unprotected: cloudtaser annotations removed and rolled out",
    found_reason="unprotected: cloudtaser annotations removed and rolled out",
    declined_status=None,
    declined_message="left as it is",
    already_message=None,
    already_dry_run="annotations already removed",
    already_dry_run_applied=False,
    conflict_message=None,
    dry_run_message=None,
    dry_run_result="removal accepted (dry run)",
    patched_message="annotations removed (one rollout)",
    patched_no_wait_message="annotations removed (one rollout)",
    failed_reason=None,
)


def _protect_one(
    runner: _Runner, tenant: Tenant, workload: Workload, vault_address: str
) -> Callable[[], None] | None:
    ref = _ref(tenant, workload)
    try:
        intended = ann.build_annotations(runner.plan, tenant, workload, vault_address)
    except ann.AnnotationError as exc:
        _refuse(runner, ref, str(exc), [], record=workload)
        return None

    def inspect() -> _Step | None:
        found = _inspect_for_protect(runner, ref, workload, intended)
        for warning in found.warnings:
            runner.emit(ref, warning, warning=True)
        if found.refusals or found.obj is None:
            _refuse(runner, ref, " ".join(found.refusals), found.warnings, record=workload)
            return None
        obj = found.obj
        already = _is_applied(obj, intended)
        rv = dig(obj, "metadata", "resourceVersion")
        patch = build_patch(intended, ann.restart_marker(), rv, _template_meta(obj)[0])
        return _Step(obj, None if already else patch, patch, found.warnings)

    return _apply(runner, _PROTECT, ref, workload, inspect)


def _unprotect_one(
    runner: _Runner, tenant: Tenant, workload: Workload
) -> Callable[[], None] | None:
    ref = _ref(tenant, workload)
    status = workload.effective_status

    def inspect() -> _Step | None:
        obj = runner.cluster.get(ref)
        if obj is None:
            if status == WorkloadStatus.MIGRATED:
                _refuse(runner, ref, f"{ref} does not exist in the cluster", [])
            return None
        removal = build_removal_patch(obj)
        if removal is None and status != WorkloadStatus.MIGRATED:
            return None  # pending and clean: nothing to undo
        rules = blockers(ref.kind, obj)
        if removal is not None and rules.refusals:
            _refuse(runner, ref, " ".join(rules.refusals), rules.warnings)
            return None
        return _Step(obj, removal, removal or {}, list(rules.warnings))

    return _apply(runner, _UNPROTECT, ref, workload, inspect)


def _apply(
    runner: _Runner,
    flow: _Flow,
    ref: WorkloadRef,
    workload: Workload,
    inspect: Callable[[], _Step | None],
) -> Callable[[], None] | None:
    """The per-workload steps protect and unprotect share, in the main thread: inspect (again
    after a 409 Conflict), ask once, patch once. Returns the wait + record step for a worker,
    or ``None`` when the workload is done with (its result already reported)."""
    opts = runner.options
    asked = False
    try:
        for _attempt in range(CONFLICT_RETRIES):
            step = inspect()
            if step is None:
                return None
            if not asked:
                asked = True
                if not _ask(runner, flow, ref, workload, step):
                    return None
            if step.patch is None:
                if flow.already_message is not None:
                    runner.emit(ref, flow.already_message)
                if opts.dry_run:
                    runner.result(
                        WorkloadResult(
                            ref,
                            Outcome.DRY_RUN,
                            flow.already_dry_run,
                            step.warnings,
                            None,
                            already_applied=flow.already_dry_run_applied,
                        )
                    )
                    return None
                return _waiter(
                    runner, flow, ref, workload, obj=step.obj, warnings=step.warnings, patch=None
                )
            try:
                patched = runner.cluster.patch(ref, step.patch, dry_run=opts.dry_run)
            except ClusterError as exc:
                if exc.status == 409:
                    if flow.conflict_message is not None:
                        runner.emit(ref, flow.conflict_message)
                    continue
                raise
            if opts.dry_run:
                if flow.dry_run_message is not None:
                    runner.emit(ref, flow.dry_run_message)
                runner.result(
                    WorkloadResult(
                        ref, Outcome.DRY_RUN, flow.dry_run_result, step.warnings, step.patch
                    )
                )
                return None
            runner.emit(ref, flow.patched_message if opts.wait else flow.patched_no_wait_message)
            return _waiter(
                runner, flow, ref, workload, obj=patched, warnings=step.warnings, patch=step.patch
            )
        raise ClusterError(f"{ref} kept changing while we tried to patch it (409 Conflict)")
    except CloudtaserError as exc:
        error = _one_line(str(exc))
        runner.emit(ref, error, warning=True)
        if flow.failed_reason is not None:
            runner.record(workload, WorkloadStatus.PENDING, reason=flow.failed_reason, error=error)
        runner.result(WorkloadResult(ref, Outcome.FAILED, error))
        return None


def _ask(runner: _Runner, flow: _Flow, ref: WorkloadRef, workload: Workload, step: _Step) -> bool:
    """Ask ``decide`` (when given) about the workload; False when it is done with (declined,
    or the run quits or was interrupted)."""
    if runner.decide is None:
        return True
    answer = runner.decide(
        Proposal(
            action=flow.action,
            ref=ref,
            replicas=_replicas(ref.kind, step.obj),
            mapping=_mapping(workload),
            warnings=step.warnings,
            patch=step.shown_patch,
            already_applied=step.patch is None,
        )
    )
    if answer == Decision.QUIT or runner.cancel.is_set():
        runner.report.quit = answer == Decision.QUIT
        runner.report.not_reached.append(ref)
        return False
    if answer == Decision.NO:
        if flow.declined_status is not None:
            runner.record(
                workload, flow.declined_status, reason="declined at the interactive prompt"
            )
        runner.emit(ref, flow.declined_message)
        runner.result(WorkloadResult(ref, Outcome.SKIPPED, "declined", step.warnings))
        return False
    return True


def _waiter(
    runner: _Runner,
    flow: _Flow,
    ref: WorkloadRef,
    workload: Workload,
    *,
    obj: Mapping[str, Any],
    warnings: list[str],
    patch: dict[str, Any] | None,
) -> Callable[[], None]:
    """Wait for the rollout of ``obj``'s generation and record ``flow.done_status``;
    ``patch`` is ``None`` when the workload was found already applied."""
    generation = int(dig(obj, "metadata", "generation") or 0)
    already = patch is None

    def run() -> None:
        runner.wait_and_record(
            ref,
            workload,
            generation=generation,
            done_status=flow.done_status,
            done_outcome=flow.done_outcome,
            done_reason=flow.found_reason if already else flow.patched_reason,
            warnings=warnings,
            patch=patch,
            already=already,
        )

    return run


def _refuse(
    runner: _Runner,
    ref: WorkloadRef,
    why: str,
    warnings: list[str],
    *,
    record: Workload | None = None,
) -> None:
    """Leave the workload unchanged. Protect records the refusal (``record``: the workload
    stays ``pending`` with the reason); unprotect refusals change nothing, not even the plan."""
    why = _one_line(why)
    runner.emit(ref, f"not changed: {why}", warning=True)
    if record is not None:
        runner.record(record, WorkloadStatus.PENDING, reason="refused", error=why)
    runner.result(WorkloadResult(ref, Outcome.REFUSED, why, warnings))
