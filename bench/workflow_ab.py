"""In-process A/B timing of the workflow side: exact CPU microseconds per replayed run.

A worker's workflow CPU is what it spends decoding activations, running the workflow code and
encoding its commands. Replaying a recorded history does exactly that work (no server, no
activities), so replaying durapipe's and the hand-written baseline's histories of the same shape,
alternating round by round in one process, compares the two workflow sides on the same machine
at the same moment. ``record`` runs each shape once on a fresh dev server (in-process workers on the
offline model) and saves the histories; ``replay`` times them:

    python -m bench.workflow_ab record --out /tmp/histories
    python -m bench.workflow_ab replay --histories /tmp/histories [--rounds 7] [--profile SHAPE]
    python -m bench.workflow_ab versus --old CHECKOUT --histories /tmp/histories [--shape seq50]

Each figure is CPU microseconds per replayed run (a whole history: a run's start, every
activation, its end), its median over rounds and each round's figure.

``versus`` compares a code change: it replays the same durapipe history with another checkout's
package (``CHECKOUT/durapipe``, copied as ``durapipe_old`` with its imports renamed) and with this
one, and the hand-written history beside them, alternating in one process, and prints the main
thread's CPU per run (the workflow code runs there in a replay) and the paired old - new
difference per round, per run and per step.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

import durapipe as dp
from bench import handwritten, handwritten_features
from bench.__main__ import load_pipeline
from bench._common import dev_server, print_profile

SHAPES = ("single", "seq50", "batch1000")


async def record(out: Path) -> None:
    """Run every shape once on each side and save both histories as ``<shape>.<side>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    pipeline, _ = load_pipeline(out)
    questions = [f"q{i}" for i in range(1000)]
    async with dev_server(None) as address:
        ours = await dp.connect(address, pipeline=pipeline, checkpoints=None)
        theirs = await handwritten.connect(address)
        queue = f"wab-{uuid.uuid4().hex[:8]}"
        async with (
            dp.build_worker(ours, task_queue=queue),
            handwritten.build(theirs, queue + "-hw"),
            handwritten_features.build(theirs, queue + "-hf"),
        ):
            runs: dict[str, tuple[Callable[..., Awaitable[Any]], Callable[[str], Awaitable[Any]]]]
            runs = {
                "single": (
                    lambda i, on=True: dp.run(ours, pipeline, "ask", {"question": "q"}, run_id=i,
                                              task_queue=queue, searchable_totals=on),
                    lambda i: theirs.execute_workflow("bench.single", "q", id=i,
                                                      task_queue=queue + "-hw"),
                ),
                "seq50": (
                    lambda i, on=True: dp.run(ours, pipeline, "seq50", {"question": "q"},
                                              run_id=i, task_queue=queue, searchable_totals=on),
                    lambda i: theirs.execute_workflow("bench.sequence", args=["q", 50], id=i,
                                                      task_queue=queue + "-hw"),
                ),
                "batch1000": (
                    lambda i, on=True: dp.run(ours, pipeline, "batch1000",
                                              {"questions": questions}, run_id=i,
                                              task_queue=queue, searchable_totals=on),
                    lambda i: theirs.execute_workflow("bench.batch", args=[questions, 100], id=i,
                                                      task_queue=queue + "-hw"),
                ),
            }  # fmt: skip
            featured = {"single": ("bench.features.single", "q"),
                        "seq50": ("bench.features.sequence", "q", 50),
                        "batch1000": ("bench.features.batch", questions, 100)}  # fmt: skip

            async def features_run(i: str, shape: str) -> Any:
                name, *args = featured[shape]
                handle = await handwritten_features.start(
                    theirs, name, *args, id=i, task_queue=queue + "-hf"
                )
                return await handle.result()

            for shape, (durapipe_run, handwritten_run) in runs.items():
                for side, start, client in (
                    ("durapipe", durapipe_run, ours),
                    ("handwritten", handwritten_run, theirs),
                    # the hand-written workflows with durapipe's features (summary, totals upsert)
                    ("features", lambda i, s=shape: features_run(i, s), theirs),
                    # durapipe without searchable totals: no upsert (the client's choice)
                    ("totals_off", lambda i, run=durapipe_run: run(i, False), ours),
                ):
                    run_id = f"{shape}-{side}-{uuid.uuid4().hex[:6]}"
                    await start(run_id)
                    history = await client.get_workflow_handle(run_id).fetch_history()
                    (out / f"{shape}.{side}.json").write_text(history.to_json())


