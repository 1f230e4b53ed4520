"""In-process A/B of what one ``concurrent200`` run costs its worker beyond the hand-written run.

A one-step run is one workflow with one llm activity on both sides; what durapipe adds sits in
pieces of a few to a few hundred microseconds, which a whole bench on a shared machine cannot
resolve. Each line here times one piece, durapipe's way beside the hand-written baseline's way,
alternating within every round (`bench.activity_ab.compare`), in CPU microseconds per run:

    python -m bench.concurrent_ab [--rounds 7] [--calls 2000]
    python -m bench.concurrent_ab --live [--rounds 4]


The pieces: the run's input decoded by the workflow (durapipe: a `PipeRun` with its spec; the
baseline: a string), the activity's input encoded by the workflow and decoded by the activity,
its result encoded and decoded back, the run's result encoded, and the activity body around the
model call (durapipe's run of the llm leaf against a plain awaited litellm call).

``--live`` runs the bench's ``concurrent200`` load instead (a fresh dev server, each side's worker
in its own process, the sides alternating) and splits each worker's CPU per run by thread: the
Python thread (the event loop: activities, payload conversion, activation encoding), the workflow
threads (the workflow code) and the SDK core's threads (Rust). It says where a gap is before the
pieces above say what it is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

from bench import handwritten
from bench._common import CLOCK_TICKS, cpu_when_quiet, dev_server
from bench.activity_ab import compare, report

QUESTION = {"question": "q"}


def _payloads() -> Mapping[str, Callable[[], object]]:
    """The payload conversions of one run on each side, with each side's data converter."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    import durapipe as dp
    from bench.__main__ import PIPELINE_YAML
    from durapipe.adapters._plan import pipe_run
    from durapipe.runtime._calls import (
        LeafResult,
        LlmCall,
        PipeRun,
        RunResult,
        StepRecord,
        Usage,
    )
    from durapipe.worker import durapipe_converter

    ours = durapipe_converter().payload_converter
    theirs = pydantic_data_converter.payload_converter
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "bench.yaml"
        file.write_text(PIPELINE_YAML)
        pipeline = dp.load(file)
    run = pipe_run(pipeline, "ask", QUESTION, run_id="concurrent-ab")
    run_payload = ours.to_payloads([run])[0]
    question_payload = theirs.to_payloads(["q"])[0]
    pipe = run.spec.pipes["ask"]
    call = LlmCall(
        run_id=run.run_id, scope=run.scope, path="ask", pipe_name="ask", inputs=QUESTION, pipe=pipe
    )
    call_payload = ours.to_payloads([call])[0]
    ask = handwritten.question("q")
    ask_payload = theirs.to_payloads([ask])[0]
    usage = Usage(input_tokens=1, output_tokens=4)
    leaf = LeafResult(output="Offline answer: q", usage=usage, model="durapipe/offline")
    leaf_payload = ours.to_payloads([leaf])[0]
    answer = handwritten.Answer(text="Offline answer: q", input_tokens=1, output_tokens=4)
    answer_payload = theirs.to_payloads([answer])[0]
    now = datetime.now(UTC)
    record = StepRecord(
        path="ask", pipe="ask", kind="llm", status="succeeded", attempts=1, started_at=now,
        ended_at=now, model="durapipe/offline", input_tokens=1, output_tokens=4,
    )  # fmt: skip
    result = RunResult(output=leaf.output, usage=usage, steps=[record])
    return {
        "run input decode, durapipe": lambda: ours.from_payloads([run_payload], [PipeRun]),
        "run input decode, hand-written": lambda: theirs.from_payloads([question_payload], [str]),
        "leaf input encode, durapipe": lambda: ours.to_payloads([call]),
        "leaf input encode, hand-written": lambda: theirs.to_payloads([ask]),
        "leaf input decode, durapipe": lambda: ours.from_payloads([call_payload], [LlmCall]),
        "leaf input decode, hand-written": lambda: theirs.from_payloads(
            [ask_payload], [handwritten.Ask]
        ),
        "leaf result encode, durapipe": lambda: ours.to_payloads([leaf]),
        "leaf result encode, hand-written": lambda: theirs.to_payloads([answer]),
        "leaf result decode, durapipe": lambda: ours.from_payloads([leaf_payload], [LeafResult]),
        "leaf result decode, hand-written": lambda: theirs.from_payloads(
            [answer_payload], [handwritten.Answer]
        ),
        "run result encode, durapipe": lambda: ours.to_payloads([result]),
        "run result encode, hand-written": lambda: theirs.to_payloads([leaf.output]),
    }


