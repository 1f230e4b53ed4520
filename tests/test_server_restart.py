"""The Temporal dev server stopped and restarted (same port, same DB file) in the middle of runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.testing import FakeProvider, Hang
from tests.chain import expected_output, paid_by_step, write_chain
from tests.conftest import EXAMPLES

RUNS = 4
STEPS = 3
TIMEOUT_S = 3.0  # each step's start-to-close timeout
HANG_S = 1.0  # each provider call's time: the first steps' answers arrive while the server is down


async def test_runs_complete_across_a_server_restart_and_no_step_is_paid_twice(
    task_queue: str, tmp_path: Path
) -> None:
    server = dp.ops.DevServer(headless=True, db_file=str(tmp_path / "temporal.db"))
    await asyncio.to_thread(server.start)
    try:
        async with FakeProvider() as fake:
            fake.set_default(Hang(HANG_S))
            chain = write_chain(tmp_path / "chain.yaml", fake.base_url, STEPS, timeout="3s")
            pipeline = dp.load(chain)
            client = await dp.connect(server.address, pipeline=pipeline)
            async with dp.build_worker(client, task_queue=task_queue):
                handles = [
                    await dp.start(
                        client, pipeline, "chain", {"topic": f"t{n}"}, task_queue=task_queue
                    )
                    for n in range(RUNS)
                ]
                # Every run's first call is at the provider when the server stops. The worker gets
                # the answers while the server is down and cannot report them; the server stays
                # down until those attempts' timeouts have passed, so when it is back it times
                # them out and retries them: each retry must come from the checkpoint, not from a
                # second paid call.
                in_flight = await fake.wait_until_async(lambda c: len(c) >= RUNS, timeout=60)
                await asyncio.to_thread(server.stop)  # SIGTERM to its own pid
                stopped_at = len(fake.calls)
                answered = await fake.wait_until_async(
                    lambda calls: all(c.finished_at for c in calls[:stopped_at]), timeout=60
                )
                timed_out_at = max(c.received_at for c in in_flight[:RUNS]) + TIMEOUT_S + 0.5
                # The attempts' own timeouts are on the clock: wait them out, nothing to await.
                await asyncio.sleep(max(0.0, timed_out_at - time.time()))
                await asyncio.to_thread(server.start)  # same port, same --db-filename
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), timeout=180
                )
    finally:
        await asyncio.to_thread(server.stop)

    assert stopped_at < RUNS * STEPS  # the runs really were cut off mid-way
    assert all(c.paid for c in answered[:stopped_at])  # answered while the server was down
    assert [r.output for r in results] == [expected_output(f"t{n}", STEPS) for n in range(RUNS)]
    # The restart made Temporal retry steps whose answers the worker already had ...
    retried = [s for r in results for s in r.steps if s.attempts > 1]
    assert retried, [s.attempts for r in results for s in r.steps]
    # ... and the provider, which bills every request, was paid exactly once per step of each run:
    # the retries were served from the checkpoints.
    assert paid_by_step(fake.calls) == {f"s{i}": RUNS for i in range(1, STEPS + 1)}
    assert all(s.cache_hit for s in retried)


async def test_result_of_a_server_gone_for_good_says_so_not_that_the_run_is_missing(
    task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After riding out SERVER_OUTAGE_S it raised RunNotFound "no run 'X': tcp connect error".
    monkeypatch.setattr("durapipe.client._handle.SERVER_OUTAGE_S", 1.0)
    server = dp.ops.DevServer(headless=True)
    await asyncio.to_thread(server.start)
    try:
        client = await dp.connect(server.address)
        handle = await dp.start(
            client, dp.load(EXAMPLES / "brief.yaml"), "brief", {"article": "x"},
            task_queue=task_queue,
        )  # fmt: skip
    finally:
        await asyncio.to_thread(server.stop)
    with pytest.raises(dp.RunError) as raised:
        await handle.result()
    assert not isinstance(raised.value, dp.RunNotFound)
    assert str(raised.value).startswith(
        f"lost Temporal at {server.address}: it did not answer for 1 s ("
    )
    assert str(raised.value).endswith(
        f"); run '{handle.run_id}' goes on there if it comes back: "
        f"`durapipe result {handle.run_id}` follows it then"
    )
