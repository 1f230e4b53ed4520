"""What each of durapipe's per-leaf features costs a hand-written worker: an A/B in worker CPU.

`make bench` races a hand-written baseline with all of durapipe's user-visible features beside the
minimal one, which gives their price together, from two worker processes. This prices them one at a
time, in ONE hand-written worker process (so no difference between processes counts), in
batch1000's shape (a batch of activities, 100 at once; 500 by default, ``--leaves``), each variant
`bench.handwritten`'s batch workflow changed in one thing only:

- ``minimal``: `bench.handwritten`'s activity and options (start-to-close, 5 attempts);
- ``minimal_again``: the same again, an A/A pair: how far apart the same code measures here;
- ``heartbeat``: plus durapipe's heartbeat timeout on each activity (20 s, an llm step's of 120),
  and the activity heartbeating every third of it from a timer, as durapipe's does (a call that
  ends sooner sends none);
- ``heartbeat_timeout_only``: the timeout without the activity's timer (what the SDK and the
  server do for it);
- ``summary``: plus a UI summary per activity of durapipe's length;
- ``features``: `bench.handwritten_features`'s activity and options (the summary, the heartbeat
  timeout, its retry policy and cancellation type), without the totals upsert.

Every round runs each variant once, in an order rotated and reversed round by round; round 0 is a
discarded warm-up. Each run starts on a quiet worker and a quiet dev server, and its CPU is the
worker process's until it is quiet after (`bench._common.cpu_when_quiet`). Prints every round's
CPU ms per leaf, then each variant over ``minimal``: the median of per-round differences in ms
per leaf with their quartiles and range, the 95% interval of their mean (1.96 standard errors),
and how many rounds were dearer. ``minimal_again`` is the noise floor: a feature that differs
from ``minimal`` no more than ``minimal_again`` does costs nothing this bench can see.

``python -m bench.feature_ab [--rounds N] [--variants minimal,heartbeat,...] [--leaves N]``
(``make bench-features``; 24-36 s a round of the default 4 variants at load average 25)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from bench import handwritten, handwritten_features
from bench._common import (
    Spread,
    cpu_when_quiet,
    dev_server,
    figure,
    load_average,
    note,
    process,
    servers_quiet,
    wait_ready,
)

with workflow.unsafe.imports_passed_through():
    from durapipe.adapters._litellm import litellm_module

CONCURRENCY = 100
VARIANTS = (
    "minimal",
    "minimal_again",
    "heartbeat",
    "heartbeat_timeout_only",
    "summary",
    "features",
)
DEFAULT_VARIANTS = ("minimal", "minimal_again", "heartbeat", "summary")
# The activity each variant calls and its options (the summary is added per call).
_PLAIN = {**handwritten.OPTIONS}
_HEARTBEAT = {**handwritten.OPTIONS, "heartbeat_timeout": handwritten_features.HEARTBEAT_TIMEOUT}
PLANS: dict[str, tuple[Any, dict[str, Any], bool]] = {
    "minimal": (handwritten.ask, _PLAIN, False),
    "minimal_again": (handwritten.ask, _PLAIN, False),
    "heartbeat": (handwritten_features.ask, _HEARTBEAT, False),
    "heartbeat_timeout_only": (handwritten.ask, _HEARTBEAT, False),
    "summary": (handwritten.ask, _PLAIN, True),
    "features": (handwritten_features.ask, handwritten_features.OPTIONS, True),
}


@workflow.defn(name="bench.ab.batch", sandboxed=False)
class BatchWorkflow:
    """`bench.handwritten`'s batch, its activity and options those of ``variant``."""

    @workflow.run
    async def run(self, texts: list[str], concurrency: int, variant: str) -> list[str]:
        """The answers, in input order."""
        act, options, labelled = PLANS[variant]
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, text: str) -> str:
            async with gate:
                extra = {"summary": f"ask [{index}] · {handwritten.MODEL}"} if labelled else {}
                answer = await workflow.execute_activity(
                    act, handwritten.question(text), **options, **extra
                )
                return str(answer.text)

        return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(texts))))


def build(client: Client, task_queue: str) -> Worker:
    """The worker every variant runs on."""
    litellm_module()
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BatchWorkflow],
        activities=[handwritten.ask, handwritten_features.ask],
    )


