"""Why a running run cannot make progress, as the lifecycle reads (status, results, progress) say it.

A client that starts a run and polls it sees ``RUNNING`` for as long as the run waits, and a run on
a task queue no worker polls waits forever. The lifecycle's status read can say more without
changing the status a client loops on: `pipelex-sdk`'s ``RunRead`` carries ``degraded`` and a
``degradation`` (``reason``, ``message``), whose reason is an open string ("a consumer that does not
know it should not tell the person the run is fine"). durapipe fills it with the sentence
`durapipe run` prints: ``no_worker`` when no worker polls a queue the run needs, and the SDK's own
``workflow_task_failing`` when its workflow task keeps failing on the workers it has.

A poll loop asks every second or so, and many clients may poll runs of one queue: the answers of
the server (DescribeTaskQueue, ListWorkers, the runs' descriptions) are shared by every read for
`STALL_KEPT_S`, then asked again, so a worker that starts is seen within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any, Final

from temporalio.client import Client, WorkflowExecutionDescription

from durapipe.client._stalls import (
    QueuePollers,
    RunQueues,
    failing_task,
    read_queues,
    why_stalled,
)

# How long the server's answers about queues and runs are shared by the lifecycle reads.
STALL_KEPT_S: Final = 3.0
# How many executions' queues are kept (a few hundred bytes each).
QUEUES_KEPT: Final = 1024
# `degradation.reason` of a run that waits for a worker (the SDK's reasons are an open set).
NO_WORKER: Final = "no_worker"
# The SDK's own reason for a run whose workflow task keeps failing.
WORKFLOW_TASK_FAILING: Final = "workflow_task_failing"


class StalledRuns:
    """Why each running run of this server cannot make progress, asked of Temporal at most once
    per run and per queue every `STALL_KEPT_S` seconds, whoever asks.

    Example:
        >>> stalls = StalledRuns(client)  # doctest: +SKIP
        >>> await stalls.degradation("mthds-loud_summary-1a2b")  # doctest: +SKIP
        {'reason': 'no_worker', 'message': "Run 'mthds-loud_summary-1a2b' cannot make progress: ..."}
    """

    def __init__(self, client: Client, kept_s: float = STALL_KEPT_S) -> None:
        self._client = client
        self._kept_s = kept_s
        self._since = -kept_s
        # One QueuePollers a window: it shares the window's answers, and is dropped whole after it
        # (workers come and go), so nothing here grows with the runs a server has seen.
        self._pollers = QueuePollers(client)
        self._verdicts: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        # The queues each execution's input names, kept across windows (they never change within
        # an execution; a retry is another): the `QUEUES_KEPT` executions read last.
        self._queues: OrderedDict[str, RunQueues] = OrderedDict()

    def _window(self) -> None:
        now = time.monotonic()
        if now - self._since >= self._kept_s:
            self._since = now
            self._pollers = QueuePollers(self._client)
            self._verdicts = {}

    def pollers(self) -> QueuePollers:
        """This window's answers about queues and runs (`QueuePollers`), for a read to share."""
        self._window()
        return self._pollers

    def know(self, description: WorkflowExecutionDescription) -> None:
        """Take ``description`` (a read's own, just asked) as its run's for this window."""
        self.pollers().know(description)

    async def degradation(self, run_id: str, execution: str | None = None) -> dict[str, Any] | None:
        """The ``degradation`` of running run ``run_id`` (``reason``, ``message``), or None when
        it can make progress, or the server cannot tell (then nothing is said rather than a guess).
        ``execution``: its latest execution's id, when known (its queues are then read once).
        """
        self._window()
        verdict = self._verdicts.get(run_id)
        if verdict is None:
            queues = self._queues_of(run_id, execution)
            verdict = asyncio.ensure_future(
                _degradation(self._client, run_id, self._pollers, queues)
            )
            self._verdicts[run_id] = verdict
        # Shielded: one reader that goes away must not cancel the answer the others wait on.
        return await asyncio.shield(verdict)

    async def _queues_of(self, run_id: str, execution: str | None) -> RunQueues | None:
        """The queues of run ``run_id`` (`read_queues`: the first page of its history), read
        once per execution when ``execution`` names it."""
        if execution and execution in self._queues:
            self._queues.move_to_end(execution)
            return self._queues[execution]
        queues = await read_queues(self._client, run_id)
        if execution and queues is not None:  # None may be a passing failure: asked again
            self._queues[execution] = queues
            while len(self._queues) > QUEUES_KEPT:
                self._queues.popitem(last=False)
        return queues


async def _degradation(
    client: Client, run_id: str, pollers: QueuePollers, read: Awaitable[RunQueues | None]
) -> dict[str, Any] | None:
    queues = await read
    if queues is None:
        return None
    why = await why_stalled(client, queues, pollers)
    if why is not None:
        return {
            "reason": NO_WORKER,
            "message": f"Run '{run_id}' cannot make progress: {why}. It stays queued and goes "
            "on once a worker polls the queue.",
        }
    failing = await failing_task(client, run_id, pollers)
    if failing is not None:
        return {
            "reason": WORKFLOW_TASK_FAILING,
            "message": f"Run '{run_id}' cannot make progress: {failing}.",
        }
    return None
