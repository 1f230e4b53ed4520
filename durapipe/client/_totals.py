"""A run's totals read from the run itself, for runs whose totals are not search attributes.

A run started with searchable totals off (`PipeRun.searchable_totals`) upserts none, and any run
has none until its first upsert (2 s in, or at its end). Such a run still knows its totals: while
it runs, its ``durapipe.steps`` query answers them (a query adds no history event); once it has
completed, its result carries them (one history read of the completion event), and a failed run's
failure carries its step records. A cancelled, terminated or timed-out run carries neither.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from durapipe._errors import StepFailed
from durapipe.runtime import RunResult, StepRecord, Usage
from durapipe.workflows import STEPS_QUERY
from durapipe.workflows._search import finished_steps, spent

# A running run's query waits for a worker; a list of runs must not wait long on one without.
QUERY_TIMEOUT = timedelta(seconds=2)


async def totals_from_the_run(
    client: Client, execution: WorkflowExecution, failure: StepFailed | None
) -> tuple[Usage, int] | None:
    """What ``execution`` has spent and how many leaf steps (or batch items) it has finished, as
    the run itself reports them; None when it cannot tell. ``failure``: a failed run's error."""
    status = execution.status or WorkflowExecutionStatus.RUNNING
    handle = client.get_workflow_handle(
        execution.id, run_id=execution.run_id, result_type=RunResult
    )
    try:
        if status == WorkflowExecutionStatus.RUNNING:
            # rpc_timeout bounds one attempt; the client retries some failures (one query took
            # 6.3 s here), so the whole wait is bounded too.
            records = await asyncio.wait_for(
                handle.query(STEPS_QUERY, result_type=list[StepRecord], rpc_timeout=QUERY_TIMEOUT),
                QUERY_TIMEOUT.total_seconds(),
            )
            return spent(records), finished_steps(records)
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result(follow_runs=False)
            return result.usage, finished_steps(result.steps)
    except (
        Exception
    ):  # no worker answered (RPCError, a failed query), or a result not readable here
        return None
    if failure is not None:
        records = [StepRecord.model_validate(s) for s in failure.steps]
        return spent(records), finished_steps(records)
    return None
