"""Random mutations of a valid plan only ever raise PlanError (never another exception)."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtaser import plan as planlib
from cloudtaser.errors import PlanError
from tests.unit.test_plan import VALID

BASE = yaml.safe_load(VALID)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(["..", "*", "secret/data/../x", "a\nb", "Deployment", "pending", "$HOME"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


PATHS = _paths(BASE)


def _apply(data: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action == "replace" else data
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][str(value)[:10]] = value
    elif action == "add" and isinstance(parent[last], list):
        parent[last].append(value)
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(PATHS), st.sampled_from(["delete", "replace", "add"]), values),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_plans_raise_only_plan_error(mutations: list[tuple[Any, str, Any]]) -> None:
    data = copy.deepcopy(BASE)
    for path, action, value in mutations:
        try:
            data = _apply(data, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or changed this path
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        plan = planlib.loads(text, source="fuzz.yaml")
    except PlanError as exc:
        assert str(exc).startswith("fuzz.yaml: ")
        return
    # Whatever was accepted must survive a round trip unchanged.
    assert planlib.loads(planlib.dumps(plan)) == plan


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_plan_error(blob: bytes) -> None:
    try:
        planlib.loads(blob, source="blob")
    except PlanError:
        pass
