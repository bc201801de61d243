"""Examples that run: every command's --help has an Examples block, and every example in
--help and in docs/*.md parses against the real parser (flags exist, required ones present,
the command's ``precheck`` passes), so docs cannot drift from the CLI again.

A failure names the file (or the command's --help) and line, the example, and argparse's own
complaint. To fix: correct the example, or the parser if the example shows the intended use.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudtaser.cli import build_parser

ROOT = Path(__file__).parents[2]
_TOP = {a.dest: a for a in build_parser()._actions}["command"].choices  # type: ignore[attr-defined]
_PROMPT = re.compile(
    r"^(?:\$\s+|\d+\.\s+)?(?P<cmd>(?:kubectl\s+)?cloudtaser\s+(?P<top>[a-z-]+)\b.*)$"
)
_INLINE = re.compile(r"`(?P<cmd>(?:kubectl )?cloudtaser [^`]*)`")
_STOP = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&", "(", ")", "2>&1"}


@dataclass(frozen=True)
class Example:
    where: str
    text: str


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = []
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    for action in subs:
        for name, sub in action.choices.items():
            out += _commands(sub, (*path, name))
    return out


def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for raw_number, raw in lines:
        number, line = raw_number, raw
        if pending is not None:
            number, line = pending[0], pending[1] + " " + raw.strip()
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1].rstrip())
            continue
        out.append((number, line))
    if pending is not None:
        out.append(pending)
    return out


def _extract(text: str, where: str, *, columns: bool) -> list[Example]:
    """Command lines in ``text``. ``columns``: help text, where two or more blanks start a
    comment column (the workflow list)."""
    found = []
    for number, line in _join_continuations(list(enumerate(text.splitlines(), 1))):
        match = _PROMPT.match(line.strip())
        if not match or match["top"] not in _TOP:  # prose such as "cloudtaser did not ..."
            continue
        cmd = match["cmd"]
        if columns:
            cmd = re.split(r"\s{2,}", cmd)[0]
        found.append(Example(f"{where}:{number}", cmd.strip()))
    return found


def _help_examples() -> list[Example]:
    out = []
    for path, parser in _commands(build_parser()):
        out += _extract(parser.format_help(), f"`cloudtaser {' '.join(path)} --help`", columns=True)
    out += _extract(build_parser().format_help(), "`cloudtaser --help`", columns=True)
    return out


def _doc_examples() -> list[Example]:
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if doc.name == "cli.md":  # generated from the --help texts checked above
            continue
        fenced: list[tuple[int, str]] = []
        inside = False
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                inside = not inside
                continue
            if inside:
                fenced.append((number, line))
        for number, line in _join_continuations(fenced):
            match = _PROMPT.match(line.strip())
            if match and match["top"] in _TOP:
                out.append(Example(f"{doc.relative_to(ROOT)}:{number}", match["cmd"].strip()))
        # inline code that shows a use (has an option), e.g. `cloudtaser target unprotect
        # --plan plan.yaml ...`; a bare command name (`cloudtaser plan validate`) is a name
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for span in _INLINE.finditer(line):
                cmd = span["cmd"].replace("\\|", "|")
                top = cmd.split()[2 if cmd.startswith("kubectl") else 1]
                if " -" in cmd and top in _TOP:
                    out.append(Example(f"{doc.relative_to(ROOT)}:{number}", cmd.strip()))
    return out


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = []
    for token in lexer:
        if token in _STOP or set(token) <= set("|&;<>()"):
            break
        words.append(token)
    if words[:1] == ["kubectl"]:
        words = words[1:]
    assert words[:1] == ["cloudtaser"], text
    return words[1:]


def parse_problem(example: Example) -> str | None:
    """argparse's (or the precheck's) complaint about ``example``, or None when it parses."""
    try:
        argv = _tokens(example.text)
    except ValueError as exc:  # unbalanced quotes
        return f"cannot split: {exc}"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help / --version
            return None
        return err.getvalue().strip().splitlines()[-1]
    precheck = getattr(args, "precheck", None)
    return precheck(args) if precheck is not None else None


HELP_EXAMPLES = _help_examples()
DOC_EXAMPLES = _doc_examples()


def test_examples_were_found() -> None:
    assert len(HELP_EXAMPLES) >= 30
    assert any("docs/workflow.md" in e.where for e in DOC_EXAMPLES)


@pytest.mark.parametrize("path", [p for p, _parser in _commands(build_parser())], ids=" ".join)
def test_every_command_help_has_an_examples_block(path: tuple[str, ...]) -> None:
    parser = dict(_commands(build_parser()))[path]
    text = parser.format_help()
    assert "\nexamples:\n" in text, (
        f"`cloudtaser {' '.join(path)} --help` has no examples block: create the command with "
        "groups.command(..., examples=[...]) (see docs/cli.md, Conventions)"
    )
    assert _extract(text, "help", columns=True), f"{path}: the examples block has no command"


@pytest.mark.parametrize("example", HELP_EXAMPLES + DOC_EXAMPLES, ids=lambda e: e.where)
def test_example_parses_against_the_real_parser(example: Example) -> None:
    problem = parse_problem(example)
    assert problem is None, (
        f"{example.where}: this example does not run:\n    {example.text}\n"
        f"the parser says: {problem}"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            "cloudtaser target protect --plan plan.yaml --yes --vault-namespace sys",
            "--vault-namespace",
        ),
        ("cloudtaser target discover --output json", "--output-plan"),
        ("cloudtaser target protect --plan p.yaml --vault-address https://v", "--yes"),
        ("cloudtaser source verify-plan plan.yaml --namespace team-00", "--vault-namespace"),
        ("cloudtaser plan status plan.yaml --out json", "did you mean --output"),
    ],
)
def test_broken_examples_are_caught(text: str, why: str) -> None:
    """The checker itself can fail: the examples of issue 17 are reported, with the reason."""
    problem = parse_problem(Example("test", text))
    assert problem is not None
    assert why in problem


def test_top_level_workflow_steps_are_complete() -> None:
    """Step 6 of the top-level help used to lack --vault-address; connect was missing."""
    steps = [e.text for e in HELP_EXAMPLES if e.where.startswith("`cloudtaser --help`")]
    assert any(s.startswith("cloudtaser target connect ") for s in steps)
    protect = [s for s in steps if s.startswith("cloudtaser target protect ")]
    assert protect
    assert all("--vault-address" in s for s in protect)
