"""``make bench-peer``: durapipe, hand-written temporalio and pydantic-ai's Temporal integration,
raced in one run against the same fake provider and the same dev server.

Each contestant runs 50 sequential model calls in one workflow (``seq50``) and a 200-way fan-out
in one workflow (``fanout200``: 200 model calls at once), alternately, round after round, its
worker in its own process so that process's CPU time is the contestant's own. The provider is the
fake OpenAI-compatible one (``durapipe.testing.fake_provider``), answering at once, so what differs
is what each worker does around a call. Figures, one ``name = value`` per line:

- ``peer.<contestant>.<part>.cpu_ms_per_call``: the worker process's CPU time over the part's
  repetitions, per model call;
- ``peer.<contestant>.<part>.wall_s``: the median wall time of one repetition;
- ``peer.<part>.order``: the rounds' orders (D durapipe, H hand-written, P pydantic-ai),
  balanced: over a whole cycle each contestant runs right after each other one, and before it,
  equally often;
- ``peer.<contestant>.<part>.cpu_ratio`` / ``.wall_ratio``: against hand-written temporalio, the
  median of the rounds' ratios (each round runs every contestant once), with ``.iqr``, ``.range``
  (quartiles and extremes), ``.ci`` (the median's confidence interval) and a note of the exact
  inputs; ``peer.durapipe.<part>.cpu_ratio.vs_pydantic_ai`` (and wall) the same, durapipe over
  pydantic-ai;
- ``peer.<contestant>.history_events_per_call``: events in one ``seq50`` history, per call.

Needs pydantic-ai in the bench's own environment (``make bench-peer`` makes ``bench/.venv-peer``;
durapipe never depends on it). ``python -m bench.peer [--repeats N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

import durapipe as dp
from bench import handwritten
from bench._common import (
    batch_pipe,
    cpu_when_quiet,
    dev_server,
    durapipe_cli,
    figure,
    note,
    paired_ratio,
    print_order,
    process,
    race_between_loads,
    servers_quiet,
    side_order,
    wait_ready,
)

SEQ = 50
FANOUT = 200
MODEL = "gpt-peer"
LABELS = {"durapipe": "D", "handwritten": "H", "pydantic_ai": "P"}  # in `peer.<part>.order`
CONTESTANTS = ("durapipe", "handwritten", "pydantic_ai")
# Whole cycles of the balanced order (`side_order`: 6 rounds for 3 contestants), so each runs
# right after each other one, and before it, equally often.
ROUNDS = 12

PIPELINE_YAML = f"""
pipes:
  seq50:
    kind: sequence
    inputs: {{question: text}}
    steps:
{"".join(f"      - {{pipe: ask, name: s{i}}}{chr(10)}" for i in range(SEQ))}
{batch_pipe("fanout200", FANOUT).lstrip(chr(10))}  ask:
    kind: llm
    model: openai/{MODEL}
    inputs: {{question: text}}
    prompt: "{{{{ question }}}}"
"""


@dataclass
class Contestant:
    """One side of the race: how it runs each part, and its worker's pid."""

    name: str
    pid: int
    seq50: Callable[[], Awaitable[str]]  # returns the workflow id, for its history
    fanout200: Callable[[], Awaitable[object]]
    log: Path | None = None
    walls: dict[str, list[float]] = field(default_factory=dict)
    cpus: dict[str, list[float]] = field(default_factory=dict)

    async def measure(self, part: str) -> None:
        work = self.seq50 if part == "seq50" else self.fanout200
        # CPU until the worker is quiet after the run (see `bench._common.cpu_when_quiet`).
        await servers_quiet()
        cpu = await cpu_when_quiet(self.pid)
        start = time.perf_counter()
        await within(work(), f"{self.name} {part}", self.log)
        self.walls.setdefault(part, []).append(time.perf_counter() - start)
        self.cpus.setdefault(part, []).append(await cpu_when_quiet(self.pid) - cpu)


RUN_TIMEOUT_S = 300


DEADLOCK = "[TMPRL1101]"  # Temporal's "potential deadlock detected" in a worker's log


class RaceStopped(RuntimeError):
    """A run that cannot finish: the race stops with one sentence saying why."""


async def within(work: Awaitable[object], what: str, log: Path | None = None) -> object:
    """``work``'s result, or a clear error once it has run for ``RUN_TIMEOUT_S`` seconds, or as
    soon as ``log`` shows the deadlock detector failing a workflow task (Temporal retries such a
    task forever, so the run would never end)."""
    task = asyncio.ensure_future(work)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if log is not None and DEADLOCK in log.read_text(errors="replace"):
                raise RaceStopped(
                    f"{what}: a workflow task hit Temporal's deadlock detector (no yield within "
                    f"2 s, see {kept(log)}); `python -m bench.peer --peer-debug-mode` runs "
                    "pydantic-ai's worker without it"
                )
            if time.monotonic() > deadline:
                where = f"see {kept(log)}" if log is not None else "see that worker's log"
                raise RaceStopped(f"{what} did not finish within {RUN_TIMEOUT_S} s ({where})")
        return task.result()
    finally:
        task.cancel()


