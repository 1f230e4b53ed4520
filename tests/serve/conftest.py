"""Fixtures of the serve tests: a worker in this process and `durapipe serve` as a real child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mthds.runners.api.client import MthdsAPIClient
from pipelex_sdk.client import PipelexAPIClient
from temporalio.client import Client

import durapipe.serve._app as serve_app
from durapipe.serve import ServeConfig, create_app
from durapipe.serve._slow import ClientLimits, GuardedSite
from tests.serve.serve_tools import GATE_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORKERS_FILE = HERE / "workers.mthds"
TOKEN = "serve-test-token-0f3c"
# A one-step method a client sends (the offline model: any worker runs it).
HELLO_METHOD = """
version: 1
pipes:
  hello:
    kind: llm
    model: durapipe/offline
    inputs: {topic: text}
    prompt: "Say hello about {{ topic }}."
"""
_READY = re.compile(r"MTHDS protocol on (http://\S+)/v1")


@dataclass
class Served:
    """A running `durapipe serve`: its base URL (for the clients) and its process."""

    url: str
    process: asyncio.subprocess.Process
    log: list[str]

    async def kill(self) -> None:
        """SIGKILL this server (its own pid) and wait until it is gone."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM this server (its own pid), then SIGKILL it if it does not stop."""
        if self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=20)
        except TimeoutError:
            await self.kill()


def _child_env(gate: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DURAPIPE_SERVE_TOKEN": TOKEN,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        GATE_ENV: str(gate),
    }


async def _child(
    ready: re.Pattern[str], gate: Path, *args: str
) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """Start `durapipe ARGS` and wait for the line ``ready`` matches; its stderr keeps being read."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "durapipe",
        *args,
        cwd=str(ROOT),
        env=_child_env(gate),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(process.stderr.readline(), timeout=90)
        if not raw:
            await process.wait()
            raise AssertionError(
                f"durapipe {args[0]} exited before it was ready:\n{''.join(lines)}"
            )
        line = raw.decode()
        lines.append(line)
        found = ready.search(line)
        if found:
            # Keep reading its stderr: a full pipe would stall the child, and a failing test shows it.
            _DRAINS.add(asyncio.create_task(_drain(process.stderr, lines)))
            return process, found.group(found.lastindex or 0), lines


_DRAINS: set[asyncio.Task[None]] = set()


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while raw := await stream.readline():
        lines.append(raw.decode())


async def start_serve(address: str, task_queue: str, gate: Path, *extra: str) -> Served:
    """Start `durapipe serve` on a free port against ``address`` and wait until it listens."""
    process, url, lines = await _child(
        _READY,
        gate,
        "serve",
        str(WORKERS_FILE),
        "--port",
        "0",
        "--address",
        address,
        "--task-queue",
        task_queue,
        *extra,
    )
    return Served(url, process, lines)


async def entered(gate: Path, before: set[Path], count: int = 1, timeout: float = 60) -> list[str]:
    """The keys of the next ``count`` runs to reach their gates (see `serve_tools.gate`), once they
    have; ``before``: the gate files that were there before them."""
    async with asyncio.timeout(timeout):
        # The files are written by another process (the worker): there is no event to await.
        while len(set(gate.glob("entered-*")) - before) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return [path.name.removeprefix("entered-") for path in set(gate.glob("entered-*")) - before]


def mthds_client(served: Served, token: str = TOKEN) -> MthdsAPIClient:
    """The protocol's own client (`mthds`), pointed at ``served``."""
    return MthdsAPIClient(api_key=token, base_url=served.url, request_timeout_seconds=60)


def lifecycle_client(url: str) -> PipelexAPIClient:
    """`pipelex-sdk`'s client, for the durable run lifecycle (status, results, wait)."""
    return PipelexAPIClient(api_key=TOKEN, base_url=url, request_timeout_seconds=60)


@pytest.fixture(scope="module")
def gate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of this module's gate (see `serve_tools.gate`)."""
    return tmp_path_factory.mktemp("gate")


async def start_worker(address: str, task_queue: str, gate: Path) -> Served:
    """Start `durapipe worker` on the serve tests' tools (a child process) and wait until it is ready."""
    process, _, lines = await _child(
        re.compile(r"(worker ready)"),
        gate,
        "worker",
        str(WORKERS_FILE),
        "--task-queue",
        task_queue,
        "--address",
        address,
    )
    return Served("", process, lines)


@pytest.fixture(scope="module")
async def worker(temporal_address: str, gate_dir: Path) -> AsyncIterator[str]:
    """`durapipe worker` on the serve tests' tools, as a child process; yields its task queue."""
    queue = f"serve-{uuid.uuid4().hex[:12]}"
    process = await start_worker(temporal_address, queue, gate_dir)
    try:
        yield queue
    finally:
        await process.stop()


@pytest.fixture(scope="module")
async def served(temporal_address: str, worker: str, gate_dir: Path) -> AsyncIterator[Served]:
    """`durapipe serve` in front of this module's worker."""
    server = await start_serve(temporal_address, worker, gate_dir)
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            await server.stop()


@contextlib.asynccontextmanager
async def serving(
    client: Client, task_queue: str, limits: ClientLimits | None = None, max_loads: int = 2
) -> AsyncIterator[int]:
    """`durapipe serve`'s app on a free port of this process (as `durapipe serve` runs it, under
    ``limits`` if given, ``max_loads`` methods loading at once); its port."""
    config = ServeConfig(
        token=TOKEN, task_queue=task_queue, limits=limits or ClientLimits(), max_loads=max_loads
    )
    runner = web.AppRunner(create_app(config, client), handler_cancellation=True)
    await runner.setup()
    site: web.BaseSite = web.TCPSite(runner, "127.0.0.1", 0)
    if limits is not None:
        site = GuardedSite(runner, "127.0.0.1", 0, limits)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


class HeldLoader:
    """`load_method` held at a gate: ``entered`` once a load began, which waits for ``opened``
    (at most 20 s, then says it was not opened) before loading."""

    def __init__(self, load: Any) -> None:
        self.load = load
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.not_opened = False
        self.ended = threading.Event()
        self.began = threading.Semaphore(0)  # one release per load that began

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.began.release()
        # Held on the event loop, nothing could open it: the wait times out and says so.
        self.not_opened = not self.opened.wait(20)
        try:
            return self.load(*args, **kwargs)
        finally:
            self.ended.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldLoader]:
    loader = HeldLoader(serve_app.load_method)
    monkeypatch.setattr(serve_app, "load_method", loader)
    yield loader
    loader.opened.set()
