"""``https://`` providers: the answer's ciphertext stays in the socket until the answer is kept (TLS
in user space), certificates are verified as strictly as litellm's own transport does, and what
held TLS does not cover takes litellm's path."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from bench.chaos import unread_ports
from durapipe.activities import run_llm
from durapipe.adapters import _answers
from durapipe.adapters._litellm import litellm_module
from durapipe.runtime import LlmCall
from durapipe.spec import LlmPipe, ModelDeck, ModelEntry
from durapipe.stores import SqliteCheckpoints
from durapipe.testing import Certificate, FakeProvider, Reply, self_signed_certificate


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


def call_to(run_id: str = "r1") -> LlmCall:
    pipe = LlmPipe(model="openai/gpt-keep", prompt="Name a colour.")
    return LlmCall(run_id=run_id, path="colour", pipe_name="colour", pipe=pipe)


def deck_for(base_url: str) -> ModelDeck:
    return ModelDeck.of({"keep": ModelEntry(model="openai/gpt-keep", api_base=base_url)})


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
