"""Why a run cannot make progress: task queues that no worker polls, or a workflow task that
keeps failing on the workers that do.

A run waits silently on Temporal when no worker polls its task queue, or when a leaf is routed to a
queue nobody serves: Temporal queues the task and waits for a worker, forever. Temporal's
DescribeTaskQueue lists the pollers it has seen lately, so a client can tell within seconds that a
run is stuck and say which queue needs a worker. A run whose workflow task fails on every attempt
(a worker older than the run, or pipe code changed under a running run) waits as silently: Temporal
retries the task forever and records only its first failure (or timeout: workers too slow or dying
to finish it). So does a run whose nested pipe's (child workflow's) task keeps failing: the run
itself looks healthy, waiting on its child.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import (
    TaskQueueKind,
    TaskQueueType,
    TimeoutType,
    WorkflowExecutionStatus,
)
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.worker.v1 import WorkerHeartbeat
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    DescribeWorkflowExecutionRequest,
    DescribeWorkflowExecutionResponse,
    GetWorkflowExecutionHistoryRequest,
    GetWorkflowExecutionHistoryReverseRequest,
    ListWorkersRequest,
)
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.exceptions import FailureError
from temporalio.service import RPCError

from durapipe._words import counted
from durapipe.client._telemetry import WORKER_HEARTBEAT
from durapipe.runtime import PipeRun
from durapipe.spec import is_controller_kind
from durapipe.worker import PLUGIN_NAME

# When is a worker gone? Temporal lists a poller for minutes after its worker died (a SIGKILLed
# worker's pollers stay in DescribeTaskQueue for about 3 minutes), so the list alone says too late.
#  1. durapipe's workers send Temporal a worker heartbeat every WORKER_HEARTBEAT (5 s; ListWorkers
#     returns them, Temporal 1.29+). A worker whose last heartbeat is older than three intervals
#     plus a margin has stopped: 20 s after its death at most, whatever its pollers' times say.
#  2. Any other worker (or a server without ListWorkers): the server notes a poller's time when its
#     long poll starts, and a live worker starts a new poll as soon as one ends; the server ends an
#     idle long poll within a minute (52 s measured here, 60 s Temporal's default). So a poller not
#     seen for 60 s plus a 10 s margin is gone: at most 70 s after its worker died.
HEARTBEAT_GONE_S = 3 * WORKER_HEARTBEAT.total_seconds() + 5.0
POLLER_GONE_S = 70.0
# A workflow task can fail once in normal operation (a worker dying mid-task, an event arriving
# while it completes); a third attempt means two in a row did not complete: it fails (or times
# out) on every worker.
FAILING_TASK_ATTEMPT = 3
# A leaf the server scheduled this long ago, on a queue that live workers poll, waits for one of
# them to take it (one with a free slot takes a task within milliseconds): `QueueLoad` says why.
SLOT_WAIT_S = 3.0
# How long `QueueLoad` reuses a queue's answer.
LOAD_KEPT_S = 1.0
# Nested workflows a stall check describes at most (breadth first): a check runs every second
# while a client waits, and a batch of nested pipes may run hundreds at once. A nested pipe's
# task that fails on every worker (code changed, a newer run) fails in its siblings too, so the
# first few tell.
CHILDREN_CHECKED = 10
# What temporalio's worker records when it cannot decode a workflow's input into the type its
# workflow takes: a worker of a release before durapipe's workflow took its input undecoded (and
# read the version first) given a run with a field it lacks (`PipeRun.searchable_totals`).
UNDECODABLE_INPUT = "Failed decoding arguments"


@dataclass(frozen=True)
class RunQueues:
    """The task queues a run needs: its workflows' queue, and the queues its leaves are routed to.

    Attributes:
        workflow: the queue the run's workflows (the run and its nested controllers) run on.
        routed: queue -> names of the leaf pipes routed there (queues other than ``workflow``).
    """

    workflow: str
    routed: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, run: PipeRun, task_queue: str) -> RunQueues:
        """The queues of a run started on ``task_queue`` with workflow input ``run``."""
        routed: dict[str, list[str]] = {}
        for name, pipe in run.spec.pipes.items():
            # agent pipes are workflows whose turns are activities on the pipe's queue.
            leaf = not is_controller_kind(pipe.kind) or pipe.kind == "agent"
            if leaf and pipe.queue and pipe.queue != task_queue:
                routed.setdefault(pipe.queue, []).append(name)
        return cls(workflow=task_queue, routed=routed)


class QueuePollers:
    """Whether a live worker polls each task queue, asked of the server once per queue (and task
    type) for one command: a listing of 50 running runs of one queue makes one DescribeTaskQueue,
    not 50, and `durapipe show` reads a run's totals and explains its stall from the same answer.
    Asked concurrently, the first reader's request is shared by the others.

    The workflows the command reads are described once too (`description`): `durapipe show` reads
    its header, its steps and its stall check from one DescribeWorkflowExecution of its run.

    One command, one instance: never kept longer, since workers come and go (a later command, or
    a client that checks every second while it waits, asks again).
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._asked: dict[tuple[str, bool], asyncio.Future[str | None]] = {}
        self._described: dict[str, asyncio.Future[WorkflowExecutionDescription]] = {}

    def know(self, description: WorkflowExecutionDescription) -> None:
        """Take ``description``, just asked elsewhere, as its workflow's: not asked again."""
        known = asyncio.get_running_loop().create_future()
        known.set_result(description)
        self._described[description.id] = known

    async def description(self, workflow_id: str) -> WorkflowExecutionDescription:
        """Workflow ``workflow_id`` (its latest execution) as the server describes it, asked once
        for this command.

        Raises:
            RPCError: no such workflow, or the server refused the request.
        """
        asked = self._described.get(workflow_id)
        if asked is None:
            handle = self._client.get_workflow_handle(workflow_id)
            asked = asyncio.ensure_future(handle.describe())
            self._described[workflow_id] = asked
            asked.add_done_callback(functools.partial(_forget_failed, self._described, workflow_id))
        return await asyncio.shield(asked)

    async def unpolled(self, task_queue: str) -> str | None:
        """One clause saying that no live worker polls ``task_queue`` for workflow tasks, so
        nothing runs (or answers a query of) a run there; None if one does.

        Raises:
            RPCError: the server refused the request (e.g. the namespace does not exist).
        """
        gone = await self.gone(task_queue)
        return None if gone is None else f"no worker polls task queue '{task_queue}'{gone}"

    async def gone(self, task_queue: str, *, activities: bool = False) -> str | None:
        """None when a live worker polls ``task_queue`` for workflow tasks (or activity tasks);
        else why its pollers count as gone ("" when Temporal lists none), asked once.

        Raises:
            RPCError: the server refused the request (e.g. the namespace does not exist).
        """
        key = (task_queue, activities)
        asked = self._asked.get(key)
        if asked is None:
            asked = asyncio.ensure_future(_gone(self._client, task_queue, activities=activities))
            self._asked[key] = asked
            asked.add_done_callback(functools.partial(_forget_failed, self._asked, key))
        # Shielded: one reader cancelled alone must not cancel the answer the others wait on.
        return await asyncio.shield(asked)


