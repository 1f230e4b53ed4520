"""The one workflow type: it interprets a controller spec (or a single leaf) given as its input.

Every pipe run, top-level or nested, is this workflow with a different `PipeRun`; leaves become
activities and nested controllers become child workflows with id ``<run id>/<step path>``.
"""

from __future__ import annotations

import asyncio
import builtins
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.converter import PayloadConverter
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    is_cancelled_exception,
)
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

with workflow.unsafe.imports_passed_through():
    from pydantic_core import from_json, to_json

    from durapipe._errors import ErrorType, RunCancelled, StepFailed
    from durapipe.adapters._plan import (
        WORKFLOW_NAME,
        activity_name,
        activity_options,
        run_workflow_id,
        summary,
    )
    from durapipe.runtime._agent_loop import ContinueAsNew
    from durapipe.runtime._approvals import (
        DECIDE_UPDATE,
        ApprovalDecision,
        ApprovalRequest,
        check_decision,
        timeout_decision,
    )
    from durapipe.runtime._budget import estimated
    from durapipe.runtime._calls import (
        WORKFLOW_VERSION,
        LeafCall,
        LeafResult,
        LlmCall,
        PipeRun,
        RunResult,
        StepFailure,
        StepRecord,
        failed_spend,
        spent_by,
        spent_in,
    )
    from durapipe.runtime._interpret import CallParts, Interpreter
    from durapipe.runtime._spend import spends
    from durapipe.runtime._steps import ASKS_WHEN_NEEDED
    from durapipe.spec import Pipeline
    from durapipe.spec._kinds import kinds_generation
    from durapipe.spec._messages import end_loan, lend_wire_pipe
    from durapipe.spec._size import RunSize
    from durapipe.workflows._caps import (
        capped_budget,
        estimate,
        may_cap_spend,
        run_budget,
        steps_allowed,
    )
    from durapipe.workflows._details import StepEvent, details_line
    from durapipe.workflows._failures import (
        cancelled_child,
        cancelled_run,
        failed_attempt,
        failure_cause,
        failure_details,
    )
    from durapipe.workflows._patches import (
        CANCEL_ENDS_AGENT_PATCH,
        CANCEL_HOLDS_PATCH,
        CANCELLED_RUN_SPEND_PATCH,
        CANCELLED_SPEND_PATCH,
        ESTIMATES_PATCH,
        FAILED_SPEND_PATCH,
        IN_FORCE,
        PAUSED_ASK_PATCH,
        START_PAUSED_PATCH,
        TOTALS_CHOSEN,
        TOTALS_EVERY_PATCH,
        TOTALS_FROM_START_PATCH,
    )
    from durapipe.workflows._refusals import RunInputError, input_problem, refuse_if_newer
    from durapipe.workflows._search import PIPE_ONLY_AT_START, has_totals, run_totals

STEPS_QUERY = "durapipe.steps"
JSON_PLAIN = b"json/plain"
WAITING_QUERY = "durapipe.waiting"
# Whether the run is paused: `pause` and `resume` ask it first, so they can say when there is
# nothing to do. A query records nothing in the history (replays of kept histories are unchanged).
PAUSED_QUERY = "durapipe.paused"
PAUSE_SIGNAL = "durapipe.pause"
RESUME_SIGNAL = "durapipe.resume"
STEP_FAILED = ErrorType.STEP_FAILED
BAD_DECISION = ErrorType.BAD_DECISION
# Agent turns per run before continue-as-new even if Temporal does not suggest it yet: keeps every
# run's history (each turn's input carries the transcript) well under Temporal's limits.
AGENT_TURNS_PER_RUN = 25
# A top-level run's totals (search attributes) are upserted when a step finishes at least this long
# after the last upsert, and always when the run ends: an upsert is one history event (and a billed
# action on Temporal Cloud), which per step would be the largest cost durapipe adds to a leaf.
TOTALS_EVERY = timedelta(seconds=2)


