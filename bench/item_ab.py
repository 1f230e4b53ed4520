"""In-process A/B timing of one batch item's activity path, durapipe beside hand-written.

What a worker spends on one item of ``batch1000`` outside the workflow: decoding the activity's
input payload with the side's data converter, running the activity (inside an activity context,
with the heartbeat timeout the side's workflow gives it) and encoding its result. Both sides call
the offline model; durapipe's activity checks and writes a checkpoint (a new run scope per call,
so every call is a first attempt). ``fan`` items run at once per round, the sides alternating and
their order rotating, and the garbage collector runs between rounds (``--gc`` to leave it on):

    python -m bench.item_ab [--rounds 9] [--fan 100] [--profile durapipe|handwritten]
                            [--against REV]

``--against REV`` times durapipe's item at git revision REV (its package copied and imported under
another name) beside this checkout's and hand-written, and prints the median of the rounds' paired
differences.

``--store-calls`` also reads the event loop thread's CPU time and the wall time around each of the
checkpoint store's calls on the durapipe side (its read and its write, both on the loop:
`get_nowait`, `put_nowait`) and prints them per item. The CPU is the store's own work as it runs
amid everything else a busy worker does (cold caches: several times what the same calls take in a
loop of their own, see ``bench.activity_ab``); what ``item.checkpoints_us`` (what the item costs
more with the store than without) holds beyond it is the rest of the item slowed around them. The
wall time is far above the CPU: sqlite3 lets go of the GIL inside each call, and a thread waiting
for it (litellm's pool, where each ``acompletion`` runs ``completion``) takes it until it blocks or
Python's switch interval (5 ms) hands it back, the loop held up meanwhile. Reading the clocks costs
about a microsecond per item on that side.

Each figure is process CPU microseconds per item (litellm's completion thread included).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from bench import handwritten
from bench._common import print_profile
from bench.activity_ab import compare_rounds, package_at, report

Item = Callable[[int], Awaitable[object]]


def _environment(heartbeat: timedelta | None) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, heartbeat_timeout=heartbeat)
    return environment


def durapipe_item(
    store: Path | None, package: str = "durapipe", store_calls: dict[str, float] | None = None
) -> Item:
    """One item as durapipe's worker runs it: its input as the workflow encodes it (a whole
    `LlmCall`), the registered ``durapipe.llm`` activity, its `LeafResult` encoded. ``store``
    None: checkpoints off (what the guarantee costs). ``package``: durapipe, or a copy of
    another revision of it (see `bench.activity_ab.package_at`). ``store_calls``: the calling
    thread's CPU and wall seconds inside the store's reads and writes are added up there (see
    `_timed_store`)."""

    def module(name: str) -> Any:
        return importlib.import_module(f"{package}.{name}")

    Activities = module("activities").Activities
    ACTIVITY_NAMES = module("adapters._plan").ACTIVITY_NAMES
    LlmCall = module("runtime").LlmCall
    LeafResult = module("runtime._calls").LeafResult
    LlmPipe = module("spec").LlmPipe
    SqliteCheckpoints = module("stores").SqliteCheckpoints
    durapipe_converter = module("worker").durapipe_converter

    converter = durapipe_converter().payload_converter
    if store_calls is not None:
        SqliteCheckpoints = _timed_store(SqliteCheckpoints, store_calls)
    activities = Activities(checkpoints=SqliteCheckpoints(str(store)) if store else None)
    llm = next(
        fn
        for fn in activities.all()
        if getattr(fn, "__temporal_activity_definition").name == ACTIVITY_NAMES["llm"]
    )
    pipe = LlmPipe(
        model="durapipe/offline", prompt="{{ question }}", inputs={"question": "text"}, timeout=120
    )
    environment = _environment(timedelta(seconds=20))
    scope = uuid.uuid4().hex

    def payload(i: int) -> Payload:
        call = LlmCall(
            run_id=f"batch1000-{scope}",
            scope=uuid.uuid4().hex,
            path=f"batch1000[{i}]",
            pipe_name="ask",
            inputs={"question": f"q{i}"},
            pipe=pipe,
        )
        return converter.to_payloads([call])[0]

    async def item(i: int) -> object:
        sent = payload(i)  # made outside the worker in real life; here its cost is on both sides
        call = converter.from_payload(sent, LlmCall)
        result = await environment.run(llm, call)
        return converter.to_payloads([LeafResult.model_validate(result)])

    return item


def _timed_store(store_class: type[Any], totals: dict[str, float]) -> type[Any]:
    """``store_class`` with the calling thread's CPU time inside its loop-side read and write
    added to ``totals`` (``read``, ``write``), their wall time (``read_wall``, ``write_wall``), and
    ``writes`` counting the writes."""
    for name in ("read", "write", "read_wall", "write_wall", "writes"):
        totals.setdefault(name, 0.0)

    class TimedStore(store_class):  # type: ignore[misc,valid-type]
        def get_nowait(self, key: str) -> Any:
            start, began = time.thread_time(), time.perf_counter()
            try:
                return super().get_nowait(key)
            finally:
                totals["read"] += time.thread_time() - start
                totals["read_wall"] += time.perf_counter() - began

        def put_nowait(self, key: str, result: Any) -> bool:
            start, began = time.thread_time(), time.perf_counter()
            try:
                return bool(super().put_nowait(key, result))
            finally:
                totals["write"] += time.thread_time() - start
                totals["write_wall"] += time.perf_counter() - began
                totals["writes"] += 1

    return TimedStore


def handwritten_item() -> Item:
    """One item as the hand-written worker runs it: `Ask` in, `Answer` out."""
    converter = pydantic_data_converter.payload_converter
    environment = _environment(None)

    def payload(i: int) -> Payload:
        return converter.to_payloads([handwritten.question(f"q{i}")])[0]

    async def item(i: int) -> object:
        sent = payload(i)
        call = converter.from_payload(sent, handwritten.Ask)
        result = await environment.run(handwritten.ask, call)
        return converter.to_payloads([result])

    return item


async def _profile(item: Item, fan: int, rounds: int, top: int) -> None:
    await asyncio.gather(*(item(i) for i in range(fan)))

    async def work() -> None:
        for _ in range(rounds):
            await asyncio.gather(*(item(i) for i in range(fan)))

    await print_profile(work, top)


def main(argv: list[str] | None = None) -> None:
    """Time both sides' item path alternately (or profile one) and print us per item."""
    parser = argparse.ArgumentParser(prog="python -m bench.item_ab", description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--fan", type=int, default=100, help="items at once (the batch's gate)")
    parser.add_argument("--gc", action="store_true", help="leave the collector on in rounds")
    parser.add_argument(
        "--profile", choices=("durapipe", "handwritten", "durapipe, checkpoints off")
    )
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument(
        "--against",
        metavar="REV",
        help="time durapipe's item at git revision REV beside this checkout's (and hand-written)",
    )
    parser.add_argument(
        "--store-calls",
        action="store_true",
        help="also print the CPU inside the checkpoint store's calls, per item",
    )
    args = parser.parse_args(argv)
    from durapipe.adapters._litellm import litellm_module
    from durapipe.adapters._offline import register_offline_model

    register_offline_model()
    litellm_module()
    if args.against:
        with tempfile.TemporaryDirectory() as folder:
            theirs = package_at(args.against, Path(folder) / "package")
            items = {
                f"durapipe @{args.against}": durapipe_item(Path(folder) / "old.sqlite", theirs),
                "durapipe (this)": durapipe_item(Path(folder) / "new.sqlite"),
                "handwritten": handwritten_item(),
            }
            timings = asyncio.run(
                compare_rounds(items, rounds=args.rounds, fan=args.fan, gc_off=not args.gc)
            )
        report(timings)
        old, new = timings[f"durapipe @{args.against}"], timings["durapipe (this)"]
        paired = statistics.median(a - b for a, b in zip(old, new, strict=True))
        print(f"item.us_saved_per_item = {paired:.1f}  # median of the rounds' old - new")
        return
    store_calls: dict[str, float] | None = {} if args.store_calls else None
    with tempfile.TemporaryDirectory() as folder:
        items: dict[str, Any] = {
            "durapipe": durapipe_item(Path(folder) / "items.sqlite", store_calls=store_calls),
            "handwritten": handwritten_item(),
            "durapipe, checkpoints off": durapipe_item(None),
        }
        if args.profile:
            asyncio.run(_profile(items[args.profile], args.fan, args.rounds, args.top))
            return
        timings = asyncio.run(
            compare_rounds(items, rounds=args.rounds, fan=args.fan, gc_off=not args.gc)
        )
    report(timings)
    medians = {side: statistics.median(values) for side, values in timings.items()}
    print(f"item.activity_cpu_ratio = {medians['durapipe'] / medians['handwritten']:.3f}")
    print(f"item.activity_us_more = {medians['durapipe'] - medians['handwritten']:.0f}")
    print(f"item.checkpoints_us = {medians['durapipe'] - medians['durapipe, checkpoints off']:.0f}")
    if store_calls and store_calls["writes"]:
        # Every item reads once and writes once (each a new step): per write is per item. The
        # sums hold the warm-up round too (the rounds' figures leave it out).
        read, write, read_wall, write_wall = (
            store_calls[part] / store_calls["writes"] * 1e6
            for part in ("read", "write", "read_wall", "write_wall")
        )
        print(
            f"item.checkpoint_calls_us = {read + write:.0f}  # CPU inside the store's calls, on "
            f"the loop's thread, per item: read {read:.0f}, write {write:.0f}"
        )
        print(
            f"item.checkpoint_calls_wall_us = {read_wall + write_wall:.0f}  # the loop held up "
            f"in them, per item: read {read_wall:.0f}, write {write_wall:.0f}"
        )


if __name__ == "__main__":
    main()
