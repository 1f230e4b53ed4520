"""One step of a run in full: the rendered prompt it sent and the answer it got, from the history.

Step records carry spend and status, not content (a history is where the content is, encrypted when
encryption is on). A step's call is found by its activity id (the step path) in the history of the
workflow that ran it, and decoded with this client's converter.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError

from durapipe._errors import RunError, RunNotFound
from durapipe.activities._llm import messages_for
from durapipe.adapters import child_workflow_id
from durapipe.runtime._calls import (
    LeafResult,
    LlmCall,
)
from durapipe.spec import kinds


def _call_types() -> dict[str, type[BaseModel]]:
    """Each leaf activity's input message, as its kind declares it (built-in or registered)."""
    return {k.activity: k.call for k in kinds().values() if k.activity and k.call}


class StepDetail(BaseModel):
    """What one leaf step sent and got.

    Attributes:
        path: the step path.
        kind: the pipe kind (``llm``, ``tool``, ...).
        inputs: the step's input values.
        messages: for an llm step, the rendered chat messages (system, user) it sent.
        output: the step's answer (after validation), None while it has none.
    """

    path: str
    kind: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    messages: list[dict[str, str]] = Field(default_factory=list)
    output: Any = None


async def step_detail(client: Client, run_id: str, path: str) -> StepDetail:
    """The inputs, rendered prompt and answer of the leaf step ``path`` of run ``run_id``.

    Raises:
        RunNotFound: no such run (or nested run).
        RunError: the run has no leaf call at ``path`` (a controller, or a step not yet run).
    """
    parent = path.rpartition("/")[0]
    workflow_id = child_workflow_id(run_id, parent) if parent else run_id
    scheduled: dict[int, Any] = {}
    call: Any = None
    result: LeafResult | None = None
    try:
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes"):
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_id == path and attrs.activity_type.name in _call_types():
                    scheduled[event.event_id] = attrs
            elif event.HasField("activity_task_completed_event_attributes"):
                done = event.activity_task_completed_event_attributes
                if done.scheduled_event_id in scheduled:
                    [result] = await client.data_converter.decode(
                        done.result.payloads, [LeafResult]
                    )
    except RPCError as err:
        raise RunNotFound(f"no run '{workflow_id}': {err.message}", run_id=run_id) from None
    if not scheduled:
        raise RunError(
            f"run '{run_id}' has no call at step '{path}' (a controller, a step not run yet, or "
            "not a step path: `durapipe show` lists them)",
            run_id=run_id,
        )
    first = next(iter(scheduled.values()))
    [call] = await client.data_converter.decode(
        first.input.payloads, [_call_types()[first.activity_type.name]]
    )
    return StepDetail(
        path=path,
        kind=call.pipe.kind,
        inputs=call.inputs,
        messages=messages_for(call) if isinstance(call, LlmCall) else [],
        output=result.output if result is not None else None,
    )
