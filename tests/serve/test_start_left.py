"""A `/v1/start` whose client closes its connection while the run is starting, over real sockets:
the start is carried to its end (one log line names the run), never left half done."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from types import TracebackType

import pytest
from temporalio.client import WorkflowExecutionStatus

import durapipe as dp
from durapipe.serve._slow import ClientLimits
from tests.serve.conftest import HELLO_METHOD as METHOD
from tests.serve.conftest import TOKEN, serving
from tests.support import eventually

# What a start call to Temporal sends at the least (the run's spec rides in it); a keep-alive
# ping of the connection is 17 bytes.
START_CALL_BYTES = 500


class HeldProxy:
    """A TCP proxy to Temporal whose bytes towards Temporal can be held: a call sent while they
    are has left its client, and waits, unanswered, until they are released."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.holding = False
        self.held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def held_bytes(self) -> int:
        return sum(len(data) for _, data in self.held)

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    def release(self) -> None:
        """Send what was held, in order, and hold nothing more."""
        self.holding = False
        for writer, data in self.held:
            writer.write(data)
        self.held.clear()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer, holds=True),
            self._pump(up_reader, writer, holds=False),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, holds: bool
    ) -> None:
        while data := await reader.read(65536):
            if holds and self.holding:
                self.held.append((writer, data))
                continue
            writer.write(data)
            await writer.drain()
        writer.close()


def _start_request() -> bytes:
    body = json.dumps(
        {"pipe_code": "hello", "files": {"method.yaml": METHOD}, "inputs": {"topic": "x"}}
    ).encode()
    return (
        b"POST /v1/start HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def test_a_start_whose_client_leaves_while_its_run_starts_still_starts_it(
    temporal_address: str, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="durapipe.serve")
    request = _start_request()
    proxy = HeldProxy(temporal_address)
    async with proxy as address:
        client = await dp.connect(address, checkpoints=None)
        async with serving(client, task_queue) as port:
            proxy.holding = True
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            # The start call has left the server for Temporal, unanswered: now the client goes.
            await eventually(
                lambda: asyncio.sleep(0, proxy.held_bytes > START_CALL_BYTES),
                "the start call to reach Temporal",
            )
            writer.close()
            await eventually(
                lambda: asyncio.sleep(0, "while its run was starting" in caplog.text),
                lambda: f"the server to see its client leave: {caplog.text!r}",
                timeout=10,
            )
            proxy.release()
            said = await eventually(
                lambda: asyncio.sleep(
                    0, re.search(r"started run (\S+) for a client that left", caplog.text)
                ),
                lambda: f"the start to end: {caplog.text!r}",
            )
    run_id = said.group(1)
    direct = await dp.connect(temporal_address)
    started = await direct.get_workflow_handle(run_id).describe()
    assert started.status == WorkflowExecutionStatus.RUNNING and started.task_queue == task_queue
    await direct.get_workflow_handle(run_id).terminate("test over")
    runs = [w.id async for w in direct.list_workflows(f"TaskQueue = '{task_queue}'")]
    assert runs == [run_id]  # one start, one run


async def test_starts_whose_clients_left_keep_their_places_under_the_caps(
    temporal_address: str, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A client that sends a start and leaves at once, again and again, while Temporal is slow to
    # answer: each start goes on, so each keeps its connection's place until it ends, or one
    # address would hold any number of starts in flight past its cap of connections.
    caplog.set_level(logging.WARNING, logger="durapipe.serve")
    proxy = HeldProxy(temporal_address)
    async with proxy as address:
        client = await dp.connect(address, checkpoints=None)
        async with serving(client, task_queue, ClientLimits(max_connections_per_peer=2)) as port:
            proxy.holding = True
            for left in (1, 2):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(_start_request())
                await writer.drain()
                await eventually(
                    lambda left=left: asyncio.sleep(0, proxy.held_bytes > left * START_CALL_BYTES),
                    "the start call to reach Temporal",
                )
                writer.close()
                await eventually(
                    lambda left=left: asyncio.sleep(
                        0, caplog.text.count("while its run was starting") == left
                    ),
                    lambda: f"the server to see its client leave: {caplog.text!r}",
                    timeout=10,
                )
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_start_request())
            raw = await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            assert raw.startswith(b"HTTP/1.1 503"), raw
            assert b"holds its limit of 2 open connections" in raw, raw
            proxy.release()
            await eventually(
                lambda: asyncio.sleep(0, caplog.text.count("for a client that left") == 2),
                lambda: f"the starts to end: {caplog.text!r}",
            )
            # Their places are free again once they ended.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v1/version HTTP/1.1\r\nHost: durapipe\r\n\r\n")
            raw = await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            assert raw.startswith(b"HTTP/1.1 200"), raw
    direct = await dp.connect(temporal_address)
    runs = [w.id async for w in direct.list_workflows(f"TaskQueue = '{task_queue}'")]
    assert len(runs) == 2  # the two starts, nothing of the refused one
    for run_id in runs:
        await direct.get_workflow_handle(run_id).terminate("test over")
