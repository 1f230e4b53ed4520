"""``make bench-agent``: durapipe's agent loop against the same loop written by hand with temporalio.

An agent is a model calling tools in a loop. Both sides run it on one dev server, each worker in its
own process (its CPU time is its side's own): the offline model, scripted to call the one cheap
tool (`bench.agent_tools.lookup`) once a turn for ``--turns`` turns (K, 5 by default), then to
answer; so each run makes exactly K + 1 model calls and K tool calls. durapipe runs an ``agent``
pipe (below); the baseline is `bench.handwritten_agent` (what it matches of durapipe's plan, and
how it carries the conversation, is in its docstring).

Two shapes, each run alternately on both sides, round after round:

- ``agent_seq``: ``--runs`` runs (5) one after another: the cost of each step of the loop;
- ``agent_fan``: ``--fanout`` runs (20) started at once, then awaited: the loop under a fan-out.

Every run is checked, the warm-up's too: its answer must be the offline model's answer to its
question, its history must hold exactly K + 1 model and K tool activities, and the side's ledgers
(the offline model's, ``DURAPIPE_OFFLINE_LEDGER``, and the tool's) must have grown by exactly as
many calls. A run that did not is an error (one sentence, exit 1), not a figure.

Figures, one ``name = value`` per line (``.handwritten``: the baseline's):

- ``<shape>.wall_ratio`` / ``<shape>.cpu_ratio``: durapipe over hand-written, the median of the
  rounds' ratios (each round runs both sides once, in the balanced order ``<shape>.order``, A
  durapipe, B hand-written), with ``.iqr``, ``.range``, ``.ci`` (the median's distribution-free
  interval) and a note of the exact inputs;
- ``<shape>.model_calls`` / ``<shape>.tool_calls``: the calls counted in the ledgers over the
  counted rounds (exact), both sides;
- ``<shape>.cpu_ms_per_model_call`` / ``.cpu_ms_per_tool_call``: the worker's CPU over the counted
  rounds divided by its model calls, and by its tool calls (each the whole loop's CPU, not the
  call's own share: the two cannot be told apart in one process's clock); ``.cpu_ms_per_call``
  divided by both together;
- ``<shape>.history_events_per_model_call``, ``.history_bytes_per_call`` (every event's bytes
  over model and tool calls), ``.payload_bytes_per_model_call`` and ``.payload_bytes_per_tool_call``
  (an activity's input and result): from every counted run's history.

``--checkpoints-off`` runs durapipe's workers with ``DURAPIPE_CHECKPOINTS=off`` and ``--totals-off``
starts its runs without searchable totals: each prices one of durapipe's features against the same
baseline (``agent.durapipe_checkpoints``, ``agent.durapipe_searchable_totals`` say which ran).

``python -m bench.agent [--quick] [--pairs N] [--turns K] [--runs R] [--fanout N] [--workers W]
[--checkpoints-off] [--totals-off] [--only agent_seq|agent_fan]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

import durapipe as dp
from bench import agent_tools, handwritten, handwritten_agent
from bench.__main__ import measure
from bench._common import (
    dev_server,
    durapipe_cli,
    figure,
    note,
    paired_ratio,
    print_order,
    process,
    race_between_loads,
    side_order,
    wait_ready,
)
from durapipe.adapters._offline import LEDGER_ENV
from durapipe.adapters._plan import ACTIVITY_NAMES
from durapipe.runtime._agent_messages import tool_schema
from durapipe.spec import ToolPipe

TURNS = 5
SEQ_RUNS = 5
FAN_RUNS = 20
# Whole cycles of the balanced order (2 rounds for 2 sides); about 3 minutes in all on a quiet
# 2-core machine, worker starts included.
PAIRS = {"agent_seq": 12, "agent_fan": 8}
QUICK = {"pairs": 2, "runs": 2, "fanout": 4, "workers": 1}
WORKER_COPIES = 2
SHAPES = ("agent_seq", "agent_fan")
SIDES = ("durapipe", "handwritten")
MODEL_ACTIVITIES = {"durapipe": ACTIVITY_NAMES["agent"], "handwritten": "bench.agent.model"}
TOOL_ACTIVITIES = {"durapipe": ACTIVITY_NAMES["tool"], "handwritten": "bench.agent.tool"}
ROOT = Path(__file__).resolve().parent.parent


def pipeline_yaml(turns: int) -> str:
    """The durapipe side: an agent whose offline model calls ``lookup`` for ``turns`` turns."""
    return f"""
