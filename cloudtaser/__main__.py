# PYTHON_ARGCOMPLETE_OK
"""``python -m cloudtaser`` behaves exactly like the ``cloudtaser`` console script."""

from __future__ import annotations

from cloudtaser.cli import console_main

if __name__ == "__main__":
    console_main()
