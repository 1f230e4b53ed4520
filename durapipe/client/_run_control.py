"""Controlling runs on Temporal: pause, resume, cancel, and human decisions on approval steps.

Pause and resume are signals to the run's workflow, which passes them on to its running child
workflows, so they hold for the whole run. Cancel is Temporal's cancellation: in-flight calls are
cancelled through their heartbeats. A decision is an update to the workflow that holds the step
(``<run id>`` or the child ``<run id>/<parent path>``); its validator refuses a wrong step, a step
that is not waiting, or data that does not fit the step's type, with the reason.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from durapipe._errors import (
    ConfigError,
    DecisionRefused,
    DurapipeError,
    RunError,
    RunNotFound,
    RunStalled,
)
from durapipe.adapters import WORKFLOW_NAME, child_workflow_id
from durapipe.client._stalls import (
    QueuePollers,
    RunQueues,
    failing_task,
    read_queues,
    run_stalled,
    why_stalled,
)
from durapipe.client._totals import status_name
from durapipe.runtime._approvals import (
    DECIDE_UPDATE,
    ApprovalDecision,
    ApprovalRequest,
    decision_text_problem,
)
from durapipe.workflows import PAUSE_SIGNAL, PAUSED_QUERY, RESUME_SIGNAL, WAITING_QUERY

# A run whose workers are gone cannot answer a query; `pending` skips it rather than hang.
QUERY_TIMEOUT = timedelta(seconds=5)
# How long `paused` waits for a worker's answer: a command asks it before a pause or resume, and
# must not hang on a run whose workers are slow (the signal is sent anyway). A run no worker polls
# is known at once, without this wait. 5 s as `pending`: 2 s is little for a worker at load 20-30.
PAUSED_TIMEOUT = timedelta(seconds=5)
# A decision sent to a run whose workers then die: how often and how long before `approve` says so.
DECISION_CHECK_S = 1.0
DECISION_STALL_S = 5.0
UNSET: Any = object()  # `approve` without ``data``: the reviewed value stands


async def pause(client: Client, run_id: str) -> None:
    """Pause a run: steps in flight finish, no new step starts until `resume`.

    Raises:
        RunNotFound: no running run with that id.
    """
    await _signal(client, run_id, PAUSE_SIGNAL)


async def resume(client: Client, run_id: str) -> None:
    """Resume a paused run.

    Raises:
        RunNotFound: no running run with that id.
    """
    await _signal(client, run_id, RESUME_SIGNAL)


async def paused(client: Client, run_id: str, *, pollers: QueuePollers | None = None) -> bool:
    """Whether run ``run_id`` is paused, as its workflow answers (within `PAUSED_TIMEOUT`).

    A query needs a worker: the run's task queues are checked for one first (a run no worker
    polls is known at once, not after the wait). ``pollers``: the command's, whose description
    of the run and answers about its queues are read rather than asked again.

    Raises:
        RunNotFound: no running run with that id.
        RunStalled: no worker answered: none polls the run's task queue, its workflow task keeps
            failing, or none answered in time (the sentence says which).
        RunError: its workers answered with an error (e.g. an older durapipe without the query).
    """
    handle = client.get_workflow_handle(run_id)
    pollers = pollers or QueuePollers(client)
    try:
        status = (await pollers.description(run_id)).status
    except RPCError as err:
        raise _not_running(run_id, err) from None
    if status is not None and status != WorkflowExecutionStatus.RUNNING:
        raise _ended(run_id, status)
    cannot = f"run '{run_id}' cannot say whether it is paused"
    why = await _cannot_answer(client, run_id, pollers)
    if why is not None:
        raise RunStalled(f"{cannot}: {why}", run_id=run_id)
    seconds = PAUSED_TIMEOUT.total_seconds()
    try:
        # rpc_timeout bounds one attempt; the client may retry, so the whole wait is bounded too.
        answer = await asyncio.wait_for(
            handle.query(PAUSED_QUERY, result_type=bool, rpc_timeout=PAUSED_TIMEOUT), seconds
        )
    except (TimeoutError, RPCError) as err:
        if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
            raise _not_running(run_id, err) from None
        if isinstance(err, RPCError) and err.status not in _TIMED_OUT:
            raise RunError(f"{cannot}: {err.message}", run_id=run_id) from None
        raise RunStalled(
            f"{cannot}: no worker of its task queue answered within {seconds:g} s", run_id=run_id
        ) from None
    except WorkflowQueryFailedError as err:  # e.g. workers of a durapipe without the query
        raise RunError(
            f"{cannot}: its workers refused the question ({err})", run_id=run_id
        ) from None
    return bool(answer)


async def cancel(client: Client, run_id: str) -> None:
    """Cancel a run: in-flight calls are cancelled, the run ends as cancelled.

    Raises:
        RunNotFound: no running run with that id (one that ended before the request reached it
            included).
    """
    handle = client.get_workflow_handle(run_id)
    # Temporal accepts a cancellation of a closed workflow and does nothing with it.
    await _still_running(client, run_id)
    try:
        await handle.cancel()
        # A run that ended between that describe and the request took nothing from it. Cancelled
        # now, or still running (cancelling takes a workflow task): the request reached it.
        status = (await handle.describe()).status
        if status not in (_RUNNING, WorkflowExecutionStatus.CANCELED, None):
            raise _ended(run_id, status)
    except RPCError as err:
        raise _not_running(run_id, err) from None


def _ended(run_id: str, status: WorkflowExecutionStatus) -> RunNotFound:
    return RunNotFound(
        f"no running run '{run_id}': it has already ended ({status_name(status)})", run_id=run_id
    )


async def approve(
    client: Client,
    run_id: str,
    step: str,
    *,
    data: Any = UNSET,
    reason: str = "",
    reviewer: str = "",
) -> None:
    """Approve a waiting approval step; ``data`` (when given) replaces the reviewed value.

    Raises:
        DecisionRefused: the step is not waiting for a decision, or ``data`` does not fit its type.
        RunNotFound: no such run.
    """
    edited = data is not UNSET
    decision = ApprovalDecision(
        step=step,
        approved=True,
        edited=edited,
        data=data if edited else None,
        reason=reason,
        reviewer=reviewer,
    )
    await _decide(client, run_id, decision)


async def reject(
    client: Client, run_id: str, step: str, *, reason: str = "", reviewer: str = ""
) -> None:
    """Reject a waiting approval step: the run fails with type ``durapipe.Rejected``.

    Raises:
        DecisionRefused: the step is not waiting for a decision.
        RunNotFound: no such run.
    """
    decision = ApprovalDecision(step=step, approved=False, reason=reason, reviewer=reviewer)
    await _decide(client, run_id, decision)


class PendingRequests(BaseModel):
    """What `pending` found: the waiting steps, and the running runs that could not be asked.

    Attributes:
        requests: every step waiting for a human decision, oldest first.
        unanswered: run id -> why the run could not say whether it waits (e.g. no worker polls
            its task queue); such a run may well be waiting for a decision.
    """

    requests: list[ApprovalRequest] = Field(default_factory=list)
    unanswered: dict[str, str] = Field(default_factory=dict)


async def pending(client: Client, *, query: str | None = None) -> PendingRequests:
    """Every step of a running run that waits for a human decision, and the runs that did not say.

    ``query`` narrows the runs asked with a visibility query (``TaskQueue = 'reviews'``).

    Raises:
        ConfigError: the runs cannot be listed (e.g. the namespace does not exist).
    """
    running = f"WorkflowType = '{WORKFLOW_NAME}' AND ExecutionStatus = 'Running'"
    if query:
        running += f" AND ({query})"
    try:
        ids = [execution.id async for execution in client.list_workflows(running)]
    except RPCError as err:
        raise ConfigError(f"cannot list running runs ({running}): {err.message}") from None
    found = await asyncio.gather(*(_waiting(client, workflow_id) for workflow_id in ids))
    report = PendingRequests()
    for workflow_id, (requests, why) in zip(ids, found, strict=True):
        report.requests.extend(requests)
        if why is not None:
            report.unanswered[workflow_id] = why
    report.requests.sort(key=lambda r: (r.waiting_since is None, r.waiting_since, r.path))
    return report


async def _waiting(client: Client, workflow_id: str) -> tuple[list[ApprovalRequest], str | None]:
    """The waiting steps of one run, or why the run did not answer."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        requests: list[ApprovalRequest] = await handle.query(
            WAITING_QUERY, result_type=list[ApprovalRequest], rpc_timeout=QUERY_TIMEOUT
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return [], None  # ended meanwhile (a closed run waits for nobody)
        why = await run_stalled(client, workflow_id)
        return [], why or f"its workers did not answer ({err.message})"
    except Exception as err:  # e.g. a run of an older durapipe without the query
        return [], f"it did not answer: {err}"
    return requests, None


