"""Slow clients against a real `durapipe serve` process, over real sockets.

A client that sends its request head or body a trickle at a time is cut (408, one log line); past
the connection cap a new connection gets a 503; a large upload at a normal rate goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from durapipe.serve._runs import STALL_GRACE_S
from durapipe.serve._slow import LINGER_S, peer_of
from tests.serve.conftest import HERE, TOKEN, Served, entered, start_serve
from tests.support import eventually

HEAD_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 1.0
MIN_RATE = 64 * 1024
PER_PEER = 4
# A method whose runs wait at a gate the test opens (see `serve_tools.gate`).
GATED = (HERE / "method.yaml").read_text().replace("serve_tools:shout", "serve_tools:gate")


@pytest.fixture(scope="module")
async def strict(temporal_address: str, gate_dir: Path) -> AsyncIterator[Served]:
    """`durapipe serve` with short deadlines and a small per-address cap (no worker needed)."""
    server = await start_serve(
        temporal_address,
        f"slow-{uuid.uuid4().hex[:8]}",
        gate_dir,
        "--head-timeout",
        str(HEAD_TIMEOUT_S),
        "--body-timeout",
        str(BODY_TIMEOUT_S),
        "--body-min-rate",
        str(MIN_RATE),
        "--max-connections-per-peer",
        str(PER_PEER),
    )
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            await server.stop()


async def _connect(served: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = urlsplit(served.url)
    assert address.hostname is not None and address.port is not None
    return await asyncio.open_connection(address.hostname, address.port)


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything the client read before the connection ended, by a close or a reset (a server
    that closes with the client's bytes unread resets it; the reset may throw away what it sent)."""
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def _answer(reader: asyncio.StreamReader, within: float) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the answer, read to the connection's end."""
    raw = await asyncio.wait_for(_read_to_end(reader), timeout=within)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head, "the server closed the connection without an answer"
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


