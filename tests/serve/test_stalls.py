"""The lifecycle reads' stall check (`durapipe.serve._stalls`) against the real dev server: however
often clients poll a run no worker runs, Temporal is asked about its queue once a window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import durapipe as dp
from durapipe.serve._stalls import StalledRuns

ARTICLE = "The council approved the new bridge on Monday."


async def test_polls_of_a_stalled_run_ask_temporal_once_a_window(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await dp.connect(temporal_address)
    runs = [
        await dp.start(client, brief_yaml, "brief", {"article": ARTICLE}, task_queue=task_queue)
        for _ in range(3)
    ]
    asked: list[str] = []
    service = client.workflow_service
    describe = service.describe_task_queue

    async def counted(request: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(request.task_queue.name)
        return await describe(request, *args, **kwargs)

    monkeypatch.setattr(service, "describe_task_queue", counted)
    stalls = StalledRuns(client, kept_s=1.0)
    try:
        # 30 polls at once (10 clients on each of 3 runs of one queue), then 30 more in the window.
        for _ in range(2):
            said = await asyncio.gather(
                *(stalls.degradation(run.run_id) for run in runs for _ in range(10))
            )
            assert all(d is not None and d["reason"] == "no_worker" for d in said), said
        assert asked == [task_queue]
        # Past the window, Temporal is asked again: a worker that started would be seen.
        await asyncio.sleep(1.0)  # the window itself is what is tested
        assert await stalls.degradation(runs[0].run_id) is not None
        assert asked == [task_queue, task_queue]
    finally:
        for run in runs:
            await client.get_workflow_handle(run.run_id).terminate("test over")
