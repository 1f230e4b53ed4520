"""The tool operator: call a registered Python function with the step's inputs."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType, ToolError
from durapipe.activities._registry import CallContext, register_activity
from durapipe.adapters._plan import ACTIVITY_NAMES
from durapipe.runtime._agent_messages import TOOL_ERROR
from durapipe.runtime._calls import LeafResult, ToolCall
from durapipe.spec import _types
from durapipe.stores._checkpoints import CheckpointStore, checkpoint_key, checkpointed
from durapipe.stores._limits import limited


async def run_tool(
    call: ToolCall,
    functions: Mapping[str, Callable[..., Any]],
    attempt: int = 1,
    checkpoints: CheckpointStore | None = None,
) -> LeafResult:
    """Run one tool call: the activity body, shared by Temporal and the local runner.

    A result stored in ``checkpoints`` under the call's key is returned without calling the
    function again (a tool may have side effects worth not repeating); a new result is stored.

    Sync functions run in a thread so they do not block the event loop (and heartbeats go on).
    An exception the function raises is retried by the step's policy unless it is an
    `ApplicationError` marked non-retryable.

    Raises:
        ApplicationError: the function is not registered on this worker, it raised `ToolError`
            (type ``durapipe.ToolError``), or it returned a value that does not fit the pipe's
            output type (all non-retryable).
    """
    function = functions.get(call.pipe.function)
    if function is None:
        # Workers loading other files may share a queue and take each other's steps: name the queue.
        fix = (
            f"start every worker of task queue '{activity.info().task_queue}' with the pipeline "
            "file that defines it (any of them may take the step)"
            if activity.in_activity()
            else "start the worker with the pipeline file that defines it"
        )
        raise ApplicationError(
            f"tool '{call.pipe.function}' (pipe '{call.pipe_name}') is not registered on this worker; "
            + fix,
            type=ErrorType.TOOL_NOT_FOUND,
            non_retryable=True,
        )
    return await checkpointed(
        checkpoints, call, checkpoint_key(call), attempt, lambda: _call(call, function, attempt)
    )


async def _call(call: ToolCall, function: Callable[..., Any], attempt: int) -> LeafResult:
    try:
        async with limited(call, None):
            if inspect.iscoroutinefunction(function):
                value = await function(**call.inputs)
            else:
                value = await asyncio.to_thread(function, **call.inputs)
    except ToolError as err:
        # The tool itself says retrying will not help; an agent hands the message to its model.
        raise ApplicationError(err.message, type=TOOL_ERROR, non_retryable=True) from None
    try:
        output = _types.validate(call.pipe.output, call.structures, value)
    except pydantic.ValidationError as err:
        raise ApplicationError(
            f"tool '{call.pipe.function}' returned {type(value).__name__}, "
            f"which is not {call.pipe.output}: {err.errors(include_url=False)[0]['msg']}",
            type=ErrorType.INVALID_OUTPUT,
            non_retryable=True,
        ) from None
    return LeafResult(output=output, attempt=attempt)


@register_activity(ACTIVITY_NAMES["tool"], metered=True)
async def tool(call: ToolCall, context: CallContext) -> LeafResult:
    """Call one of the worker's tool functions (``durapipe.tool``)."""
    return await run_tool(call, context.tools, context.attempt, context.checkpoints)
