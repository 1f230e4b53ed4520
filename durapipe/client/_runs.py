"""Finding runs: durapipe's search attributes, listing runs (the dead-letter view), re-driving them.

A retried run keeps its run id: `retry` starts a new Temporal execution of the same workflow id
with the input the failed execution recorded. Checkpoint keys are scoped by run id, so every step
that succeeded before is served from the checkpoint store and only the failed step and the steps
after it call providers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from durapipe._errors import ConfigError, RunError, RunNotFound, StepFailed
from durapipe.adapters import WORKFLOW_NAME
from durapipe.client._connection import DEFAULT_ADDRESS
from durapipe.client._handle import SPEC_VERSION, RunHandle, run_error
from durapipe.client._stalls import QueuePollers, RunQueues
from durapipe.client._totals import totals_from_the_run
from durapipe.runtime import PipeRun
from durapipe.workflows._search import (
    COST_USD,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    PIPE,
    SEARCH_ATTRIBUTES,
    STEPS,
    start_totals,
)

_INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}
# What a user types after --status -> Temporal's ExecutionStatus in a visibility query.
RUN_STATUSES = {
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Canceled",
    "terminated": "Terminated",
    "timed-out": "TimedOut",
}


class RunSummary(BaseModel):
    """One run as the visibility store knows it: its pipe, status, and totals so far.

    For a failed run, ``failed_step`` is the path of the step that failed and ``error`` the
    cause's type and message. ``searchable_totals`` says whether the totals are the run's search
    attributes (what ``min_cost`` and the Temporal UI filter on); when not (a run started with
    searchable totals off, or one that has not upserted its first totals yet) they were read from
    the run itself: its ``durapipe.steps`` query while it runs, its result (or its failure) once
    it has ended. ``totals_known`` is False when the run could not tell (it was cancelled,
    terminated or timed out without searchable totals, or no worker answered the query): its
    totals then read 0 and mean nothing, and ``totals_unknown_why`` says why in one clause (e.g.
    "no worker polls task queue 'q'"). ``task_queue`` is the queue of the run's workflow (whose
    workers answer its query).
    """

    run_id: str
    pipe: str
    status: str
    started_at: datetime
    closed_at: datetime | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    steps: int = 0
    failed_step: str | None = None
    error: str | None = None
    searchable_totals: bool = True
    totals_known: bool = True
    totals_unknown_why: str | None = None
    task_queue: str = ""


async def missing_search_attributes(client: Client) -> list[str]:
    """durapipe's search attributes that the client's namespace does not have."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return [name for name in SEARCH_ATTRIBUTES if name not in response.custom_attributes]


async def check_search_attributes(client: Client) -> None:
    """Make sure runs can record their totals; workers call this before they start.

    Raises:
        ConfigError: an attribute is not registered (the message says how to register it).
    """
    missing = await missing_search_attributes(client)
    if missing:
        target = client.service_client.config.target_host
        address = "" if target == DEFAULT_ADDRESS else f" --address {target}"
        raise ConfigError(
            f"namespace '{client.namespace}' lacks durapipe's search attributes "
            f"({', '.join(missing)}); register them once with "
            f"`durapipe setup-search-attributes{address} --namespace {client.namespace}`"
        )


async def setup_search_attributes(client: Client) -> list[str]:
    """Register durapipe's search attributes on the client's namespace; returns those it added.

    Raises:
        ConfigError: the server refused (e.g. no permission to use the operator service).
    """
    missing = await missing_search_attributes(client)
    if not missing:
        return []
    request = AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={name: _INDEXED_TYPES[SEARCH_ATTRIBUTES[name]] for name in missing},
    )
    try:
        await client.operator_service.add_search_attributes(request)
    except RPCError as err:
        raise ConfigError(f"cannot register search attributes: {err.message}") from None
    return missing


