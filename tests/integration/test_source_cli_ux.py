"""Issue 17 against a real OpenBao dev server: apply-plan shows a terraform-style diff, has
``--detailed-exitcode`` and finds / prunes objects the plan dropped; verify-plan groups by
distinct path with correct counts, ``--tenant``, ``--missing``; ``~/.vault-token``; JSON
outputs validate against schema/."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.integration.source_helpers import (
    enable_k8s_auth,
    plan_dict,
    run_cli,
    unique,
    workload,
    write_plan,
)
from tests.testenv.openbao import BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.vault]

SCHEMAS = Path(__file__).resolve().parents[2] / "schema"
CANARY = "canary-Ux-91c2-never-print"


def _valid(kind: str, document: dict) -> None:
    schema = json.loads((SCHEMAS / f"output-{kind}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)


@pytest.fixture
def auth_mount(openbao: BaoServer) -> str:
    mount = unique("k8s")
    enable_k8s_auth(openbao, mount)
    return mount


def _plan(kv: str, auth: str, name: str, *, with_shop: bool = True, extra_sa: bool = False):
    tenants = {
        "payments": [
            workload("api", {f"{kv}/data/payments/db": {"user": "U"}}, sa="api"),
            *(
                [workload("worker", {f"{kv}/data/payments/q": {"k": "K"}}, sa="w")]
                if extra_sa
                else []
            ),
        ],
    }
    if with_shop:
        tenants["shop"] = [workload("web", {f"{kv}/data/shop/db": {"user": "U"}}, sa="web")]
    return plan_dict(name, tenants, auth_mount=auth)


def test_apply_plan_dry_run_shows_hcl_diff_and_role_fields_with_detailed_exitcode(
    openbao: BaoServer, kv_mount: str, auth_mount: str, tmp_path: Path
) -> None:
    name = unique("ux")
    plan_file = write_plan(tmp_path / "plan.yaml", _plan(kv_mount, auth_mount, name))
    # nothing exists yet: changes pending -> 2; creation shows the whole HCL as + lines
    first = run_cli(
        openbao, "source", "apply-plan", str(plan_file), "--dry-run", "--detailed-exitcode"
    )
    assert first.returncode == 2, first.stderr
    assert f"+ policy sys/policies/acl/cloudtaser-{name}-payments: would create" in first.stdout
    assert f'+path "{kv_mount}/data/payments/db" {{' in first.stdout.replace("    ", "")
    applied = run_cli(openbao, "source", "apply-plan", str(plan_file), "--detailed-exitcode")
    assert applied.returncode == 2, applied.stderr  # changes were made
    # in sync: 0
    again = run_cli(
        openbao, "source", "apply-plan", str(plan_file), "--dry-run", "--detailed-exitcode"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    # a new workload in payments: the policy gains a path, the role a ServiceAccount
    plan_file = write_plan(tmp_path / "plan.yaml", _plan(kv_mount, auth_mount, name, extra_sa=True))
    dry = run_cli(
        openbao, "source", "apply-plan", str(plan_file), "--dry-run", "--detailed-exitcode"
    )
    assert dry.returncode == 2, dry.stderr
    out = dry.stdout
    assert f"~ policy sys/policies/acl/cloudtaser-{name}-payments: would update" in out
    assert f"--- sys/policies/acl/cloudtaser-{name}-payments (vault)" in out
    assert f"+++ sys/policies/acl/cloudtaser-{name}-payments (plan)" in out
    assert f'    +path "{kv_mount}/data/payments/q" {{' in out
    assert 'bound_service_account_names: ["api"] -> ["api", "w"]' in out
    # JSON carries the same diff, a formatVersion and a summary; it validates
    js = run_cli(openbao, "source", "apply-plan", str(plan_file), "--dry-run", "-o", "json")
    doc = json.loads(js.stdout)
    _valid("apply-plan", doc)
    assert doc["changesPending"] is True
    role = next(o for o in doc["objects"] if o["kind"] == "role" and o["tenant"] == "payments")
    assert {"field": "bound_service_account_names", "old": ["api"], "new": ["api", "w"]} in role[
        "fieldChanges"
    ]
    policy = next(o for o in doc["objects"] if o["kind"] == "policy" and o["tenant"] == "payments")
    assert f'+path "{kv_mount}/data/payments/q" {{' in policy["diff"]
    # a normal run prints the diff before it writes
    real = run_cli(openbao, "source", "apply-plan", str(plan_file))
    assert real.returncode == 0, real.stderr
    assert f'    +path "{kv_mount}/data/payments/q" {{' in real.stdout
    assert f"~ policy sys/policies/acl/cloudtaser-{name}-payments: will update" in real.stdout
    # an error under --detailed-exitcode is 1 (terraform), not the usual 3
    bad = run_cli(
        openbao,
        "source",
        "apply-plan",
        str(plan_file),
        "--detailed-exitcode",
        token="s.not-a-token-xyz",
    )
    assert bad.returncode == 1, bad.stderr
    assert "s.not-a-token-xyz" not in bad.stdout + bad.stderr


def test_apply_plan_reports_objects_the_plan_dropped_and_prunes_them(
    openbao: BaoServer, kv_mount: str, auth_mount: str, tmp_path: Path
) -> None:
    name = unique("drop")
    plan_file = write_plan(tmp_path / "plan.yaml", _plan(kv_mount, auth_mount, name))
    assert run_cli(openbao, "source", "apply-plan", str(plan_file)).returncode == 0
    # someone else's policy with our prefix but not our header is never touched
    foreign = f"cloudtaser-{name}-foreign"
    r = openbao.api("POST", f"sys/policies/acl/{foreign}", {"policy": 'path "x" {}'})
    assert r.status_code in (200, 204), r.text
    # the shop tenant leaves the plan
    write_plan(plan_file, _plan(kv_mount, auth_mount, name, with_shop=False))
    shop_policy = f"sys/policies/acl/cloudtaser-{name}-shop"
    shop_role = f"auth/{auth_mount}/role/cloudtaser-{name}-shop"
    report = run_cli(
        openbao, "source", "apply-plan", str(plan_file), "--dry-run", "--detailed-exitcode"
    )
    assert report.returncode == 2, report.stderr
    assert f"! policy {shop_policy}: orphaned" in report.stdout
    assert f"! role {shop_role}: orphaned" in report.stdout
    assert "remove it with --prune" in report.stdout
    assert foreign not in report.stdout
    # --prune --dry-run shows the deletion first, deletes nothing
    shown = run_cli(openbao, "source", "apply-plan", str(plan_file), "--prune", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert f"- policy {shop_policy}: would delete" in shown.stdout
    assert f"- role {shop_role}: would delete" in shown.stdout
    assert openbao.api("GET", shop_policy).status_code == 200
    # --prune deletes them (role and policy), and only them
    pruned = run_cli(openbao, "source", "apply-plan", str(plan_file), "--prune", "-o", "json")
    assert pruned.returncode == 0, pruned.stderr
    doc = json.loads(pruned.stdout)
    _valid("apply-plan", doc)
    assert doc["summary"]["delete"] == 2
    assert openbao.api("GET", shop_policy).status_code == 404
    assert openbao.api("GET", shop_role).status_code == 404
    assert openbao.api("GET", f"sys/policies/acl/{foreign}").status_code == 200
    assert openbao.api("GET", f"sys/policies/acl/cloudtaser-{name}-payments").status_code == 200
    final = run_cli(
        openbao, "source", "apply-plan", str(plan_file), "--dry-run", "--detailed-exitcode"
    )
    assert final.returncode == 0, final.stdout


def _populate_plan(kv: str, name: str) -> dict:
    """3 tenants, 12 workloads, 4 distinct paths; payments/db is shared by 6 workloads."""
    pay = [
        workload(f"api-{i}", {f"{kv}/data/payments/db": {"user": "U", "password": "P"}})
        for i in range(6)
    ]
    shop = [workload(f"web-{i}", {f"{kv}/data/shop/db": {"user": "U"}}) for i in range(4)]
    misc = [
        workload("cron", {f"{kv}/data/misc/partial": {"user": "U", "token": "T"}}),
        workload("ok", {f"{kv}/data/misc/ok": {"k": "K"}}),
    ]
    return plan_dict(name, {"payments": pay, "shop": shop, "misc": misc})


def test_verify_plan_groups_problems_by_distinct_path_with_correct_counts(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    openbao.bao("kv", "put", f"{kv_mount}/misc/ok", f"k={CANARY}")
    openbao.bao("kv", "put", f"{kv_mount}/misc/partial", f"user={CANARY}")
    plan_file = write_plan(tmp_path / "plan.yaml", _populate_plan(kv_mount, unique("pop")))
    text = run_cli(openbao, "source", "verify-plan", str(plan_file))
    assert text.returncode == 1, text.stderr
    out = text.stdout
    # problems only by default, one entry per distinct path
    assert f"{kv_mount}/data/misc/ok" not in out
    assert out.count(f"{kv_mount}/data/payments/db: missing") == 1
    assert "needed by 6 workloads: payments/Deployment/api-0, " in out
    assert f"{kv_mount}/data/misc/partial: missing-fields (lacks token)" in out
    assert "4 distinct paths checked, 3 of them with problems (2 missing, 1 missing-fields)" in out
    assert len(out.splitlines()) < 15  # 12 workloads, 3 problem paths: no wall of text
    assert CANARY not in out + text.stderr
    assert "4 distinct paths checked: 1 ok, 2 missing, 1 missing-fields" in text.stderr  # tally
    # --all lists the good path too
    every = run_cli(openbao, "source", "verify-plan", str(plan_file), "--all")
    assert f"{kv_mount}/data/misc/ok: ok" in every.stdout
    # --tenant scopes the check (and a typo is an error, not an empty success)
    scoped = run_cli(openbao, "source", "verify-plan", str(plan_file), "--tenant", "shop")
    assert scoped.returncode == 1
    assert "1 distinct paths checked" in scoped.stdout
    assert "payments" not in scoped.stdout
    typo = run_cli(openbao, "source", "verify-plan", str(plan_file), "--tenant", "shopp")
    assert typo.returncode == 2
    assert "no tenant 'shopp'" in typo.stderr
    # JSON: per-path entries and path counts in the summary; validates against its schema
    js = run_cli(openbao, "source", "verify-plan", str(plan_file), "-o", "json")
    doc = json.loads(js.stdout)
    _valid("verify-plan", doc)
    assert doc["summary"]["pathsChecked"] == 4
    assert doc["summary"]["paths"]["missing"] == 2
    assert doc["summary"]["paths"]["ok"] == 1
    db = next(p for p in doc["paths"] if p["vaultPath"] == f"{kv_mount}/data/payments/db")
    assert len(db["workloads"]) == 6
    assert db["fields"] == ["user", "password"]


def test_verify_plan_missing_prints_bao_kv_skeletons_without_values(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    openbao.bao("kv", "put", f"{kv_mount}/misc/ok", f"k={CANARY}")
    openbao.bao("kv", "put", f"{kv_mount}/misc/partial", f"user={CANARY}")
    plan_file = write_plan(tmp_path / "plan.yaml", _populate_plan(kv_mount, unique("todo")))
    text = run_cli(openbao, "source", "verify-plan", str(plan_file), "--missing")
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert f"bao kv put -mount={kv_mount} payments/db user=… password=…" in lines
    assert f"bao kv put -mount={kv_mount} shop/db user=…" in lines
    # only the missing field, added without replacing the existing one
    assert f"bao kv patch -mount={kv_mount} misc/partial token=…" in lines
    assert not [line for line in lines if "misc/ok" in line]
    assert CANARY not in text.stdout + text.stderr
    js = run_cli(openbao, "source", "verify-plan", str(plan_file), "--missing", "-o", "json")
    doc = json.loads(js.stdout)
    _valid("verify-plan-missing", doc)
    assert doc["summary"] == {"paths": 3, "fields": 4}
    # the skeletons really work: after running them (with values) verify passes
    for line in lines:
        if line.startswith("bao kv "):
            args = [a.replace("…", "v-" + CANARY) for a in line.split()[1:]]
            openbao.bao(*args)
    assert run_cli(openbao, "source", "verify-plan", str(plan_file)).returncode == 0


def test_vault_token_file_is_read_after_flag_and_environment(
    openbao: BaoServer, kv_mount: str, tmp_path: Path
) -> None:
    openbao.bao("kv", "put", f"{kv_mount}/tok/a", f"k={CANARY}")
    data = plan_dict(unique("tok"), {"t": [workload("w", {f"{kv_mount}/data/tok/a": {"k": "K"}})]})
    plan_file = write_plan(tmp_path / "plan.yaml", data)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".vault-token").write_text(openbao.token + "\n")
    (home / ".vault-token").chmod(0o600)
    import os
    import subprocess
    import sys

    env = openbao.env()
    for key in ("BAO_TOKEN", "VAULT_TOKEN"):
        env.pop(key)
    env["HOME"] = str(home)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    )

    def run(*extra: str, **over: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cloudtaser", "source", "verify-plan", str(plan_file), *extra],
            env={**env, **over},
            capture_output=True,
            text=True,
            check=False,
        )

    after_login = run()  # as after `bao login`: only ~/.vault-token
    assert after_login.returncode == 0, after_login.stderr
    # the environment wins over the file (a refused token proves which one was used)
    env_wins = run(VAULT_TOKEN="s.env-token-refused")
    assert env_wins.returncode == 3
    flag_file = tmp_path / "flag-token"
    flag_file.write_text("s.flag-token-refused")
    flag_file.chmod(0o600)
    flag_wins = run("--token-file", str(flag_file))
    assert flag_wins.returncode == 3
    for result in (after_login, env_wins, flag_wins):
        assert openbao.token not in result.stdout + result.stderr
