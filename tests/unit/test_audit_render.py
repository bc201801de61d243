"""The audit report's forms: JSON is the common envelope and decodes back into the schema'd
Structs, the HTML is self-contained, carries the same figures as the JSON, the verdict, the
score and the provenance, groups a Secret's users, collapses empty namespaces, and escapes
every name."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec

from cloudtaser import plan as planlib
from cloudtaser.contract import INIT_CONTAINER, WRAPPER_PATH
from cloudtaser.plan.canonical import plan_digest
from cloudtaser.plan.model import Approval
from cloudtaser.target.audit.collect import build_report, failures, namespace_report, provenance
from cloudtaser.target.audit.render import to_html, to_text
from cloudtaser.target.audit.result import AuditNamespace, AuditReport, FailOn
from cloudtaser.target.references.scan import Scan, object_uses
from cloudtaser.target.references.uses import SecretUse
from tests.unit.test_plan import VALID

ROOT = Path(__file__).resolve().parents[2]


def to_json(report: AuditReport) -> str:
    """What ``target audit -o json`` prints."""
    return json.dumps(msgspec.to_builtins(report), indent=2) + "\n"


def _env(secret: str | None) -> list[dict[str, Any]]:
    if secret is None:
        return []
    return [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": var.lower()}}}
        for var in ("DB_USER", "DB_PASS")
    ]


def _owned(kind: str, name: str) -> dict[str, Any]:
    return {"ownerReferences": [{"kind": kind, "name": name, "uid": name, "controller": True}]}


def _deployment(name: str, *, protected: bool, env_secret: str | None) -> dict[str, Any]:
    labels = {"cloudtaser.io/inject": "true"} if protected else {}
    return {
        "metadata": {"name": name, "uid": name},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "env": _env(env_secret)}]},
            }
        },
    }


def _pod(name: str, owner: str | None, *, injected: bool, env_secret: str | None = None) -> Any:
    meta: dict[str, Any] = {"name": name, **(_owned("ReplicaSet", owner) if owner else {})}
    if owner is not None:
        meta["labels"] = {"cloudtaser.io/inject": "true"}
    container: dict[str, Any] = {"name": "app", "env": _env(env_secret)}
    status: dict[str, Any] = {"phase": "Running"}
    spec: dict[str, Any] = {"containers": [container]}
    if injected:
        container["command"] = [WRAPPER_PATH, "/app"]
        spec["initContainers"] = [{"name": INIT_CONTAINER}]
        status["initContainerStatuses"] = [
            {"name": INIT_CONTAINER, "state": {"terminated": {"exitCode": 0}}}
        ]
        status["conditions"] = [{"type": "Ready", "status": "True"}]
    else:
        container["command"] = ["/app"]
    return {"metadata": meta, "spec": spec, "status": status}


def sample_namespace() -> AuditNamespace:
    """shop: Deployments legacy (not opted in, env), half (opted in, pod not injected, env)
    and done (opted in, pod injected, no env); CronJob nightly (env, its Job not a workload
    of its own); a finished Job (not a workload); bare Pod debug (env)."""
    cron_pod = {
        "metadata": {},
        "spec": {"containers": [{"name": "job", "env": _env("db")}]},
    }
    objects: dict[str, list[Any]] = {
        "Deployment": [
            _deployment("legacy", protected=False, env_secret="db"),
            _deployment("half", protected=True, env_secret="db"),
            _deployment("done", protected=True, env_secret=None),
        ],
        "ReplicaSet": [
            {"metadata": {"name": "half-rs", "uid": "half-rs", **_owned("Deployment", "half")}},
            {"metadata": {"name": "done-rs", "uid": "done-rs", **_owned("Deployment", "done")}},
        ],
        "CronJob": [
            {
                "metadata": {"name": "nightly", "uid": "nightly"},
                "spec": {"jobTemplate": {"spec": {"template": cron_pod}}},
            }
        ],
        "Job": [
            {
                "metadata": {
                    "name": "nightly-1",
                    "uid": "nightly-1",
                    **_owned("CronJob", "nightly"),
                },
                "spec": {"template": cron_pod},
            },
            {  # finished: reads nothing any more, not a workload
                "metadata": {"name": "migrate"},
                "spec": {"template": cron_pod},
                "status": {"conditions": [{"type": "Complete", "status": "True"}]},
            },
        ],
        "Pod": [
            _pod("half-1", "half-rs", injected=False),
            _pod("done-1", "done-rs", injected=True),
            _pod("debug", None, injected=False, env_secret="db"),
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
    return namespace_report("shop", found, secrets, [])


def sample() -> AuditReport:
    empty = namespace_report("quiet", Scan(namespace="quiet"), [], [])
    return build_report([sample_namespace(), empty], cluster="https://127.0.0.1:6443")


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
        "readingSecretsOnlyAsFiles",
        "podsNotInjected",
        "protected",
        "finalized",
        "secrets",
        "secretsUnused",
        "workloads",
    )
    out = {
        (ns["name"], k): ns["summary"][k]
        for ns in data["namespaces"]
        if ns["status"] != "empty"  # collapsed into one line, without figures
        for k in keys
    }
    out.update({("*", k): data["summary"][k] for k in keys})
    return out


def test_the_summary_figures_are_right() -> None:
    shop = sample().namespaces[0].summary
    # legacy, half, done, the CronJob nightly and the bare Pod debug (not the CronJob's Job)
    assert (shop.workloads, shop.reading_secrets_as_env) == (5, 4)
    # half opts in but its pod is not injected: not protected; done is
    assert (shop.opted_in, shop.protected, shop.finalized) == (2, 1, 1)
    assert (shop.secrets, shop.secrets_in_use, shop.secrets_unused) == (3, 2, 1)
    # pods that need the vault: half-1 and done-1 (opt in), debug (env); done-1 injected
    assert (shop.pods, shop.pods_injected, shop.pods_not_injected) == (3, 1, 1)


def test_cronjobs_jobs_and_bare_pods_are_workloads() -> None:
    workloads = {(w.kind, w.name): w for w in sample_namespace().workloads}
    assert set(workloads) == {
        ("Deployment", "legacy"),
        ("Deployment", "half"),
        ("Deployment", "done"),
        ("CronJob", "nightly"),
        ("Pod", "debug"),
    }
    assert {r.via for r in workloads["CronJob", "nightly"].secret_reads} == {"env"}
    assert workloads["Pod", "debug"].secret_reads != []
    assert workloads["Deployment", "done"].protected is True
    half = workloads["Deployment", "half"]
    assert (half.pods, half.pods_injected, half.protected) == (1, 0, False)


def test_verdict_score_and_next_actions() -> None:
    report = sample()
    assert report.verdict == "fail"
    assert "4 workload(s) still read Secrets as env" in report.verdict_reason
    # done finalized of done + the four still reading as env; one pod of three injected
    assert (report.score.secret_consumption_moved, report.score.pods_injected) == (20, 33)
    shop, quiet = report.namespaces
    assert (shop.status, quiet.status) == ("action", "empty")
    actions = "\n".join(shop.next_actions)
    assert "protect CronJob nightly, Deployment legacy, Pod debug" in actions
    assert "pods half-1 opt in but are not proven injected" in actions
    assert "review the Secrets nothing references: old" in actions
    assert quiet.next_actions == []


def test_an_opted_in_cronjob_between_runs_is_protected_from_its_template() -> None:
    cron = {
        "metadata": {"name": "nightly"},
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "metadata": {"labels": {"cloudtaser.io/inject": "true"}},
                        "spec": {"containers": [{"name": "job", "env": _env("db")}]},
                    }
                }
            }
        },
    }
    found = Scan(
        namespace="batch",
        uses=object_uses("CronJob", cron),
        objects={"CronJob": [cron]},
    )
    part = namespace_report("batch", found, [{"metadata": {"name": "db"}, "type": "Opaque"}], [])
    (job,) = part.workloads
    # issue 30: a CronJob between runs is protected from its job template (protect proved
    # it with a dry-run pod; its next run's pods are counted when they run)
    assert (job.opted_in, job.pods, job.protected, job.finalized) == (True, 0, True, False)
    assert part.status == "action"
    assert part.next_actions == [
        "finalize CronJob nightly (injected, Secret references left): cloudtaser target "
        "finalize --plan PLAN"
    ]


def test_an_unreadable_namespace_is_never_clean() -> None:
    part = namespace_report("locked", Scan(namespace="locked"), [], ["pods: forbidden"])
    assert part.status == "unreadable"
    report = build_report([part], cluster="https://k")
    assert report.verdict == "incomplete"
    assert report.summary.unreadable_namespaces == 1
    assert "could not list pods" in part.next_actions[0]


def test_json_is_the_common_envelope_and_decodes_into_the_schema_structs() -> None:
    text = to_json(sample())
    data = json.loads(text)
    # issue 34: the envelope of every other command (was formatVersion 1 and "totals")
    assert (data["formatVersion"], data["kind"]) == ("1", "audit")
    assert next(iter(data)) == "formatVersion"
    assert list(data)[-1] == "summary"
    assert "totals" not in data
    again = msgspec.json.decode(text.encode(), type=AuditReport)
    assert msgspec.to_builtins(again) == data
    bad = json.dumps({**data, "surprise": 1})
    try:
        msgspec.json.decode(bad.encode(), type=AuditReport)
    except msgspec.ValidationError:
        pass
    else:
        raise AssertionError("an unknown field must be refused")


def test_the_fail_on_conditions() -> None:
    report = sample()
    assert failures(report, []) == []
    assert failures(report, [FailOn.SECRETS_READ]) == [
        "--fail-on secrets-read: 4 workload(s) still read Kubernetes Secrets as env or files"
    ]
    assert len(failures(report, [FailOn.ANY])) == 3  # secrets-read, unprotected, unused
    assert failures(report, [FailOn.INCOMPLETE]) == []
    clean = build_report([namespace_report("q", Scan(namespace="q"), [], [])], cluster="k")
    assert clean.verdict == "pass"
    assert failures(clean, [FailOn.ANY]) == []


def test_html_is_self_contained_and_agrees_with_json() -> None:
    report = sample()
    page = to_html(report)
    parser = _Figures()
    parser.feed(page)
    assert parser.external == []
    assert not re.search(r"url\(|@import|https?://(?!127\.0\.0\.1:6443)", page)
    assert parser.figures == figures_from_json(json.loads(to_json(report)))
    assert parser.figures[("shop", "readingSecretsAsEnv")] == 4


def _plan() -> planlib.MigrationPlan:
    plan = planlib.loads(VALID)
    current = Approval(
        identity="alice@example.com",
        at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        digest=plan_digest(plan),
        signature="(not checked by audit)",
    )
    stale = msgspec.structs.replace(
        current, identity="bob@example.com", digest="sha256:" + "0" * 64
    )
    return msgspec.structs.replace(plan, approvals=[current, stale])


def test_provenance_names_the_plan_its_digest_and_who_approved_it() -> None:
    plan = _plan()
    found = provenance(plan, None)
    assert (found.plan, found.digest) == (plan.metadata.name, plan_digest(plan))
    assert [(a.identity, a.at, a.current) for a in found.approvals] == [
        ("alice@example.com", "2026-12-01T09:00:00Z", True),
        ("bob@example.com", "2026-12-01T09:00:00Z", False),
    ]
    assert found.verification is None


def test_html_is_a_report_to_sign_off() -> None:
    plan = _plan()
    report = sample()
    report.provenance = provenance(plan, None)
    report.cluster_id = "0f6a-uid"
    page = to_html(report)
    assert 'data-verdict="fail"><b>FAIL</b>' in page
    assert "<b>20%</b>of Secret consumption moved" in page
    assert "<b>33%</b>of pods proven injected (1 of 3)" in page
    assert "0f6a-uid" in page
    assert f'<td id="plan-digest">{plan_digest(plan)}</td>' in page
    assert "alice@example.com" in page
    assert "reviewed by" in page
    # grouped: one line per user, its variables listed once
    assert page.count('data-user="Deployment legacy"') == 1
    assert "Deployment legacy: env: DB_PASS &lt;- key db_pass, DB_USER &lt;- key db_user" in page
    # the empty namespace is one collapsed line, not a section of empty tables
    assert '<section data-namespace="quiet">' not in page
    assert '<details id="empty-namespaces"><summary>1 empty namespace(s)' in page
    assert "<li>protect CronJob nightly, Deployment legacy, Pod debug" in page


def test_html_escapes_every_name() -> None:
    page = to_html(sample())
    assert "tls-<x>" not in page
    assert "tls-&lt;x&gt;" in page


def test_text_names_the_users_of_each_secret_once_with_the_verdict() -> None:
    text = to_text(sample())
    assert text.startswith("verdict: FAIL: ")
    grouped = "CronJob nightly (env: DB_PASS <- key db_pass, DB_USER <- key db_user)"
    assert f"Secret db: {grouped}" in text
    assert text.count("Deployment legacy (env") == 1
    assert "Secret old: unused" in text
    assert "pod half-1 not injected" in text
    assert "  next: protect CronJob nightly" in text
    assert "\nquiet " not in text  # the empty namespace is one line, not a row of zeros
    assert "empty (no workload, no Secret): quiet" in text