def _pipe_run(raw: RawValue, run_id: str | None = None) -> tuple[PipeRun, _SpecParts]:
    """The run's input decoded as the data converter decodes a `PipeRun` (same bytes, same model),
    and the parts kept for its spec (see `_KEPT_SPECS`); with ``run_id`` in place of the one the
    input names (a top-level run's workflow id, see `PipeWorkflow.run`).

    Raises:
        NewerRunError: the run asks for a newer workflow version than this code has, whether or not
            its input decodes (a newer version may add fields, which ``extra="forbid"`` refuses).
    """
    data, key = _spec_key(raw)
    kept = _KEPT_SPECS.get(key) if key is not None else None
    run = _with_kept_spec(data, kept[0], run_id) if kept is not None else None
    if run is None:
        converter = workflow.payload_converter()
        try:
            run = converter.from_payload(raw.payload, PipeRun)
        except RestrictedWorkflowAccessError:
            raise  # the sandbox's check on this code (see `SandboxedPipeWorkflow`), not the input
        except Exception as err:
            # Only on a failed decoding is the version read on its own: a second decoding of every
            # input would cost each run's workflow tens of µs for nothing.
            refuse_if_newer(*_version_of(converter, raw))
            raise RunInputError(
                f"the run's input does not decode on this worker (durapipe workflow version "
                f"{WORKFLOW_VERSION}): {input_problem(err)}"
            ) from None
        if key is not None:
            kept = _keep(key, run.spec)
        if run_id is not None:
            run = run.model_copy(update={"run_id": run_id})
    refuse_if_newer(run.workflow_version, run.run_id)
    return run, kept[1] if kept is not None and kept[0] is run.spec else _SpecParts()


def _keep(key: tuple[int, bytes], spec: Pipeline) -> tuple[Pipeline, _SpecParts]:
    """Keep ``spec`` under ``key`` (unless another thread kept one first: that one is returned)."""
    if len(_KEPT_SPECS) >= SPECS_KEPT:
        _KEPT_SPECS.clear()  # a worker of many pipelines starts again: the cache only saves work
    return _KEPT_SPECS.setdefault(key, (spec, _SpecParts()))


class _SpecParts:
    """What the runs of one spec object work out from it alone: their pipes' activity options,
    their calls' parts (see `Interpreter`) and their pipes' sizes (`RunSize`)."""

    __slots__ = ("call_parts", "options", "size")

    def __init__(self) -> None:
        self.options = _ActivityOptions()
        self.call_parts: dict[str, CallParts] = {}
        self.size: RunSize | None = None  # made by the first run (it needs the spec)


# Specs decoded by this worker, by their JSON (and the kinds known when decoded), with their parts.
# A worker runs many runs of few pipelines, and validating a run's spec was most of decoding its
# input; a spec is frozen, so one object serves every run whose input carries the same spec, and
# its parts are made once per worker instead of once per run (a run of one llm step spent ~85 µs
# on them). A run reads only its spec, so sharing it changes no command. Thread-safe: workflows
# run on several threads, and dict reads and writes are atomic.
SPECS_KEPT = 64
# A spec longer than this is decoded per run, not kept: a client's specs cannot make the cache hold
# more than SPECS_KEPT * SPEC_BYTES_KEPT of keys (8 MiB), however large the inputs it sends.
SPEC_BYTES_KEPT = 128 * 1024
_KEPT_SPECS: dict[tuple[int, bytes], tuple[Pipeline, _SpecParts]] = {}


def _spec_key(raw: RawValue) -> tuple[dict[str, Any], tuple[int, bytes] | None]:
    """The input as JSON data, and the key of its spec in `_KEPT_SPECS` (None: not JSON data)."""
    payload = raw.payload
    if payload.metadata.get("encoding") != JSON_PLAIN:
        return {}, None
    try:
        data = from_json(payload.data)
        spec = to_json(data["spec"])
    except Exception:  # not an input this code reads: the converter's decoding says why
        return {}, None
    if len(spec) > SPEC_BYTES_KEPT:
        return data, None
    # A kind registered (or forgotten) later reads a pipe of it differently.
    return data, (kinds_generation(), spec)


def _with_kept_spec(
    data: dict[str, Any], spec: Pipeline, run_id: str | None = None
) -> PipeRun | None:
    """The run ``data`` describes with ``spec`` (its own spec, decoded before) and ``run_id`` (if
    given), or None when the rest does not decode (the converter's decoding then says why, or
    refuses a newer run). Setting the run id here spares a copy of the run (`model_copy`)."""
    fields = {**data, "spec": spec}
    if run_id is not None:
        fields["run_id"] = run_id
    try:
        return PipeRun.model_validate(fields)
    except Exception:
        return None