def _forget_failed(
    asked: dict[Any, asyncio.Future[Any]], key: Any, done: asyncio.Future[Any]
) -> None:
    # A question that failed (a server briefly unavailable) is no answer: the readers waiting on
    # it get its error, and the next reader of this command asks again.
    if (done.cancelled() or done.exception() is not None) and asked.get(key) is done:
        del asked[key]


async def _gone(client: Client, task_queue: str, *, activities: bool) -> str | None:
    """None when a live worker polls ``task_queue``; else why its pollers count as gone ("" when
    Temporal lists none), as a clause for the stall sentence."""
    kind = (
        TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
        if activities
        else TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    )
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,
        )
    )
    if not response.pollers:
        return ""
    now = time.time()
    heartbeats = await _heartbeats(client, task_queue)
    latest: tuple[float, str] = (-1.0, "")
    for poller in response.pollers:
        beat = heartbeats.get(poller.identity)
        if beat is not None:
            if now - beat < HEARTBEAT_GONE_S:
                return None
            seen = (beat, f"sent no heartbeat for {now - beat:.0f} s")
        else:
            last_poll = poller.last_access_time.ToSeconds()
            if now - last_poll < POLLER_GONE_S:
                return None
            seen = (last_poll, f"has not polled for {now - last_poll:.0f} s")
        if seen[0] > latest[0]:
            latest = (seen[0], f": its last worker, '{poller.identity}', {seen[1]}")
    return f"{latest[1]} (stopped, killed or cut off)"


