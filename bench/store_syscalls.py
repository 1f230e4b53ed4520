"""What a batch item costs the kernel: a durapipe worker's syscalls per leaf, checkpoints on and off.

``batch1000`` (the bench's batch; or ``concurrent200``, 200 runs of the one-step ``ask`` pipe
started at once, as ``make bench`` starts them) runs once on each of two workers of one dev
server, one with its SQLite checkpoint store and one with ``DURAPIPE_CHECKPOINTS=off``, each under
``strace -c -f`` for that run alone (after a warm-up run); prints each syscall's count per item on
both sides and the difference, then how the store's writes fell into event-loop turns (the workers
count, for each turn of the loop that stored a result, how many results it stored):

    python -m bench.store_syscalls [--part batch1000|concurrent200] [--items N]

strace slows a process several times over, so the time figures are not the point: the counts
are (they do not depend on the speed, except for the heartbeat and polling syscalls of a
slower run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client

import durapipe as dp
from bench.__main__ import load_pipeline
from bench._common import dev_server, note, process, wait_ready

# Run inside each worker: counts the results the loop stored per turn, written to a file each time
# a hundred more were stored (a write per 100 results: next to nothing in the counts).
_PROBE = """
import asyncio, collections, json, os, runpy, sys
from durapipe.stores import _checkpoints as cp
turns = collections.Counter()
pending = [0]
stored = [0]
def close():
    turns[pending[0]] += 1
    before, stored[0] = stored[0], stored[0] + pending[0]
    pending[0] = 0
    if before // 100 != stored[0] // 100:
        with open(os.environ["DURAPIPE_TURNS_FILE"], "w") as sink:
            json.dump(turns, sink)
original = cp.SqliteCheckpoints.put_nowait
def put_nowait(self, key, result):
    if pending[0] == 0:
        asyncio.get_running_loop().call_soon(close)
    pending[0] += 1
    return original(self, key, result)
cp.SqliteCheckpoints.put_nowait = put_nowait
sys.argv = ["durapipe", *sys.argv[1:]]
runpy.run_module("durapipe", run_name="__main__")
"""


def _strace_counts(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if match and match.group(2) != "total":
            counts[match.group(2)] = int(match.group(1))
    return counts


async def _run(client: Client, pipeline: dp.Pipeline, part: str, questions: list[str],
               queue: str) -> None:  # fmt: skip
    """One run of ``part`` on the worker of ``queue``."""
    if part == "batch1000":
        await dp.run(client, pipeline, "batch1000", {"questions": questions}, task_queue=queue)
        return
    # concurrent200: a run of the one-step ``ask`` pipe per item, all started at once.
    handles = [
        await dp.start(client, pipeline, "ask", {"question": q}, task_queue=queue)
        for q in questions
    ]
    await asyncio.gather(*(h.result() for h in handles))


async def _traced(pid: int, out: Path, work: Callable[[], Awaitable[None]]) -> Counter[str]:
    """``strace -c -f`` counts of process ``pid`` while ``work`` runs."""
    tracer = await asyncio.create_subprocess_exec(
        "strace", "-c", "-f", "-o", str(out), "-p", str(pid), stderr=asyncio.subprocess.DEVNULL
    )
    await asyncio.sleep(1.0)  # strace attaches to every thread (no line says when it did)
    began = time.perf_counter()
    await work()
    note(f"the traced run took {time.perf_counter() - began:.1f} s")
    tracer.send_signal(signal.SIGINT)
    await tracer.wait()
    return _strace_counts(out.read_text())


async def main(part: str, items: int) -> None:
    """Run ``part`` on both workers under strace and print syscalls per item."""
    with tempfile.TemporaryDirectory(prefix="durapipe-syscalls-") as tmp:
        work = Path(tmp)
        pipeline, file = load_pipeline(work)
        questions = [f"q{i}-{uuid.uuid4().hex[:6]}" for i in range(items)]
        per_item: dict[str, Counter[str]] = {}
        async with dev_server(None) as address:
            client = await dp.connect(address, pipeline=pipeline)
            for side, store in (("on", str(work / "checkpoints.sqlite")), ("off", "off")):
                queue = f"sys-{side}-{uuid.uuid4().hex[:8]}"
                log, turns = work / f"{side}.log", work / f"{side}.turns"
                args = [sys.executable, "-c", _PROBE, "worker", str(file), "--address", address,
                        "--task-queue", queue]  # fmt: skip
                env = {
                    **os.environ,
                    "DURAPIPE_CHECKPOINTS": store,
                    "DURAPIPE_TURNS_FILE": str(turns),
                }
                with process(args, log, env=env) as worker:
                    wait_ready(worker, log, "worker ready")
                    await _run(client, pipeline, part, [f"{q}-warm" for q in questions], queue)
                    per_item[side] = await _traced(
                        worker.pid,
                        work / f"{side}.strace",
                        lambda: _run(client, pipeline, part, questions, queue),  # noqa: B023
                    )
                if turns.exists():
                    sizes = {int(k): int(v) for k, v in json.loads(turns.read_text()).items()}
                    mean = sum(k * v for k, v in sizes.items()) / sum(sizes.values())
                    note(f"{side}: results stored per loop turn (size: turns) over both runs: "
                         f"{dict(sorted(sizes.items()))}, mean {mean:.2f}")  # fmt: skip
    names = sorted(set(per_item["on"]) | set(per_item["off"]),
                   key=lambda n: -(per_item["on"][n] - per_item["off"][n]))  # fmt: skip
    print(f"{'syscall':<20}{'on/item':>10}{'off/item':>10}{'diff':>10}")
    for name in names:
        on, off = per_item["on"][name] / items, per_item["off"][name] / items
        if on or off:
            print(f"{name:<20}{on:>10.2f}{off:>10.2f}{on - off:>10.2f}")
    total_on = sum(per_item["on"].values()) / items
    total_off = sum(per_item["off"].values()) / items
    print(f"{'total':<20}{total_on:>10.2f}{total_off:>10.2f}{total_on - total_off:>10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.store_syscalls", description=__doc__)
    parser.add_argument("--part", choices=("batch1000", "concurrent200"), default="batch1000")
    parser.add_argument("--items", type=int, help="items (runs for concurrent200) [1000, 200]")
    args = parser.parse_args()
    items = args.items or (1000 if args.part == "batch1000" else 200)
    asyncio.run(main(args.part, items))
