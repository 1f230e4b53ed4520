"""Status polls of `durapipe serve` while clients flood it with large methods to validate: the
longest a poll waits, with every method loading at once (``--max-loads 0``) and with the cap.

``python -m bench.serve_loads [--flooders 16] [--pipes 2000] [--seconds 20] [--caps 0,2]``

Starts a dev server, then per cap one ``durapipe serve`` (a child process) and one run (no worker:
it stays ``RUNNING``). ``--flooders`` clients each send ``POST /v1/validate`` of a method of
``--pipes`` llm pipes back to back (after a ``503`` they wait its ``Retry-After``, as a client
should), while one client polls the run's status every 0.1 s, for ``--seconds``. Per cap it prints
the polls, their latency (``max``, ``p99``, ``p50``, in ms: timings, unreliable on a shared host)
and the validates' answers by HTTP status (exact counts).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from bench._common import durapipe_cli, figure, load_average, note, process, wait_ready
from durapipe.ops._dev import search_attribute_flags, temporal_cli

TOKEN = "bench-serve-loads"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
PIPE = """  p{i}:
    kind: llm
    model: durapipe/offline
    inputs: {{topic: text}}
    prompt: "Say something about {{{{ topic }}}}, number {i}."
"""


def method(pipes: int) -> str:
    """A durapipe YAML method of ``pipes`` llm pipes (2,000: ~240 KB)."""
    return "version: 1\npipes:\n" + "".join(PIPE.format(i=i) for i in range(pipes))


async def _flood(url: str, body: dict[str, object], until: float, codes: list[int]) -> None:
    async with httpx.AsyncClient(timeout=300, headers=HEADERS) as http:
        while time.monotonic() < until:
            answer = await http.post(f"{url}/v1/validate", json=body)
            codes.append(answer.status_code)
            if answer.status_code == 503:
                await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))


async def _polls(url: str, run: str, until: float) -> list[float]:
    waits: list[float] = []
    async with httpx.AsyncClient(timeout=300, headers=HEADERS) as http:
        while time.monotonic() < until:
            began = time.monotonic()
            answer = await http.get(f"{url}/v1/runs/{run}/status")
            answer.raise_for_status()
            waits.append(time.monotonic() - began)
            await asyncio.sleep(0.1)
    return waits


async def _case(address: str, cap: int, args: argparse.Namespace, log: Path) -> None:
    env = {**os.environ, "DURAPIPE_SERVE_TOKEN": TOKEN}
    command = durapipe_cli(
        "serve", "--address", address, "--port", "0", "--max-loads", str(cap),
        "--max-connections-per-peer", "0", "--task-queue", f"loads-{cap}",
    )  # fmt: skip
    with ExitStack() as stack:
        server = stack.enter_context(process(command, log, env=env))
        wait_ready(server, log, "MTHDS protocol on")
        found = re.search(r"MTHDS protocol on (http://\S+)/v1", log.read_text())
        assert found is not None
        url = found.group(1)
        hello = "version: 1\npipes:\n" + PIPE.format(i=0)
        start = {"pipe_code": "p0", "files": {"m.yaml": hello}, "inputs": {"topic": "x"}}
        async with httpx.AsyncClient(timeout=60, headers=HEADERS) as http:
            started = await http.post(f"{url}/v1/start", json=start)
            started.raise_for_status()
            run = started.json()["pipeline_run_id"]
        body = {"files": {"m.yaml": method(args.pipes)}}
        until = time.monotonic() + args.seconds
        codes: list[int] = []
        floods = [_flood(url, body, until, codes) for _ in range(args.flooders)]
        waits, *_ = await asyncio.gather(_polls(url, run, until), *floods)
        case = f"serve_loads.max_loads_{cap}"
        figure(f"{case}.polls", len(waits))
        ms = sorted(w * 1000 for w in waits)
        figure(f"{case}.poll_ms_max", ms[-1])
        figure(f"{case}.poll_ms_p99", ms[min(len(ms) - 1, int(len(ms) * 0.99))])
        figure(f"{case}.poll_ms_p50", statistics.median(ms))
        counted = collections.Counter(codes)
        figure(f"{case}.validates", " ".join(f"{c}:{n}" for c, n in sorted(counted.items())))


async def bench(args: argparse.Namespace) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level="error",
        dev_server_extra_args=search_attribute_flags(),
    )
    address = env.client.service_client.config.target_host
    note(f"{args.flooders} flooders, methods of {args.pipes} pipes, {args.seconds} s a case")
    try:
        with tempfile.TemporaryDirectory(prefix="serve-loads-") as folder:
            for index, cap in enumerate(args.caps):  # a cap may come twice: a log each
                await _case(address, cap, args, Path(folder) / f"serve-{index}-{cap}.log")
    finally:
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_loads")
    parser.add_argument("--flooders", type=int, default=16)
    parser.add_argument("--pipes", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--caps", type=lambda s: [int(c) for c in s.split(",")], default=[0, 2])
    args = parser.parse_args()
    load_average("start")
    asyncio.run(bench(args))
    load_average("end")


if __name__ == "__main__":
    sys.exit(main())