def _load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    return WorkflowHistory.from_json(path.stem, data)


def workflow_interceptors(package: str = "durapipe") -> list[Any]:
    """The workflow interceptors ``package``'s plugin adds to its workers (a checkout from before
    it added any: none), so a replay counts what a worker runs."""
    try:
        details = importlib.import_module(f"{package}.workflows._details")
    except ModuleNotFoundError:
        return []
    return [details.DetailsInterceptor()]


def replayers() -> dict[str, Replayer]:
    """A replayer per side, set up as that side's worker is (converter, workflows, unsandboxed)."""
    from durapipe.worker import durapipe_converter
    from durapipe.workflows import PipeWorkflow

    # debug_mode runs each activation inline (no thread hop), so a profile sees the workflow code.
    return {
        "durapipe": Replayer(
            workflows=[PipeWorkflow],
            data_converter=durapipe_converter(),
            interceptors=workflow_interceptors(),
            debug_mode=True,
        ),
        "handwritten": Replayer(
            workflows=handwritten.WORKFLOWS,
            data_converter=pydantic_data_converter,
            debug_mode=True,
        ),
        "features": Replayer(
            workflows=handwritten_features.WORKFLOWS,
            data_converter=pydantic_data_converter,
            debug_mode=True,
        ),
    }


async def replay_many(replayer: Replayer, history: WorkflowHistory, times: int) -> None:
    """Replay ``history`` ``times`` times through one replay worker; fail on any mismatch."""

    async def copies() -> Any:
        for _ in range(times):
            yield history

    async with replayer.workflow_replay_iterator(copies()) as results:
        async for result in results:
            if result.replay_failure is not None:
                raise result.replay_failure


async def timed_rounds(
    replaying: Mapping[str, Replayer],
    histories: Mapping[str, WorkflowHistory],
    sides: list[str],
    rounds: int,
    times: int,
    clock: Callable[[], float],
) -> dict[str, list[float]]:
    """µs of ``clock`` per replayed run, per side and round: each round replays every side's
    history ``times`` times, the sides in turn (the first side rotating), after one untimed
    replay of each to warm imports and caches."""
    for side in sides:
        await replay_many(replaying[side], histories[side], 1)
    timings: dict[str, list[float]] = {side: [] for side in sides}
    for n in range(rounds):
        for k in range(len(sides)):
            side = sides[(n + k) % len(sides)]
            start = clock()
            await replay_many(replaying[side], histories[side], times)
            timings[side].append((clock() - start) / times * 1e6)
    return timings


async def time_shapes(folder: Path, rounds: int, shapes: tuple[str, ...]) -> None:
    """Print each side's CPU microseconds per replayed run, rotating the sides' order every round.

    ``totals_off`` (durapipe's run without searchable totals, replayed by durapipe's replayer) is
    timed when its history was recorded.
    """
    replaying = replayers()
    replaying["totals_off"] = replaying["durapipe"]
    for shape in shapes:
        sides = [side for side in replaying if (folder / f"{shape}.{side}.json").exists()]
        histories = {side: _load(folder / f"{shape}.{side}.json") for side in sides}
        times = {"single": 200, "seq50": 10, "batch1000": 2}[shape]
        timings = await timed_rounds(replaying, histories, sides, rounds, times, time.process_time)
        medians = {side: statistics.median(values) for side, values in timings.items()}
        for side, values in timings.items():
            figures = " ".join(f"{v:.0f}" for v in values)
            print(f"{shape}.{side:12s} median {medians[side]:10.0f} us/run  rounds: {figures}")
        ratio = medians["durapipe"] / medians["handwritten"]
        print(f"{shape}.workflow_cpu_ratio = {ratio:.3f}", flush=True)
        if "features" in medians:
            featured = medians["durapipe"] / medians["features"]
            print(f"{shape}.workflow_cpu_ratio.vs_features = {featured:.3f}", flush=True)
        if "totals_off" in medians:
            off = medians["totals_off"] / medians["handwritten"]
            print(f"{shape}.workflow_cpu_ratio.totals_off = {off:.3f}", flush=True)
            saved = medians["durapipe"] - medians["totals_off"]
            print(f"{shape}.totals_off.us_saved_per_run = {saved:.0f}", flush=True)


