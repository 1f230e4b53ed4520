"""Closing a held TLS connection says goodbye (``close_notify``) without ever waiting on the
provider, and a worker's warm-up leaves nothing of itself to run inside its first step."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from durapipe.adapters import _answers
from durapipe.adapters._held_reads import HeldReads
from durapipe.adapters._litellm import litellm_module
from durapipe.ops import warm_up
from durapipe.testing import Certificate, self_signed_certificate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed_certificate(tmp_path_factory.mktemp("close-tls"))


def serve_once(
    listener: socket.socket, certificate: Certificate, seen: list[object], *, reset: bool
) -> None:
    """Accept one TLS connection; note how it ended (b"" at the client's close_notify, else the
    error a bare TCP close raises); with ``reset``, drop it at once (RST) instead."""
    conn, _ = listener.accept()
    # suppress_ragged_eofs=False: a TCP close without close_notify raises instead of reading b"".
    tls = certificate.server_context().wrap_socket(
        conn, server_side=True, suppress_ragged_eofs=False
    )
    with tls:
        if reset:
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            seen.append("reset")
            return
        try:
            seen.append(tls.recv(1024))
        except ssl.SSLError as error:
            seen.append(type(error).__name__)


async def _held_tls_to(port: int, certificate: Certificate) -> object:
    context = ssl.create_default_context(cafile=certificate.cert_file)
    raw = await HeldReads().connect_tcp("127.0.0.1", port, timeout=5)
    return await raw.start_tls(context, server_hostname="127.0.0.1", timeout=5)


@contextlib.contextmanager
def serving(
    certificate: Certificate, *, reset: bool
) -> Iterator[tuple[int, threading.Thread, list[object]]]:
    """`serve_once` on a thread: its port, the thread (joined at the end), what it saw."""
    seen: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve_once, args=(listener, certificate, seen),
                                  kwargs={"reset": reset})  # fmt: skip
        server.start()
        try:
            yield listener.getsockname()[1], server, seen
        finally:
            server.join(10)


async def test_closing_a_held_tls_connection_sends_close_notify(certificate: Certificate) -> None:
    with serving(certificate, reset=False) as (port, server, seen):
        stream = await _held_tls_to(port, certificate)
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.to_thread(server.join, 10)
    assert seen == [b""]  # the provider read a clean end of the TLS session


async def test_closing_on_a_dead_provider_neither_waits_nor_fails(
    certificate: Certificate,
) -> None:
    with serving(certificate, reset=True) as (port, server, seen):
        stream = await _held_tls_to(port, certificate)
        await asyncio.to_thread(server.join, 10)  # the provider is gone (RST sent)
        sock = stream.get_extra_info("socket")  # type: ignore[attr-defined]
        async with asyncio.timeout(2):
            await stream.aclose()  # type: ignore[attr-defined]
    assert seen == ["reset"] and sock.fileno() == -1


async def test_warm_up_runs_one_answer_through_a_held_connection_and_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served: list[bytes] = []
    answer = _answers._answer_warm_up

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(b"request")
        await answer(reader, writer)

    monkeypatch.setattr(_answers, "_answer_warm_up", counting)
    _answers.install()
    transport = litellm_module().aclient_session._transport
    assert isinstance(transport, _answers.KeepAnswers) and transport.held is not None
    # The pool is the process's: earlier tests may have left idle connections in it.
    pool = transport.held._pool  # type: ignore[attr-defined]
    connections = set(map(id, pool.connections))
    before = asyncio.all_tasks()
    await warm_up()
    # The warm-up's request reached its server and its answer came back over a held connection,
    # which was closed; litellm's logging tasks of the warm-up call have all run.
    assert served == [b"request"]
    assert set(map(id, pool.connections)) <= connections
    assert asyncio.all_tasks() - before == set()
