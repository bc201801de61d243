"""What a command does (or, with ``--dry-run``, would do) to one remote object: the one
``Action`` enum of apply-plan and connect. Standard library only."""

from __future__ import annotations

import enum

__all__ = ["Action"]


class Action(enum.StrEnum):
    """What a command does (or, with ``--dry-run``, would do) to one object."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    #: A same-named object exists that cloudtaser did not create; left alone unless forced.
    CONFLICT = "conflict"
