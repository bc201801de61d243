"""The fleet report: the audits of several clusters merged (figures exactly the audits', totals
their sums, the audit's verdict and score rules over them), one audit per cluster (the newest
kept, the others listed; the ambiguous cases refused), every file that is not an audit of this
format refused with one message naming it, the JSON the common envelope of its generated
schema, the HTML self-contained, escaped and carrying the same figures as the JSON."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from cloudtaser.errors import ConfigError
from cloudtaser.target.audit.figures import score, totals, verdict
from cloudtaser.target.audit.fleet.merge import fleet_report, load_audit, merge
from cloudtaser.target.audit.fleet.render import to_html, to_text
from cloudtaser.target.audit.fleet.result import FleetReport
from cloudtaser.target.audit.result import AuditReport, Verdict
from tests.unit.test_audit_render import sample, to_json

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schema/output-fleet-report.schema.json").read_text())
FIGURES = (
    "readingSecretsAsEnv",
    "readingSecretsOnlyAsFiles",
    "podsNotInjected",
    "protected",
    "finalized",
    "secrets",
    "secretsUnused",
    "workloads",
)


def audit_of(cluster: str, uid: str | None, at: str, *, clean: bool = False) -> AuditReport:
    """The sample audit (shop: 4 workloads read Secrets as env) as if measured on ``cluster``
    at ``at``; ``clean``: only its empty namespace (verdict pass)."""
    report = sample()
    report.cluster, report.cluster_id, report.generated_at = cluster, uid, at
    if clean:
        report.namespaces = report.namespaces[1:]
        report.summary = totals(ns.summary for ns in report.namespaces)
        report.verdict, report.verdict_reason = verdict(report.summary)
        report.score = score(report.summary)
    return report


def fleet_json(report: FleetReport) -> dict[str, Any]:
    """What ``fleet report -o json`` prints."""
    data: dict[str, Any] = json.loads(json.dumps(msgspec.to_builtins(report)))
    return data


class _Cells(HTMLParser):
    """Every ``data-figure`` tile: (cluster, namespace, figure) -> its number; and every
    external reference (src/href, script/link/img/iframe)."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[tuple[str, str, str], int] = {}
        self.external: list[str] = []
        self._cell: tuple[str, str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.external += [str(found[k]) for k in ("src", "href") if found.get(k)]
        if tag in {"script", "link", "img", "iframe"}:
            self.external.append(tag)
        if "data-figure" in found:
            self._cell = (
                str(found["data-cluster"]),
                str(found["data-namespace"]),
                str(found["data-figure"]),
            )

    def handle_data(self, data: str) -> None:
        if self._cell is not None and data.strip():
            self.figures[self._cell] = int(data.strip())
            self._cell = None


def fleet_figures_from_html(text: str) -> dict[tuple[str, str, str], int]:
    parser = _Cells()
    parser.feed(text)
    assert parser.external == [], "the page must need nothing from outside"
    return parser.figures


def fleet_figures_from_audits(audits: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """The tiles the fleet page must show for these audit documents (JSON): per cluster its
    total and each non-empty namespace, and the fleet's total (their sums)."""
    out: dict[tuple[str, str, str], int] = {}
    for audit in audits:
        key = audit["clusterId"] or audit["cluster"]
        out.update({(key, "*", f): audit["summary"][f] for f in FIGURES})
        for ns in audit["namespaces"]:
            if ns["status"] != "empty":
                out.update({(key, ns["name"], f): ns["summary"][f] for f in FIGURES})
    out.update({("*", "*", f): sum(a["summary"][f] for a in audits) for f in FIGURES})
    return out


def _write(tmp: Path, name: str, report: AuditReport) -> str:
    path = tmp / name
    path.write_text(to_json(report))
    return str(path)


def test_the_figures_are_each_audits_and_the_totals_their_sums(tmp_path: Path) -> None:
    a = audit_of("https://a.example:6443", "uid-a", "2026-12-06T10:00:00Z")
    b = audit_of("https://b.example:6443", "uid-b", "2026-12-06T11:30:00Z", clean=True)
    report = fleet_report([_write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b)])
    data = fleet_json(report)
    jsonschema.validate(data, SCHEMA)
    assert (data["formatVersion"], data["kind"], list(data)[-1]) == ("1", "fleet-report", "summary")
    assert msgspec.convert(data, FleetReport) == report
    audits = [json.loads(to_json(a)), json.loads(to_json(b))]
    for cluster, audit in zip(data["clusters"], audits, strict=True):
        assert cluster["file"].endswith(("a.json", "b.json"))
        assert (cluster["cluster"], cluster["clusterId"]) == (audit["cluster"], audit["clusterId"])
        assert cluster["measuredAt"] == audit["generatedAt"]
        assert (cluster["verdict"], cluster["score"]) == (audit["verdict"], audit["score"])
        assert cluster["summary"] == audit["summary"]
        assert [(n["name"], n["status"], n["summary"]) for n in cluster["namespaces"]] == [
            (n["name"], n["status"], n["summary"]) for n in audit["namespaces"]
        ]
    summary = data["summary"]
    for field, value in audits[0]["summary"].items():
        assert summary[field] == value + audits[1]["summary"][field], field
    assert (summary["clusters"], summary["clustersFailing"], summary["clustersIncomplete"]) == (
        2,
        1,
        0,
    )
    assert data["verdict"] == "fail"
    assert data["verdictReason"].startswith("1 of 2 cluster(s) fail, 0 incomplete: ")
    assert data["score"] == audits[0]["score"]  # b adds nothing to count
    assert (data["measuredFrom"], data["measuredTo"]) == (
        "2026-12-06T10:00:00Z",
        "2026-12-06T11:30:00Z",
    )
    assert data["superseded"] == []


def test_a_fleet_of_clean_clusters_passes() -> None:
    report = merge(
        [
            ("a.json", audit_of("https://a", "uid-a", "2026-12-06T10:00:00Z", clean=True)),
            ("b.json", audit_of("https://b", "uid-b", "2026-12-06T10:00:00Z", clean=True)),
        ]
    )
    assert report.verdict is Verdict.PASS
    assert report.score.secret_consumption_moved is None  # nothing to count: n/a, not 0 or 100


def test_of_two_audits_of_one_cluster_the_newest_is_kept_and_the_other_listed() -> None:
    old = audit_of("https://a", "uid-a", "2026-12-05T10:00:00Z")
    new = audit_of("https://a-through-a-proxy", "uid-a", "2026-12-06T10:00:00+01:00", clean=True)
    other = audit_of("https://b", "uid-b", "2026-12-06T08:00:00Z")
    report = merge([("old.json", old), ("b.json", other), ("new.json", new)])
    assert [c.file for c in report.clusters] == ["new.json", "b.json"]  # first-given order
    assert report.clusters[0].summary == new.summary  # the clean one: not the older figures
    assert [(s.file, s.kept, s.measured_at) for s in report.superseded] == [
        ("old.json", "new.json", "2026-12-05T10:00:00Z")
    ]
    assert report.summary.clusters == 2
    assert report.summary.workloads == new.summary.workloads + other.summary.workloads
    assert "left out: old.json" in to_text(report)
    assert 'id="superseded"' in to_html(report)


def test_the_same_audit_given_twice_counts_once() -> None:
    a = audit_of("https://a", "uid-a", "2026-12-06T10:00:00Z")
    report = merge([("a.json", a), ("copy.json", audit_of("https://a", "uid-a", a.generated_at))])
    assert [c.file for c in report.clusters] == ["a.json"]
    assert report.summary.workloads == a.summary.workloads
    assert [s.file for s in report.superseded] == ["copy.json"]


def test_two_different_audits_of_one_cluster_at_the_same_second_are_refused() -> None:
    a = audit_of("https://a", "uid-a", "2026-12-06T10:00:00Z")
    b = audit_of("https://a", "uid-a", "2026-12-06T10:00:00Z", clean=True)
    with pytest.raises(ConfigError, match=r"a.json and b.json audit the same cluster .* same time"):
        merge([("a.json", a), ("b.json", b)])


def test_an_audit_without_identity_is_refused_only_when_its_address_is_shared() -> None:
    unknown = audit_of("https://127.0.0.1:6443", None, "2026-12-06T10:00:00Z")
    same_address = audit_of("https://127.0.0.1:6443", "uid-b", "2026-12-06T10:00:00Z")
    with pytest.raises(ConfigError, match=r"x.json has no cluster identity .* y.json"):
        merge([("x.json", unknown), ("y.json", same_address)])
    elsewhere = audit_of("https://10.0.0.1:6443", "uid-b", "2026-12-06T10:00:00Z")
    report = merge([("x.json", unknown), ("y.json", elsewhere)])
    assert [c.cluster_id for c in report.clusters] == [None, "uid-b"]
    # two clusters behind one address (kind's 127.0.0.1:6443), told apart by their UIDs
    twin = audit_of("https://127.0.0.1:6443", "uid-c", "2026-12-06T10:00:00Z")
    assert merge([("y.json", same_address), ("z.json", twin)]).summary.clusters == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>", r"bad.json: not JSON \(Expecting value"),
        (b"\xff\xfe", r"bad.json: not JSON"),
        (b"[1, 2]", r"bad.json: not an audit document \(a JSON list, not an object\)"),
        (b'{"formatVersion": "1"}', r"bad.json: not an audit document \(no kind\)"),
        (
            b'{"formatVersion": "1", "kind": "plan-status", "summary": {}}',
            r'bad.json: not an audit document \(kind "plan-status"\)',
        ),
        (
            b'{"formatVersion": 1, "generatedAt": "x", "cluster": "y", "totals": {}, '
            b'"namespaces": []}',
            r"bad.json: the audit of an earlier cloudtaser .* audit the cluster again",
        ),
        (
            b'{"formatVersion": "2", "kind": "audit"}',
            r'bad.json: audit formatVersion "2", this cloudtaser reads "1"',
        ),
        (
            b'{"formatVersion": "1", "kind": "audit", "cluster": "y"}',
            r"bad.json: not a valid audit document \(Object missing required field",
        ),
    ],
)
def test_a_file_that_is_not_an_audit_of_this_format_is_named_and_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_audit(path, name="bad.json")
    assert "\n" not in str(info.value)


