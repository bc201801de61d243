"""``cloudtaser fleet report``: files in, one report out (table, ``-o json`` of its schema,
``--html FILE``); a file that is not a usable audit is exit 2 with one line naming it and no
traceback, even with ``-v``; an older audit of a cluster given with a newer one is named on
stderr as left out."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from cloudtaser.cli import main
from tests.unit.test_audit_render import to_json
from tests.unit.test_fleet_report import SCHEMA, audit_of


def _files(tmp_path: Path) -> list[str]:
    audits = {
        "eu.json": audit_of("https://eu:6443", "uid-eu", "2026-12-06T10:00:00Z"),
        "us.json": audit_of("https://us:6443", "uid-us", "2026-12-06T10:05:00Z", clean=True),
        "eu-monday.json": audit_of("https://eu:6443", "uid-eu", "2026-12-01T10:00:00Z"),
    }
    for name, report in audits.items():
        (tmp_path / name).write_text(to_json(report))
    return [str(tmp_path / name) for name in audits]


def test_json_html_and_the_audit_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "fleet.html"
    assert main(["fleet", "report", *_files(tmp_path), "-o", "json", "--html", str(page)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    jsonschema.validate(data, SCHEMA)
    assert [c["clusterId"] for c in data["clusters"]] == ["uid-eu", "uid-us"]
    assert [s["file"] for s in data["superseded"]] == [str(tmp_path / "eu-monday.json")]
    assert f"left out {tmp_path / 'eu-monday.json'} (measured 2026-12-01T10:00:00Z)" in err
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert main(["fleet", "report", *_files(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("verdict: FAIL: 1 of 2 cluster(s) fail")


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_file_that_is_not_an_audit_is_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verbose: list[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("apiVersion: cloudtaser.io/v1\n")
    files = _files(tmp_path)
    assert main([*verbose, "fleet", "report", files[0], str(plan)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        f"cloudtaser: error: {plan}: not JSON (Expecting value: line 1 column 1 (char 0)); "
        "fleet report reads the documents of 'cloudtaser target audit --output json'"
    ]
    assert "Traceback" not in err
