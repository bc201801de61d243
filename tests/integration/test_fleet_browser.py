"""The fleet report of two real test-bed clusters (two control planes, their own etcd, CA and
kube-system UID): ``target audit --output json`` on each against real workloads, then ``fleet
report`` of the two files, through the real CLI. Its JSON matches both audits (identity,
measured time, figures per cluster and per namespace, totals their sums) and its page, opened
in Debian's headless chromium, carries the same figures in the DOM chromium built and draws
the verdict tile, the two score tiles and one red / green / blue tile per figure (see
tests/integration/browser.py for what the screenshot does and does not prove)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
from lightkube.resources.core_v1 import Namespace

from tests.integration.browser import distinct_colours, regions, render
from tests.integration.test_audit_browser import BLUE, GREEN, RED, SCORE, VERDICT, WARNINGS
from tests.integration.test_protect import REPO, _env
from tests.testenv.cluster import Cluster
from tests.testenv.workloads import (
    ContainerSpec,
    create_namespace,
    create_secret,
    create_workload,
    delete_namespace,
    deployment,
    wait_rollout,
)
from tests.unit.test_fleet_report import fleet_figures_from_audits, fleet_figures_from_html

CANARY = "canary-Fleet-9c2d-never-print"
#: Tall enough for two clusters' sections: the bottom rows must stay blank (nothing cut off).
#: Wide enough for the per-cluster table (eight figures since "only as files", issue 29).
WINDOW = (1600, 2400)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "cloudtaser", *args],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert CANARY not in out.stdout + out.stderr, "a Secret value reached the output"
    return out


def _readers(client: Any, namespace: str, names: list[str], *, unused: str | None = None) -> None:
    """Secret ``db`` read as env by one Deployment per name (rolled out), and ``unused``."""
    create_secret(client, namespace, "db", {"pw": CANARY})
    if unused:
        create_secret(client, namespace, unused, {"pw": CANARY})
    reader = ContainerSpec(secret_env={"DB_PASSWORD": ("db", "pw")})
    for name in names:
        create_workload(client, deployment(name, namespace, containers=(reader,)))
    for name in names:
        wait_rollout(client, "Deployment", namespace, name, timeout=120)


def _audit(cluster: Cluster, path: Path) -> dict[str, Any]:
    out = _cli("target", "audit", "--kubeconfig", str(cluster.kubeconfig), "-o", "json")
    assert out.returncode == 0, out.stderr
    path.write_text(out.stdout)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_the_fleet_report_of_two_real_clusters_matches_both_audits_in_chromium(
    cluster: Cluster,
    kube_client: Any,
    cluster_factory: Callable[..., Cluster],
    tmp_path: Path,
) -> None:
    other = cluster_factory("ct-second")
    other_client = other.client()
    here = create_namespace(kube_client)
    there = [create_namespace(other_client), create_namespace(other_client)]
    try:
        _readers(kube_client, here, ["api"], unused="old")
        _readers(other_client, there[0], ["web", "worker"])
        _readers(other_client, there[1], ["batch"], unused="legacy")
        audits = [
            _audit(cluster, tmp_path / "main.json"),
            _audit(other, tmp_path / "second.json"),
        ]
        uids = [
            client.get(Namespace, "kube-system").metadata.uid
            for client in (kube_client, other_client)
        ]
    finally:
        delete_namespace(kube_client, here)
        for name in there:
            delete_namespace(other_client, name)
        other_client.close()
    # so the checks below can fail: two clusters, their own identities, figures that differ
    assert [a["clusterId"] for a in audits] == uids
    assert uids[0] != uids[1]
    assert audits[0]["cluster"] != audits[1]["cluster"]
    by_ns = [{n["name"]: n["summary"] for n in a["namespaces"]} for a in audits]
    assert by_ns[0][here]["readingSecretsAsEnv"] == 1
    assert [by_ns[1][n]["readingSecretsAsEnv"] for n in there] == [2, 1]

    files = [str(tmp_path / "main.json"), str(tmp_path / "second.json")]
    page = tmp_path / "fleet.html"
    out = _cli("fleet", "report", *files, "-o", "json", "--html", str(page))
    assert out.returncode == 0, out.stderr
    fleet = json.loads(out.stdout)
    schema = json.loads((REPO / "schema/output-fleet-report.schema.json").read_text())
    jsonschema.validate(fleet, schema)
    for entry, audit, file in zip(fleet["clusters"], audits, files, strict=True):
        assert (entry["file"], entry["cluster"], entry["clusterId"]) == (
            file,
            audit["cluster"],
            audit["clusterId"],
        )
        assert entry["measuredAt"] == audit["generatedAt"]
        assert (entry["verdict"], entry["score"]) == (audit["verdict"], audit["score"])
        assert entry["summary"] == audit["summary"]
        assert {n["name"]: n["summary"] for n in entry["namespaces"]} == {
            n["name"]: n["summary"] for n in audit["namespaces"]
        }
    for field, value in fleet["summary"].items():
        if field.startswith("clusters"):
            continue
        assert value == audits[0]["summary"][field] + audits[1]["summary"][field], field
    assert fleet["summary"]["clusters"] == 2
    assert fleet["verdict"] == "fail"
    assert fleet["superseded"] == []

    expected = fleet_figures_from_audits(audits)
    dom, width, height, rows = render(page, tmp_path, WINDOW)
    assert fleet_figures_from_html(dom) == expected
    assert f'id="verdict" data-verdict="{fleet["verdict"]}"' in dom
    for uid in uids:
        assert f'data-cluster="{uid}"' in dom
    assert (width, height) == WINDOW
    assert distinct_colours(rows) > 10, "the screenshot is blank"
    white = (255, 255, 255)
    assert all(px == white for row in rows[-40:] for px in row), "the page was cut off"
    assert regions(rows, VERDICT[fleet["verdict"]]) == 1, "the verdict tile is not drawn"
    assert regions(rows, SCORE) == 2, "the two score tiles are not drawn"
    red = sum(1 for (_c, _n, key), v in expected.items() if key in WARNINGS and v)
    green = sum(1 for (_c, _n, key), v in expected.items() if key in WARNINGS and not v)
    blue = sum(1 for (_c, _n, key), _v in expected.items() if key not in WARNINGS)
    assert (regions(rows, RED), regions(rows, GREEN), regions(rows, BLUE)) == (red, green, blue)
