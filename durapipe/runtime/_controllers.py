"""The parallel, batch and condition controllers, run by the shared interpreter.

Concurrency is plain asyncio (``gather`` over coroutines), which Temporal's workflow event loop runs
deterministically, so the same code runs in a workflow and in-process. Whether a nested pipe becomes a
child workflow or an in-process call is the runtime's business, not this module's.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from durapipe._errors import ErrorType, StepFailed
from durapipe.runtime._calls import BatchSlice, PipeRun, StepRecord
from durapipe.runtime._host import Host
from durapipe.runtime._memory import join_path, lookup
from durapipe.runtime._steps import EXACT_SHARES_PATCH, KNOWN_LISTS_PATCH
from durapipe.spec import _templates, is_controller
from durapipe.spec._spec import (
    CONTINUE_OUTCOME,
    FAIL_OUTCOME,
    BatchPipe,
    ConditionPipe,
    ParallelPipe,
    outcome_key,
)

# Batches recorded before chunks ran concurrently replay their chunks one after another.
CONCURRENT_CHUNKS_PATCH = "durapipe.concurrent-chunks"

_ONE_SUCCEEDED = {"succeeded": 1}
_ONE_FAILED = {"failed": 1}

# A batch longer than this keeps one step record for all its items (counts per status) instead of
# one per item, so step records and query answers stay small.
ITEM_RECORD_LIMIT = 50


def error_info(err: StepFailed) -> dict[str, str]:
    """What a collected failure looks like in a pipe's output."""
    return {"type": err.cause_type, "message": err.cause, "path": err.path}


async def run_parallel(interp: Host, pipe: ParallelPipe) -> Any:
    """Run every branch at once; the output maps branch names to results (see `ParallelPipe`)."""
    memory = dict(interp.run.inputs)
    paths = {name: join_path(interp.run.path, name) for name in pipe.branches}
    for name, branch in pipe.branches.items():
        interp.plan(paths[name], branch.pipe)

    async def branch_output(name: str) -> Any:
        branch = pipe.branches[name]
        inputs = interp.inputs_for(paths[name], branch.pipe, memory, branch.inputs)
        return await interp.step(paths[name], branch.pipe, inputs)

    names = list(pipe.branches)
    _lanes(interp, [b.pipe for b in pipe.branches.values()])
    _known_needs(interp, pipe, paths, memory)
    # Every branch runs to its end, even after one failed: no work is abandoned half-way.
    outputs = await asyncio.gather(*(branch_output(n) for n in names), return_exceptions=True)
    results: dict[str, Any] = {}
    errors: dict[str, dict[str, str]] = {}
    for name, output in zip(names, outputs, strict=True):
        if isinstance(output, StepFailed):
            if pipe.on_error == "fail":
                output.steps = interp.snapshot()
                raise output  # the first failing branch in declaration order
            errors[name] = error_info(output)
        elif isinstance(output, BaseException):
            raise output
        else:
            results[name] = output
    return results if pipe.on_error == "fail" else {"results": results, "errors": errors}


def _lanes(interp: Host, branches: list[str]) -> None:
    """Set how many of a parallel's ``branches`` (their pipes) share its free steps: the nested
    runs among them (leaves borrow none), or since `EXACT_SHARES_PATCH` those that may grow (a
    run that cannot grow holds just the steps counted for it; see `durapipe.runtime.Steps`)."""
    steps = interp.steps
    nested = [b for b in branches if is_controller(interp.run.spec.pipes[b])]
    growing = sum(steps.size.grows(b) for b in nested)
    steps.lanes = max(1, len(nested))
    # Asked only where it changes a share: some nested runs fixed, some growing, under a cap.
    if (
        0 < growing < len(nested)
        and steps.limit is not None
        and interp.runtime.patched(EXACT_SHARES_PATCH)
    ):
        steps.lanes, steps.exact = growing, True