async def run_variant(
    client: Client, queue: str, variant: str, leaves: int, run_id: str | None = None
) -> None:
    """One batch of ``leaves`` calls of ``variant``, to its end."""
    await client.execute_workflow(
        "bench.ab.batch",
        args=[[f"q{i}" for i in range(leaves)], CONCURRENCY, variant],
        id=run_id or f"ab-{variant}-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def _serve(address: str, task_queue: str) -> None:
    client = await handwritten.connect(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with build(client, task_queue):
        print("worker ready", flush=True)
        await stop.wait()


async def _measure(client: Client, queue: str, pid: int, variant: str, leaves: int) -> float:
    """Worker CPU seconds of one run of ``variant`` (started on a quiet server and worker)."""
    await servers_quiet()
    before = await cpu_when_quiet(pid)
    await run_variant(client, queue, variant, leaves)
    return await cpu_when_quiet(pid) - before


def order(round_no: int, variants: list[str]) -> list[str]:
    """Round ``round_no``'s order: rotated one place every two rounds, the second of each two
    reversed (A B C D, D C B A, B C D A, A D C B, ...), so each variant runs first and last in
    turn, and before and after its neighbours alike."""
    shift = round_no // 2 % len(variants)
    rotated = variants[shift:] + variants[:shift]
    return rotated if round_no % 2 == 0 else rotated[::-1]


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feature_ab")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--leaves", type=int, default=500)
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, among {', '.join(VARIANTS)} [default: %(default)s]",
    )
    parser.add_argument("--address", help="an existing Temporal server [default: start one]")
    parser.add_argument("--serve", metavar="TASK_QUEUE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await _serve(args.address, args.serve)
        return 0
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in PLANS]
    if unknown:
        parser.error(f"--variants: no variant {unknown[0]!r}; choose among {', '.join(VARIANTS)}")
    if "minimal" not in variants or len(set(variants)) != len(variants):
        parser.error(
            "--variants: each at most once, minimal included (the others are priced against it)"
        )
    if args.rounds < 1 or args.leaves < 1:
        parser.error("--rounds and --leaves must be at least 1")
    load_average("start")
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="durapipe-feature-ab-") as tmp:
        async with dev_server(args.address) as address:
            queue = f"ab-{uuid.uuid4().hex[:8]}"
            log = Path(tmp) / "worker.log"
            argv = [sys.executable, "-m", "bench.feature_ab", "--address", address,
                    "--serve", queue]  # fmt: skip
            with process(argv, log) as worker:
                wait_ready(worker, log, "worker ready")
                client = await handwritten.connect(address)
                for round_no in range(args.rounds + 1):
                    began = time.monotonic()
                    line = []
                    for variant in order(round_no, variants):
                        used = await _measure(client, queue, worker.pid, variant, args.leaves)
                        line.append(f"{variant} {used / args.leaves * 1000:.3f}")
                        if round_no:
                            cpu[variant].append(used / args.leaves * 1000)
                    loads = " ".join(f"{x:.2f}" for x in os.getloadavg())
                    note(
                        f"round {round_no}{' (warm-up, discarded)' if not round_no else ''}: "
                        f"CPU ms per leaf {', '.join(line)}; load {loads}; "
                        f"{time.monotonic() - began:.0f} s"
                    )
    load_average("end")
    for variant in variants:
        figure(f"feature_ab.{variant}.cpu_ms_per_leaf", statistics.median(cpu[variant]))
    for variant in variants:
        if variant == "minimal":
            continue
        diffs = [a - b for a, b in zip(cpu[variant], cpu["minimal"], strict=True)]
        spread = Spread.of(diffs)
        name = f"feature_ab.{variant}.minus_minimal_ms_per_leaf"
        figure(name, spread.median, decimals=3)
        figure(f"{name}.iqr", f"{spread.q1:.3f}-{spread.q3:.3f}")
        figure(f"{name}.range", f"{spread.low:.3f}-{spread.high:.3f}")
        if len(diffs) > 1:
            mean, error = statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
            figure(f"{name}.mean_ci95", f"{mean - 1.96 * error:+.3f} to {mean + 1.96 * error:+.3f}")
        note(
            f"{variant}: dearer than minimal in {sum(d > 0 for d in diffs)} of {len(diffs)} "
            f"rounds; per round: {' '.join(f'{d:+.3f}' for d in diffs)}"
        )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(asyncio.run(main()))
