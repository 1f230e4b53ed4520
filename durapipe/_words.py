"""Counts and times in sentences: "1 step", "2 steps", never "1 steps" (the CLI's, the Temporal
UI's details, the protocol's progress); a moment with its UTC offset, never a bare clock time."""

from __future__ import annotations

from datetime import UTC, datetime


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural unless the count is one.

    Example:
        >>> counted(1, "step"), counted(3, "step"), counted(2, "history", "histories")
        ('1 step', '3 steps', '2 histories')
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def moment(when: datetime) -> str:
    """``when`` as the CLI prints a point in time: this machine's local time with its UTC offset,
    to the second (ISO 8601, a space for the ``T``), so it reads unambiguously anywhere. A naive
    ``when`` is taken as UTC (what Temporal's times are).

    Example (on a machine whose zone is Europe/Paris):
        >>> moment(datetime(2026, 11, 28, 9, 43, 48, 5301, tzinfo=UTC))
        '2026-11-28 10:43:48+01:00'
    """
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return aware.astimezone().isoformat(sep=" ", timespec="seconds")


def clock(when: datetime) -> str:
    """The time of day of `moment` (with its offset), for a moment within the next minutes.

    Example (on a machine whose zone is Europe/Paris):
        >>> clock(datetime(2026, 11, 28, 14, 2, 11, tzinfo=UTC))
        '15:02:11+01:00'
    """
    return moment(when).partition(" ")[2]
