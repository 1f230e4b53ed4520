"""HTTP/1.1 over held connections (`durapipe.adapters._held_http`), against a provider scripted byte by
byte: heads and chunks split across reads, bodies framed every way a provider frames them, a
provider that closes early or after its answer, and the httpcore errors litellm classifies.

The answer's held bytes (in the socket until kept) are tested end to end in `test_answers` and
`test_held_tls`; the pool's reuse of connections in `test_held_pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import h11
import httpcore
import httpx
import pytest

from durapipe.adapters import _held_http, _held_reads
from durapipe.adapters._answers import _held_transport
from durapipe.adapters._held_pool import HeldPool

# What the scripted provider sends for each request: the response's bytes, and whether it then
# closes the connection.
Script = Callable[[int], tuple[bytes, bool]]


class Provider:
    """A TCP server on 127.0.0.1 that answers each request with scripted bytes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                self.requests.append(head + await reader.readexactly(length))
                answer, close = self.script(len(self.requests))
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        writer.close()


@contextlib.asynccontextmanager
async def provider(script: Script) -> AsyncIterator[Provider]:
    served = Provider(script)
    server = await asyncio.start_server(served._serve, "127.0.0.1", 0)
    served.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        yield served
    finally:
        server.close()
        await server.wait_closed()


async def ask(
    pool: HeldPool,
    url: str,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    read_timeout: float | None = 10.0,
) -> tuple[int, bytes]:
    """Send one request through ``pool``; its status and whole body."""
    target = httpcore.URL(url)
    body = b'{"q": 1}' if method == "POST" else b""
    request = httpcore.Request(
        method,
        target,
        headers=[(b"Host", target.host), (b"Content-Length", str(len(body)).encode())]
        + (headers or []),
        content=body,
        extensions={"timeout": {"connect": 5.0, "read": read_timeout, "write": 5.0}},
    )
    response = await pool.handle_async_request(request)
    try:
        return response.status, await response.aread()
    finally:
        await response.aclose()


def answer(body: bytes, *extra: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + b"".join(extra)
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def chunked(*chunks: bytes) -> bytes:
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + framed
        + b"0\r\nx-trailer: yes\r\n\r\n"
    )


