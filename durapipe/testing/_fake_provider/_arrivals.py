"""Arrival times taken by the kernel: the fake provider's listening socket, with ``SO_TIMESTAMPNS``.

The provider's event loop stamps a request when its handler runs, which on a loaded host can be
long after the bytes came in: requests sent a second apart then look closer together than they
were, and a rate check against those stamps fails for the fake provider's sake, not the client's.
The kernel stamps every packet as it receives it; a socket with ``SO_TIMESTAMPNS`` set hands the
stamp back with each ``recvmsg`` (for TCP: the receive time of the last packet the read consumed,
on ``CLOCK_REALTIME``, the clock of ``time.time()``). `StampedSocket` reads that way and keeps the
stamps, so a request's arrival is known to the microsecond however late the loop reads it.

Linux only (elsewhere the listener is a plain socket and requests have no kernel stamp).
"""

from __future__ import annotations

import socket
import struct
import sys
import time
import weakref
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# <asm-generic/socket.h>: SO_TIMESTAMPNS_OLD, which is also the control message's type. Python's
# socket module does not name it. The _OLD variant's timespec is two native longs.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
KERNEL_STAMPS = sys.platform == "linux"
"""Whether this platform's kernel stamps arrivals (else `StampedSocket` is never used)."""


class StampedSocket(socket.socket):
    """A TCP socket whose reads keep the kernel's receive time of what they read.

    Accepted connections are `StampedSocket` s too, registered by file descriptor in `accepted`
    so a request handler can find its connection's stamps (`take_stamp`).
    """

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self._stamps: list[float] = []
        self.accepted: weakref.WeakValueDictionary[int, StampedSocket] = (
            weakref.WeakValueDictionary()
        )

    def accept(self) -> tuple[socket.socket, object]:
        """Accept a connection as a `StampedSocket` (the stamping flag is inherited)."""
        fd, address = self._accept()  # type: ignore[attr-defined]
        connection = StampedSocket(self.family, self.type, self.proto, fileno=fd)
        if socket.getdefaulttimeout() is None and self.gettimeout():
            connection.setblocking(True)  # as socket.socket.accept does
        self.accepted[fd] = connection
        return connection, address

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        """`socket.recv`, keeping the kernel stamp of the bytes read."""
        data, ancillary, _, _ = self.recvmsg(bufsize, _ANCILLARY, flags)
        self._keep(ancillary)
        return data

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        """`socket.recv_into`, keeping the kernel stamp of the bytes read (TLS reads this way)."""
        view = memoryview(buffer)
        target = view[:nbytes] if nbytes else view
        count, ancillary, _, _ = self.recvmsg_into([target], _ANCILLARY, flags)
        self._keep(ancillary)
        return count

    def _keep(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack(data[: _TIMESPEC.size])
                self._stamps.append(seconds + nanoseconds / 1e9)

    def take_stamp(self) -> float | None:
        """The kernel time of the last read since the previous call (None if none), forgetting them.

        Called once a request has been read whole, it is when the kernel had received all of it:
        HTTP/1.1 clients send nothing more on a connection until the answer came (no pipelining),
        so every read since the previous request's call carried this request (or, over TLS, the
        handshake before it).
        """
        stamps, self._stamps = self._stamps, []
        return stamps[-1] if stamps else None


def stamped_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` whose connections keep kernel arrival stamps.

    The flag is set on the listener, so a request that arrives before the loop accepts its
    connection is stamped too (accepted sockets inherit it). Without kernel stamps (not Linux),
    a plain listening socket.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listener = StampedSocket(family, kind, proto) if KERNEL_STAMPS else socket.socket(family, kind)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if KERNEL_STAMPS:
            listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        listener.bind(address)
        listener.listen(1024)
        if isinstance(listener, StampedSocket):
            _wait_for_stamps(listener)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


STAMPS_WAIT_S = 10.0


def _wait_for_stamps(listener: StampedSocket) -> None:
    """Return once the kernel stamps what arrives on ``listener`` (or after `STAMPS_WAIT_S`).

    Linux switches arrival stamping on for the whole system only once some socket asks for it,
    and then later, from a work queue (``net_enable_timestamp``): when no other socket had the
    flag, the first packets after it was set arrive unstamped, for as long as the queue takes
    (over a second was seen on a loaded machine, the provider's first request then had no stamp).
    So: send a byte to ourselves until one comes back stamped. Immediate when stamping is on.
    """
    host, port = listener.getsockname()[:2]
    deadline = time.monotonic() + STAMPS_WAIT_S
    listener.settimeout(STAMPS_WAIT_S)
    while True:
        with socket.create_connection((host, port), timeout=STAMPS_WAIT_S) as probe:
            probe.sendall(b"?")
            connection, _ = listener.accept()
            with connection:
                connection.recv(1)
                listener.accepted.pop(connection.fileno(), None)
                if cast(StampedSocket, connection).take_stamp() is not None:
                    return
        if time.monotonic() >= deadline:
            return  # requests go unstamped: rates fall back to the loop's clock, as off Linux
        time.sleep(0.01)


def kernel_arrival(listener: socket.socket | None, connection: object) -> float | None:
    """The kernel stamp of the request just read on ``connection`` (see `take_stamp`), or None.

    Args:
        listener: The provider's listening socket (from `stamped_listener`).
        connection: ``transport.get_extra_info("socket")`` of the request.
    """
    if not isinstance(listener, StampedSocket) or connection is None:
        return None
    fileno = getattr(connection, "fileno", None)
    accepted = listener.accepted.get(fileno()) if callable(fileno) else None
    return accepted.take_stamp() if accepted is not None else None
