"""Helpers shared by the source apply-plan / verify-plan integration tests (not fixtures)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.testenv.openbao import BaoServer

REPO = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def enable_k8s_auth(openbao: BaoServer, mount: str, namespace: str | None = None) -> str:
    headers = {"X-Vault-Namespace": namespace} if namespace else None
    r = openbao.api("POST", f"sys/auth/{mount}", {"type": "kubernetes"}, headers=headers)
    assert r.status_code in (200, 204), r.text
    return mount


def plan_dict(
    name: str,
    tenants: dict[str, list[dict[str, Any]]],
    *,
    auth_mount: str | None = None,
    kv_mount: str | None = None,
) -> dict[str, Any]:
    """``tenants``: tenant name (also the namespace) -> workload dicts."""
    meta: dict[str, Any] = {"name": name, "cluster": "test"}
    if auth_mount:
        meta["authMount"] = auth_mount
    if kv_mount:
        meta["kvMount"] = kv_mount
    return {
        "apiVersion": "cloudtaser.io/v1",
        "kind": "MigrationPlan",
        "metadata": meta,
        "tenants": [
            {"name": t, "namespace": t, "workloads": workloads} for t, workloads in tenants.items()
        ],
    }


def workload(
    name: str,
    secrets_: dict[str, dict[str, str]],
    *,
    sa: str | None = None,
    status: str | None = None,
    shared: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``secrets_``: vaultPath -> fields ({field: ENV}); paths in ``shared`` are marked
    ``shared: true`` (outside the tenant's scope on purpose)."""
    w: dict[str, Any] = {
        "kind": "Deployment",
        "name": name,
        "secrets": [
            {"source": f"src-{i}", "vaultPath": path, "fields": fields}
            | ({"shared": True} if path in shared else {})
            for i, (path, fields) in enumerate(secrets_.items())
        ],
    }
    if sa:
        w["serviceAccount"] = sa
    if status:
        w["status"] = status
    return w


def write_plan(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cli(
    openbao: BaoServer, *args: str, token: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cloudtaser`` as a user would, with BAO_ADDR/BAO_TOKEN in the environment."""
    env = openbao.env(token)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def policy_paths(hcl: str) -> dict[str, list[str]]:
    """path -> capabilities of a policy as cloudtaser renders it (one block per path)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in hcl.splitlines():
        if line.startswith('path "'):
            current = line.split('"')[1]
        elif line.strip().startswith("capabilities") and current:
            inside = line.split("[", 1)[1].split("]", 1)[0]
            out[current] = [c.strip().strip('"') for c in inside.split(",") if c.strip()]
    return out


def token_with_policy(openbao: BaoServer, policy_hcl: str, *, name: str | None = None) -> str:
    name = name or unique("op")
    r = openbao.api("POST", f"sys/policies/acl/{name}", {"policy": policy_hcl})
    assert r.status_code in (200, 204), r.text
    r = openbao.api("POST", "auth/token/create", {"policies": [name], "ttl": "1h"})
    assert r.status_code == 200, r.text
    return str(r.json()["auth"]["client_token"])
