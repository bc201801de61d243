"""Prove that every import-linter contract in pyproject.toml can fail.

For each contract, copy the package to a scratch directory, plant ONE import that breaks it
(chosen from the contract itself, so a new contract needs no edit here), run ``lint-imports``
on the copy and require that exactly this contract is reported broken. A contract that stays
"KEPT" with a planted violation checks nothing (a misspelt module name, say), and this fails.

Run by ``nox -s lint`` after ``lint-imports`` itself; standalone::

    python tools/check_import_contracts.py      (needs lint-imports on PATH)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cloudtaser"
#: ``<contract name> BROKEN`` and maybe `` (1 ignored import)`` in lint-imports' summary.
_BROKEN = re.compile(r"^(.*) BROKEN(?: \(.*\))?$")


def _module_file(root: Path, module: str) -> Path:
    """The file a planted import goes into: the module's .py, or the package's __init__.py."""
    rel = Path(*module.split("."))
    if (root / rel).is_dir():
        return root / rel / "__init__.py"
    return root / rel.with_suffix(".py")


def _split_layer(layer: str) -> list[str]:
    """``"a | b"`` and ``"a : b"`` name sibling modules of one layer."""
    for sep in ("|", ":"):
        if sep in layer:
            return [part.strip() for part in layer.split(sep)]
    return [layer.strip()]


def _first_module(root: Path, name: str) -> str:
    """A concrete module for a contract entry (wildcards ``a.*`` take the first match)."""
    if not name.endswith(".*"):
        return name
    base = name[:-2]
    for path in sorted(_module_file(root, base).parent.glob("*.py")):
        if path.name != "__init__.py":
            return f"{base}.{path.stem}"
    raise SystemExit(f"{name}: no module matches")


def plant(contract: dict[str, Any], root: Path) -> tuple[str, str]:
    """The (importer, imported) pair that must break ``contract``."""
    kind = contract["type"]
    if kind == "forbidden":
        importer = _first_module(root, contract["source_modules"][0])
        return importer, contract["forbidden_modules"][0]
    if kind == "independence":
        first, second = contract["modules"][:2]
        return _first_module(root, first), _first_module(root, second)
    if kind == "layers":
        containers = contract.get("containers") or [""]
        prefix = f"{containers[0]}." if containers[0] else ""
        top = _split_layer(contract["layers"][0])[0]
        bottom = _split_layer(contract["layers"][-1])[0]
        return _first_module(root, prefix + bottom), _first_module(root, prefix + top)
    raise SystemExit(f"contract {contract['name']!r}: no plant for type {kind!r}")


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = config["contracts"]
    lint_imports = shutil.which("lint-imports")
    if lint_imports is None:
        print("lint-imports not found: run through `nox -s lint`", file=sys.stderr)
        return 2
    failures: list[str] = []
    for contract in contracts:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            shutil.copytree(ROOT / PACKAGE, scratch / PACKAGE)
            shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
            importer, imported = plant(contract, scratch)
            target = _module_file(scratch, importer)
            target.write_text(target.read_text() + f"\nimport {imported}  # planted\n")
            run = subprocess.run(
                [lint_imports, str(scratch / "pyproject.toml"), "--no-cache"],
                cwd=scratch,
                env={"PYTHONPATH": str(scratch), "PATH": "/usr/bin:/bin", "COLUMNS": "500"},
                capture_output=True,
                text=True,
                check=False,
            )
            broken = [m.group(1) for m in map(_BROKEN.match, run.stdout.splitlines()) if m]
            verdict = "fails as it should" if contract["name"] in broken else "DID NOT FAIL"
            print(f"{contract['name']}: `{importer}` imports `{imported}` -> {verdict}")
            if contract["name"] not in broken:
                failures.append(contract["name"])
                print(run.stdout[-2000:], run.stderr[-2000:], sep="\n", file=sys.stderr)
    if failures:
        print(f"{len(failures)} contract(s) cannot fail: {failures}", file=sys.stderr)
        return 1
    print(f"all {len(contracts)} contracts fail on a planted violation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