def runs_query(
    *,
    pipe: str | None = None,
    status: str | None = None,
    min_cost: float | None = None,
    without_totals: bool = False,
) -> str:
    """The visibility query for top-level runs with these filters (``without_totals``: only runs
    whose totals are not search attributes, which ``min_cost`` cannot select).

    Raises:
        ConfigError: ``status`` is not one of `RUN_STATUSES`.
    """
    clauses = [f"WorkflowType = '{WORKFLOW_NAME}'", f"{PIPE.name} IS NOT NULL"]
    if pipe is not None:
        clauses.append(f"{PIPE.name} = '{_quoted(pipe)}'")
    if status is not None:
        if status not in RUN_STATUSES:
            raise ConfigError(f"status '{status}' is not one of {', '.join(RUN_STATUSES)}")
        clauses.append(f"ExecutionStatus = '{RUN_STATUSES[status]}'")
    if without_totals:
        clauses.append(f"{COST_USD.name} IS NULL")
    elif min_cost is not None:
        clauses.append(f"{COST_USD.name} >= {float(min_cost)!r}")
    return " AND ".join(clauses)


# Most runs without searchable totals `find_runs` reads for ``min_cost``, as a multiple of its
# ``limit`` (at least `SCAN_AT_LEAST`): their cost is known only by reading each run, so a scan
# for a few expensive runs among many cheap ones stops there and says so.
SCAN_PER_LIMIT = 10
SCAN_AT_LEAST = 100
# Runs read at once: a running run's query can wait `QUERY_TIMEOUT` for a worker that never
# answers, so reading them one after another made 50 such runs a silent 100 s.
READ_AT_ONCE = 16


class RunListing(BaseModel):
    """What `find_runs` found, and how far it looked.

    ``runs`` are the runs found, newest first. ``scanned`` counts the runs without searchable
    totals whose totals were read to apply ``min_cost`` (0 without it); ``scan_cut`` is True when
    the scan stopped at its bound (``scanned`` runs) before reaching the oldest such run, so an
    older one that costs enough is not in ``runs``.
    """

    runs: list[RunSummary]
    scanned: int = 0
    scan_cut: bool = False


async def list_runs(
    client: Client,
    *,
    pipe: str | None = None,
    status: str | None = None,
    min_cost: float | None = None,
    limit: int = 50,
) -> list[RunSummary]:
    """Top-level runs, newest first, filtered by pipe, status and least cost (`find_runs`'s runs).

    Example:
        >>> runs = await dp.list_runs(client, pipe="brief", min_cost=0.01)  # doctest: +SKIP

    Raises:
        ConfigError: a filter is wrong, or the namespace lacks durapipe's search attributes.
    """
    listing = await find_runs(client, pipe=pipe, status=status, min_cost=min_cost, limit=limit)
    return listing.runs


async def find_runs(
    client: Client,
    *,
    pipe: str | None = None,
    status: str | None = None,
    min_cost: float | None = None,
    limit: int = 50,
) -> RunListing:
    """Top-level runs, newest first, filtered by pipe, status and least cost, and how far
    ``min_cost`` looked among the runs without searchable totals.

    A run that was retried counts by its latest execution only, so a re-driven run leaves the
    dead-letter view (``status="failed"``). ``min_cost`` filters on the server the runs whose
    totals are search attributes; the runs whose totals are not (started with searchable totals
    off, or not upserted yet) are read by a second query, newest first, their totals read from
    each run and filtered here until ``limit`` match or `SCAN_PER_LIMIT` times ``limit`` (at
    least `SCAN_AT_LEAST`) were read (`RunListing.scan_cut`); one whose totals cannot be read is
    kept, with ``totals_known`` False (it could not be filtered). Totals are read `READ_AT_ONCE`
    runs at a time.

    Example:
        >>> found = await dp.client.find_runs(client, min_cost=0.01)  # doctest: +SKIP

    Raises:
        ConfigError: a filter is wrong, or the namespace lacks durapipe's search attributes.
    """
    pollers = QueuePollers(client)  # each queue's pollers asked once for the whole listing
    if min_cost is None:
        summaries, _, _ = await _listed(
            client, runs_query(pipe=pipe, status=status), limit, pollers
        )
        return RunListing(runs=summaries)
    # The runs without searchable totals first, then those with: a run whose first upsert lands
    # between the two queries is then in the second (it is in neither the other way round), and
    # one in both counts once, with its searchable totals.
    bound = max(limit * SCAN_PER_LIMIT, SCAN_AT_LEAST)
    unsearchable, scanned, cut = await _listed(
        client,
        runs_query(pipe=pipe, status=status, without_totals=True),
        limit,
        pollers,
        keep=lambda s: not s.totals_known or s.cost_usd >= min_cost,
        bound=bound,
    )
    searchable, _, _ = await _listed(
        client, runs_query(pipe=pipe, status=status, min_cost=min_cost), limit, pollers
    )
    ids = {s.run_id for s in searchable}
    summaries = searchable + [s for s in unsearchable if s.run_id not in ids]
    summaries.sort(key=lambda s: s.started_at, reverse=True)
    return RunListing(runs=summaries[:limit], scanned=scanned, scan_cut=cut)