def _version_of(converter: PayloadConverter, raw: RawValue) -> tuple[int, str]:
    """The ``workflow_version`` and run id an input names, read without the rest of `PipeRun`."""
    run_id = workflow.info().workflow_id
    try:
        data = converter.from_payload(raw.payload, dict[str, Any])
    except Exception:  # not even an object: the PipeRun decoding's error says what is wrong
        return 0, run_id
    version, named = data.get("workflow_version"), data.get("run_id")
    return (
        version if isinstance(version, int) else 0,
        named if isinstance(named, str) else run_id,
    )


class _Control:
    """A workflow's control state: paused or not, steps waiting for a human, running children."""

    def __init__(self) -> None:
        self.paused = False
        self.signalled = False  # a pause or resume arrived (it overrides a start paused)
        self.waiting: dict[str, ApprovalRequest] = {}
        self.decisions: dict[str, ApprovalDecision] = {}
        self.children: dict[str, workflow.ChildWorkflowHandle[Any, RunResult]] = {}

    async def forward(self, signal: str) -> None:
        """Pass a pause or resume on to the running children, so it holds for the whole run."""
        for handle in list(self.children.values()):
            try:
                await handle.signal(signal)
            except Exception:  # the child ended meanwhile: nothing left to pause or resume
                workflow.logger.debug("could not forward %s to %s", signal, handle.id)