async def _heartbeats(client: Client, task_queue: str) -> dict[str, float]:
    """When each durapipe worker of ``task_queue`` last sent a worker heartbeat, by identity
    (epoch seconds); empty when the server keeps none (ListWorkers off, or older than 1.29)."""
    beats = await _worker_beats(client, task_queue)
    return {identity: beat.heartbeat_time.ToSeconds() for identity, beat in beats.items()}


async def _worker_beats(client: Client, task_queue: str) -> dict[str, WorkerHeartbeat]:
    """The last worker heartbeat of each durapipe worker of ``task_queue``, by identity; empty
    when the server keeps none (ListWorkers off, or older than 1.29)."""
    try:
        response = await client.workflow_service.list_workers(
            ListWorkersRequest(
                namespace=client.namespace, page_size=1000, query=f"TaskQueue = '{task_queue}'"
            )
        )
    except RPCError:
        return {}
    beats: dict[str, WorkerHeartbeat] = {}
    for info in response.workers_info:
        beat = info.worker_heartbeat
        # Only durapipe's workers beat at WORKER_HEARTBEAT; others' interval is not known here.
        if beat.task_queue == task_queue and any(p.name == PLUGIN_NAME for p in beat.plugins):
            kept = beats.get(beat.worker_identity)
            if kept is None or beat.heartbeat_time.ToSeconds() > kept.heartbeat_time.ToSeconds():
                beats[beat.worker_identity] = beat
    return beats


class QueueLoad:
    """Why a leaf scheduled on a task queue that workers poll has not started: what the server
    says of the queue's workers (their activity slots, from their worker heartbeats) and its
    backlog. One DescribeTaskQueue (with its stats) and one ListWorkers per queue, asked only for
    a step that has waited `SLOT_WAIT_S`, and reused for `LOAD_KEPT_S` (a follower looks every
    0.25 s). Reads only: nothing is added to any run's history."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._asked: dict[str, tuple[float, asyncio.Task[str | None]]] = {}

    async def busy(self, task_queue: str) -> str | None:
        """What a leaf scheduled on ``task_queue`` waits for ("a free worker slot: the 2 workers
        polling task queue 'q' are all busy (...)"), or None when no live worker polls it (the
        stall check says so) or the server cannot tell."""
        now = time.monotonic()
        kept = self._asked.get(task_queue)
        if kept is None or (kept[1].done() and now - kept[0] >= LOAD_KEPT_S):
            task = asyncio.ensure_future(_busy(self._client, task_queue))
            self._asked[task_queue] = kept = (now, task)
        try:
            return await asyncio.shield(kept[1])
        except RPCError:
            return (
                None  # the server cannot tell (e.g. no permission): say nothing rather than guess
            )


async def _busy(client: Client, task_queue: str) -> str | None:
    """See `QueueLoad.busy`."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            report_stats=True,
        )
    )
    now = time.time()
    beats = await _worker_beats(client, task_queue)
    live: set[str] = set()
    for poller in response.pollers:
        beat = beats.get(poller.identity)
        seen = beat.heartbeat_time.ToSeconds() if beat else poller.last_access_time.ToSeconds()
        if now - seen < (HEARTBEAT_GONE_S if beat else POLLER_GONE_S):
            live.add(poller.identity)
    if not live:
        return None
    stats = response.stats if response.HasField("stats") else None
    backlog = f"backlog {stats.approximate_backlog_count}" if stats is not None else ""
    where = f"task queue '{task_queue}'"
    workers = f"the {counted(len(live), 'worker')} polling {where}"
    slots = [beats[i].activity_task_slots_info for i in live if i in beats]
    if len(slots) == len(live) and all(s.current_used_slots for s in slots):
        used = sum(s.current_used_slots for s in slots)
        free = sum(s.current_available_slots for s in slots)
        if free == 0:
            busy = "is busy" if len(live) == 1 else "are all busy"
            said = ", ".join(
                filter(None, (f"{used} of {counted(used, 'activity slot')} in use", backlog))
            )
            return f"a free worker slot: {workers} {busy} ({said})"
    # Slots not known (workers without durapipe's heartbeats), or free by the last heartbeat (up
    # to 5 s old, or a queue's rate limit holding it): the workers have not taken it, which is all
    # the server shows.
    have = "has" if len(live) == 1 else "have"
    return f"a worker to take it: {workers} {have} not taken it yet" + (
        f" ({backlog})" if backlog else ""
    )


