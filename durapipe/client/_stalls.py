"""Why a run cannot make progress: task queues that no worker polls.

A run waits silently on Temporal when no worker polls its task queue, or when a leaf is routed to a
queue nobody serves: Temporal queues the task and waits for a worker, forever. Temporal's
DescribeTaskQueue lists the pollers it has seen lately, so a client can tell within seconds that a
run is stuck and say which queue needs a worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from durapipe.runtime import PipeRun
from durapipe.spec import is_controller_kind

# Temporal lists a poller for a few minutes after its last poll. A live worker polls again at least
# every ~70 s (a long poll's length), so one not seen for longer has gone: its worker died.
POLLER_GONE_S = 180.0


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


async def polled(client: Client, task_queue: str, *, activities: bool = False) -> bool:
    """Whether a live worker polls ``task_queue`` for workflow tasks (or activity tasks).

    Raises:
        RPCError: the server refused the request (e.g. the namespace does not exist).
    """
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
    oldest = time.time() - POLLER_GONE_S
    return any(p.last_access_time.ToSeconds() >= oldest for p in response.pollers)


async def why_stalled(client: Client, queues: RunQueues) -> str | None:
    """One sentence saying why a run on ``queues`` cannot make progress, or None if it can.

    Only what the server can tell: a queue the run needs that no live worker polls.
    """
    flags = "" if client.namespace == "default" else f" -n {client.namespace}"
    try:
        if not await polled(client, queues.workflow):
            return (
                f"no worker polls task queue '{queues.workflow}' (namespace "
                f"'{client.namespace}'), so nothing runs it; start one with "
                f"`durapipe worker FILE{flags} -t {queues.workflow}`"
            )
        for queue, pipes in queues.routed.items():
            if not await polled(client, queue, activities=True):
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
            [run] = await client.data_converter.decode(started.input.payloads, [PipeRun])
            return RunQueues.of(run, started.task_queue.name)
    except Exception:  # no such run, or not one of durapipe's: nothing to say about it
        return None
    return None


async def run_stalled(client: Client, run_id: str) -> str | None:
    """Why run ``run_id`` cannot make progress (see `why_stalled`), else None."""
    queues = await read_queues(client, run_id)
    return None if queues is None else await why_stalled(client, queues)
