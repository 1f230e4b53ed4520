"""A running run without searchable totals whose workers poll but do not answer its totals query
is listed with why, in the words of what the server knows: a workflow task that keeps failing,
or only that no worker answered within the query's timeout."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, cast

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import durapipe as dp
import durapipe.client._stalls
import durapipe.workflows._workflow as pipe_workflow
from durapipe.adapters._plan import WORKFLOW_NAME
from durapipe.client._stalls import QueuePollers
from durapipe.runtime._interpret import Interpreter
from tests.support import acli, attempt_of, eventually

# Set by the blocking workflow below once its first task has started; it then waits on RELEASE.
ENTERED = threading.Event()
RELEASE = threading.Event()


def _pipeline(pipe: str) -> dp.Pipeline:
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", model="durapipe/offline")
    return dp.pipeline(dp.sequence(pipe, inputs={"question": str}, steps=[dp.step(ask)]))


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class BusyWorkflow:
    """A worker busy in the run's first workflow task (a starved worker, say): it polls, so the
    queue has a worker, but no query is answered until the task ends."""

    @workflow.run
    async def run(self, run: dict[str, Any]) -> None:
        ENTERED.set()
        RELEASE.wait(30)  # blocks the workflow task; debug_mode keeps it from being a deadlock


async def test_a_run_whose_polling_worker_does_not_answer_says_only_that(
    temporal_address: str, task_queue: str
) -> None:
    pipe = f"busy{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(pipe)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    ENTERED.clear()
    RELEASE.clear()

    async def serve() -> None:
        # Its own event loop in its own thread: debug_mode runs the blocked task on the loop.
        plain = await Client.connect(temporal_address, data_converter=client.data_converter)
        async with Worker(plain, task_queue=task_queue, workflows=[BusyWorkflow], debug_mode=True):
            await asyncio.to_thread(RELEASE.wait, 60)

    serving = threading.Thread(target=asyncio.run, args=(serve(),))
    serving.start()
    try:
        handle = await dp.start(
            client, pipeline, pipe, {"question": "q"}, task_queue=task_queue,
            searchable_totals=False,
        )  # fmt: skip
        await eventually(
            lambda: _true(ENTERED.is_set()), "the worker to take the run's workflow task"
        )
        summary = await dp.client.describe_run(client, handle.run_id)
        await client.get_workflow_handle(handle.run_id).terminate("test over")
    finally:
        RELEASE.set()
        await asyncio.to_thread(serving.join)
    assert (summary.status, summary.totals_known) == ("running", False)
    assert summary.totals_unknown_why == (
        f"no worker of task queue '{task_queue}' answered within 2 s"
    )


async def _true(value: bool) -> bool | None:
    return True if value else None


async def test_a_run_whose_workflow_task_keeps_failing_says_so_in_place_of_its_totals(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    interpreter = Interpreter

    def refusing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pipe code changed under the run")

    monkeypatch.setattr(pipe_workflow, "Interpreter", refusing)
    pipe = f"refused{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(pipe)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client, pipeline, pipe, {"question": "q"}, task_queue=task_queue,
            searchable_totals=False,
        )  # fmt: skip

        async def failing() -> str | None:
            why = await handle.stalled()
            return why if why and why.startswith("its workflow task") else None

        await eventually(failing, "the run's failing workflow task to be reported")
        summary = await dp.client.describe_run(client, handle.run_id)
        listed = await acli(temporal_address, "runs", "--pipe", pipe)
    monkeypatch.setattr(pipe_workflow, "Interpreter", interpreter)
    await client.get_workflow_handle(handle.run_id).terminate("test over")
    why = summary.totals_unknown_why or ""
    assert why == (
        f"run '{handle.run_id}' cannot make progress: its workflow task is on attempt "
        f"{attempt_of(why)} on the workers of task queue '{task_queue}'; the first attempt "
        "failed (Temporal records no later one's outcome): pipe code changed under the run"
    )
    assert any(
        line.startswith(f"the totals of 1 running run could not be read; run '{handle.run_id}' ")
        for line in listed.stderr.splitlines()
    ), listed.stderr


async def test_a_reader_of_a_queues_pollers_cancelled_alone_leaves_the_answer_to_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = asyncio.Event()
    answer = asyncio.Event()

    async def slow(client: object, task_queue: str, *, activities: bool) -> str | None:
        asked.set()
        await answer.wait()
        return ""  # Temporal lists no poller

    monkeypatch.setattr(durapipe.client._stalls, "_gone", slow)
    pollers = QueuePollers(cast(Client, None))
    first = asyncio.ensure_future(pollers.unpolled("q"))
    second = asyncio.ensure_future(pollers.unpolled("q"))
    await asked.wait()
    first.cancel()
    answer.set()
    assert await second == "no worker polls task queue 'q'"
    assert first.cancelled()


async def test_a_failed_question_about_a_queues_pollers_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0

    async def flaky(client: object, task_queue: str, *, activities: bool) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
        return None  # a worker polls

    monkeypatch.setattr(durapipe.client._stalls, "_gone", flaky)
    pollers = QueuePollers(cast(Client, None))
    with pytest.raises(RPCError):
        await pollers.unpolled("q")
    assert await pollers.unpolled("q") is None  # asked again, not the cached failure
    assert await pollers.unpolled("q") is None
    assert calls == 2  # the answer, once had, is kept for the command
