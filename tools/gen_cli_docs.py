"""Generate docs/cli.md from the argparse parser (tests/cli/test_cli_docs.py keeps it in sync).

Usage: python tools/gen_cli_docs.py > docs/cli.md
"""

from __future__ import annotations

import argparse
import os

from cloudtaser.cli import build_parser
from cloudtaser.cli.exitcodes import ExitCode

HEADER = """\
# cloudtaser CLI reference

Generated from the argument parser by `python tools/gen_cli_docs.py > docs/cli.md`; a test fails
when this file and the parser disagree. For the workflow around these commands see
[workflow.md](workflow.md); for the plan file, [plan-format.md](plan-format.md).

## Conventions

- `target ...` commands talk only to a Kubernetes cluster; `source ...` commands talk only to the
  vault; `plan ...` commands need no system access.
- Results go to stdout (human text, or JSON with `--output json`); progress and diagnostics go to
  stderr. Colours only on a terminal, never with `NO_COLOR`.
- Configuration precedence: flag, then environment, then default. Vault (`VAULT_*` first, like
  the vault CLI and the runtime wrapper; `BAO_*` as the fallback): `VAULT_ADDR`/`BAO_ADDR`,
  `VAULT_TOKEN`/`BAO_TOKEN`, `VAULT_NAMESPACE`/`BAO_NAMESPACE`, `VAULT_CACERT`/`BAO_CACERT`,
  `VAULT_SKIP_VERIFY`/`BAO_SKIP_VERIFY` (booleans: `1|true|yes|on`, `0|false|no|off`, anything
  else is an error). Cluster: `KUBECONFIG`.
- Errors: one line on stderr, `cloudtaser: error: ...`, and a non-zero exit code; a traceback only
  with `-v`.
- Shell completion: `eval "$(register-python-argcomplete cloudtaser)"` (argcomplete).

## Exit codes

| code | name | meaning |
|---|---|---|
"""

MEANING = {
    ExitCode.OK: "success",
    ExitCode.PROBLEMS: "the command ran and found problems (e.g. secrets missing, drift)",
    ExitCode.USAGE: "invalid input or usage: bad flags, unreadable or invalid plan, bad config",
    ExitCode.REMOTE: "cannot reach or authenticate to a remote system (cluster or vault)",
    ExitCode.FAILED: "an operation was attempted and failed (server error, rollout, lock held)",
    ExitCode.INTERNAL: "a bug in cloudtaser (an unexpected exception)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C) after finishing the current write",
}


def _walk(
    parser: argparse.ArgumentParser, path: list[str]
) -> list[tuple[list[str], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _walk(sub, [*path, name])
    return out


def render() -> str:
    os.environ["COLUMNS"] = "100"
    parts = [HEADER]
    parts += [f"| {int(code)} | `{code.name}` | {MEANING[code]} |\n" for code in ExitCode]
    parts.append("\n## Commands\n")
    for path, parser in _walk(build_parser(), ["cloudtaser"]):
        parser.prog = " ".join(path)
        title = " ".join(path)
        parts.append(f"\n### `{title}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
