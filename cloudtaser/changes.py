"""What a command does (or, with ``--dry-run``, would do) to one remote object: the one
``Action`` enum of apply-plan, connect, install and uninstall. Standard library only."""

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
    #: apply-plan: an object named for this plan that the plan no longer contains (a tenant
    #: dropped from the plan); reported, left alone without ``--prune``.
    ORPHANED = "orphaned"
    #: apply-plan ``--prune``: such an object is (or, with ``--dry-run``, would be) deleted;
    #: uninstall (or install pruning what it no longer wants): removed.
    DELETE = "delete"
    #: uninstall: not removed: someone else's object, or a namespace still in use.
    KEEP = "keep"
