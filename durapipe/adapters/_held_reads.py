"""Reads that leave a provider's answer in the socket until durapipe has kept it (HTTP and HTTPS).

An answer read off a socket lives only in the process's memory until it is written to the
checkpoint store. In an ordinary client the bytes leave the kernel in an event-loop callback and
reach the code that keeps them a turn (or, on a busy worker, milliseconds) later; a worker killed
in between has read an answer it never kept, and the retry pays for it again.

`HeldReads` is an httpcore network backend for ``http://`` providers (a local gateway, a proxy, the
fake provider) and, with TLS in user space, ``https://`` ones, that closes that window: a read
*peeks* at the socket (``MSG_PEEK``), so the bytes stay in the kernel while their HTTP/1.1 is parsed
(`durapipe.adapters._held_http`), and they are consumed only once the caller says the answer is
kept (`HeldStream.release`), or by the next read on the connection (by then the earlier
bytes have been parsed and a body that spans several reads is still partly in the socket). At every
instant an answer is in the socket, or kept, or both. A process killed before the answer was kept
leaves its bytes unread in the socket, where a harness (and the kernel) can see them.

``https://`` connections are held the same way: `HeldStream.start_tls` runs TLS in user space
(`durapipe.adapters._held_tls`), peeking at the ciphertext and consuming it once the answer is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import typing
from collections.abc import Iterable

import httpcore

from durapipe.adapters._held_tls import HeldTlsStream, readable, send_request, socket_info

_ConnectExceptions = (OSError, ConnectionError)


class HeldStream(httpcore.AsyncNetworkStream):
    """One TCP connection whose reads leave the bytes in the socket until released."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._held = 0  # bytes handed to the caller that are still in the socket

    def release(self) -> None:
        """Consume the bytes the last read handed over (the caller has kept what it needed)."""
        while self._held:
            try:
                taken = len(self._sock.recv(self._held))
            except (BlockingIOError, InterruptedError):  # cannot happen: the bytes are there
                continue
            except OSError:
                self._held = 0
                return
            self._held -= taken if taken else self._held

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """The bytes available (waiting for some), left in the socket until `release`."""
        self.release()
        while True:
            try:
                data = self._sock.recv(max_bytes, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                await self._readable(timeout)
                continue
            except OSError as error:
                raise httpcore.ReadError(str(error)) from error
            self._held = len(data)
            return data

    async def _readable(self, timeout: float | None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await readable(self._sock)
        except TimeoutError as error:
            raise httpcore.ReadTimeout("timed out waiting for the provider's answer") from error

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send ``buffer`` in full."""
        if not buffer:
            return
        await send_request(self._sock, buffer, timeout)

    async def aclose(self) -> None:
        """Close the connection (held bytes go with it)."""
        self._sock.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """TLS in user space over this connection, its reads held too (`HeldTlsStream`)."""
        port = self._sock.getpeername()[1]
        endpoint = f"https://{server_hostname}:{port}"
        return await HeldTlsStream.handshake(
            self._sock, ssl_context, server_hostname, endpoint, timeout
        )

    def get_extra_info(self, info: str) -> typing.Any:
        """What httpcore asks of a stream: ``is_readable`` (a pooled connection the server
        closed, or that has unexpected bytes, is not reused), the socket and its addresses."""
        if info == "is_readable":
            self.release()
        return socket_info(self._sock, info)


class HeldReads(httpcore.AsyncNetworkBackend):
    """An httpcore network backend whose connections are `HeldStream` (TCP; TLS over it)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Open a non-blocking TCP connection to ``host:port``."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                try:  # a numeric address needs no resolver thread
                    addresses = socket.getaddrinfo(
                        host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
                    )
                except socket.gaierror:
                    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, kind, protocol, _, address = addresses[0]
                sock = socket.socket(family, kind, protocol)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    if local_address is not None:
                        sock.bind((local_address, 0))
                    await loop.sock_connect(sock, address)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from error
        except _ConnectExceptions as error:
            raise httpcore.ConnectError(f"{host}:{port}: {error}") from error
        return HeldStream(sock)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Not supported (providers are reached over TCP)."""
        raise httpcore.ConnectError("held reads connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retries between connection attempts)."""
        await asyncio.sleep(seconds)


def release(response_extensions: typing.Mapping[str, object]) -> None:
    """Consume what a response's held connection still holds (its answer is kept)."""
    stream = response_extensions.get("network_stream")
    if isinstance(stream, HeldStream | HeldTlsStream):
        with contextlib.suppress(OSError):
            stream.release()
