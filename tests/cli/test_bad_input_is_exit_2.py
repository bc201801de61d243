"""Issue 18, findings 9 and 10: bad kubeconfigs and connection files are exit 2 with one
message (never "a bug in cloudtaser"), and credentials exposed to other users are warned about.
"""

from __future__ import annotations

import contextlib
import io
import stat
from pathlib import Path

import pytest

from cloudtaser.cli import main

CANARY = "CANARY-exec-token-0123456789abcdef"


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _kubeconfig(tmp_path: Path, user: str, server: str = "https://127.0.0.1:9") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        f"users:\n- name: u\n  user:\n{user}"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    return path


def _plugin(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "plugin.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def _exec_user(command: Path, version: str = "client.authentication.k8s.io/v1") -> str:
    return f"    exec:\n      apiVersion: {version}\n      command: {command}\n"


def _discover(kubeconfig: Path, tmp_path: Path) -> tuple[int, str, str]:
    return _cli(
        "target",
        "discover",
        "--kubeconfig",
        str(kubeconfig),
        "--output-plan",
        str(tmp_path / "p.yaml"),
    )


V9 = "client.authentication.k8s.io/v9"


@pytest.mark.parametrize(
    ("make_user", "server", "expected"),
    [
        (lambda t: _exec_user(_plugin(t, "echo broken >&2; exit 3\n")), None, "(exit 3): broken"),
        (lambda t: _exec_user(_plugin(t, "echo not json\n")), None, "did not print an Exec"),
        (lambda t: _exec_user(_plugin(t, "echo '{\"status\": {}}'\n")), None, "no status.token"),
        (lambda t: _exec_user(t / "missing-plugin"), None, "not found"),
        (lambda t: _exec_user(_plugin(t, "true\n"), V9), None, "not supported"),
        (lambda t: f"    tokenFile: {t / 'no-such-token'}\n", None, "cannot read tokenFile"),
        (lambda t: "    token: abc\n", "https://[::1", "no valid http(s) server URL"),
        (lambda t: "    token: abc\n", "https://h:99999", "no valid http(s) server URL"),
    ],
)  # fmt: skip
def test_bad_kubeconfig_is_exit_2_with_one_message(
    tmp_path: Path, make_user, server: str | None, expected: str
) -> None:  # type: ignore[no-untyped-def]
    kubeconfig = _kubeconfig(tmp_path, make_user(tmp_path), server or "https://127.0.0.1:9")
    code, _out, err = _discover(kubeconfig, tmp_path)
    assert code == 2, err
    assert expected in err
    assert "bug in cloudtaser" not in err
    assert err.count("cloudtaser: error:") == 1


def test_exec_plugin_stderr_is_scrubbed(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path, f"echo 'oops Authorization: Bearer {CANARY}' >&2; exit 1\n")
    code, out, err = _discover(_kubeconfig(tmp_path, _exec_user(plugin)), tmp_path)
    assert code == 2
    assert CANARY not in out + err


CONN_HEAD = (
    "apiVersion: cloudtaser.io/v1\nkind: ClusterConnection\nauthMount: k8s\n"
    "kubernetesHost: https://10.0.0.1:6443\nkubernetesCaCert: x\n"
    "metadata: {cluster: c, clusterId: abc}\nreviewer: {mode: client-jwt}\n"
)


@pytest.mark.parametrize(
    "text",
    [
        CONN_HEAD + "issuer: 5\n",
        CONN_HEAD + "5: x\n",
        CONN_HEAD.replace("metadata: {", "metadata: {7: x, "),
        "a: " + "[" * 200_000 + "]" * 200_000 + "\n",
    ],
    ids=["int-issuer", "int-key", "int-metadata-key", "deep-nesting"],
)
def test_bad_connection_file_is_exit_2(tmp_path: Path, text: str) -> None:
    conn = tmp_path / "conn.yaml"
    conn.write_text(text)
    code, _out, err = _cli(
        "source", "connect", "--import", str(conn), "--openbao-addr", "http://127.0.0.1:9",
        "--token-file", str(_token_file(tmp_path)),
    )  # fmt: skip
    assert code == 2, err
    assert "bug in cloudtaser" not in err


def _token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text("s.tokentokentokentokentoken\n")
    path.chmod(mode)
    return path


# --- finding 10: tokens visible to other users ---------------------------------------------


def _verify(tmp_path: Path, *auth: str) -> str:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "apiVersion: cloudtaser.io/v1\nkind: MigrationPlan\nmetadata: {name: p}\ntenants: []\n"
    )
    _code, _out, err = _cli(
        "source", "verify-plan", str(plan), "--openbao-addr", "http://127.0.0.1:9", *auth
    )
    return err


def test_token_flag_warns_that_ps_shows_it(tmp_path: Path) -> None:
    err = _verify(tmp_path, "--token", "s.tokentokentokentokentoken")
    assert "every user of this machine" in err
    assert "--token-file" in err
    assert "s.tokentokentokentokentoken" not in err


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, True), (0o644, True)])
def test_token_file_readable_by_others_is_warned_about(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    err = _verify(tmp_path, "--token-file", str(_token_file(tmp_path, mode)))
    assert ("accessible by its group or by other users" in err) is warned
    assert "tokentoken" not in err


def test_connection_file_with_token_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    conn = tmp_path / "conn.yaml"
    conn.write_text(
        CONN_HEAD.replace(
            "reviewer: {mode: client-jwt}", "reviewer: {mode: token, token: eyJa.eyJb.c}"
        )
    )
    conn.chmod(0o644)
    _code, _out, err = _cli(
        "source", "connect", "--import", str(conn), "--openbao-addr", "http://127.0.0.1:9",
        "--token-file", str(_token_file(tmp_path)),
    )  # fmt: skip
    assert "the connection file (it holds a reviewer token)" in err
    assert stat.S_IMODE(conn.stat().st_mode) == 0o644  # never changed behind the user's back