async def _signal(client: Client, run_id: str, signal: str) -> None:
    try:
        await client.get_workflow_handle(run_id).signal(signal)
    except RPCError as err:
        raise _not_running(run_id, err) from None


async def _decide(client: Client, run_id: str, decision: ApprovalDecision) -> None:
    parent, _, _ = decision.step.rpartition("/")
    workflow_id = child_workflow_id(run_id, parent) if parent else run_id
    handle = client.get_workflow_handle(workflow_id)
    too_long = decision_text_problem(decision)  # the worker refuses it too; say so before sending
    if too_long is not None:
        raise DecisionRefused(f"decision refused: {too_long}; nothing was sent")
    try:  # encoded once here (no codec, nothing stored) so that data no converter can send says so
        client.data_converter.payload_converter.to_payloads([decision])
    except Exception as err:  # e.g. pydantic's "Maximum serialization depth exceeded"
        raise DecisionRefused(
            f"decision refused: the data for step '{decision.step}' cannot be sent: {err}; "
            "nothing was sent"
        ) from None
    # A run that ended takes no decision: said as `cancel` says it, not as a worker missing.
    await _still_running(client, run_id)
    # Only a worker can take an update: without one the call waits in silence, for ever.
    why = await _cannot_decide(client, run_id)
    if why is not None:
        raise RunStalled(
            f"run '{run_id}' cannot take a decision now: {why}; nothing was sent", run_id=run_id
        )
    update = asyncio.ensure_future(handle.execute_update(DECIDE_UPDATE, decision, result_type=str))
    try:
        await _watch(client, run_id, update)
        await update
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        raise DecisionRefused(f"decision refused: {reason}") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and parent:
            raise DecisionRefused(
                f"decision refused: run '{run_id}' has no running step '{parent}' that could "
                f"hold step '{decision.step}'"
            ) from None
        if err.status == RPCStatusCode.NOT_FOUND:
            await _still_running(client, run_id)  # it ended while the decision was on its way
        raise _not_running(run_id, err) from None


