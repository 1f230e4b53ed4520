"""Slow clients: how long a request may take to arrive, and how many connections may be open.

aiohttp reads a request's head (request line and headers) with no deadline, so a client that sends
one header line every few seconds holds a connection, a file descriptor and a buffer for as long as
it likes, and a few hundred such clients exhaust the server ("slowloris"). `GuardedSite` listens
like `aiohttp.web.TCPSite` and wraps each connection's protocol:

- past `ClientLimits.max_connections` open connections, or `max_connections_per_peer` from one
  address, a new connection gets a ``503`` and is closed;
- a connection whose request head has not arrived `head_timeout_s` after it opened gets a ``408``
  and is closed;
- an ``execute`` about to wait for its run (minutes, maybe) leaves the connection caps for caps
  of its own, `max_executes` in all and `max_executes_per_peer` from one address
  (`count_as_execute`): waiting executes never lock out the cheap reads, one address cannot take
  every execute's place, and past either cap an execute gets a ``503`` before it starts anything.

Every answer closes its connection (`close_after_response`), so each request is a new connection
under the same head deadline: an idle keep-alive connection cannot be used to send a slow second
head. The body's deadline lives with the code that reads it (`read_body`): `body_timeout_s`, plus
one second per `body_min_rate` bytes received, so a large upload at a normal rate is never cut;
a body cut, and any answer given before the body has all arrived, ends its connection with the
answer (`answer_and_close`): it leaves the caps at once and lingers a moment, under caps of its own
(as many as the connection caps), so that a client cannot hold sockets past the caps by getting
answers fast. Each cut is one log line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from durapipe.serve._problems import PROBLEM_CONTENT_TYPE, ServeError

logger = logging.getLogger("durapipe.serve")

# The end of a request head: a blank line (a bare LF too, so a head aiohttp accepts is never
# taken for an unfinished one).
_HEAD_ENDS: Final = (b"\r\n\r\n", b"\n\n", b"\n\r\n")
# The code of a request that did not arrive in time (durapipe's extension of the registry).
REQUEST_TIMEOUT: Final = "durapipe.request.timeout"
# How long a connection cut for a slow body may stay open after its answer (see `_Guarded.linger`),
# outside the caps: long enough for a client to read its answer, too short to hold anything.
LINGER_S: Final = 2.0


@dataclass(frozen=True)
class ClientLimits:
    """How much a client may hold of `durapipe serve`.

    Attributes:
        head_timeout_s: seconds a connection has, from opening, to send its request line and
            headers; then it gets a ``408`` and is closed.
        body_timeout_s: seconds a request's body may take to arrive, plus one second per
            ``body_min_rate`` bytes received (a body slower than that gets a ``408``).
        body_min_rate: the slowest upload, in bytes per second, that is never cut.
        max_connections: open connections the server holds at most (a ``503`` past it).
        max_connections_per_peer: open connections from one address at most (an IPv6 one's
            ``/64``, see `peer_of`; a ``503`` past it; behind a reverse proxy every client is the
            proxy's address: raise it, or set it to 0, no per-address cap).
        max_executes: ``execute`` requests waiting for their runs at most (a ``503`` past it,
            nothing started). A waiting execute counts here instead of under the connection caps,
            so executes that wait for long runs never lock out the cheap reads.
        max_executes_per_peer: ``execute`` requests from one address waiting for their runs at
            most (a ``503`` past it, nothing started; 0: no per-address cap), so that one address
            cannot take every place of ``max_executes``.
    """

    head_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    body_min_rate: int = 32 * 1024
    max_connections: int = 256
    max_connections_per_peer: int = 64
    max_executes: int = 128
    max_executes_per_peer: int = 32

    def problems(self) -> list[str]:
        """One sentence per limit that cannot work (zero or negative)."""
        found = []
        for name, flag in (
            ("head_timeout_s", "--head-timeout"),
            ("body_timeout_s", "--body-timeout"),
            ("body_min_rate", "--body-min-rate"),
            ("max_connections", "--max-connections"),
            ("max_executes", "--max-executes"),
        ):
            if getattr(self, name) <= 0:
                found.append(f"{name} ({flag}) must be more than 0, not {getattr(self, name)}")
        for name, flag in (
            ("max_connections_per_peer", "--max-connections-per-peer"),
            ("max_executes_per_peer", "--max-executes-per-peer"),
        ):
            if getattr(self, name) < 0:
                found.append(
                    f"{name} ({flag}) must be 0 (no cap) or more, not {getattr(self, name)}"
                )
        return found


class _Gate:
    """The open connections of one server, counted in all and per peer address, but for those
    whose execute waits for its run, counted apart."""

    def __init__(self, limits: ClientLimits) -> None:
        self.limits = limits
        self.open = 0
        self.by_peer: Counter[str] = Counter()
        self.executes = 0
        self.executes_by_peer: Counter[str] = Counter()
        self.lingering = 0
        self.lingering_by_peer: Counter[str] = Counter()
        # Refusals are logged at most once a second: a flood of connections is not a flood of lines.
        self._next_log = 0.0
        self._unlogged = 0

    def refusal(self, peer: str) -> str | None:
        """Why a new connection from ``peer`` is refused, or None (then it is counted)."""
        limits = self.limits
        if self.open >= limits.max_connections:
            return f"the server holds its limit of {limits.max_connections} open connections"
        per_peer = limits.max_connections_per_peer
        if per_peer and self.by_peer[peer] >= per_peer:
            return f"{peer} holds its limit of {per_peer} open connections"
        self.open += 1
        self.by_peer[peer] += 1
        return None

    def to_executes(self, peer: str) -> str | None:
        """Why ``peer``'s connection, whose execute is about to wait for its run, is refused, or
        None: then it counts under the executes' caps and leaves its connection places."""
        limit = self.limits.max_executes
        if self.executes >= limit:
            return f"the server waits for its limit of {limit} executes"
        per_peer = self.limits.max_executes_per_peer
        if per_peer and self.executes_by_peer[peer] >= per_peer:
            return f"{peer} waits for its limit of {per_peer} executes"
        self.executes += 1
        self.executes_by_peer[peer] += 1
        self.release(peer)
        return None

    def end_execute(self, peer: str) -> None:
        self.executes -= 1
        self.executes_by_peer[peer] -= 1
        if self.executes_by_peer[peer] <= 0:
            del self.executes_by_peer[peer]

    def to_linger(self, peer: str) -> bool:
        """Whether ``peer``'s connection, answered and out of the connection caps, may linger
        (`_Guarded.linger`): as many may as the connection caps let be open, in all and from one
        address. A refused answer is quick to get (a missing token), so without this cap a client
        opening connections fast would hold two seconds' worth of them, past every cap."""
        limits = self.limits
        if self.lingering >= limits.max_connections:
            return False
        per_peer = limits.max_connections_per_peer
        if per_peer and self.lingering_by_peer[peer] >= per_peer:
            return False
        self.lingering += 1
        self.lingering_by_peer[peer] += 1
        return True

    def end_linger(self, peer: str) -> None:
        self.lingering -= 1
        self.lingering_by_peer[peer] -= 1
        if self.lingering_by_peer[peer] <= 0:
            del self.lingering_by_peer[peer]

    def log_refusal(self, peer: str, refusal: str, what: str = "a connection") -> None:
        now = asyncio.get_running_loop().time()
        if now < self._next_log:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more refused in the last second)" if self._unlogged else ""
        logger.warning("durapipe serve: refused %s from %s: %s (503)%s", what, peer, refusal, more)
        self._next_log, self._unlogged = now + 1.0, 0

    def release(self, peer: str) -> None:
        self.open -= 1
        self.by_peer[peer] -= 1
        if self.by_peer[peer] <= 0:
            del self.by_peer[peer]


