"""``make bench``: durapipe against hand-written temporalio, same work, same dev server, one run.

Every figure is a ratio or a count against a baseline measured in this run (the machine is shared,
so absolute times mean little). A ratio is the median of per-pair ratios, each pair a durapipe run
and a hand-written run taken in the same round (`compare`; the rounds' orders balanced,
`bench._common.side_order`), printed with the pairs' quartiles, range, the median's confidence
interval and exact inputs. One figure per line, ``name = value``; lines starting with ``#`` are
notes.

A second baseline, the hand-written code plus durapipe's user-visible features
(`bench.handwritten_features`), runs in the same rounds and is printed apart (``.vs_features``,
``.handwritten_features``); the headline ratios stay against the minimal one.

    python -m bench [--address HOST:PORT] [--quick | --pairs N] [--only PART ...] [--skip-rss]
                    [--skip-features] [--workers N] [--durapipe-env NAME=VALUE ...]

``--durapipe-env`` starts durapipe's workers with a setting changed (``DURAPIPE_CHECKPOINTS=off``
prices the checkpoint guarantee: this run's ratios against those of a run without it); the run
prints it (``durapipe.env``), so its figures are never mistaken for the default worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

import durapipe as dp
from bench import handwritten, handwritten_features
from bench._common import (
    Spread,
    batch_pipe,
    cpu_when_quiet,
    dev_server,
    durapipe_cli,
    figure,
    load_average,
    note,
    paired_ratio,
    print_order,
    process,
    sequence_pipe,
    servers_quiet,
    side_order,
    wait_ready,
)
from durapipe.adapters._litellm import litellm_module

STEPS = 50
SMALL_RUNS = 200
BATCH_ITEMS = 1000
BATCH_CONCURRENCY = 100
RSS_RUNS = 1000
WALL_TARGET = 1.15
LOCAL_TARGET_US = 100.0
PARTS = ("seq50", "batch1000", "concurrent200", "history", "local", "rss")
# Worker processes per side, taken in turn by the rounds (see `compare`).
WORKER_COPIES = 3
# Pairs (rounds) per part: each a single run per side, rather than a few pooled sums, so the
# median has enough pairs to stand on; whole cycles of the balanced round order (`side_order`:
# 4 rounds for 4 sides, 6 for 3) with the features baseline raced (about 9 minutes in all on a
# quiet 2-core machine).
PAIRS = {"seq50": 12, "batch1000": 6, "concurrent200": 8}

PIPELINE_YAML = f"""
pipes:{sequence_pipe("seq50", STEPS)}
  ask:
    kind: llm
    inputs: {{question: text}}
    prompt: "{{{{ question }}}}"
"""
BATCH_YAML = batch_pipe("batch1000", BATCH_CONCURRENCY)


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``work`` took."""
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


@dataclass
class Side:
    """One contestant: a client, and the worker process that runs its workflows and activities."""

    client: Client
    pid: int
    queue: str


async def measure(work: Callable[[], Awaitable[object]], pid: int) -> tuple[float, float]:
    """Wall seconds ``work`` took, and the CPU seconds worker ``pid`` spent on it: from its start
    until the worker is quiet after it (`cpu_when_quiet`), so work a run leaves behind counts for
    that run on either side, whichever side is measured next. It starts once the dev server is
    quiet too (at most 1 s): the server's work after one side's run (its history and visibility
    writes) fell on the next run, in every round the hand-written one's."""
    await servers_quiet()
    cpu = await cpu_when_quiet(pid)
    start = time.perf_counter()
    await work()
    wall = time.perf_counter() - start
    return wall, await cpu_when_quiet(pid) - cpu


Run = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Work:
    """One part's runs: durapipe's, the hand-written baseline's, durapipe's started without
    searchable totals (None where the part has no such side), the leaves one run covers, and the
    hand-written baseline's with durapipe's features (None: not raced)."""

    ours: Run
    theirs: Run
    totals_off: Run | None
    leaves: int
    features: Run | None = None


