"""Where a pod template reads a migrated variable besides the process environment: pure
functions shared by ``discover`` (``envUses`` in the plan), ``protect`` (a warning) and
``finalize`` (which keeps the Secret references these readers need unless the runtime
serves them).

The runtime hands the vault's values to the one process the wrapper starts. Everything else
that reads a variable takes it from the **container spec's** env, which finalize is about to
strip: the kubelet's ``$(VAR)`` expansion, exec probes and lifecycle hooks (the container
runtime starts them with the env of the container spec, not the wrapper's child env). Init
containers are not wrapped at all. So a variable is *used* (:class:`Consumer`) when:

* **``$(NAME)`` in ``command``, ``args`` or another env entry's ``value``**, read with the
  kubelet's rules (``third_party/forked/golang/expansion/expand.go``): ``$(`` up to the first
  ``)`` names a variable; ``$$`` is an escaped ``$``, so ``$$(NAME)`` is literal text, not a use;
  an unclosed ``$(`` is literal. An env value's reference counts whatever the order of the env
  list (the kubelet expands only variables defined earlier; counting later ones keeps more,
  never less). ``$NAME`` there is not a use: a shell started as the process is a child of the
  wrapper and gets the value from it.
* **an exec probe (liveness / readiness / startup) or a lifecycle hook (postStart / preStop)**
  whose ``exec.command`` has an element that contains ``NAME`` as a whole word (not preceded
  or followed by a letter, digit or ``_``). That covers ``$NAME``, ``${NAME}``, ``${NAME:-x}``,
  ``$(NAME)`` and a program given the name (``printenv NAME``) in plain and ``sh -c`` forms,
  and not ``$NAME_2`` or ``MY_NAME``.
* **an exec probe or hook that runs a script file**, conservatively: a word of a command
  element (split at blanks and shell punctuation) that ends in ``.sh``, ``.bash``, ``.py``,
  ``.pl`` or ``.rb``, or that is a path under a ``volumeMounts[].mountPath`` of the container
  (e.g. bitnami redis' ``/health/ping_readiness_local.sh``, which reads ``$REDIS_PASSWORD``
  inside), counts as using **every** migrated variable of that container ("runs a script
  that may read it").

* **``$(NAME)`` in a volume mount's ``subPathExpr``** (the kubelet expands it from the
  spec's env; no runtime can serve it).

``httpGet``, ``tcpSocket``, ``grpc`` and ``sleep`` handlers never read env. Not detected: a
program that reads a variable without it being named (``mysqladmin`` reads ``MYSQL_PWD``,
``psql`` ``PGPASSWORD``) or a script without one of those suffixes outside a volume; a reviewer
adds an ``envUses`` entry to the plan for such a case, and finalize keeps the reference
(docs/lifecycle.md, "What finalize keeps, and why").

**What the runtime serves** (issue 30): an injector with that support wraps init containers,
hands ``$(VAR)`` references to migrated variables to the wrapper (``wrap --expand=``) and routes
an exec handler that names one (:func:`mentions`, its ``UsesVariable``) through
``cloudtaser-runtime exec``. :class:`DesignCoverage` is that design (what ``protect`` warns
about is what it cannot serve); :class:`ProvenCoverage` is what the live pods show, the only
thing finalize lifts its guard for (:func:`keep_reasons`).

Only variables the caller names per container (the migrated ones) are looked for; names and
paths only, never a value. Everything here is a pure function of plain-dict pod templates.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cloudtaser.contract import WRAPPER_PATH, references
from cloudtaser.plan.model import EnvUse, EnvUseWhere
from cloudtaser.plan.rules import shown
from cloudtaser.target.podspec import EnvConsumption

__all__ = [
    "CANNOT_SERVE_NOTE",
    "DESIGN_COVERAGE",
    "EXEC_RUNNER",
    "EXPAND_FLAG",
    "INIT_REASON",
    "SCRIPT_SUFFIXES",
    "UNSERVED_NOTE",
    "Consumer",
    "Coverage",
    "DesignCoverage",
    "Migrated",
    "ProvenCoverage",
    "consumers",
    "env_uses",
    "expansion_names",
    "keep_reasons",
    "mentions",
    "migrated_by_container",
    "names_word",
    "script_words",
]

#: Why every Secret reference of an init container stays (the injector wraps only
#: ``spec.containers``, so an init container still reads the Kubernetes Secret).
INIT_REASON: Final = (
    "the runtime does not serve init containers (the injector wraps only containers)"
)
#: Why a use the runtime could serve still keeps its reference (finalize, with the live pods).
UNSERVED_NOTE: Final = "the injected pods do not show the runtime serving it"
#: Why a use keeps its reference whatever the injector does.
CANNOT_SERVE_NOTE: Final = "the runtime cannot serve it"
#: A command word ending in one of these is a script that may read any variable.
SCRIPT_SUFFIXES: Final = (".sh", ".bash", ".py", ".pl", ".rb")

#: ``(container name, init)`` -> the migrated variables that container takes from a Secret.
Migrated = Mapping[tuple[str, bool], Iterable[str]]

_HANDLERS: Final[tuple[tuple[EnvUseWhere, tuple[str, ...]], ...]] = (
    ("livenessProbe", ("livenessProbe",)),
    ("readinessProbe", ("readinessProbe",)),
    ("startupProbe", ("startupProbe",)),
    ("postStart", ("lifecycle", "postStart")),
    ("preStop", ("lifecycle", "preStop")),
)
_HANDLER_NAMES: Final = frozenset(where for where, _path in _HANDLERS)
_EXPANDED: Final[tuple[EnvUseWhere, ...]] = ("command", "args")
_WORD_CHAR: Final = "A-Za-z0-9_"
#: Blanks and shell punctuation that separate the words of one command element.
_WORD_SPLIT: Final = re.compile(r"""[\s;|&()<>'"`=,{}$]+""")


@dataclass(frozen=True)
class Consumer:
    """One place in ``container`` that reads ``env`` from the container spec's env.

    ``where`` is one of the plan's :data:`~cloudtaser.plan.model.EnvUseWhere`; ``target`` (for
    ``where == "env"``) the env entry whose ``value`` expands ``$(env)``; ``script`` (probes and
    hooks) the script the handler runs, when the use is only presumed from it.
    """

    env: str
    container: str
    init: bool
    where: EnvUseWhere
    target: str = ""
    script: str = ""
    #: A probe or hook whose exec command names a migrated variable the way the injector
    #: looks for (:func:`mentions`): the injector runs the whole handler with the app's
    #: environment, so every use in it can be served.
    routable: bool = False

    @property
    def sort_key(self) -> tuple[str, bool, str, str, str, str]:
        return (self.container, self.init, self.env, self.where, self.target, self.script)

    @property
    def reason(self) -> str:
        """One readable phrase (names and the script's path only, never a command or value)."""
        if self.where in {"command", "args"}:
            return f"$({self.env}) in its {self.where}"
        if self.where == "env":
            return f"$({self.env}) in the value of env {self.target}"
        if self.where == "subPathExpr":
            return f"$({self.env}) in the subPathExpr of its volume mount {shown(self.target)}"
        handler = self.where if self.where.endswith("Probe") else f"{self.where} hook"
        if self.script:
            return f"its {handler} runs a script that may read it ({shown(self.script)})"
        return f"its {handler} exec command names it"

    def env_use(self) -> EnvUse:
        """The plan's form (which drops ``script``: the reviewer sees the probe or hook)."""
        return EnvUse(
            env=self.env,
            container=self.container,
            init=self.init,
            where=self.where,
            target=(self.target or None) if self.where == "env" else None,
        )


def expansion_names(text: str) -> list[str]:
    """The variable names ``text`` references by the kubelet's ``$(NAME)`` rules, in order:
    :func:`cloudtaser.contract.references`, the Python twin of the expansion the wrapper
    applies (``$$`` is an escaped ``$``, so ``$$(A)`` is no reference; an unclosed ``$(`` and
    ``$`` before any other character are literal)."""
    return references(text)


def names_word(text: str, name: str) -> bool:
    """``name`` occurs in ``text`` as a whole word (no letter, digit or ``_`` either side)."""
    pattern = rf"(?<![{_WORD_CHAR}]){re.escape(name)}(?![{_WORD_CHAR}])"
    return re.search(pattern, text) is not None


def script_words(text: str, mount_paths: Sequence[str]) -> list[str]:
    """The words of one command element that are a script file: a name ending in one of
    :data:`SCRIPT_SUFFIXES`, or a path under one of ``mount_paths``."""
    roots = [p.rstrip("/") + "/" for p in mount_paths if p.startswith("/")]
    return [
        word
        for word in _WORD_SPLIT.split(text)
        if word
        and (
            word.lower().endswith(SCRIPT_SUFFIXES)
            or any(word.startswith(root) and len(word) > len(root) for root in roots)
        )
    ]


#: How the injector finds an exec probe or hook that uses a migrated variable
#: (``runtime/internal/inject/consumers.go``, ``UsesVariable``): ``$NAME`` or ``${NAME...}``
#: anywhere in an element of its command (its ``shellRef``; also inside a command
#: substitution, ``"$(cmd "$NAME")"``), or ``$(NAME)`` by the kubelet's rules. Such a handler
#: is routed through ``cloudtaser-runtime exec --`` and runs with the app's own environment.
_SHELL_REF: Final = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
#: ``command`` of an exec probe or hook the injector routed through the runtime.
EXEC_RUNNER: Final = (WRAPPER_PATH, "exec", "--")
#: The flag of a wrapped command whose ``$(VAR)`` references the wrapper expands.
EXPAND_FLAG: Final = "--expand="


def mentions(command: Sequence[str], names: Iterable[str]) -> bool:
    """The injector's rule for routing an exec handler (``UsesVariable``): an element names one
    of ``names`` as ``$NAME``, ``${NAME...}`` or ``$(NAME)``. A handler that reads a variable
    only inside a script, or through a program (``printenv NAME``), is not routed."""
    wanted = set(names)
    if list(command[:1]) == [WRAPPER_PATH]:
        return False
    return any(
        any(found.group(1) in wanted for found in _SHELL_REF.finditer(element))
        or any(name in wanted for name in references(element))
        for element in command
    )


class Coverage(Protocol):
    """Which readers of a migrated variable the runtime serves (docs/lifecycle.md)."""

    def wraps(self, container: str, init: bool) -> bool:
        """The container's process is started by the wrapper (it gets the vault's values)."""

    def serves(self, use: Consumer) -> bool:
        """``use`` gets the vault's value without the Kubernetes reference."""


class DesignCoverage:
    """What the runtime can serve at all (issue 30): init containers are wrapped, ``$(VAR)``
    in ``command``/``args``/env values is expanded by the wrapper, exec probes and hooks that
    name a migrated variable (:func:`mentions`) run with the app's environment. Never: a
    ``subPathExpr``, a handler that reads the variable only in a script or a program. What
    ``protect`` warns about (finalize itself trusts only :class:`ProvenCoverage`)."""

    def wraps(self, container: str, init: bool) -> bool:
        return True

    def serves(self, use: Consumer) -> bool:
        if use.where == "subPathExpr":
            return False
        if use.where in _HANDLER_NAMES:
            return use.routable
        return True


DESIGN_COVERAGE: Final = DesignCoverage()


@dataclass(frozen=True)
class ProvenCoverage:
    """What the injected pods of the current revision show the runtime serving, in every one
    of them: containers started by the wrapper, exec handlers routed through
    ``cloudtaser-runtime exec --``, env entries and ``command``/``args`` whose ``$(VAR)`` the
    wrapper expands (its ``--expand=`` plan). An injector without that support leaves the
    pods as they were, so nothing it does not serve is ever counted."""

    wrapped: frozenset[tuple[str, bool]] = frozenset()
    routed: frozenset[tuple[str, bool, str]] = frozenset()
    expanded_env: frozenset[tuple[str, bool, str]] = frozenset()
    expanded_args: frozenset[tuple[str, bool]] = frozenset()

    @classmethod
    def of_pods(cls, pods: Iterable[Mapping[str, Any]]) -> ProvenCoverage:
        """The coverage every pod of ``pods`` shows (none when there is no pod)."""
        shown_by = [_pod_coverage(pod) for pod in pods]
        if not shown_by:
            return cls()
        first, *rest = shown_by
        return cls(
            wrapped=first.wrapped.intersection(*(c.wrapped for c in rest)),
            routed=first.routed.intersection(*(c.routed for c in rest)),
            expanded_env=first.expanded_env.intersection(*(c.expanded_env for c in rest)),
            expanded_args=first.expanded_args.intersection(*(c.expanded_args for c in rest)),
        )

    def wraps(self, container: str, init: bool) -> bool:
        return (container, init) in self.wrapped

    def serves(self, use: Consumer) -> bool:
        if not self.wraps(use.container, use.init) or use.where == "subPathExpr":
            return False
        if use.where in _HANDLER_NAMES:
            return (use.container, use.init, use.where) in self.routed
        if use.where == "env":
            return (use.container, use.init, use.target) in self.expanded_env
        return (use.container, use.init) in self.expanded_args


def _expand_plan(command: Sequence[str]) -> dict[str, Any] | None:
    """The ``--expand=`` plan of a wrapped command (``$`` doubled by the injector so the
    kubelet leaves it alone), or None."""
    if len(command) < 3 or command[0] != WRAPPER_PATH or command[1] != "wrap":
        return None
    flag = command[2]
    if not isinstance(flag, str) or not flag.startswith(EXPAND_FLAG):
        return None
    try:
        plan = json.loads(flag[len(EXPAND_FLAG) :].replace("$$", "$"))
    except ValueError:
        return None
    return plan if isinstance(plan, dict) else None


def _pod_coverage(pod: Mapping[str, Any]) -> ProvenCoverage:
    wrapped: set[tuple[str, bool]] = set()
    routed: set[tuple[str, bool, str]] = set()
    expanded_env: set[tuple[str, bool, str]] = set()
    expanded_args: set[tuple[str, bool]] = set()
    for container, init in _containers(pod):
        cname = str(container.get("name") or "")
        command = _strings(container.get("command"))
        if command[:1] != [WRAPPER_PATH]:
            continue
        wrapped.add((cname, init))
        for where, path in _HANDLERS:
            handler = _exec_command(container, path)
            if handler is not None and tuple(handler[: len(EXEC_RUNNER)]) == EXEC_RUNNER:
                routed.add((cname, init, where))
        plan = _expand_plan(command)
        if plan is None:
            continue
        if plan.get("args"):
            expanded_args.add((cname, init))
        for entry in plan.get("env") or ():
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                expanded_env.add((cname, init, entry["name"]))
    return ProvenCoverage(
        wrapped=frozenset(wrapped),
        routed=frozenset(routed),
        expanded_env=frozenset(expanded_env),
        expanded_args=frozenset(expanded_args),
    )


def _strings(value: Any) -> list[str]:
    return [v for v in value or () if isinstance(v, str)] if isinstance(value, list) else []


def _exec_command(container: Mapping[str, Any], path: tuple[str, ...]) -> list[str] | None:
    node: Any = container
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    handler = node.get("exec") if isinstance(node, Mapping) else None
    if not isinstance(handler, Mapping):
        return None  # httpGet, tcpSocket, grpc, sleep: no env read
    return _strings(handler.get("command"))


def _containers(pod_template: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], bool]]:
    spec = pod_template.get("spec") or {}
    if not isinstance(spec, Mapping):
        return
    for key, init in (("initContainers", True), ("containers", False)):
        for container in spec.get(key) or ():
            if isinstance(container, Mapping):
                yield container, init


