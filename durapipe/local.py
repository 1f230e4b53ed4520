"""The in-process runner: the same specs, interpreter and activity code, no Temporal server.

Retries follow the step's `RetrySpec` exactly as Temporal applies a `RetryPolicy`: the delay grows by
``backoff`` up to ``max_interval``, a non-retryable error (or one whose type is listed in
``non_retryable``) stops at once, and a provider's Retry-After replaces the computed delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._errors import StepFailed
from durapipe.activities import run_llm, run_tool
from durapipe.activities._checkpoints import CheckpointStore, configured_store
from durapipe.adapters import (
    LeafResult,
    LlmCall,
    PipeRun,
    RunResult,
    StepRecord,
    ToolCall,
    new_run_id,
)
from durapipe.pipes import Pipeline, RetrySpec, check_inputs, resolve, tool_functions
from durapipe.workflows._interpret import Interpreter


class LocalRuntime:
    """Runs leaves by calling the activity bodies directly, with Temporal's retry semantics."""

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]],
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self.tools = dict(tools)
        self.checkpoints = checkpoints

    async def leaf(self, call: LlmCall | ToolCall) -> LeafResult:
        retry = call.pipe.retry or RetrySpec()
        attempt = 1
        while True:
            try:
                return await asyncio.wait_for(
                    self._attempt(call, attempt), timeout=call.pipe.timeout
                )
            except ApplicationError as err:
                error_type, message = err.type or "ApplicationError", err.message
                stop = err.non_retryable or error_type in retry.non_retryable
                delay = err.next_retry_delay.total_seconds() if err.next_retry_delay else None
            except TimeoutError:
                error_type, message, stop, delay = (
                    "durapipe.Timeout",
                    "start-to-close timeout exceeded",
                    False,
                    None,
                )
            except Exception as err:
                error_type, message = type(err).__name__, str(err)
                stop, delay = error_type in retry.non_retryable, None
            if stop or attempt >= retry.max_attempts:
                raise StepFailed(
                    path=call.path,
                    kind=call.pipe.kind,
                    model=getattr(call.pipe, "model", None),
                    cause_type=error_type,
                    cause=message,
                )
            if delay is None:
                delay = min(
                    retry.initial_interval * retry.backoff ** (attempt - 1), retry.max_interval
                )
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(self, call: LlmCall | ToolCall, attempt: int) -> LeafResult:
        if isinstance(call, LlmCall):
            return await run_llm(call, attempt, self.checkpoints)
        return await run_tool(call, self.tools, attempt, self.checkpoints)

    async def child(self, run: PipeRun) -> RunResult:
        return await Interpreter(run, self).execute()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def step_starting(self, record: StepRecord) -> None:
        return None

    def step_finished(self, record: StepRecord) -> None:
        return None


async def run_local(
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    run_id: str | None = None,
    tools: Mapping[str, Callable[..., Any]] | None = None,
) -> RunResult:
    """Run pipe ``pipe`` of ``pipeline`` in this process.

    Args:
        pipeline: a loaded (and validated) pipeline.
        pipe: the name of the pipe to run.
        inputs: the pipe's inputs.
        run_id: the run's id (used in step paths of nested runs); a new one by default.
        tools: tool functions by reference; imported from the pipeline's references by default.

    Raises:
        PipelineError: the pipe is unknown or the inputs do not fit it.
        StepFailed: a step failed after its retries.
    """
    checked = check_inputs(pipeline, pipe, dict(inputs))
    spec = resolve(pipeline, pipe)
    run = PipeRun(run_id=run_id or new_run_id(pipe), pipe=pipe, spec=spec, inputs=checked)
    runtime = LocalRuntime(
        tools if tools is not None else tool_functions(spec), checkpoints=configured_store()
    )
    return await Interpreter(run, runtime).execute()
