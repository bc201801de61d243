"""``target discover`` argument handling that needs no cluster (checked before connecting)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudtaser.cli import main

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    # port 1 on loopback: any request would fail with exit 3, so exit 2 proves nothing was sent
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "ctx",
}


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    return path


def test_help_teaches_placeholders_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["target", "discover", "--help"]) == 0
    out = capsys.readouterr().out
    for text in (
        "{cluster}",
        "{namespace}",
        "{secret}",
        "{mount}",
        "--isolate",
        "examples:",
        "RBAC",
    ):
        assert text in out


@pytest.mark.parametrize(
    "args",
    [
        ["--path-template", "{mount}/data/{secret}"],
        ["--path-template", "{mount}/data/{namespace}/{secret}/{oops}"],
        ["-n", "Not_A_Namespace"],
        ["--name", "has space"],
        ["--kv-mount", "../sys"],
        ["--isolate", "--cluster-name", "a/b"],
    ],
)
def test_bad_options_exit_2_before_contacting_the_cluster(
    kubeconfig: Path, tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "target",
            "discover",
            "--kubeconfig",
            str(kubeconfig),
            "--output-plan",
            str(tmp_path / "p.yaml"),
            *args,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert not (tmp_path / "p.yaml").exists()


def test_isolate_and_path_template_are_exclusive(kubeconfig: Path, tmp_path: Path) -> None:
    args = [
        "target",
        "discover",
        "--kubeconfig",
        str(kubeconfig),
        "--output-plan",
        "-",
        "--isolate",
    ]
    assert main([*args, "--path-template", "{mount}/data/{namespace}/{secret}"]) == 2


def test_existing_file_that_is_not_a_plan_is_refused_before_scanning(
    kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "notes.yaml"
    target.write_text("important: true\n")
    assert (
        main(["target", "discover", "--kubeconfig", str(kubeconfig), "--output-plan", str(target)])
        == 2
    )
    assert "not a valid plan" in capsys.readouterr().err
    assert target.read_text() == "important: true\n"


def test_output_is_required() -> None:
    assert main(["target", "discover"]) == 2
