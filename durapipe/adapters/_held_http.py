"""HTTP/1.1 over a held connection, lean: one send per request, the response head read in one pass.

Held connections (`durapipe.adapters._held_reads`) leave an answer's bytes in the socket until the
answer is kept. The protocol on top was httpcore's ``AsyncHTTP11Connection``, that is h11 in pure
Python: on a 200-way fan-out of model calls it was about a fifth of the held path's CPU (an event
object per header block, per body piece and per end of message, each checked, behind anyio locks).
`HeldConnection` speaks only what a provider's answer needs, over the same held streams:

* the request (head and body) leaves in one send, whose end tells the call's provider limit that
  the request has left (`durapipe.adapters._held_tls.send_request`);
* the response head is parsed in one pass (status line, headers; ``1xx`` heads skipped), the body
  is framed by ``Transfer-Encoding: chunked``, ``Content-Length`` or the provider's close, and
  streamed as it arrives: the last read's bytes stay in the socket until the answer is kept
  (``release``), since nothing reads past the end of the answer;
* a connection is reused only after a whole response, framed by its length, with keep-alive on
  both sides and nothing after it; `has_expired` is httpcore's (keep-alive ran out, or the idle
  socket is readable: the provider closed it or sent bytes nobody asked for);
* failures are httpcore's exceptions, as before (httpx maps them to its own, which litellm and
  the openai SDK classify): ``RemoteProtocolError`` for a provider that closes early or sends what
  is not HTTP/1.1, ``ReadTimeout``/``ReadError``/``WriteTimeout``/``ConnectError``... from the
  streams, ``LocalProtocolError`` for a request that cannot be written (a header with a line break).

Timeouts come from the request's ``timeout`` extension (``connect``, ``read``, ``write``; ``pool``
has nothing to wait for: `durapipe.adapters._held_pool.HeldPool` never caps connections in use).
"""

from __future__ import annotations

import contextlib
import enum
import re
import ssl
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable

import httpcore

_READ = 64 * 1024  # bytes one read looks at (as httpcore's)
_HEAD_LIMIT = (
    100 * 1024
)  # a response head longer than this is not an answer (h11's limit is 16 KiB+)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_NO_BODY_STATUS = frozenset({204, 304})
# RFC 9110 5.6.2 token characters, as h11's field-name rule: a header name with anything else
# (a space, a control byte) is refused, since another parser could split or merge it differently.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# h11's field-value rule (``_abnf.field_value``): visible bytes, obs-text and most control bytes
# (it lets \x01 and the like through: real cookies carry them), with spaces or tabs between; never
# NUL or other whitespace, which other parsers read as separators (request smuggling, SSRF). Its
# reason-phrase rule refuses the same bytes. Within a head line that leaves NUL, VT, FF and a CR
# that does not end its line (h11 drops one CR before each LF): `_check_line_bytes`.
_NEVER_IN_A_LINE = (b"\x00", b"\x0b", b"\x0c")
# h11's cap on a Content-Length value (``_headers.CONTENT_LENGTH_MAX_DIGITS``).
_LENGTH_DIGITS = 20
# Where a chunked body's trailers end, as h11 finds the end of a block of lines.
_TRAILERS_END = re.compile(rb"\n\r?\n")
# A chunk's size line as h11 reads it: 1 to 20 hex digits (not ``int(x, 16)``, which takes
# ``1_0``, ``0x10`` and surrounding whitespace), extensions after ``;`` ignored, trailing spaces
# or tabs tolerated, and the CR of its CRLF (the line is cut at its LF).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r")


class _State(enum.Enum):
    NEW = 0
    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


