"""Many clients polling `durapipe serve`: the server's CPU per poll and the Temporal calls each
poll makes, counted by the Temporal server itself.

``python -m bench.serve_polls [--clients 200] [--rounds 5] [--interval-s 1]``

Starts a dev server (its Prometheus metrics on a free port), one ``durapipe worker`` and one
``durapipe serve`` (child processes; serve with no per-address cap, since every client here comes
from 127.0.0.1), and starts one run per client of each kind: ``answer`` (one offline llm step: it
completes) and ``held`` (an llm step, then an approval no one gives: it stays ``RUNNING``). Then,
for each route (``status``, ``results``, ``progress``) and each kind of run, ``--clients``
concurrent clients each poll their own run ``--rounds`` times, ``--interval-s`` apart (the
``Retry-After`` serve sends). Per case it prints:

- ``<case>.polls`` and ``<case>.answers`` (by HTTP status);
- ``<case>.cpu_ms_per_poll``: serve's CPU (``/proc/PID/stat``, user + system, 10 ms ticks) over
  the case, once serve is quiet again, per poll (a timing figure: unreliable on a shared host);
- ``<case>.temporal.<Operation>``: the calls Temporal's frontend counted for that operation
  (``service_requests`` of its ``/metrics``, before and after the case), per poll, for every
  operation serve makes (the worker's polls and responses are left out: they are no poll's). These
  counts are exact and load-independent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import socket
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from bench._common import (
    cpu_when_quiet,
    durapipe_cli,
    figure,
    load_average,
    note,
    process,
    wait_ready,
)
from durapipe.ops._dev import search_attribute_flags, temporal_cli

PIPELINE = """
version: 1
pipes:
  answer:
    kind: llm
    model: durapipe/offline
    inputs: {topic: text}
    prompt: "One line about {{ topic }}."
  held:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: answer
        result: draft
      - pipe: hold
        inputs: {draft: draft}
        result: approved
    output: approved
  hold:
    kind: approval
    inputs: {draft: text}
    value: draft
    message: "Go on?"
"""
TOKEN = "bench-serve-polls"
# What the worker asks Temporal on its own (polls, answers, heartbeats): no poll's cost.
# (PollWorkflowExecutionHistory is no worker's: it is a history read that waits for the close.)
WORKER_OPERATIONS = re.compile(
    r"Poll(Workflow|Activity|Nexus)TaskQueue|Respond|RecordActivityTaskHeartbeat|"
    r"RecordWorkerHeartbeat|ShutdownWorker|GetSystemInfo|DescribeNamespace"
)
_SAMPLE = re.compile(r"^service_requests\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)
_OPERATION = re.compile(r'operation="([^"]+)"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _calls(metrics: str) -> collections.Counter[str]:
    """Temporal's frontend calls so far, by operation (``service_requests``)."""
    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(metrics)).text
    counts: collections.Counter[str] = collections.Counter()
    for labels, value in _SAMPLE.findall(text):
        found = _OPERATION.search(labels)
        # The frontend's: what clients ask (matching and history count the server's own calls).
        if 'service_name="frontend"' not in labels:
            continue
        if found and not WORKER_OPERATIONS.search(found.group(1)):
            counts[found.group(1)] += int(float(value))
    return counts


async def _settled_calls(metrics: str) -> collections.Counter[str]:
    """`_calls` once the server's counters stop moving: they reach ``/metrics`` up to a second
    after the call (the reporter's flush), and a case must not count its predecessor's."""
    last = await _calls(metrics)
    while True:
        await asyncio.sleep(1.5)
        now = await _calls(metrics)
        if now == last:
            return now
        last = now