def _expansion_uses(
    container: Mapping[str, Any], cname: str, init: bool, names: frozenset[str]
) -> Iterator[Consumer]:
    for where in _EXPANDED:
        for element in _strings(container.get(where)):
            for name in expansion_names(element):
                if name in names:
                    yield Consumer(name, cname, init, where)
    for entry in container.get("env") or ():
        value = entry.get("value") if isinstance(entry, Mapping) else None
        if not isinstance(value, str):
            continue
        target = str(entry.get("name") or "")
        for name in expansion_names(value):
            if name in names and name != target:
                yield Consumer(name, cname, init, "env", target=target)
    for mount in container.get("volumeMounts") or ():
        expr = mount.get("subPathExpr") if isinstance(mount, Mapping) else None
        if not isinstance(expr, str):
            continue
        for name in expansion_names(expr):
            if name in names:
                yield Consumer(
                    name, cname, init, "subPathExpr", target=str(mount.get("mountPath") or "")
                )


def _handler_uses(
    container: Mapping[str, Any], cname: str, init: bool, names: frozenset[str]
) -> Iterator[Consumer]:
    mounts = [
        str(m.get("mountPath"))
        for m in container.get("volumeMounts") or ()
        if isinstance(m, Mapping) and isinstance(m.get("mountPath"), str)
    ]
    for where, path in _HANDLERS:
        command = _exec_command(container, path)
        if not command:
            continue
        scripts = [w for element in command for w in script_words(element, mounts)]
        routable = mentions(command, names)
        for name in sorted(names):
            if any(names_word(element, name) for element in command):
                yield Consumer(name, cname, init, where, routable=routable)
            elif scripts:
                yield Consumer(name, cname, init, where, script=scripts[0], routable=routable)


