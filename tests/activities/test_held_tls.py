"""``https://`` providers: the answer's ciphertext stays in the socket until the answer is kept (TLS
in user space), certificates are verified as strictly as litellm's own transport does, and what
held TLS does not cover takes litellm's path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpcore
import httpx
import pytest
from temporalio.exceptions import ApplicationError

from bench.chaos import unread_ports
from durapipe.activities import run_llm
from durapipe.adapters import _answers
from durapipe.adapters._held_pool import HeldPool
from durapipe.adapters._held_reads import HeldReads, release
from durapipe.adapters._litellm import litellm_module
from durapipe.stores import SqliteCheckpoints
from durapipe.testing import Certificate, FakeProvider, Reply, self_signed_certificate
from tests.chain import write_chain
from tests.support import call_to, deck_for, run_cli


def litellm_context() -> ssl.SSLContext:
    """The SSL context litellm's transport (and so held TLS) verifies providers with."""
    litellm_module()
    from litellm.llms.custom_httpx.http_handler import get_ssl_configuration

    context = get_ssl_configuration()
    assert isinstance(context, ssl.SSLContext)
    return context


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certificate]:
    """A certificate the worker trusts. A worker process would be started with SSL_CERT_FILE; this
    process built its client already, so the certificate joins the CA bundle litellm loaded."""
    certificate = self_signed_certificate(tmp_path_factory.mktemp("trusted"))
    litellm_context().load_verify_locations(certificate.cert_file)
    yield certificate


class WatchingStore(SqliteCheckpoints):
    """Notes, at each answer it keeps, which connections to the provider hold unread bytes."""

    provider_port = 0
    unread_at_keep: list[frozenset[int]]

    def put_answer_nowait(self, key: str, answer: bytes) -> None:
        self.unread_at_keep.append(unread_ports(os.getpid(), self.provider_port))
        super().put_answer_nowait(key, answer)


async def test_an_https_answer_stays_in_the_socket_until_it_is_kept(
    tmp_path: Path, trusted: Certificate
) -> None:
    store = WatchingStore(tmp_path / "checkpoints.sqlite")
    store.unread_at_keep = []
    async with FakeProvider(tls=trusted) as fake:
        assert fake.base_url.startswith("https://")
        store.provider_port = fake.port
        deck = deck_for(fake.base_url)
        first = await run_llm(call_to(), 1, store, deck)
        await run_llm(call_to(run_id="r2"), 1, store, deck)  # the same pooled connection
        after = unread_ports(os.getpid(), fake.port)
    # While the answer is written to the store its ciphertext is still unread in the socket (a
    # worker killed before the write leaves it there, visibly in flight); once kept, it is consumed.
    assert len(store.unread_at_keep) == 2
    assert all(ports for ports in store.unread_at_keep), store.unread_at_keep
    assert not after
    assert first.output == "Fake gpt-keep reply to: Name a colour."
    assert [c.outcome for c in fake.calls] == ["ok", "ok"]
    assert fake.calls[0].peer_port == fake.calls[1].peer_port  # the held connection was reused


async def test_an_answer_of_many_tls_records_arrives_whole(
    tmp_path: Path, trusted: Certificate
) -> None:
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    content = "".join(f"line {n}: {'colour ' * 12}\n" for n in range(4000))  # ~350 KB: ~22 records
    async with FakeProvider(tls=trusted) as fake:
        fake.script("gpt-keep", [Reply(content=content)])
        result = await run_llm(call_to(), 1, store, deck_for(fake.base_url))
    assert result.output == content


