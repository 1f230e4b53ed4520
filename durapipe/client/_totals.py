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
from typing import cast

from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.common.v1 import WorkflowExecution as ExecutionRef
from temporalio.api.enums.v1 import HistoryEventFilterType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from durapipe._errors import StepFailed
from durapipe.runtime import StepRecord, Usage
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
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
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
            totals = await _completed_totals(client, execution)
            return totals.usage, finished_steps(totals.steps)
    except (
        Exception
    ):  # no worker answered (RPCError, a failed query), or a result not readable here
        return None
    if failure is not None:
        records = [StepRecord.model_validate(s) for s in failure.steps]
        return spent(records), finished_steps(records)
    return None


class _Totals(BaseModel):
    """A `RunResult` read for its totals: its output is skipped by the JSON parser, not built."""

    model_config = ConfigDict(extra="ignore")

    usage: Usage = Field(default_factory=Usage)
    steps: list[StepRecord] = Field(default_factory=list)


async def _completed_totals(client: Client, execution: WorkflowExecution) -> _Totals:
    """A completed run's usage and step records, from its completion event.

    The event's payload is the whole `RunResult`, fetched from the payload store and decrypted as
    one piece (AES-GCM authenticates it whole), so only its decoding can skip the output. Measured
    here: parsing a 4.8 MB output of 20,000 objects, 4.5 ms instead of 36.8 ms; a 5 MB text output
    (one JSON string, cheap either way), 14-15 ms end to end both ways (fetch and decrypt).
    """
    response = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=ExecutionRef(workflow_id=execution.id, run_id=execution.run_id),
            history_event_filter_type=HistoryEventFilterType.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT,
        )
    )
    [event] = response.history.events
    payloads = event.workflow_execution_completed_event_attributes.result.payloads
    [totals] = await client.data_converter.decode(payloads, [_Totals])
    return cast(_Totals, totals)
