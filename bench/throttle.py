"""Throttling scenario: 100 runs over four pipes, one provider limited across three worker processes.

The fake provider runs as its own process and measures what it saw. Calls to ``openai/alpha`` match
the pipeline's limit (``concurrency: C``, ``rate: R/s``) and are routed to the ``alpha`` queue,
served by two ``durapipe worker --queue ...`` processes that count the limit together (one SQLite
file, ``DURAPIPE_LIMITS``). ``beta`` and ``gamma`` are not limited, for contrast. A fourth pipe asks
``openai/delta``, which always fails (503), with ``openai/alpha`` as its fallback: it runs on the main
queue, so a third worker's fallback requests share alpha's limit with the two alpha workers. Run it
with ``make throttle`` or::

    python -m bench.throttle [--runs 100] [--concurrency 4] [--rate 5] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import durapipe as dp
from bench._common import dev_server, durapipe_cli, figure, note, process, wait_ready

# Keys live in the workers' environment (a pipe may not carry one); the fake provider takes any.
os.environ.setdefault("OPENAI_API_KEY", "sk-fake-throttle")
PROVIDERS = ("alpha", "beta", "gamma")
FAILING = "delta"  # always answers 503; its pipe falls back to alpha
PIPES = (*PROVIDERS, FAILING)  # the runs take turns
CALL_SECONDS = 0.4  # each fake call takes this long, so concurrency builds up

PIPELINE = """
routing:
  - model: openai/alpha
    queue: {alpha_queue}
limits:
  - model: openai/alpha
    concurrency: {concurrency}
    rate: {rate}/s
models:
{models}
pipes:
{pipes}
"""
# The workers' deck sends each model to the fake provider (a pipe may not say where calls go).
MODEL = """  {name}:
    model: openai/{name}
    api_base: "{url}"
"""
PIPE = """  ask_{name}:
    kind: llm
    model: openai/{name}
    inputs: {{question: text}}
    prompt: "{{{{ question }}}}"
"""
FALLING_BACK = """  ask_{failing}:
    kind: llm
    model: openai/{failing}
    fallbacks: [openai/alpha]
    inputs: {{question: text}}
    prompt: "{{{{ question }}}}"
