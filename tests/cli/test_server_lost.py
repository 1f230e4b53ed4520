"""`durapipe run` while the Temporal server goes away and comes back."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

import pytest

import durapipe as dp
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