async def _listed(
    client: Client,
    query: str,
    limit: int,
    pollers: QueuePollers,
    *,
    keep: Callable[[RunSummary], bool] | None = None,
    bound: int | None = None,
) -> tuple[list[RunSummary], int, bool]:
    """The summaries of the latest executions ``query`` finds that ``keep`` keeps, at most
    ``limit``, reading at most ``bound`` runs; with how many were read and whether ``bound``
    stopped the reading before the query's last run."""
    summaries: list[RunSummary] = []
    seen: set[str] = set()
    read = 0
    gate = asyncio.Semaphore(READ_AT_ONCE)

    async def summary_of(execution: WorkflowExecution) -> RunSummary | None:
        async with gate:
            if not await _is_latest(client, execution):
                return None
            return await _summary(client, execution, pollers)

    try:
        executions = aiter(client.list_workflows(query, page_size=max(limit, READ_AT_ONCE)))
        exhausted = False
        while not exhausted and len(summaries) < limit:
            # Read as many as are still needed (at least READ_AT_ONCE when filtering here).
            wanted = limit - len(summaries) if keep is None else max(limit, READ_AT_ONCE)
            if bound is not None:
                wanted = min(wanted, bound - read)
                if wanted <= 0:
                    break
            batch: list[WorkflowExecution] = []
            while len(batch) < wanted:
                try:
                    execution = await anext(executions)
                except StopAsyncIteration:
                    exhausted = True
                    break
                if execution.id not in seen:  # older executions of a retried run follow it
                    seen.add(execution.id)
                    batch.append(execution)
            read += len(batch)
            for summary in await asyncio.gather(*(summary_of(e) for e in batch)):
                if summary is not None and (keep is None or keep(summary)):
                    summaries.append(summary)
        cut = bound is not None and read >= bound and len(summaries) < limit and not exhausted
        if cut:  # the bound stopped the reading: is there a run after it?
            try:
                await anext(executions)
            except StopAsyncIteration:
                cut = False
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            # "invalid search attribute: DurapipePipe": said as a worker and `run` say it.
            await check_search_attributes(client)
        raise ConfigError(f"cannot list runs ({query}): {err.message}") from None
    return summaries[:limit], read, cut


async def describe_run(
    client: Client, run_id: str, *, pollers: QueuePollers | None = None
) -> RunSummary:
    """One run's summary (its latest execution): pipe, status, totals so far, where it failed.

    ``pollers``: the task queues' pollers and the run's description as asked for this command,
    shared with the other reads of one command (`RunHandle.steps`, `RunHandle.stalled`), so the
    command describes the run once; a new one if None.

    Raises:
        RunNotFound: no run with this id.
    """
    pollers = pollers or QueuePollers(client)
    try:
        description = await pollers.description(run_id)
    except RPCError as err:
        raise RunNotFound(f"no run '{run_id}': {err.message}", run_id=run_id) from None
    summary = await _summary(client, description, pollers)
    if not summary.pipe:  # a run recorded before its pipe was set at the start
        summary.pipe = str((await description.memo()).get("pipe", ""))
    return summary


