"""Developer tools run as modules: ``python -m tools.demo`` (``nox -s demo``) and
``python tools/gen_cli_docs.py > docs/cli.md``."""
