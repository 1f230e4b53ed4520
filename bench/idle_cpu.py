"""What an idle worker spends CPU on, thread by thread: durapipe's worker beside the hand-written
one with temporalio's default worker heartbeat (every 60 s), with durapipe's (every 5 s) and with
none, all idle at once against one dev server, so that every window sees the same machine.

``python -m bench.idle_cpu [--address HOST:PORT] [--windows 4] [--window-s 30]``

Each window prints, per worker, its CPU (ns-exact, from ``/proc/PID/task/*/schedstat``) by thread:
``main`` (the interpreter's thread), ``tokio-rt-worker`` (the SDK core's runtime: polls and the
heartbeat RPC), ``temporal-real-s(ysinfo)`` (the core thread that reads the host's CPU and memory
for each heartbeat), and how often the main thread ran. Then the medians:

- ``idle_cpu.beat_ms``: one worker heartbeat's CPU, (hand-written at 5 s - hand-written without
  heartbeats) / beats per window; the same code beats in durapipe's worker (the SDK core's).
- ``idle_cpu.durapipe_own_ms``: what durapipe's worker spends idle beyond the hand-written one
  that beats as often (per window).

The machine is shared: compare the sides within a window, not windows with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench._common import (
    dev_server,
    durapipe_cli,
    figure,
    load_average,
    note,
    process,
    wait_ready,
)
from durapipe.client._telemetry import WORKER_HEARTBEAT

PIPELINE = Path(__file__).resolve().parent.parent / "examples" / "brief.yaml"
# The hand-written worker's heartbeat intervals (``--worker-heartbeat``): temporalio's default,
# durapipe's, and none.
HAND_WRITTEN = {"60s": "60", "5s": f"{WORKER_HEARTBEAT.total_seconds():g}", "off": "off"}
# How long the workers idle before the first window: what starting left behind (the first polls,
# the first beats, litellm's logging tasks) is not idle cost.
SETTLE_S = 10.0


def thread_times(pid: int) -> dict[int, tuple[str, int, int]]:
    """Each thread of ``pid``: its name (``main`` for the interpreter's own), the CPU it has used
    (ns) and how many times it has run, from ``/proc/PID/task/TID/schedstat``."""
    threads: dict[int, tuple[str, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            ran_ns, _, slices = (task / "schedstat").read_text().split()[:3]
        except OSError:  # the thread ended meanwhile
            continue
        name = "main" if task.name == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")]
        threads[int(task.name)] = (name, int(ran_ns), int(slices))
    return threads


def spent(
    before: dict[int, tuple[str, int, int]], after: dict[int, tuple[str, int, int]]
) -> tuple[dict[str, float], int]:
    """CPU (ms) by thread name between two `thread_times`, and how often the main thread ran."""
    by_name: dict[str, float] = collections.defaultdict(float)
    main_runs = 0
    for tid, (name, ran_ns, slices) in after.items():
        _, ran_before, slices_before = before.get(tid, (name, 0, 0))
        by_name[name] += (ran_ns - ran_before) / 1e6
        if name == "main":
            main_runs = slices - slices_before
    return by_name, main_runs


async def measure(pids: dict[str, int], windows: int, window_s: float) -> dict[str, list[float]]:
    """Each side's CPU (ms) in each of ``windows`` windows of ``window_s``, printed by thread."""
    totals: dict[str, list[float]] = {side: [] for side in pids}
    for number in range(windows):
        before = {side: thread_times(pid) for side, pid in pids.items()}
        await asyncio.sleep(window_s)
        load_average(f"w{number}")
        for side, pid in pids.items():
            by_name, main_runs = spent(before[side], thread_times(pid))
            total = sum(by_name.values())
            totals[side].append(total)
            figure(f"idle_cpu.{side}.w{number}.ms", total, decimals=1)
            busiest = sorted(by_name.items(), key=lambda item: -item[1])
            threads = ", ".join(f"{name} {ms:.1f}" for name, ms in busiest if ms >= 0.05)
            note(f"{side} w{number}: {threads} ms; main thread ran {main_runs} times")
    return totals


async def idle(args: argparse.Namespace, work: Path) -> None:
    """Start the workers, let them settle, measure, print the medians."""
    async with dev_server(args.address) as address:
        queue = f"idle-{uuid.uuid4().hex[:8]}"
        with ExitStack() as stack:
            env = {"DURAPIPE_CHECKPOINTS": str(work / "checkpoints.sqlite")}
            ours = stack.enter_context(
                process(
                    durapipe_cli("worker", str(args.pipeline), "--address", address, "-t", queue),
                    work / "durapipe.log",
                    env={**os.environ, **env},
                )
            )
            children = {"durapipe": (ours, work / "durapipe.log", "worker ready")}
            for label, every in HAND_WRITTEN.items():
                log = work / f"hand-written-{label}.log"
                command = [sys.executable, "-m", "bench.handwritten", "--address", address,
                           "--task-queue", f"{queue}-{label}", "--worker-heartbeat", every]  # fmt: skip
                child = stack.enter_context(process(command, log))
                children[f"hand-written.{label}"] = (child, log, "worker ready")
            for child, log, ready in children.values():
                wait_ready(child, log, ready)
            await asyncio.sleep(SETTLE_S)
            pids = {side: child.pid for side, (child, _, _) in children.items()}
            totals = await measure(pids, args.windows, args.window_s)
    beats = args.window_s / WORKER_HEARTBEAT.total_seconds()
    beat = [
        (five - off) / beats
        for five, off in zip(totals["hand-written.5s"], totals["hand-written.off"], strict=True)
    ]
    own = [
        ours - five
        for ours, five in zip(totals["durapipe"], totals["hand-written.5s"], strict=True)
    ]
    for side, values in totals.items():
        figure(f"idle_cpu.{side}.median_ms", statistics.median(values), decimals=1)
    figure("idle_cpu.beat_ms", statistics.median(beat), decimals=2)
    figure("idle_cpu.durapipe_own_ms", statistics.median(own), decimals=1)
    note(f"per window: beat {' '.join(f'{b:.2f}' for b in beat)} ms; "
         f"durapipe's own {' '.join(f'{o:.1f}' for o in own)} ms")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the idle bench (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.idle_cpu", description=__doc__)
    parser.add_argument("--address", help="a running server [default: a fresh dev server]")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--pipeline", type=Path, default=PIPELINE)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idle-cpu-") as folder:
        asyncio.run(idle(args, Path(folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