async def _summary(
    client: Client, execution: WorkflowExecution, pollers: QueuePollers
) -> RunSummary:
    attrs = execution.typed_search_attributes
    failed_step, error, failure = await _failure(client, execution)
    summary = RunSummary(
        run_id=execution.id,
        pipe=attrs.get(PIPE) or "",
        status=_status_word(execution.status or WorkflowExecutionStatus.RUNNING),
        started_at=execution.start_time,
        closed_at=execution.close_time,
        cost_usd=attrs.get(COST_USD) or 0.0,
        input_tokens=attrs.get(INPUT_TOKENS) or 0,
        output_tokens=attrs.get(OUTPUT_TOKENS) or 0,
        steps=attrs.get(STEPS) or 0,
        failed_step=failed_step,
        error=error,
        task_queue=execution.task_queue or "",
    )
    if attrs.get(COST_USD) is None:
        # Not searchable (yet): the run itself knows its totals.
        summary.searchable_totals = False
        totals = await totals_from_the_run(client, execution, failure, pollers)
        if isinstance(totals, str):
            summary.totals_known = False
            summary.totals_unknown_why = totals
        else:
            usage, summary.steps = totals
            summary.cost_usd = usage.cost_usd
            summary.input_tokens = usage.input_tokens
            summary.output_tokens = usage.output_tokens
    return summary


async def _is_latest(client: Client, execution: WorkflowExecution) -> bool:
    """Whether ``execution`` is the latest of its workflow id (a retried run has several)."""
    if execution.status == WorkflowExecutionStatus.RUNNING:
        return True
    latest = await client.get_workflow_handle(execution.id).describe()
    return latest.run_id == execution.run_id


async def _failure(
    client: Client, execution: WorkflowExecution
) -> tuple[str | None, str | None, StepFailed | None]:
    """The failed step, the error and the `StepFailed` of a failed run (all None for any other
    run, and the last None when the failure is not a step's)."""
    if execution.status != WorkflowExecutionStatus.FAILED:
        return None, None, None
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    try:
        await handle.result(follow_runs=False)
    except WorkflowFailureError as err:
        failure = run_error(err, execution.id)
        if isinstance(failure, StepFailed):
            return failure.path, f"{failure.cause_type}: {failure.cause}", failure
        return None, str(failure), None
    except ConfigError as err:
        # With encryption on, failures are encoded too: a run this process cannot decrypt
        # (EncryptionError), or whose failure is in a payload store it does not see, is still
        # listed, saying why its error is not shown (one such run must not fail the list).
        return None, str(err), None
    return None, None, None


async def retry(client: Client, run_id: str) -> RunHandle:
    """Re-drive a failed run: a new execution of the same run id with the same input.

    Steps that succeeded before are served from checkpoints; the failed step and the steps after
    it run again. Wait for the outcome with `RunHandle.result`.

    Raises:
        RunNotFound: no run with that id.
        RunError: the run has not failed (nothing to retry).
    """
    handle = client.get_workflow_handle(run_id)
    try:
        description = await handle.describe()
        history = await handle.fetch_history()
    except RPCError as err:
        raise RunNotFound(f"no run '{run_id}': {err.message}", run_id=run_id) from None
    if description.status != WorkflowExecutionStatus.FAILED:
        state = _status_word(description.status or WorkflowExecutionStatus.RUNNING)
        raise RunError(f"run '{run_id}' is {state}, not failed; nothing to retry", run_id=run_id)
    started = history.events[0].workflow_execution_started_event_attributes
    [run] = await client.data_converter.decode(started.input.payloads, [PipeRun])
    # The failed execution's memo is the run's too: what its starter kept there (serve: the
    # MTHDS concepts and output name its results are read with, an Idempotency-Key's digest).
    kept = await description.memo()
    await client.start_workflow(
        WORKFLOW_NAME,
        run,
        id=run_id,
        task_queue=started.task_queue.name,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        static_summary=f"pipe {run.pipe} (retry)",
        memo={
            **kept,
            "pipe": run.pipe,
            "spec_version": SPEC_VERSION,
            "retry_of": description.run_id,
        },
        search_attributes=start_totals(run.pipe, run.workflow_version),
    )
    return RunHandle(client, run_id, queues=RunQueues.of(run, started.task_queue.name))


def _status_word(status: WorkflowExecutionStatus) -> str:
    by_temporal = {v: k for k, v in RUN_STATUSES.items()}
    camel = "".join(part.capitalize() for part in status.name.split("_"))
    return by_temporal.get(camel, status.name.lower())


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
