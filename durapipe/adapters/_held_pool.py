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
"""

from __future__ import annotations

import collections
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
        for idle in self._idle.values():
            while idle and idle[0].has_expired():
                self._idle_count -= 1
                await idle.popleft().aclose()

    async def _reusable(self, origin: httpcore.Origin) -> HeldConnection | None:
        """The idle connection to ``origin`` used last that can take a request (None: none);
        the expired ones met on the way are closed."""
        idle = self._idle.get(_place(origin))
        while idle:
            connection = idle.pop()
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
            await largest.popleft().aclose()
        self._idle.setdefault(_place(connection.origin), collections.deque()).append(connection)
        self._idle_count += 1

    @property
    def connections(self) -> list[HeldConnection]:
        """The open connections, idle and in use (as httpcore's pool lists its own)."""
        return [c for idle in self._idle.values() for c in idle] + list(self._busy)

    async def aclose(self) -> None:
        """Close every connection, idle or not."""
        connections = self.connections
        self._idle.clear()
        self._idle_count = 0
        self._busy.clear()
        for connection in connections:
            await connection.aclose()

    async def __aenter__(self) -> HeldPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
