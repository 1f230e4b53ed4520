"""The Temporal dev server stopped and restarted (same port, same DB file) in the middle of runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import durapipe as dp
from durapipe.testing import FakeProvider, Hang
from tests.chain import expected_output, paid_by_step, write_chain

RUNS = 4
STEPS = 3


async def test_runs_complete_across_a_server_restart(task_queue: str, tmp_path: Path) -> None:
    server = dp.ops.DevServer(headless=True, db_file=str(tmp_path / "temporal.db"))
    await asyncio.to_thread(server.start)
    try:
        async with FakeProvider() as fake:
            fake.set_default(Hang(0.4))  # each call takes a while, so runs are mid-way at the stop
            pipeline = dp.load(write_chain(tmp_path / "chain.yaml", fake.base_url, steps=STEPS))
            client = await dp.connect(server.address, pipeline=pipeline)
            async with dp.build_worker(client, task_queue=task_queue):
                handles = [
                    await dp.start(
                        client, pipeline, "chain", {"topic": f"t{n}"}, task_queue=task_queue
                    )
                    for n in range(RUNS)
                ]
                await fake.wait_until_async(lambda calls: len(calls) >= RUNS, timeout=60)
                await asyncio.to_thread(server.stop)  # SIGTERM to its own pid
                stopped_at = len(fake.calls)
                await asyncio.to_thread(server.start)  # same port, same --db-filename
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), timeout=180
                )
    finally:
        await asyncio.to_thread(server.stop)

    assert stopped_at < RUNS * STEPS  # the runs really were cut off mid-way
    assert [r.output for r in results] == [expected_output(f"t{n}", STEPS) for n in range(RUNS)]
    assert all(n >= RUNS for n in paid_by_step(fake.calls).values())