pipes:
  agent:
    kind: agent
    model: durapipe/offline
    inputs: {{question: text}}
    prompt: "{{{{ question }}}}"
    tools: [lookup]
    max_turns: {turns + 2}
    settings: {{offline_tool_rounds: {turns}}}
  lookup:
    kind: tool
    function: bench.agent_tools:lookup
    description: Look up the record filed under a query.
    inputs: {{query: text}}
    output: text
"""


class BenchError(Exception):
    """A run did not do the work both sides must do: the bench stops, with no figure."""


def answer_to(question: str) -> str:
    """The offline model's final answer to a short question (its first dozen words)."""
    return f"Offline answer: {question}"


@dataclass
class Calls:
    """Calls counted in one run's history: model and tool activities, events, bytes."""

    model: int = 0
    tool: int = 0
    events: int = 0
    history_bytes: int = 0
    model_bytes: int = 0
    tool_bytes: int = 0

    def add(self, other: Calls) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def count_calls(events: Sequence[HistoryEvent], side: str) -> Calls:
    """The model and tool activities a history scheduled (what completed must match: a failed or
    retried one is counted as scheduled), its events and their bytes, and each kind's payloads."""
    calls = Calls(events=len(events), history_bytes=sum(e.ByteSize() for e in events))
    kinds: dict[int, str] = {}
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            name = attributes.activity_type.name
            payload = sum(p.ByteSize() for p in attributes.input.payloads)
            if name == MODEL_ACTIVITIES[side]:
                calls.model += 1
                calls.model_bytes += payload
            elif name == TOOL_ACTIVITIES[side]:
                calls.tool += 1
                calls.tool_bytes += payload
            kinds[event.event_id] = name
        elif event.HasField("activity_task_completed_event_attributes"):
            attributes = event.activity_task_completed_event_attributes
            payload = sum(p.ByteSize() for p in attributes.result.payloads)
            name = kinds.get(attributes.scheduled_event_id, "")
            if name == MODEL_ACTIVITIES[side]:
                calls.model_bytes += payload
            elif name == TOOL_ACTIVITIES[side]:
                calls.tool_bytes += payload
    return calls


def check_run(
    side: str, run_id: str, answer: object, question: str, calls: Calls, turns: int
) -> None:
    """Refuse a run that did not answer its question or made other than ``turns`` + 1 model calls
    and ``turns`` tool calls.

    Raises:
        BenchError: one sentence naming the side, the run and what differed.
    """
    if answer != answer_to(question):
        raise BenchError(
            f"{side} run {run_id} answered {answer!r}, not {answer_to(question)!r}: "
            "it did not do the bench's work"
        )
    if (calls.model, calls.tool) != (turns + 1, turns):
        raise BenchError(
            f"{side} run {run_id} made {calls.model} model calls and {calls.tool} tool calls "
            f"(its history), not {turns + 1} and {turns}: it did not do the bench's work"
        )


def check_ledgers(side: str, made: tuple[int, int], runs: int, turns: int) -> None:
    """Refuse a side whose ledgers grew by other than ``runs`` runs' calls over a measured batch.

    Raises:
        BenchError: one sentence naming the side and the counts.
    """
    expected = (runs * (turns + 1), runs * turns)
    if made != expected:
        raise BenchError(
            f"{side}: its ledgers counted {made[0]} model calls and {made[1]} tool calls over "
            f"{runs} runs, not {expected[0]} and {expected[1]}"
        )


def ledger_lines(path: Path) -> int:
    """Complete lines in a ledger file (0 when it does not exist yet)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@dataclass
class Worker:
    """One side's worker process: its client, pid, task queue and ledgers."""

    side: str
    client: Client
    pid: int
    queue: str
    model_ledger: Path
    tool_ledger: Path

    def made(self) -> tuple[int, int]:
        """Model and tool calls its ledgers hold so far."""
        return ledger_lines(self.model_ledger), ledger_lines(self.tool_ledger)


