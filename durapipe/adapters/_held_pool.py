"""The pool of held connections: per provider, a stack of idle connections; O(1) per request.

httpcore's ``AsyncConnectionPool`` rescans every connection it holds when a request arrives and
when a response closes, and for each idle one counts every connection again (quadratic in the
pool's size): on a 200-way fan-out over held connections it was a fifth of the worker's CPU. This
pool takes the idle connection used last (the one most likely still open) and gives a connection
back when its response is closed, keeping at most ``max_keepalive_connections`` idle.

A connection is one `durapipe.adapters._held_http.HeldConnection` (HTTP/1.1, TLS through the
network backend's ``start_tls``) over `durapipe.adapters._held_reads.HeldReads`: reads stay held as
before. An idle connection is checked before it is reused (``has_expired``: its keep-alive ran
out, or the server closed it or sent bytes nobody asked for), as httpcore's pool does.

An idle connection is closed when its keep-alive runs out, whether or not another request comes:
after a burst, up to ``max_keepalive_connections`` sockets would otherwise stay open until the
next request. One timer per pool (``loop.call_later``, not a task: it neither keeps the loop
running nor outlives it) is armed while idle connections exist, for the oldest one's expiry; it
closes the expired ones on a short task and arms itself for the next. `aclose` cancels it. A
close task whose loop ended before it ran (a process that runs several loops: ``asyncio.run``
twice) leaves its connections to the next request's sweep or to `aclose`, on the loop then running.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time

import httpcore

from durapipe.adapters._held_http import HeldConnection

_Place = tuple[bytes, bytes, int]


def _place(origin: httpcore.Origin) -> _Place:
    return origin.scheme, origin.host, origin.port


class HeldPool:
    """Held connections by origin; what ``httpx.AsyncHTTPTransport`` keeps as its ``_pool``.

    Args:
        network_backend: opens the connections (`durapipe.adapters._held_reads.HeldReads`).
        ssl_context: verifies ``https://`` providers (None: httpcore's default context).
        max_keepalive_connections: idle connections kept open, over all origins.
        keepalive_expiry: seconds an idle connection may wait before it is not reused.
    """

    def __init__(
        self,
        network_backend: httpcore.AsyncNetworkBackend,
        ssl_context: ssl.SSLContext | None = None,
        max_keepalive_connections: int = 1000,
        keepalive_expiry: float = 15.0,
    ) -> None:
        self._backend = network_backend
        self._ssl_context = ssl_context
        self._max_idle = max_keepalive_connections
        self._expiry = keepalive_expiry
        # By (scheme, host, port): httpcore's `Origin` compares by value but is not hashable.
        self._idle: dict[_Place, collections.deque[HeldConnection]] = {}
        self._idle_count = 0
        self._busy: set[HeldConnection] = set()
        self._next_sweep = 0.0
        # When each idle connection's keep-alive runs out (time.monotonic, as httpcore's).
        self._idle_until: dict[HeldConnection, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()  # the timer's closes under way
        # The connections those tasks have not closed yet: a task of a loop that ended (cancelled
        # before it started, or never run) leaves its connections here for `aclose`/`_sweep`.
        self._to_close: set[HeldConnection] = set()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` on an idle connection to its origin, or a new one."""
        origin = request.url.origin
        if origin.scheme not in (b"http", b"https"):
            raise httpcore.UnsupportedProtocol(
                f"held connections speak http:// and https://, not {origin.scheme.decode()}://"
            )
        await self._sweep()
        connection = await self._reusable(origin)
        if connection is None:
            connection = HeldConnection(
                origin, self._backend, self._ssl_context, self._expiry, self._give_back
            )
        self._busy.add(connection)
        try:
            # The response's body, once closed, gives the connection back (`_give_back`).
            return await connection.handle_async_request(request)
        except BaseException:
            self._busy.discard(connection)  # the connection closed itself
            raise

    async def _sweep(self) -> None:
        """Close the idle connections whose keep-alive ran out, to every provider, at most once a
        second (or once per keep-alive period, if shorter): a provider no longer asked keeps no
        open sockets. Each queue is oldest first, so each stops at its first live connection."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(1.0, self._expiry)
        for connection in self._take_expired(now) + self._left_behind():
            await connection.aclose()

    def _take_expired(self, now: float) -> list[HeldConnection]:
        """Take the idle connections whose keep-alive ran out (or whose server closed them) out
        of the pool; the caller closes them. Each queue is oldest first: it stops at the first
        live one."""
        expired = []
        for idle in self._idle.values():
            while idle and (self._idle_until[idle[0]] <= now or idle[0].has_expired()):
                connection = idle.popleft()
                del self._idle_until[connection]
                self._idle_count -= 1
                expired.append(connection)
        return expired

    def _arm(self) -> None:
        """Arm the pool's timer for the oldest idle connection's expiry, unless armed already
        (on this loop: a timer of a loop that ended never fires) or nothing is idle."""
        loop = asyncio.get_running_loop()
        if self._timer is not None and self._timer_loop is loop:
            return
        # Oldest first in each queue: the earliest expiry is among the queues' first ones.
        firsts = [self._idle_until[idle[0]] for idle in self._idle.values() if idle]
        if not firsts:
            return
        delay = max(0.0, min(firsts) - time.monotonic())
        self._timer, self._timer_loop = loop.call_later(delay, self._expire), loop

    def _expire(self) -> None:
        """The timer: close the idle connections whose keep-alive ran out, then re-arm."""
        self._timer = None
        expired = self._take_expired(time.monotonic())
        if expired:
            self._to_close.update(expired)
            closing = asyncio.get_running_loop().create_task(self._close_all(expired))
            self._closing.add(closing)  # held, so it is not collected mid-close
            closing.add_done_callback(self._closing.discard)
        self._arm()

    async def _close_all(self, connections: list[HeldConnection]) -> None:
        for connection in connections:
            # Nobody awaits this task: a socket that fails to close (already dead) must neither
            # keep the others open nor surface as "exception never retrieved".
            with contextlib.suppress(Exception):
                await connection.aclose()
            self._to_close.discard(connection)

    def _left_behind(self) -> list[HeldConnection]:
        """The timer's connections whose close task cannot run any more (its loop ended, or it
        was cancelled before it started: an ``asyncio.run`` that ends in the round the timer
        fires); the caller closes them. Those of a task still to run on this loop stay its own."""
        loop = asyncio.get_running_loop()
        if not self._to_close or any(task.get_loop() is loop for task in self._closing):
            return []
        left, self._to_close = list(self._to_close), set()
        self._closing.clear()  # tasks of ended loops: never awaited, nothing to hold them for
        return left

    async def _reusable(self, origin: httpcore.Origin) -> HeldConnection | None:
        """The idle connection to ``origin`` used last that can take a request (None: none);
        the expired ones met on the way are closed."""
        idle = self._idle.get(_place(origin))
        while idle:
            connection = idle.pop()
            del self._idle_until[connection]
            self._idle_count -= 1
            if connection.is_available() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def _give_back(self, connection: HeldConnection) -> None:
        """Keep ``connection`` for the next request to its origin if it is idle and there is room."""
        self._busy.discard(connection)
        if not connection.is_idle() or self._max_idle < 1:
            await connection.aclose()
            return
        if self._idle_count >= self._max_idle:
            # Full: the provider with the most idle connections gives up its oldest, so one
            # provider's fan-out cannot take every slot from the others.
            largest = max(self._idle.values(), key=len)
            self._idle_count -= 1
            oldest = largest.popleft()
            del self._idle_until[oldest]
            await oldest.aclose()
        self._idle.setdefault(_place(connection.origin), collections.deque()).append(connection)
        self._idle_until[connection] = time.monotonic() + self._expiry
        self._idle_count += 1
        self._arm()

    @property
    def connections(self) -> list[HeldConnection]:
        """The open connections, idle and in use (as httpcore's pool lists its own)."""
        return [c for idle in self._idle.values() for c in idle] + list(self._busy)

    async def aclose(self) -> None:
        """Close every connection, idle or not, and stop the pool's timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        connections = self.connections
        self._idle.clear()
        self._idle_until.clear()
        self._idle_count = 0
        self._busy.clear()
        for connection in connections:
            await connection.aclose()
        # The timer's last closes (milliseconds): none left behind. Only this loop's: a task of
        # a loop that ended cannot be awaited here (and never runs again); its connections are
        # closed here instead (held connections close their sockets without the loop).
        loop = asyncio.get_running_loop()
        closing = [task for task in self._closing if task.get_loop() is loop]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        for connection in self._left_behind():
            with contextlib.suppress(Exception):
                await connection.aclose()

    async def __aenter__(self) -> HeldPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
