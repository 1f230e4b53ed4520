"""The durable run lifecycle, read from Temporal: a run's status and its result by run id.

Nothing here lives in the server's memory: the status comes from the workflow's description, the
output from the workflow's result, and the spec needed to shape the output from the workflow's own
input (its first history event). A restarted server answers exactly as the one that started the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from durapipe._errors import RunError, StepFailed
from durapipe._words import counted
from durapipe.adapters import WORKFLOW_NAME, pipe_run
from durapipe.client._handle import SPEC_VERSION, RunHandle, run_error
from durapipe.runtime import PipeRun, RunResult, StepRecord
from durapipe.serve._ended import EndedRuns
from durapipe.serve._memory import (
    MAIN_STUFF,
    concepts_memo,
    main_stuff,
    whole_memory,
    working_memory,
)
from durapipe.serve._methods import Method
from durapipe.serve._problems import ServeError, problem_item
from durapipe.serve._stalls import NO_WORKER, StalledRuns
from durapipe.workflows._search import start_totals

# Runs this server starts carry this prefix; it reads no other run of the namespace.
RUN_ID_PREFIX: Final = "mthds-"
# How long a client should wait before asking again when Temporal did not answer (Retry-After).
UNAVAILABLE_RETRY_AFTER_S: Final = 2
# The memo key of a run's MTHDS concepts (its output's and its inputs').
MTHDS_MEMO: Final = "mthds"
# The memo key of the digest of the request an Idempotency-Key started the run for (`Idempotency`).
REQUEST_MEMO: Final = "request"
# The middle of the id of a run an Idempotency-Key started: `mthds-keyed-<the key's hash>`.
KEYED: Final = "keyed"
# A results (and execute) body's list of the steps whose text answer was cut off at its limit.
TRUNCATED_STEPS: Final = "truncated_steps"
# As `durapipe run` waits: the run's queues are checked every second, and a run that has lacked a
# worker for 5 s (not a worker starting just after it) ends the wait.
STALL_CHECK_S: Final = 1.0
STALL_GRACE_S: Final = 5.0

_STATUS: Final = {
    WorkflowExecutionStatus.RUNNING: "RUNNING",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "RUNNING",
    WorkflowExecutionStatus.COMPLETED: "COMPLETED",
    WorkflowExecutionStatus.FAILED: "FAILED",
    WorkflowExecutionStatus.CANCELED: "CANCELLED",
    WorkflowExecutionStatus.TERMINATED: "TERMINATED",
    WorkflowExecutionStatus.TIMED_OUT: "TIMED_OUT",
}


async def start_run(
    client: Client,
    method: Method,
    pipe: str,
    inputs: dict[str, Any],
    *,
    task_queue: str,
    idempotency: Idempotency | None = None,
    output_name: str | None = None,
) -> RunHandle:
    """Start a durapipe run of ``pipe`` (a Temporal workflow), its MTHDS concepts in its memo.

    The memo is what `durapipe.start` writes (pipe, spec version) plus the concepts, so `durapipe
    show`, `durapipe runs` and the Temporal UI see an ordinary durapipe run. With an
    ``idempotency`` key the run id derives from the key alone and Temporal refuses a second
    workflow with that id, running or closed: a start sent again (after an answer was lost) gets
    the run the first one started instead of starting another, and a start under the same key
    with another request (another body or pipe) is refused (see `Idempotency`).
    ``output_name`` (the protocol's) is kept in the memo too: the slot of the working memory that
    holds the output.

    Raises:
        PipelineError: the inputs do not fit the pipe.
        ServeError: ``request.idempotency_conflict``, the key was used for another request.
    """
    if idempotency is not None:
        # A run this key started before keyed ids left out the pipe: it is still that key's run.
        earlier = await _memo_of(client, idempotency.run_id_before(pipe))
        if earlier is not None:
            return idempotency.same_request(client, idempotency.run_id_before(pipe), earlier)
    run_id = idempotency.run_id if idempotency else f"{RUN_ID_PREFIX}{pipe}-{uuid.uuid4().hex[:12]}"
    pipeline = whole_memory(method, pipe)
    run = pipe_run(pipeline, pipe, inputs, run_id=run_id)
    memo: dict[str, Any] = {"pipe": pipe, "spec_version": SPEC_VERSION}
    if idempotency is not None:
        memo[REQUEST_MEMO] = idempotency.request
    concepts = concepts_memo(method, pipe)
    if output_name:
        concepts["output_name"] = output_name
    if concepts:
        memo[MTHDS_MEMO] = concepts
    try:
        await client.start_workflow(
            WORKFLOW_NAME,
            run,
            id=run.run_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"pipe {pipe} (MTHDS protocol)",
            memo=memo,
            search_attributes=start_totals(pipe, run.workflow_version),
        )
    except WorkflowAlreadyStartedError:
        if idempotency is None:
            raise
        return idempotency.same_request(client, run_id, await _memo_of(client, run_id))
    return RunHandle(client, run.run_id)


@dataclass(frozen=True)
class Idempotency:
    """A start's ``Idempotency-Key`` and the request it was sent with.

    The key names one request (the IETF draft "The Idempotency-Key HTTP Header Field", as Stripe
    reads it): the run id derives from the key, and the run's memo keeps ``request``, a digest of
    the request (its body as canonical JSON, so neither whitespace nor the order of members
    counts, and the pipe it runs). A start sent again with the same key and request gets the same
    run; with another request, a ``request.idempotency_conflict`` problem and nothing started.
    The digest is keyed by the idempotency key (HMAC-SHA-256): the memo, readable by whoever reads
    the namespace, cannot confirm a guess of a request's inputs without the key.

    Example:
        >>> Idempotency.of("order-42", {"pipe_code": "summary", "inputs": {}}, "summary").run_id
        'mthds-keyed-3bf8b157c4238eefe5ae4a66'
    """

    key: str
    request: str

    @classmethod
    def of(cls, key: str, body: Mapping[str, Any], pipe: str) -> Idempotency:
        """The idempotency of a start under ``key`` of ``pipe``, whose request body is ``body``."""
        canonical = json.dumps(
            {"body": body, "pipe": pipe},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        digest = hmac.new(key.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256)
        return cls(key, digest.hexdigest()[:32])

    @property
    def _suffix(self) -> str:
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:24]

    @property
    def run_id(self) -> str:
        """The id of the one run this key may start: the key's alone, whatever the pipe."""
        return f"{RUN_ID_PREFIX}{KEYED}-{self._suffix}"

    def run_id_before(self, pipe: str) -> str:
        """The id this key gave a run of ``pipe`` before keyed ids left the pipe out."""
        return f"{RUN_ID_PREFIX}{pipe}-{self._suffix}"

    def same_request(
        self, client: Client, run_id: str, memo: Mapping[str, Any] | None
    ) -> RunHandle:
        """The handle of ``run_id``, which this key started, if it started it for this request.

        A run started before the digest was kept (its memo holds none) is taken as this request's.

        Raises:
            ServeError: ``request.idempotency_conflict``: the key's run was started for another
                request, or is gone (deleted past the namespace's retention while this start ran).
        """
        if memo is not None and memo.get(REQUEST_MEMO, self.request) == self.request:
            return RunHandle(client, run_id)
        used = (
            f"another request (run '{run_id}', pipe '{memo.get('pipe')}')"
            if memo is not None
            else f"run '{run_id}', since deleted (past the namespace's retention)"
        )
        raise ServeError(
            "request.idempotency_conflict",
            f"The Idempotency-Key was already used for {used}; nothing was started: send this "
            "request with a new Idempotency-Key (or the first request unchanged, to get its run).",
            extra={"pipeline_run_id": run_id},
        )


async def _memo_of(client: Client, run_id: str) -> Mapping[str, Any] | None:
    """The memo of run ``run_id``, or None when there is no such run."""
    try:
        description = await client.get_workflow_handle(run_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return await description.memo()


async def wait_result(handle: RunHandle, wait_s: float) -> RunResult:
    """The run's result, as ``execute`` waits for it: at most ``wait_s`` seconds, and only while
    the run can make progress.

    Raises:
        TimeoutError: the run still goes after ``wait_s`` seconds.
        ServeError: ``run.not_finished`` (its step: wait, then read the run; not: send the
            request again, which would start a second run), the run has been unable to make progress for
            `STALL_GRACE_S` (no worker polls a queue it needs, or its workflow task keeps
            failing); it stays queued, and the problem names it.
        RunError: the run ended another way than completing (see `RunHandle.result`).
    """
    result = asyncio.ensure_future(handle.result())
    stuck_since: float | None = None
    try:
        async with asyncio.timeout(wait_s):
            while not (await asyncio.wait({result}, timeout=STALL_CHECK_S))[0]:
                try:
                    why = await handle.stalled()
                except RPCError:
                    why = None  # the server cannot tell now: keep waiting rather than guess
                now = time.monotonic()
                stuck_since = None if why is None else stuck_since or now
                if stuck_since is not None and now - stuck_since >= STALL_GRACE_S:
                    raise ServeError(
                        "run.not_finished",
                        f"Run '{handle.run_id}' was started but cannot make progress: {why}. The "
                        "run stays queued and goes on once a worker polls the queue: follow it at "
                        f"/v1/runs/{handle.run_id}/status rather than sending the request again.",
                        extra={"pipeline_run_id": handle.run_id},
                    )
            return result.result()
    finally:
        result.cancel()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _not_found(run_id: str) -> ServeError:
    return ServeError(
        "run.not_found",
        f"No run '{run_id}' was started by this runner; use the pipeline_run_id that start returned.",
        params={"pipeline_run_id": run_id},
    )


async def run_status(
    client: Client,
    run_id: str,
    stalls: StalledRuns | None = None,
    ended: EndedRuns | None = None,
) -> dict[str, Any]:
    """The run's status (`RunRead`): id, pipe, status, start and end times, and its error; a
    running run that cannot make progress is ``degraded``, its ``degradation`` saying why (asked
    of ``stalls``; None: not asked). An ended run's error is read once per execution when
    ``ended`` keeps it.

    Raises:
        ServeError: no such run of this runner.
    """
    if not run_id.startswith(RUN_ID_PREFIX):
        raise _not_found(run_id)
    handle = client.get_workflow_handle(run_id)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise _not_found(run_id) from None
        raise _unavailable(err) from None
    status = _STATUS.get(description.status or WorkflowExecutionStatus.RUNNING, "RUNNING")
    memo = await description.memo()
    read: dict[str, Any] = {
        "pipeline_run_id": run_id,
        "pipe_code": memo.get("pipe"),
        "status": status,
        "created_at": _iso(description.start_time),
        "finished_at": _iso(description.close_time),
        "workflow_id": description.id,
        "workflow_run_id": description.run_id,
    }
    if stalls is not None:
        # The freshest description of the run: the stall check and the steps read it too.
        stalls.know(description)
    if status not in ("RUNNING", "COMPLETED"):
        read["error"] = (await _failure(client, read, ended)).document()
    if status == "RUNNING" and stalls is not None:
        # Still RUNNING, as a poll loop expects; the degradation says why nothing moves.
        degradation = await stalls.degradation(run_id, description.run_id)
        read["degraded"] = degradation is not None
        if degradation is not None:
            read["degradation"] = degradation
    return read


async def run_results(
    client: Client, read: dict[str, Any], ended: EndedRuns | None = None
) -> dict[str, Any] | None:
    """The results (`RunResults`) of the run whose status is ``read``, or None while it runs;
    read once per execution when ``ended`` keeps them.

    Raises:
        ServeError: the run ended without success (``run.failed``).
    """
    run_id = read["pipeline_run_id"]
    status = read["status"]
    if status == "RUNNING":
        return None
    if status != "COMPLETED":
        raise await _failure(client, read, ended)

    async def completed() -> dict[str, Any]:
        # Read at once (a completed run's result is there): `RunHandle.result` would ride out an
        # unreachable Temporal for minutes, this poll's client waiting; an RPCError is a 503.
        handle = client.get_workflow_handle(run_id, result_type=RunResult)
        return await results_body(client, run_id, await handle.result())

    if ended is None:
        return await completed()
    return await ended.read("results", read["workflow_run_id"], completed)


async def _failure(client: Client, read: dict[str, Any], ended: EndedRuns | None) -> ServeError:
    """`failure_problem` of the ended run whose status is ``read``, once per execution."""

    def ask() -> Awaitable[ServeError]:
        return failure_problem(client, read["pipeline_run_id"], read["status"])

    if ended is None:
        return await ask()
    return await ended.read("failure", read["workflow_run_id"], ask)


async def results_body(client: Client, run_id: str, result: RunResult) -> dict[str, Any]:
    """The results of a completed run: main stuff, working memory, pipe output, usage."""
    handle = client.get_workflow_handle(run_id)
    concepts = (await (await handle.describe()).memo()).get(MTHDS_MEMO) or {}
    run = await started_input(client, run_id)
    memory = working_memory(result.output, run.inputs, concepts)
    body: dict[str, Any] = {
        "pipeline_run_id": run_id,
        "main_stuff": main_stuff(memory),
        "main_stuff_name": memory["aliases"].get(MAIN_STUFF, MAIN_STUFF),
        "working_memory": memory,
        "pipe_output": {"working_memory": memory, "pipeline_run_id": run_id},
        "tokens_usages": [
            {
                "pipe_code": step.pipe,
                "inference_model_name": step.model,
                "nb_tokens_by_category": {"input": step.input_tokens, "output": step.output_tokens},
                "cost": float(step.cost_usd),
            }
            for step in result.steps
            if step.model and step.status == "succeeded"
        ],
    }
    mark_truncated(body, result.steps)
    return body


def mark_truncated(body: dict[str, Any], steps: list[StepRecord]) -> None:
    """Add `TRUNCATED_STEPS` to ``body`` when a step's text answer was cut off at its output limit
    and kept as it was cut (`StepRecord.truncated`): an extension member, sent only then, so a
    client that does not know it reads the body as before."""
    truncated = [step.path for step in steps if step.truncated]
    if truncated:
        body[TRUNCATED_STEPS] = truncated


async def started_input(client: Client, run_id: str) -> PipeRun:
    """The workflow input the run started with (its pipe, resolved spec and inputs), from history."""
    handle = client.get_workflow_handle(run_id)
    async for event in handle.fetch_history_events():
        started = event.workflow_execution_started_event_attributes
        [run] = await client.data_converter.decode(started.input.payloads, [PipeRun])
        return run  # type: ignore[no-any-return]
    raise _not_found(run_id)


async def failure_problem(client: Client, run_id: str, status: str) -> ServeError:
    """The ``run.failed`` problem of a run that ended without success, its cause nested."""
    cause = f"it ended as {status}"
    run_error_doc: dict[str, Any] | None = None
    records: list[StepRecord] = []
    try:
        await client.get_workflow_handle(run_id).result(follow_runs=False)
    except WorkflowFailureError as err:
        failure = run_error(err, run_id)
        cause = str(failure)
        step = failure.path if isinstance(failure, StepFailed) else None
        run_error_doc = {
            "type": "https://mthds.ai/errors/run.failed",
            "title": "A step of the run failed",
            "detail": cause,
            "code": "run.failed",
            "domain": "runtime",
            "retry": "no",
            "next_step": {"kind": "read_run", "detail": cause},
        }
        if step:
            run_error_doc["location"] = {"pipe": step}
        if isinstance(failure, StepFailed):
            records = [StepRecord.model_validate(s) for s in failure.steps]
    except (RunError, RPCError):
        pass
    extra: dict[str, Any] = {"pipeline_run_id": run_id}
    if run_error_doc:
        extra["run_error"] = run_error_doc
    # As on a succeeded run's results: the steps whose answers were cut before the run failed.
    mark_truncated(extra, records)
    return ServeError(
        "run.failed",
        f"The run '{run_id}' ended as {status}: {cause}.",
        params={"pipeline_run_id": run_id, "run_status": status},
        errors=[problem_item("run.failed", cause)],
        extra=extra,
    )


def _unavailable(err: RPCError) -> ServeError:
    return ServeError(
        "runtime.unavailable",
        f"Temporal cannot be reached right now ({err.message}); the run goes on, ask again shortly.",
        extra={"retry_after": UNAVAILABLE_RETRY_AFTER_S},
    )


def temporal_lost(err: RPCError, request: str) -> ServeError:
    """The ``runtime.unavailable`` problem of a request (``"GET /v1/runs/x/results"``) that met
    Temporal down or unreachable part way through (a result or a history read, a lookup)."""
    return ServeError(
        "runtime.unavailable",
        f"Temporal did not answer {request} ({err.status.name}: {err.message}); a run already "
        "started goes on: ask again shortly (with the same Idempotency-Key for a start).",
        extra={"retry_after": UNAVAILABLE_RETRY_AFTER_S},
    )


async def _steps(
    client: Client, read: dict[str, Any], stalls: StalledRuns | None, ended: EndedRuns | None
) -> list[StepRecord]:
    """The step records of the run whose status is ``read``: a running run's from its query, with
    the stall check's answers (``stalls``: the status read's description, the queues' pollers);
    an ended run's from its result, once per execution when ``ended`` keeps them."""
    handle = RunHandle(client, read["pipeline_run_id"])
    if read["status"] == "RUNNING" or ended is None:
        return await handle.steps(pollers=None if stalls is None else stalls.pollers())
    return await ended.read("steps", read["workflow_run_id"], handle.steps)


_PROGRESS_STATUS: Final = {
    "RUNNING": "running",
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "TIMED_OUT": "failed",
    "CANCELLED": "canceled",
    "TERMINATED": "canceled",
}
_STEP_STATUS: Final = {
    "pending": "scheduled",
    "waiting": "running",
    "cancelled": "canceled",
}


async def run_progress(
    client: Client,
    run_id: str,
    stalls: StalledRuns | None = None,
    ended: EndedRuns | None = None,
) -> dict[str, Any]:
    """The run's progress snapshot (``RunProgress``): one invocation per step record.

    The records come from the run itself (its steps query while it runs, its result once it
    ended), so they are as fresh as Temporal's. ``version`` counts every start and end seen, which
    only grows, so a reader keeps the fresher of two snapshots. A run that cannot make progress
    carries the status read's ``degradation``, and its summary says it.

    Raises:
        ServeError: no such run of this runner.
    """
    read = await run_status(client, run_id, stalls, ended)
    degradation = read.get("degradation")
    steps: list[StepRecord] = []
    if degradation is None or degradation["reason"] != NO_WORKER:  # else no worker can answer
        # A worker that does not answer the query yet: nothing has started.
        with contextlib.suppress(RunError, RPCError):
            steps = await _steps(client, read, stalls, ended)
    invocations = [
        {
            "path": step.path,
            "pipe_code": step.pipe,
            "pipe_ref": step.pipe,
            "pipe_type": step.kind,
            "status": _STEP_STATUS.get(step.status, step.status),
            "started_at": _iso(step.started_at),
            "ended_at": _iso(step.ended_at),
            "attempts": step.attempts,
            # An extension member, as in a results body: only on a step whose text was cut.
            **({"truncated": True} if step.truncated else {}),
        }
        for step in steps
    ]
    finished = sum(1 for step in steps if step.ended_at)
    summary = f"{finished} of {counted(len(steps), 'step')} ended"
    progress = {
        "pipeline_run_id": run_id,
        "mode": "live",
        "status": _PROGRESS_STATUS.get(read["status"], "running"),
        "version": finished + sum(1 for step in steps if step.started_at),
        "assembled_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "summary": summary,
        "invocations": invocations,
    }
    if degradation is not None:
        progress["degradation"] = degradation
        progress["summary"] = f"{summary}. {degradation['message']}"
    return progress
