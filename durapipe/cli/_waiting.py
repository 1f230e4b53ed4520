"""Waiting for a run: its result, a stalled run said within seconds, what a waiting step waits for.

Shared by the step lines (`_progress`) and the live view (`_live`), which import it, not each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import durapipe as dp

POLL_INTERVAL_S = 0.25
STALL_CHECK_S = 1.0  # how often a followed run's queues are checked for workers
STALL_GRACE_S = 5.0  # how long a queue may lack a worker before the wait stops


def waiting_line(record: dp.StepRecord, run_id: str) -> str:
    """What a waiting step waits for, and the command that ends the wait."""
    line = f"  ⏸ {record.path} waiting for {record.waiting_for or 'a decision'}"
    if record.kind == "approval":
        return (
            f"{line}; decide with `durapipe approve {run_id} {record.path}` "
            f"or `durapipe reject {run_id} {record.path}`"
        )
    if (record.waiting_for or "").startswith("resume"):
        return f"{line}; continue with `durapipe resume {run_id}`"
    return line


class StallWatch:
    """Says, within seconds, that a run cannot make progress (no worker polls a queue it needs).

    A queue may lack a poller for a moment (a worker starting just after the run); only a stall
    that lasts `STALL_GRACE_S` stops the wait.
    """

    def __init__(self, handle: dp.RunHandle) -> None:
        self.handle = handle
        self._next_check = 0.0
        self._since: float | None = None

    async def check(self) -> None:
        """Raise `durapipe.RunStalled` once the run has been stuck for `STALL_GRACE_S`."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + STALL_CHECK_S
        why = await self.handle.stalled()
        if why is None:
            self._since = None
            return
        self._since = self._since or now
        if now - self._since >= STALL_GRACE_S:
            raise dp.RunStalled(
                f"run '{self.handle.run_id}' cannot make progress: {why}; the run stays queued "
                f"(`durapipe result {self.handle.run_id}` waits for it, "
                f"`durapipe cancel {self.handle.run_id}` stops it)",
                run_id=self.handle.run_id,
            )


async def wait_for(
    handle: dp.RunHandle, tick: Callable[[], Awaitable[None]] | None = None
) -> dp.RunResult:
    """Wait for a run's result, calling ``tick`` between polls; a stalled run raises RunStalled."""
    watch = StallWatch(handle)
    result_task = asyncio.ensure_future(handle.result())
    try:
        while not result_task.done():
            if tick is not None:
                await tick()
            await watch.check()
            await asyncio.wait({result_task}, timeout=POLL_INTERVAL_S)
    finally:
        if not result_task.done():
            result_task.cancel()
    return result_task.result()