async def compare(
    name: str,
    work: Work,
    pids: Sequence[int],
    pairs: int,
    rotate: Callable[[int], Sequence[int]] | None = None,
    copies: int = 1,
) -> tuple[Spread, Spread]:
    """durapipe over hand-written, in wall time and worker CPU: the median of per-pair ratios.

    With ``rotate`` (``copies`` worker processes per side), counted round ``r`` runs on copy ``r
    % copies`` of every side (``rotate(copy)`` switches the runs to it and returns its workers'
    pids, in ``pids``' order): a process carries a CPU-time offset for its whole life, as large as
    the gap measured (`bench.worker_threads`), which alternating rounds on one process per side
    cannot average. A first round runs every side once on every copy to warm caches and
    connections, and is discarded; then
    each of ``pairs`` rounds runs every side once, in the balanced order of `side_order` (over a
    whole cycle each side runs right after each other side, and before it, equally often), and
    each round gives one ratio (its durapipe run over its hand-written run), so a machine getting
    busier or quieter between rounds moves both sides of a ratio alike. Prints ``<name>.order``
    (the counted rounds' orders: A durapipe, B hand-written, C totals off, F with features),
    ``<name>.wall_ratio`` and ``<name>.cpu_ratio`` (medians, with ``.iqr``, ``.range`` and ``.ci``,
    the median's confidence interval, and a note of their exact inputs), ``<name>.pairs``, and
    each side's worker CPU per leaf over all rounds (the dev server adds a fixed wait to every
    step, which hides a worker's overhead in wall time). With ``work.totals_off`` (durapipe's runs
    started without searchable totals), that side runs in the same rounds, on durapipe's worker,
    and is printed with ``.totals_off``. With ``work.features`` (the hand-written baseline with
    durapipe's features, its worker ``pids[2]``), that side runs in the same rounds, and durapipe
    over it is printed with ``.vs_features``.
    """
    totals_off, leaves, features = work.totals_off, work.leaves, work.features
    sides, side_pids, labels = [work.ours, work.theirs], [pids[0], pids[1]], ["A", "B"]
    if totals_off:
        sides.append(totals_off)
        side_pids.append(pids[0])
        labels.append("C")
    if features:
        assert len(pids) > 2, "the features baseline needs its worker's pid"
        sides.append(features)
        side_pids.append(pids[2])
        labels.append("F")
    walls: list[list[float]] = [[] for _ in sides]
    cpus: list[list[float]] = [[] for _ in sides]
    print_order(name, labels, pairs, first=1)

    def switch(copy: int) -> None:
        if rotate is not None:
            now = rotate(copy)
            side_pids[:2] = now[:2]
            if totals_off:
                side_pids[2] = now[0]
            if features:
                side_pids[-1] = now[2]

    for copy in range(copies):  # the warm-up round, on every copy
        switch(copy)
        for side in side_order(0, len(sides)):
            await measure(sides[side], side_pids[side])
    for round_no in range(1, pairs + 1):
        switch(round_no % copies)
        for side in side_order(round_no, len(sides)):
            wall, cpu = await measure(sides[side], side_pids[side])
            walls[side].append(wall)
            cpus[side].append(cpu)
    figure(f"{name}.pairs", pairs)
    wall_spread = paired_ratio(f"{name}.wall_ratio", walls[0], walls[1], unit="s wall")
    cpu_spread = paired_ratio(f"{name}.cpu_ratio", cpus[0], cpus[1], unit="s CPU", leaves=leaves)
    figure(f"{name}.cpu_ms_per_leaf", sum(cpus[0]) / pairs / leaves * 1000)
    figure(f"{name}.cpu_ms_per_leaf.handwritten", sum(cpus[1]) / pairs / leaves * 1000)
    if totals_off:
        off = ("durapipe totals off", "hand-written")
        paired_ratio(f"{name}.wall_ratio.totals_off", walls[2], walls[1], unit="s wall", sides=off)
        paired_ratio(
            f"{name}.cpu_ratio.totals_off", cpus[2], cpus[1], unit="s CPU", leaves=leaves, sides=off
        )
        figure(f"{name}.cpu_ms_per_leaf.totals_off", sum(cpus[2]) / pairs / leaves * 1000)
    if features:
        print_features(name, walls, cpus, pairs, leaves)
    note(
        f"{name}: wall durapipe {statistics.median(walls[0]):.3f}s, "
        f"hand-written {statistics.median(walls[1]):.3f}s (medians of {pairs})"
        + (f", totals off {statistics.median(walls[2]):.3f}s" if totals_off else "")
        + (f", hand-written with features {statistics.median(walls[-1]):.3f}s" if features else "")
    )
    return wall_spread, cpu_spread


