"""`durapipe run` while the Temporal server goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

import durapipe as dp
from durapipe.cli import _waiting
from durapipe.cli._waiting import OutageFilter, ServerWatch
from tests.conftest import EXAMPLES
from tests.support import WorkerProcess, cli_env, durapipe_command, eventually


async def test_run_says_when_it_loses_temporal_and_when_it_is_back(
    task_queue: str, tmp_path: Path
) -> None:
    # It used to wait with only the SDK's own lines ("[sdk_core::temporalio_client::retry] gRPC
    # call get_workflow_execution_history retried 7 times {...}"), one per call, never a sentence.
    server = dp.ops.DevServer(headless=True, db_file=str(tmp_path / "temporal.db"))
    await asyncio.to_thread(server.start)
    err = tmp_path / "run.err"
    worker: WorkerProcess | None = None
    run: subprocess.Popen[str] | None = None
    try:
        worker = WorkerProcess(
            EXAMPLES / "brief.yaml", server.address, task_queue, tmp_path / "worker.log",
            DURAPIPE_OFFLINE_DELAY="1",
        )  # fmt: skip
        with err.open("w") as stderr:
            run = subprocess.Popen(
                durapipe_command(
                    "run", "brief", "--file", str(EXAMPLES / "brief.yaml"), "--input",
                    "article=x", "--address", server.address, "--task-queue", task_queue,
                ),
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=cli_env(),
            )  # fmt: skip

        async def said(text: str) -> bool:
            return text in err.read_text()

        await eventually(lambda: said("started run"), "the run to start")
        await asyncio.to_thread(server.stop)
        await eventually(lambda: said("lost Temporal at"), "the CLI to say so", timeout=30)
        await asyncio.sleep(3.0)  # a few more seconds down: nothing more is printed meanwhile
        await asyncio.to_thread(server.start)  # same port, same database
        await asyncio.to_thread(run.wait, 180)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        if worker is not None:
            worker.stop()
        await asyncio.to_thread(server.stop)
    text = err.read_text()
    assert run.returncode == 0, text
    lost = [line for line in text.splitlines() if "lost Temporal" in line]
    assert lost == [
        f"lost Temporal at {server.address}: it does not answer; waiting for it to come back "
        f"(Ctrl-C stops the waiting, not the run)"
    ], text
    assert f"Temporal at {server.address} answers again" in text
    assert "sdk_core" not in text


async def test_worker_says_when_it_loses_temporal_and_when_it_is_back(
    task_queue: str, tmp_path: Path
) -> None:
    # Stopping `durapipe dev` under a worker (the quick start's two terminals) left the worker
    # printing the SDK core's retry lines, a few every second, never a sentence of its own.
    server = dp.ops.DevServer(headless=True, db_file=str(tmp_path / "temporal.db"))
    await asyncio.to_thread(server.start)
    log = tmp_path / "worker.log"
    worker: WorkerProcess | None = None
    try:
        worker = WorkerProcess(EXAMPLES / "brief.yaml", server.address, task_queue, log)

        async def said(text: str) -> bool:
            return text in log.read_text()

        await asyncio.to_thread(server.stop)
        await eventually(lambda: said("lost Temporal at"), "the worker to say so", timeout=60)
        await asyncio.sleep(5.0)  # a few more seconds down: nothing more is printed meanwhile
        await asyncio.to_thread(server.start)  # same port, same database
        await eventually(lambda: said("answers again"), "the worker to see it back", timeout=60)
    finally:
        if worker is not None:
            worker.stop()
        await asyncio.to_thread(server.stop)
    lines = log.read_text().splitlines()
    lost = [n for n, line in enumerate(lines) if "lost Temporal" in line]
    back = [n for n, line in enumerate(lines) if "answers again" in line]
    assert len(lost) == 1 and len(back) == 1, lines
    assert lines[lost[0]] == (
        f"lost Temporal at {server.address}: it does not answer; the worker keeps reconnecting "
        f"(runs wait on the server meanwhile)"
    )
    assert not [line for line in lines[lost[0] : back[0]] if "sdk_core" in line], lines


def _core_record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("temporalio.core", level, __file__, 1, message, None, None)


UNAVAILABLE = (
    "[sdk_core::temporalio_client::retry] gRPC call poll_workflow_task_queue retried 5 times "
    "{'error': 'Status { code: Unavailable, message: \"tcp connect error\" }'}"
)


async def test_a_worker_outage_holds_back_the_cores_warnings_not_its_errors(
    temporal_address: str,
) -> None:
    # While the server is away the core's retry warnings are held back (the outage sentence says
    # it all), but an error is still printed: it may be one the outage does not explain.
    client = await dp.connect(temporal_address)
    watch = ServerWatch(client, meanwhile="the worker keeps reconnecting")
    outage = OutageFilter(watch, asyncio.get_running_loop())
    watch.lost = True

    assert not outage.filter(_core_record(logging.WARNING, "line"))
    assert outage.filter(_core_record(logging.ERROR, "line"))


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_the_cores_unavailable_line_waits_for_the_check_and_is_dropped_if_the_server_is_gone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # CI saw a followed `durapipe run` print the core's "retried 5 times ... Unavailable" line
    # before its once-a-second check had seen the server gone. Such a line now waits for a check
    # it starts at once: the server is gone, so only the outage sentence is said.
    server = dp.ops.DevServer(headless=True)
    await asyncio.to_thread(server.start)
    try:
        client = await dp.connect(server.address)
    finally:
        await asyncio.to_thread(server.stop)
    address = server.address
    watch = ServerWatch(client)
    outage = OutageFilter(watch, asyncio.get_running_loop())
    core, kept = logging.getLogger("temporalio.core"), _Kept()
    level = core.level  # the watch lowers it to ERROR while the server is gone
    core.addHandler(kept)
    core.addFilter(outage)
    try:
        core.warning(UNAVAILABLE)
        await eventually(lambda: _true(watch.lost), "the check to see the server gone", 10)
        core.warning(UNAVAILABLE)
    finally:
        core.removeFilter(outage)
        core.removeHandler(kept)
        core.setLevel(level)
        outage.close()
    assert kept.messages == []
    assert f"lost Temporal at {address}: it does not answer" in capsys.readouterr().err


async def test_the_cores_unavailable_line_is_printed_when_the_server_answers_after_all(
    temporal_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A passing hiccup the core retried through: the server answers the check, so what the core
    # said is printed as it was, not swallowed.
    client = await dp.connect(temporal_address)
    outage = OutageFilter(ServerWatch(client), asyncio.get_running_loop())
    core, kept = logging.getLogger("temporalio.core"), _Kept()
    core.addHandler(kept)
    core.addFilter(outage)
    try:
        core.warning(UNAVAILABLE)
        assert kept.messages == []  # held until the check answers
        await eventually(lambda: _true(bool(kept.messages)), "the held line to be printed", 10)
        core.warning("another line")  # not about the server: printed at once
    finally:
        core.removeFilter(outage)
        core.removeHandler(kept)
        outage.close()
    assert kept.messages == [UNAVAILABLE, "another line"]
    assert "lost Temporal" not in capsys.readouterr().err


async def _true(value: bool) -> bool | None:
    return value or None


class Link:
    """A TCP link to the Temporal server that a test can slow down, silence or cut (a server
    starved on a loaded machine, one that hangs, one that stopped)."""

    def __init__(self, upstream: str) -> None:
        self.host, port = upstream.rsplit(":", 1)
        self.port = int(port)
        self.delay = 0.0  # seconds each chunk towards the server waits
        self.silent = asyncio.Event()  # set: nothing more reaches the server
        self.address = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def cut(self) -> None:
        """Close the link and its port: a new connection is refused."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        self._writers += [writer, upstream_writer]
        for pump in (
            self._pump(reader, upstream_writer, True),
            self._pump(upstream_reader, writer),
        ):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_server: bool = False
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if to_server and self.delay:
                    await asyncio.sleep(self.delay)
                if to_server and self.silent.is_set():
                    await asyncio.Event().wait()  # held until the link is cut
                writer.write(data)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def linked(address: str) -> AsyncIterator[tuple[Link, Client, list[str]]]:
    """A link to the server at ``address``, a client connected through it, and the outcome of each
    health check the client makes ("ok", or the status of its error)."""
    link = Link(address)
    await link.start()
    core = logging.getLogger("temporalio.core")
    level = core.level  # a watch that finds the server gone lowers it to ERROR
    try:
        client = await Client.connect(link.address)
        checks: list[str] = []
        check_health = client.service_client.check_health

        async def counted(**kwargs: Any) -> bool:
            try:
                answered = await check_health(**kwargs)
            except RPCError as err:
                checks.append(err.status.name)
                raise
            checks.append("ok")
            return answered

        client.service_client.check_health = counted  # type: ignore[method-assign]
        yield link, client, checks
    finally:
        core.setLevel(level)
        await link.cut()


