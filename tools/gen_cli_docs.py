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
- Results go to stdout (human text, or JSON with `-o/--output json`); progress and diagnostics go
  to stderr. Colours only on a terminal, never with `NO_COLOR`; tables align by visible width.
- `-o/--output text|json` is the result format on every command that reports. `target
  discover` also takes CloudTaser's documented `-o plan.yaml`, by one rule on the value alone:
  `text`/`json` are the format, a name ending in `.yaml`/`.yml` or `-` is the plan file (same
  as `--output-plan FILE`), anything else is an error. Options are never abbreviated (`--out`
  is an error with a "did you mean"), and an unknown option shows the usage of the command it
  was given to.
- Every JSON result carries `formatVersion` (now `"1"`), `kind` and a `summary` object; their JSON
  Schemas are in `schema/output-<kind>.schema.json`. A new `formatVersion` means a field changed
  meaning or was removed; added fields keep the version.
- Long runs (protect, unprotect, apply-plan, verify-plan, discover): on a terminal one live
  status line (`[n/N]`, elapsed, ETA, the tally so far), then the result: one line per
  workload, its reason said once (other warnings counted there; `-v` prints each, `-o json`
  holds them all); piped, quiet line-oriented output, one line per finished workload (`-v` for
  every step); always a closing tally such as `287 migrated, 2 failed, 1 refused`.
- Configuration precedence: flag, then environment, then default. Vault (`VAULT_*` first, like
  the vault CLI; `BAO_*` as the fallback): `VAULT_ADDR`/`BAO_ADDR`,
  `VAULT_TOKEN`/`BAO_TOKEN`, then `~/.vault-token` (written by `bao login` / `vault login`, read
  last as the vault CLI does), `VAULT_NAMESPACE`/`BAO_NAMESPACE` (flag: `--vault-namespace`;
  `--namespace` on `source` commands is refused with a hint, it is not a vault namespace),
  `VAULT_CACERT`/`BAO_CACERT`,
  `VAULT_SKIP_VERIFY`/`BAO_SKIP_VERIFY` (booleans: `1|true|yes|on`, `0|false|no|off`, anything
  else is an error). Cluster: `KUBECONFIG`.
- `--dry-run` (on protect, unprotect, finalize, apply-plan, connect, install, uninstall) reads
  the live objects and writes nothing (a server-side dry run, `dryRun=All`, where the command
  would write to the cluster). kubectl's `--dry-run=server` and `--dry-run=client` are accepted
  and mean the same run: a client-only dry run could not show the exact change.
- Exit codes: every command's help ends with its own `exit codes:` line, drawn from the table
  below; one kind of failure has one code on every command (an unreachable or unauthenticated
  API server or vault is 3, a refused approval or verification gate is 5).
- Errors: one line on stderr, `cloudtaser: error: ...`, and a non-zero exit code. Expected errors
  (bad plan, unreachable vault, refused token) never print a traceback, not even with `-v`; an
  unexpected one (a bug, exit 70) shows its traceback with `-v`.
- Shell completion: `eval "$(cloudtaser completion bash)"` (also `zsh`, `fish`): commands, flags,
  plan files, `--context` from every `KUBECONFIG` file, `--tenant`/`--workload` from the plan on
  the line. Nothing goes over the network.
- kubectl plugin: the package installs `kubectl-cloudtaser` too, so `kubectl cloudtaser target
  discover ...` runs the same CLI, and `kubectl_complete-cloudtaser`, which kubectl 1.26+ asks for
  `kubectl cloudtaser <Tab>` completions.
- Every command's help ends with runnable examples; tests/cli/test_cli_examples.py parses each
  one (and each `cloudtaser` line in docs/*.md) against this parser.

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
    ExitCode.REFUSED: "refused by a gate before anything changed: approvals or verification "
    "report missing, too few, stale or invalid (docs/approval.md)",
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