@pytest.fixture(params=[1, 7, 64 * 1024], ids=["reads-of-1-byte", "reads-of-7", "whole-reads"])
def read_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many bytes one read looks at: 1 and 7 split every head, chunk and body across reads."""
    size: int = request.param
    monkeypatch.setattr(_held_http, "_READ", size)
    return size


@pytest.fixture
async def pool() -> AsyncIterator[HeldPool]:
    async with HeldPool(_held_reads.HeldReads()) as held:
        yield held


async def test_chunked_answers_split_across_reads_arrive_whole_and_the_connection_is_reused(
    read_size: int, pool: HeldPool
) -> None:
    parts = (b'{"id": "a",', b' "text": "' + b"x" * 3000 + b'"', b"}")
    async with provider(lambda n: (chunked(*parts), False)) as served:
        for _ in range(3):
            assert await ask(pool, served.url) == (200, b"".join(parts))
    assert served.connections == 1  # the trailers were read to the end: kept alive and reused


async def test_a_head_split_across_reads_and_a_large_body_arrive_whole(
    read_size: int, pool: HeldPool
) -> None:
    size = 3_000_000 if read_size > 7 else 20_000  # a few bytes a read is slow: short there
    body = bytes(range(256)) * (size // 256)
    folded = b"x-folded: one\r\n two\r\n"  # obsolete line folding, still read as one header
    async with provider(lambda n: (answer(body, folded), False)) as served:
        target = httpcore.URL(served.url)
        request = httpcore.Request("GET", target, headers=[(b"Host", target.host)])
        response = await pool.handle_async_request(request)
        assert (b"x-folded", b"one two") in response.headers
        assert await response.aread() == body
        await response.aclose()
        assert await ask(pool, served.url) == (200, body)
    assert served.connections == 1


@pytest.mark.parametrize(
    "cut",
    [
        answer(b"0123456789")[:-4],  # a Content-Length body cut short
        chunked(b"0123456789")[:-28],  # a chunked body cut inside its chunk
        chunked(b"0123456789")[:-3],  # a chunked body cut before its last blank line
    ],
    ids=["content-length", "mid-chunk", "before-the-end"],
)
async def test_a_provider_that_closes_mid_body_fails_the_request_as_a_protocol_error(
    cut: bytes, read_size: int, pool: HeldPool
) -> None:
    async with provider(lambda n: (cut, True)) as served:
        with pytest.raises(httpcore.RemoteProtocolError, match="without sending complete"):
            await ask(pool, served.url)
    assert pool.connections == []  # closed, not kept


async def test_a_provider_that_closes_without_answering_is_a_protocol_error_through_httpx(
    read_size: int,
) -> None:
    """httpx turns it into its own RemoteProtocolError, which the openai SDK reports as a
    connection error (classified as retryable, see `test_classify`)."""
    client = httpx.AsyncClient(transport=_held_transport())
    async with provider(lambda n: (b"", True)) as served, client:
        with pytest.raises(httpx.RemoteProtocolError) as raised:
            await client.post(served.url, content=b"{}")
    assert isinstance(raised.value.__cause__, httpcore.RemoteProtocolError)
    assert str(raised.value) == "Server disconnected without sending a response."


@pytest.mark.parametrize(
    "close",
    [b"connection: close\r\n", b""],
    ids=["connection-close", "http/1.0"],
)
async def test_an_answer_after_which_the_provider_closes_leaves_the_connection_unused(
    close: bytes, pool: HeldPool
) -> None:
    response = answer(b"{}", close)
    if not close:
        response = response.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    async with provider(lambda n: (response, True)) as served:
        assert await ask(pool, served.url) == (200, b"{}")
        assert pool.connections == []  # closed at once, not kept for the next request
        assert await ask(pool, served.url) == (200, b"{}")
    assert served.connections == 2


async def test_a_body_framed_by_the_provider_s_close_is_read_to_the_close(
    read_size: int, pool: HeldPool
) -> None:
    body = b'{"text": "' + b"y" * 5000 + b'"}'
    response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + body
    async with provider(lambda n: (response, True)) as served:
        assert await ask(pool, served.url) == (200, body)
        assert await ask(pool, served.url) == (200, body)
    assert served.connections == 2


async def test_interim_answers_are_skipped_and_bodiless_answers_keep_the_connection(
    read_size: int, pool: HeldPool
) -> None:
    def script(n: int) -> tuple[bytes, bool]:
        if n == 1:  # 100 Continue and 103 Early Hints before the answer
            interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
            return interim + answer(b'{"a": 1}'), False
        if n == 2:  # a HEAD's answer announces a length but sends no body
            return b"HTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\n", False
        return b"HTTP/1.1 204 No Content\r\n\r\n", False

    async with provider(script) as served:
        assert await ask(pool, served.url) == (200, b'{"a": 1}')
        assert await ask(pool, served.url, method="HEAD") == (200, b"")
        assert await ask(pool, served.url) == (204, b"")
        assert await ask(pool, served.url) == (204, b"")
    assert served.connections == 1


@pytest.mark.parametrize(
    "response",
    [
        answer(b"{}") + b"HTTP/1.1 200 OK\r\n",  # bytes after the answer nobody asked for
        chunked(b"{}").replace(b"\r\n\r\n", b"\r\ncontent-length: 2\r\n\r\n", 1),
    ],
    ids=["bytes-after-the-answer", "chunked-and-content-length"],
)
async def test_an_answer_that_is_not_clean_leaves_the_connection_unused(
    response: bytes, pool: HeldPool
) -> None:
    async with provider(lambda n: (response, False)) as served:
        assert await ask(pool, served.url) == (200, b"{}")
        assert await ask(pool, served.url) == (200, b"{}")
    assert served.connections == 2


async def test_a_provider_that_does_not_answer_in_time_is_a_read_timeout(pool: HeldPool) -> None:
    async with provider(lambda n: (b"HTTP/1.1 200 OK\r\n", False)) as served:
        with pytest.raises(httpcore.ReadTimeout):
            await ask(pool, served.url, read_timeout=0.2)


async def test_what_is_not_http_1_1_is_a_protocol_error(pool: HeldPool) -> None:
    async with provider(lambda n: (b"SSH-2.0-OpenSSH\r\n\r\n", True)) as served:
        with pytest.raises(httpcore.RemoteProtocolError, match="status line"):
            await ask(pool, served.url)
    bad_length = b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n"
    async with provider(lambda n: (bad_length, True)) as served:
        with pytest.raises(httpcore.RemoteProtocolError, match="Content-Length"):
            await ask(pool, served.url)


async def test_a_header_with_a_line_break_is_not_sent(pool: HeldPool) -> None:
    async with provider(lambda n: (answer(b"{}"), False)) as served:
        smuggled = [(b"X-Note", b"a\r\nX-Admin: yes")]
        with pytest.raises(httpcore.LocalProtocolError, match="line break"):
            await ask(pool, served.url, headers=smuggled)
        assert await ask(pool, served.url) == (200, b"{}")
    assert served.requests and all(b"X-Admin" not in request for request in served.requests)


async def test_a_chunked_request_body_is_sent_chunked(pool: HeldPool) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"q": '
        yield b"1}"

    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head + await reader.readuntil(b"0\r\n\r\n"))
        writer.write(answer(b"{}"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = httpcore.Request(
        "POST",
        f"http://127.0.0.1:{port}/",
        headers=[(b"Host", b"127.0.0.1"), (b"Transfer-Encoding", b"chunked")],
        content=body(),
    )
    response = await pool.handle_async_request(request)
    assert await response.aread() == b"{}"
    await response.aclose()
    server.close()
    await server.wait_closed()
    assert seen[0].endswith(b'\r\n\r\n6\r\n{"q": \r\n2\r\n1}\r\n0\r\n\r\n')


async def test_a_bodiless_answer_closed_unread_keeps_the_connection(pool: HeldPool) -> None:
    async with provider(
        lambda n: (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", False)
    ) as served:
        target = httpcore.URL(served.url)
        for _ in range(2):
            request = httpcore.Request("HEAD", target, headers=[(b"Host", target.host)])
            response = await pool.handle_async_request(request)
            await response.aclose()  # nothing to read: the body is not iterated
    assert served.connections == 1


async def refused_and_not_reused(pool: HeldPool, bad: bytes, match: str) -> None:
    """``bad`` (the first answer) is a protocol error, and the next request gets a new connection."""
    async with provider(lambda n: (bad if n == 1 else answer(b"{}"), False)) as served:
        with pytest.raises(httpcore.RemoteProtocolError, match=match):
            await ask(pool, served.url)
        assert await ask(pool, served.url) == (200, b"{}")
    assert served.connections == 2


async def test_a_status_below_100_is_refused_not_skipped_as_interim(pool: HeldPool) -> None:
    odd = b"HTTP/1.1 099 Odd\r\n\r\n" + answer(b"{}")
    await refused_and_not_reused(pool, odd, "status line")


@pytest.mark.parametrize("name", [b"bad name", b"bad\x0bname", b"bad\rname", b"bad(name)"])
async def test_a_header_name_that_is_not_a_token_is_refused(name: bytes, pool: HeldPool) -> None:
    # A control byte is refused before the name is looked at: h11 refuses the whole line.
    await refused_and_not_reused(pool, answer(b"{}", name + b": x\r\n"), "header (name|line)")


@pytest.mark.parametrize(
    "codings",
    [
        [b"chunked", b"chunked"],
        [b"gzip", b"chunked"],
        [b"gzip, chunked"],
        [b"identity"],
    ],
    ids=["chunked-twice", "gzip-then-chunked", "gzip-comma-chunked", "identity"],
)
async def test_a_transfer_encoding_other_than_one_chunked_is_refused(
    codings: list[bytes], pool: HeldPool
) -> None:
    lines = b"".join(b"transfer-encoding: %s\r\n" % coding for coding in codings)
    bad = chunked(b"{}").replace(b"transfer-encoding: chunked\r\n", lines, 1)
    await refused_and_not_reused(pool, bad, "Transfer-Encoding")


# Each body is what the size would frame if it were read leniently (as ``int(x, 16)`` reads it).
@pytest.mark.parametrize(
    ("size_line", "data"),
    [
        (b"1_0\r\n", b"0123456789abcdef"),
        (b"\x0b2\r\n", b"{}"),
        (b" 2\r\n", b"{}"),
        (b"2 ;ext\r\n", b"{}"),
        (b"2\n", b"{}"),
        (b"0x2\r\n", b"{}"),
        (b"+2\r\n", b"{}"),
        (b"0" * 20 + b"2\r\n", b"{}"),
    ],
    ids=[
        "underscore",
        "vertical-tab",
        "leading-space",
        "space-before-ext",
        "bare-lf",
        "0x",
        "plus",
        "21-digits",
    ],
)
async def test_a_chunk_size_line_h11_refuses_is_refused(
    size_line: bytes, data: bytes, pool: HeldPool
) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    await refused_and_not_reused(pool, head + size_line + data + b"\r\n0\r\n\r\n", "chunk")


async def test_chunk_size_lines_h11_accepts_are_read(pool: HeldPool) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    body = b"2 \t\r\n{}\r\n2;a=b;c\r\n{}\r\n00000 \r\n\r\n"
    async with provider(lambda n: (head + body, False)) as served:
        for _ in range(2):
            assert await ask(pool, served.url) == (200, b"{}{}")
    assert served.connections == 1


async def test_a_chunk_ended_by_a_bare_lf_is_refused(pool: HeldPool) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    await refused_and_not_reused(pool, head + b"2\r\n{}\n0\r\n\r\n", "CRLF")


CONTROL_BYTES = [b"\x00", b"\r", b"\x0b", b"\x0c"]


@pytest.mark.parametrize("byte", CONTROL_BYTES, ids=["nul", "cr", "vt", "ff"])
@pytest.mark.parametrize("where", ["inside", "end", "reason"])
async def test_a_control_byte_h11_refuses_in_the_head_is_refused(
    byte: bytes, where: str, pool: HeldPool
) -> None:
    if where == "reason":
        bad = answer(b"{}").replace(b"200 OK", b"200 O" + byte + b"K", 1)
    else:
        value = b"a" + byte + b"b" if where == "inside" else b"ab" + byte
        bad = answer(b"{}", b"x-note: " + value + b"\r\n")
    await refused_and_not_reused(pool, bad, "control byte")


async def test_header_values_with_bytes_h11_lets_through_are_read(pool: HeldPool) -> None:
    # h11 lets most control bytes, DEL and obs-text through (cookies carry \x01 in practice).
    values = [b"a\x01b", b"a\x1fb", b"a\x7fb", b"caf\xc3\xa9", b"a \t b"]
    extra = [b"x-v%d: %s \t\r\n" % (i, value) for i, value in enumerate(values)]
    async with provider(lambda n: (answer(b"{}", *extra), False)) as served:
        target = httpcore.URL(served.url)
        request = httpcore.Request("GET", target, headers=[(b"Host", target.host)])
        for _ in range(2):
            response = await pool.handle_async_request(request)
            assert [v for n, v in response.headers if n.startswith(b"x-v")] == values
            assert await response.aread() == b"{}"
            await response.aclose()
    assert served.connections == 1


@pytest.mark.parametrize(
    "lengths",
    [[b"0" * 20 + b"2"], [b"5", b"05"], [b"2, 02"]],
    ids=["21-digits", "5-then-05", "2-comma-02"],
)
async def test_a_content_length_h11_refuses_is_refused(
    lengths: list[bytes], pool: HeldPool
) -> None:
    fields = b"".join(b"content-length: %s\r\n" % length for length in lengths)
    bad = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n{}"
    await refused_and_not_reused(pool, bad, "Content-Length")


async def test_a_content_length_of_20_digits_is_read(pool: HeldPool) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: " + b"0" * 19 + b"2\r\n\r\n"
    async with provider(lambda n: (head + b"{}", False)) as served:
        assert await ask(pool, served.url) == (200, b"{}")


@pytest.mark.parametrize(
    ("trailer", "match"),
    [
        (b"x-t: a\x00b\r\n", "control byte"),
        (b"x-t: a\rb\r\n", "control byte"),
        (b"bad name: x\r\n", "header name"),
        (b"no colon\r\n", "malformed"),
        (b" folded: first\r\n", "fold"),
        (b"content-length: x\r\n", "Content-Length"),
        (b"transfer-encoding: gzip\r\n", "Transfer-Encoding"),
    ],
    ids=["nul", "cr", "name", "no-colon", "fold-first", "content-length", "transfer-encoding"],
)
async def test_trailers_h11_refuses_are_refused(
    trailer: bytes, match: str, read_size: int, pool: HeldPool
) -> None:
    bad = chunked(b"{}").replace(b"x-trailer: yes\r\n", trailer)
    await refused_and_not_reused(pool, bad, match)


def h11_body(data: bytes) -> bytes | None:
    """The body h11 reads from ``data`` (a whole answer, then the provider's close), or None when
    it refuses it."""
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=100 * 1024)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(data)
    connection.receive_data(b"")
    body = b""
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return body
            elif not isinstance(event, h11.Response | h11.InformationalResponse):
                return None
    except h11.RemoteProtocolError:
        return None


async def test_every_byte_in_a_value_a_reason_or_a_trailer_is_taken_or_refused_as_h11_does(
    pool: HeldPool,
) -> None:
    answers: list[bytes] = []
    for code in [*range(0x21), 0x7F, 0x80, 0xFF]:
        byte = bytes([code])
        answers += [
            answer(b"{}", b"x-note: a" + byte + b"b\r\n"),
            answer(b"{}", b"x-note: " + byte + b"ab\r\n"),
            answer(b"{}", b"x-note: ab" + byte + b"\r\n"),
            answer(b"{}").replace(b"200 OK", b"200 O" + byte + b"K", 1),
            chunked(b"{}").replace(b"x-trailer: yes", b"x-trailer: y" + byte + b"s"),
            # at the end of the head's and the trailers' last line, just before the blank line
            answer(b"{}").replace(b"\r\n\r\n", byte + b"\r\n\r\n", 1),
            chunked(b"{}").replace(b"x-trailer: yes", b"x-trailer: yes" + byte),
        ]
    for data in answers:
        async with provider(lambda n, data=data: (data, True)) as served:
            try:
                ours: bytes | None = (await ask(pool, served.url))[1]
            except httpcore.RemoteProtocolError:
                ours = None
        assert ours == h11_body(data), data