async def _still_running(client: Client, run_id: str) -> None:
    """Raise `RunNotFound` unless run ``run_id`` is running (naming how it ended, if it did)."""
    try:
        status = (await client.get_workflow_handle(run_id).describe()).status
    except RPCError as err:
        raise _not_running(run_id, err) from None
    if status is not None and status != _RUNNING:
        raise _ended(run_id, status)


async def _cannot_decide(client: Client, run_id: str) -> str | None:
    """Why run ``run_id`` cannot take a decision (see `_cannot_answer`)."""
    return await _cannot_answer(client, run_id)


async def _cannot_answer(
    client: Client, run_id: str, pollers: QueuePollers | None = None
) -> str | None:
    """Why run ``run_id`` cannot answer a query or take an update or signal now: only a worker
    of its own queue does that, so a leaf routed to a queue no worker polls (yet) does not stop
    it. ``pollers``: the command's (a new one if None)."""
    queues = await read_queues(client, run_id)
    if queues is None:
        return None
    own = RunQueues(workflow=queues.workflow)
    return await why_stalled(client, own, pollers) or await failing_task(client, run_id, pollers)


async def _watch(client: Client, run_id: str, update: asyncio.Future[str]) -> None:
    """Wait for ``update``; raise `RunStalled` once the run's workers have been gone for
    `DECISION_STALL_S` (they died after the decision was sent)."""
    stalled_since: float | None = None
    try:
        while not update.done():
            await asyncio.wait({update}, timeout=DECISION_CHECK_S)
            if update.done():
                return
            why = await _cannot_decide(client, run_id)
            now = time.monotonic()
            stalled_since = None if why is None else (stalled_since or now)
            if why is not None and now - (stalled_since or now) >= DECISION_STALL_S:
                raise RunStalled(
                    f"run '{run_id}' has not taken the decision: {why}; it was sent, and "
                    f"a worker that takes the run may still apply it (`durapipe pending` "
                    f"says whether the step still waits)",
                    run_id=run_id,
                )
    finally:
        if not update.done():
            update.cancel()


_RUNNING = WorkflowExecutionStatus.RUNNING
# The client's own deadline ends an unanswered query as CANCELLED ("Timeout expired").
_TIMED_OUT = (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


def _not_running(run_id: str, err: RPCError) -> DurapipeError:
    if err.status == RPCStatusCode.NOT_FOUND:
        return RunNotFound(f"no running run '{run_id}': {err.message}", run_id=run_id)
    if err.status == RPCStatusCode.UNAVAILABLE:
        return ConfigError(f"cannot reach Temporal: {err.message}")
    return RunError(f"run '{run_id}': {err.message}", run_id=run_id)