async def _trickle_head(served: Served) -> tuple[int, dict[str, object], float]:
    """Open a connection and send its head one header line at a time, until the server answers."""
    reader, writer = await _connect(served)
    started = time.monotonic()
    writer.write(b"POST /v1/validate HTTP/1.1\r\nHost: durapipe\r\n")

    async def trickle() -> None:
        for index in range(60):
            await asyncio.sleep(0.5)  # the attack itself: one header line every half second
            writer.write(f"X-Slow-{index}: {index}\r\n".encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    sender = asyncio.create_task(trickle())
    try:
        # Unbounded on the server's side, this read would outlast the trickle's 30 s.
        status, body = await _answer(reader, within=HEAD_TIMEOUT_S + 20)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    return status, body, time.monotonic() - started


async def test_a_head_sent_a_line_at_a_time_is_cut_with_a_408(strict: Served) -> None:
    results = await asyncio.gather(*(_trickle_head(strict) for _ in range(3)))
    for status, body, elapsed in results:
        assert status == 408
        assert body["code"] == "durapipe.request.timeout"
        assert "request line and headers" in str(body["detail"])
        assert HEAD_TIMEOUT_S - 0.5 <= elapsed < HEAD_TIMEOUT_S + 10
    cuts = [line for line in strict.log if "did not arrive within" in line]
    assert len(cuts) >= 3, strict.log


async def test_a_body_sent_a_trickle_at_a_time_is_cut_with_a_408(strict: Served) -> None:
    reader, writer = await _connect(strict)
    writer.write(
        b"POST /v1/validate HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode()
        + b'{"files": {"a.mthds": "'
    )
    await writer.drain()

    async def trickle() -> None:
        for _ in range(200):
            await asyncio.sleep(0.2)  # the attack: 10 bytes every 0.2 s, far under the rate
            writer.write(b"x" * 10)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    sender = asyncio.create_task(trickle())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        answered = time.monotonic()
        rest = await asyncio.wait_for(_read_to_end(reader), timeout=30)
        closed = time.monotonic()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 "), head
    body = json.loads(rest)
    assert body["code"] == "durapipe.request.timeout"
    assert "came too slowly" in str(body["detail"])
    assert any("cut the request POST /v1/validate" in line for line in strict.log), strict.log
    # The connection closes with the answer: it used to stay open 10 s more while aiohttp read
    # (and threw away) what the slow client still sent, holding its place under the caps.
    assert closed - answered < 2.0, closed - answered
    assert not any("Traceback" in line for line in strict.log), strict.log


async def test_clients_still_sending_when_cut_read_their_408_and_leave_the_caps(
    strict: Served,
) -> None:
    # Clients that go on sending after their cut and read only later (as uploaders do): had the
    # server closed with their bytes unread, the reset would throw each 408 away unread. While
    # they linger they hold no place: as many as the per-address cap, and a read still gets in.
    cuts = _cuts(strict)
    connections = [await _connect(strict) for _ in range(PER_PEER)]
    for _, writer in connections:
        writer.write(
            b"POST /v1/validate HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        await writer.drain()
    cut_by = time.monotonic() + BODY_TIMEOUT_S

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for _ in range(200):
            await asyncio.sleep(0.05)
            writer.write(b"x" * 10)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    senders = [asyncio.create_task(trickle(writer)) for _, writer in connections]
    try:
        await asyncio.sleep(max(0.0, cut_by - time.monotonic()))
        # Every one cut (its answer written; not read yet), all of them still sending.
        deadline = time.monotonic() + 10
        while _cuts(strict) < cuts + PER_PEER:
            assert time.monotonic() < deadline, strict.log
            await asyncio.sleep(0.05)
        version = await _version(strict)
        # Read half the lingering time after the cut, still sending all along.
        await asyncio.sleep(max(0.0, cut_by + LINGER_S / 2 - time.monotonic()))
        raws = [
            await asyncio.wait_for(_read_to_end(reader), timeout=30) for reader, _ in connections
        ]
    finally:
        for sender in senders:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        for _, writer in connections:
            writer.close()
    assert version == 200
    for raw in raws:
        assert raw.startswith(b"HTTP/1.1 408 "), raw
        assert json.loads(raw.partition(b"\r\n\r\n")[2])["code"] == "durapipe.request.timeout"


def _cuts(served: Served) -> int:
    """How many requests the server has cut for a slow body so far (its log lines)."""
    return sum("cut the request POST /v1/validate" in line for line in served.log)


# Answers given while the body still arrives: no token, no such route, a body past the limit.
REFUSED_UPLOADS = {
    "401": (b"POST /v1/validate", "", 0, "auth.missing_credential"),
    "404": (b"POST /v1/nowhere", f"Authorization: Bearer {TOKEN}\r\n", 0, "request.not_found"),
    "413": (
        b"POST /v1/validate",
        f"Authorization: Bearer {TOKEN}\r\n",
        8 * 1024 * 1024 + 64 * 1024,  # past the default 8 MiB limit at once
        "request.too_large",
    ),
}


async def _uploading(
    served: Served, refused: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[float | None]]:
    """A connection uploading a 32 MiB body at 1.6 MB/s (far above the least rate), to be refused
    (``REFUSED_UPLOADS``) long before it ends; the task sends until the server ends the
    connection (then it returns when: a send after the server's close is reset) or 20 s."""
    request_line, auth, burst, _ = REFUSED_UPLOADS[refused]
    reader, writer = await _connect(served)
    writer.write(
        request_line
        + b" HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
        + f"{auth}Content-Length: {32 * 1024 * 1024}\r\n\r\n".encode()
    )
    writer.write(b"x" * burst)
    await writer.drain()

    async def upload() -> float | None:
        for _ in range(2000):  # 20 s at most, within the Content-Length
            await asyncio.sleep(0.01)
            writer.write(b"x" * 16 * 1024)
            try:
                await writer.drain()
            except ConnectionError:
                return time.monotonic()
        return None

    return reader, writer, asyncio.create_task(upload())


async def _stop(sender: asyncio.Task[float | None], writer: asyncio.StreamWriter) -> None:
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await sender
    writer.close()


@pytest.mark.parametrize("refused", sorted(REFUSED_UPLOADS))
async def test_an_answer_before_the_body_ends_closes_soon_and_is_read(
    strict: Served, refused: str
) -> None:
    # aiohttp read and threw away the rest of a refused body for 10 s after the answer, its
    # connection holding a place under the caps all along; it now lingers as a cut one does.
    reader, writer, sender = await _uploading(strict, refused)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        answered = time.monotonic()
        # The uploader reads the rest of its answer only later, still sending all along.
        await asyncio.sleep(LINGER_S / 2)
        rest = await asyncio.wait_for(_read_to_end(reader), timeout=30)
        closed = await asyncio.wait_for(asyncio.shield(sender), timeout=30)
    finally:
        await _stop(sender, writer)
    assert head.startswith(f"HTTP/1.1 {refused} ".encode()), head
    assert json.loads(rest)["code"] == REFUSED_UPLOADS[refused][3]
    assert closed is not None, "the server never ended the connection"
    assert closed - answered < LINGER_S + 1.5, closed - answered
    assert not any("Traceback" in line for line in strict.log), strict.log


async def test_uploads_refused_before_their_body_ends_leave_the_caps(strict: Served) -> None:
    # As many refused uploads as the per-address cap, all still sending: a read still gets in.
    uploads = [await _uploading(strict, "401") for _ in range(PER_PEER)]
    try:
        for reader, _, _ in uploads:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            assert head.startswith(b"HTTP/1.1 401 "), head
        version = await _version(strict)
    finally:
        for _, writer, sender in uploads:
            await _stop(sender, writer)
    assert version == 200


def _sockets(served: Served) -> int:
    """The sockets the server's process holds open (its listening socket, its connections to
    Temporal, and its clients')."""
    found = 0
    folder = Path(f"/proc/{served.process.pid}/fd")
    for fd in folder.iterdir():
        with contextlib.suppress(OSError):  # closed while listed
            found += fd.readlink().name.startswith("socket:")
    return found


async def test_refused_clients_opening_connections_fast_hold_no_sockets_past_the_caps(
    strict: Served,
) -> None:
    # An answer before the body (a missing token) is quick to get, and its connection leaves the
    # caps at once to linger 2 s: one client opening connections as fast as it got its 401s, and
    # closing none, held the server's sockets past every cap (578 at once, 2,962 opened in 3 s,
    # against --max-connections 8). Lingering connections now have caps of their own.
    before = _sockets(strict)
    held = []
    try:
        for _ in range(8 * PER_PEER):
            reader, writer = await _connect(strict)
            writer.write(
                b"POST /v1/validate HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            assert head.startswith(b"HTTP/1.1 401 "), head
            held.append((reader, writer))
        opened = _sockets(strict) - before
        bodies = [await asyncio.wait_for(_read_to_end(reader), timeout=30) for reader, _ in held]
    finally:
        for _, writer in held:
            writer.close()
    # As many linger as the per-address cap (a connection or two of the server's own may open).
    assert opened <= PER_PEER + 2, opened
    # Past the cap each closed at once, after its whole answer.
    for body in bodies:
        assert json.loads(body)["code"] == "auth.missing_credential", body


async def test_a_large_upload_at_a_normal_rate_goes_through(strict: Served) -> None:
    # 1.5 MB over about 3 s (500 KB/s): longer than the body timeout, faster than the least rate.
    pad = "x" * 1_500_000
    body = json.dumps({"pipe_code": "no_such_pipe", "inputs": {}, "pad": pad}).encode()
    reader, writer = await _connect(strict)
    writer.write(
        b"POST /v1/start HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    chunk = 50_000
    started = time.monotonic()
    for offset in range(0, len(body), chunk):
        writer.write(body[offset : offset + chunk])
        await writer.drain()
        await asyncio.sleep(0.1)  # the client's pace: 500 KB/s
    status, answer = await _answer(reader, within=30)
    writer.close()
    assert time.monotonic() - started > BODY_TIMEOUT_S * 2
    # The whole body was read and understood: the pipe it names is refused, not the pace.
    assert status == 422, answer
    assert answer["code"] in ("request.pipe_not_found", "request.invalid"), answer


async def test_connections_past_the_per_address_cap_get_a_503(strict: Served) -> None:
    held = [await _connect(strict) for _ in range(PER_PEER)]
    try:
        reader, writer = await _connect(strict)
        status, body = await _answer(reader, within=HEAD_TIMEOUT_S)
        writer.close()
        assert status == 503
        assert body["code"] == "runtime.unavailable"
        assert f"limit of {PER_PEER} open connections" in str(body["detail"])
        assert any("refused a connection from" in line for line in strict.log), strict.log
        # The held connections send nothing: each is cut at the head deadline, freeing its place.
        for held_reader, _ in held:
            status, _ = await _answer(held_reader, within=HEAD_TIMEOUT_S + 10)
            assert status == 408
    finally:
        for _, held_writer in held:
            held_writer.close()
    reader, writer = await _connect(strict)
    writer.write(b"GET /v1/version HTTP/1.1\r\nHost: durapipe\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["protocol_version"]
    # The client is told the connection closes, so it never sends a request on a closed one.
    assert b"\r\nConnection: close" in head, head


async def test_an_ipv6_client_is_counted_by_its_64(temporal_address: str, gate_dir: Path) -> None:
    # The per-address caps counted each IPv6 address apart: a client holds a /64 (2**64
    # addresses), so it could take a share per address until the server's caps were full.
    server = await start_serve(
        temporal_address, "ipv6", gate_dir, "--host", "::1", "--max-connections-per-peer", "1"
    )
    try:
        # The URL it announces is one a client can use (it was http://::1:PORT/v1).
        assert server.url.startswith("http://[::1]:"), server.url
        port = urlsplit(server.url).port
        held = await asyncio.open_connection("::1", port)
        reader, writer = await asyncio.open_connection("::1", port)
        status, body = await _answer(reader, within=HEAD_TIMEOUT_S)
        writer.close()
        held[1].close()
    finally:
        await server.stop()
    assert status == 503
    assert "::/64 holds its limit of 1 open connections" in str(body["detail"]), body
    assert peer_of("2001:db8:0:1::7") == peer_of("2001:db8:0:1:ffff::8") == "2001:db8:0:1::/64"
    assert peer_of("2001:db8:0:2::7") == "2001:db8:0:2::/64"
    assert peer_of("::ffff:10.0.0.7") == peer_of("10.0.0.7") == "10.0.0.7"
    assert peer_of("fe80::1%eth0") == "fe80::/64"


async def _execute(served: Served, text: str, source: str = "127.0.0.1") -> httpx.Response:
    """``POST /v1/execute`` of the gated method, on a connection of its own from ``source`` (any
    127.x.y.z address is this host's loopback, and the server sees it as a client of its own)."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(timeout=120, transport=transport) as client:
        return await client.post(
            f"{served.url}/v1/execute",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={
                "pipe_code": "loud_summary",
                "files": {"method.yaml": GATED},
                "inputs": {"text": text},
            },
        )


async def _version(served: Served) -> int:
    """The status of ``GET /v1/version`` on a new connection."""
    reader, writer = await _connect(served)
    writer.write(b"GET /v1/version HTTP/1.1\r\nHost: durapipe\r\n\r\n")
    try:
        status, _ = await _answer(reader, within=10)
    finally:
        writer.close()
    return status


async def _executes_waiting(
    served: Served, gate: Path, count: int, source: str = "127.0.0.1"
) -> tuple[list[asyncio.Task[httpx.Response]], list[str]]:
    """``count`` executes from ``source`` whose runs wait at their gates, and the gates' keys."""
    before = set(gate.glob("entered-*"))
    tag = uuid.uuid4().hex[:8]
    waiting = [
        asyncio.create_task(
            _execute(served, f"Execute {index} of {tag}: the bridge opens in 2027.", source)
        )
        for index in range(count)
    ]
    return waiting, await entered(gate, before, count=count)


def _open(gate: Path, keys: list[str]) -> None:
    for key in keys:
        (gate / f"open-{key}").touch()


async def test_executes_waiting_for_their_runs_leave_room_for_reads(
    temporal_address: str, worker: str, gate_dir: Path
) -> None:
    # Executes waiting for their runs (up to --execute-wait, 600 s) used to hold the places of
    # their address: with the per-address cap of them waiting, a status read from it got a 503.
    # --max-loads 0: its executes arrive at once, and past the loads' cap some would be refused.
    server = await start_serve(
        temporal_address, worker, gate_dir, "--max-connections-per-peer", str(PER_PEER),
        "--max-loads", "0",
    )  # fmt: skip
    keys: list[str] = []
    try:
        waiting, keys = await _executes_waiting(server, gate_dir, PER_PEER)
        assert await _version(server) == 200
        _open(gate_dir, keys)
        answers = await asyncio.gather(*waiting)
    finally:
        _open(gate_dir, keys)  # a run left at its gate would hold the module's worker
        await server.stop()
    assert [answer.status_code for answer in answers] == [200] * PER_PEER, answers


async def test_executes_past_their_own_cap_get_a_503_and_start_nothing(
    temporal_address: str, worker: str, gate_dir: Path
) -> None:
    server = await start_serve(temporal_address, worker, gate_dir, "--max-executes", "2")
    keys: list[str] = []
    try:
        waiting, keys = await _executes_waiting(server, gate_dir, 2)
        before = set(gate_dir.glob("entered-*"))
        refused = await _execute(server, f"One execute too many ({uuid.uuid4().hex[:8]}).")
        _open(gate_dir, keys)
        answers = await asyncio.gather(*waiting)
    finally:
        _open(gate_dir, keys)
        await server.stop()
    assert refused.status_code == 503, refused.text
    problem = refused.json()
    assert problem["code"] == "runtime.unavailable"
    assert problem["detail"] == (
        "This runner already waits for 2 runs of execute (its limit, --max-executes); nothing "
        "was started: send it again in a moment, or start the run (/v1/start) and follow it at "
        "/v1/runs/{id}/status."
    )
    assert refused.headers["Retry-After"]
    assert any("refused an execute from" in line for line in server.log), server.log
    assert [answer.status_code for answer in answers] == [200, 200], answers
    # Its run never reached a gate: it was never started.
    assert set(gate_dir.glob("entered-*")) == before


async def test_one_address_cannot_take_every_executes_place(
    temporal_address: str, worker: str, gate_dir: Path
) -> None:
    # --max-executes is the server's; without a share per address one client could hold all of
    # its places (each execute waits up to --execute-wait) and every other got a 503.
    server = await start_serve(
        temporal_address, worker, gate_dir, "--max-executes", "3", "--max-executes-per-peer", "2"
    )
    keys: list[str] = []
    try:
        waiting, keys = await _executes_waiting(server, gate_dir, 2)
        before = set(gate_dir.glob("entered-*"))
        refused = await _execute(server, f"A third from one address ({uuid.uuid4().hex[:8]}).")
        assert set(gate_dir.glob("entered-*")) == before  # never started
        other, other_keys = await _executes_waiting(server, gate_dir, 1, source="127.0.0.2")
        keys += other_keys
        _open(gate_dir, keys)
        answers = await asyncio.gather(*waiting, *other)
    finally:
        _open(gate_dir, keys)
        await server.stop()
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"] == (
        "This runner already waits for 2 runs of execute from 127.0.0.1 (its limit per address, "
        "--max-executes-per-peer); nothing was started: send it again in a moment, or start the "
        "run (/v1/start) and follow it at /v1/runs/{id}/status."
    )
    assert any("127.0.0.1 waits for its limit of 2 executes" in line for line in server.log)
    assert [answer.status_code for answer in answers] == [200, 200, 200], answers


async def test_an_execute_whose_client_left_stops_waiting_for_its_run(
    temporal_address: str, gate_dir: Path
) -> None:
    # Its place under the executes' caps came back when its client closed the connection, but
    # the wait went on, for up to --execute-wait (600 s), polling Temporal each second: a client
    # that closed each execute once sent held as many waits as it liked, past every cap (with no
    # worker, the abandoned wait was still there to say so 5 s after its client had left).
    queue = f"unpolled-{uuid.uuid4().hex[:8]}"
    server = await start_serve(temporal_address, queue, gate_dir)
    client = await dp.connect(temporal_address)
    body = json.dumps(
        {"pipe_code": "loud_summary", "files": {"method.yaml": GATED}, "inputs": {"text": "Hi."}}
    ).encode()
    try:
        _, writer = await _connect(server)
        writer.write(
            b"POST /v1/execute HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

        async def started() -> str | None:
            query = f"TaskQueue = '{queue}'"
            return next(iter([w.id async for w in client.list_workflows(query)]), None)

        run_id = await eventually(started, "the execute's run to start")
        writer.close()
        left = f"stopped waiting for run {run_id}: its client closed the connection"
        await eventually(
            lambda: asyncio.sleep(0, any(left in line for line in server.log)),
            "the server to stop waiting",
            timeout=STALL_GRACE_S + 10,
        )
        # A wait still going would have found the run stuck and said so by now.
        await asyncio.sleep(STALL_GRACE_S + 2)
        await client.get_workflow_handle(run_id).terminate("test over")
    finally:
        await server.stop()
    assert not any("cannot make progress" in line for line in server.log), server.log
    assert not any("Traceback" in line for line in server.log), server.log


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--head-timeout", "0"),
        ("--body-min-rate", "-1"),
        ("--max-connections-per-peer", "-2"),
        ("--max-executes", "0"),
        ("--max-executes-per-peer", "-1"),
    ],
)
def test_a_limit_that_cannot_work_is_one_sentence_naming_its_flag(
    monkeypatch: pytest.MonkeyPatch, flag: str, value: str
) -> None:
    monkeypatch.setenv("DURAPIPE_SERVE_TOKEN", TOKEN)
    result = CliRunner().invoke(app, ["serve", "--port", "0", flag, value])
    assert result.exit_code != 0
    assert flag in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
