"""`warm_up` waits for litellm's logging of its warm-up call, and for nothing else."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import durapipe.worker as worker
from durapipe.adapters._litellm import litellm_tasks, warm_provider_clients
from durapipe.ops import warm_up


async def test_warm_up_waits_for_litellms_tasks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    await warm_up()  # litellm imported and its clients built: what follows takes milliseconds
    warm_litellm = warm_provider_clients
    unrelated: list[asyncio.Task[Any]] = []
    release = asyncio.Event()

    async def with_other_work() -> None:
        # Something else in the process starts a task while the worker warms up (a pool's idle
        # timer, the caller's own work); it runs until released.
        unrelated.append(asyncio.create_task(release.wait()))
        await warm_litellm()

    monkeypatch.setattr(worker, "warm_provider_clients", with_other_work)
    before = asyncio.all_tasks()
    started = time.monotonic()
    await warm_up()
    took = time.monotonic() - started
    try:
        # Waiting on the unrelated task would have taken the whole bound.
        assert took < worker.WARM_UP_LOGGING_S, took
        # litellm's logging of the call has run; the unrelated task is left running.
        assert asyncio.all_tasks() - before == set(unrelated)
        assert not unrelated[0].done()
    finally:
        release.set()
        await unrelated[0]


async def test_litellms_tasks_are_told_by_their_code_and_its_endless_loop_left_out() -> None:
    await warm_up()  # litellm imported
    from litellm._service_logger import ServiceLogging
    from litellm.litellm_core_utils.logging_worker import LoggingWorker

    async def ours() -> None:
        await asyncio.sleep(0)

    hook = ServiceLogging().async_service_success_hook(
        service="redis",  # type: ignore[arg-type]
        call_type="get",
        duration=0.0,
    )
    logging_worker = LoggingWorker()
    logging_worker.start()  # its loop task waits on its queue forever
    mine, its = asyncio.create_task(ours()), asyncio.create_task(hook)
    try:
        loop = logging_worker._worker_task
        assert loop is not None
        assert litellm_tasks({mine, its, loop}) == {its}
    finally:
        await asyncio.gather(mine, its)
        await logging_worker.stop()
