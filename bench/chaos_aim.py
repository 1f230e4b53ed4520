"""The aim of `bench/chaos.py`'s first kills: the provider's ledger read as it grows, a process
frozen for a look at its sockets, and whether Temporal has recorded a step yet."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from temporalio.client import Client

from durapipe.testing import Call

# The events that end an activity attempt for good (a retried attempt closes on its last one).
CLOSING_EVENTS = (
    "activity_task_completed_event_attributes",
    "activity_task_failed_event_attributes",
    "activity_task_timed_out_event_attributes",
    "activity_task_canceled_event_attributes",
)


class LedgerTail:
    """The calls appended to the provider's ledger since the last look (a whole re-read of a
    ledger of hundreds of calls every 2 ms made the aim late)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new(self) -> list[Call]:
        """Calls whose lines were completed since the last call (a partial last line waits)."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as ledger:
            ledger.seek(self.offset)
            chunk = ledger.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        calls = []
        for line in complete.splitlines():
            with contextlib.suppress(ValueError, KeyError):
                calls.append(Call.from_dict(json.loads(line)))
        return calls


def stopped(pid: int, timeout: float = 0.05) -> None:
    """Wait (at most ``timeout`` s) until ``pid``'s main thread, which runs its event loop and so
    every socket read, shows as stopped (a SIGSTOP is delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("T", "t", "Z", "X"):
            return
        time.sleep(0.0001)


async def step_open(client: Client, run_id: str, step: str) -> bool:
    """Whether Temporal has not yet recorded how the last attempt of ``step`` of run ``run_id``
    ended (its last scheduled activity has no closing event): a kill now lands in the window."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    open_ids: set[int] = set()
    last: int | None = None
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            payloads = event.activity_task_scheduled_event_attributes.input.payloads
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                if json.loads(payloads[0].data)["pipe_name"] == step:
                    last = event.event_id
                    open_ids.add(event.event_id)
        name = event.WhichOneof("attributes")
        if name in CLOSING_EVENTS:
            open_ids.discard(getattr(event, name).scheduled_event_id)
    return last is not None and last in open_ids
