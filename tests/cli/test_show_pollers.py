"""One command asks the server about one task queue's pollers once: `durapipe show` of a run that
cannot make progress reads its totals and explains its stall from one DescribeTaskQueue per queue,
`durapipe runs` from one per queue for the whole listing, and the next command asks again
(workers come and go). Likewise `durapipe show` describes its run once (DescribeWorkflowExecution)
for its header, its steps and its stall check."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    DescribeWorkflowExecutionRequest,
)
from temporalio.client import Client

import durapipe as dp
import durapipe.client
from durapipe.workflows._search import PIPE
from tests.conftest import ROOT
from tests.support import acli, eventually, routed_pipeline

CONTROL = ROOT / "tests" / "fixtures" / "control.yaml"


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """DescribeTaskQueue calls of the commands' clients, by task queue name (the test's own
    client, from `durapipe.client.connect`, is not counted)."""
    counts: Counter[str] = Counter()
    connect = durapipe.client.connect

    async def counting_connect(*args: Any, **kwargs: Any) -> Client:
        client = await connect(*args, **kwargs)
        service = client.workflow_service
        describe = service.describe_task_queue

        async def counted(request: DescribeTaskQueueRequest, *more: Any, **named: Any) -> Any:
            counts[request.task_queue.name] += 1
            return await describe(request, *more, **named)

        monkeypatch.setattr(service, "describe_task_queue", counted)
        return client

    monkeypatch.setattr(dp, "connect", counting_connect)
    return counts


@pytest.fixture
def described(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """DescribeWorkflowExecution calls of the commands' clients, by workflow id (the SDK's
    `describe()` and the raw calls alike go through this one service method)."""
    counts: Counter[str] = Counter()
    connect = durapipe.client.connect

    async def counting_connect(*args: Any, **kwargs: Any) -> Client:
        client = await connect(*args, **kwargs)
        service = client.workflow_service
        describe = service.describe_workflow_execution

        async def counted(
            request: DescribeWorkflowExecutionRequest, *more: Any, **named: Any
        ) -> Any:
            counts[request.execution.workflow_id] += 1
            return await describe(request, *more, **named)

        monkeypatch.setattr(service, "describe_workflow_execution", counted)
        return client

    monkeypatch.setattr(dp, "connect", counting_connect)
    return counts


def _pipeline(pipe: str) -> dp.Pipeline:
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", model="durapipe/offline")
    return dp.pipeline(dp.sequence(pipe, inputs={"question": str}, steps=[dp.step(ask)]))


async def test_show_of_a_run_no_worker_runs_asks_its_queue_once_per_command(
    temporal_address: str, task_queue: str, asked: Counter[str]
) -> None:
    pipe = f"stalled{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(pipe)
    client = await durapipe.client.connect(temporal_address, pipeline=pipeline)
    handle = await dp.start(
        client, pipeline, pipe, {"question": "q"}, task_queue=task_queue, searchable_totals=False
    )
    try:
        shown = await acli(temporal_address, "show", handle.run_id)
        assert shown.returncode == 1, shown.stderr
        assert f"no worker polls task queue '{task_queue}'" in shown.stderr
        # Its totals (searchable totals off) and its stall sentence, from one answer.
        assert asked == {task_queue: 1}
        again = await acli(temporal_address, "show", handle.run_id)
        assert again.stderr == shown.stderr
        assert asked == {task_queue: 2}  # the next command asks again: a worker may have come
    finally:
        await client.get_workflow_handle(handle.run_id).terminate("test over")


async def test_show_of_a_run_whose_routed_leaf_has_no_worker_asks_each_queue_once(
    temporal_address: str, task_queue: str, tmp_path: Path, asked: Counter[str]
) -> None:
    pipe = f"routed{uuid.uuid4().hex[:8]}"
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "routed.yaml"
    file.write_text(routed_pipeline(pipe, nobody))
    pipeline = dp.load(file)
    client = await durapipe.client.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client, pipeline, pipe, {"topic": "rivers"}, task_queue=task_queue,
            searchable_totals=False,
        )  # fmt: skip
        try:
            shown = await acli(temporal_address, "show", handle.run_id)
        finally:
            await client.get_workflow_handle(handle.run_id).terminate("test over")
    assert shown.returncode == 0, shown.stderr
    assert f"routed to task queue '{nobody}', which no worker polls" in shown.stderr
    # The run's queue: for its totals' query and for the stall check; the leaf's: for the check.
    assert asked == {task_queue: 1, nobody: 1}


async def test_runs_asks_a_queue_once_for_the_whole_listing(
    temporal_address: str, task_queue: str, asked: Counter[str]
) -> None:
    pipe = f"listed{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(pipe)
    client = await durapipe.client.connect(temporal_address, pipeline=pipeline)
    ids: list[str] = []
    for _ in range(3):
        handle = await dp.start(
            client, pipeline, pipe, {"question": "q"}, task_queue=task_queue,
            searchable_totals=False,
        )  # fmt: skip
        ids.append(handle.run_id)
    try:

        async def all_visible() -> bool:
            found = await client.count_workflows(f"{PIPE.name} = '{pipe}'")
            return found.count == len(ids)

        await eventually(all_visible, "the runs to be listed")
        listed = await acli(temporal_address, "runs", "--pipe", pipe)
        assert listed.returncode == 0, listed.stderr
        assert (
            f"the totals of 3 running runs could not be read; no worker polls task queue "
            f"'{task_queue}'" in listed.stderr
        )
        assert asked == {task_queue: 1}
    finally:
        for run_id in ids:
            await client.get_workflow_handle(run_id).terminate("test over")


async def test_show_describes_its_run_once(
    temporal_address: str, task_queue: str, described: Counter[str]
) -> None:
    pipe = f"described{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(pipe)
    client = await durapipe.client.connect(temporal_address, pipeline=pipeline)
    # A run no worker runs (its totals, its steps and its stall from one describe).
    stalled = await dp.start(
        client, pipeline, pipe, {"question": "q"}, task_queue=task_queue, searchable_totals=False
    )
    try:
        shown = await acli(temporal_address, "show", stalled.run_id)
        assert shown.returncode == 1, shown.stderr
    finally:
        await client.get_workflow_handle(stalled.run_id).terminate("test over")
    assert described == {stalled.run_id: 1}
    described.clear()
    async with dp.build_worker(client, task_queue=task_queue):
        done = await dp.start(client, pipeline, pipe, {"question": "q"}, task_queue=task_queue)
        await done.result()
        shown = await acli(temporal_address, "show", done.run_id)
        assert shown.returncode == 0, shown.stderr
        assert described == {done.run_id: 1}
        described.clear()
        # A running run a worker answers for, waiting for a human: steps by query, stall check.
        control = dp.load(CONTROL)
        waiting = await dp.start(
            client, control, "review_post", {"topic": "rivers"}, task_queue=task_queue
        )
        try:

            async def at_the_gate() -> bool:
                steps = await waiting.steps()
                return any(s.status == "waiting" for s in steps)

            await eventually(at_the_gate, "the run to wait for its approval")
            described.clear()
            shown = await acli(temporal_address, "show", waiting.run_id)
            assert shown.returncode == 0, shown.stderr
            assert "waiting" in shown.stdout, shown.stdout
        finally:
            await client.get_workflow_handle(waiting.run_id).terminate("test over")
    assert described == {waiting.run_id: 1}