async def why_stalled(
    client: Client, queues: RunQueues, pollers: QueuePollers | None = None
) -> str | None:
    """One sentence saying why a run on ``queues`` cannot make progress, or None if it can.

    Only what the server can tell: a queue the run needs that no live worker polls. ``pollers``:
    the queues' pollers as asked for this command (a new one if None).
    """
    flags = "" if client.namespace == "default" else f" -n {client.namespace}"
    pollers = pollers or QueuePollers(client)
    try:
        gone = await pollers.gone(queues.workflow)
        if gone is not None:
            return (
                f"no worker polls task queue '{queues.workflow}' (namespace "
                f"'{client.namespace}'), so nothing runs it{gone}; start one with "
                f"`durapipe worker FILE{flags} -t {queues.workflow}`"
            )
        for queue, pipes in queues.routed.items():
            if await pollers.gone(queue, activities=True) is not None:
                names = ", ".join(f"'{p}'" for p in pipes)
                which = f"pipes {names} are" if len(pipes) > 1 else f"pipe {names} is"
                return (
                    f"{which} routed to task queue '{queue}', which no worker polls; "
                    f"start one with `durapipe worker FILE{flags} --queue {queue}`"
                )
    except RPCError:
        return None  # the server cannot tell (e.g. no permission): say nothing rather than guess
    return None


async def read_queues(client: Client, run_id: str) -> RunQueues | None:
    """The queues of a run started elsewhere, read from the start of its history; None when it
    is not found or not one of durapipe's."""
    handle = client.get_workflow_handle(run_id)
    try:
        async for event in handle.fetch_history_events(page_size=1):
            started = event.workflow_execution_started_event_attributes
            payloads = started.input.payloads
            try:
                [run] = await client.data_converter.decode(payloads, [PipeRun])
            except Exception:
                # A run started by a newer durapipe may carry fields this code lacks: its
                # workflow queue still says whether a worker runs it (its routes are unknown).
                [data] = await client.data_converter.decode(payloads, [dict[str, Any]])
                if not isinstance(data.get("workflow_version"), int):
                    return None
                return RunQueues(workflow=started.task_queue.name)
            return RunQueues.of(run, started.task_queue.name)
    except Exception:  # no such run, or not one of durapipe's: nothing to say about it
        return None
    return None


async def run_stalled(
    client: Client, run_id: str, pollers: QueuePollers | None = None
) -> str | None:
    """Why run ``run_id`` cannot make progress (see `why_stalled` and `failing_task`), else None.
    ``pollers``: the command's (what it asked already is not asked again)."""
    queues = await read_queues(client, run_id)
    if queues is None:
        return None
    return await why_stalled(client, queues, pollers) or await failing_task(client, run_id, pollers)


