"""Translation rules: how a leaf call becomes an activity and a controller a child workflow.

Kept apart from the workflow so the rules read in one place and tests can check them directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

from durapipe._settings import settings
from durapipe.runtime._budget import effective_budget
from durapipe.runtime._calls import WORKFLOW_VERSION, AgentTurnCall, LeafCall, PipeRun, ToolCall
from durapipe.spec import Pipeline, RetrySpec, check_inputs, kind_of, kinds, resolve
from durapipe.stores._blobs import prepare_inputs

WORKFLOW_NAME = "durapipe.pipe"
# The built-in kinds' activities (each `Kind` names its own; recorded in histories, never renamed).
ACTIVITY_NAMES = {name: kind.activity for name, kind in kinds().items() if kind.activity}
# Runs as a local activity next to the workflow: a budget needs a price estimate before a paid call.
ESTIMATE_ACTIVITY = "durapipe.estimate_cost"
# Runs as a local activity when a run starts that may grow past the steps any worker allows: its
# answer, the worker's cap, is recorded in the history, so a replay does not read a setting.
STEPS_CAP_ACTIVITY = "durapipe.max_run_steps"
# Runs as a local activity when a top-level run starts on a worker that caps what one run spends:
# its answer, the cap, is in the history, as the steps cap's is.
SPEND_CAP_ACTIVITY = "durapipe.max_run_usd"
DEFAULT_TASK_QUEUE = "durapipe"
# Heartbeats let Temporal notice a dead worker long before a long call's timeout runs out: a quarter
# of the timeout, at most 20 s, and at least 5 s: a worker's event loop can stall for seconds (the
# first litellm call imports a lot), and a missed heartbeat starts a second, paid, attempt.
MIN_HEARTBEAT_TIMEOUT = 5.0
MAX_HEARTBEAT_TIMEOUT = 20.0
# Key of the attempt number in a leaf activity's heartbeat and failure details: Temporal does not
# tell a workflow on which attempt a failed activity stopped, so the activity says it.
ATTEMPT_DETAIL = "durapipe.attempt"


def activity_name(call: LeafCall) -> str:
    """The activity a leaf call runs as: the one its kind declares (see `durapipe.spec.Kind`)."""
    kind = kind_of(call.pipe.kind)
    if kind is None or kind.activity is None:
        raise ValueError(f"pipe '{call.pipe_name}': kind '{call.pipe.kind}' declares no activity")
    return kind.activity


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


def summary(call: LeafCall) -> str:
    """The one-line label the Temporal UI shows for a leaf activity."""
    if call.summary:
        return call.summary
    if isinstance(call, AgentTurnCall):
        return f"agent {call.pipe_name} · turn {call.turn} · {call.pipe.model}"
    if isinstance(call, ToolCall):
        return f"tool {call.path}"
    if not hasattr(call.pipe, "model"):  # a registered kind without a model
        return f"{call.pipe.kind} {call.path}"
    return f"{call.pipe.kind} {call.path} · {call.pipe.model}"


def new_run_id(pipe: str) -> str:
    """A fresh, readable run id: the pipe name and a random suffix."""
    return f"{pipe}-{uuid.uuid4().hex[:12]}"


def child_workflow_id(run_id: str, path: str) -> str:
    """The id of the child workflow of a nested controller: readable and deterministic."""
    return f"{run_id}/{path}"


def run_workflow_id(run: PipeRun) -> str:
    """The child workflow id of ``run``; a chunk of a batch adds its item range, ``claims[0:100]``."""
    if run.slice is None:
        return child_workflow_id(run.run_id, run.path)
    start = run.slice.offset
    return child_workflow_id(
        run.run_id, f"{run.path or run.pipe}[{start}:{start + len(run.slice.items)}]"
    )


def batch_history_bound(chunk_size: int) -> int:
    """The most history events one workflow of a batch records, whatever the list's length.

    A batch workflow maps at most ``chunk_size`` items or chunks. Per item, an activity records 3
    events (scheduled, started, completed) and a child workflow 3 (initiated, started, completed);
    each event that wakes the workflow may add one workflow task of 3 events (scheduled, started,
    completed), so at most 9 per item. Add the start, the first workflow task and the completion.
    """
    return 9 * chunk_size + 10


def activity_options(call: LeafCall) -> dict[str, Any]:
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
        # A cancelled run waits until its in-flight calls have really stopped (the provider has
        # seen the connection close), not just until the cancel was requested.
        "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    }


def pipe_run(
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    run_id: str | None = None,
    budget_usd: float | None = None,
    searchable_totals: bool | None = None,
) -> PipeRun:
    """The checked, resolved workflow input for a run of ``pipe``.

    ``searchable_totals`` None takes ``DURAPIPE_SEARCHABLE_TOTALS`` (default on).

    Raises:
        PipelineError: the pipe is unknown or the inputs do not fit it.
        ConfigError: a ``DURAPIPE_*`` setting is not valid.
    """
    checked = check_inputs(pipeline, pipe, prepare_inputs(pipeline, pipe, inputs))
    current = settings()
    spec = resolve(pipeline, pipe, fallback_model=current.default_model)
    if searchable_totals is None:
        searchable_totals = current.searchable_totals
    return PipeRun(
        run_id=run_id or new_run_id(pipe),
        scope=uuid.uuid4().hex,
        pipe=pipe,
        spec=spec,
        inputs=checked,
        budget_usd=effective_budget(budget_usd, spec.pipes[pipe].budget_usd),
        workflow_version=WORKFLOW_VERSION,
        searchable_totals=searchable_totals,
    )
