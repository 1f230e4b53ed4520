"""A batch over 10,000 items on a dev server this script starts: completion and history bound.

Prints ``name = value`` lines: items completed, the largest history among the run's workflows,
how many workflows the run used, wall time, and the bound `batch_history_bound` claims for the
chunk size (it does not depend on the list's length). Run it with ``make bench-batch``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch_tools
from _common import dev_server

import durapipe as dp
from durapipe.adapters import batch_history_bound
from durapipe.testing import run_histories

ITEMS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
CHUNK_SIZE = 100
MAX_CONCURRENCY = 50


async def main() -> None:
    mapped = dp.batch(
        "batch10k",
        inputs={"numbers": list[int]},
        over="numbers",
        item="n",
        pipe=dp.tool(batch_tools.square),
        max_concurrency=MAX_CONCURRENCY,
        chunk_size=CHUNK_SIZE,
    )
    pipeline = dp.pipeline(mapped)
    numbers = list(range(ITEMS))
    async with dev_server(None) as address:
        client = await dp.connect(address, pipeline=pipeline)
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        run_id = f"batch10k-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        async with dp.build_worker(client, task_queue=queue, max_concurrent_activities=100):
            result = await dp.run(
                client, pipeline, "batch10k", {"numbers": numbers}, run_id=run_id, task_queue=queue
            )
        wall = time.monotonic() - started
        assert result.output == [n * n for n in numbers], "wrong results"
        histories = await run_histories(client, run_id)
    completed = result.steps[0].counts.get("succeeded", 0)
    print(f"batch10k.items = {ITEMS}")
    print(f"batch10k.items_completed = {completed}")
    print(f"batch10k.max_history_events = {max(histories.values())}")
    print(f"batch10k.workflows = {len(histories)}")
    print(f"batch10k.wall_s = {wall:.1f}")
    print(f"batch10k.history_bound = {batch_history_bound(CHUNK_SIZE)}")
    print(f"batch10k.chunk_size = {CHUNK_SIZE}")
    # A single workflow mapping every item would record at least 3 events per activity.
    print(f"batch10k.flat_history_events_at_least = {3 * ITEMS}")


if __name__ == "__main__":
    asyncio.run(main())