def consumers(pod_template: Mapping[str, Any], migrated: Migrated) -> list[Consumer]:
    """Every use of a migrated variable besides the process env, sorted and without
    duplicates. ``pod_template`` is ``spec.template`` as a plain dict; ``migrated`` names, per
    container, the variables to look for (see :func:`migrated_by_container`)."""
    found: set[Consumer] = set()
    for container, init in _containers(pod_template):
        cname = str(container.get("name") or "")
        names = frozenset(migrated.get((cname, init), ()))
        if names:
            found.update(_expansion_uses(container, cname, init, names))
            found.update(_handler_uses(container, cname, init, names))
    return sorted(found, key=lambda c: c.sort_key)


def env_uses(pod_template: Mapping[str, Any], migrated: Migrated) -> list[EnvUse]:
    """:func:`consumers` in the plan's form (``workloads[].envUses``): sorted, one entry per
    (container, variable, place), deterministic for the same template."""
    out: list[EnvUse] = []
    seen: set[tuple[str, bool, str, str, str | None]] = set()
    for use in consumers(pod_template, migrated):
        plan_form = use.env_use()
        key = (use.container, use.init, use.env, use.where, plan_form.target)
        if key not in seen:
            seen.add(key)
            out.append(plan_form)
    return out


def migrated_by_container(
    consumptions: Iterable[EnvConsumption],
) -> dict[tuple[str, bool], set[str]]:
    """``(container, init)`` -> the variables those Secret consumptions feed (pass only the
    consumptions that are migrated, e.g. those the plan maps)."""
    out: dict[tuple[str, bool], set[str]] = defaultdict(set)
    for item in consumptions:
        out[(item.container, item.init)].add(item.env)
    return dict(out)