@pytest.mark.parametrize("transport", ["held TLS", "litellm's transport"])
async def test_a_provider_whose_certificate_is_not_trusted_is_refused_naming_its_endpoint(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _answers.install()
    session = litellm_module().aclient_session
    if transport == "litellm's transport":  # what a proxied or HTTP/2 provider goes through
        monkeypatch.setattr(session._transport, "schemes", ("http",))
    untrusted = self_signed_certificate(tmp_path / "untrusted")
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    async with FakeProvider(tls=untrusted) as fake:
        endpoint = fake.url
        with pytest.raises(ApplicationError) as refused:
            await run_llm(call_to(), 1, store, deck_for(fake.base_url))
    assert refused.value.type == "durapipe.UntrustedCertificate"
    assert refused.value.non_retryable  # retrying does not make a certificate trusted
    assert refused.value.message == (
        f"openai/gpt-keep: the provider at {endpoint} presented a TLS "
        "certificate this worker does not trust (self-signed certificate); give the worker the "
        "CA that signed it (SSL_CERT_FILE=/path/to/ca.pem)"
    )
    assert fake.calls == []  # nothing was sent to it


async def test_a_trusted_certificate_for_another_host_is_refused(
    tmp_path: Path, trusted: Certificate
) -> None:
    # Signed by a CA the worker trusts, but made for another name: the hostname check refuses it.
    other = self_signed_certificate(tmp_path / "other", hosts=("provider.example",))
    litellm_context().load_verify_locations(other.cert_file)
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    async with FakeProvider(tls=other) as fake:
        endpoint = fake.url
        with pytest.raises(ApplicationError) as refused:
            await run_llm(call_to(), 1, store, deck_for(fake.base_url))
    assert refused.value.type == "durapipe.UntrustedCertificate"
    assert endpoint.startswith("https://127.0.0.1:") and endpoint in str(refused.value)
    assert "mismatch" in str(refused.value)
    assert fake.calls == []


def test_held_tls_uses_litellm_s_ssl_context_and_steps_aside_where_it_does_not_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = _answers._tls_context()
    assert context is litellm_context()  # the same CA bundle, ciphers and verification
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # Verification switched off for litellm: held TLS does not run unverified, litellm's path does.
    monkeypatch.setenv("SSL_VERIFY", "False")
    assert _answers._tls_context() is None
    monkeypatch.delenv("SSL_VERIFY")
    # HTTP/2 on: held connections speak HTTP/1.1 only, so https stays on litellm's transport.
    monkeypatch.setenv("LITELLM_HTTP2", "True")
    assert _answers._tls_context() is None


def test_a_request_through_a_proxy_takes_litellm_s_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "direct.example")
    keep = _answers.KeepAnswers(httpx.AsyncHTTPTransport(), held=httpx.AsyncHTTPTransport(),
                                schemes=("http", "https"))  # fmt: skip
    assert not keep.holds(httpx.URL("https://api.example/v1/chat/completions"))  # via the proxy
    assert not keep.holds(httpx.URL("http://gateway.example/v1/chat/completions"))
    assert keep.holds(httpx.URL("https://direct.example/v1/chat/completions"))  # NO_PROXY
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("HTTP_PROXY")
    fresh = _answers.KeepAnswers(httpx.AsyncHTTPTransport(), held=httpx.AsyncHTTPTransport(),
                                 schemes=("http", "https"))  # fmt: skip
    assert fresh.holds(httpx.URL("https://api.example/v1/chat/completions"))


def serve_split_record(
    listener: socket.socket, certificate: Certificate, plaintext: bytes, done: threading.Event
) -> None:
    """A TLS server (SSLObject over its own socket) that sends one record of ``plaintext`` in two
    TCP writes: its first 7 bytes, then, once the client has taken those, the rest."""
    conn, _ = listener.accept()
    with conn:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = certificate.server_context().wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn.sendall(outgoing.read())
                incoming.write(conn.recv(65536))
        conn.sendall(outgoing.read())  # the end of the handshake and TLS 1.3 session tickets
        tls.write(plaintext)
        record = outgoing.read()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # 7 bytes go at once
        conn.sendall(record[:7])
        deadline = time.monotonic() + 5
        while _queued(conn, peer=True) and time.monotonic() < deadline:
            done.wait(0.005)  # until the client has taken the start of the record
        conn.sendall(record[7:])
        done.wait(10)


def _queued(conn: socket.socket, *, peer: bool) -> int:
    """Bytes waiting unread in the peer's receive queue (via /proc), or in ``conn``'s own."""
    local, remote = conn.getsockname()[1], conn.getpeername()[1]
    port = remote if peer else local
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and int(fields[2].split(":")[1], 16) == (
            local if peer else remote
        ):
            return int(fields[4].split(":")[1], 16)
    return 0


