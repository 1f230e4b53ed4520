"""The dead-letter view and re-drive: list runs by status, and retry a failed run.

A retried run keeps its run id: `retry` starts a new Temporal execution of the same workflow id
with the input the failed execution recorded. Checkpoint keys are scoped by run id, so every step
that succeeded before is served from the checkpoint store and only the failed step and the steps
after it call providers again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError

from durapipe._client import SPEC_VERSION, RunHandle, run_error
from durapipe._errors import ConfigError, RunError, RunNotFound, StepFailed
from durapipe.adapters import WORKFLOW_NAME, PipeRun

STATUSES = {
    "running": WorkflowExecutionStatus.RUNNING,
    "completed": WorkflowExecutionStatus.COMPLETED,
    "failed": WorkflowExecutionStatus.FAILED,
    "cancelled": WorkflowExecutionStatus.CANCELED,
    "terminated": WorkflowExecutionStatus.TERMINATED,
    "timed_out": WorkflowExecutionStatus.TIMED_OUT,
}


@dataclass(frozen=True)
class RunSummary:
    """One run in `list_runs`: its id, pipe and status, and for a failed run where it failed.

    Attributes:
        run_id: the run id (the top-level workflow id).
        pipe: the pipe the run runs.
        status: ``running``, ``completed``, ``failed``, ``cancelled``, ``terminated``, ``timed_out``.
        started_at: when the run (its latest execution) started.
        failed_step: the path of the step that failed, for a failed run.
        error: why it failed (the cause's type and message), for a failed run.
    """

    run_id: str
    pipe: str
    status: str
    started_at: datetime | None = None
    failed_step: str | None = None
    error: str | None = None


async def list_runs(
    client: Client, *, status: str | None = None, limit: int = 50
) -> list[RunSummary]:
    """The latest runs (newest first), optionally only those with ``status``.

    Nested pipes (child workflows) are not runs of their own and are left out; a run that was
    retried shows its latest execution only.

    Raises:
        ConfigError: ``status`` is not one of `STATUSES`.
    """
    if status is not None and status not in STATUSES:
        raise ConfigError(f"unknown run status '{status}'; use one of {', '.join(STATUSES)}")
    seen: set[str] = set()
    runs: list[RunSummary] = []
    async for execution in client.list_workflows(f"WorkflowType = '{WORKFLOW_NAME}'"):
        if execution.id in seen:
            continue
        seen.add(execution.id)
        memo = await execution.memo()
        if "pipe" not in memo:  # a nested pipe: only top-level runs carry the memo
            continue
        summary = await _summary(client, execution, str(memo["pipe"]))
        if status is None or summary.status == status:
            runs.append(summary)
            if len(runs) >= limit:
                break
    return runs


async def _summary(client: Client, execution: WorkflowExecution, pipe: str) -> RunSummary:
    name = next((k for k, v in STATUSES.items() if v == execution.status), "unknown")
    summary = RunSummary(
        run_id=execution.id, pipe=pipe, status=name, started_at=execution.start_time
    )
    if execution.status != WorkflowExecutionStatus.FAILED:
        return summary
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    try:
        await handle.result(follow_runs=False)
    except WorkflowFailureError as err:
        failure = run_error(err, execution.id)
        if isinstance(failure, StepFailed):
            error = f"{failure.cause_type}: {failure.cause}"
            return dataclasses.replace(summary, failed_step=failure.path, error=error)
        return dataclasses.replace(summary, error=str(failure))
    return summary


async def retry(client: Client, run_id: str) -> RunHandle:
    """Re-drive a failed run: a new execution of the same run id with the same input.

    Steps that succeeded before are served from checkpoints; the failed step and the steps after
    it run again. Wait for the outcome with `RunHandle.result`.

    Raises:
        RunNotFound: no run with that id.
        RunError: the run has not failed (nothing to retry).
    """
    handle = client.get_workflow_handle(run_id)
    try:
        description = await handle.describe()
        history = await handle.fetch_history()
    except RPCError as err:
        raise RunNotFound(f"no run '{run_id}': {err.message}", run_id=run_id) from None
    if description.status != WorkflowExecutionStatus.FAILED:
        state = next((k for k, v in STATUSES.items() if v == description.status), "unknown")
        raise RunError(f"run '{run_id}' is {state}, not failed; nothing to retry", run_id=run_id)
    started = history.events[0].workflow_execution_started_event_attributes
    [run] = await client.data_converter.decode(started.input.payloads, [PipeRun])
    await client.start_workflow(
        WORKFLOW_NAME,
        run,
        id=run_id,
        task_queue=started.task_queue.name,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        static_summary=f"pipe {run.pipe} (retry)",
        memo={"pipe": run.pipe, "spec_version": SPEC_VERSION, "retry_of": description.run_id},
    )
    return RunHandle(client, run_id)