def _known_needs(
    interp: Host, pipe: ParallelPipe, paths: dict[str, str], memory: dict[str, Any]
) -> None:
    """Since `KNOWN_LISTS_PATCH`, note what each branch that is a batch over a list the parallel
    already holds (its items cannot grow) needs: it is lent just that (see `Steps.lend`)."""
    steps = interp.steps
    if steps.limit is None:
        return
    needs: dict[str, int] = {}
    for name, branch in pipe.branches.items():
        target = interp.run.spec.pipes[branch.pipe]
        if not isinstance(target, BatchPipe) or steps.size.grows(target.pipe):
            continue
        root, dot, rest = target.over.partition(".")
        try:  # the batch's list, where its step will read it from
            items = lookup(memory, branch.inputs.get(root, root) + dot + rest)
        except KeyError:
            continue  # the step fails when it reads it, naming it
        if isinstance(items, list):
            needs[paths[name]] = len(items) * steps.size.item(target)
    if needs and interp.runtime.patched(KNOWN_LISTS_PATCH):
        steps.known = needs


async def run_condition(interp: Host, pipe: ConditionPipe) -> Any:
    """Evaluate the expression and run the outcome it selects (see `ConditionPipe`)."""
    run = interp.run
    here = run.path or run.pipe
    memory = dict(run.inputs)
    try:
        value = _templates.evaluate(pipe.expression, memory)
    except _templates.TemplateError as err:
        raise StepFailed(
            path=here, kind=pipe.kind, cause_type=ErrorType.EXPRESSION_ERROR, cause=str(err)
        ) from None
    key = outcome_key(value)
    target = pipe.outcomes.get(key, pipe.default)
    if target is None:
        raise StepFailed(
            path=here,
            kind=pipe.kind,
            cause_type=ErrorType.NO_OUTCOME,
            cause=f"the value '{key}' of '{pipe.expression}' matches no outcome "
            f"({', '.join(pipe.outcomes)}) and there is no default",
        )
    if target == FAIL_OUTCOME:
        raise StepFailed(
            path=here,
            kind=pipe.kind,
            cause_type=ErrorType.CONDITION_FAILED,
            cause=f"'{pipe.expression}' is '{key}', whose outcome is 'fail'",
        )
    if target == CONTINUE_OUTCOME:
        return None
    path = join_path(run.path, target)
    interp.plan(path, target)
    return await interp.step(path, target, interp.inputs_for(path, target, memory, {}))


async def run_batch(interp: Host, pipe: BatchPipe) -> Any:
    """Map the pipe over the list, in chunks of child runs when it is long (see `BatchPipe`)."""
    run = interp.run
    here = run.path or run.pipe
    if run.slice is not None:
        items, offset = run.slice.items, run.slice.offset
    else:
        items = interp.read(here, pipe.kind, dict(run.inputs), pipe.over)
        offset = 0
        if not isinstance(items, list):
            raise StepFailed(
                path=here,
                kind=pipe.kind,
                cause_type=ErrorType.NOT_A_LIST,
                cause=f"'{pipe.over}' is {type(items).__name__}, not a list",
            )
    # Its items' steps count now, before any starts: a list too long is refused whole.
    per_item = interp.steps.size.item(pipe)
    over = f"the {len(items):,} items of '{pipe.over}'"
    if run.slice is not None:
        over = f"a chunk of {len(items):,} items"
    await interp.steps.count(
        len(items) * per_item, here, pipe.kind, f"batch pipe '{run.pipe}' over {over} would start"
    )
    summary: StepRecord | None = None
    if run.slice is not None or len(items) > min(ITEM_RECORD_LIMIT, pipe.chunk_size):
        kind = run.spec.pipes[pipe.pipe].kind
        summary = StepRecord(path=f"{here}[*]", pipe=pipe.pipe, kind=kind, status="running")
        summary.started_at = interp.runtime.now()
        interp.keep(summary)
    mapper = _BatchMapper(interp, pipe, here, summary)
    try:
        if len(items) > pipe.chunk_size:
            results, errors = await mapper.chunks(items, offset)
        else:
            results, errors = await mapper.items(items, offset)
    finally:
        if summary is not None:
            # Under on_error "collect" failed items are part of a successful batch's output: the
            # counts say how many failed, the row says whether the batch itself did.
            failed = pipe.on_error != "collect" and summary.counts.get("failed")
            interp.set_status(summary, "failed" if failed else "succeeded")
            summary.ended_at = interp.runtime.now()
    if run.slice is not None or pipe.on_error == "collect":
        return {"results": results, "errors": errors}
    return _joined(here, pipe, results) if pipe.flatten else results