"""


async def scenario(address: str, runs: int, concurrency: int, rate: int, work: Path) -> bool:
    """Run the scenario against the server at ``address``; print the figures; True if within limits."""
    script = work / "script.json"
    failing = {"rate": 1.0, "actions": [{"type": "status", "code": 503}], "models": [FAILING]}
    script.write_text(
        json.dumps({"default": {"type": "hang", "seconds": CALL_SECONDS}, "failure_rate": failing})
    )
    provider_args = [
        sys.executable,
        "-m",
        "durapipe.testing.fake_provider",
        "--script",
        str(script),
    ]
    queue = f"throttle-{uuid.uuid4().hex[:8]}"
    os.environ["DURAPIPE_LIMITS"] = str(work / "limits.sqlite")  # the workers inherit it
    with contextlib.ExitStack() as running:
        provider = running.enter_context(process(provider_args, work / "provider.log"))
        wait_ready(provider, work / "provider.log", "listening on")
        url = re.findall(r"listening on (\S+)", (work / "provider.log").read_text())[0]
        pipes = "".join(PIPE.format(name=name) for name in PROVIDERS)
        pipes += FALLING_BACK.format(failing=FAILING)
        models = "".join(MODEL.format(name=name, url=url) for name in (*PROVIDERS, FAILING))
        file = work / "throttle.yaml"
        alpha_queue = f"{queue}-alpha"
        file.write_text(
            PIPELINE.format(
                alpha_queue=alpha_queue,
                concurrency=concurrency,
                rate=rate,
                models=models,
                pipes=pipes,
            )
        )
        worker = [*durapipe_cli("worker", str(file), "--address", address)]
        limited = ["--queue", alpha_queue]
        # One worker for the workflows and the unlimited providers, two for the limited one;
        # started together, since each takes seconds to import litellm.
        workers = {
            work / "main.log": [*worker, "--task-queue", queue],
            work / "alpha1.log": [*worker, *limited],
            work / "alpha2.log": [*worker, *limited],
        }
        started = {log: running.enter_context(process(args, log)) for log, args in workers.items()}
        for log, child in started.items():
            wait_ready(child, log, "worker ready")
        completed = await _run_all(address, dp.load(file), queue, runs)
        ledger = await asyncio.to_thread(_ledger, url)
    alpha = [c for c in ledger["calls"] if c["model"] == "alpha"]
    seen_concurrency = ledger["max_concurrency_by_model"].get("alpha", 0)
    seen_rate = ledger["max_rate_1s_by_model"].get("alpha", 0)
    figure("throttle.runs", runs)
    figure("throttle.runs_completed", completed)
    figure("throttle.alpha.calls", len(alpha))
    # Each delta call failed and handed its request to alpha: as many of alpha's calls came
    # from the main queue's worker, through a waterfall, as delta calls.
    figure(f"throttle.{FAILING}.calls", sum(1 for c in ledger["calls"] if c["model"] == FAILING))
    figure("throttle.alpha.limit_concurrency", concurrency)
    figure("throttle.alpha.max_concurrency", seen_concurrency)
    figure("throttle.alpha.limit_rate_per_s", rate)
    figure("throttle.alpha.max_rate_per_s", seen_rate)
    # How arrivals were timed: by the kernel (1) or, where it cannot, the provider's loop (0).
    figure("throttle.arrivals_timed_at_kernel", int(ledger["arrivals_timed_by"] == "kernel"))
    _arrival_figures(alpha, rate, work / "limits.sqlite")
    for name in PROVIDERS[1:]:
        figure(f"throttle.{name}.max_concurrency", ledger["max_concurrency_by_model"].get(name, 0))
        figure(f"throttle.{name}.max_rate_per_s", ledger["max_rate_1s_by_model"].get(name, 0))
    met = completed == runs and seen_concurrency <= concurrency and seen_rate <= rate
    figure("throttle.target_met", int(met))
    return met


def _arrival_figures(calls: list[dict[str, Any]], rate: int, limits: Path) -> None:
    """Throughput, and how close rate + 1 arrivals came to fitting in one second (over 1.0 s:
    never), on the kernel's clock; the same by the provider loop's clock and by the leases'
    starts, to show where a bunching came from."""
    kernel = sorted(c["kernel_received_at"] or c["received_at"] for c in calls)
    if len(kernel) > 1:
        figure("throttle.alpha.calls_per_s", f"{(len(kernel) - 1) / (kernel[-1] - kernel[0]):.3f}")
    with contextlib.closing(sqlite3.connect(limits)) as db:
        leases = sorted(t for (t,) in db.execute("SELECT started FROM leases"))
    loop = sorted(c["received_at"] for c in calls)
    figure("throttle.alpha.leases_max_per_s", _max_in_1s(leases))
    figure("throttle.alpha.loop_max_rate_per_s", _max_in_1s(loop))
    for clock, times in (("", kernel), ("loop_", loop), ("leases_", leases)):
        spans = [later - first for first, later in zip(times, times[rate:], strict=False)]
        if spans:
            figure(f"throttle.alpha.{clock}tightest_{rate + 1}_s", f"{min(spans):.3f}")


def _max_in_1s(times: list[float]) -> int:
    return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


def _ledger(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url.removesuffix('/v1')}/_fake/ledger") as answer:
        return dict(json.load(answer))


async def _run_all(address: str, pipeline: dp.Pipeline, queue: str, runs: int) -> int:
    client = await dp.connect(address)
    # Started all at once, so the providers without a limit see a burst even on a loaded host
    # (one at a time, their calls could trickle in below alpha's limits and prove nothing).
    handles = await asyncio.gather(
        *(
            dp.start(
                client,
                pipeline,
                f"ask_{PIPES[index % len(PIPES)]}",
                {"question": f"question {index}"},
                task_queue=queue,
            )
            for index in range(runs)
        )
    )
    results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    for failure in [r for r in results if isinstance(r, BaseException)][:3]:
        note(f"run failed: {failure}")
    return sum(1 for r in results if not isinstance(r, BaseException))


async def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 when every run completed within the limits."""
    parser = argparse.ArgumentParser(prog="python -m bench.throttle")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4, help="limit across both workers")
    parser.add_argument("--rate", type=int, default=5, help="calls per second, all workers")
    parser.add_argument("--address", help="an existing Temporal server [default: start one]")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durapipe-throttle-") as work:
        async with dev_server(args.address) as address:
            met = await scenario(address, args.runs, args.concurrency, args.rate, Path(work))
    return 0 if met else 1


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the dev server and worker processes are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(asyncio.run(main()))