@dataclass
class Totals:
    """One side's sums over a shape's counted rounds."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    model_calls: int = 0
    tool_calls: int = 0
    history: Calls = field(default_factory=Calls)


class AgentBench:
    """Both sides' workers (``copies`` per side) on one dev server, and the runs they take."""

    def __init__(self, pipeline: dp.Pipeline, turns: int, handwritten_turns: int) -> None:
        self.pipeline = pipeline
        self.turns = turns
        # What the hand-written workflow is told to ask for: ``turns`` but in the bench's own test.
        self.handwritten_turns = handwritten_turns
        self.copies: list[dict[str, Worker]] = []
        # What durapipe's side leaves out (``--checkpoints-off``, ``--totals-off``): each prices
        # one of its features against the same baseline.
        self.checkpoints_off = False
        self.searchable_totals = True
        self.asked = 0

    def question(self) -> str:
        self.asked += 1
        return f"what is filed under item {self.asked}"

    async def one(self, worker: Worker) -> tuple[str, object, str]:
        """Start one run on ``worker``'s side; its id, a wait for its answer, and its question."""
        question = self.question()
        run_id = f"{worker.side[:2]}-{uuid.uuid4().hex[:12]}"
        if worker.side == "durapipe":
            handle = await dp.start(
                worker.client,
                self.pipeline,
                "agent",
                {"question": question},
                run_id=run_id,
                task_queue=worker.queue,
                searchable_totals=self.searchable_totals,
            )
            return run_id, handle, question
        started = await worker.client.start_workflow(
            "bench.agent",
            args=[question, self.handwritten_turns, self.turns + 2],
            id=run_id,
            task_queue=worker.queue,
        )
        return run_id, started, question

    def runs(
        self, worker: Worker, count: int, at_once: bool, done: list[tuple[str, object, str]]
    ) -> Callable[[], Awaitable[None]]:
        """``count`` runs on ``worker``, one after another or started all then awaited; each
        run's id, answer and question go to ``done``."""

        async def answer(handle: object) -> object:
            result = await handle.result()  # type: ignore[attr-defined]
            return result.output if worker.side == "durapipe" else result

        async def work() -> None:
            if at_once:
                started = [await self.one(worker) for _ in range(count)]
                answers = await asyncio.gather(*(answer(h) for _, h, _ in started))
                done.extend((i, a, q) for (i, _, q), a in zip(started, answers, strict=True))
                return
            for _ in range(count):
                run_id, handle, question = await self.one(worker)
                done.append((run_id, await answer(handle), question))

        return work

    async def checked(
        self, worker: Worker, count: int, at_once: bool
    ) -> tuple[float, float, Calls]:
        """Wall and worker CPU of ``count`` runs (`bench.__main__.measure`), every run checked."""
        before = worker.made()
        done: list[tuple[str, object, str]] = []
        wall, cpu = await measure(self.runs(worker, count, at_once, done), worker.pid)
        total = Calls()
        for run_id, answer, question in done:
            history = await worker.client.get_workflow_handle(run_id).fetch_history()
            calls = count_calls(history.events, worker.side)
            check_run(worker.side, run_id, answer, question, calls, self.turns)
            total.add(calls)
        after = worker.made()
        check_ledgers(worker.side, (after[0] - before[0], after[1] - before[1]), count, self.turns)
        return wall, cpu, total

    async def shape(self, name: str, count: int, at_once: bool, pairs: int) -> None:
        """Race shape ``name`` (``count`` runs a side per round) over ``pairs`` counted rounds,
        after a warm-up round on every copy, and print its figures."""
        totals = {side: Totals() for side in SIDES}
        print_order(name, ["A", "B"], pairs, first=1)
        for copy in self.copies:
            for side in side_order(0, 2):
                await self.checked(copy[SIDES[side]], count, at_once)
        for round_no in range(1, pairs + 1):
            copy = self.copies[round_no % len(self.copies)]
            for side in side_order(round_no, 2):
                wall, cpu, calls = await self.checked(copy[SIDES[side]], count, at_once)
                mine = totals[SIDES[side]]
                mine.wall.append(wall)
                mine.cpu.append(cpu)
                mine.model_calls += calls.model
                mine.tool_calls += calls.tool
                mine.history.add(calls)
        print_shape(name, totals, pairs)