def keep_reasons(
    pod_template: Mapping[str, Any],
    consumptions: Iterable[EnvConsumption],
    recorded: Iterable[EnvUse] = (),
    *,
    coverage: Coverage | None = None,
) -> dict[tuple[str, bool, str], list[str]]:
    """Why a migrated variable's Secret reference must stay after finalize, keyed by
    ``(container, init, env)``: :data:`INIT_REASON` for every variable of an init container
    the runtime does not wrap, else the reasons of its :func:`consumers` and of the
    ``recorded`` uses (the plan's reviewed ``envUses``) that ``coverage`` does not serve.
    Without ``coverage`` nothing is served (every use keeps its reference). A variable without
    a reason can go."""
    items = list(consumptions)
    migrated = migrated_by_container(items)
    out: dict[tuple[str, bool, str], list[str]] = {}

    def add(container: str, init: bool, env: str, reason: str) -> None:
        reasons = out.setdefault((container, init, env), [])
        if reason not in reasons:
            reasons.append(reason)

    notes: dict[tuple[str, bool, str], set[str]] = {}

    def unserved(use: Consumer) -> str | None:
        if coverage is None:
            return use.reason
        if coverage.serves(use):
            return None
        note = UNSERVED_NOTE if DESIGN_COVERAGE.serves(use) else CANNOT_SERVE_NOTE
        notes.setdefault((use.container, use.init, use.env), set()).add(note)
        return use.reason

    def unwrapped(container: str, init: bool) -> bool:
        return init and (coverage is None or not coverage.wraps(container, init))

    for item in items:
        if unwrapped(item.container, item.init):
            add(item.container, True, item.env, INIT_REASON)
    found = consumers(pod_template, migrated)
    for use in found:
        why = None if unwrapped(use.container, use.init) else unserved(use)
        if why is not None:
            add(use.container, use.init, use.env, why)
    shown_uses = {
        (u.container, u.init, u.env, u.where, u.target if u.where == "env" else "") for u in found
    }
    for listed in recorded:
        place = (listed.container, listed.init, listed.env, listed.where, listed.target or "")
        if place in shown_uses or unwrapped(listed.container, listed.init):
            continue
        if listed.env not in migrated.get((listed.container, listed.init), ()):
            continue
        use = Consumer(
            listed.env, listed.container, listed.init, listed.where, target=listed.target or ""
        )
        if coverage is not None and coverage.serves(use):
            continue
        add(
            listed.container,
            listed.init,
            listed.env,
            f"the plan's envUses lists a use in its {listed.where}",
        )
    for key, added in notes.items():  # after the reasons, once: why the runtime does not help
        for note in sorted(added):
            add(*key, note)
    return {k: v for k, v in out.items() if v}