async def profile(folder: Path, shape: str, side: str, times: int, top: int) -> None:
    """cProfile ``times`` replays of one side's history of ``shape``; print the top functions."""
    replayer = replayers()[side]
    history = _load(folder / f"{shape}.{side}.json")
    await replay_many(replayer, history, 1)
    await print_profile(lambda: replay_many(replayer, history, times), top)


# The leaves of each recorded shape, to give the difference per step.
STEPS = {"single": 1, "seq50": 50, "batch1000": 1000}
_IMPORTS = re.compile(r"\b(from|import) durapipe(\.|\b)")


def old_package(checkout: Path, into: Path) -> str:
    """``checkout``'s durapipe package copied under ``into`` as ``durapipe_old`` (its imports of
    itself renamed), importable beside this one; returns its name."""
    target = into / "durapipe_old"
    shutil.copytree(checkout / "durapipe", target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        path.write_text(_IMPORTS.sub(r"\1 durapipe_old\2", path.read_text()))
    sys.path.insert(0, str(into))
    return "durapipe_old"


async def versus(checkout: Path, folder: Path, shape: str, rounds: int, times: int) -> None:
    """Replay ``shape``'s durapipe history with ``checkout``'s code and this code, alternating (see
    the module docstring), and print each one's main-thread CPU per run and their difference."""
    with tempfile.TemporaryDirectory() as into:
        name = old_package(checkout, Path(into))
        old_worker = importlib.import_module(f"{name}.worker")
        old_workflows = importlib.import_module(f"{name}.workflows")
        replaying = {
            "old": Replayer(
                workflows=[old_workflows.PipeWorkflow],
                data_converter=old_worker.durapipe_converter(),
                interceptors=workflow_interceptors(name),
                debug_mode=True,
            ),
            **{side: replayer for side, replayer in replayers().items() if side != "features"},
        }
        ours = _load(folder / f"{shape}.durapipe.json")
        histories = {"old": ours, "durapipe": ours}
        histories["handwritten"] = _load(folder / f"{shape}.handwritten.json")
        sides = list(replaying)
        timings = await timed_rounds(replaying, histories, sides, rounds, times, time.thread_time)
    medians = {side: statistics.median(values) for side, values in timings.items()}
    for side in sides:
        print(f"{shape}.{side:12s} median {medians[side]:10.0f} us/run (main thread)")
    saved = [old - new for old, new in zip(timings["old"], timings["durapipe"], strict=True)]
    middle, mean = statistics.median(saved), statistics.mean(saved)
    spread = statistics.stdev(saved) / len(saved) ** 0.5 if len(saved) > 1 else 0.0
    print(f"{shape}.old_minus_new.us_per_run median {middle:.0f} mean {mean:.0f} +- {spread:.0f}")
    print(f"{shape}.old_minus_new.us_per_step median {middle / STEPS[shape]:.1f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """``record`` histories or ``replay`` them alternately (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.workflow_ab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    recording = commands.add_parser("record")
    recording.add_argument("--out", type=Path, required=True)
    replaying = commands.add_parser("replay")
    replaying.add_argument("--histories", type=Path, required=True)
    replaying.add_argument("--rounds", type=int, default=7)
    replaying.add_argument("--shape", action="append", choices=SHAPES)
    replaying.add_argument("--profile", choices=SHAPES, help="cProfile this shape instead")
    replaying.add_argument("--side", default="durapipe", choices=("durapipe", "handwritten"))
    replaying.add_argument("--times", type=int, default=20)
    replaying.add_argument("--top", type=int, default=40)
    against = commands.add_parser("versus")
    against.add_argument("--old", type=Path, required=True, help="a checkout of the old code")
    against.add_argument("--histories", type=Path, required=True)
    against.add_argument("--shape", default="seq50", choices=SHAPES)
    against.add_argument("--rounds", type=int, default=60)
    against.add_argument("--times", type=int, default=3, help="replays per side and round [3]")
    args = parser.parse_args(argv)
    if args.command == "record":
        asyncio.run(record(args.out))
    elif args.command == "versus":
        asyncio.run(versus(args.old, args.histories, args.shape, args.rounds, args.times))
    elif args.profile:
        asyncio.run(profile(args.histories, args.profile, args.side, args.times, args.top))
    else:
        asyncio.run(time_shapes(args.histories, args.rounds, tuple(args.shape or SHAPES)))


if __name__ == "__main__":
    main()