async def test_the_bytes_that_complete_a_record_stay_in_the_socket_until_released(
    tmp_path: Path,
) -> None:
    certificate = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(cafile=certificate.cert_file)
    plaintext = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = threading.Thread(
            target=serve_split_record, args=(listener, certificate, plaintext, done)
        )
        server.start()
        try:
            raw = await HeldReads().connect_tcp("127.0.0.1", port, timeout=5)
            stream = await raw.start_tls(context, server_hostname="127.0.0.1", timeout=5)
            sock = stream.get_extra_info("socket")
            received = await stream.read(65536, timeout=10)
            # Decrypted and handed over, but the bytes that completed the record are still in the
            # socket: a process killed now leaves this answer visibly unread.
            held = len(sock.recv(65536, socket.MSG_PEEK))
            release(cast(dict[str, object], {"network_stream": stream}))
            left = _queued(sock, peer=False)
        finally:
            done.set()
            server.join(10)
        await stream.aclose()
    assert received == plaintext
    assert held > 0 and held == len(plaintext) + 22 - 7  # TLS 1.3 AES-GCM: 5 + n + 1 + 16 bytes
    assert left == 0


async def test_a_run_against_an_untrusted_provider_fails_in_one_sentence(tmp_path: Path) -> None:
    untrusted = self_signed_certificate(tmp_path / "tls")
    async with FakeProvider(tls=untrusted) as fake:
        endpoint = fake.url
        pipeline = write_chain(tmp_path / "chain.yaml", fake.base_url, 1)
        env = {"DURAPIPE_CHECKPOINTS": str(tmp_path / "cp.sqlite")}
        args = ("run", "chain", "--file", str(pipeline), "--local", "--input", "topic=t")
        refused = await asyncio.to_thread(run_cli, *args, env=env)
        env["SSL_CERT_FILE"] = str(untrusted.cert_file)  # the worker trusts it: the run succeeds
        trusted = await asyncio.to_thread(run_cli, *args, env=env)
        calls = len(fake.calls)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: step 's1' (llm on model openai/gpt-s1) failed: durapipe.UntrustedCertificate: "
        f"openai/gpt-s1: the provider at {endpoint} presented a TLS certificate this worker does "
        "not trust (self-signed certificate); give the worker the CA that signed it "
        "(SSL_CERT_FILE=/path/to/ca.pem)"
    )
    assert "Traceback" not in refused.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert calls == 1  # the refused run sent nothing


def serve_extra_record(
    listener: socket.socket, certificate: Certificate, connections: list[int]
) -> None:
    """A TLS server (SSLObject over its own sockets) that answers the first request with its
    answer and, in the same TCP write, one more record: a second answer nobody asked for. Later
    requests, on any connection, get ``second``."""
    answered = 0
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # the listener closed: the test is over
            return
        connections.append(1)
        # A reset (the client closing a connection with bytes unread) ends that connection only.
        with conn, contextlib.suppress(OSError):
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = certificate.server_context().wrap_bio(incoming, outgoing, server_side=True)
            request = b""
            while True:
                try:
                    data = tls.read(65536)
                    if not data:  # the client's close_notify
                        break
                    request += data
                except ssl.SSLWantReadError:
                    conn.sendall(outgoing.read())
                    data = conn.recv(65536)
                    if not data:
                        break
                    incoming.write(data)
                    continue
                except ssl.SSLError:  # close_notify, or a cut connection
                    break
                if b"\r\n\r\n" not in request:
                    continue
                request = b""
                answered += 1
                if answered == 1:
                    tls.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                    record = outgoing.read()  # the answer's own record, then the extra one
                    tls.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale")
                    conn.sendall(record + outgoing.read())
                else:
                    tls.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond")
                    conn.sendall(outgoing.read())


async def test_a_record_sent_after_a_tls_answer_leaves_the_connection_unused(
    tmp_path: Path,
) -> None:
    certificate = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(cafile=certificate.cert_file)
    connections: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = threading.Thread(
            target=serve_extra_record, args=(listener, certificate, connections)
        )
        server.start()
        url = httpcore.URL(f"https://127.0.0.1:{port}/")
        try:
            async with HeldPool(HeldReads(), ssl_context=context) as pool:
                bodies = []
                for _ in range(2):
                    request = httpcore.Request(
                        "GET", url, headers=[(b"Host", b"127.0.0.1")],
                        extensions={"timeout": {"connect": 10.0, "read": 10.0, "write": 10.0}},
                    )  # fmt: skip
                    response = await pool.handle_async_request(request)
                    bodies.append(await response.aread())
                    await response.aclose()
        finally:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the server's accept (close does not)
            await asyncio.to_thread(server.join, 10)
    # The record after the answer was decrypted with it but never read: the next request goes
    # on a new connection and gets its own answer, not the one left in the old connection.
    assert bodies == [b"first", b"second"]
    assert len(connections) == 2
