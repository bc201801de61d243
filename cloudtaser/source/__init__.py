"""The vault side: only an OpenBao / Vault server, never a cluster.

Nothing here imports :mod:`cloudtaser.target` or lightkube (import-linter contract in
``pyproject.toml``).
"""
