"""The fake provider times arrivals at the kernel: true to a known schedule however busy its loop."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from durapipe.testing import Call, FakeProvider, self_signed_certificate
from durapipe.testing._fake_provider._arrivals import StampedSocket, stamped_listener

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kernel arrival stamps are Linux's")

SPACING_S = 0.4  # the schedule: one request every 0.4 s, so any 1 s holds at most 3 of 4


def body(model: str = "gpt-x") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def _send(fake: FakeProvider, model: str = "gpt-x") -> tuple[socket.socket, float, float]:
    """Send one whole request on a new connection; return it and the times just before and just
    after its bytes left."""
    content = body(model)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(content), content)
    )
    connection = socket.create_connection(("127.0.0.1", fake.port))
    before = time.time()
    connection.sendall(request)
    return connection, before, time.time()


def test_arrivals_keep_their_schedule_while_the_provider_s_loop_is_stalled() -> None:
    """Four requests sent 0.4 s apart while the provider's loop is stuck: the loop reads them all
    at once when it comes back, the kernel's stamps still say when each one came."""
    stalled, release = threading.Event(), threading.Event()

    def stall(call: Call) -> None:  # hooks run on the provider's loop: this one holds it
        if call.seq == 1:
            stalled.set()
            release.wait(timeout=30)

    with FakeProvider() as fake:
        fake.on_response(stall)
        first, _, _ = _send(fake, "stall")
        assert stalled.wait(timeout=10), "the first request never reached the provider"
        sent: list[tuple[socket.socket, float, float]] = []
        for index in range(4):
            if index:
                time.sleep(SPACING_S)  # the known schedule under test, not a wait for the machine
            sent.append(_send(fake))
        released_at = time.time()
        release.set()
        fake.wait_until(lambda calls: sum(c.finished_at is not None for c in calls) == 5)
        for connection in [first, *(c for c, _, _ in sent)]:
            connection.close()
        scheduled = sorted(fake.calls_for("gpt-x"), key=lambda c: c.arrived_at)
        kernel = [c.kernel_received_at for c in scheduled]
        assert all(stamp is not None for stamp in kernel), kernel
        for call, (_, before, after) in zip(scheduled, sent, strict=True):
            # Loopback: the kernel stamps the bytes while they are being sent.
            assert before <= call.arrived_at <= after
            # The loop only saw it once it was free again.
            assert call.received_at >= released_at
        assert fake.max_rate_for("gpt-x", kernel=False) == 4  # the loop's clock bunches them all
        assert fake.max_rate_for("gpt-x") == 3  # the kernel's: 0.4 s apart, 3 in any second
        assert fake.ledger_snapshot()["arrivals_timed_by"] == "kernel"


def test_each_request_on_a_kept_alive_connection_has_its_own_stamp() -> None:
    with FakeProvider() as fake, httpx.Client(base_url=fake.base_url) as client:
        before = time.time()
        client.post("/chat/completions", content=body())
        between = time.time()
        client.post("/chat/completions", content=body())
        first, second = fake.calls
    assert first.peer_port == second.peer_port  # one connection
    assert first.kernel_received_at is not None and second.kernel_received_at is not None
    assert before <= first.kernel_received_at <= between <= second.kernel_received_at


def trusting(directory: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=directory / "cert.pem")


def test_arrivals_over_tls_are_stamped_too(tmp_path: Path) -> None:
    certificate = self_signed_certificate(tmp_path)
    with (
        FakeProvider(tls=certificate) as fake,
        httpx.Client(base_url=fake.base_url, verify=trusting(tmp_path)) as client,
    ):
        before = time.time()
        client.post("/chat/completions", content=body())
        after = time.time()
        (call,) = fake.calls
    assert call.kernel_received_at is not None
    assert before <= call.kernel_received_at <= after
    assert Call.from_dict(call.to_dict()).kernel_received_at == call.kernel_received_at


def test_a_new_listener_stamps_the_first_packet_it_gets() -> None:
    # Linux turns stamping on for the whole system from a work queue, some time after the first
    # socket asks: with no other stamping socket on the machine, a packet arriving just after a
    # provider started was unstamped (27 of 30 on a quiet machine; under load the delay reached a
    # provider's first request, and a rate check fell back to the loop's clock). The listener now
    # waits until the kernel stamps. On a machine where another socket stamps, this passes anyway.
    for _ in range(5):  # closing the listener may turn stamping off again: each starts afresh
        listener = stamped_listener("127.0.0.1", 0)
        try:
            listener.setblocking(True)
            with socket.create_connection(listener.getsockname()[:2]) as sender:
                sender.sendall(b"x")
                connection, _ = listener.accept()
                with connection:
                    connection.recv(1)
                    assert isinstance(connection, StampedSocket)
                    assert connection.take_stamp() is not None
        finally:
            listener.close()
        time.sleep(0.1)  # the scenario: the kernel's queue turns stamping off once none asks
