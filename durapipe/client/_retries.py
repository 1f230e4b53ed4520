"""What a running step's retries look like from the server: the attempt it is on, how the last one
failed, and when the next starts.

A leaf's failed attempts are retried by the Temporal server, so the run's own records know nothing
of them until the step ends: a step retrying a provider that answers 503 showed as plain "running"
for as long as its retry policy allowed. The server lists each running activity (its id is the
step's path) with its attempt and last failure; `with_retries` puts them on the step's record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo

from durapipe.runtime import StepRecord

# A provider's error message can run to kilobytes (a quoted response body): the line keeps this much.
MESSAGE_CHARS = 200


def with_retries(
    records: Sequence[StepRecord], pending: Sequence[PendingActivityInfo]
) -> list[StepRecord]:
    """``records`` with each running step that is past its first attempt annotated from its
    pending activity: ``attempts`` (the attempt it is on), ``error_type`` and ``error`` (how the
    last attempt failed) and, while it waits for the next attempt, ``waiting_for``."""
    retried = {p.activity_id: p for p in pending if p.attempt > 1 and p.last_failure.message}
    if not retried:
        return list(records)
    annotated = []
    for record in records:
        info = retried.get(record.path)
        if info is not None and record.status == "running":
            record = record.model_copy(update=retry_update(info))
        annotated.append(record)
    return annotated


def retry_update(info: PendingActivityInfo) -> dict[str, object]:
    """The fields `with_retries` sets on the record of the step ``info`` runs."""
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
            when = f" at {at:%H:%M:%S} UTC"
        failed = f"{error_type}: {message}" if error_type else message
        update["waiting_for"] = (
            f"attempt {info.attempt}{of}{when}: attempt {info.attempt - 1} failed: {failed}"
        )
    return update