def print_shape(name: str, totals: dict[str, Totals], pairs: int) -> None:
    """A shape's ratios, exact counts and per-call figures, both sides."""
    ours, theirs = totals["durapipe"], totals["handwritten"]
    figure(f"{name}.pairs", pairs)
    paired_ratio(f"{name}.wall_ratio", ours.wall, theirs.wall, unit="s wall")
    paired_ratio(
        f"{name}.cpu_ratio", ours.cpu, theirs.cpu, unit="s CPU", leaves=ours.model_calls // pairs
    )
    for side, mine in totals.items():
        suffix = "" if side == "durapipe" else ".handwritten"
        cpu_ms, history = sum(mine.cpu) * 1000, mine.history
        calls = mine.model_calls + mine.tool_calls
        figure(f"{name}.model_calls{suffix}", mine.model_calls)
        figure(f"{name}.tool_calls{suffix}", mine.tool_calls)
        figure(f"{name}.cpu_ms{suffix}", cpu_ms, decimals=1)
        figure(f"{name}.cpu_ms_per_model_call{suffix}", cpu_ms / mine.model_calls)
        figure(f"{name}.cpu_ms_per_tool_call{suffix}", cpu_ms / mine.tool_calls)
        figure(f"{name}.cpu_ms_per_call{suffix}", cpu_ms / calls)
        figure(f"{name}.history_events_per_model_call{suffix}", history.events / mine.model_calls)
        figure(f"{name}.history_bytes_per_call{suffix}", history.history_bytes / calls)
        figure(
            f"{name}.payload_bytes_per_model_call{suffix}", history.model_bytes / mine.model_calls
        )
        figure(f"{name}.payload_bytes_per_tool_call{suffix}", history.tool_bytes / mine.tool_calls)


def check_schema(pipeline: dp.Pipeline) -> None:
    """Refuse to race when the hand-written side offers the model another tool schema than
    durapipe's (the offline model's tool arguments, so the tool calls, depend on it)."""
    tool = pipeline.pipes["lookup"]
    assert isinstance(tool, ToolPipe)
    ours = tool_schema("lookup", tool, {})
    if [ours] != handwritten_agent.TOOLS:
        raise BenchError(
            f"the hand-written agent's tool schema {handwritten_agent.TOOLS} is not durapipe's "
            f"{[ours]}: update bench/handwritten_agent.py"
        )


@contextlib.contextmanager
def start_workers(
    address: str, file: Path, work: Path, bench: AgentBench, clients: dict[str, Client], copies: int
) -> Iterator[None]:
    """``copies`` worker processes per side, each on task queues and ledgers of its own."""
    with contextlib.ExitStack() as stack:
        started = []
        for copy in range(copies):
            queue = f"agent-{uuid.uuid4().hex[:8]}"
            for side in SIDES:
                log = work / f"{side}-{copy}.log"
                ledgers = work / f"{side}-{copy}.model", work / f"{side}-{copy}.tool"
                env = {
                    **os.environ,
                    LEDGER_ENV: str(ledgers[0]),
                    agent_tools.LEDGER_ENV: str(ledgers[1]),
                    # The tool's module is found from the repository, wherever the bench runs.
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
                    ),
                    "DURAPIPE_CHECKPOINTS": "off"
                    if bench.checkpoints_off
                    else str(work / f"checkpoints-{copy}.sqlite"),
                }
                side_queue = queue if side == "durapipe" else queue + "-hw"
                args = (
                    durapipe_cli("worker", str(file), "--address", address, "--task-queue", side_queue)
                    if side == "durapipe"
                    else [sys.executable, "-m", "bench.handwritten_agent", "--address", address,
                          "--task-queue", side_queue]
                )  # fmt: skip
                child = stack.enter_context(process(args, log, env=env))
                started.append((side, copy, child, log, side_queue, ledgers))
        for side, copy, child, log, side_queue, ledgers in started:
            wait_ready(child, log, "worker ready")
            if copy == len(bench.copies):
                bench.copies.append({})
            bench.copies[copy][side] = Worker(side, clients[side], child.pid, side_queue, *ledgers)
        yield


