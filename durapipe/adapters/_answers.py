"""Provider answers kept the moment they arrive, before litellm parses them.

A step's checkpoint is written once its result is known: after litellm has parsed the provider's
answer and durapipe has checked it, which takes milliseconds (tens on a busy worker). A worker
killed in that time had received an answer it never stored, and the retry paid for it again. So
the HTTP client litellm uses for OpenAI-compatible providers goes through `KeepAnswers`: a request
that carries durapipe's idempotency key has its answer (status, headers and body, as received)
written to the checkpoint store as soon as the body is read, before anything parses it, and a
retry sending the same request gets that answer back without a provider call.

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
import typing

import httpx

from durapipe.adapters._litellm import litellm_module
from durapipe.stores._answers import IDEMPOTENCY_HEADER, AnswerStore, answer_key, answer_store


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
    client._transport = KeepAnswers(client._transport)
    client._mounts = {
        pattern: KeepAnswers(transport) if transport is not None else None
        for pattern, transport in client._mounts.items()
    }
    litellm.aclient_session = client  # type: ignore[attr-defined]


class KeepAnswers(httpx.AsyncBaseTransport):
    """An httpx transport that keeps the answers of durapipe's requests (see the module docs)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, or answer it from the store; keep a new answer before returning it."""
        store = answer_store()
        step = request.headers.get(IDEMPOTENCY_HEADER)
        if store is None or step is None:
            return await self.inner.handle_async_request(request)
        key = answer_key(step, await request.aread())
        kept = await _call(store, "get_answer", key)
        if kept is not None:
            return _decode(kept, request)
        response = await self.inner.handle_async_request(request)
        if response.status_code != 200 or "event-stream" in response.headers.get(
            "content-type", ""
        ):
            return response
        try:
            # The raw stream, not `aiter_raw`, which closes the connection (an await that lets other
            # tasks run) before handing over the end of the body. From the read of the last bytes
            # to the write below nothing suspends (h11 parses what has arrived; a write to a free
            # SQLite file is synchronous), so a worker that has read an answer has kept it.
            stream = typing.cast(httpx.AsyncByteStream, response.stream)
            body = b"".join([chunk async for chunk in stream])
            await _call(store, "put_answer", key, _encode(response, body))
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


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
    document = {
        "status": response.status_code,
        "headers": headers,
        "body": base64.b64encode(body).decode(),
    }
    return json.dumps(document).encode()


def _decode(kept: bytes, request: httpx.Request) -> httpx.Response:
    document = json.loads(kept)
    return httpx.Response(
        document["status"],
        headers=[(name, value) for name, value in document["headers"]],
        content=base64.b64decode(document["body"]),
        request=request,
    )