class HeldConnection:
    """One HTTP/1.1 connection to ``origin`` over a held stream, one request at a time.

    Args:
        origin: where it connects (``http`` or ``https``).
        network_backend: opens the stream (`durapipe.adapters._held_reads.HeldReads`).
        ssl_context: verifies an ``https`` origin (None: httpcore's default context).
        keepalive_expiry: seconds an idle connection may wait before it is not reused.
        done: called once a response's body is closed (read to the end or not), with this
            connection, which is idle (reusable) or closed by then.
    """

    def __init__(
        self,
        origin: httpcore.Origin,
        network_backend: httpcore.AsyncNetworkBackend,
        ssl_context: ssl.SSLContext | None,
        keepalive_expiry: float | None,
        done: Callable[[HeldConnection], Awaitable[None]],
    ) -> None:
        self.origin = origin
        self._backend = network_backend
        self._ssl_context = ssl_context
        self._expiry = keepalive_expiry
        self._done = done
        self._stream: httpcore.AsyncNetworkStream | None = None
        self._state = _State.NEW
        self._expire_at: float | None = None

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` and return its response once its head has arrived; the body streams."""
        if self._state not in (_State.NEW, _State.IDLE):
            raise httpcore.ConnectionNotAvailable()
        self._state = _State.ACTIVE
        self._expire_at = None
        try:
            timeouts = request.extensions.get("timeout", {})
            data, close = await _encode_request(request)
            if self._stream is None:
                self._stream = await self._connect(request, timeouts.get("connect"))
            stream = self._stream
            # As httpcore: a provider may close its side early yet still answer (an error status
            # for a request it refuses); what it sent is read below.
            with contextlib.suppress(httpcore.WriteError):
                await stream.write(data, timeouts.get("write"))
            read_timeout = timeouts.get("read")
            status, reason, version, headers, rest = await _read_head(stream, read_timeout)
            framing, keep_alive = _framing(request.method, status, version, headers)
            body = _Body(self, stream, rest, framing, keep_alive and not close, read_timeout)
        except BaseException:
            await self.aclose()
            raise
        return httpcore.Response(
            status,
            headers=headers,
            content=body,
            extensions={
                "http_version": version,
                "reason_phrase": reason,
                "network_stream": stream,
            },
        )

    async def _connect(
        self, request: httpcore.Request, timeout: float | None
    ) -> httpcore.AsyncNetworkStream:
        host = self.origin.host.decode("ascii")
        stream = await self._backend.connect_tcp(host, self.origin.port, timeout=timeout)
        if self.origin.scheme == b"https":
            context = self._ssl_context or httpcore.default_ssl_context()
            context.set_alpn_protocols(["http/1.1"])  # held connections speak HTTP/1.1 only
            sni = request.extensions.get("sni_hostname") or host
            try:
                stream = await stream.start_tls(context, server_hostname=sni, timeout=timeout)
            except BaseException:
                await stream.aclose()
                raise
        return stream

    async def _finish(self, reusable: bool) -> None:
        """The response's body is closed: keep the connection for the next request or close it."""
        if reusable and self._state is _State.ACTIVE:
            self._state = _State.IDLE
            if self._expiry is not None:
                self._expire_at = time.monotonic() + self._expiry
        else:
            await self.aclose()
        await self._done(self)

    def is_available(self) -> bool:
        """Whether it can take a request now (idle; a new connection belongs to its first one)."""
        return self._state is _State.IDLE

    def is_idle(self) -> bool:
        """Whether it is open with no request on it."""
        return self._state is _State.IDLE

    def is_closed(self) -> bool:
        """Whether it is closed."""
        return self._state is _State.CLOSED

    def has_expired(self) -> bool:
        """Whether an idle connection must not be reused: its keep-alive ran out, or its socket is
        readable (the provider closed it, or sent bytes nobody asked for)."""
        if self._expire_at is not None and time.monotonic() > self._expire_at:
            return True
        stream = self._stream
        return (
            self._state is _State.IDLE
            and stream is not None
            and bool(stream.get_extra_info("is_readable"))
        )

    async def aclose(self) -> None:
        """Close the connection (bytes still held in its socket go with it)."""
        self._state = _State.CLOSED
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    def __repr__(self) -> str:
        return f"<HeldConnection [{self.origin}, {self._state.name}]>"


async def _encode_request(request: httpcore.Request) -> tuple[bytes, bool]:
    """The request's bytes (head and body) and whether it asks to close the connection after.

    Raises:
        httpcore.LocalProtocolError: a line break in the method, target or a header (it would
            smuggle a header or a request), no ``Host``, or a body its headers do not frame.
    """
    length: bytes | None = None
    chunked = close = has_host = False
    for name, value in request.headers:
        lowered = name.lower()
        if lowered == b"host":
            has_host = True
        elif lowered == b"content-length":
            length = value
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lowered == b"connection":
            close = b"close" in value.lower()
    if not has_host:
        raise httpcore.LocalProtocolError("Missing mandatory Host: header")
    lines = b"".join([b"%s: %s\r\n" % header for header in request.headers])
    head = b"%s %s HTTP/1.1\r\n%s\r\n" % (request.method, request.url.target, lines)
    lines_count = len(request.headers) + 2
    if head.count(b"\n") != lines_count or head.count(b"\r") != lines_count:
        raise httpcore.LocalProtocolError("a line break in the request's method, target or headers")
    stream = typing.cast(typing.AsyncIterable[bytes], request.stream)
    chunks = [chunk async for chunk in stream]
    if chunked:
        framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks if chunk]
        return head + b"".join(framed) + b"0\r\n\r\n", close
    body = b"".join(chunks)
    declared = int(length) if length is not None and length.strip().isdigit() else None
    if length is not None and declared != len(body):
        raise httpcore.LocalProtocolError(
            f"the request's Content-Length ({length.decode('latin-1')}) is not its body's length"
            f" ({len(body)})"
        )
    if length is None and body:
        raise httpcore.LocalProtocolError("a request body without Content-Length or chunked")
    return head + body, close


async def _read_head(
    stream: httpcore.AsyncNetworkStream, timeout: float | None
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    """The final response's status, reason, HTTP version, headers, and the bytes after its head.

    Interim ``1xx`` heads (``100 Continue``, ``103 Early Hints``) are skipped, as h11 does.
    """
    buffer = b""
    while True:
        end = _HEAD_END.search(buffer)
        if end is None:
            if len(buffer) > _HEAD_LIMIT:
                raise httpcore.RemoteProtocolError("the provider's response head is too long")
            data = await stream.read(_READ, timeout)
            if not data:
                if buffer:
                    raise httpcore.RemoteProtocolError(
                        "peer closed connection without sending a complete response head"
                    )
                raise httpcore.RemoteProtocolError(
                    "Server disconnected without sending a response."
                )
            buffer += data
            continue
        status, reason, version, headers = _parse_head(buffer[: end.start()])
        buffer = buffer[end.end() :]
        if status >= 200:
            return status, reason, version, headers, buffer
        if status == 101:  # nothing durapipe sends asks for an upgrade
            raise httpcore.RemoteProtocolError("the provider switched protocols unasked")


def _parse_head(head: bytes) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """Parse a response head (without its blank line): status line, then one header a line."""
    _check_line_bytes(head, "response header")
    lines = head.split(b"\n")
    status_line = lines[0].rstrip(b"\r")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if (
        version not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(code) != 3
        or not code.isdigit()
        or code < b"100"  # no such status: not an interim answer to skip (h11 refuses it too)
    ):
        raise httpcore.RemoteProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    return int(code), reason, version, _header_lines(lines, 1)


def _check_line_bytes(block: bytes, what: str) -> None:
    """Refuse a block of lines with a byte h11's rules refuse in a status line or header (see
    `_NEVER_IN_A_LINE`). ``block`` ends without its last line's CR, as `_HEAD_END` cuts it.

    Four scans of the block in C: a regular expression over it cost more than the whole parse.
    """
    nul, vt, ff = _NEVER_IN_A_LINE
    if nul in block or vt in block or ff in block or block.count(b"\r") != block.count(b"\r\n"):
        lines = block.split(b"\n")
        last = len(lines) - 1  # its own CR is already cut: any CR left in it is a stray one
        bad = next(
            (
                line
                for i, line in enumerate(lines)
                if any(byte in line for byte in _NEVER_IN_A_LINE)
                or b"\r" in (line if i == last else line.removesuffix(b"\r"))
            ),
            lines[last],
        )
        raise httpcore.RemoteProtocolError(
            f"a control byte h11 refuses (NUL, CR, VT or FF) in a {what} line: {bad[:80]!r}"
        )


def _header_lines(lines: list[bytes], start: int) -> list[tuple[bytes, bytes]]:
    """The headers of ``lines[start:]`` (checked by `_check_line_bytes`): one a line, folded lines
    joined, names checked as h11 checks them."""
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[start:]:
        if line[:1] in (b" ", b"\t"):  # obsolete line folding: the previous value goes on
            if not headers:
                raise httpcore.RemoteProtocolError("a block of headers that starts with a fold")
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip(b" \t\r"))
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise httpcore.RemoteProtocolError(f"malformed response header: {line[:80]!r}")
        headers.append((name, value.strip(b" \t\r")))
    # One check of every name at once (token characters joined are token characters): a regex
    # call per header costs twice as much (1.15 µs against 0.55 µs for eight names).
    if headers and not _TOKEN.fullmatch(b"".join([name for name, _ in headers])):
        bad = next(name for name, _ in headers if not _TOKEN.fullmatch(name))
        raise httpcore.RemoteProtocolError(f"malformed response header name: {bad[:80]!r}")
    return headers


def _framing(
    method: bytes, status: int, version: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int | None, bool]:
    """How the body ends, and whether the connection may carry another request after it.

    The first is the body's length, ``-1`` for chunked, None for "until the provider closes".
    """
    declared: bytes | None = None
    chunked = False
    keep_alive = version == b"HTTP/1.1"  # HTTP/1.0 answers close (as h11 reads them)
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            values = {part.strip() for part in value.split(b",")}
            if len(values) != 1:
                raise httpcore.RemoteProtocolError("conflicting Content-Length headers")
            size = values.pop()
            # At most 20 digits, as h11 (no body is 10^20 bytes; a longer value is an attack on
            # whoever converts it to a fixed-width integer).
            if not size.isdigit() or len(size) > _LENGTH_DIGITS:
                raise httpcore.RemoteProtocolError(f"bad Content-Length: {value[:40]!r}")
            # Compared as written, as h11 does: ``5`` and ``05`` conflict.
            if declared is not None and size != declared:
                raise httpcore.RemoteProtocolError("conflicting Content-Length headers")
            declared = size
        elif lowered == b"transfer-encoding":
            # Only one, exactly ``chunked`` (as h11): a second one, or any other coding, frames
            # the body in a way another parser could read differently.
            if chunked:
                raise httpcore.RemoteProtocolError("more than one Transfer-Encoding header")
            if value.lower() != b"chunked":
                raise httpcore.RemoteProtocolError(
                    f"unsupported Transfer-Encoding: {value[:40]!r} (only chunked)"
                )
            chunked = True
        elif lowered == b"connection" and b"close" in value.lower():
            keep_alive = False
    if method == b"HEAD" or status in _NO_BODY_STATUS:
        return 0, keep_alive
    if chunked:
        # Both framings: chunked wins, and the connection is not trusted with another request
        # (RFC 9112 6.3: a sign of request smuggling).
        return -1, keep_alive and declared is None
    if declared is None:
        return None, False
    return int(declared), keep_alive


def _check_trailers(block: bytes) -> None:
    """Refuse trailers h11 refuses: bytes, lines and names as in a head, and the framing fields'
    values (h11 checks ``Content-Length`` and ``Transfer-Encoding`` there too)."""
    _check_line_bytes(block, "trailer")
    _framing(b"GET", 200, b"HTTP/1.1", _header_lines(block.split(b"\n"), 0))


class _Body:
    """A response's body as it arrives; closing it gives the connection back (see `_finish`)."""

    def __init__(
        self,
        connection: HeldConnection,
        stream: httpcore.AsyncNetworkStream,
        first: bytes,
        framing: int | None,
        keep_alive: bool,
        timeout: float | None,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._first = first
        self._framing = framing
        self._keep_alive = keep_alive
        self._timeout = timeout
        self._complete = False
        self._closed = False
        if framing == 0:  # nothing to read (HEAD, 204, 304): whole even if nobody iterates it
            self._end(first)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            if self._framing is None:
                pieces = self._until_close()
            elif self._framing < 0:
                pieces = self._chunked()
            else:
                pieces = self._sized(self._framing)
            async for piece in pieces:
                yield piece
        except BaseException:
            await self.aclose()
            raise

    async def _more(self) -> bytes:
        data = await self._stream.read(_READ, self._timeout)
        if not data:
            raise httpcore.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            )
        return data

    def _end(self, leftover: bytes) -> None:
        # Bytes after the answer were not asked for: the connection is not reused.
        self._complete = True
        if leftover:
            self._keep_alive = False

    async def _sized(self, length: int) -> AsyncIterator[bytes]:
        data, self._first = self._first, b""
        remaining = length
        while remaining:
            if not data:
                data = await self._more()
            piece, data = data[:remaining], data[remaining:]
            remaining -= len(piece)
            yield piece
        self._end(data)

    async def _chunked(self) -> AsyncIterator[bytes]:
        data, self._first = self._first, b""
        while True:
            while (at := data.find(b"\n")) < 0:
                if len(data) > _HEAD_LIMIT:
                    raise httpcore.RemoteProtocolError("a chunk size line is too long")
                data += await self._more()
            size_line = _CHUNK_LINE.fullmatch(data, 0, at)
            if size_line is None:
                raise httpcore.RemoteProtocolError(f"bad chunk size line: {data[: min(at, 40)]!r}")
            size = int(size_line[1], 16)
            data = data[at + 1 :]
            if size == 0:
                break
            while size:
                if not data:
                    data = await self._more()
                piece, data = data[:size], data[size:]
                size -= len(piece)
                yield piece
            while len(data) < 2:
                data += await self._more()
            if not data.startswith(b"\r\n"):  # as h11: CRLF, not a bare LF
                raise httpcore.RemoteProtocolError("a chunk not followed by CRLF")
            data = data[2:]
        # Trailers, up to the blank line that ends the message: nothing reads them, but h11
        # checked them as headers, and a provider (or a box between) that sends what h11 refuses
        # there is not trusted with the answer either.
        while True:
            if data.startswith((b"\n", b"\r\n")):  # no trailers
                data = data[1 if data[:1] == b"\n" else 2 :]
                break
            if (end := _TRAILERS_END.search(data)) is not None:
                _check_trailers(data[: end.start()].removesuffix(b"\r"))
                data = data[end.end() :]
                break
            if len(data) > _HEAD_LIMIT:
                raise httpcore.RemoteProtocolError("the trailers are too long")
            data += await self._more()
        self._end(data)

    async def _until_close(self) -> AsyncIterator[bytes]:
        data, self._first = self._first, b""
        if data:
            yield data
        while data := await self._stream.read(_READ, self._timeout):
            yield data
        self._end(b"")

    async def aclose(self) -> None:
        """Close the body: the connection is kept for reuse if the answer was whole, else closed."""
        if self._closed:
            return
        self._closed = True
        await self._connection._finish(self._complete and self._keep_alive)
