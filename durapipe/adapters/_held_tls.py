"""TLS in user space over a held connection: an ``https://`` answer stays in the socket until kept.

A TLS library reads the socket to decrypt it, so over an ordinary TLS connection an answer leaves
the kernel before durapipe has it, and a worker killed between that read and the keep has lost an
answer it was billed for. `HeldTlsStream` runs TLS itself, with an `ssl.SSLObject` over memory
buffers (`ssl.MemoryBIO`): a read *peeks* at the raw socket (``MSG_PEEK``), cuts off the TLS records
that have fully arrived, feeds a copy of them to the SSL object and hands the decrypted bytes to
the HTTP/1.1 parser. The ciphertext stays in the kernel until the answer is kept
(`HeldTlsStream.release`), or until the next read (by then the plaintext of those records has been
parsed), exactly as plain-HTTP held reads do (`durapipe.adapters._held_reads`). The start of a
record whose end has not arrived is taken out of the socket (it cannot be decrypted, and left there
it could fill the receive buffer and stall the rest); the bytes that complete it stay in the socket, so an answer is never whole in memory
before it is kept. Records that decrypt to nothing (TLS 1.3 session tickets) are consumed at once.

The handshake reads the socket normally (no answer can arrive before the request is sent). The SSL
context is the one litellm's own transport uses (its CA bundle: ``SSL_VERIFY``, ``SSL_CERT_FILE``,
else certifi; its ciphers), with ALPN ``http/1.1`` (`durapipe.adapters._held_http`), SNI and
hostname checking, so a certificate is trusted here exactly when litellm's transport would trust it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import typing

import httpcore

from durapipe.stores._limits import request_sent

_HEADER = 5  # a TLS record: content type (1), version (2), length (2), then the record itself
_PEEK_LIMIT = 64 * 1024  # how much of the socket one read looks at (records are at most ~16 KiB)
# The ciphertext one read feeds the SSL object and holds in the socket: about one record. Holding
# more fills the receive buffer, and a full buffer closes the TCP window on the rest of the answer.
_FEED_LIMIT = 17 * 1024
_BLOCKING = (BlockingIOError, InterruptedError)


class HeldTlsStream(httpcore.AsyncNetworkStream):
    """One TLS connection whose ciphertext stays in the socket until the answer is kept."""

    def __init__(
        self,
        sock: socket.socket,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        self._sock = sock
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        self._fed = 0  # bytes still in the socket whose copy the SSL object has decrypted
        self._partial = b""  # the start of a record taken from the socket, waiting for its end

    @classmethod
    async def handshake(
        cls,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_hostname: str | None,
        endpoint: str,
        timeout: float | None,
    ) -> HeldTlsStream:
        """Run the TLS handshake over ``sock`` (connected to ``endpoint``) and return the stream.

        Raises:
            httpcore.ConnectError: The handshake failed; for a certificate that failed
                verification its cause is the `ssl.SSLCertVerificationError` (see
                `durapipe.adapters._litellm.untrusted_certificate`).
        """
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(
            incoming, outgoing, server_side=False, server_hostname=server_hostname
        )
        stream = cls(sock, tls, incoming, outgoing)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        await stream._flush()
                        # No answer can arrive before the request: the handshake reads normally.
                        data = await loop.sock_recv(sock, _PEEK_LIMIT)
                        if not data:
                            raise ConnectionResetError(
                                "the provider closed the connection"
                            ) from None
                        incoming.write(data)
                await stream._flush()
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(
                f"timed out in the TLS handshake with {endpoint}"
            ) from error
        except ssl.SSLCertVerificationError as error:
            raise httpcore.ConnectError(
                f"{endpoint}: certificate verify failed: {error.verify_message}"
            ) from error
        except (ssl.SSLError, OSError) as error:
            raise httpcore.ConnectError(f"TLS handshake with {endpoint} failed: {error}") from error
        return stream

    def release(self) -> None:
        """Consume the ciphertext of the records already decrypted (their answer is kept)."""
        while self._fed:
            try:
                taken = len(self._sock.recv(self._fed))
            except _BLOCKING:  # cannot happen: the bytes are there
                continue
            except OSError:
                self._fed = 0
                return
            self._fed -= taken if taken else self._fed

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Decrypted bytes (waiting for some); their ciphertext stays in the socket until `release`."""
        try:
            async with asyncio.timeout(timeout):
                return await self._read(max_bytes)
        except TimeoutError as error:
            raise httpcore.ReadTimeout("timed out waiting for the provider's answer") from error

    async def _read(self, max_bytes: int) -> bytes:
        while True:
            if self._incoming.pending or self._tls.pending():
                try:
                    data = self._tls.read(max_bytes)
                except ssl.SSLWantReadError:
                    data = b""  # what was fed held no answer bytes (a session ticket)
                except ssl.SSLZeroReturnError:  # the provider closed the TLS session
                    self.release()
                    return b""
                except ssl.SSLError as error:
                    raise httpcore.ReadError(f"TLS error reading the answer: {error}") from error
                if data:
                    return data
            # Everything fed so far is decrypted and handed over: its ciphertext may go.
            self.release()
            try:
                peeked = self._sock.recv(_PEEK_LIMIT, socket.MSG_PEEK)
            except _BLOCKING:
                await readable(self._sock)
                continue
            except OSError as error:
                raise httpcore.ReadError(str(error)) from error
            if not peeked:
                if self._partial:
                    raise httpcore.ReadError("the provider closed the connection mid-record")
                return b""  # the provider closed the connection
            view = self._partial + peeked
            whole = _whole_records(view)
            if not whole:
                # The start of a record whose end has not come: take it out of the socket. It
                # cannot be decrypted (so holds no answer yet), and a socket left holding it could
                # fill its receive buffer and close the TCP window on the rest of the record.
                self._partial += self._sock.recv(len(peeked))
                continue
            self._incoming.write(view[:whole])
            self._fed = whole - len(self._partial)  # the rest of the fed bytes are still in it
            self._partial = b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Encrypt and send ``buffer`` in full."""
        if not buffer:
            return
        try:
            self._tls.write(buffer)
        except ssl.SSLError as error:
            raise httpcore.WriteError(f"TLS error sending the request: {error}") from error
        await send_request(self._sock, self._outgoing.read(), timeout)

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self._sock, data)

    async def aclose(self) -> None:
        """Say goodbye (TLS ``close_notify``) and close the connection (held ciphertext goes with
        it).

        Without ``close_notify`` the provider cannot tell a finished connection from one cut
        short (some log it as an error, some count it as a truncation attack). Best effort: one
        non-blocking send, no wait for the provider's own ``close_notify``, so a close never
        hangs on a dead or slow peer.
        """
        try:
            with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: it waits for the peer's
                self._tls.unwrap()
            alert = self._outgoing.read()
            if alert:
                with contextlib.suppress(OSError):  # gone, reset, or a full send buffer
                    self._sock.send(alert)
        finally:
            self._sock.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Not supported (TLS inside TLS is a proxy's business; proxies take litellm's path)."""
        raise httpcore.ConnectError("held TLS does not nest")

    def get_extra_info(self, info: str) -> typing.Any:
        """What httpcore asks of a stream: ``ssl_object`` (for ALPN), ``is_readable`` (a pooled
        connection the server closed or sent unexpected bytes on is not reused), the socket."""
        if info == "ssl_object":
            return self._tls
        if info == "is_readable":
            if self._unread():
                return True
            self.release()
        return socket_info(self._sock, info)

    def _unread(self) -> bool:
        """Whether records fed with the answer's hold bytes the answer did not take (a record the
        provider sent right after it, decrypted with it): the socket no longer shows them, yet a
        next request would read them as the start of its answer."""
        if not (self._incoming.pending or self._tls.pending() or self._partial):
            return False
        try:
            # Only an idle connection is asked: what this reads is no answer's, and a connection
            # that had any is closed, not reused.
            return bool(self._tls.read(_PEEK_LIMIT))
        except ssl.SSLWantReadError:  # records that decrypt to nothing (session tickets)
            return bool(self._partial)  # the start of a record nobody asked for
        except ssl.SSLError:  # the provider's close_notify, or a broken record
            return True