async def _start_runs(url: str, pipe: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = asyncio.Semaphore(32)

    async def one(index: int) -> str:
        async with limits, httpx.AsyncClient(timeout=120, headers=headers) as http:
            answer = await http.post(
                f"{url}/v1/start", json={"pipe_code": pipe, "inputs": {"topic": f"t{index}"}}
            )
            answer.raise_for_status()
            return str(answer.json()["pipeline_run_id"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _until(url: str, runs: list[str], status: str) -> None:
    """Wait until every run of ``runs`` reads ``status`` (completed) or its step waits (held)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=120, headers=headers) as http:
        for run in runs:
            while True:
                read = (await http.get(f"{url}/v1/runs/{run}/progress")).json()
                steps = [i["status"] for i in read.get("invocations", [])]
                if read.get("status") == status or (status == "held" and "running" in steps[1:]):
                    break
                await asyncio.sleep(0.2)


async def _poll(url: str, runs: list[str], route: str, rounds: int, interval_s: float) -> list[int]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    codes: list[int] = []

    async def client(run: str) -> None:
        async with httpx.AsyncClient(timeout=120, headers=headers) as http:
            for done in range(rounds):
                if done:
                    await asyncio.sleep(interval_s)
                codes.append((await http.get(f"{url}/v1/runs/{run}/{route}")).status_code)

    await asyncio.gather(*(client(run) for run in runs))
    return codes


async def bench(clients: int, rounds: int, interval_s: float) -> None:
    metrics_port = _free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level="error",
        dev_server_extra_args=[*search_attribute_flags(), "--metrics-port", str(metrics_port)],
    )
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    address = env.client.service_client.config.target_host
    queue = f"polls-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix="serve-polls-") as folder, ExitStack() as stack:
            here = Path(folder)
            pipeline = here / "polls.yaml"
            pipeline.write_text(PIPELINE)
            worker_log, serve_log = here / "worker.log", here / "serve.log"
            common = ["--address", address, "--task-queue", queue]
            worker = stack.enter_context(
                process(durapipe_cli("worker", str(pipeline), *common), worker_log)
            )
            wait_ready(worker, worker_log, "worker ready")
            serve_env = {**__import__("os").environ, "DURAPIPE_SERVE_TOKEN": TOKEN}
            server = stack.enter_context(
                process(
                    durapipe_cli(
                        "serve",
                        str(pipeline),
                        *common,
                        "--port",
                        "0",
                        "--max-connections",
                        str(max(256, clients + 16)),
                        "--max-connections-per-peer",
                        "0",
                    ),
                    serve_log,
                    env=serve_env,
                )
            )
            wait_ready(server, serve_log, "MTHDS protocol on")
            found = re.search(r"MTHDS protocol on (http://\S+)/v1", serve_log.read_text())
            assert found is not None
            url = found.group(1)
            note(f"{clients} runs of each kind on {address}, serve at {url} (pid {server.pid})")
            ended = await _start_runs(url, "answer", clients)
            held = await _start_runs(url, "held", clients)
            await _until(url, ended, "succeeded")
            await _until(url, held, "held")
            for kind, runs in (("completed", ended), ("running", held)):
                for route in ("status", "results", "progress"):
                    case = f"serve_polls.{route}.{kind}"
                    cpu_before = await cpu_when_quiet(server.pid)
                    calls_before = await _settled_calls(metrics)
                    began = time.monotonic()
                    codes = await _poll(url, runs, route, rounds, interval_s)
                    wall = time.monotonic() - began
                    cpu_after = await cpu_when_quiet(server.pid)
                    calls = await _settled_calls(metrics) - calls_before
                    polls = len(codes)
                    figure(f"{case}.polls", polls)
                    by_code = collections.Counter(codes)
                    figure(
                        f"{case}.answers", " ".join(f"{c}:{n}" for c, n in sorted(by_code.items()))
                    )
                    figure(f"{case}.wall_s", wall)
                    figure(f"{case}.cpu_ms_per_poll", (cpu_after - cpu_before) * 1000 / polls)
                    for operation, count in sorted(calls.items()):
                        figure(f"{case}.temporal.{operation}", count / polls, decimals=3)
    finally:
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_polls")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval-s", type=float, default=1.0)
    args = parser.parse_args()
    load_average("start")
    asyncio.run(bench(args.clients, args.rounds, args.interval_s))
    load_average("end")


if __name__ == "__main__":
    sys.exit(main())