def test_a_wrong_field_is_named_by_its_path(tmp_path: Path) -> None:
    data = json.loads(to_json(audit_of("https://a", "uid-a", "2026-12-06T10:00:00Z")))
    data["namespaces"][0]["summary"]["workloads"] = -1
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"\$\.namespaces\[0\]\.summary\.workloads"):
        load_audit(path)


def test_a_missing_file_is_one_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.json: cannot read it \(No such file"):
        fleet_report([str(tmp_path / "nope.json")])


def test_html_is_self_contained_escaped_and_carries_the_jsons_figures() -> None:
    a = audit_of("https://a", "uid-a", "2026-12-06T10:00:00Z")
    a.namespaces[0].name = "<script>alert(1)</script>"
    b = audit_of('https://b/"><x-evil>', None, "2026-12-06T11:00:00Z")
    report = merge([("<x-file>a.json", a), ("b.json", b)])
    page = to_html(report)
    assert "<script" not in page
    assert "<x-" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;x-file&gt;a.json" in page
    expected = fleet_figures_from_audits([json.loads(to_json(a)), json.loads(to_json(b))])
    assert fleet_figures_from_html(page) == expected
    assert 'id="verdict" data-verdict="fail"' in page
    assert "<td data-cluster-id>uid-a</td>" in page


def test_text_names_each_cluster_its_identity_and_when_it_was_measured() -> None:
    a = audit_of("https://a", "uid-a", "2026-12-06T10:00:00Z")
    text = to_text(merge([("a.json", a)]))
    assert text.startswith("verdict: FAIL: 1 of 1 cluster(s) fail")
    assert "a.json: https://a (kube-system UID uid-a), measured 2026-12-06T10:00:00Z" in text
    assert "empty (no workload, no Secret): quiet" in text