def print_features(
    name: str, walls: list[list[float]], cpus: list[list[float]], pairs: int, leaves: int
) -> None:
    """durapipe over the hand-written baseline with durapipe's features (the last side), pair by
    pair, its CPU per leaf, and how much of durapipe's CPU per leaf over the minimal baseline the
    features account for (the rest is durapipe's own translation)."""
    vs = ("durapipe", "hand-written with features")
    paired_ratio(f"{name}.wall_ratio.vs_features", walls[0], walls[-1], unit="s wall", sides=vs)
    paired_ratio(
        f"{name}.cpu_ratio.vs_features", cpus[0], cpus[-1], unit="s CPU", leaves=leaves, sides=vs
    )
    per_leaf = [sum(side) / pairs / leaves * 1000 for side in (cpus[0], cpus[1], cpus[-1])]
    figure(f"{name}.cpu_ms_per_leaf.handwritten_features", per_leaf[2])
    gap, price = per_leaf[0] - per_leaf[1], per_leaf[2] - per_leaf[1]
    note(
        f"{name}: durapipe {gap:.3f} ms CPU per leaf over hand-written, of which the features "
        f"(hand-written with features over hand-written) {price:.3f} and durapipe's own "
        f"translation {gap - price:.3f}"
    )


class Bench:
    """Both sides' clients and worker processes on one dev server."""

    def __init__(
        self, pipeline: dp.Pipeline, ours: Side, theirs: Side, features: Side | None = None
    ) -> None:
        self.pipeline = pipeline
        self.ours = ours
        self.theirs = theirs
        # The hand-written baseline with durapipe's features (None: not raced).
        self.features = features
        self.pids = (ours.pid, theirs.pid) + ((features.pid,) if features else ())
        self.results: dict[str, bool] = {}
        # Every side's worker processes, one tuple per copy (`add_copy`, `use`).
        self.copies: list[tuple[Side, Side, Side | None]] = [(ours, theirs, features)]

    def add_copy(self, ours: Side, theirs: Side, features: Side | None = None) -> None:
        """One more worker process per side, on its own task queues (see `compare`)."""
        self.copies.append((ours, theirs, features))

    def use(self, copy: int) -> tuple[int, ...]:
        """Send the runs from now on to copy ``copy`` of every side's worker; their pids."""
        self.ours, self.theirs, self.features = self.copies[copy]
        features = self.features
        self.pids = (self.ours.pid, self.theirs.pid) + ((features.pid,) if features else ())
        return self.pids

    async def ours_run(
        self,
        pipe: str,
        inputs: dict[str, object],
        run_id: str | None = None,
        *,
        searchable_totals: bool = True,
    ) -> object:
        return await dp.run(
            self.ours.client,
            self.pipeline,
            pipe,
            inputs,
            run_id=run_id,
            task_queue=self.ours.queue,
            searchable_totals=searchable_totals,
        )

    async def theirs_run(self, workflow: str, *args: object, run_id: str | None = None) -> object:
        return await self.theirs.client.execute_workflow(
            workflow,
            args=list(args),
            id=run_id or f"hw-{uuid.uuid4().hex}",
            task_queue=self.theirs.queue,
        )

    async def features_run(self, workflow: str, *args: object, run_id: str | None = None) -> object:
        assert self.features is not None
        handle = await handwritten_features.start(
            self.features.client,
            workflow,
            *args,
            id=run_id or f"hwf-{uuid.uuid4().hex}",
            task_queue=self.features.queue,
        )
        return await handle.result()

    def judge(self, name: str, ratios: tuple[Spread, Spread]) -> None:
        """A target is met when the median of the pairs' ratios is within it; the note says too
        whether the median's confidence interval resolves that (all of it on one side of the
        bar) or one more run could flip the verdict (the bar inside it), and whether every pair
        was within it."""
        for figure_name, spread in zip(("wall_ratio", "cpu_ratio"), ratios, strict=True):
            met = spread.median <= WALL_TARGET
            self.results[f"{name}.{figure_name}"] = met
            if not met:
                where = "missed"
            elif spread.high <= WALL_TARGET:
                where = "met by every pair"
            else:
                where = f"met by the median, not by {spread.high:.3f}, the highest pair"
            note(
                f"{name}.{figure_name} <= {WALL_TARGET}: {where} (median {spread.median:.3f}); "
                f"{spread.against(WALL_TARGET)}"
            )

    def work(self, part: str) -> Work:
        """The runs of ``part`` (seq50, batch1000 or concurrent200) on both sides."""
        questions = [f"q{i}" for i in range(BATCH_ITEMS)]

        async def concurrent(searchable_totals: bool = True) -> None:
            await all_at_once(
                lambda text: dp.start(
                    self.ours.client,
                    self.pipeline,
                    "ask",
                    {"question": text},
                    task_queue=self.ours.queue,
                    searchable_totals=searchable_totals,
                )
            )

        async def concurrent_handwritten() -> None:
            await all_at_once(
                lambda text: self.theirs.client.start_workflow(
                    "bench.single", text, id=f"hw-{uuid.uuid4().hex}", task_queue=self.theirs.queue
                )
            )

        async def concurrent_features() -> None:
            assert self.features is not None
            features = self.features
            await all_at_once(
                lambda text: handwritten_features.start(
                    features.client,
                    "bench.features.single",
                    text,
                    id=f"hwf-{uuid.uuid4().hex}",
                    task_queue=features.queue,
                )
            )

        raced = self.features is not None
        if part == "seq50":
            return Work(
                lambda: self.ours_run("seq50", {"question": "q"}),
                lambda: self.theirs_run("bench.sequence", "q", STEPS),
                lambda: self.ours_run("seq50", {"question": "q"}, searchable_totals=False),
                STEPS,
                (lambda: self.features_run("bench.features.sequence", "q", STEPS))
                if raced
                else None,
            )
        if part == "batch1000":
            return Work(
                lambda: self.ours_run("batch1000", {"questions": questions}),
                lambda: self.theirs_run("bench.batch", questions, BATCH_CONCURRENCY),
                None,
                BATCH_ITEMS,
                (lambda: self.features_run("bench.features.batch", questions, BATCH_CONCURRENCY))
                if raced
                else None,
            )
        if part == "concurrent200":
            return Work(
                concurrent,
                concurrent_handwritten,
                lambda: concurrent(searchable_totals=False),
                SMALL_RUNS,
                concurrent_features if raced else None,
            )
        raise ValueError(f"no part {part!r}: seq50, batch1000 or concurrent200")

    async def part(self, name: str, pairs: int) -> None:
        """Time part ``name`` in ``pairs`` pairs (`compare`) and judge it against the target."""
        self.use(0)
        ratios = await compare(
            name, self.work(name), self.pids, pairs, self.use, copies=len(self.copies)
        )
        self.judge(name, ratios)
        self.use(0)

    async def history(self) -> None:
        """History events and payload bytes per leaf of one run of each shape, both sides.

        A durapipe run's events include its child workflows' (a batch longer than its chunk size
        runs in children); hand-written runs have none.
        """
        questions = [f"q{i}" for i in range(BATCH_ITEMS)]
        shapes: tuple[tuple[str, int, tuple[str, dict[str, object]], tuple[object, ...]], ...] = (
            ("single", 1, ("ask", {"question": "q"}), ("bench.single", "q")),
            ("seq50", STEPS, ("seq50", {"question": "q"}), ("bench.sequence", "q", STEPS)),
            (
                "batch1000",
                BATCH_ITEMS,
                ("batch1000", {"questions": questions}),
                ("bench.batch", questions, BATCH_CONCURRENCY),
            ),
        )
        for name, leaves, (pipe, inputs), (workflow, *args) in shapes:
            assert isinstance(workflow, str)
            ours_id, theirs_id = f"{name}-{uuid.uuid4().hex[:8]}", f"hw-{uuid.uuid4().hex[:8]}"
            await self.ours_run(pipe, inputs, run_id=ours_id)
            await self.theirs_run(workflow, *args, run_id=theirs_id)
            ours = await run_events(self.ours.client, ours_id)
            theirs = await run_events(self.theirs.client, theirs_id)
            figure(f"{name}.history_events", len(ours))
            figure(f"{name}.history_events.handwritten", len(theirs))
            figure(f"{name}.history_events_per_leaf", len(ours) / leaves)
            figure(f"{name}.history_events_per_leaf.handwritten", len(theirs) / leaves)
            # Workflow tasks depend on timing (how many completions one task picks up), not on
            # what the workflow decides: they explain a difference the commands do not.
            figure(f"{name}.workflow_tasks", workflow_tasks(ours))
            figure(f"{name}.workflow_tasks.handwritten", workflow_tasks(theirs))
            figure(f"{name}.payload_bytes_per_leaf", payload_bytes(ours) / leaves)
            figure(f"{name}.payload_bytes_per_leaf.handwritten", payload_bytes(theirs) / leaves)
            # The target is equality; a run's end-of-run upsert of its totals (its
            # search attributes) keeps durapipe one event above it (see the README's Benchmark).
            self.results[f"{name}.history_events_per_leaf"] = len(ours) <= len(theirs)
            # One more run, without searchable totals (no upsert); a batch's events also move
            # with its workflow tasks (timing), on every side.
            off_id = f"{name}-off-{uuid.uuid4().hex[:8]}"
            await self.ours_run(pipe, inputs, run_id=off_id, searchable_totals=False)
            off = await run_events(self.ours.client, off_id)
            figure(f"{name}.history_events.totals_off", len(off))
            figure(f"{name}.history_events_per_leaf.totals_off", len(off) / leaves)
            figure(f"{name}.workflow_tasks.totals_off", workflow_tasks(off))
            if self.features is not None:
                # The same shape by hand with durapipe's features: its upserts are durapipe's.
                features_id = f"hwf-{uuid.uuid4().hex[:8]}"
                featured = workflow.replace("bench.", "bench.features.", 1)
                await self.features_run(featured, *args, run_id=features_id)
                events = await run_events(self.features.client, features_id)
                suffix = "handwritten_features"
                figure(f"{name}.history_events.{suffix}", len(events))
                figure(f"{name}.history_events_per_leaf.{suffix}", len(events) / leaves)
                figure(f"{name}.workflow_tasks.{suffix}", workflow_tasks(events))
                figure(f"{name}.payload_bytes_per_leaf.{suffix}", payload_bytes(events) / leaves)


