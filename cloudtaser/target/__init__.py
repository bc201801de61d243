"""The cluster side: only a Kubernetes API server, never a vault.

Nothing here imports :mod:`cloudtaser.source` or ``requests`` (import-linter contract in
``pyproject.toml``).
"""