# Outside Temporal's sandbox: the sandbox guards workflow code users write, and durapipe's users
# write none (their code runs in activities; templates run in Jinja's own sandbox). Entering the
# sandbox costs about a tenth of a millisecond per payload of every workflow task, the largest cost
# durapipe added per leaf. `SandboxedPipeWorkflow` keeps the sandbox as a check on this code: the
# test suite replays every recorded history and runs every controller in it.
@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class PipeWorkflow:
    """Runs one pipe of a run; answers the ``durapipe.steps``, ``durapipe.waiting`` and
    ``durapipe.paused`` queries, the ``durapipe.pause`` / ``durapipe.resume`` signals and the
    ``durapipe.decide`` update."""

    def __init__(self) -> None:
        self._interpreter: Interpreter | None = None
        self._control = _Control()
        self._run: PipeRun | None = None
        self._runtime: _TemporalRuntime | None = None

    @workflow.run
    async def run(self, raw: RawValue) -> RunResult:
        """Run the pipe; fail with type ``durapipe.StepFailed`` naming the step that failed.

        The input arrives undecoded (a `PipeRun` payload) so that a run started by a newer
        durapipe is refused by its version before a field this code lacks fails its decoding.
        """
        info = workflow.info()
        # A scheduled run's workflow id gets a timestamp suffix its stored input cannot know.
        run, parts = _pipe_run(raw, info.workflow_id if info.parent is None else None)
        run = await capped_budget(run, workflow.patched) if may_cap_spend(info, run) else run
        self._run = run
        if run.paused and info.parent is not None and not self._control.signalled:
            self._control.paused = True  # started paused by its parent (`START_PAUSED_PATCH`)
        runtime = self._runtime = _TemporalRuntime(self._control, run, parts.options)
        if parts.size is None:
            parts.size = RunSize(run.spec)
        self._interpreter = runtime.interpreter = Interpreter(
            run, runtime, parts.call_parts, parts.size
        )
        runtime.publish_totals()
        try:
            result = await self._interpreter.execute()
        except ContinueAsNew as new:
            # Asked only once a cancellation arrived, as `step_starting` asks its own patch.
            if workflow.cancellation_reason() is not None and runtime.patched(
                CANCEL_ENDS_AGENT_PATCH
            ):
                runtime.publish_totals(final=True)
                raise CancelledError("the run was cancelled") from None
            workflow.continue_as_new(run.model_copy(update={"resume": new.resume}))
        except StepFailed as err:
            runtime.publish_totals(final=True)
            details = StepFailure.of(err).model_dump(mode="json")
            raise ApplicationError(
                str(err), details, type=STEP_FAILED, non_retryable=True
            ) from None
        except RunCancelled as err:
            runtime.publish_totals(final=True)
            interpreter = self._interpreter
            if (
                info.parent is not None
                and spends(interpreter.usage)
                and runtime.patched(CANCELLED_RUN_SPEND_PATCH)
            ):  # what it spent reaches its parent in a failure's details only
                kind = run.spec.pipes[run.pipe].kind
                raise cancelled_run(err, kind, interpreter.snapshot()) from None
            raise CancelledError(str(err)) from None
        runtime.publish_totals(final=True)
        return result

    def current_details(self) -> str | None:
        """The run's current details in the Temporal UI, None before its first step (the
        plugin's `DetailsInterceptor` answers them: see `durapipe.workflows._details`)."""
        runtime = self._runtime
        if runtime is None or runtime.step_event is None:
            return None
        return details_line(runtime.run.pipe, runtime.step_event)

    @workflow.query(name=STEPS_QUERY)
    def steps(self) -> list[StepRecord]:
        """The step records so far (nested runs that finished are included)."""
        return self._interpreter.snapshot() if self._interpreter else []

    @workflow.query(name=WAITING_QUERY)
    def waiting(self) -> list[ApprovalRequest]:
        """The steps of this workflow waiting for a human decision."""
        return list(self._control.waiting.values())

    @workflow.query(name=PAUSED_QUERY)
    def paused(self) -> bool:
        """Whether the run is paused (no new step starts until resumed)."""
        return self._control.paused

    @workflow.signal(name=PAUSE_SIGNAL)
    async def pause(self) -> None:
        """Hold the run: steps in flight finish, no new step starts until resumed."""
        self._control.paused = self._control.signalled = True
        await self._control.forward(PAUSE_SIGNAL)

    @workflow.signal(name=RESUME_SIGNAL)
    async def resume(self) -> None:
        """Let a paused run start steps again."""
        self._control.paused, self._control.signalled = False, True
        await self._control.forward(RESUME_SIGNAL)

    @workflow.update(name=DECIDE_UPDATE)
    async def decide(self, decision: ApprovalDecision) -> str:
        """Approve (possibly with edited data) or reject a waiting approval step."""
        if decision.step in self._control.decisions or decision.step not in self._control.waiting:
            raise ApplicationError(f"step '{decision.step}' was already decided", type=BAD_DECISION)
        request = self._control.waiting[decision.step]
        try:
            checked = check_decision(request, decision, self._spec())
        except ValueError as err:
            raise ApplicationError(str(err), type=BAD_DECISION) from None
        self._control.decisions[decision.step] = checked
        return "approved" if checked.approved else "rejected"

    @decide.validator
    def _check_decision(self, decision: ApprovalDecision) -> None:
        request = self._control.waiting.get(decision.step)
        if request is None:
            raise ApplicationError(self._not_waiting(decision.step), type=BAD_DECISION)
        try:
            check_decision(request, decision, self._spec())
        except ValueError as err:
            raise ApplicationError(str(err), type=BAD_DECISION) from None

    def _spec(self) -> Any:
        assert self._run is not None  # updates are only accepted once the run has started
        return self._run.spec

    def _not_waiting(self, step: str) -> str:
        records = {r.path: r for r in self._interpreter.snapshot()} if self._interpreter else {}
        waiting = ", ".join(self._control.waiting) or "none"
        run_id = self._run.run_id if self._run else workflow.info().workflow_id
        if step not in records:
            return f"run '{run_id}' has no step '{step}' (steps waiting for a decision: {waiting})"
        return (
            f"step '{step}' of run '{run_id}' is not waiting for a decision "
            f"(it is {records[step].status}; steps waiting: {waiting})"
        )