def peer_of(address: str) -> str:
    """The peer the per-address caps count a connection from ``address`` under: an IPv4 address
    (an IPv4-mapped IPv6 one as its IPv4 form), or an IPv6 address's ``/64``, the least network a
    host is given: each of a client's 2**64 addresses would otherwise have a share of its own.

    Example:
        >>> peer_of("2001:db8::7"), peer_of("2001:db8::8"), peer_of("::ffff:10.0.0.7")
        ('2001:db8::/64', '2001:db8::/64', '10.0.0.7')
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scope (fe80::1%eth0) aside
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _raw_answer(status: int, reason: str, error: ServeError, extra: str = "") -> bytes:
    """A whole HTTP answer written straight to a socket aiohttp has not read a request from."""
    body = json.dumps(error.document()).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class _Handler(RequestHandler):
    """aiohttp's handler of a connection, whose answer to a request it cannot parse (a bad header,
    a bad chunk) is a ``request.malformed`` problem and one log line naming the address, as every
    refusal: aiohttp's own is text, logged at ERROR with a traceback. Anything else is answered
    and logged as aiohttp does."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500 or request.writer.output_size:
            return super().handle_error(request, status, exc, message)
        lines = (message or exc.message or "").strip().splitlines()
        fault = lines[0].rstrip(":") if lines else "unreadable"
        # Bytes that are not HTTP at all (a scanner, TLS) are everyday noise, as aiohttp has it.
        log = logger.debug if isinstance(exc, BadHttpMethod) else logger.warning
        peer = peer_of(request.remote) if request.remote else "?"
        log(
            "durapipe serve: refused a request from %s that is not HTTP (%d): %s",
            peer,
            status,
            fault,
        )
        response = ServeError(
            "request.malformed",
            f"The request is not HTTP this runner can read: {fault}.",
            status=status,
            params={"reason": "not_http"},
        ).response()
        response.force_close()
        return response


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, under the connection cap and the head deadline."""

    def __init__(self, protocol: Callable[[], asyncio.Protocol], gate: _Gate) -> None:
        self._protocol = protocol
        self._inner: asyncio.Protocol | None = None  # aiohttp's, made once the connection is let in
        self._gate = gate
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._head_done = False
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self._executing = False  # counted under the executes' cap, not the connection caps
        self._done: asyncio.Protocol | None = None  # aiohttp's, once the connection lingers
        self._lingering = False  # counted under the lingering connections' caps
        # A start of a run is in flight (`keep_place`): a client that leaves meanwhile leaves its
        # place in the caps to the start until it ends (``_kept``), so leaving frees no place.
        self._starting = False
        self._kept = False

    @property
    def limits(self) -> ClientLimits:
        return self._gate.limits

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        self._peer = peer_of(str(peername[0])) if peername else "?"
        refusal = self._gate.refusal(self._peer)
        if refusal is not None:
            self._gate.log_refusal(self._peer, refusal)
            error = ServeError(
                "runtime.unavailable",
                f"This runner is busy ({refusal}); send the request again in a moment.",
            )
            transport.write(_raw_answer(503, "Service Unavailable", error, "Retry-After: 1\r\n"))
            transport.close()
            return
        limit = self._gate.limits.head_timeout_s
        self._timer = asyncio.get_running_loop().call_later(limit, self._head_late)
        self._inner = self._protocol()
        if type(self._inner) is RequestHandler:
            # The same object, answering a request it cannot parse as a problem (see `_Handler`):
            # aiohttp's server makes its own class, and takes no other.
            self._inner.__class__ = _Handler
        self._inner.connection_made(transport)

    def _head_late(self) -> None:
        self._timer = None
        transport = self._transport
        if self._head_done or transport is None or transport.is_closing():
            return
        limit = self._gate.limits.head_timeout_s
        logger.warning(
            "durapipe serve: closed a connection from %s: its request line and headers did not "
            "arrive within %g s (408)",
            self._peer,
            limit,
        )
        error = ServeError(
            REQUEST_TIMEOUT,
            f"The request line and headers did not arrive within {limit:g} s of connecting; "
            "send the whole request head at once.",
        )
        transport.write(_raw_answer(408, "Request Timeout", error))
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if not self._head_done:
            seen = self._tail + data
            if any(end in seen for end in _HEAD_ENDS):
                self._head_done = True
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    @property
    def peer(self) -> str:
        return self._peer

    def waiting_executes(self) -> int:
        """The executes the server waits for, from every address."""
        return self._gate.executes

    def to_executes(self) -> str | None:
        """See `_Gate.to_executes`."""
        if self._executing or self._inner is None:
            return None
        refusal = self._gate.to_executes(self._peer)
        if refusal is None:
            self._executing = True
        else:
            self._gate.log_refusal(self._peer, refusal, "an execute")
        return refusal

    def _leave_caps(self) -> asyncio.Protocol | None:
        inner, self._inner = self._inner, None
        if inner is not None:
            if self._starting:
                self._kept = True
            else:
                self._release()
        return inner

    def _release(self) -> None:
        if self._executing:
            self._gate.end_execute(self._peer)
        else:
            self._gate.release(self._peer)

    def keep_place(self) -> Callable[[], None]:
        """Keep this connection's place in the caps while a start of a run is in flight, even if
        its client leaves (the start goes on); the function returned says the start ended."""
        self._starting = True

        def ended() -> None:
            self._starting = False
            if self._kept:
                self._kept = False
                self._release()

        return ended

    def linger(self) -> None:
        """End this connection after the answer already written: it leaves the caps at once, what
        the client still sends is read and thrown away, the answer is followed by an end of
        stream, and the connection closes when the client closes it, or after `LINGER_S`. Past the
        lingering connections' caps (`_Gate.to_linger`) it closes at once instead.

        Closing at once would leave the client's unread bytes in the socket, and closing a socket
        with unread bytes resets the connection: the reset can throw away the answer before the
        client reads it.
        """
        transport = self._transport
        if transport is None or self._inner is None:
            return
        self._done = self._leave_caps()
        if transport.can_write_eof():
            transport.write_eof()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._gate.to_linger(self._peer):
            transport.close()  # the answer is sent first; a client still sending may be reset
            return
        self._lingering = True
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lingering:
            self._lingering = False
            self._gate.end_linger(self._peer)
        inner = self._leave_caps() or self._done
        self._done = None
        if inner is not None:
            inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """`aiohttp.web.TCPSite` with `ClientLimits` on every connection.

    Example:
        >>> site = GuardedSite(runner, "127.0.0.1", 8081, ClientLimits())  # doctest: +SKIP
        >>> await site.start()  # doctest: +SKIP
    """

    __slots__ = ("_host", "_limits", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: ClientLimits) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limits = limits

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        gate = _Gate(self._limits)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(server, gate), self._host, self._port
        )


async def close_after_response(request: web.Request, response: web.StreamResponse) -> None:
    """Close each connection after its answer (``on_response_prepare``): every request is a new
    connection, so the head deadline bounds each one, and an idle connection holds nothing.

    The hook runs after aiohttp wrote the ``Connection`` header from the request, so the header
    is set here too: a client told nothing would send its next request on a closed connection.
    """
    response.force_close()
    response.headers[hdrs.CONNECTION] = "close"


def count_as_execute(request: web.Request) -> None:
    """Count the connection of ``request``, an execute about to start the run it waits for, under
    the executes' own caps (`ClientLimits.max_executes`, `max_executes_per_peer`) instead of the
    connection caps: an execute may wait for minutes, and the caps are there for clients that
    send nothing.

    Raises:
        ServeError: ``runtime.unavailable``, an executes' cap is reached (nothing is started).
    """
    transport = request.transport
    guarded = transport.get_protocol() if transport is not None else None
    if not isinstance(guarded, _Guarded):
        return  # an application served without `GuardedSite` has no caps
    if guarded.to_executes() is not None:
        limits = guarded.limits
        if guarded.waiting_executes() >= limits.max_executes:
            held = f"{limits.max_executes} runs of execute (its limit, --max-executes)"
        else:
            count = limits.max_executes_per_peer
            held = (
                f"{count} run{'' if count == 1 else 's'} of execute from {guarded.peer} (its "
                "limit per address, --max-executes-per-peer)"
            )
        raise ServeError(
            "runtime.unavailable",
            f"This runner already waits for {held}; nothing was started: send it again in a "
            "moment, or start the run (/v1/start) and follow it at /v1/runs/{id}/status.",
        )


def keep_place(request: web.Request) -> Callable[[], None]:
    """Keep the place of ``request``'s connection in the caps until the function returned is
    called (a start of a run has ended), even if the client leaves before: a client that sends
    starts and leaves at once would otherwise hold any number of them in flight past its caps.
    """
    transport = request.transport
    guarded = transport.get_protocol() if transport is not None else None
    if not isinstance(guarded, _Guarded):
        return _nothing  # an application served without `GuardedSite` has no caps
    return guarded.keep_place()


def _nothing() -> None:
    return None


async def answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` whole, then end the connection (`_Guarded.linger`).

    For an answer given before the request's body has all arrived (a client cut for sending its
    body too slowly, a body past the size limit, a refused token): aiohttp would otherwise keep
    reading (and throwing away) the rest of its body for up to 10 s after the answer, holding the
    connection's place under the caps (for a slow client, the one that was just cut for holding
    it). Closing at once instead could reset the connection before the client read its answer.
    """
    await response.prepare(request)
    await response.write_eof()  # the answer is with the transport, which sends it before the end
    transport = request.transport
    guarded = transport.get_protocol() if transport is not None else None
    if isinstance(guarded, _Guarded):
        guarded.linger()
    else:
        request.protocol.force_close()
    return response


