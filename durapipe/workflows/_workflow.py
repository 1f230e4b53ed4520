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
    RetryState,
    TimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from durapipe._errors import StepFailed
    from durapipe.adapters._calls import (
        LeafCall,
        LeafResult,
        PipeRun,
        RunResult,
        StepFailure,
        StepRecord,
    )
    from durapipe.adapters._plan import (
        ACTIVITY_NAMES,
        ATTEMPT_DETAIL,
        WORKFLOW_NAME,
        activity_options,
        child_workflow_id,
    )
    from durapipe.adapters._search import run_totals
    from durapipe.workflows._agent import ContinueAsNew
    from durapipe.workflows._interpret import Interpreter

STEPS_QUERY = "durapipe.steps"
STEP_FAILED = "durapipe.StepFailed"
# Agent turns per run before continue-as-new even if Temporal does not suggest it yet: keeps every
# run's history (each turn's input carries the transcript) well under Temporal's limits.
AGENT_TURNS_PER_RUN = 25


@workflow.defn(name=WORKFLOW_NAME)
class PipeWorkflow:
    """Runs one pipe of a run and answers the ``durapipe.steps`` query with its step records."""

    def __init__(self) -> None:
        self._interpreter: Interpreter | None = None

    @workflow.run
    async def run(self, run: PipeRun) -> RunResult:
        """Run the pipe; fail with type ``durapipe.StepFailed`` naming the step that failed."""
        runtime = _TemporalRuntime()
        self._interpreter = runtime.interpreter = Interpreter(run, runtime)
        runtime.publish_totals()
        try:
            return await self._interpreter.execute()
        except ContinueAsNew as new:
            workflow.continue_as_new(run.model_copy(update={"resume": new.resume}))
        except StepFailed as err:
            details = StepFailure.of(err).model_dump(mode="json")
            raise ApplicationError(
                str(err), details, type=STEP_FAILED, non_retryable=True
            ) from None

    @workflow.query(name=STEPS_QUERY)
    def steps(self) -> list[StepRecord]:
        """The step records so far (nested runs that finished are included)."""
        return self._interpreter.snapshot() if self._interpreter else []


class _TemporalRuntime:
    """Sends leaves to activities and nested controllers to child workflows.

    It also keeps the run readable while it goes: the workflow's current details name the running
    step, and a top-level run upserts its totals as search attributes when a step finishes.
    """

    def __init__(self) -> None:
        self.interpreter: Interpreter | None = None

    async def leaf(self, call: LeafCall) -> LeafResult:
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
                attempts=_attempts(err, call),
            ) from None
        return result

    async def child(self, run: PipeRun) -> RunResult:
        kind = run.spec.pipes[run.pipe].kind
        try:
            result: RunResult = await workflow.execute_child_workflow(
                WORKFLOW_NAME,
                run,
                id=child_workflow_id(run.run_id, run.path),
                result_type=RunResult,
                static_summary=f"{kind} {run.path}",
            )
        except ChildWorkflowError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == STEP_FAILED and cause.details:
                raise StepFailure.model_validate(cause.details[0]).error() from None
            cause_type, message = _cause(cause)
            raise StepFailed(
                path=run.path, kind=kind, cause_type=cause_type, cause=message
            ) from None
        return result

    def now(self) -> datetime:
        return workflow.now()

    async def step_starting(self, record: StepRecord) -> None:
        self._details(f"running {record.kind} step {record.path}")

    def step_finished(self, record: StepRecord) -> None:
        self._details(f"{record.status}: {record.kind} step {record.path}")
        self.publish_totals()

    def publish_totals(self) -> None:
        """Upsert the run's totals as search attributes (top-level runs only)."""
        interpreter = self.interpreter
        if interpreter is None or interpreter.run.path:
            return
        records = interpreter.snapshot()
        workflow.upsert_search_attributes(
            run_totals(interpreter.run.pipe, interpreter.usage, records)
        )

    def _details(self, line: str) -> None:
        """The run's current details in the Temporal UI: the latest step event and progress."""
        if self.interpreter is None:
            return
        records = self.interpreter.snapshot()
        done = sum(r.status in ("succeeded", "failed", "skipped") for r in records)
        workflow.set_current_details(
            f"pipe {self.interpreter.run.pipe}: {line} ({done} of {len(records)} steps done)"
        )

    def continue_as_new_suggested(self, turns: int) -> bool:
        return turns >= AGENT_TURNS_PER_RUN or workflow.info().is_continue_as_new_suggested()


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


def _attempts(err: ActivityError, call: LeafCall) -> int:
    """The attempt a failed activity stopped on, as its history records it.

    The activity stamps its attempt on its failure and its heartbeats; a timeout carries the last
    heartbeat. Without either, the retry state tells whether every allowed attempt was used.
    """
    cause = err.cause
    details: list[object] = []
    if isinstance(cause, ApplicationError):
        details = list(cause.details)
    elif isinstance(cause, TimeoutError):
        details = list(cause.last_heartbeat_details)
    for detail in reversed(details):
        if isinstance(detail, dict) and isinstance(detail.get(ATTEMPT_DETAIL), int):
            return int(detail[ATTEMPT_DETAIL])
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED and call.pipe.retry:
        return call.pipe.retry.max_attempts
    return 1
