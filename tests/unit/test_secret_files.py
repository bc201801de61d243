"""Secret volumes as migrated plan data (issue 29): discover's entries on manifests shaped like
popular charts, the plan round trip, the annotation protect writes, finalize's memory volume and
unprotect's way back, the forged-run-state rule, the files proof and the deletion rules. Pure:
no cluster (tests/integration/test_secret_files_lifecycle.py runs the same on a real API
server)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from cloudtaser import plan as planlib
from cloudtaser.connect import plan_selection
from cloudtaser.contract import SECRET_FILES, parse_secret_files
from cloudtaser.errors import PlanError
from cloudtaser.plan import WorkloadKind, WorkloadStatus
from cloudtaser.plan.todo import checklist
from cloudtaser.source.grants import build_grants
from cloudtaser.target.annotations import ENV_MAP, SECRET_PATHS, build_annotations
from cloudtaser.target.discover.scanned import SecretLookup
from cloudtaser.target.discover.secrets import binary_keys
from cloudtaser.target.engine.consumption import file_drift
from cloudtaser.target.engine.injection import files_problems
from cloudtaser.target.engine.secret_refs import (
    finalize_edit,
    missing_volumes,
    restore_volumes,
)
from cloudtaser.target.references.safety import key_safety
from tests.unit.test_discover_plan import D, build, c, env, only, tpl, wl

S = WorkloadKind.STATEFUL_SET


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- manifests shaped like the charts the issue measured -------------------------------------


def bitnami_postgresql() -> dict[str, Any]:
    """bitnami/postgresql with ``auth.usePasswordFiles: true`` (the default): the password is
    read from a file of the whole Secret, the env var only names the file."""
    return tpl(
        c(
            "postgresql",
            env=[
                {
                    "name": "POSTGRES_PASSWORD_FILE",
                    "value": "/opt/bitnami/postgresql/secrets/postgres-password",
                }
            ],
            volumeMounts=[
                {"name": "postgresql-password", "mountPath": "/opt/bitnami/postgresql/secrets/"},
                {"name": "dshm", "mountPath": "/dev/shm"},
            ],
        ),
        volumes=[
            {"name": "postgresql-password", "secret": {"secretName": "pg-postgresql"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    )


def bitnami_redis() -> dict[str, Any]:
    """bitnami/redis with ``auth.usePasswordFiles: true``: one key through ``items``."""
    return tpl(
        c(
            "redis",
            volumeMounts=[{"name": "redis-password", "mountPath": "/opt/bitnami/redis/secrets/"}],
        ),
        volumes=[
            {
                "name": "redis-password",
                "secret": {
                    "secretName": "redis",
                    "items": [{"key": "redis-password", "path": "redis-password"}],
                },
            }
        ],
    )


def ingress_nginx() -> dict[str, Any]:
    """ingress-nginx's controller: the admission webhook's certificate, read-only."""
    return tpl(
        c(
            "controller",
            volumeMounts=[
                {"name": "webhook-cert", "mountPath": "/usr/local/certificates/", "readOnly": True}
            ],
        ),
        volumes=[{"name": "webhook-cert", "secret": {"secretName": "ingress-nginx-admission"}}],
    )


def tls_app() -> dict[str, Any]:
    """The issue's "done when" shape: items, defaultMode, a per-file mode, a binary keystore,
    a subPath mount, two containers and an init container, and a Secret also used as env."""
    spec = tpl(
        c(
            "app",
            env=[env("DB_PASSWORD", "db", "password")],
            volumeMounts=[
                {"name": "certs", "mountPath": "/etc/tls", "readOnly": True},
                {"name": "config", "mountPath": "/etc/app/app.conf", "subPath": "app.conf"},
            ],
        ),
        c("sidecar", volumeMounts=[{"name": "certs", "mountPath": "/certs"}]),
        volumes=[
            {
                "name": "certs",
                "secret": {
                    "secretName": "tls",
                    "defaultMode": 0o440,
                    "items": [
                        {"key": "tls.crt", "path": "tls.crt"},
                        {"key": "tls.key", "path": "private/tls.key", "mode": 0o400},
                        {"key": "keystore.jks", "path": "keystore.jks"},
                    ],
                },
            },
            {
                "name": "config",
                "projected": {
                    "defaultMode": 0o444,
                    "sources": [
                        {"secret": {"name": "db", "items": [{"key": "conf", "path": "app.conf"}]}}
                    ],
                },
            },
        ],
    )
    spec["spec"]["initContainers"] = [
        {"name": "wait", "volumeMounts": [{"name": "certs", "mountPath": "/init-certs"}]}
    ]
    return spec


LOOKUP = SecretLookup(
    keys={
        ("db", "pg-postgresql"): ("postgres-password",),
        ("cache", "redis"): ("redis-password",),
        ("ingress", "ingress-nginx-admission"): ("ca", "cert", "key"),
        ("shop", "tls"): ("keystore.jks", "tls.crt", "tls.key"),
        ("shop", "db"): ("conf", "password"),
    },
    binary={("shop", "tls"): frozenset({"keystore.jks"})},
)


def test_bitnami_postgresql_password_files_are_migrated_not_skipped() -> None:
    workload = only(build([wl("db", S, "pg", bitnami_postgresql())], LOOKUP))
    assert workload.status is WorkloadStatus.PENDING
    assert workload.secrets == []  # read only as files: nothing for env injection
    (entry,) = workload.secret_files
    assert entry.source == "pg-postgresql"
    assert entry.vault_path == "secret/data/db/pg-postgresql"
    assert [(f.key, f.file, f.mode, f.encoding) for f in entry.files] == [
        ("postgres-password", "postgres-password", None, None)
    ]
    assert entry.default_mode is None
    assert not entry.projected
    assert [(m.container, m.mount_path) for m in entry.mounts] == [
        ("postgresql", "/opt/bitnami/postgresql/secrets/")
    ]


def test_bitnami_redis_items_and_ingress_nginx_certificate_are_migrated() -> None:
    result = build(
        [wl("cache", S, "redis", bitnami_redis()), wl("ingress", D, "nginx", ingress_nginx())],
        LOOKUP,
    )
    by_name = {w.name: w for _t, w in result.plan.iter_workloads()}
    redis, nginx = by_name["redis"], by_name["nginx"]
    assert redis.status is nginx.status is WorkloadStatus.PENDING
    assert [(f.key, f.file) for f in redis.secret_files[0].files] == [
        ("redis-password", "redis-password")
    ]
    assert [f.file for f in nginx.secret_files[0].files] == ["ca", "cert", "key"]
    assert nginx.secret_files[0].mounts[0].read_only
    assert not result.skipped


def test_one_secret_as_env_and_files_is_one_vault_path_with_every_field() -> None:
    result = build([wl("shop", D, "web", tls_app())], LOOKUP)
    workload = only(result)
    assert workload.status is WorkloadStatus.PENDING, workload.reason
    (db_env,) = workload.secrets
    certs, config = workload.secret_files
    assert db_env.vault_path == config.vault_path == "secret/data/shop/db"
    reads = {(r.vault_path, r.fields) for r in workload.vault_reads()}
    assert reads == {
        ("secret/data/shop/db", ("password",)),
        ("secret/data/shop/tls", ("tls.crt", "tls.key", "keystore.jks")),
        ("secret/data/shop/db", ("conf",)),
    }
    # the policy grants both paths, once each
    (grant,), _skipped = build_grants(result.plan)
    assert grant.paths == ("secret/data/shop/db", "secret/data/shop/tls")
    # items, modes, the binary mark, mounts with subPath and the init container
    assert certs.default_mode == 0o440
    assert [(f.file, f.mode, f.encoding) for f in certs.files] == [
        ("tls.crt", None, None),
        ("private/tls.key", 0o400, None),
        ("keystore.jks", None, "base64"),
    ]
    assert [(m.container, m.init) for m in certs.mounts] == [
        ("wait", True),
        ("app", False),
        ("sidecar", False),
    ]
    assert config.projected
    assert config.default_mode == 0o444
    assert [(m.mount_path, m.sub_path) for m in config.mounts] == [
        ("/etc/app/app.conf", "app.conf")
    ]


def test_a_projected_volume_mixing_other_sources_stays_a_secret_with_the_reason() -> None:
    mixed = tpl(
        c("app", env=[env("P", "db", "password")], volumeMounts=[{"name": "m", "mountPath": "/m"}]),
        volumes=[
            {
                "name": "m",
                "projected": {
                    "sources": [
                        {"secret": {"name": "db"}},
                        {"configMap": {"name": "settings"}},
                    ]
                },
            }
        ],
    )
    files_only = copy.deepcopy(mixed)
    del files_only["spec"]["containers"][0]["env"]
    result = build([wl("shop", D, "mixed", mixed), wl("shop", D, "files", files_only)], LOOKUP)
    by_name = {w.name: w for _t, w in result.plan.iter_workloads()}
    assert by_name["mixed"].status is WorkloadStatus.PENDING
    assert not by_name["mixed"].secret_files[0].migrated
    assert "also holds configMap source(s)" in (by_name["mixed"].reason or "")
    assert by_name["files"].status is WorkloadStatus.SKIPPED
    assert "the vault cannot serve" in (by_name["files"].reason or "")


def test_the_plan_round_trips_and_old_secret_files_entries_stay_valid() -> None:
    result = build([wl("shop", D, "web", tls_app())], LOOKUP)
    text = planlib.dumps(result.plan)
    assert "encoding: base64" in text
    assert "vaultPath: secret/data/shop/tls" in text
    assert planlib.loads(text) == result.plan
    old = """apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata: {name: prod}