async def read_body(request: web.Request, limits: ClientLimits, max_bytes: int) -> bytes:
    """The request's body, read under the body deadline and the size cap.

    The deadline is ``body_timeout_s`` after the head, plus one second per ``body_min_rate`` bytes
    received so far: a large upload at any rate above ``body_min_rate`` arrives whole.

    Raises:
        ServeError: the body came slower than that (``408``).
        web.HTTPRequestEntityTooLarge: the body passes ``max_bytes``.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks: list[bytes] = []
    size = 0
    while True:
        deadline = started + limits.body_timeout_s + size / limits.body_min_rate
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await request.content.readany()
        except TimeoutError:
            waited = loop.time() - started
            peer = request.remote or "?"
            logger.warning(
                "durapipe serve: cut the request %s %s from %s: %d bytes of its body in %.0f s, "
                "slower than %d bytes/s (408)",
                request.method,
                request.path,
                peer,
                size,
                waited,
                limits.body_min_rate,
            )
            raise ServeError(
                REQUEST_TIMEOUT,
                f"The request body came too slowly ({size} bytes in {waited:.0f} s); this runner "
                f"waits {limits.body_timeout_s:g} s plus 1 s per {limits.body_min_rate} bytes.",
                params={"received": size},
            ) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        chunks.append(chunk)