class _Started(Protocol):
    def result(self) -> Awaitable[object]: ...


async def all_at_once(start: Callable[[str], Awaitable[_Started]]) -> None:
    """``concurrent200`` on one side: `SMALL_RUNS` one-step runs started one after another by
    ``start`` (given each run's question), then all awaited at once."""
    handles = [await start(f"q{i}") for i in range(SMALL_RUNS)]
    await asyncio.gather(*(handle.result() for handle in handles))


async def run_events(client: Client, workflow_id: str) -> list[HistoryEvent]:
    """Every history event of a run: its workflow's and, depth first, its child workflows'."""
    events = list((await client.get_workflow_handle(workflow_id).fetch_history()).events)
    for event in list(events):
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            events += await run_events(client, child)
    return events


def workflow_tasks(events: Sequence[HistoryEvent]) -> int:
    """How many workflow tasks a history records (each is three events)."""
    return sum(event.HasField("workflow_task_completed_event_attributes") for event in events)


def payload_bytes(events: Sequence[HistoryEvent]) -> int:
    """Bytes of the activity inputs and results in a history (what each leaf carries)."""
    total = 0
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            payloads = event.activity_task_scheduled_event_attributes.input.payloads
        elif event.HasField("activity_task_completed_event_attributes"):
            payloads = event.activity_task_completed_event_attributes.result.payloads
        else:
            continue
        total += sum(p.ByteSize() for p in payloads)
    return total