def _joined(here: str, pipe: BatchPipe, results: list[Any]) -> list[Any]:
    """A flattened batch's output: the elements' lists joined in order (see `BatchPipe`)."""
    for index, result in enumerate(results):
        if not isinstance(result, list):
            raise StepFailed(
                path=f"{here}[{index}]",
                kind=pipe.kind,
                cause_type=ErrorType.NOT_A_LIST,
                cause=f"pipe '{pipe.pipe}' returned {type(result).__name__}, not a list to join",
            )
    return [item for result in results for item in result]


class _BatchMapper:
    """Maps a batch's pipe over items, directly or through chunk runs, and counts what happened."""

    def __init__(
        self, interp: Host, pipe: BatchPipe, here: str, summary: StepRecord | None
    ) -> None:
        self.interp = interp
        self.pipe = pipe
        self.here = here
        self.summary = summary
        part = interp.run.slice
        # A chunk maps its items with its share of the batch's max_concurrency.
        self.max_concurrency = (part and part.max_concurrency) or pipe.max_concurrency

    def _count(self, counts: dict[str, int]) -> None:
        if self.summary is not None:
            # In place, once per finished item: Counter arithmetic here cost 3.5 µs, this 0.26.
            kept = self.summary.counts
            for status, n in counts.items():
                if n > 0:
                    kept[status] = kept.get(status, 0) + n
            # The row stands for every item: it shows what they spent so far, as it goes.
            spent = self.interp.usage
            self.summary.input_tokens = spent.input_tokens
            self.summary.output_tokens = spent.output_tokens
            self.summary.cost_usd = spent.cost_usd

    def _chunk(self, steps: list[Any]) -> None:
        """Count a chunk run's items (its records ``steps``) in this batch's row, which says
        whether an item's text answer was cut off at its output limit, as the chunk's row does."""
        row = _row_of(steps, f"{self.here}[*]")
        self._count(row.counts if row is not None else {})
        if row is not None and row.truncated and self.summary is not None:
            self.summary.truncated = True

    async def items(self, items: list[Any], offset: int) -> tuple[list[Any], list[Any]]:
        """Run the pipe once per item, ``max_concurrency`` at a time."""
        interp, pipe = self.interp, self.pipe
        paths = [f"{self.here}[{offset + i}]" for i in range(len(items))]
        if self.summary is None:
            for path in paths:
                interp.plan(path, pipe.pipe)
        memory = dict(interp.run.inputs)
        results: list[Any] = [None] * len(items)
        failures: dict[int, StepFailed] = {}
        pending = iter(range(len(items)))

        async def worker() -> None:
            for index in pending:  # the shared iterator hands each index to one worker
                if failures and pipe.on_error == "fail":
                    return  # fail fast: start nothing new; running items finish
                item_memory = {**memory, pipe.item: items[index]}
                try:
                    inputs = interp.inputs_for(
                        paths[index], pipe.pipe, item_memory, pipe.pipe_inputs
                    )
                    results[index] = await interp.step(paths[index], pipe.pipe, inputs)
                    self._count(_ONE_SUCCEEDED)
                except StepFailed as err:
                    failures[index] = err
                    self._count(_ONE_FAILED)

        workers = min(self.max_concurrency, len(items))
        interp.steps.lanes = max(1, workers)
        await asyncio.gather(*(worker() for _ in range(workers)))
        if failures and pipe.on_error == "fail":
            for path in paths:
                record = interp.records.get(path)
                if record is not None and record.status == "pending":
                    interp.set_status(record, "skipped")
            first = failures[min(failures)]
            first.steps = interp.snapshot()
            raise first
        errors = [{"index": offset + i, **error_info(failures[i])} for i in sorted(failures)]
        return results, errors

    async def chunks(self, items: list[Any], offset: int) -> tuple[list[Any], list[Any]]:
        """Run the items in child runs of at most ``chunk_size`` items or chunks each.

        Several chunks run at once, each with its share of ``max_concurrency`` (the shares add
        up to it, so it holds across the whole batch and no chunk's slowest item holds back the
        rest of the list). Under a budget, chunks run one after another so the budget is checked
        against everything spent before each chunk starts.
        """
        interp, pipe = self.interp, self.pipe
        run = interp.run
        inputs = dict(run.inputs)
        if "." not in pipe.over:
            inputs.pop(pipe.over, None)  # the chunk carries its own items; do not copy the list
        bounds = split(len(items), pipe.chunk_size)
        shares: list[int | None] = [None]  # one chunk at a time with all of max_concurrency
        if run.budget_usd is None and interp.runtime.patched(CONCURRENT_CHUNKS_PATCH):
            shares = list(concurrency_shares(self.max_concurrency, len(bounds)))
        outputs: list[Any] = [None] * len(bounds)
        failures: dict[int, StepFailed] = {}
        pending = iter(enumerate(bounds))
        steps, per_item = interp.steps, interp.steps.size.item(pipe)
        steps.lanes = len(shares)
        # A chunk's items were counted when the batch started: only items that may grow (a batch
        # or an agent inside) need a share of the worker's cap beyond them.
        items_grow = steps.size.grows(pipe.pipe)

        async def slot(share: int | None) -> None:
            for index, (start, end) in pending:  # the shared iterator hands each chunk to one slot
                if failures:
                    return  # a chunk fails only when on_error is "fail": start nothing new
                part = BatchSlice(
                    offset=offset + start, items=items[start:end], max_concurrency=share
                )
                held = (end - start) * per_item  # counted when the batch started
                await steps.room(grows=items_grow)
                allowance, loan = steps.lend(held)
                chunk = PipeRun(
                    run_id=run.run_id,
                    scope=run.scope,
                    path=run.path,
                    pipe=run.pipe,
                    spec=run.spec,
                    inputs=inputs,
                    slice=part,
                    workflow_version=run.workflow_version,
                    steps_left=allowance,
                )
                try:
                    result = await interp.runtime.child(chunk)
                except StepFailed as err:
                    steps.repay(held, loan, None)
                    if err.spent is not None:  # what the chunk paid for before it failed
                        interp.usage += err.spent
                    self._chunk(err.steps)
                    failures[index] = err
                    continue
                steps.repay(held, loan, result.steps_held)
                interp.usage += result.usage
                self._chunk(result.steps)
                outputs[index] = result.output

        await asyncio.gather(*(slot(share) for share in shares))
        if failures:
            first = failures[min(failures)]
            first.steps = interp.snapshot()
            raise first
        results = [result for output in outputs for result in output["results"]]
        errors = [error for output in outputs for error in output["errors"]]
        return results, errors


def concurrency_shares(max_concurrency: int, chunks: int) -> list[int]:
    """``max_concurrency`` split into near-equal shares, one per chunk that runs at once.

    >>> concurrency_shares(100, 10), concurrency_shares(10, 4), concurrency_shares(3, 8)
    ([10, 10, 10, 10, 10, 10, 10, 10, 10, 10], [3, 3, 2, 2], [1, 1, 1])
    """
    slots = min(max_concurrency, chunks)
    return [max_concurrency // slots + (index < max_concurrency % slots) for index in range(slots)]


def split(length: int, chunk_size: int) -> list[tuple[int, int]]:
    """Contiguous ranges covering ``length`` items: at most ``chunk_size`` ranges, near-equal sizes.

    A range longer than ``chunk_size`` is split again by the chunk that runs it, so a list of any
    length nests ``log(length) / log(chunk_size)`` levels deep.
    """
    count = min(chunk_size, -(-length // chunk_size))
    bounds = [index * length // count for index in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _row_of(steps: list[Any], path: str) -> StepRecord | None:
    for step in steps:
        record = StepRecord.model_validate(step)
        if record.path == path:
            return record
    return None