class _TemporalRuntime:
    """Sends leaves to activities and nested controllers to child workflows; holds the pause gate,
    approvals and the budget of this workflow.

    It also keeps the run readable while it goes: the workflow's current details name the running
    step, and a top-level run upserts its totals as search attributes (see `TOTALS_EVERY`).
    """

    def __init__(
        self, control: _Control, run: PipeRun, options: _ActivityOptions | None = None
    ) -> None:
        self.control = control
        self.run = run
        self.budget = run_budget(run, self.patched)
        # Shared by the runs of one spec (see `_KEPT_SPECS`).
        self._options = options or _ActivityOptions()
        self.interpreter: Interpreter | None = None
        # How often totals are upserted; None: after every step (runs recorded before the patch).
        self._every: timedelta | None = None
        self._published: datetime | None = None
        self._stale = False
        # Off: the run upserts nothing, ever (its client chose; only version 3 and later can).
        self.searchable = run.searchable_totals or run.workflow_version < TOTALS_CHOSEN
        # `now` of the activation at workflow time `_now_ns` (see `now`).
        self._now_ns: int | None = None
        self._now = datetime.min
        # The latest step event, which the run's current details name (None before its first).
        self.step_event: StepEvent | None = None

    async def leaf(self, call: LeafCall) -> LeafResult:
        try:
            return await self.budget.spend(call, self._estimate, self._activity)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise  # the cost estimate itself failed: the run fails with its error
            raise RunCancelled("the run was cancelled", path=call.path) from None

    async def _estimate(self, call: LeafCall) -> float | None:
        """A call's worst case (a local activity), or None when it is not estimated: an agent's
        turn and an image step only in runs since `ESTIMATES_PATCH` (asked only under a budget,
        at such a call)."""
        if isinstance(call, LlmCall):
            return await estimate(call)
        if estimated(call) and self.patched(ESTIMATES_PATCH):
            return await estimate(call)
        return None

    async def child(self, run: PipeRun) -> RunResult:
        budget = self.budget.child(run.spec.pipes[run.pipe].budget_usd)
        try:
            result = await self._child(run.model_copy(update=budget))
        except StepFailed as err:
            # What the failed child's steps paid for counts here too (its records say it).
            spent = spent_by(StepRecord.model_validate(s) for s in err.steps)
            err.spent = spent if spends(spent) and self.patched(FAILED_SPEND_PATCH) else None
            if err.spent is not None:
                self.budget.add(err.spent)
            raise
        self.budget.add(result.usage)
        return result

    async def _child(self, run: PipeRun) -> RunResult:
        kind = run.spec.pipes[run.pipe].kind
        # Asked only by a run paused as it starts a child, so other runs' histories carry no marker.
        paused = self.control.paused and self.patched(START_PAUSED_PATCH)
        if paused:
            run = run.model_copy(update={"paused": True})
        try:
            handle = await workflow.start_child_workflow(
                WORKFLOW_NAME,
                run,
                id=run_workflow_id(run),
                result_type=RunResult,
                static_summary=f"{kind} {run.path}",
            )
            self.control.children[handle.id] = handle
            try:
                if self.control.paused != paused:  # paused or resumed while it was starting
                    await handle.signal(PAUSE_SIGNAL if self.control.paused else RESUME_SIGNAL)
                result: RunResult = await handle
                return result
            finally:
                self.control.children.pop(handle.id, None)
        except asyncio.CancelledError:
            raise RunCancelled("the run was cancelled", path=run.path) from None
        except ChildWorkflowError as err:
            if is_cancelled_exception(err):
                raise RunCancelled("the run was cancelled", path=run.path) from None
            cause = err.cause
            stopped = cancelled_child(cause, run.path)
            if stopped is not None:  # cancelled after its steps paid for something
                raise stopped from None
            if isinstance(cause, ApplicationError) and cause.type == STEP_FAILED and cause.details:
                raise StepFailure.model_validate(cause.details[0]).error() from None
            cause_type, message = failure_cause(cause)
            raise StepFailed(
                path=run.path, kind=kind, cause_type=cause_type, cause=message
            ) from None

    async def steps_allowed(self, run: PipeRun, asks: bool) -> tuple[int | None, bool]:
        try:
            allowed = await steps_allowed(run, asks, self.patched)
            # Paused while a run asked mid-run (only since version 5): hold what the answer would
            # start (a child run, its items) until resumed. Runs recorded before went on.
            top = not run.path and run.slice is None
            mid_run = asks and top and run.workflow_version >= ASKS_WHEN_NEEDED
            if self.control.paused and mid_run and self.patched(PAUSED_ASK_PATCH):
                await workflow.wait_condition(lambda: not self.control.paused)
            return allowed
        except (asyncio.CancelledError, ActivityError) as err:
            # Since version 5 a run may ask mid-run, while a step (a batch about to count its
            # items, a run about to lend a share) is in flight: that step is cancelled with it.
            # Runs of version 4 and older asked at their start, and ended as they did then.
            if run.workflow_version < ASKS_WHEN_NEEDED or not is_cancelled_exception(err):
                raise
            raise RunCancelled("the run was cancelled", path=run.path) from None

    async def approval(self, request: ApprovalRequest) -> ApprovalDecision:
        path = request.path
        self.control.waiting[path] = request.model_copy(
            update={"workflow_id": workflow.info().workflow_id, "waiting_since": workflow.now()}
        )
        try:
            await workflow.wait_condition(
                lambda: path in self.control.decisions, timeout=request.timeout_s
            )
        except builtins.TimeoutError:
            return timeout_decision(request)
        except asyncio.CancelledError:
            raise RunCancelled("the run was cancelled", path=path) from None
        finally:
            self.control.waiting.pop(path, None)
        return self.control.decisions.pop(path)

    def now(self) -> datetime:
        # Workflow time moves only between activations, and a step reads it up to three times in
        # one (a step's end, the totals' clock, the next step's start): `workflow.now()` is a pure
        # function of `workflow.time_ns()`, so it is made once per activation (~0.5 us a read).
        ns = workflow.time_ns()
        if ns != self._now_ns:
            self._now_ns, self._now = ns, workflow.now()
        return self._now

    async def step_starting(self, record: StepRecord) -> None:
        # Asked only once a cancellation arrived, so other runs' histories carry no marker.
        if workflow.cancellation_reason() is not None and self.patched(CANCEL_HOLDS_PATCH):
            raise RunCancelled("the run was cancelled", path=record.path)
        self._details(None, record)
        if not self.control.paused:
            return
        record.waiting_for = "resume: the run is paused"
        try:
            await workflow.wait_condition(lambda: not self.control.paused)
        except asyncio.CancelledError:
            raise RunCancelled("the run was cancelled", path=record.path) from None
        finally:
            record.waiting_for = None

    def step_finished(self, record: StepRecord) -> None:
        self._details(record.status, record)
        # `track` has just read the step's end from the workflow clock, in this activation: the
        # totals' clock is that instant, without a third read of it per step (~6k instructions).
        self.publish_totals(now=record.ended_at)

    def publish_totals(self, *, final: bool = False, now: datetime | None = None) -> None:
        """Upsert the run's totals as search attributes (top-level runs only): at its start
        (runs of version 0 whose client did not set them), when a step finishes `TOTALS_EVERY`
        after the last upsert, and at its end (``final``) if a step's totals (or, from version
        2, any totals) are not upserted yet. A run without searchable totals upserts none.
        ``now``: the workflow time of this activation, if the caller has read it."""
        interpreter = self.interpreter
        if interpreter is None or interpreter.run.path or not self.searchable:
            return
        now = now or self.now()
        pipe_set = self.run.workflow_version >= PIPE_ONLY_AT_START
        if self._published is None and pipe_set:
            # Version 2: the client set only the pipe. Upsert the totals 2 s in at the earliest,
            # and at the end in any case (stale), so a finished run always carries all five.
            self._every, self._published, self._stale = TOTALS_EVERY, now, True
            return
        if self._published is None:  # the run's first upsert: new runs take the patched path
            if self.patched(TOTALS_FROM_START_PATCH):
                self._every = TOTALS_EVERY
                if has_totals(workflow.info().typed_search_attributes):
                    self._published = now  # set by the client at the start, as of now
                    return
            else:
                self._every = TOTALS_EVERY if self.patched(TOTALS_EVERY_PATCH) else None
        elif not self._due(now, final=final):
            return
        workflow.upsert_search_attributes(
            run_totals(
                interpreter.run.pipe,
                interpreter.usage,
                interpreter.records.values(),
                with_pipe=not pipe_set,  # set at the start, never changed
            )
        )
        self._published, self._stale = now, False

    def _due(self, now: datetime, *, final: bool) -> bool:
        """Whether the totals are upserted now (after the run's first upsert)."""
        assert self._published is not None
        if self._every is None:  # recorded before the patch: after every step, not at the end
            return not final
        if final:
            return self._stale
        if now - self._published < self._every:
            self._stale = True
            return False
        return True

    def _details(self, status: str | None, record: StepRecord) -> None:
        """Keep the step event the run's current details name (see `durapipe.workflows._details`):
        ``status`` None when the step is starting."""
        interpreter = self.interpreter
        if interpreter is not None:
            self.step_event = (
                status, record.kind, record.path, interpreter.finished, len(interpreter.records)
            )  # fmt: skip

    def continue_as_new_suggested(self, turns: int) -> bool:
        return turns >= AGENT_TURNS_PER_RUN or workflow.info().is_continue_as_new_suggested()

    def patched(self, change: str) -> bool:
        if change in IN_FORCE.get(self.run.workflow_version, ()):
            return True  # the run was started with this change (no marker)
        return workflow.patched(change)

    async def _activity(self, call: LeafCall) -> LeafResult:
        name, options, wire = self._options.of(call)
        try:
            # The SDK serializes the call while it schedules it, inside start_activity.
            loan = lend_wire_pipe(call.pipe, wire)
            try:
                handle = workflow.start_activity(name, call, result_type=LeafResult, **options)
            finally:
                end_loan(loan)
            result: LeafResult = await handle
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise RunCancelled("the run was cancelled", path=call.path) from None
            cause_type, cause = failure_cause(err.cause)
            attempts = spent_in(failure_details(err))
            asked = workflow.cancellation_reason() is not None
            if cause_type == ErrorType.CANCELLED and asked and self.patched(CANCELLED_SPEND_PATCH):
                # Cancelled after it paid for an answer: the activity failed, to say what it paid
                # for (a cancelled activity's own details do not reach the workflow).
                stopped = RunCancelled("the run was cancelled", path=call.path)
                stopped.failed_attempts, stopped.spent = attempts, failed_spend(attempts)
                raise stopped from None
            failed = StepFailed(
                path=call.path,
                kind=call.pipe.kind,
                model=getattr(call.pipe, "model", None),
                cause_type=cause_type,
                cause=cause,
                attempts=failed_attempt(err, call),
            )
            if attempts and self.patched(FAILED_SPEND_PATCH):
                failed.failed_attempts, failed.spent = attempts, failed_spend(attempts)
            raise failed from None
        return result


