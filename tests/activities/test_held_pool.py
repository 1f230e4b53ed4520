"""The pool of held connections: a fan-out keeps its connections for the next one, and a
connection the provider closed is not reused (that answers stay in the socket until kept, over
pooled connections too: `test_answers`, `test_held_tls`)."""

from __future__ import annotations

import asyncio
import time
import typing

import httpcore
import httpx
import pytest

from durapipe.adapters import _held_reads
from durapipe.adapters._answers import _held_transport
from durapipe.adapters._held_pool import HeldPool
from durapipe.testing import FakeProvider

FAN = 150  # more than the 100 idle connections httpcore's pool kept


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What held transports do to TCP connections, in order: "open" and "close"."""
    seen: list[str] = []
    connect = _held_reads.HeldReads.connect_tcp
    close = _held_reads.HeldStream.aclose

    async def counted_connect(
        self: _held_reads.HeldReads, *args: typing.Any, **kwargs: typing.Any
    ) -> httpcore.AsyncNetworkStream:
        seen.append("open")
        return await connect(self, *args, **kwargs)

    async def counted_close(self: _held_reads.HeldStream) -> None:
        seen.append("close")
        await close(self)

    monkeypatch.setattr(_held_reads.HeldReads, "connect_tcp", counted_connect)
    monkeypatch.setattr(_held_reads.HeldStream, "aclose", counted_close)
    return seen


async def test_a_fan_out_keeps_its_connections_for_the_next_one(connects: list[str]) -> None:
    async with FakeProvider() as fake:
        transport = _held_transport()
        async with httpx.AsyncClient(transport=transport) as client:
            url = fake.base_url.rstrip("/") + "/models"
            await asyncio.gather(*(client.get(url) for _ in range(FAN)))
            after_fan_out = list(connects)
    assert after_fan_out.count("open") == FAN  # in flight at once, each on its own connection
    # All kept for the next fan-out, as litellm's own transport keeps them (httpcore's pool
    # closed all but 100, and kept those for 5 s: the next fan-out connected again).
    assert "close" not in after_fan_out
    assert connects.count("close") == FAN  # closed with the client


async def test_a_connection_the_provider_closed_is_not_reused(connects: list[str]) -> None:
    async with FakeProvider() as fake:
        url = httpcore.URL(fake.base_url.rstrip("/") + "/models")
        transport = _held_transport()
        pool = transport._pool
        request = httpcore.Request("GET", url, headers=[(b"Host", url.host)])
        for _ in range(2):
            response = await pool.handle_async_request(request)
            await response.aread()
            await response.aclose()
        assert connects == ["open"]  # kept alive and reused
        (idle,) = [c for queue in pool._idle.values() for c in queue]
        stream = idle._stream
        stream._sock.shutdown(2)  # as if the provider had closed it
        response = await pool.handle_async_request(request)
        await response.aread()
        await response.aclose()
        await transport.aclose()
    assert connects.count("open") == 2  # a new connection, not the closed one


async def test_one_provider_does_not_keep_the_slots_or_the_sockets_of_another(
    connects: list[str],
) -> None:
    async with FakeProvider() as a, FakeProvider() as b:
        pool = HeldPool(_held_reads.HeldReads(), max_keepalive_connections=4, keepalive_expiry=0.5)

        async def get(base_url: str) -> None:
            url = httpcore.URL(base_url.rstrip("/") + "/models")
            response = await pool.handle_async_request(
                httpcore.Request("GET", url, headers=[(b"Host", url.host)])
            )
            await response.aread()
            await response.aclose()

        await asyncio.gather(*(get(a.base_url) for _ in range(4)))  # A's fan-out fills the slots
        assert connects == ["open"] * 4
        for _ in range(5):
            await get(b.base_url)  # B gets a slot (A's oldest goes) and keeps reusing it
        assert connects.count("open") == 5 and connects.count("close") == 1
        await asyncio.sleep(1.2)  # A's keep-alive runs out; only B is asked
        await get(b.base_url)
        assert connects.count("open") == 6  # B's own idle one expired too
        assert [len(q) for q in pool._idle.values()] == [0, 1]  # nothing of A's left open
        await pool.aclose()


async def test_idle_connections_close_when_their_keep_alive_runs_out_without_a_request(
    connects: list[str],
) -> None:
    expiry, slack = 0.5, 2.0
    async with FakeProvider() as fake:
        pool = HeldPool(_held_reads.HeldReads(), keepalive_expiry=expiry)
        url = httpcore.URL(fake.base_url.rstrip("/") + "/models")

        async def get() -> None:
            response = await pool.handle_async_request(
                httpcore.Request("GET", url, headers=[(b"Host", url.host)])
            )
            await response.aread()
            await response.aclose()

        tasks_before = asyncio.all_tasks()
        await asyncio.gather(*(get() for _ in range(FAN)))
        idle_at = asyncio.get_running_loop().time()
        # On a loaded machine the fan-out can outlast the keep-alive: the first connections given
        # back may already be closing, so count opens rather than expect none closed yet.
        assert connects.count("open") == FAN
        # No request comes: every idle socket still closes once its keep-alive has run out.
        while connects.count("close") < FAN:
            assert asyncio.get_running_loop().time() - idle_at < expiry + slack, connects
            await asyncio.sleep(0.05)
        assert pool.connections == [] and pool._timer is None  # closed, and the timer disarmed
        await asyncio.gather(*pool._closing)  # the close under way ends: nothing left running
        assert asyncio.all_tasks() == tasks_before  # the timer is no task, and its closes ended
        await pool.aclose()


async def test_closing_the_pool_stops_its_timer(connects: list[str]) -> None:
    async with FakeProvider() as fake:
        pool = HeldPool(_held_reads.HeldReads(), keepalive_expiry=30.0)
        url = httpcore.URL(fake.base_url.rstrip("/") + "/models")
        response = await pool.handle_async_request(
            httpcore.Request("GET", url, headers=[(b"Host", url.host)])
        )
        await response.aread()
        await response.aclose()
        timer = pool._timer
        assert timer is not None and not timer.cancelled()  # armed for the idle connection
        await pool.aclose()
        assert timer.cancelled() and pool._timer is None and connects == ["open", "close"]


@pytest.mark.parametrize("then", ["close the pool", "send a request"])
def test_a_close_left_by_a_loop_that_ended_is_done_on_the_next_loop(
    then: str, connects: list[str]
) -> None:
    """Two ``asyncio.run``: the first ends in the loop round where the idle connection's
    keep-alive runs out, so the timer's close task is cancelled before it starts; in the second,
    closing the pool, or the next request's sweep, closes that connection."""
    pool = HeldPool(_held_reads.HeldReads(), keepalive_expiry=0.05)

    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    async def first() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        url = httpcore.URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
        response = await pool.handle_async_request(
            httpcore.Request("GET", url, headers=[(b"Host", url.host)])
        )
        assert await response.aread() == b"{}"
        await response.aclose()
        server.close()
        for writer in writers:
            writer.close()
        assert len(pool.connections) == 1  # idle, its keep-alive timer armed
        # Blocking on purpose (not a wait for a condition): the keep-alive runs out while this
        # loop is busy, so the timer fires in the same round as the loop's stop.
        time.sleep(0.1)

    async def second() -> None:
        if then == "send a request":
            server = await asyncio.start_server(answer, "127.0.0.1", 0)
            url = httpcore.URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
            response = await pool.handle_async_request(
                httpcore.Request("GET", url, headers=[(b"Host", url.host)])
            )
            await response.aread()
            await response.aclose()
            assert connects == ["open", "close", "open"]  # closed by the request's sweep
            server.close()
            for writer in writers:
                writer.close()
        await pool.aclose()

    asyncio.run(first())
    assert connects == ["open"]  # the timer's close task never ran
    asyncio.run(second())
    assert connects[:2] == ["open", "close"]