def _activity_bodies(store: Path) -> Mapping[str, Callable[[], object]]:
    """The activity bodies: durapipe's llm leaf (checkpoints on, then off) and the baseline's."""
    from durapipe.activities import run_llm
    from durapipe.adapters._litellm import litellm_module
    from durapipe.adapters._offline import register_offline_model
    from durapipe.runtime import LlmCall
    from durapipe.spec import LlmPipe
    from durapipe.stores import SqliteCheckpoints

    register_offline_model()
    litellm_module()
    checkpoints = SqliteCheckpoints(str(store))
    pipe = LlmPipe(model="durapipe/offline", prompt="{{ question }}")
    loop = asyncio.new_event_loop()
    counter = iter(range(10**9))

    def durapipe(with_checkpoints: bool) -> Callable[[], object]:
        def leaf() -> None:
            call = LlmCall(
                run_id=f"ab-{next(counter)}", path="ask", pipe_name="ask", pipe=pipe,
                inputs=QUESTION,
            )  # fmt: skip
            loop.run_until_complete(run_llm(call, 1, checkpoints if with_checkpoints else None))

        return leaf

    def hand_written() -> None:
        loop.run_until_complete(handwritten.ask(handwritten.question(f"q{next(counter)}")))

    return {
        "llm body, durapipe": durapipe(True),
        "llm body, checkpoints off": durapipe(False),
        "llm body, hand-written": hand_written,
    }


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds process ``pid``'s threads have used, summed by thread name without its number
    (``python``, ``workflow-proces``, ``tokio-rt-worker``, ...), from ``/proc/PID/task``."""
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        group = re.sub(r"[-_]?\d+$", "", name)
        totals[group] = totals.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


async def live(rounds: int) -> None:
    """The ``concurrent200`` load on both sides' worker processes; CPU ms per run by thread."""
    import durapipe as dp
    from bench.__main__ import SMALL_RUNS, load_pipeline, workers

    with tempfile.TemporaryDirectory(prefix="concurrent-ab-") as folder:
        work = Path(folder)
        pipeline, file = load_pipeline(work)
        async with dev_server(None) as address:
            queue = f"cab-{uuid.uuid4().hex[:8]}"
            with workers(address, file, work, queue) as (ours_worker, theirs_worker):
                ours_client = await dp.connect(address, pipeline=pipeline)
                theirs_client = await handwritten.connect(address)

                async def ours() -> None:
                    handles = [
                        await dp.start(
                            ours_client, pipeline, "ask", {"question": f"q{i}"}, task_queue=queue
                        )
                        for i in range(SMALL_RUNS)
                    ]
                    await asyncio.gather(*(h.result() for h in handles))

                async def theirs() -> None:
                    handles = [
                        await theirs_client.start_workflow(
                            "bench.single", f"q{i}", id=f"hw-{uuid.uuid4().hex}",
                            task_queue=queue + "-hw",
                        )
                        for i in range(SMALL_RUNS)
                    ]  # fmt: skip
                    await asyncio.gather(*(h.result() for h in handles))

                sides: dict[str, tuple[Callable[[], Awaitable[None]], int]] = {
                    "durapipe": (ours, ours_worker.pid),
                    "hand-written": (theirs, theirs_worker.pid),
                }
                for run, _ in sides.values():
                    await run()  # warm up
                spent: dict[str, dict[str, float]] = {name: {} for name in sides}
                names = list(sides)
                for n in range(rounds):
                    for name in names[n % 2 :] + names[: n % 2]:
                        run, pid = sides[name]
                        await cpu_when_quiet(pid)
                        before, start = thread_cpu(pid), time.perf_counter()
                        await run()
                        await cpu_when_quiet(pid)
                        after = thread_cpu(pid)
                        print(
                            f"# {name}: round {n + 1} {time.perf_counter() - start:.2f}s wall, "
                            f"{(sum(after.values()) - sum(before.values())) / SMALL_RUNS * 1e3:.3f}"
                            " ms CPU per run",
                            flush=True,
                        )
                        for group, seconds in after.items():
                            used = seconds - before.get(group, 0.0)
                            spent[name][group] = spent[name].get(group, 0.0) + used
                for name, groups in spent.items():
                    split = ", ".join(
                        f"{group} {seconds / rounds / SMALL_RUNS * 1e3:.3f}"
                        for group, seconds in sorted(groups.items())
                        if seconds
                    )
                    total = sum(groups.values()) / rounds / SMALL_RUNS * 1e3
                    print(f"{name}: {total:.3f} ms CPU per run ({split})", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Time each piece on both sides, alternating, and print us per run."""
    parser = argparse.ArgumentParser(prog="python -m bench.concurrent_ab", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant per round")
    parser.add_argument("--live", action="store_true", help="the concurrent200 load, by thread")
    args = parser.parse_args(argv)
    if args.live:
        asyncio.run(live(args.rounds))
        return
    report(compare(_payloads(), rounds=args.rounds, calls=args.calls))
    with tempfile.TemporaryDirectory() as folder:
        bodies = _activity_bodies(Path(folder) / "ab.sqlite")
        report(compare(bodies, rounds=args.rounds, calls=max(1, args.calls // 10)))


if __name__ == "__main__":
    main()