class _ActivityOptions:
    """`activity_options` of a workflow's leaf calls, made once per pipe, with the pipe's wire form.

    Only the activity id and the summary differ between two calls of one pipe; the timeouts and
    the retry policy (objects the SDK only reads) are a pure function of the pipe, which a run's
    spec never changes. A batch item spent ~8 µs rebuilding them. So is the pipe's wire form
    (`CallBase.wire_pipe`), which each call's JSON carries: an agent's every turn and each of
    its tools' calls carry the same pipe.
    """

    def __init__(self) -> None:
        self._by_pipe: dict[str, tuple[object, str, dict[str, Any], dict[str, Any]]] = {}

    def of(self, call: LeafCall) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The activity name and ``start_activity`` keyword arguments of ``call``, and its
        pipe's wire form."""
        kept = self._by_pipe.get(call.pipe_name)
        if kept is None or kept[0] is not call.pipe:
            options = activity_options(call)
            wire = call.wire_pipe()
            kept = (call.pipe, activity_name(call), options, wire)
            self._by_pipe[call.pipe_name] = kept
            return kept[1], options, wire
        _, name, options, wire = kept
        return name, {**options, "activity_id": call.path, "summary": summary(call)}, wire


# A refused access fails the run at once, naming it, instead of retrying the workflow task forever.
@workflow.defn(
    name=WORKFLOW_NAME, sandboxed=True, failure_exception_types=[RestrictedWorkflowAccessError]
)
class SandboxedPipeWorkflow(PipeWorkflow):
    """`PipeWorkflow` in Temporal's sandbox, which refuses I/O, clocks and randomness in workflow
    code: workers run it when ``DURAPIPE_WORKFLOW_SANDBOX=on`` (a check while changing durapipe)."""

    @workflow.run
    async def run(self, raw: RawValue) -> RunResult:
        """Run the pipe (see `PipeWorkflow.run`)."""
        return await super().run(raw)