async def race(args: argparse.Namespace) -> None:
    pairs = {shape: args.pairs or PAIRS[shape] for shape in SHAPES}
    with tempfile.TemporaryDirectory(prefix="durapipe-bench-agent-") as tmp:
        work = Path(tmp)
        file = work / "agent.yaml"
        file.write_text(pipeline_yaml(args.turns))
        pipeline = dp.load(file)
        check_schema(pipeline)
        bench = AgentBench(pipeline, args.turns, args.handwritten_turns or args.turns)
        bench.checkpoints_off, bench.searchable_totals = args.checkpoints_off, not args.totals_off
        async with dev_server(args.address) as address:
            clients = {
                "durapipe": await dp.connect(address, pipeline=pipeline),
                "handwritten": await handwritten.connect(address),
            }
            with start_workers(address, file, work, bench, clients, args.workers):
                figure("agent.turns", args.turns)
                figure("agent.calls_per_run", f"{args.turns + 1} model, {args.turns} tool")
                figure("agent.worker_processes", args.workers)
                figure("agent.durapipe_checkpoints", "off" if args.checkpoints_off else "on")
                figure("agent.durapipe_searchable_totals", "off" if args.totals_off else "on")
                note(
                    "each ratio is the median of per-round ratios (a round runs each side once, "
                    "in a balanced order, on worker copy r % copies; a warm-up round on every copy "
                    "is discarded); CPU is the worker process's over the round, read once it is "
                    "quiet; every run's answer and calls are checked against its history and "
                    "its side's ledgers"
                )
                if "agent_seq" in args.only:
                    await bench.shape("agent_seq", args.runs, False, pairs["agent_seq"])
                if "agent_fan" in args.only:
                    await bench.shape("agent_fan", args.fanout, True, pairs["agent_fan"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.agent", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--address", help="an existing Temporal server [default: start one]")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the smallest race (a smoke run): 2 pairs, 2 sequential runs, 4 at once, 1 worker a side",
    )
    parser.add_argument(
        "--pairs", type=int, help="counted rounds per shape [agent_seq 12, agent_fan 8]"
    )
    parser.add_argument("--turns", type=int, default=TURNS, help=f"tool calls per run, K [{TURNS}]")
    parser.add_argument(
        "--runs", type=int, default=SEQ_RUNS, help=f"agent_seq's runs per round [{SEQ_RUNS}]"
    )
    parser.add_argument(
        "--fanout", type=int, default=FAN_RUNS, help=f"agent_fan's runs per round [{FAN_RUNS}]"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKER_COPIES,
        help=f"worker processes per side [{WORKER_COPIES}]",
    )
    parser.add_argument(
        "--only", action="append", choices=SHAPES, help="run only this shape (repeatable)"
    )
    parser.add_argument(
        "--checkpoints-off",
        action="store_true",
        help="durapipe's workers run with DURAPIPE_CHECKPOINTS=off (what its checkpoints cost)",
    )
    parser.add_argument(
        "--totals-off",
        action="store_true",
        help="durapipe's runs start without searchable totals (what their upserts cost)",
    )
    # The bench's own test: the hand-written side asks for this many tool rounds instead of K, and
    # the bench must refuse its runs.
    parser.add_argument("--handwritten-turns", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for option, value in QUICK.items():
            if option == "pairs":
                args.pairs = args.pairs or value
            elif getattr(args, option) == parser.get_default(option):
                setattr(args, option, value)
    for option in ("pairs", "runs", "fanout", "workers"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option} must be at least 1, not {value}")
    if args.turns < 0:
        parser.error(f"--turns must be at least 0, not {args.turns}")
    args.only = args.only or list(SHAPES)
    return race_between_loads("bench-agent", race(args), BenchError)


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the dev server and worker processes are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(main())