async def send_request(sock: socket.socket, data: bytes, timeout: float | None) -> None:
    """Send a request's ``data`` in full (failing as httpcore's errors), then tell the call's
    provider limit that its request has left (`durapipe.stores._limits.request_sent`)."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_sendall(sock, data)
    except TimeoutError as error:
        raise httpcore.WriteTimeout("timed out sending the request") from error
    except OSError as error:
        raise httpcore.WriteError(str(error)) from error
    # The request's first bytes are on the wire: its provider limit counts it from now.
    request_sent()


async def readable(sock: socket.socket) -> None:
    """Wait until ``sock`` has bytes (or is closed)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    descriptor = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(descriptor, wake)
    try:
        await ready
    finally:
        loop.remove_reader(descriptor)


def socket_info(sock: socket.socket, info: str) -> typing.Any:
    """What httpcore asks of any held stream, read off its socket: ``is_readable`` (bytes, or the
    server's close, waiting: a pooled connection with either is not reused), the socket and its
    addresses; None for anything else."""
    if info == "is_readable":
        try:
            sock.recv(1, socket.MSG_PEEK)  # bytes, or b"" at the server's close
        except _BLOCKING:
            return False
        except OSError:
            return True
        return True
    if info == "socket":
        return sock
    if info == "client_addr":
        return sock.getsockname()
    if info == "server_addr":
        return sock.getpeername()
    return None


def _whole_records(data: bytes) -> int:
    """The length of the prefix of ``data`` made of whole TLS records, at most `_FEED_LIMIT` bytes
    unless its first record is longer."""
    at = 0
    while len(data) - at >= _HEADER:
        size = _HEADER + int.from_bytes(data[at + 3 : at + 5], "big")
        if len(data) - at < size or (at and at + size > _FEED_LIMIT):
            break
        at += size
    return at
