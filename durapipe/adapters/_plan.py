"""Translation rules: how a leaf call becomes an activity and a controller a child workflow.

Kept apart from the workflow so the rules read in one place and tests can check them directly.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

from durapipe.adapters._calls import LlmCall, ToolCall
from durapipe.pipes import RetrySpec

WORKFLOW_NAME = "durapipe.pipe"
ACTIVITY_NAMES = {"llm": "durapipe.llm", "tool": "durapipe.tool"}
DEFAULT_TASK_QUEUE = "durapipe"
# Heartbeats let Temporal notice a dead worker long before a long call's timeout runs out: a quarter
# of the timeout, at most 20 s, and at least 5 s: a worker's event loop can stall for seconds (the
# first litellm call imports a lot), and a missed heartbeat starts a second, paid, attempt.
MIN_HEARTBEAT_TIMEOUT = 5.0
MAX_HEARTBEAT_TIMEOUT = 20.0


def heartbeat_timeout(timeout: float) -> float:
    """Seconds without a heartbeat after which Temporal gives an attempt up as lost."""
    return min(timeout, max(timeout / 4, MIN_HEARTBEAT_TIMEOUT), MAX_HEARTBEAT_TIMEOUT)


def retry_policy(spec: RetrySpec) -> RetryPolicy:
    """Temporal's retry policy for a step's `RetrySpec`."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=spec.initial_interval),
        backoff_coefficient=spec.backoff,
        maximum_interval=timedelta(seconds=spec.max_interval),
        maximum_attempts=spec.max_attempts,
        non_retryable_error_types=list(spec.non_retryable),
    )


def summary(call: LlmCall | ToolCall) -> str:
    """The one-line label the Temporal UI shows for a leaf activity."""
    if isinstance(call, LlmCall):
        return f"llm {call.path} · {call.pipe.model}"
    return f"tool {call.path}"


def new_run_id(pipe: str) -> str:
    """A fresh, readable run id: the pipe name and a random suffix."""
    return f"{pipe}-{uuid.uuid4().hex[:12]}"


def child_workflow_id(run_id: str, path: str) -> str:
    """The id of the child workflow of a nested controller: readable and deterministic."""
    return f"{run_id}/{path}"


def activity_options(call: LlmCall | ToolCall) -> dict[str, Any]:
    """Keyword arguments for ``workflow.execute_activity`` of a leaf call."""
    pipe = call.pipe
    timeout = pipe.timeout or 60.0
    return {
        "activity_id": call.path,
        "summary": summary(call),
        "start_to_close_timeout": timedelta(seconds=timeout),
        "heartbeat_timeout": timedelta(seconds=heartbeat_timeout(timeout)),
        "retry_policy": retry_policy(pipe.retry or RetrySpec()),
        "task_queue": pipe.queue,
    }
