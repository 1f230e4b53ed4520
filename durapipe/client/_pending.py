"""What a running step looks like from the server: the attempt it is on, how the last one failed,
when the next starts, and what the call waits for.

A leaf's failed attempts are retried by the Temporal server, so the run's own records know nothing
of them until the step ends: a step retrying a provider that answers 503 showed as plain "running"
for as long as its retry policy allowed, and so did a call waiting for room in a provider limit.
The server lists each running activity (its id is the step's path) with its attempt, last failure
and last heartbeat (whose details say what the call waits for); `with_pending` puts them on the
step's record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import UTC

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client

from durapipe._words import clock
from durapipe.client._stalls import SLOT_WAIT_S, QueueLoad
from durapipe.runtime import StepRecord
from durapipe.stores._limits import WAITING_DETAIL

# A provider's error message can run to kilobytes (a quoted response body): the line keeps this much.
MESSAGE_CHARS = 200
# How `QueueLoad.busy`'s sentences start: a step waiting for a worker of its queue.
QUEUE_WAITS = ("a free worker slot:", "a worker to take it:")


async def with_pending(
    client: Client,
    records: Sequence[StepRecord],
    pending: Sequence[PendingActivityInfo],
    *,
    load: QueueLoad | None = None,
    task_queue: str = "",
) -> list[StepRecord]:
    """``records`` with each running step annotated from its pending activity: past its first
    attempt, ``attempts`` (the attempt it is on), ``error_type`` and ``error`` (how the last attempt
    failed) and, while it waits for the next attempt, ``waiting_for``; while its call waits for
    room in a provider limit, ``waiting_for`` says which; while no worker has taken it for
    `SLOT_WAIT_S` though workers poll its queue, ``waiting_for`` says what ``load`` (if given)
    tells of them (a free slot). ``task_queue``: the workflow's, for an activity whose own the
    server does not show."""
    updates: dict[str, dict[str, object]] = {}
    now = time.time()
    for info in pending:
        if info.attempt > 1 and info.last_failure.message:
            updates[info.activity_id] = retry_update(info)
        if info.heartbeat_details.payloads:
            waiting = await _waiting_for(client, info)
            if waiting is not None:
                updates.setdefault(info.activity_id, {})["waiting_for"] = waiting
        since = _queued_since(info)
        if load is not None and since is not None and now - since >= SLOT_WAIT_S:
            queue = info.activity_options.task_queue.name or task_queue
            busy = await load.busy(queue) if queue else None
            if busy is not None:
                updates.setdefault(info.activity_id, {})["waiting_for"] = (
                    f"{busy}; scheduled {now - since:.0f} s ago"
                )
    if not updates:
        return list(records)
    return [
        record.model_copy(update=updates[record.path])
        if record.path in updates and record.status == "running"
        else record
        for record in records
    ]


def _queued_since(info: PendingActivityInfo) -> float | None:
    """Since when (epoch seconds) the activity of ``info`` waits in its task queue for a worker to
    take it, or None when a worker has it (or its next attempt's time has not come)."""
    if info.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
        return None
    since = info.scheduled_time.ToSeconds() if info.HasField("scheduled_time") else None
    if info.attempt > 1 and info.HasField("next_attempt_schedule_time"):
        since = info.next_attempt_schedule_time.ToSeconds()  # a retry queues after its backoff
    return since


def said_once(record: StepRecord) -> str:
    """What a follower says once per step of ``record``'s wait: its ``waiting_for``, but of a wait
    for a worker only the kind (its backlog and age change at every look)."""
    waiting = record.waiting_for or ""
    if waiting.startswith(QUEUE_WAITS):
        waiting = waiting.partition(":")[0]
    return f"{record.path}: {waiting}"


async def _waiting_for(client: Client, info: PendingActivityInfo) -> str | None:
    """What the call of ``info`` said it waits for in its last heartbeat, if anything."""
    with contextlib.suppress(Exception):  # details this client cannot read (sealed, foreign)
        for detail in await client.data_converter.decode(list(info.heartbeat_details.payloads)):
            if isinstance(detail, dict) and isinstance(detail.get(WAITING_DETAIL), str):
                return str(detail[WAITING_DETAIL])
    return None


def retry_update(info: PendingActivityInfo) -> dict[str, object]:
    """The fields `with_pending` sets on the record of a step past its first attempt."""
    failure = info.last_failure
    error_type = failure.application_failure_info.type or None
    message = failure.message
    if error_type and message.startswith(f"{error_type}: "):
        message = message[len(error_type) + 2 :]  # durapipe's messages may start with their type
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 1] + "…"
    update: dict[str, object] = {
        "attempts": info.attempt,
        "error_type": error_type,
        "error": message,
    }
    if info.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
        of = f" of {info.maximum_attempts}" if info.maximum_attempts else ""
        when = ""
        if info.HasField("next_attempt_schedule_time"):
            at = info.next_attempt_schedule_time.ToDatetime(tzinfo=UTC)
            when = f" at {clock(at)}"
        failed = f"{error_type}: {message}" if error_type else message
        update["waiting_for"] = (
            f"attempt {info.attempt}{of}{when}: attempt {info.attempt - 1} failed: {failed}"
        )
    return update