@contextlib.contextmanager
def workers(
    address: str, file: Path, work: Path, queue: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """durapipe's worker on ``queue`` (``env`` added to its environment) and the hand-written one
    on ``queue-hw``, each its own process (so each process's CPU time is its side's own), once
    both are ready."""
    with (
        process(
            durapipe_cli("worker", str(file), "--address", address, "--task-queue", queue),
            work / "durapipe-worker.log",
            env={**os.environ, "DURAPIPE_CHECKPOINTS": str(work / "checkpoints.sqlite"),
                 **(env or {})},
        ) as ours,
        process(
            [sys.executable, "-m", "bench.handwritten", "--address", address,
             "--task-queue", queue + "-hw"],
            work / "handwritten-worker.log",
        ) as theirs,
    ):  # fmt: skip
        wait_ready(ours, work / "durapipe-worker.log", "worker ready")
        wait_ready(theirs, work / "handwritten-worker.log", "worker ready")
        yield ours, theirs


@contextlib.contextmanager
def features_worker(
    address: str, work: Path, queue: str, *, race: bool
) -> Iterator[subprocess.Popen[bytes] | None]:
    """The hand-written worker with durapipe's features on ``queue-hwf``, its own process (when
    ``race``; else None). Started, not waited for: `wait_ready` it once the others are started."""
    if not race:
        yield None
        return
    args = [sys.executable, "-m", "bench.handwritten_features", "--address", address,
            "--task-queue", queue + "-hwf"]  # fmt: skip
    with process(args, work / "handwritten-features-worker.log") as child:
        yield child


async def plain_seq50() -> None:
    """The local baseline: 50 plain awaited litellm calls of the offline model."""
    litellm = litellm_module()
    for i in range(STEPS):
        await litellm.acompletion(
            model=dp.OFFLINE_MODEL,
            messages=[{"role": "user", "content": f"q {i}"}],
            num_retries=0,
        )


async def local(pipeline: dp.Pipeline, repeats: int) -> bool:
    """(d) run_local of seq50 against 50 plain awaited litellm calls."""
    plain = plain_seq50

    async def ours() -> None:
        await dp.run_local(pipeline, "seq50", {"question": "q"})

    await ours(), await plain()
    mine, base = [], []
    for _ in range(repeats):
        mine.append(await timed(ours))
        base.append(await timed(plain))
    overhead = (statistics.median(mine) - statistics.median(base)) / STEPS * 1e6
    figure("local.overhead_us_per_step", overhead)
    figure("local.wall_ratio", statistics.median(mine) / statistics.median(base))
    return overhead <= LOCAL_TARGET_US


async def rss(address: str, pipeline_file: Path, work: Path) -> None:
    """(f) Peak RSS of a worker process with ``RSS_RUNS`` runs in flight, both sides."""
    figures = {}
    for side in ("durapipe", "handwritten"):
        queue = f"rss-{side}-{uuid.uuid4().hex[:8]}"
        ledger = work / f"{side}.ledger"
        os.environ["DURAPIPE_OFFLINE_LEDGER"] = str(ledger)
        os.environ["DURAPIPE_OFFLINE_DELAY"] = "2"
        limits = ["--max-concurrent", str(RSS_RUNS)]
        if side == "durapipe":
            args = durapipe_cli(
                "worker", str(pipeline_file), "--address", address, "--task-queue", queue, *limits
            )
        else:
            args = [
                sys.executable,
                "-m",
                "bench.handwritten",
                "--address",
                address,
                "--task-queue",
                queue,
                *limits,
            ]
        try:
            with process(args, work / f"{side}.log") as child:
                wait_ready(child, work / f"{side}.log", "worker ready")
                figures[side] = await _peak_with_runs_in_flight(
                    address, child.pid, queue, side, ledger, pipeline_file
                )
        finally:
            del os.environ["DURAPIPE_OFFLINE_LEDGER"], os.environ["DURAPIPE_OFFLINE_DELAY"]
    figure("rss.peak_mb", figures["durapipe"])
    figure("rss.peak_mb.handwritten", figures["handwritten"])
    figure("rss.ratio", figures["durapipe"] / figures["handwritten"])


async def _peak_with_runs_in_flight(
    address: str, pid: int, queue: str, side: str, ledger: Path, pipeline_file: Path
) -> float:
    if side == "durapipe":
        client = await dp.connect(address)
        pipeline = dp.load(pipeline_file)
        handles = [
            (
                await dp.start(client, pipeline, "ask", {"question": f"q{i}"}, task_queue=queue)
            ).result()
            for i in range(RSS_RUNS)
        ]
    else:
        client = await handwritten.connect(address)
        handles = [
            (
                await client.start_workflow(
                    "bench.single", f"q{i}", id=f"rss-{uuid.uuid4().hex}", task_queue=queue
                )
            ).result()
            for i in range(RSS_RUNS)
        ]
    deadline = time.monotonic() + 300
    while not ledger.exists() or len(ledger.read_text().splitlines()) < RSS_RUNS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{side}: the runs never were all in flight")
        await asyncio.sleep(0.2)
    await asyncio.gather(*handles)
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kb = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
    )
    return peak_kb / 1024


