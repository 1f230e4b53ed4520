"""Provider answers kept the moment they arrive, before litellm parses them.

A step's checkpoint is written once its result is known: after litellm has parsed the provider's
answer and durapipe has checked it, which takes milliseconds (tens on a busy worker). A worker
killed in that time had received an answer it never stored, and the retry paid for it again. So
the HTTP client litellm uses for OpenAI-compatible providers goes through `KeepAnswers`: a request
that carries durapipe's idempotency key has its answer (status, headers and body, as received)
written to the checkpoint store as soon as the body is read, before anything parses it, and a
retry sending the same request gets that answer back without a provider call.

Keyed requests go over durapipe's own connections (`durapipe.adapters._held_reads`), whose reads
leave the bytes in the socket until the answer is kept: an answer is always either unread in the
socket or kept, never only in the worker's memory. For ``https://`` that means TLS in user space
(`durapipe.adapters._held_tls`), with litellm's SSL context (its CA bundle and ciphers). What it
does not cover goes through litellm's own transport, as before: requests to a provider behind a
proxy from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, minus ``NO_PROXY``),
and ``https://`` when litellm's SSL verification is off (``SSL_VERIFY=False``) or HTTP/2 is on
(``LITELLM_HTTP2``). There the answer is
kept in the same turn of the event loop as durapipe's code receives the last bytes (a window of the
time between the read and the keep remains, see the README).

The transport also tells a call's provider limit when its request leaves (`request_sent`, see
`durapipe.stores._limits`): over a held connection once its first bytes are written; over litellm's
transport (aiohttp, which durapipe cannot reach into) when the request is handed to it.

An answer is kept under the idempotency key and a hash of the request body (a re-ask within one
step sends other messages under the same key). Only successful, non-streamed answers are kept.
Requests without the key (anything durapipe did not send) pass through untouched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import ssl
import typing
import urllib.request
from collections.abc import Mapping
from typing import Any

import httpcore
import httpx

from durapipe.adapters import _held_reads
from durapipe.adapters._held_pool import HeldPool
from durapipe.adapters._litellm import litellm_module
from durapipe.runtime._spend import replayed
from durapipe.stores._answers import IDEMPOTENCY_HEADER, AnswerStore, answer_key, answer_store
from durapipe.stores._limits import request_sent

# litellm providers whose requests go through `litellm.aclient_session` (its OpenAI client).
_CARRIED_PROVIDERS = frozenset({"openai", "custom_openai"})


@functools.cache
def install() -> None:
    """Make litellm's OpenAI-compatible client go through `KeepAnswers` (once per process).

    The client is the one litellm would build itself (its aiohttp transport, its SSL and proxy
    settings), with its transports wrapped. A session the application set itself
    (``litellm.aclient_session``) is left alone.
    """
    litellm = litellm_module()
    if getattr(litellm, "aclient_session", None) is not None:
        return
    try:
        from litellm.llms.openai.common_utils import BaseOpenAILLM

        client = BaseOpenAILLM.get_async_http_client()
    except (ImportError, AttributeError):  # another litellm layout: httpx's own transport
        client = None
    if client is None:
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))
    # httpx keeps the transport and the proxy mounts in these two attributes (stable since 0.18).
    tls = _tls_context()
    schemes = ("http", "https") if tls is not None else ("http",)
    client._transport = KeepAnswers(client._transport, held=_held_transport(tls), schemes=schemes)
    client._mounts = {
        pattern: KeepAnswers(transport) if transport is not None else None
        for pattern, transport in client._mounts.items()
    }
    litellm.aclient_session = client  # type: ignore[attr-defined]


async def warm() -> None:
    """Build the answer-keeping client and run one request over a held connection, offline.

    The first request over the held pool imports and builds its machinery, and runs its code
    for the first time (tens of milliseconds; more on a busy host). A worker does it before it
    polls, not inside its first step's provider limit, where it would delay that request past the
    moment the limit let it go. The request goes to a server of this process on 127.0.0.1, which
    answers it at once, so the whole HTTP/1.1 path runs (sending, the head's parsing, the held read
    and its release), the same code an ``https://`` answer runs over TLS. Building the client builds
    the SSL context of ``https://`` providers, its CA store loaded. (A TLS handshake made here in
    memory, against a throwaway certificate, was measured and left out: a first real handshake
    took as long after it.)
    """
    install()
    session = getattr(litellm_module(), "aclient_session", None)
    transport = getattr(session, "_transport", None)
    if not isinstance(transport, KeepAnswers) or transport.held is None:
        return
    try:
        server = await asyncio.start_server(_answer_warm_up, "127.0.0.1", 0)
    except OSError:  # no loopback to listen on (a locked-down sandbox): the first step pays it
        return
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        with contextlib.suppress(httpx.HTTPError, httpcore.NetworkError, OSError, TimeoutError):
            async with asyncio.timeout(10):  # a worker's start never hangs on its warm-up
                response = await transport.held.handle_async_request(
                    httpx.Request("POST", url, content=b"{}")
                )
                await response.aread()
                _held_reads.release(response.extensions)
                await response.aclose()
    finally:
        server.close()
        await server.wait_closed()


async def _answer_warm_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The warm-up request's server: one answer, then the connection closes."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the body, b"{}"
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
            b"connection: close\r\n\r\n{}"
        )
        await writer.drain()
    writer.close()


def carries(model: str, settings: Mapping[str, Any]) -> bool:
    """True when a request to ``model`` goes through `KeepAnswers`, which reports when it leaves.

    A provider limit then starts the call's lease at that moment instead of when room is taken.
    Another provider (litellm reaches it through its own client) or a session the application
    set itself: False.
    """
    install()
    litellm = litellm_module()
    session = getattr(litellm, "aclient_session", None)
    if not isinstance(getattr(session, "_transport", None), KeepAnswers):
        return False
    try:
        provider = litellm.get_llm_provider(model, api_base=settings.get("api_base"))[1]
    except Exception:  # an unknown model fails later, with a proper error
        return False
    return provider in _CARRIED_PROVIDERS


def _tls_context() -> ssl.SSLContext | None:
    """The SSL context litellm's own transport verifies providers with, or None when held TLS must
    not be used: verification is off (``SSL_VERIFY=False``: not weakened here, left to litellm's
    path), HTTP/2 is on (held connections speak HTTP/1.1), or this litellm has no such setting."""
    try:
        from litellm.llms.custom_httpx.http_handler import get_ssl_configuration, http2_enabled
    except ImportError:
        return None
    if http2_enabled():
        return None
    context = get_ssl_configuration()
    if not isinstance(context, ssl.SSLContext) or context.verify_mode != ssl.CERT_REQUIRED:
        return None
    return context


def _held_transport(tls: ssl.SSLContext | None = None) -> httpx.AsyncHTTPTransport:
    """httpx's transport over `HeldReads` connections, ``https://`` ones verified with ``tls``
    (the held connection adds ALPN ``http/1.1``, SNI and the hostname check; see the module
    docs)."""
    transport = httpx.AsyncHTTPTransport()
    # httpx builds its httpcore pool in `_pool` (stable since 0.18) and takes no network backend.
    # No cap on connections in use: as many as the worker's concurrent steps. Idle ones are kept
    # as litellm's own transport keeps them (its aiohttp connector's limit and keep-alive), so a
    # fan-out finds the connections of the last one: with 100 kept for 5 s, a 200-way fan-out a
    # few seconds after the last one opened 200 connections again, where litellm's opened none.
    limit, keepalive = _litellm_connection_limits()
    transport._pool = HeldPool(  # type: ignore[assignment]
        _held_reads.HeldReads(),
        ssl_context=tls,
        max_keepalive_connections=limit,
        keepalive_expiry=keepalive,
    )
    return transport


def _litellm_connection_limits() -> tuple[int, float]:
    """How many idle connections litellm's aiohttp transport keeps, and for how long (seconds);
    its environment settings (``AIOHTTP_CONNECTOR_LIMIT``, ``AIOHTTP_KEEPALIVE_TIMEOUT``) apply."""
    try:
        from litellm import constants
    except ImportError:
        return 1000, 15.0
    limit = getattr(constants, "AIOHTTP_CONNECTOR_LIMIT", 1000)
    keepalive = getattr(constants, "AIOHTTP_KEEPALIVE_TIMEOUT", 15)
    return int(limit) if limit else 1000, float(keepalive)


class KeepAnswers(httpx.AsyncBaseTransport):
    """An httpx transport that keeps the answers of durapipe's requests (see the module docs).

    Args:
        inner: The transport of every request it does not send over ``held``.
        held: The transport of keyed requests whose URL scheme is in ``schemes`` (see
            `durapipe.adapters._held_reads`); ``None`` for a proxy's mount, whose requests go to
            the proxy through ``inner``.
        schemes: The URL schemes ``held`` carries.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        held: httpx.AsyncBaseTransport | None = None,
        schemes: tuple[str, ...] = ("http",),
    ) -> None:
        self.inner = inner
        self.held = held
        self.schemes = schemes
        self._proxied: dict[tuple[str, str], bool] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, or answer it from the store; keep a new answer before returning it."""
        store = answer_store()
        step = request.headers.get(IDEMPOTENCY_HEADER)
        if store is None or step is None:
            request_sent()  # handed over: the nearest durapipe can see to the bytes leaving
            return await self.inner.handle_async_request(request)
        key = answer_key(step, await request.aread())
        kept = await _call(store, "get_answer", key)
        if kept is not None:
            replayed()  # paid for once, by the attempt that received it: not billed again
            return _decode(kept, request)
        transport = self.held if self.held is not None and self.holds(request.url) else self.inner
        if transport is self.inner:
            request_sent()  # a held connection says so itself, once the bytes are written
        response = await transport.handle_async_request(request)
        if response.status_code != 200 or "event-stream" in response.headers.get(
            "content-type", ""
        ):
            return response
        try:
            # The raw stream, not `aiter_raw`, which closes the connection (an await that lets other
            # tasks run) before handing over the end of the body. Over held connections the last
            # bytes stay in the socket until the answer is kept; over litellm's transport nothing
            # suspends from durapipe's code receiving them to the write below (the body has been
            # parsed by then; a write to a free SQLite file is synchronous).
            stream = typing.cast(httpx.AsyncByteStream, response.stream)
            body = b"".join([chunk async for chunk in stream])
            await _call(store, "put_answer", key, _encode(response, body))
            _held_reads.release(response.extensions)  # kept: the socket may let the bytes go
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
            request=request,
        )

    def holds(self, url: httpx.URL) -> bool:
        """Whether a keyed request to ``url`` goes over a held connection: its scheme is held and
        no proxy from the environment applies to it (the proxy's requests take litellm's path)."""
        if url.scheme not in self.schemes:
            return False
        proxied = self._proxied.get((url.scheme, url.host))
        if proxied is None:
            proxied = self._proxied[url.scheme, url.host] = _env_proxy(url) is not None
        return not proxied

    async def aclose(self) -> None:
        """Close the wrapped transports."""
        await self.inner.aclose()
        if self.held is not None:
            await self.held.aclose()


def _env_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``...),
    read as litellm's aiohttp transport reads it (with httpx's, proxies are its mounts instead)."""
    if urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(url.scheme) or proxies.get("all") or None