async def failing_task(
    client: Client, run_id: str, pollers: QueuePollers | None = None
) -> str | None:
    """One clause saying that a workflow task of run ``run_id`` keeps failing or timing out on its
    workers (the run's own, or a nested pipe's, which runs as a child workflow), with what
    Temporal recorded; None if none does (or the server cannot tell).

    Cheap enough to call every second while a client waits: one describe of the run, then (only
    when its own task is fine) one of each of up to `CHILDREN_CHECKED` running nested workflows,
    concurrently, and one page of history of a workflow whose task is stuck. ``pollers``: the
    command's, whose descriptions of the run and its nested workflows are read (a fresh describe
    of each if None).
    """
    try:
        description = await _describe(client, run_id, pollers)
        if description is None:
            return None
        stuck = await _stuck_task(client, run_id, description)
        if stuck is not None:
            return f"its workflow task {stuck}"
        return await _stuck_child(client, run_id, description, pollers)
    except RPCError:
        return None


async def _stuck_child(
    client: Client,
    run_id: str,
    description: DescribeWorkflowExecutionResponse,
    pollers: QueuePollers | None,
) -> str | None:
    """The clause for the first running nested workflow (breadth first) whose task is stuck."""
    level = [description]
    checked = 0
    while level and checked < CHILDREN_CHECKED:
        ids = [c.workflow_id for d in level for c in d.pending_children]
        ids = ids[: CHILDREN_CHECKED - checked]
        checked += len(ids)
        found = await asyncio.gather(*(_describe(client, i, pollers) for i in ids))
        level = [d for d in found if d is not None]
        for child in level:
            child_id = child.workflow_execution_info.execution.workflow_id
            stuck = await _stuck_task(client, child_id, child)
            if stuck is not None:
                # A nested pipe's workflow id is `<run id>/<step path>` (`adapters._plan`).
                path = child_id.removeprefix(f"{run_id}/")
                return f"the workflow task of its nested pipe at step '{path}' {stuck}"
    return None


async def _describe(
    client: Client, workflow_id: str, pollers: QueuePollers | None = None
) -> DescribeWorkflowExecutionResponse | None:
    """The running workflow ``workflow_id`` as the server describes it; None when not running.

    As the command's ``pollers`` described it, else the raw call: this check reads nothing of
    what the SDK's ``describe()`` decodes (memo, search attributes)."""
    try:
        if pollers is not None:
            description = (await pollers.description(workflow_id)).raw_description
        else:
            description = await client.workflow_service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(
                    namespace=client.namespace,
                    execution=WorkflowExecution(workflow_id=workflow_id),
                )
            )
    except RPCError:  # ended and gone meanwhile: nothing stuck there
        return None
    running = WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
    return description if description.workflow_execution_info.status == running else None


async def _stuck_task(
    client: Client, workflow_id: str, description: DescribeWorkflowExecutionResponse
) -> str | None:
    """What the server shows of ``workflow_id``'s workflow task that does not complete ("is on
    attempt 3 ...; the first attempt failed ...: <message>"), or None when it is not on its
    `FAILING_TASK_ATTEMPT`th attempt.

    Temporal records only how the first attempt of a run of retries ended (a failure with its
    message, or a timeout) and counts the attempts (the pending task's ``attempt``); the later
    attempts' outcomes are not kept anywhere, so the sentence says no more than that: not "has
    failed N times", which would claim failures where a later attempt may have timed out.
    """
    attempt = description.pending_workflow_task.attempt
    if attempt < FAILING_TASK_ATTEMPT:
        return None
    queue = description.execution_config.task_queue.name
    where = f"is on attempt {attempt} on the workers of task queue '{queue}'"
    ended = await _last_task_end(client, workflow_id)
    if ended is None:  # beyond the page read, or an earlier series's end: not known here
        return f"{where}; how the first attempt of these ended is not in its recorded history"
    first = "the first attempt {} (Temporal records no later one's outcome)"
    if ended.HasField("workflow_task_failed_event_attributes"):
        message = await _failure_message(client, ended)
        if message == UNDECODABLE_INPUT:
            version = await _readable_input_version(client, workflow_id)
            if version is not None:
                return (
                    f"{where}; {first.format('failed')}: they cannot decode this run's input "
                    f"('{UNDECODABLE_INPUT}'), likely older than the durapipe that started it "
                    f"(workflow version {version}): upgrade them"
                )
        return f"{where}; {first.format('failed')}: {message}"
    kind = ended.workflow_task_timed_out_event_attributes.timeout_type
    if kind == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START:
        # Its sticky queue's timeout (the worker's setting), not the task's own.
        why = "the worker that ran it last did not take it (gone?)"
    else:
        timeout = description.execution_config.default_workflow_task_timeout
        within = f" within {timeout.ToTimedelta().total_seconds():g} s" if timeout.seconds else ""
        why = f"no worker finished it{within} (overloaded or dying workers?)"
    return f"{where}; {first.format('timed out')}: {why}"


