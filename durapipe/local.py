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

from durapipe._errors import ErrorType, StepFailed
from durapipe.activities import (
    CallContext,
    activity_body,
    estimate_cost,
)
from durapipe.adapters import pipe_run, tool_functions
from durapipe.runtime import (
    LeafCall,
    LeafResult,
    LlmCall,
    PipeRun,
    RunResult,
    StepRecord,
)
from durapipe.runtime._approvals import ApprovalDecision, ApprovalRequest
from durapipe.runtime._budget import Budget
from durapipe.runtime._interpret import Interpreter
from durapipe.spec import Pipeline, RetrySpec, kind_of
from durapipe.spec._deck import ModelDeck
from durapipe.stores._checkpoints import CheckpointStore, configured_store


class LocalRuntime:
    """Runs leaves by calling the activity bodies directly, with Temporal's retry semantics.

    Args:
        tools: tool functions by ``module:name`` reference.
        budget_usd: what this (part of the) run may spend; None for no budget.
        approve_all: approve every approval step as is; without it an approval step fails, since
            only a run on Temporal can wait for a human.
        checkpoints: where leaf results are checkpointed (None: nowhere).
        deck: the connection settings per model (the run's own pipeline is this process's deck).
        on_step: called with each step's record as the step succeeds or fails (nested runs too).
    """

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]],
        *,
        budget_usd: float | None = None,
        approve_all: bool = False,
        checkpoints: CheckpointStore | None = None,
        deck: ModelDeck | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
    ) -> None:
        self.tools = dict(tools)
        self.deck = deck
        self.budget = Budget(budget_usd)
        self.approve_all = approve_all
        self.checkpoints = checkpoints
        self.on_step = on_step

    async def leaf(self, call: LeafCall) -> LeafResult:
        return await self.budget.spend(call, _estimate, self._retrying)

    async def _retrying(self, call: LeafCall) -> LeafResult:
        retry = call.pipe.retry or RetrySpec()
        attempt = 1
        while True:
            try:
                # asyncio.timeout, not wait_for: no task per attempt (wait_for makes one).
                async with asyncio.timeout(call.pipe.timeout):
                    return await self._attempt(call, attempt)
            except ApplicationError as err:
                error_type, message = err.type or "ApplicationError", err.message
                stop = err.non_retryable or error_type in retry.non_retryable
                delay = err.next_retry_delay.total_seconds() if err.next_retry_delay else None
            except TimeoutError:
                error_type, message, stop, delay = (
                    ErrorType.TIMEOUT,
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
                    attempts=attempt,
                )
            if delay is None:
                delay = min(
                    retry.initial_interval * retry.backoff ** (attempt - 1), retry.max_interval
                )
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(self, call: LeafCall, attempt: int) -> LeafResult:
        # The body its activity runs on a worker, built-in kind or registered (the interpreter
        # made the call only because the kind declares an activity).
        kind = kind_of(call.pipe.kind)
        body = activity_body(kind.activity or "") if kind else None
        if body is None:
            raise ApplicationError(
                f"pipe '{call.pipe_name}': no activity body is registered for kind "
                f"'{call.pipe.kind}' in this process (see durapipe.activities.register_activity)",
                type=ErrorType.UNKNOWN_KIND,
                non_retryable=True,
            )
        return await body(call, CallContext(attempt, self.checkpoints, self.deck, self.tools))

    async def child(self, run: PipeRun) -> RunResult:
        limit = self.budget.for_child(run.spec.pipes[run.pipe].budget_usd)
        nested = LocalRuntime(
            self.tools,
            budget_usd=limit,
            approve_all=self.approve_all,
            checkpoints=self.checkpoints,
            deck=self.deck,
            on_step=self.on_step,
        )
        result = await Interpreter(run.model_copy(update={"budget_usd": limit}), nested).execute()
        self.budget.add(result.usage)
        return result

    async def approval(self, request: ApprovalRequest) -> ApprovalDecision:
        if self.approve_all:
            return ApprovalDecision(step=request.path, approved=True, reviewer="--approve-all")
        raise StepFailed(
            path=request.path,
            kind="approval",
            cause_type=ErrorType.APPROVAL_UNAVAILABLE,
            cause="a local run cannot wait for a human decision; run it on Temporal, "
            "or pass --approve-all (approve_all=True) to approve every approval step as is",
        )

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def step_starting(self, record: StepRecord) -> None:
        return None

    def step_finished(self, record: StepRecord) -> None:
        if self.on_step is not None:
            self.on_step(record)

    def continue_as_new_suggested(self, turns: int) -> bool:
        return False  # no history to bound in-process

    def patched(self, change: str) -> bool:
        return True  # nothing recorded to replay in-process


async def run_local(
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    run_id: str | None = None,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    budget_usd: float | None = None,
    approve_all: bool = False,
    on_step: Callable[[StepRecord], None] | None = None,
) -> RunResult:
    """Run pipe ``pipe`` of ``pipeline`` in this process.

    Args:
        pipeline: a loaded (and validated) pipeline.
        pipe: the name of the pipe to run.
        inputs: the pipe's inputs; a `Path` (or bytes) for a ``document``/``image``/``file`` input
            is uploaded to the blob store and passed as a reference.
        run_id: the run's id (used in step paths of nested runs); a new one by default.
        tools: tool functions by reference; imported from the pipeline's references by default.
        budget_usd: the most the run may spend (the pipe's ``budget_usd`` too, the tighter wins).
        approve_all: approve every approval step as is (a local run cannot wait for a human).
        on_step: called with each step's record as the step succeeds or fails, so a caller can
            show progress while the run goes.

    Raises:
        PipelineError: the pipe is unknown or the inputs do not fit it.
        StepFailed: a step failed after its retries.
    """
    run = pipe_run(pipeline, pipe, inputs, run_id=run_id, budget_usd=budget_usd)
    runtime = LocalRuntime(
        tools if tools is not None else tool_functions(run.spec),
        budget_usd=run.budget_usd,
        approve_all=approve_all,
        checkpoints=configured_store(),
        deck=ModelDeck.of(pipeline.models),
        on_step=on_step,
    )
    return await Interpreter(run, runtime).execute()


async def _estimate(call: LlmCall) -> float:
    return estimate_cost(call)
