"""The Helm chart ``charts/cloudtaser-runtime`` seen from install's side, without helm: its
values are the keys ``target install --print-helm-values`` writes (and its schema names), the
Argo CD rule ``--print-argocd-ignore`` prints (and NOTES.txt repeats), its version. What the chart
renders is checked with the real ``helm`` in tests/integration/test_helm_chart.py (``helm`` is
built with the test bed, which the ``tests`` session does not build)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import yaml

from cloudtaser import __version__
from cloudtaser.cli import main
from cloudtaser.target.install import chart
from cloudtaser.target.install.manifests import NAME, InstallOptions

REPO = Path(__file__).resolve().parents[2]


CHART = REPO / "charts" / chart.CHART_NAME


def _cli(argv: list[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, out.getvalue() + err.getvalue()
    return out.getvalue()


def test_the_chart_values_are_the_keys_print_helm_values_writes() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    opts = InstallOptions(image="r/i:1", allowed_vault_addresses=("https://v:8200",),
                          audience="a").validated()  # fmt: skip
    written = chart.helm_values(opts)
    assert set(defaults) == set(written) | {"createNamespace"}
    assert set(schema["properties"]) == set(defaults)
    assert set(defaults["defaults"]) == set(written["defaults"])


def test_print_argocd_ignore_names_only_the_cabundle_of_the_injectors_configuration() -> None:
    (rule,) = yaml.safe_load(_cli(["target", "install", "--print-argocd-ignore"]))[
        "ignoreDifferences"
    ]
    assert rule == {
        "group": "admissionregistration.k8s.io",
        "kind": "MutatingWebhookConfiguration",
        "name": NAME,
        "jsonPointers": ["/webhooks/0/clientConfig/caBundle"],
    }
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert chart.CA_BUNDLE_POINTER in notes
    assert "RespectIgnoreDifferences=true" in notes


def test_the_chart_is_released_with_the_runtime_version() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["name"] == chart.CHART_NAME
    assert meta["appVersion"] == meta["version"] == __version__
