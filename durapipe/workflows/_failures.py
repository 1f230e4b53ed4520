"""What a failed activity or child run reports to the workflow: a stable type name and message
for its cause, the details it wrote (its attempts' spend, the attempt it stopped on), and that
attempt. Pure readers of temporalio's failure types, deterministic on replay."""

from __future__ import annotations

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
)

from durapipe._errors import ErrorType, RunCancelled
from durapipe.adapters._plan import ATTEMPT_DETAIL
from durapipe.runtime._calls import LeafCall, StepFailure, StepRecord, spent_by


def failure_cause(cause: BaseException | None) -> tuple[str, str]:
    """A stable type name and message for why an activity or child failed."""
    if isinstance(cause, ApplicationError):
        return cause.type or "ApplicationError", cause.message
    if isinstance(cause, TimeoutError):
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "activity"
        return ErrorType.TIMEOUT, f"{kind} timeout exceeded"
    if isinstance(cause, CancelledError):
        return ErrorType.CANCELLED, "the step was cancelled"
    if cause is None:
        return ErrorType.UNKNOWN, "no cause reported"
    return type(cause).__name__, str(cause)


def failure_details(err: ActivityError) -> list[object]:
    """The details the activity wrote on its failure, or on its last heartbeat (a timeout)."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return list(cause.details)
    if isinstance(cause, TimeoutError):
        return list(cause.last_heartbeat_details)
    return []


def failed_attempt(err: ActivityError, call: LeafCall) -> int:
    """The attempt a failed activity stopped on, as its history records it.

    The activity stamps its attempt on its failure and its heartbeats; a timeout carries the last
    heartbeat. Without either, the retry state tells whether every allowed attempt was used.
    """
    details = failure_details(err)
    for detail in reversed(details):
        if isinstance(detail, dict) and isinstance(detail.get(ATTEMPT_DETAIL), int):
            return int(detail[ATTEMPT_DETAIL])
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED and call.pipe.retry:
        return call.pipe.retry.max_attempts
    return 1


def cancelled_run(err: RunCancelled, kind: str, steps: list[StepRecord]) -> ApplicationError:
    """How a nested run cancelled after its steps paid for something ends, so its parent can count
    it: a workflow that ends as cancelled carries no details, so it fails with type
    ``durapipe.Cancelled`` and its step records (``kind``: its pipe's), as a cancelled call that
    paid does (see `durapipe.workflows._patches.CANCELLED_RUN_SPEND_PATCH`)."""
    details = StepFailure(
        path=err.path, kind=kind, cause_type=ErrorType.CANCELLED, cause=str(err), steps=steps
    )
    return ApplicationError(
        str(err), details.model_dump(mode="json"), type=ErrorType.CANCELLED, non_retryable=True
    )


def cancelled_child(cause: BaseException | None, path: str) -> RunCancelled | None:
    """The cancellation a child run's failure is (`cancelled_run`), with what its steps paid for
    and its records; None when it is another failure."""
    if not isinstance(cause, ApplicationError) or cause.type != ErrorType.CANCELLED:
        return None
    if not cause.details:
        return None
    steps = StepFailure.model_validate(cause.details[0]).steps
    stopped = RunCancelled("the run was cancelled", path=path, steps=steps)
    stopped.spent = spent_by(steps)
    return stopped