def print_baseline(features: bool, copies: int = 1) -> None:
    """What the hand-written baseline is, so a reader knows what each ratio compares; with
    ``features``, what the second one adds; ``copies``: worker processes per side."""
    figure("baseline.workflow_sandbox", "off")
    figure("baseline.data_converter", "pydantic")
    figure("baseline.worker", "own process (durapipe's too)")
    figure("baseline.worker_processes", copies)
    note(
        f"baseline.worker_processes: every side runs {copies} worker processes of its own, on "
        "task queues of their own, and round r runs on copy r % "
        f"{copies} of every side: a process keeps a CPU-time offset for its life, as large as the "
        "gap measured (bench.worker_threads), which only other processes average out"
    )
    figure("baseline.activity_payload", "pydantic models (messages, timeout; text, usage)")
    if features:
        figure("baseline.features", ", ".join(handwritten_features.FEATURES))
        note(
            "baseline.features: a second hand-written baseline (bench/handwritten_features.py, its "
            "own worker process), the first plus what durapipe does for its user beyond the call: "
            "a UI summary per activity, durapipe's heartbeat timeout (with heartbeats), "
            "start-to-close and retry policy, the pipe as a start search attribute and the run's "
            "totals upserted when durapipe upserts them; figures against it end in .vs_features "
            "or .handwritten_features; the headline ratios and targets stay against the first"
        )