def kept(log: Path) -> Path:
    """A copy of ``log`` that outlives the race's temporary folder (deleted as the race stops),
    so the sentence that stops the race names a file the reader can open."""
    fd, name = tempfile.mkstemp(prefix="bench-peer-", suffix=f"-{log.name}")
    with os.fdopen(fd, "wb") as copy:
        copy.write(log.read_bytes())
    return Path(name)


def start_provider() -> tuple[subprocess.Popen[str], str]:
    """The fake provider as its own process (its CPU is no contestant's); its base URL."""
    provider = subprocess.Popen(
        [sys.executable, "-m", "durapipe.testing.fake_provider", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert provider.stdout is not None
    line = provider.stdout.readline()
    if not line.startswith("listening on "):
        provider.kill()
        raise RuntimeError(f"the fake provider did not start: {line!r}")
    return provider, line.removeprefix("listening on ").strip()


async def race(repeats: int) -> None:
    """Start everything, race, print the figures."""
    provider, base_url = start_provider()
    try:
        with tempfile.TemporaryDirectory(prefix="durapipe-peer-") as tmp:
            work = Path(tmp)
            file = work / "peer.yaml"
            file.write_text(PIPELINE_YAML)
            env = {
                **os.environ,
                "OPENAI_API_KEY": "sk-fake-peer",  # the fake provider takes any key
                "OPENAI_BASE_URL": base_url,  # litellm and the openai SDK both read it
                "BENCH_MODEL": f"openai/{MODEL}",
                "DURAPIPE_CHECKPOINTS": str(work / "checkpoints.sqlite"),
            }
            async with dev_server(None) as address:
                await _race(address, file, work, env, repeats)
    finally:
        provider.terminate()
        provider.wait(timeout=20)


async def _race(address: str, file: Path, work: Path, env: dict[str, str], repeats: int) -> None:
    os.environ.setdefault("OPENAI_API_KEY", env["OPENAI_API_KEY"])  # its agent is built at import
    from bench import peer_pydantic_ai

    queues = {name: f"peer-{name}-{uuid.uuid4().hex[:6]}" for name in CONTESTANTS}
    commands = {
        "durapipe": durapipe_cli(
            "worker", str(file), "--address", address, "--task-queue", queues["durapipe"]
        ),
        "handwritten": [sys.executable, "-m", "bench.handwritten", "--address", address,
                        "--task-queue", queues["handwritten"]],
        "pydantic_ai": [sys.executable, "-m", "bench.peer_pydantic_ai", "--address", address,
                        "--task-queue", queues["pydantic_ai"]],
    }  # fmt: skip
    logs = {name: work / f"{name}.log" for name in CONTESTANTS}
    with (
        process(commands["durapipe"], logs["durapipe"], env=env) as ours,
        process(commands["handwritten"], logs["handwritten"], env=env) as theirs,
        process(commands["pydantic_ai"], logs["pydantic_ai"], env=env) as peer,
    ):
        for name, child in zip(CONTESTANTS, (ours, theirs, peer), strict=True):
            wait_ready(child, logs[name], "worker ready")
        pipeline = dp.load(file)
        dp_client = await dp.connect(address, pipeline=pipeline)
        hw_client = await handwritten.connect(address)
        pa_client = await peer_pydantic_ai.connect(address)
        questions = [f"q{i}" for i in range(FANOUT)]

        async def dp_seq() -> str:
            run_id = f"peer-dp-{uuid.uuid4().hex[:8]}"
            await dp.run(dp_client, pipeline, "seq50", {"question": "q"}, run_id=run_id,
                         task_queue=queues["durapipe"])  # fmt: skip
            return run_id

        async def dp_fan() -> object:
            return await dp.run(dp_client, pipeline, "fanout200", {"questions": questions},
                                task_queue=queues["durapipe"])  # fmt: skip

        async def run_on(client: Client, queue: str, workflow: str, *args: object) -> str:
            run_id = f"peer-{uuid.uuid4().hex[:8]}"
            await client.execute_workflow(workflow, args=list(args), id=run_id, task_queue=queue)
            return run_id

        contestants = [
            Contestant(
                "durapipe", ours.pid, dp_seq, dp_fan
            ),
            Contestant(
                "handwritten", theirs.pid,
                lambda: run_on(hw_client, queues["handwritten"], "bench.sequence", "q", SEQ),
                lambda: run_on(hw_client, queues["handwritten"], "bench.batch", questions, FANOUT),
            ),
            Contestant(
                "pydantic_ai", peer.pid,
                lambda: run_on(pa_client, queues["pydantic_ai"], "peer.sequence", "q", SEQ),
                lambda: run_on(pa_client, queues["pydantic_ai"], "peer.fanout", questions),
                logs["pydantic_ai"],
            ),
        ]  # fmt: skip
        clients = {"durapipe": dp_client, "handwritten": hw_client, "pydantic_ai": pa_client}
        for contestant in contestants:  # warm up every worker's caches and connections
            await within(contestant.seq50(), f"{contestant.name} seq50", contestant.log)
            await within(contestant.fanout200(), f"{contestant.name} fanout200", contestant.log)
        for part in ("seq50", "fanout200"):  # each part's figures as soon as it ends: a race
            await run_rounds(contestants, part, repeats)  # stopped later keeps them
            report(contestants, part)
        notes(env.get("PEER_DEBUG_MODE") == "1")
        for contestant in contestants:
            run_id = str(
                await within(contestant.seq50(), f"{contestant.name} seq50", contestant.log)
            )
            history = await clients[contestant.name].get_workflow_handle(run_id).fetch_history()
            figure(f"peer.{contestant.name}.history_events_per_call", len(history.events) / SEQ)


async def run_rounds(contestants: list[Contestant], part: str, rounds: int) -> None:
    """``rounds`` rounds of ``part``, each contestant once a round, in the balanced order of
    `bench._common.side_order` (over a whole cycle each contestant runs right after each other
    one, and before it, equally often), so each round gives each contestant one ratio to
    hand-written's run of the same round. Prints ``peer.<part>.order`` (D durapipe, H
    hand-written, P pydantic-ai)."""
    print_order(f"peer.{part}", [LABELS[c.name] for c in contestants], rounds)
    for n in range(rounds):
        for index in side_order(n, len(contestants)):
            await contestants[index].measure(part)


def report(contestants: list[Contestant], part: str) -> None:
    """For ``part``: each contestant's CPU per call and wall time, and both as ratios to
    hand-written (the median of the rounds' ratios, each round's runs taken in the same round,
    with their spread and exact inputs: `bench._common.paired_ratio`); and durapipe's over
    pydantic-ai's the same way (``.vs_pydantic_ai``: under 1 where durapipe is ahead)."""
    base = next(c for c in contestants if c.name == "handwritten")
    named = {c.name: c for c in contestants}
    calls = SEQ if part == "seq50" else FANOUT
    figure(f"peer.{part}.rounds", len(base.cpus[part]))
    for c in contestants:
        cpu, wall = sum(c.cpus[part]), statistics.median(c.walls[part])
        repeats = len(c.cpus[part])
        figure(f"peer.{c.name}.{part}.cpu_ms_per_call", cpu / repeats / calls * 1000)
        figure(f"peer.{c.name}.{part}.wall_s", wall)
        if c is not base:
            sides = (c.name, base.name)
            paired_ratio(f"peer.{c.name}.{part}.cpu_ratio", c.cpus[part], base.cpus[part],
                         unit="s CPU", leaves=calls, sides=sides)  # fmt: skip
            paired_ratio(f"peer.{c.name}.{part}.wall_ratio", c.walls[part], base.walls[part],
                         unit="s wall", sides=sides)  # fmt: skip
    if "durapipe" in named and "pydantic_ai" in named:
        ours, peer = named["durapipe"], named["pydantic_ai"]
        sides = (ours.name, peer.name)
        paired_ratio(f"peer.durapipe.{part}.cpu_ratio.vs_pydantic_ai", ours.cpus[part],
                     peer.cpus[part], unit="s CPU", leaves=calls, sides=sides)  # fmt: skip
        paired_ratio(f"peer.durapipe.{part}.wall_ratio.vs_pydantic_ai", ours.walls[part],
                     peer.walls[part], unit="s wall", sides=sides)  # fmt: skip


def notes(peer_debug_mode: bool) -> None:
    """What the figures compare, and which mode pydantic-ai ran in."""
    note("ratios are against hand-written temporalio (unsandboxed, pydantic data converter)")
    note(
        "each ratio is the median of the rounds' ratios (each round runs every contestant once, "
        "in a balanced order, peer.<part>.order: D durapipe, H hand-written, P pydantic-ai, after "
        "a warm-up run of each that is not counted); .iqr and .range give their quartiles and "
        "extremes, .ci the median's distribution-free confidence interval and its coverage"
    )
    detector = "off (--peer-debug-mode)" if peer_debug_mode else "on (its documented setup)"
    note(f"pydantic-ai: sandboxed (its default runner), deadlock detector {detector}")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=ROUNDS, help=f"rounds per part [{ROUNDS}]")
    parser.add_argument(
        "--peer-debug-mode",
        action="store_true",
        help="run pydantic-ai's worker with debug_mode=True (no deadlock detector); see "
        "bench/peer_pydantic_ai.py",
    )
    args = parser.parse_args()
    os.environ["PEER_DEBUG_MODE"] = "1" if args.peer_debug_mode else "0"
    try:
        import pydantic_ai  # noqa: F401
    except ImportError:
        print(
            "bench-peer needs pydantic-ai with its Temporal integration in this environment; "
            "run `make bench-peer`, which installs it into bench/.venv-peer.",
            file=sys.stderr,
        )
        return 2
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    return race_between_loads("bench-peer", race(args.repeats), RaceStopped)


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the dev server and worker processes are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(main())
