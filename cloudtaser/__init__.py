"""cloudtaser: move Kubernetes workloads off Kubernetes Secrets onto OpenBao / HashiCorp Vault.

The library never prints and never exits; the CLI (:mod:`cloudtaser.cli`) renders results.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
