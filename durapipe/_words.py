"""Counts in sentences: "1 step", "2 steps", never "1 steps" (the CLI's, the Temporal UI's
details, the protocol's progress)."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural unless the count is one.

    Example:
        >>> counted(1, "step"), counted(3, "step"), counted(2, "history", "histories")
        ('1 step', '3 steps', '2 histories')
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
