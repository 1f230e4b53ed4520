"""The one workflow type: it interprets a controller spec (or a single leaf) given as its input.

Every pipe run, top-level or nested, is this workflow with a different `PipeRun`; leaves become
activities and nested controllers become child workflows with id ``<run id>/<step path>``.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from durapipe._errors import StepFailed
    from durapipe.adapters._calls import (
        LeafResult,
        LlmCall,
        PipeRun,
        RunResult,
        StepFailure,
        StepRecord,
        ToolCall,
    )
    from durapipe.adapters._plan import (
        ACTIVITY_NAMES,
        WORKFLOW_NAME,
        activity_options,
        run_workflow_id,
    )
    from durapipe.workflows._interpret import Interpreter

STEPS_QUERY = "durapipe.steps"
STEP_FAILED = "durapipe.StepFailed"


@workflow.defn(name=WORKFLOW_NAME)
class PipeWorkflow:
    """Runs one pipe of a run and answers the ``durapipe.steps`` query with its step records."""

    def __init__(self) -> None:
        self._interpreter: Interpreter | None = None

    @workflow.run
    async def run(self, run: PipeRun) -> RunResult:
        """Run the pipe; fail with type ``durapipe.StepFailed`` naming the step that failed."""
        self._interpreter = Interpreter(run, _TemporalRuntime())
        try:
            return await self._interpreter.execute()
        except StepFailed as err:
            failure = StepFailure(
                path=err.path,
                kind=err.kind,
                model=err.model,
                cause_type=err.cause_type,
                cause=err.cause,
                steps=err.steps,
            )
            raise ApplicationError(
                str(err), failure.model_dump(mode="json"), type=STEP_FAILED, non_retryable=True
            ) from None

    @workflow.query(name=STEPS_QUERY)
    def steps(self) -> list[StepRecord]:
        """The step records so far (nested runs that finished are included)."""
        return self._interpreter.snapshot() if self._interpreter else []


class _TemporalRuntime:
    """Sends leaves to activities and nested controllers to child workflows."""

    async def leaf(self, call: LlmCall | ToolCall) -> LeafResult:
        try:
            result: LeafResult = await workflow.execute_activity(
                ACTIVITY_NAMES[call.pipe.kind],
                call,
                result_type=LeafResult,
                **activity_options(call),
            )
        except ActivityError as err:
            cause_type, cause = _cause(err.cause)
            raise StepFailed(
                path=call.path,
                kind=call.pipe.kind,
                model=getattr(call.pipe, "model", None),
                cause_type=cause_type,
                cause=cause,
            ) from None
        return result

    async def child(self, run: PipeRun) -> RunResult:
        kind = run.spec.pipes[run.pipe].kind
        try:
            result: RunResult = await workflow.execute_child_workflow(
                WORKFLOW_NAME,
                run,
                id=run_workflow_id(run),
                result_type=RunResult,
                static_summary=f"{kind} {run.path}",
            )
        except ChildWorkflowError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == STEP_FAILED and cause.details:
                failure = StepFailure.model_validate(cause.details[0])
                raise StepFailed(
                    path=failure.path,
                    kind=failure.kind,
                    model=failure.model,
                    cause_type=failure.cause_type,
                    cause=failure.cause,
                    steps=failure.steps,
                ) from None
            cause_type, message = _cause(cause)
            raise StepFailed(
                path=run.path, kind=kind, cause_type=cause_type, cause=message
            ) from None
        return result

    def now(self) -> datetime:
        return workflow.now()

    async def step_starting(self, record: StepRecord) -> None:
        return None

    def step_finished(self, record: StepRecord) -> None:
        return None


def _cause(cause: BaseException | None) -> tuple[str, str]:
    """A stable type name and message for why an activity or child failed."""
    if isinstance(cause, ApplicationError):
        return cause.type or "ApplicationError", cause.message
    if isinstance(cause, TimeoutError):
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "activity"
        return "durapipe.Timeout", f"{kind} timeout exceeded"
    if isinstance(cause, CancelledError):
        return "durapipe.Cancelled", "the step was cancelled"
    if cause is None:
        return "durapipe.Unknown", "no cause reported"
    return type(cause).__name__, str(cause)
