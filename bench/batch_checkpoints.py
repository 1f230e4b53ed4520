"""What the checkpoint guarantee costs a batch: worker CPU per item, with checkpoints on and off.

``batch1000`` (the bench's batch: 1,000 llm items on the offline model, 100 at once) on three
workers of one dev server, each its own process: durapipe with its SQLite checkpoint store (what
``make bench`` runs), durapipe with ``DURAPIPE_CHECKPOINTS=off``, and the hand-written baseline.
Runs alternate, their order rotating every round; each worker's CPU is read as ``make bench``
reads it (from before a run until the worker is quiet after it):

    python -m bench.batch_checkpoints [--rounds 3]

Prints each side's worker CPU per item and the two ratios against hand-written. Checkpoints off
is not a mode to run in production (a retried step may pay twice): it prices the guarantee.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import durapipe as dp
from bench import handwritten
from bench.__main__ import BATCH_CONCURRENCY, BATCH_ITEMS, load_pipeline, measure
from bench._common import dev_server, durapipe_cli, figure, note, process, wait_ready


async def main(rounds: int) -> None:
    """Run the three sides alternately and print CPU per item."""
    with tempfile.TemporaryDirectory(prefix="durapipe-batch-cp-") as tmp:
        work = Path(tmp)
        pipeline, file = load_pipeline(work)
        questions = [f"q{i}" for i in range(BATCH_ITEMS)]
        async with dev_server(None) as address:
            queue = f"bcp-{uuid.uuid4().hex[:8]}"
            stores = {"on": str(work / "checkpoints.sqlite"), "off": "off"}
            with (
                process(
                    durapipe_cli("worker", str(file), "--address", address, "--task-queue", queue),
                    work / "on.log",
                    env={**os.environ, "DURAPIPE_CHECKPOINTS": stores["on"]},
                ) as on,
                process(
                    durapipe_cli("worker", str(file), "--address", address, "--task-queue",
                                 queue + "-off"),
                    work / "off.log",
                    env={**os.environ, "DURAPIPE_CHECKPOINTS": stores["off"]},
                ) as off,
                process(
                    [sys.executable, "-m", "bench.handwritten", "--address", address,
                     "--task-queue", queue + "-hw"],
                    work / "hw.log",
                ) as hw,
            ):  # fmt: skip
                for child, log in ((on, "on"), (off, "off"), (hw, "hw")):
                    wait_ready(child, work / f"{log}.log", "worker ready")
                client = await dp.connect(address, pipeline=pipeline)
                theirs = await handwritten.connect(address)

                def ours(task_queue: str) -> Callable[[], Awaitable[object]]:
                    return lambda: dp.run(
                        client, pipeline, "batch1000", {"questions": questions},
                        task_queue=task_queue,
                    )  # fmt: skip

                async def baseline() -> object:
                    return await theirs.execute_workflow(
                        "bench.batch",
                        args=[questions, BATCH_CONCURRENCY],
                        id=f"hw-{uuid.uuid4().hex}",
                        task_queue=queue + "-hw",
                    )

                sides: dict[str, tuple[Callable[[], Awaitable[object]], int]] = {
                    "checkpoints_on": (ours(queue), on.pid),
                    "checkpoints_off": (ours(queue + "-off"), off.pid),
                    "handwritten": (baseline, hw.pid),
                }
                for work_of, _ in sides.values():
                    await work_of()  # warm every side
                cpu: dict[str, float] = dict.fromkeys(sides, 0.0)
                names = list(sides)
                for n in range(rounds):
                    for name in names[n % len(names) :] + names[: n % len(names)]:
                        work_of, pid = sides[name]
                        _, spent = await measure(work_of, pid)
                        cpu[name] += spent
    per_item = {name: cpu[name] / rounds / BATCH_ITEMS * 1e3 for name in cpu}
    for name, ms in per_item.items():
        figure(f"batch1000.cpu_ms_per_item.{name}", ms)
    base = per_item["handwritten"]
    figure("batch1000.cpu_ratio.checkpoints_on", per_item["checkpoints_on"] / base)
    figure("batch1000.cpu_ratio.checkpoints_off", per_item["checkpoints_off"] / base)
    note(f"{rounds} rounds; the checkpoint guarantee costs "
         f"{(per_item['checkpoints_on'] - per_item['checkpoints_off']) * 1e3:.0f} us per item")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.batch_checkpoints", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
