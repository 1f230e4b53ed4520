"""Tools for the controller tests: cheap, deterministic, and able to fail on demand."""

from __future__ import annotations

import asyncio

IN_FLIGHT: list[int] = [0, 0]  # [running now, most ever running at once]
STARTED: list[int] = []


def square(n: int) -> int:
    """n squared."""
    return n * n


def negate(n: int) -> int:
    """-n."""
    return -n


def fail_on(n: int, bad: int) -> int:
    """n, unless n is ``bad``."""
    STARTED.append(n)
    if n == bad:
        raise ValueError(f"item {n} is bad")
    return n


async def tracked(n: int) -> int:
    """n, after a short wait, counting how many calls run at once."""
    IN_FLIGHT[0] += 1
    IN_FLIGHT[1] = max(IN_FLIGHT)
    await asyncio.sleep(0.01)
    IN_FLIGHT[0] -= 1
    return n


CALLED: list[int] = []


def counted(n: int) -> int:
    """n, recording the call (a memoised pipe's second run must not record it)."""
    CALLED.append(n)
    return n


def count_to(n: int) -> list[int]:
    """1 to n: a list made while the run goes, for a batch that learns its length at its start."""
    return list(range(1, n + 1))


GATE: list[asyncio.Event] = []  # a test's gate: `gated` calls wait for it to be set
GATED: list[int] = []


async def gated(n: int) -> int:
    """n, once the test's gate (``GATE[0]``) opens; each call noted as it starts (``GATED``)."""
    GATED.append(n)
    await GATE[0].wait()
    return n