def print_method() -> None:
    """How the ratios below are taken, so a reader re-running the bench knows what moves."""
    note(
        "each ratio is the median of per-pair ratios: a round runs every side once and gives one "
        "pair (its durapipe run and its hand-written run), a warm-up round discarded; the rounds' "
        "orders are balanced (<part>.order: A durapipe, B hand-written, C durapipe totals off, "
        "F hand-written with features; over a whole cycle each side runs right after each other "
        "side, and before it, equally often); .iqr and .range give the pairs' quartiles and "
        "extremes, .ci the median's distribution-free confidence interval (order statistics) and "
        "its coverage; targets are judged on the median, and a note says whether .ci resolves it"
    )


def load_pipeline(work: Path) -> tuple[dp.Pipeline, Path]:
    """The bench pipelines, and the file they were loaded from (workers load it too)."""
    file = work / "bench.yaml"
    file.write_text(PIPELINE_YAML + BATCH_YAML)
    return dp.load(file), file


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--address", help="an existing Temporal server [default: start one]")
    parser.add_argument("--quick", action="store_true", help="2 pairs per part (a smoke run)")
    parser.add_argument(
        "--pairs", type=int, help="pairs per part [seq50 12, batch1000 6, concurrent200 8]"
    )
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--skip-features",
        action="store_true",
        help="leave out the second baseline, hand-written with durapipe's features",
    )
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKER_COPIES,
        help=f"worker processes per side, taken in turn by the rounds [{WORKER_COPIES}]",
    )
    parser.add_argument(
        "--durapipe-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="start durapipe's workers with this environment variable set (repeatable), e.g. "
        "DURAPIPE_CHECKPOINTS=off; printed as durapipe.env",
    )
    args = parser.parse_args(argv)
    durapipe_env = {}
    for setting in args.durapipe_env:
        name, equals, value = setting.partition("=")
        if not equals or not name.startswith("DURAPIPE_"):
            parser.error(f"--durapipe-env takes DURAPIPE_NAME=VALUE, not {setting!r}")
        durapipe_env[name] = value
    if args.pairs is not None and args.pairs < 1:
        parser.error(f"--pairs must be at least 1, not {args.pairs}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    parts = set(args.only or PARTS) - ({"rss"} if args.skip_rss else set())
    load_average("start")
    pairs = dict(PAIRS)
    if args.quick or args.pairs:
        pairs = dict.fromkeys(PAIRS, args.pairs or 2)
    with tempfile.TemporaryDirectory(prefix="durapipe-bench-") as tmp:
        work = Path(tmp)
        # The in-process runner (`local`) and the rss part's worker keep checkpoints in this
        # run's own file unless told otherwise: the shared default file may have been written by
        # another durapipe on this host (a newer layout, which this one refuses).
        os.environ.setdefault("DURAPIPE_CHECKPOINTS", str(work / "checkpoints-local.sqlite"))
        pipeline, file = load_pipeline(work)
        async with dev_server(args.address) as address:
            racing = not args.skip_features
            ours_client = await dp.connect(address, pipeline=pipeline)
            theirs_client = await handwritten.connect(address)
            features_client = await handwritten.connect(address) if racing else None
            with contextlib.ExitStack() as stack:
                copies = []
                for copy in range(args.workers):
                    queue = f"bench-{uuid.uuid4().hex[:8]}"
                    copy_work = work / f"workers-{copy}"
                    copy_work.mkdir()
                    featured = stack.enter_context(
                        features_worker(address, copy_work, queue, race=racing)
                    )
                    ours_worker, theirs_worker = stack.enter_context(
                        workers(address, file, copy_work, queue, durapipe_env)
                    )
                    features = None
                    if featured is not None and features_client is not None:
                        log = copy_work / "handwritten-features-worker.log"
                        wait_ready(featured, log, "worker ready")
                        features = Side(features_client, featured.pid, queue + "-hwf")
                    copies.append(
                        (
                            Side(ours_client, ours_worker.pid, queue),
                            Side(theirs_client, theirs_worker.pid, queue + "-hw"),
                            features,
                        )
                    )
                print_baseline(racing, len(copies))
                for name, value in sorted(durapipe_env.items()):
                    figure("durapipe.env", f"{name}={value}")
                print_method()
                bench = Bench(pipeline, *copies[0])
                for copy in copies[1:]:
                    bench.add_copy(*copy)
                for part in ("seq50", "batch1000", "concurrent200"):
                    if part in parts:
                        await bench.part(part, pairs[part])
                if "history" in parts:
                    await bench.history()
            if "local" in parts:
                rounds = 4 if args.quick else 10
                bench.results["local.overhead_us_per_step"] = await local(pipeline, rounds)
            if "rss" in parts:
                await rss(address, file, work)
    load_average("end")
    for name, met in bench.results.items():
        if not met:
            note(f"target missed: {name}")
    figure("target_met", int(all(bench.results.values())))
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the dev server and worker processes are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(asyncio.run(main()))
