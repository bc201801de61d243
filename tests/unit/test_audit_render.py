"""The audit report's forms: JSON decodes back into the schema'd Structs (and the committed
schema is current), the HTML is self-contained and carries the same figures as the JSON, and
every name is escaped."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec

from cloudtaser.target.audit.collect import (
    AuditReport,
    build_report,
    json_schema,
    namespace_report,
)
from cloudtaser.target.audit.render import to_html, to_json, to_text
from cloudtaser.target.references.scan import Scan
from cloudtaser.target.references.uses import SecretUse

ROOT = Path(__file__).resolve().parents[2]


def _deployment(name: str, *, protected: bool, env_secret: str | None) -> dict[str, Any]:
    env = (
        [{"name": "P", "valueFrom": {"secretKeyRef": {"name": env_secret, "key": "k"}}}]
        if env_secret
        else []
    )
    labels = {"cloudtaser.io/inject": "true"} if protected else {}
    return {
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "env": env}]},
            }
        },
    }


def sample() -> AuditReport:
    from cloudtaser.target.references.scan import object_uses

    objects = {
        "Deployment": [
            _deployment("legacy", protected=False, env_secret="db"),
            _deployment("half", protected=True, env_secret="db"),
            _deployment("done", protected=True, env_secret=None),
        ],
        "Pod": [
            {
                "metadata": {"name": "half-1", "labels": {"cloudtaser.io/inject": "true"}},
                "spec": {"containers": [{"name": "app", "command": ["/app"]}]},
                "status": {"phase": "Running"},
            }
        ],
    }
    uses = [u for kind, objs in objects.items() for o in objs for u in object_uses(kind, o)]
    uses.append(SecretUse("tls-<x>", "Ingress", "web", "ingressTLS", "a.example"))
    found = Scan(namespace="shop", uses=sorted(uses), objects=objects)
    secrets = [
        {"metadata": {"name": "db"}, "type": "Opaque"},
        {"metadata": {"name": "tls-<x>"}, "type": "kubernetes.io/tls"},
        {"metadata": {"name": "old"}, "type": "Opaque"},
    ]
    part = namespace_report("shop", found, secrets, [])
    empty = namespace_report("quiet", Scan(namespace="quiet"), [], [])
    return build_report([part, empty], cluster="https://127.0.0.1:6443")


class _Figures(HTMLParser):
    """Collect ``data-figure`` cells and every external reference (src/href/url())."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[tuple[str, str], int] = {}
        self.external: list[str] = []
        self._cell: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for key in ("src", "href"):
            if found.get(key):
                self.external.append(str(found[key]))
        if tag in {"script", "link", "img", "iframe"}:
            self.external.append(tag)
        if "data-figure" in found:
            self._cell = (str(found["data-namespace"]), str(found["data-figure"]))

    def handle_data(self, data: str) -> None:
        if self._cell is not None and data.strip():
            self.figures[self._cell] = int(data.strip())
            self._cell = None


def figures_from_html(text: str) -> dict[tuple[str, str], int]:
    parser = _Figures()
    parser.feed(text)
    return parser.figures


def figures_from_json(data: dict[str, Any]) -> dict[tuple[str, str], int]:
    keys = (
        "readingSecretsAsEnv",
        "podsNotInjected",
        "protected",
        "finalized",
        "secrets",
        "secretsUnused",
        "workloads",
    )
    out = {(ns["name"], k): ns["summary"][k] for ns in data["namespaces"] for k in keys}
    out.update({("*", k): data["totals"][k] for k in keys})
    return out


def test_the_summary_figures_are_right() -> None:
    shop = sample().namespaces[0].summary
    assert (shop.workloads, shop.reading_secrets_as_env, shop.protected, shop.finalized) == (
        3,
        2,
        2,
        1,
    )
    assert (shop.secrets, shop.secrets_in_use, shop.secrets_unused) == (3, 2, 1)
    assert shop.pods_not_injected == 1


def test_json_is_stable_and_decodes_into_the_schema_structs() -> None:
    text = to_json(sample())
    data = json.loads(text)
    assert data["formatVersion"] == 1
    assert list(data) == ["formatVersion", "generatedAt", "cluster", "totals", "namespaces"]
    again = msgspec.json.decode(text.encode(), type=AuditReport)
    assert msgspec.to_builtins(again) == data
    bad = json.dumps({**data, "surprise": 1})
    try:
        msgspec.json.decode(bad.encode(), type=AuditReport)
    except msgspec.ValidationError:
        pass
    else:
        raise AssertionError("an unknown field must be refused")


def test_committed_audit_schema_is_current() -> None:
    committed = json.loads((ROOT / "schema" / "audit.schema.json").read_text())
    assert committed == json_schema(), (
        "schema/audit.schema.json is stale: regenerate it from "
        "cloudtaser.target.audit.collect.json_schema()"
    )


def test_html_is_self_contained_and_agrees_with_json() -> None:
    report = sample()
    page = to_html(report)
    parser = _Figures()
    parser.feed(page)
    assert parser.external == []
    assert not re.search(r"url\(|@import|https?://(?!127\.0\.0\.1:6443)", page)
    assert parser.figures == figures_from_json(json.loads(to_json(report)))
    assert parser.figures[("shop", "readingSecretsAsEnv")] == 2


def test_html_escapes_every_name() -> None:
    page = to_html(sample())
    assert "tls-<x>" not in page
    assert "tls-&lt;x&gt;" in page


def test_text_names_the_users_of_each_secret() -> None:
    text = to_text(sample())
    assert "Secret db: Deployment half (env); Deployment legacy (env)" in text
    assert "Secret old: unused" in text
    assert "pod half-1 not injected" in text