tenants:
- name: shop
  namespace: shop
  workloads:
  - kind: Deployment
    name: web
    status: skipped
    secrets: []
    secretFiles:
    - {source: tls, volume: certs, mountPaths: ['app:/certs']}
"""
    loaded = planlib.loads(old)
    (entry,) = loaded.tenants[0].workloads[0].secret_files
    assert not entry.migrated
    assert entry.mount_paths == ["app:/certs"]


def test_a_secret_file_needs_both_vault_path_and_files() -> None:
    half = """apiVersion: cloudtaser.io/v1
kind: MigrationPlan
metadata: {name: prod}
tenants:
- name: shop
  namespace: shop
  workloads:
  - kind: Deployment
    name: web
    secrets: []
    secretFiles:
    - {source: tls, volume: certs, vaultPath: secret/data/shop/tls}
"""
    with pytest.raises(PlanError, match="'vaultPath' and 'files' go together"):
        planlib.loads(half)


def test_protect_writes_the_secret_files_annotation_in_volume_order() -> None:
    result = build([wl("shop", D, "web", tls_app())], LOOKUP)
    tenant = result.plan.tenants[0]
    workload = tenant.workloads[0]
    annotations = build_annotations(result.plan, tenant, workload, "https://bao:8200")
    assert annotations[SECRET_PATHS] == "secret/data/shop/db"
    volumes = parse_secret_files(annotations[SECRET_FILES])
    assert [v["volume"] for v in volumes] == ["certs", "config"]
    certs = volumes[0]
    assert certs["defaultMode"] == 0o440
    assert [(f["file"], f["mode"], f["base64"]) for f in certs["files"]] == [
        ("tls.crt", 0o440, False),
        ("private/tls.key", 0o400, False),
        ("keystore.jks", 0o440, True),
    ]
    assert volumes[1]["files"] == [
        {
            "file": "app.conf",
            "path": "secret/data/shop/db",
            "key": "conf",
            "mode": 0o444,
            "base64": False,
            "optional": False,
        }
    ]
    # compact, sorted keys, Kubernetes' default mode made explicit
    raw = json.loads(annotations[SECRET_FILES])
    assert annotations[SECRET_FILES] == json.dumps(raw, separators=(",", ":"), sort_keys=True)


def test_a_files_only_workload_gets_no_secret_paths_or_env_map() -> None:
    result = build([wl("db", S, "pg", bitnami_postgresql())], LOOKUP)
    tenant = result.plan.tenants[0]
    annotations = build_annotations(result.plan, tenant, tenant.workloads[0], "https://bao:8200")
    assert SECRET_PATHS not in annotations
    assert ENV_MAP not in annotations
    (volume,) = parse_secret_files(annotations[SECRET_FILES])
    assert volume["defaultMode"] == 0o644
    assert volume["volume"] == "postgresql-password"


def test_finalize_replaces_the_sources_by_memory_volumes_and_unprotect_puts_them_back() -> None:
    template = tls_app()
    workload = only(build([wl("shop", D, "web", template)], LOOKUP))
    edit = finalize_edit(template, workload, lambda name: LOOKUP.keys.get(("shop", name)))
    assert [(v.volume, v.secret is not None) for v in edit.volumes] == [
        ("certs", True),
        ("config", False),
    ]
    assert edit.spec_patch["volumes"] == [
        {"name": "certs", "secret": None, "emptyDir": {"medium": "Memory"}},
        {"name": "config", "projected": None, "emptyDir": {"medium": "Memory"}},
    ]
    # the template after finalize's strategic merge: memory volumes of the same names
    after = copy.deepcopy(template)
    after["spec"]["volumes"] = [
        {"name": "certs", "emptyDir": {"medium": "Memory"}},
        {"name": "config", "emptyDir": {"medium": "Memory"}},
    ]
    workload.finalized_volumes = edit.volumes
    assert file_drift(workload, after) == []  # a finalized volume is not drift
    assert missing_volumes(after, edit.volumes) == edit.volumes
    restored = restore_volumes(after, edit.volumes)
    assert restored == [
        {"name": "certs", "emptyDir": None, "secret": template["spec"]["volumes"][0]["secret"]},
        {
            "name": "config",
            "emptyDir": None,
            "projected": template["spec"]["volumes"][1]["projected"],
        },
    ]
    assert restore_volumes(template, edit.volumes) == []  # nothing to put back
    # the finalized plan round-trips and passes the forged-run-state rule
    plan = build([wl("shop", D, "web", template)], LOOKUP).plan
    plan.tenants[0].workloads[0].finalized_volumes = edit.volumes
    assert planlib.loads(planlib.dumps(plan)) == plan


def test_a_finalized_volume_naming_another_secret_is_refused_as_forged() -> None:
    text = planlib.dumps(build([wl("shop", D, "web", tls_app())], LOOKUP).plan)

    def with_finalized(source: str) -> str:
        edited = text.replace(
            "    secretFiles:",
            f"    finalizedVolumes:\n    - volume: certs\n{source}    secretFiles:",
            1,
        )
        assert edited != text
        return edited

    # finalizedVolumes is run state, not signed: unprotect would mount whatever it names
    with pytest.raises(PlanError, match="finalizedVolumes"):
        planlib.loads(with_finalized("      secret: {secretName: other-tenants}\n"))
    with pytest.raises(PlanError, match="finalizedVolumes"):
        planlib.loads(with_finalized("      secret: {secretName: tls, hostPath: /}\n"))
    with pytest.raises(PlanError, match="finalizedVolumes"):
        planlib.loads(with_finalized("      projected: {sources: [{configMap: {name: tls}}]}\n"))
    planlib.loads(with_finalized("      secret: {secretName: tls}\n"))


def test_file_drift_names_a_volume_that_changed_its_secret_or_items() -> None:
    template = tls_app()
    workload = only(build([wl("shop", D, "web", template)], LOOKUP))
    assert file_drift(workload, template) == []
    changed = copy.deepcopy(template)
    changed["spec"]["volumes"][0]["secret"]["secretName"] = "other"
    assert file_drift(workload, changed) == ["volume certs now reads Secret(s) other, the plan tls"]
    changed = copy.deepcopy(template)
    changed["spec"]["volumes"][0]["secret"]["items"].pop()
    assert file_drift(workload, changed) == ["the items of Secret tls in volume certs changed"]
    changed = copy.deepcopy(template)
    changed["spec"]["volumes"].pop(1)
    assert file_drift(workload, changed) == [
        "the plan migrates volume config, which the workload no longer has"
    ]


def test_binary_keys_tell_binary_from_text_without_returning_a_value() -> None:
    data = {
        "tls.crt": _b64(b"-----BEGIN CERTIFICATE-----\n"),
        "keystore.jks": _b64(b"\xfe\xed\xfe\xed\x00\x00\x00\x02"),
        "utf8": _b64("pässwörd".encode()),
        "empty": "",
    }
    assert binary_keys(data) == frozenset({"keystore.jks"})
    assert binary_keys(None) == frozenset()


def _pod(message: str | None, *, exit_code: int = 0, reason: str = "Completed") -> dict[str, Any]:
    value = (
        '[{"defaultMode":420,"files":[{"file":"a","key":"a","path":"secret/data/s/x"}],'
        '"volume":"certs"}]'
    )
    status: dict[str, Any] = {"name": "cloudtaser-files"}
    if message is not None:
        status["state"] = {
            "terminated": {"exitCode": exit_code, "reason": reason, "message": message}
        }
    return {
        "metadata": {"name": "web-1", "annotations": {SECRET_FILES: value}},
        "spec": {"initContainers": [{"name": "cloudtaser-init"}, {"name": "cloudtaser-files"}]},
        "status": {"initContainerStatuses": [status]},
    }


def test_the_files_proof_reads_the_report_never_a_file() -> None:
    report = '{"formatVersion":1,"files":1,"volumes":[{"volume":"certs","files":1}]}'
    assert files_problems(_pod(report)) == []
    # the runtime cuts the volume list from a report over 4096 bytes
    assert files_problems(_pod('{"formatVersion":1,"files":4000}')) == []
    other = '{"formatVersion":1,"files":1,"volumes":[{"volume":"other","files":1}]}'
    assert files_problems(_pod(other)) == [
        "pod web-1: cloudtaser-files did not report volume(s) certs as rendered"
    ]
    assert "did not complete" in files_problems(_pod(report, exit_code=1, reason="Error"))[0]
    assert "did not complete (not started)" in files_problems(_pod(None))[0]
    assert "left no files report" in files_problems(_pod("files written"))[0]
    failed = '{"formatVersion":1,"files":0,"error":"secret/data/s/x: field a is missing"}'
    assert "left no files report" in files_problems(_pod(failed))[0]
    bare = _pod(report)
    bare["spec"]["initContainers"] = [{"name": "cloudtaser-init"}]
    assert "no init container cloudtaser-files" in files_problems(bare)[0]
    del bare["metadata"]["annotations"][SECRET_FILES]
    assert files_problems(bare) == []  # an env-only pod has nothing to prove here


def test_file_keys_count_as_mapped_for_delete_secrets() -> None:
    plan = build([wl("shop", D, "web", tls_app())], LOOKUP).plan
    tenant = plan.tenants[0]
    proven = {"secret/data/shop/tls": frozenset({"tls.crt", "tls.key", "keystore.jks"})}
    safety = key_safety(tenant, "tls", ["keystore.jks", "tls.crt", "tls.key"], proven)
    assert safety.safe
    assert safety.proven == ("keystore.jks", "tls.crt", "tls.key")
    unproven = key_safety(tenant, "tls", ["keystore.jks", "tls.crt", "tls.key", "x"], None)
    assert unproven.unmapped == ("x",)
    assert not unproven.safe
    assert unproven.unproven == ("keystore.jks", "tls.crt", "tls.key")


def test_plan_todo_tells_to_store_a_binary_file_as_base64() -> None:
    plan = build([wl("shop", D, "web", tls_app())], LOOKUP).plan
    by_path = {item.vault_path: item for item in checklist(plan)}
    tls = by_path["secret/data/shop/tls"]
    assert tls.binary_fields == ("keystore.jks",)
    assert tls.command() == (
        "bao kv put -mount=secret shop/tls tls.crt=… tls.key=… keystore.jks=@<(base64 -w0 …)"
    )
    assert by_path["secret/data/shop/db"].fields == ("password", "conf")


def test_connect_binds_the_service_account_of_a_files_only_workload() -> None:
    """client-JWT mode: every ServiceAccount that logs in needs system:auth-delegator; a
    workload reading Secrets only as files logs in too (cloudtaser-files)."""
    plan = build([wl("db", S, "pg", bitnami_postgresql())], LOOKUP).plan
    assert plan_selection(plan, None)[1] == (("db", "default"),)
