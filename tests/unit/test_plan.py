"""The MigrationPlan model: every rejection names its location, saving is deterministic/atomic."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest
import yaml

from cloudtaser import plan as planlib
from cloudtaser.errors import PlanError
from cloudtaser.plan import yamlio

VALID = """\
apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata:
  name: prod-eu
  cluster: https://10.0.0.1:443
  createdAt: "2026-05-16T10:00:00Z"
  createdBy: alice
tenants:
  - name: payments
    namespace: payments
    workloads:
      - kind: Deployment
        name: api
        replicas: 3
        status: pending
        secrets:
          - source: postgres-credentials
            vaultPath: secret/data/payments/postgres-credentials
            fields:
              username: POSTGRES_USER
              password: POSTGRES_PASSWORD
      - kind: StatefulSet
        name: ledger
        secrets:
          - source: ledger-key
            vaultPath: secret/data/payments/ledger-key
            fields:
              key: LEDGER_KEY
  - name: web
    namespace: web
    workloads: []
"""


def _data() -> dict:
    return yaml.safe_load(VALID)


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _reject(data: object) -> PlanError:
    with pytest.raises(PlanError) as info:
        text = data if isinstance(data, str | bytes) else _dump(data)
        planlib.loads(text, source="plan.yaml")
    return info.value


def test_valid_plan_loads_with_all_documented_fields() -> None:
    plan = planlib.loads(VALID)
    assert plan.metadata.name == "prod-eu"
    assert plan.metadata.created_at is not None
    assert plan.metadata.created_at.isoformat() == "2026-05-16T10:00:00+00:00"
    api = plan.tenants[0].workloads[0]
    assert api.kind is planlib.WorkloadKind.DEPLOYMENT
    assert api.replicas == 3
    assert api.secrets[0].fields == {"username": "POSTGRES_USER", "password": "POSTGRES_PASSWORD"}
    assert plan.tenants[1].workloads == []


def test_absent_status_means_pending() -> None:
    plan = planlib.loads(VALID)
    ledger = plan.tenants[0].workloads[1]
    assert ledger.status is None
    assert ledger.effective_status is planlib.WorkloadStatus.PENDING


def test_empty_tenant_list_is_valid() -> None:
    data = _data()
    data["tenants"] = []
    assert planlib.loads(_dump(data)).tenants == []


def test_unquoted_yaml_timestamp_is_accepted() -> None:
    text = VALID.replace('"2026-05-16T10:00:00Z"', "2026-05-16T10:00:00Z")
    assert planlib.loads(text).metadata.created_at is not None


@pytest.mark.parametrize(
    ("mutate", "location", "needle"),
    [
        (lambda d: d.pop("apiVersion"), "$.apiVersion", "missing apiVersion"),
        (lambda d: d.update(apiVersion="cloudtaser.io/v2"), "$.apiVersion", "cloudtaser.io/v1"),
        (lambda d: d.pop("kind"), "$.kind", "missing kind"),
        (lambda d: d.update(kind="Plan"), "$.kind", "MigrationPlan"),
        (lambda d: d.pop("metadata"), "$", "missing required field 'metadata'"),
        (lambda d: d.pop("tenants"), "$", "missing required field 'tenants'"),
        (lambda d: d["metadata"].pop("name"), "$.metadata", "missing required field 'name'"),
        (lambda d: d.update(tenant=[]), "$", "unknown field 'tenant'"),
        (
            lambda d: d["tenants"][0]["workloads"][0].update(secret=[]),
            "$.tenants[0].workloads[0]",
            "unknown field 'secret'",
        ),
        (
            lambda d: d["tenants"][0]["workloads"][0]["secrets"][0].update(vault_path="x"),
            "$.tenants[0].workloads[0].secrets[0]",
            "unknown field 'vault_path'",
        ),
        (
            lambda d: d["tenants"][0]["workloads"][0].update(replicas="three"),
            "$.tenants[0].workloads[0].replicas",
            "Expected 'int | null', got 'str'",
        ),
        (
            lambda d: d["tenants"][0]["workloads"][0].update(replicas=-1),
            "$.tenants[0].workloads[0].replicas",
            ">= 0",
        ),
        (
            lambda d: d["tenants"][0]["workloads"][0].update(kind="ReplicaSet"),
            "$.tenants[0].workloads[0].kind",
            "Invalid enum value 'ReplicaSet'",
        ),
        (
            lambda d: d["tenants"][0]["workloads"][0].update(status="done"),
            "$.tenants[0].workloads[0].status",
            "Invalid enum value 'done'",
        ),
        (
            lambda d: d["tenants"][0].update(namespace="Payments"),
            "$.tenants[0].namespace",
            "'Payments' is not a Kubernetes DNS-1123 label",
        ),
        (
            lambda d: d["tenants"][0].update(name="pay_ments"),
            "$.tenants[0].name",
            "is not a Kubernetes",
        ),
        (
            lambda d: d["tenants"][0]["workloads"][0].update(name="api/x"),
            "$.tenants[0].workloads[0].name",
            "'api/x' is not a Kubernetes name",
        ),
        (lambda d: d["metadata"].update(name="prod eu"), "$.metadata.name", "not a safe plan name"),
        (lambda d: d.update(tenants={}), "$.tenants", "Expected 'array', got 'object'"),
    ],
)
def test_schema_violations_are_rejected_with_location(mutate, location: str, needle: str) -> None:
    data = _data()
    mutate(data)
    error = _reject(data)
    assert error.location == location
    assert needle in error.detail
    assert str(error).startswith(f"plan.yaml: {location}: ")


_SECRET = "$.tenants[0].workloads[0].secrets[0]"


@pytest.mark.parametrize(
    "vault_path",
    [
        "secret/payments/db",  # no data/ segment
        "secret/data/../sys/policy",
        "secret/data/payments/..",
        "secret/data/./x",
        "secret/data/payments/*",
        "secret/data/payments/+/x",
        "secret/data//x",
        "secret/data/",
        "/secret/data/x",
        'secret/data/pay"ments',
        "secret/data/pay'ments",
        "secret/data/pay ments",
        "secret/data/pay\nments",
        "secret/data/pay\tments",
        "secret/data/paymënts",
        "secret/data/x}",
        "data/x",
        "secret/data/" + "a" * 600,
    ],
)
def test_unsafe_vault_paths_are_rejected(vault_path: str) -> None:
    data = _data()
    data["tenants"][0]["workloads"][0]["secrets"][0]["vaultPath"] = vault_path
    error = _reject(data)
    assert error.location in {f"{_SECRET}.vaultPath", _SECRET}


@pytest.mark.parametrize("field", ["..", ".", "pass word", 'a"b', "a\nb", "ä", "a/b", "*"])
def test_unsafe_field_names_are_rejected(field: str) -> None:
    data = _data()
    data["tenants"][0]["workloads"][0]["secrets"][0]["fields"] = {field: "X"}
    error = _reject(data)
    assert error.location is not None
    assert error.location.startswith(_SECRET)


@pytest.mark.parametrize("env", ["1ABC", "A-B", "A B", "A.B", "", "Ä", "A\nB"])
def test_invalid_env_var_names_are_rejected(env: str) -> None:
    data = _data()
    data["tenants"][0]["workloads"][0]["secrets"][0]["fields"] = {"password": env}
    error = _reject(data)
    assert error.location == f"{_SECRET}.fields.password"


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (lambda d: d["tenants"][0].update(namespace="payments\n"), "$.tenants[0].namespace"),
        (lambda d: d["metadata"].update(name="prod-eu\n"), "$.metadata.name"),
        (
            lambda d: d["tenants"][0]["workloads"][0]["secrets"][0].update(
                vaultPath="secret/data/payments/db\n"
            ),
            f"{_SECRET}.vaultPath",
        ),
        (
            lambda d: d["tenants"][0]["workloads"][0]["secrets"][0].update(
                fields={"password": "DB_PASSWORD\n"}
            ),
            f"{_SECRET}.fields.password",
        ),
        (lambda d: d["metadata"].update(createdBy="alice\n"), "$.metadata.createdBy"),
    ],
)
def test_a_trailing_newline_is_not_accepted_anywhere(mutate, location: str) -> None:
    data = _data()
    mutate(data)
    assert _reject(data).location == location


def test_env_var_fed_twice_in_one_workload_is_rejected() -> None:
    data = _data()
    workload = data["tenants"][0]["workloads"][0]
    workload["secrets"].append(
        {
            "source": "other",
            "vaultPath": "secret/data/payments/other",
            "fields": {"u": "POSTGRES_USER"},
        }
    )
    error = _reject(data)
    assert error.location == "$.tenants[0].workloads[0]"
    assert "'POSTGRES_USER' is fed twice" in error.detail
    assert "postgres-credentials.username" in error.detail
    assert "other.u" in error.detail


def test_same_env_var_in_two_workloads_is_fine() -> None:
    data = _data()
    data["tenants"][0]["workloads"][1]["secrets"][0]["fields"] = {"key": "POSTGRES_USER"}
    planlib.loads(_dump(data))


def test_duplicate_workload_in_tenant_is_rejected() -> None:
    data = _data()
    workloads = data["tenants"][0]["workloads"]
    workloads.append(copy.deepcopy(workloads[0]))
    error = _reject(data)
    assert error.location == "$.tenants[0]"
    assert "workloads[2]: duplicate Deployment 'api' (already at workloads[0])" in error.detail


def test_same_name_different_kind_is_fine() -> None:
    data = _data()
    workloads = data["tenants"][0]["workloads"]
    workloads.append({**copy.deepcopy(workloads[0]), "kind": "DaemonSet"})
    assert len(planlib.loads(_dump(data)).tenants[0].workloads) == 3


def test_duplicate_tenant_is_rejected() -> None:
    data = _data()
    data["tenants"][1]["name"] = "payments"
    error = _reject(data)
    assert error.location == "$"
    assert "tenants[1]: duplicate tenant name 'payments'" in error.detail


def test_two_tenants_for_one_namespace_are_rejected() -> None:
    data = _data()
    data["tenants"][1]["namespace"] = "payments"
    error = _reject(data)
    assert "one tenant per namespace" in error.detail


def test_kv_mount_extension_confines_vault_paths() -> None:
    data = _data()
    data["metadata"]["kvMount"] = "kv"
    error = _reject(data)
    assert "outside the plan's kvMount 'kv'" in error.detail
    data["metadata"]["kvMount"] = "secret"
    assert planlib.loads(_dump(data)).metadata.kv_mount == "secret"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   \n# only a comment\n", "empty"),
        ("- a\n- b\n", "got a list"),
        ("just a string", "got a str"),
        ("apiVersion: [unclosed\n", "not valid YAML: line"),
        ("a: 1\n  b: 2\n", "not valid YAML"),
        ("a: 1\na: 2\n", "duplicate mapping key"),
        ("a: 1\n---\nb: 2\n", "several YAML documents"),
        (b"\xff\xfe\x00a", "not UTF-8"),
        ("a: !!python/object:os.system {}\n", "missing apiVersion"),
    ],
)
def test_non_plan_files_are_rejected(text: str | bytes, needle: str) -> None:
    error = _reject(text)
    assert needle in str(error)


def test_yaml_alias_bomb_is_rejected_quickly() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    bomb = "apiVersion: cloudtaser.io/v1\nkind: MigrationPlan\n" + "\n".join(lines) + "\n"
    error = _reject(bomb)
    assert "anchors and aliases" in str(error)


def test_oversized_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlio, "MAX_PLAN_BYTES", 1024)
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "#" * 2048)
    with pytest.raises(PlanError, match="larger than"):
        planlib.load(path)


def test_missing_file_and_directory_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no such file"):
        planlib.load(tmp_path / "nope.yaml")
    with pytest.raises(PlanError, match="is a directory"):
        planlib.load(tmp_path)


def test_round_trip_is_byte_identical(tmp_path: Path) -> None:
    plan = planlib.loads(VALID)
    first = planlib.dump(plan)
    again = planlib.dump(planlib.loads(first))
    assert first == again
    path = tmp_path / "p.yaml"
    planlib.save(plan, path)
    assert path.read_bytes() == first
    assert planlib.load(path) == plan


def test_duplicate_keys_are_rejected_not_silently_merged() -> None:
    text = VALID.replace("        replicas: 3\n", "        replicas: 3\n        replicas: 4\n")
    error = _reject(text)
    assert "duplicate mapping key" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        "on",
        "No",
        "null",
        "~",
        "2026-01-01",
        "1.5",
        "0x1F",
        "1e3",
        "-x",
        "a: b",
        "a #b",
        "x\ny",
        "ünï",
        "'q'",
        '"q"',
        "*a",
        "&a",
        "!tag",
        "{a}",
        "[a]",
        "",
        " lead",
        "trail ",
        "%x",
        "@x",
        "`x",
        "a,b",
        "? x",
        "|",
        ">",
        # yaml-rs reads digits joined by underscores as numbers (found by hypothesis in
        # test_rule_agreement: an env var named "_0" came back as 0)
        "_0",
        "__1",
        "_1e3",
        "_1.",
        "1_000",
    ],
)
def test_tricky_strings_round_trip_through_any_yaml_reader(value: str) -> None:
    plan = planlib.loads(VALID)
    plan.metadata.created_by = value.replace("\n", " ")
    plan.tenants[0].workloads[0].reason = value.replace("\n", " ")
    text = planlib.dumps(plan)
    assert planlib.loads(text) == plan
    data = yaml.safe_load(text)  # a YAML 1.1 reader (PyYAML) sees the same strings
    assert data["metadata"]["createdBy"] == value.replace("\n", " ")


@pytest.mark.parametrize("env", ["_0", "__1", "_1_0", "_1e3", "_0_5E1"])
def test_numeric_looking_env_names_round_trip_as_strings(env: str) -> None:
    plan = planlib.loads(VALID)
    secret = plan.tenants[0].workloads[0].secrets[0]
    field = next(iter(secret.fields))
    secret.fields[field] = env
    assert planlib.loads(planlib.dumps(plan)) == plan


def test_dump_key_order_and_explicit_status() -> None:
    text = planlib.dumps(planlib.loads(VALID))
    keys = [line.split(":")[0] for line in text.splitlines() if line and line[0] not in " -"]
    assert keys == ["apiVersion", "kind", "metadata", "tenants"]
    assert "status: pending" in text
    assert 'createdAt: "2026-05-16T10:00:00Z"' in text


def test_status_history_round_trips() -> None:
    plan = planlib.loads(VALID)
    workload = plan.tenants[0].workloads[1]
    workload.set_status(planlib.WorkloadStatus.SKIPPED, by="bob", reason="owned by team x")
    reloaded = planlib.loads(planlib.dumps(plan))
    entry = reloaded.tenants[0].workloads[1].history[0]
    assert reloaded.tenants[0].workloads[1].status is planlib.WorkloadStatus.SKIPPED
    assert (entry.by, entry.reason, entry.at.tzinfo is not None) == ("bob", "owned by team x", True)


def test_save_keeps_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(VALID)
    path.chmod(0o600)
    planlib.save(planlib.loads(VALID), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_leaves_old_file_when_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(VALID)
    before = path.read_bytes()
    plan = planlib.loads(VALID)
    plan.tenants[0].workloads[0].status = planlib.WorkloadStatus.MIGRATED

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        planlib.save(plan, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.yaml"]


def test_split_vault_path() -> None:
    assert planlib.split_vault_path("secret/data/a/b") == ("secret", "a/b")
    assert planlib.split_vault_path("team/kv/data/x") == ("team/kv", "x")
    with pytest.raises(ValueError, match="not a KV v2 data path"):
        planlib.split_vault_path("secret/a")


def test_auth_mount_defaults_to_kubernetes() -> None:
    plan = planlib.loads(VALID)
    assert plan.auth_mount == "kubernetes"
    plan.metadata.auth_mount = "k8s-prod-eu"
    assert planlib.loads(planlib.dumps(plan)).auth_mount == "k8s-prod-eu"
