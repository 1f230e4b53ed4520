"""What the checkpoint guarantee costs a batch: worker CPU per item, with checkpoints on and off.

``batch1000`` (the bench's batch: 1,000 llm items on the offline model, 100 at once) on three
workers of one dev server, each its own process: durapipe with its SQLite checkpoint store (what
``make bench`` runs), durapipe with ``DURAPIPE_CHECKPOINTS=off``, and the hand-written baseline.
Runs alternate, their order rotating every round; each worker's CPU is read as ``make bench``
reads it (from before a run until the worker is quiet after it):

    python -m bench.batch_checkpoints [--rounds 3] [--sqlite3]

Prints each side's worker CPU per item and the two ratios against hand-written. ``--sqlite3`` adds
a fourth worker whose checkpoint store's event-loop calls go through Python's ``sqlite3``
(``DURAPIPE_SQLITE_HELD=off``, letting go of the GIL in every call) and prints the median of the
per-round ratios of the default worker over it, worker CPU and wall. Checkpoints off
is not a mode to run in production (a retried step may pay twice): it prices the guarantee.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import durapipe as dp
from bench import handwritten
from bench.__main__ import BATCH_CONCURRENCY, BATCH_ITEMS, load_pipeline, measure
from bench._common import dev_server, durapipe_cli, figure, note, process, wait_ready


async def main(rounds: int, sqlite3_side: bool = False) -> None:
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
                process(
                    durapipe_cli("worker", str(file), "--address", address, "--task-queue",
                                 queue + "-sqlite3"),
                    work / "sqlite3.log",
                    env={**os.environ, "DURAPIPE_CHECKPOINTS": str(work / "sqlite3.sqlite"),
                         "DURAPIPE_SQLITE_HELD": "off"},
                ) if sqlite3_side else contextlib.nullcontext() as plain,
            ):  # fmt: skip
                children = [(on, "on"), (off, "off"), (hw, "hw")]
                for child, log in children + ([(plain, "sqlite3")] if plain else []):
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
                if plain:
                    sides["checkpoints_on_sqlite3"] = (ours(queue + "-sqlite3"), plain.pid)
                for work_of, _ in sides.values():
                    await work_of()  # warm every side
                cpu: dict[str, float] = dict.fromkeys(sides, 0.0)
                runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
                names = list(sides)
                for n in range(rounds):
                    for name in names[n % len(names) :] + names[: n % len(names)]:
                        work_of, pid = sides[name]
                        wall, spent = await measure(work_of, pid)
                        cpu[name] += spent
                        runs[name].append((wall, spent))
    per_item = {name: cpu[name] / rounds / BATCH_ITEMS * 1e3 for name in cpu}
    for name, ms in per_item.items():
        figure(f"batch1000.cpu_ms_per_item.{name}", ms)
    base = per_item["handwritten"]
    figure("batch1000.cpu_ratio.checkpoints_on", per_item["checkpoints_on"] / base)
    figure("batch1000.cpu_ratio.checkpoints_off", per_item["checkpoints_off"] / base)
    if sqlite3_side:
        for index, what in ((0, "wall"), (1, "cpu")):
            ratios = [
                held[index] / plain[index]
                for held, plain in zip(
                    runs["checkpoints_on"], runs["checkpoints_on_sqlite3"], strict=True
                )
            ]
            figure(
                f"batch1000.{what}_ratio.held_over_sqlite3", statistics.median(ratios), decimals=4
            )
            note(f"batch1000.{what}_ratio.held_over_sqlite3 per round: "
                 + " ".join(f"{r:.4f}" for r in ratios))  # fmt: skip
    note(f"{rounds} rounds; the checkpoint guarantee costs "
         f"{(per_item['checkpoints_on'] - per_item['checkpoints_off']) * 1e3:.0f} us per item")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.batch_checkpoints", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sqlite3", action="store_true", help="add a worker on Python's sqlite3")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.sqlite3))