async def _call(store: AnswerStore, method: str, *args: object) -> bytes | None:
    """``store.<method>(*args)``: at once through its ``<method>_nowait`` twin if it has one and
    it need not wait (a SQLite file), else on a thread (a lock held elsewhere, a network store)."""
    nowait = getattr(store, f"{method}_nowait", None)
    if nowait is not None:
        with contextlib.suppress(BlockingIOError):
            result: bytes | None = nowait(*args)
            return result
    result = await asyncio.to_thread(getattr(store, method), *args)
    return result


def _encode(response: httpx.Response, body: bytes) -> bytes:
    headers = [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in response.headers.raw
    ]
    document: dict[str, object] = {"status": response.status_code, "headers": headers}
    # A text body (the JSON of a chat answer) is kept as a string, not in base64 (a third more
    # bytes, and the store no longer adds a second base64 layer over the whole document).
    try:
        document["text"] = body.decode()
    except UnicodeDecodeError:
        document["body"] = base64.b64encode(body).decode()
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _decode(kept: bytes, request: httpx.Request) -> httpx.Response:
    document = json.loads(kept)
    text = document.get("text")
    # Answers kept before text bodies existed hold "body" in base64.
    content = text.encode() if text is not None else base64.b64decode(document["body"])
    return httpx.Response(
        document["status"],
        headers=[(name, value) for name, value in document["headers"]],
        content=content,
        request=request,
    )