async def _readable_input_version(client: Client, workflow_id: str) -> int | None:
    """The workflow version of ``workflow_id``'s input when this client decodes it as a `PipeRun`,
    else None (then the workers' decoding error is not theirs alone)."""
    response = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id),
            maximum_page_size=1,
        )
    )
    if not response.history.events:
        return None
    started = response.history.events[0].workflow_execution_started_event_attributes
    try:
        [run] = await client.data_converter.decode(started.input.payloads, [PipeRun])
    except Exception:  # not readable here either: the recorded message says what it can
        return None
    return int(run.workflow_version)


async def _last_task_end(client: Client, workflow_id: str) -> HistoryEvent | None:
    """The latest recorded workflow task failure or timeout, when no task completed after it: the
    first end of the current run of retried attempts (the retries record none)."""
    response = await client.workflow_service.get_workflow_execution_history_reverse(
        GetWorkflowExecutionHistoryReverseRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id),
            maximum_page_size=100,
        )
    )
    for event in response.history.events:
        if event.HasField("workflow_task_failed_event_attributes") or event.HasField(
            "workflow_task_timed_out_event_attributes"
        ):
            return event
        if event.HasField("workflow_task_completed_event_attributes"):
            # A task completed after the last recorded end: that end belongs to an earlier run of
            # attempts, not to the current one (whose first end is then not recorded here).
            return None
    return None


async def _failure_message(client: Client, event: HistoryEvent) -> str:
    """The first line of a recorded workflow task failure's message."""
    failure = event.workflow_task_failed_event_attributes.failure
    try:
        # With payload encryption on, the message travels sealed ("Encoded failure").
        error = await client.data_converter.decode_failure(failure)
        message = error.message if isinstance(error, FailureError) else str(error)
    except Exception:  # not decodable here (e.g. another key): show what is recorded
        message = failure.message
    return _pydantic_condensed(message) or (message.splitlines()[0] if message else "no message")


# The report pydantic makes of a failed validation: its first line counts the errors; each then
# names its field on a line of its own (none for the input as a whole), says why on the next
# (indented, ending with the input's type), and links its documentation on the one after.
_PYDANTIC_COUNT = re.compile(r"^(\d+) validation errors? for (\w+)$")
_PYDANTIC_TYPE = re.compile(r" \[type=.*$")


def _pydantic_condensed(message: str) -> str | None:
    """A workflow task failure that is pydantic's report (a worker before durapipe named the
    field itself), in one line naming the first field; None if it is not one."""
    lines = message.splitlines()
    counted_errors = _PYDANTIC_COUNT.match(lines[0]) if len(lines) > 1 else None
    if counted_errors is None:
        return None
    count, model = int(counted_errors[1]), counted_errors[2]
    if lines[1].startswith("  "):  # the input as a whole (e.g. not JSON, or nested too deep)
        where, why = "", lines[1]
    else:
        where, why = lines[1], lines[2] if len(lines) > 2 else ""
    why = _PYDANTIC_TYPE.sub("", why.strip())
    said = f"field '{where}': {why}" if where else why
    more = count - 1
    return f"its input does not decode as a {model}: {said}" + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )
