"""A SIGKILLed worker is noticed within seconds, not minutes (issue 17): Temporal lists its pollers
for about 3 minutes after its death, but its worker heartbeats stop at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import durapipe as dp
from durapipe.client import _stalls
from tests.conftest import ARTICLE, EXAMPLES
from tests.support import WorkerProcess, eventually, run_cli

BRIEF = EXAMPLES / "brief.yaml"


async def test_a_sigkilled_worker_is_noticed_within_twenty_seconds(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    pipeline = dp.load(BRIEF)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    worker = WorkerProcess(BRIEF, temporal_address, task_queue, tmp_path / "worker.log")
    run_id = f"orphan-{task_queue}"
    try:
        # Alive: a run on its queue is not stalled.
        handle = await dp.start(
            client, pipeline, "brief", {"article": ARTICLE}, run_id=run_id, task_queue=task_queue
        )
        await handle.result()
        assert await handle.stalled() is None
        # Its first heartbeat comes within 5 s of its start; a worker killed before that is
        # noticed by its pollers' age instead (70 s, not tested here: too slow for the suite).
        await eventually(lambda: _beating(client, task_queue), "a worker heartbeat")
    finally:
        worker.kill()
    died = time.monotonic()
    while (why := await handle.stalled()) is None:
        assert time.monotonic() - died < 40, "the dead worker was not noticed in 40 s"
        await asyncio.sleep(0.5)
    noticed = time.monotonic() - died
    assert f"no worker polls task queue '{task_queue}'" in why
    # The sentence says why the worker Temporal still lists counts as gone.
    assert f"its last worker, '{worker.process.pid}@" in why, why
    assert "sent no heartbeat for" in why and "(stopped, killed or cut off)" in why, why
    # Three missed 5 s heartbeats and a margin: 20 s, plus a poll of this loop.
    assert noticed <= 21, noticed
    # And `durapipe run` says so instead of waiting on the dead worker.
    ran = await asyncio.to_thread(
        run_cli,
        "run", "brief", "--file", str(BRIEF), "--input", f"article={ARTICLE}",
        "--address", temporal_address, "-t", task_queue,
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    assert "cannot make progress: no worker polls task queue" in ran.stderr, ran.stderr
    print(f"dead worker noticed after {noticed:.1f} s")


async def _beating(client: object, task_queue: str) -> bool:
    from temporalio.client import Client

    assert isinstance(client, Client)
    return bool(await _stalls._heartbeats(client, task_queue))