async def test_a_slow_server_is_asked_again_and_not_taken_as_lost(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A check that timed out (2 s) took the server as gone: on a loaded machine a server only
    # slow to answer made a followed run say "lost Temporal" and hold its stall check for 30 s.
    monkeypatch.setattr(_waiting, "HEALTH_TIMEOUT", timedelta(seconds=0.3))
    async with linked(temporal_address) as (link, client, checks):
        watch = ServerWatch(client)
        link.delay = 1.0  # every request reaches the server a second late: slow, not gone
        await watch.check()
    assert checks == ["CANCELLED", "ok"]  # the SDK reports its own timeout as CANCELLED
    assert not watch.lost
    assert "lost Temporal" not in capsys.readouterr().err


async def test_a_server_that_never_answers_is_lost_after_two_checks(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A server that accepts and never answers (hung, cut off by a firewall) was never taken as
    # lost: the SDK reports a call's own timeout as CANCELLED, which the check did not count.
    monkeypatch.setattr(_waiting, "HEALTH_TIMEOUT", timedelta(seconds=0.2))
    monkeypatch.setattr(_waiting, "SLOW_HEALTH_TIMEOUT", timedelta(seconds=0.5))
    async with linked(temporal_address) as (link, client, checks):
        watch = ServerWatch(client)
        link.silent.set()
        await watch.check()
        address = link.address
    assert checks == ["CANCELLED", "CANCELLED"]
    assert watch.lost
    err = capsys.readouterr().err
    assert f"lost Temporal at {address}: it does not answer" in err


async def test_a_refused_connection_is_lost_without_waiting_for_a_timeout(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Long timeouts: the check can only end within the test's bound through the refusal.
    monkeypatch.setattr(_waiting, "HEALTH_TIMEOUT", timedelta(seconds=60))
    monkeypatch.setattr(_waiting, "SLOW_HEALTH_TIMEOUT", timedelta(seconds=60))
    async with linked(temporal_address) as (link, client, checks):
        watch = ServerWatch(client)
        await link.cut()
        await asyncio.wait_for(watch.check(), timeout=30)
        address = link.address
    # The connection dropped under the first check ("transport error": asked again) or was
    # already known closed; either way the refusal decides.
    assert checks[-1] == "UNAVAILABLE" and len(checks) <= 2, checks
    assert watch.lost
    assert f"lost Temporal at {address}: it does not answer" in capsys.readouterr().err
