"""Tool functions the workers of the serve tests register (the client's methods name them)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from durapipe import ToolError

# The folder of the gate: the worker (a child process) writes `entered` there when a run reaches
# the gate, and the test creates `open` to let it through.
GATE_ENV = "DURAPIPE_TEST_GATE"


def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


def refuse(text: str) -> str:
    """Always fail, at once: a `ToolError` is the function's own verdict, not retried."""
    raise ToolError(f"refused on purpose: {text[:20]}")


async def gate(text: str) -> str:
    """Wait until the test opens this run's gate, then pass the text on: a run mid-way on purpose.

    Each text has its own gate (``entered-KEY`` / ``open-KEY``, KEY a hash of the text), so tests
    sharing a worker do not open each other's.
    """
    folder = Path(os.environ[GATE_ENV])
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    (folder / f"entered-{key}").touch()
    # Another process opens the gate, so a file is the signal (an asyncio.Event cannot cross).
    while not (folder / f"open-{key}").exists():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return f"passed: {text}"


def mended(text: str) -> str:
    """Fail (a `ToolError`, not retried) until the test writes ``mend-KEY`` in the gate folder:
    a run that fails, then succeeds when `durapipe retry` runs it again."""
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    if not (Path(os.environ[GATE_ENV]) / f"mend-{key}").exists():
        raise ToolError(f"not mended yet: {text[:20]}")
    return f"mended: {text}"
