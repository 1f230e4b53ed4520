"""The controller interpreter, shared by the Temporal workflow and the local runner.

It walks a controller spec over a working memory and hands every leaf to a `Runtime`: on Temporal the
runtime schedules activities and child workflows, locally it calls the same activity code in-process.
One interpreter means one set of semantics in both places. This module does no I/O and imports
nothing from Temporal, so it is safe inside the workflow sandbox.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from pydantic import BaseModel

from durapipe._errors import ErrorType, RunCancelled, StepFailed
from durapipe._settings import STEPS_ALWAYS_ALLOWED
from durapipe.runtime._agent_loop import AgentLoop
from durapipe.runtime._approvals import (
    approval_request,
    approved_value,
    waiting_line,
)
from durapipe.runtime._calls import (
    CallBase,
    FailedAttempt,
    LeafCall,
    PipeRun,
    RunResult,
    StepRecord,
    StepStatus,
    Usage,
)
from durapipe.runtime._controllers import run_batch, run_condition, run_parallel
from durapipe.runtime._host import Runtime
from durapipe.runtime._memory import join_path, lookup
from durapipe.runtime._steps import ASKS_WHEN_NEEDED, NESTED_AGENT_STEP_PATCH, Steps
from durapipe.spec import (
    AgentPipe,
    ApprovalPipe,
    SequencePipe,
    is_controller,
    kind_of,
    limits_for,
    subset,
)
from durapipe.spec._blob_refs import blob_input_problem
from durapipe.spec._kinds import Inline, InlineError
from durapipe.spec._size import RunSize
from durapipe.spec._spec import BatchPipe, ConditionPipe, ParallelPipe
from durapipe.spec._types import NESTING_WORDS, StructureSpec, optional_of, structures_used
from durapipe.spec._validate import call_problem

T = TypeVar("T")
# What a pipe's calls carry besides their inputs (see `Interpreter._call`).
CallParts = tuple[type[BaseModel], dict[str, StructureSpec] | None, Any]
# A step in one of these is over (`Interpreter.finished` counts them).
FINISHED = frozenset({"succeeded", "failed", "skipped"})
MISSING_VALUE = ErrorType.MISSING_VALUE
UNKNOWN_KIND = ErrorType.UNKNOWN_KIND
INVALID_SPEC = ErrorType.INVALID_SPEC
# A run's spec nesting structures and lists past `MAX_NESTING` fails when it starts since this
# change; before it, the run went on (its steps failing on a RecursionError from ~45 levels).
# Asked only by such a run, so other runs' histories carry no marker.
NESTING_PATCH = "durapipe.nesting-bound"


class Interpreter:
    """Runs one pipe of a run (a controller, or a single leaf) and keeps its step records."""

    def __init__(
        self,
        run: PipeRun,
        runtime: Runtime,
        call_parts: dict[str, CallParts] | None = None,
        size: RunSize | None = None,
    ) -> None:
        self.run = run
        self.runtime = runtime
        self.records: dict[str, StepRecord] = {}
        # How many of `records` are over (see `FINISHED`): the workflow's current details show it
        # twice per step, and counting it afresh scanned every record each time. Exact as long as
        # records change only through `plan`, `keep`, `set_status` and `_merge` (a test checks
        # that no other code assigns a status or a record).
        self.finished = 0
        self.usage = Usage()
        # Per pipe name: its kind's call message, the structures (None: the message has no such
        # field) and limits its calls carry: pure functions of the spec, which a run never
        # changes, and of the kind registry, which never replaces a kind; so a batch's items (a
        # sequence's steps) do not work them out again each. ``call_parts`` given: the parts kept
        # for this very spec object by a host that runs many runs of it (Temporal workers).
        self._call_parts = call_parts if call_parts is not None else {}
        # Its limit is set when the run starts (`execute`): the cap needs the spec checked first.
        # ``size``: the sizes of this very spec's pipes, kept by a host that runs many runs of it.
        self.steps = Steps(None, size if size is not None else RunSize(run.spec))

    def snapshot(self) -> list[StepRecord]:
        """The step records so far, in plan order (nested steps follow their parent step)."""
        return list(self.records.values())

    async def execute(self) -> RunResult:
        """Run the pipe to its end.

        Raises:
            StepFailed: a step failed after its retries; later steps are marked skipped.
        """
        problem = call_problem(self.run.spec, self.run.pipe)
        if problem and NESTING_WORDS in problem and not self.runtime.patched(NESTING_PATCH):
            problem = call_problem(self.run.spec, self.run.pipe, nesting=False)
        if problem is not None:  # a raw workflow input: validation never saw it
            kind = getattr(self.run.spec.pipes.get(self.run.pipe), "kind", "unknown")
            raise StepFailed(
                path=self.run.path or self.run.pipe,
                kind=kind,
                cause_type=INVALID_SPEC,
                cause=problem,
            )
        pipe = self.run.spec.pipes[self.run.pipe]
        if is_controller(pipe):  # a leaf's run is its one step: it cannot grow
            await self._count_steps(pipe.kind)
        if isinstance(pipe, SequencePipe):
            output = await self._sequence(pipe)
        elif isinstance(pipe, AgentPipe):
            output = await AgentLoop(self, pipe).run()
        elif isinstance(pipe, ParallelPipe):
            output = await run_parallel(self, pipe)
        elif isinstance(pipe, BatchPipe):
            output = await run_batch(self, pipe)
        elif isinstance(pipe, ConditionPipe):
            output = await run_condition(self, pipe)
        elif is_controller(pipe):  # a registered controller kind: no controller runs it here
            path = self.run.path or self.run.pipe
            self.plan(path, self.run.pipe)
            raise self.fail(path, pipe.kind, None, UNKNOWN_KIND, _cannot_run(self.run.pipe, pipe))
        else:
            path = self.run.path or self.run.pipe
            self.plan(path, self.run.pipe)
            output = await self.step(path, self.run.pipe, self.run.inputs)
        steps = self.steps
        held = steps.held if steps.limit is not None and not steps.whole else None
        return RunResult(output=output, usage=self.usage, steps=self.snapshot(), steps_held=held)

    async def _count_steps(self, kind: str) -> None:
        """Take this part's allowance from the runtime and count the steps it starts before any
        batch's items, or refuse them before any starts (see `durapipe.runtime.Steps`)."""
        size, name = self.steps.size, self.run.pipe
        # A run that reaches no batch cannot grow: one that small needs no word from the worker.
        asks = size.grows(name) or size.run(name) > STEPS_ALWAYS_ALLOWED
        if asks and self._top_level and self.run.workflow_version >= ASKS_WHEN_NEEDED:
            self.steps.provisional(STEPS_ALWAYS_ALLOWED, self._worker_cap)
        else:
            limit, whole = await self.runtime.steps_allowed(self.run, asks)
            self.steps.limit, self.steps.whole = limit, whole
        limit, whole = self.steps.limit, self.steps.whole
        # A nested agent's one step is its parent's, which counted it (a controller's run counts
        # only what is inside it either way); runs recorded before counted it here too.
        own_step = (
            limit is None
            or whole
            or not isinstance(self.run.spec.pipes[name], AgentPipe)
            or not self.runtime.patched(NESTED_AGENT_STEP_PATCH)
        )
        await self.steps.start(name, self.run.path or name, kind, own_step=own_step)

    @property
    def _top_level(self) -> bool:
        return not self.run.path and self.run.slice is None

    async def _worker_cap(self) -> int | None:
        limit, _ = await self.runtime.steps_allowed(self.run, True)
        return limit

    def plan(self, path: str, pipe_name: str) -> None:
        """Record step ``path`` (pipe ``pipe_name``) as pending, so a run's plan shows it before it runs."""
        kind = self.run.spec.pipes[pipe_name].kind
        self.keep(StepRecord(path=path, pipe=pipe_name, kind=kind))

    def keep(self, record: StepRecord) -> None:
        """Keep ``record`` in the run's records (in place of one kept for its path)."""
        kept = self.records.get(record.path)
        if kept is not None and kept.status in FINISHED:
            self.finished -= 1
        self.records[record.path] = record
        if record.status in FINISHED:
            self.finished += 1

    def set_status(self, record: StepRecord, status: StepStatus) -> None:
        """Set ``record``'s status (a kept record, or one a step runs with but does not keep)."""
        if self.records.get(record.path) is record:
            self.finished += (status in FINISHED) - (record.status in FINISHED)
        # What pydantic's ``__setattr__`` does for a field of a model that does not validate
        # assignments (see `_assign`), without its Python frames: twice a step, ~3k instructions.
        record.__dict__["status"] = status
        record.__pydantic_fields_set__.add("status")

    async def _sequence(self, pipe: SequencePipe) -> Any:
        memory = dict(self.run.inputs)
        paths = [join_path(self.run.path, step.step_name) for step in pipe.steps]
        for step, path in zip(pipe.steps, paths, strict=True):
            if step.pipe is not None:  # a binding step runs nothing and has no record
                self.plan(path, step.pipe)
        for index, (step, path) in enumerate(zip(pipe.steps, paths, strict=True)):
            try:
                if step.from_ is not None:
                    memory[step.result_name] = self.read(path, "bind", memory, step.from_)
                    continue
                assert step.pipe is not None  # a step is a binding or runs a pipe
                inputs = self.inputs_for(path, step.pipe, memory, step.inputs)
                memory[step.result_name] = await self.step(path, step.pipe, inputs)
            except (StepFailed, RunCancelled) as err:
                for later in paths[index + 1 :]:
                    if later in self.records:
                        self.set_status(self.records[later], "skipped")
                if isinstance(err, RunCancelled):
                    err.steps = self.snapshot()
                raise
        return _sequence_output(pipe, memory)

    def read(self, path: str, kind: str, memory: dict[str, Any], source: str) -> Any:
        """The value at working-memory path ``source``, or `StepFailed` naming step ``path``."""
        try:
            return lookup(memory, source)
        except KeyError as err:
            if path in self.records:
                raise self.fail(path, kind, None, MISSING_VALUE, str(err.args[0])) from None
            raise StepFailed(
                path=path, kind=kind, cause_type=MISSING_VALUE, cause=str(err.args[0])
            ) from None

    def inputs_for(
        self, path: str, pipe_name: str, memory: dict[str, Any], mapping: dict[str, str]
    ) -> dict[str, Any]:
        """The inputs of pipe ``pipe_name`` read from ``memory`` (by name, or as ``mapping`` says)."""
        target = self.run.spec.pipes[pipe_name]
        return {
            name: None
            if optional_of(type_ref) is not None
            and mapping.get(name, name).split(".")[0] not in memory
            else self.read(path, target.kind, memory, mapping.get(name, name))
            for name, type_ref in target.inputs.items()
        }

    async def step(self, path: str, pipe_name: str, inputs: dict[str, Any]) -> Any:
        """Run step ``path`` (pipe ``pipe_name``) on ``inputs``: a leaf call, a child run or an approval."""
        pipe = self.run.spec.pipes[pipe_name]
        # A step without a planned record (an item of a large batch) still gets one for the
        # runtime's hooks; it is just not kept.
        record = self.records.get(path) or StepRecord(path=path, pipe=pipe_name, kind=pipe.kind)
        kind = kind_of(pipe.kind)  # looked up once: `is_controller(pipe)` is its ``controller``
        if kind is not None and kind.controller:
            return await self.track(record, self._child(path, pipe_name, inputs, record))
        if isinstance(pipe, ApprovalPipe):
            return await self.track(record, self._approval(path, pipe_name, pipe, inputs, record))
        if kind is not None and kind.inline is not None:
            inline = self._inline(path, pipe, kind.inline, inputs, record)
            return await self.track(record, inline)
        return await self.track(record, self._leaf_step(path, pipe_name, inputs, record))

    async def _leaf_step(
        self, path: str, pipe_name: str, inputs: dict[str, Any], record: StepRecord
    ) -> Any:
        # The call is made inside the tracked work, so a kind that cannot run fails its record.
        return await self.leaf(self._call(path, pipe_name, inputs), record)

    async def track(self, record: StepRecord, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` as the step ``record`` describes, keeping its status and times.

        Raises:
            StepFailed: the step failed; the record says so and the error carries every record.
            RunCancelled: the run was cancelled before or while the step ran.
        """
        try:
            await self.runtime.step_starting(record)
        except BaseException as err:
            work.close()  # never awaited: close it so Python does not warn
            if isinstance(err, RunCancelled):
                self.set_status(record, "skipped")
            raise
        self.set_status(record, "running")
        _assign(record, started_at=self.runtime.now())
        try:
            output = await work
        except RunCancelled:
            self.set_status(record, "cancelled")
            _assign(record, ended_at=self.runtime.now())
            self.runtime.step_finished(record)
            raise
        except StepFailed as err:
            self.set_status(record, "failed")
            _assign(record, ended_at=self.runtime.now())
            # A failed child run is one attempt of this step; a failed leaf knows its own count.
            record.attempts = max(err.attempts, 1) if err.path == record.path else 1
            record.error_type, record.error = err.cause_type, err.cause
            self._merge(record.path, [StepRecord.model_validate(s) for s in err.steps])
            err.steps = self.snapshot()
            self.runtime.step_finished(record)
            raise
        self.set_status(record, "succeeded")
        _assign(record, ended_at=self.runtime.now())
        self.runtime.step_finished(record)
        return output

    async def leaf(self, call: LeafCall, record: StepRecord) -> Any:
        """Run one leaf call through the runtime and put what it spent on ``record`` (failed
        attempts included: the provider billed them)."""
        try:
            result = await self.runtime.leaf(call)
        except (StepFailed, RunCancelled) as err:
            if err.spent is not None:
                self._spent(record, err.spent, err.failed_attempts)
            raise
        usage = result.spent
        _assign(
            record,
            attempts=result.attempt,
            model=result.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            cache_hit=result.cache_hit,
        )
        if result.failed_attempts:
            record.failed_attempts = list(result.failed_attempts)
        if result.truncated:
            _assign(record, truncated=True)
            self._truncated_item(record)
        self.usage += usage
        return result.output

    def _truncated_item(self, record: StepRecord) -> None:
        """Mark the row of the batch whose item ``record`` is, when the batch keeps one row for all
        its items (the item has no record of its own to say its text answer was cut off)."""
        if self.records.get(record.path) is not record and record.path.endswith("]"):
            row = self.records.get(record.path[: record.path.rindex("[")] + "[*]")
            if row is not None:
                _assign(row, truncated=True)

    def _spent(self, record: StepRecord, usage: Usage, failed: list[FailedAttempt]) -> None:
        """Put what a failed step paid for on its record and in the run's spend."""
        _assign(
            record,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
        )
        if failed:
            record.failed_attempts = list(failed)
        self.usage += usage

    async def _approval(
        self,
        path: str,
        pipe_name: str,
        pipe: ApprovalPipe,
        inputs: dict[str, Any],
        record: StepRecord,
    ) -> Any:
        request = approval_request(self.run.run_id, path, pipe_name, pipe, inputs)
        self.set_status(record, "waiting")
        record.waiting_for = waiting_line(request)
        try:
            decision = await self.runtime.approval(request)
        finally:
            record.waiting_for = None
        record.attempts = 1
        return approved_value(request, decision)

    async def _inline(
        self, path: str, pipe: Any, inline: Inline, inputs: dict[str, Any], record: StepRecord
    ) -> Any:
        # An inline kind (compose) is computed here, in the workflow: no activity to schedule.
        record.attempts = 1
        try:
            return inline(pipe, inputs, self.structures_for([getattr(pipe, "output", "any")]))
        except InlineError as err:
            raise StepFailed(
                path=path, kind=pipe.kind, cause_type=err.type, cause=err.message
            ) from None

    async def _child(
        self, path: str, pipe_name: str, inputs: dict[str, Any], record: StepRecord
    ) -> Any:
        share, grows = self.steps.size.inside(pipe_name), self.steps.size.grows(pipe_name)
        await self.steps.room(grows=grows)
        allowance, loan = self.steps.lend(share, grows=grows, path=path)
        child = PipeRun(
            run_id=self.run.run_id,
            scope=self.run.scope,
            path=path,
            pipe=pipe_name,
            spec=subset(self.run.spec, pipe_name),
            inputs=inputs,
            workflow_version=self.run.workflow_version,
            steps_left=allowance,
        )
        try:
            result = await self.runtime.child(child)
        except RunCancelled as err:
            if err.spent is not None:  # cancelled after its steps paid for something
                self._spent(record, err.spent, [])
                self._merge(path, [StepRecord.model_validate(s) for s in err.steps])
            raise
        except StepFailed as err:
            self.steps.repay(share, loan, None)
            if err.spent is not None:  # what its steps paid for before it failed
                self._spent(record, err.spent, [])
            if any(StepRecord.model_validate(s).truncated for s in err.steps):
                self._truncated_item(record)
            raise
        self.steps.repay(share, loan, result.steps_held)
        if any(step.truncated for step in result.steps):  # a step of a batch item's own run
            self._truncated_item(record)
        record.attempts = 1
        record.input_tokens = result.usage.input_tokens
        record.output_tokens = result.usage.output_tokens
        record.cost_usd = result.usage.cost_usd
        self.usage += result.usage
        self._merge(path, result.steps)
        return result.output

    def _call(self, path: str, pipe_name: str, inputs: dict[str, Any]) -> LeafCall:
        pipe = self.run.spec.pipes[pipe_name]
        parts = self._call_parts.get(pipe_name)
        if parts is None:
            types = [*pipe.inputs.values(), getattr(pipe, "output", "any")]
            needed, limits = self.structures_for(types), limits_for(pipe, self.run.spec.limits)
            kind = kind_of(pipe.kind)
            if kind is None or kind.call is None:  # not kept: the step fails with this
                raise StepFailed(
                    path=path,
                    kind=pipe.kind,
                    cause_type=UNKNOWN_KIND,
                    cause=_cannot_run(pipe_name, pipe),
                )
            # A message without a ``structures`` field is not given one.
            carried = needed if "structures" in kind.call.model_fields else None
            parts = kind.call, carried, limits
            self._call_parts[pipe_name] = parts
        message, structures, limits = parts
        refused = blob_input_problem(pipe.inputs, inputs)
        if refused is not None:
            # A malformed blob reference fails its step at once: no attempt could read it.
            raise StepFailed(
                path=path,
                kind=pipe.kind,
                cause_type=ErrorType.INVALID_INPUT,
                cause=f"step '{path}' (pipe '{pipe_name}'), {refused[1]}",
            )
        data = {
            "run_id": self.run.run_id,
            "scope": self.run.scope,
            "path": path,
            "pipe_name": pipe_name,
            "inputs": inputs,
            "limits": limits,
        }
        if structures is not None:
            data["structures"] = structures
        data["pipe"] = pipe
        call = message.model_validate(data)
        assert isinstance(call, CallBase), f"kind '{pipe.kind}': its call must be a CallBase"
        return call

    def structures_for(self, type_refs: list[str]) -> dict[str, StructureSpec]:
        """The declared structures these types need (the part of the spec a call must carry)."""
        needed: set[str] = set()
        for type_ref in type_refs:
            needed |= structures_used(type_ref, self.run.spec.structures)
        return {n: s for n, s in self.run.spec.structures.items() if n in needed}

    def _merge(self, parent: str, nested: list[StepRecord]) -> None:
        """Place a child's records right after its parent step, replacing older copies."""
        if not nested:
            return
        merged: dict[str, StepRecord] = {}
        for path, record in self.records.items():
            merged[path] = record
            if path == parent:
                merged.update((r.path, r) for r in nested)
        self.records = merged
        self.finished = sum(1 for r in merged.values() if r.status in FINISHED)

    def fail(
        self, path: str, kind: str, model: str | None, cause_type: str, cause: str
    ) -> StepFailed:
        record = self.records[path]
        self.set_status(record, "failed")
        record.error_type, record.error = cause_type, cause
        return StepFailed(
            path=path,
            kind=kind,
            model=model,
            cause_type=cause_type,
            cause=cause,
            steps=self.snapshot(),
        )


def _assign(record: StepRecord, **values: Any) -> None:
    """Set fields of ``record`` (never its status: see `Interpreter.set_status`) as pydantic's
    ``__setattr__`` sets them on a model that does not validate assignments: the value, and the
    field marked as set.

    One update for a step's six figures instead of six trips through pydantic's ``__setattr__``
    and the handler it looks up (Python code, ~3 frames each): ~8k instructions a step less, on
    Temporal's workflow as in a local run.
    """
    record.__dict__.update(values)
    record.__pydantic_fields_set__.update(values)


def _sequence_output(pipe: SequencePipe, memory: dict[str, Any]) -> Any:
    if pipe.output is None:
        return memory[pipe.steps[-1].result_name]
    if isinstance(pipe.output, str):
        return lookup(memory, pipe.output)
    if isinstance(pipe.output, list):
        return {name: lookup(memory, name) for name in pipe.output}
    return {name: lookup(memory, path) for name, path in pipe.output.items()}


def _cannot_run(name: str, pipe: Any) -> str:
    # One sentence, at once: left to a workflow task, it would retry (and the run hang) forever.
    return (
        f"pipe '{name}' is of kind '{pipe.kind}', which this worker cannot run "
        "(no module registered a call message and an activity for it: see durapipe.spec.Kind)"
    )
