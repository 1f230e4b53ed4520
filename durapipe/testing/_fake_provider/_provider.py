"""The fake OpenAI-compatible provider: serving HTTP over the state of `_ProviderCore`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from durapipe.testing._fake_provider._actions import (
    _HANG_POLL_S,
    ATTEMPT_HEADER,
    Action,
    Drop,
    Hang,
    Malformed,
    Reply,
    SchemaInvalid,
    Status,
    ToolCalls,
)
from durapipe.testing._fake_provider._arrivals import kernel_arrival, stamped_listener
from durapipe.testing._fake_provider._core import _ProviderCore
from durapipe.testing._fake_provider._ledger import (
    PAID_OUTCOMES,
    _Answer,
    _Record,
    _Replay,
)
from durapipe.testing._fake_provider._wire import (
    _count_prompt_tokens,
    _count_tokens,
    _default_content,
    _error_body,
    _hang,
    _idempotency_key,
    _json_response,
    _peer_port,
    _schema_violation,
    _status_response,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------


class FakeProvider(_ProviderCore):
    """A fake OpenAI-compatible Chat Completions server for tests.

    The server listens on ``host:port`` (port 0 picks a free port) and serves
    ``POST /v1/chat/completions`` (JSON or ``stream: true`` SSE), ``POST /v1/images/generations``
    and ``POST /v1/ocr`` (scripted failures only),
    ``GET /v1/models`` and the ``/_fake/...`` control endpoints. It handles
    requests concurrently. All public methods are thread-safe.

    What a call gets, in order of precedence:
        1. the next action queued for its model by `script`;
        2. a random failure, if `set_failure_rate` is active and its seeded RNG
           says so;
        3. the default action (`set_default`, initially ``Reply()``).

    Example:
        ::

            import litellm
            from durapipe.testing.fake_provider import FakeProvider, Reply, Status

            with FakeProvider(prices={"gpt-x": (1e-6, 2e-6)}) as fake:
                fake.script("gpt-x", [Status(429, retry_after=1), Reply(content="hello")])
                kwargs = dict(
                    model="openai/gpt-x",
                    api_base=fake.base_url,
                    api_key="sk-fake",
                    messages=[{"role": "user", "content": "Say hello"}],
                    num_retries=0,
                    extra_headers={"X-Durapipe-Idempotency-Key": "step-1"},
                )
                try:
                    litellm.completion(**kwargs)
                except litellm.RateLimitError as exc:
                    assert exc.litellm_response_headers["retry-after"] == "1"
                response = litellm.completion(**kwargs)
                assert response.choices[0].message.content == "hello"
                assert [c.outcome for c in fake.calls] == ["status:429", "ok"]
                assert fake.calls[0].idempotency_key == "step-1"

    Args:
        host: Interface to bind.
        port: TCP port; 0 picks a free one (see `port`).
        prices: ``{model: (input_cost_per_token, output_cost_per_token)}``,
            see `register_prices_with_litellm`.
        ledger_path: If given, every finished call is appended to this JSONL
            file (one flushed line per call, see `read_ledger`).
        honour_idempotency: Model a provider (or gateway) that deduplicates by
            idempotency key, as payment APIs do: a request whose key already
            has a billed answer gets that answer again, recorded with outcome
            ``replayed`` and not billed; a request whose key is still being
            answered waits for that answer first. Off by default, so a ledger
            shows every repeated call as the real OpenAI API would bill it.
        tls: Serve ``https://`` with this certificate (see
            `durapipe.testing.self_signed_certificate`); plain HTTP by default.
    """

    def start(self) -> None:
        """Start serving on a new event loop in a daemon background thread.

        Returns once the server accepts connections.

        Raises:
            RuntimeError: If already started.
            OSError: If the port cannot be bound.
        """
        if self._thread is not None or self._runner is not None:
            raise RuntimeError("FakeProvider already started")
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                try:
                    loop.run_until_complete(self.start_async())
                except BaseException as exc:
                    errors.append(exc)
                    return
                finally:
                    ready.set()
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="durapipe-fake-provider", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            self._thread.join()
            self._thread = None
            raise errors[0]

    def stop(self) -> None:
        """Stop the background server started by `start` (idempotent).

        In-flight calls (e.g. `Hang`) are cancelled; they keep their outcome.
        """
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    async def start_async(self) -> None:
        """Start serving on the *running* event loop.

        Prefer the context managers; this is for embedding the server in an
        event loop you control (it then shares that loop).
        """
        if self._runner is not None:
            raise RuntimeError("FakeProvider already started")
        self._stopping = False
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/chat/completions", self._handle_chat)
        for path in ("/v1/images/generations", "/images/generations", "/v1/ocr", "/ocr"):
            app.router.add_post(path, self._handle_media)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/_fake/ledger", self._handle_ledger)
        app.router.add_post("/_fake/script", self._handle_script)
        app.router.add_post("/_fake/reset", self._handle_reset)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        ssl_context = self._tls.server_context() if self._tls is not None else None
        try:
            # Our own listening socket, so the kernel stamps each request's arrival (_arrivals.py).
            self._listener = stamped_listener(self._host, self._requested_port)
            site = web.SockSite(runner, self._listener, ssl_context=ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._close_listener()
            raise
        addresses = runner.addresses
        self._port = int(addresses[0][1])
        self._runner = runner
        if self._ledger_path is not None:
            self._ledger_file = open(  # noqa: ASYNC230, SIM115 - appending; closed in stop_async
                self._ledger_path, "a", encoding="utf-8"
            )

    async def stop_async(self) -> None:
        """Stop a server started with `start_async` (idempotent)."""
        runner = self._runner
        if runner is None:
            return
        self._stopping = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        self._close_listener()
        self._runner = None
        self._port = None
        with self._lock:
            if self._ledger_file is not None:
                self._ledger_file.close()
                self._ledger_file = None

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __enter__(self) -> FakeProvider:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeProvider:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- request handling ------------------------------------------------------

    def _next_action(self, model: str) -> Action:
        queue = self._scripts.get(model)
        if queue:
            return queue.pop(0)
        failure = self._failure
        if (
            failure is not None
            and (failure.models is None or model in failure.models)
            and failure.rng.random() < failure.rate
        ):
            return failure.rng.choice(failure.actions)
        return self._default

    def _begin(
        self,
        model: str,
        received_at: float,
        body: Mapping[str, Any],
        request: web.Request,
        raw: bytes | None = None,
        kernel_received_at: float | None = None,
    ) -> tuple[_Record, Action | _Replay]:
        messages_raw = body.get("messages")
        messages = (
            [dict(m) for m in messages_raw if isinstance(m, Mapping)]
            if isinstance(messages_raw, list)
            else []
        )
        key = _idempotency_key(request, body)
        attempt: int | None = None
        with contextlib.suppress(TypeError, ValueError):
            attempt = int(request.headers.get(ATTEMPT_HEADER, ""))
        with self._lock:
            self._seq += 1
            record = _Record(
                seq=self._seq,
                model=model,
                received_at=received_at,
                kernel_received_at=kernel_received_at,
                idempotency_key=key,
                attempt=attempt,
                prompt_tokens=_count_prompt_tokens(messages),
                messages=messages,
                headers=dict(request.headers),
                peer_port=_peer_port(request),
                body_sha256=hashlib.sha256(raw).hexdigest() if raw is not None else None,
                max_tokens=_max_tokens(body),
            )
            stored = self._answers.get(key) if self._honour_idempotency and key else None
            action: Action | _Replay = _Replay(stored) if stored else self._next_action(model)
            if self._honour_idempotency and key:
                self._keys_in_flight[key] = self._keys_in_flight.get(key, 0) + 1
            self._records.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            n = self._in_flight_by_model.get(model, 0) + 1
            self._in_flight_by_model[model] = n
            self._max_in_flight_by_model[model] = max(self._max_in_flight_by_model.get(model, 0), n)
            self._changed.notify_all()
        return record, action

    def _finish(self, record: _Record) -> None:
        with self._lock:
            record.finished_at = time.time()
            self._in_flight -= 1
            self._in_flight_by_model[record.model] -= 1
            key = record.idempotency_key
            if self._honour_idempotency and key:
                self._keys_in_flight[key] -= 1
                if record.answer is not None and record.outcome in PAID_OUTCOMES:
                    self._answers.setdefault(key, record.answer)
            if self._ledger_file is not None:
                self._ledger_file.write(json.dumps(record.snapshot().to_dict()) + "\n")
                self._ledger_file.flush()
            self._changed.notify_all()

    def _run_hooks(self, record: _Record, *, after_send: bool) -> None:
        with self._lock:
            hooks = list(self._after_hooks if after_send else self._before_hooks)
            snapshot = record.snapshot()
        for hook in hooks:
            try:
                hook(snapshot)
            except Exception:
                logger.exception("FakeProvider response hook %r failed", hook)

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        received_at = time.time()
        raw = await request.read()
        kernel_received_at = self._kernel_arrival(request)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError:
            return _json_response(
                400,
                _error_body(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                ),
            )
        model = str(body.get("model", ""))
        key = _idempotency_key(request, body)
        if self._honour_idempotency and key:
            await self._answered_or_free(key)
        record, action = self._begin(model, received_at, body, request, raw, kernel_received_at)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._respond(request, record, action, body)
        except ConnectionError:  # the client went away while the answer was being written
            record.outcome = "client_closed"
            return web.Response(status=499)
        except asyncio.CancelledError:
            if not self._stopping:
                record.outcome = "client_closed"
            raise
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._finish(record)

    async def _handle_media(self, request: web.Request) -> web.StreamResponse:
        """Image generation and OCR requests: recorded in the ledger like chat calls (by their
        ``model``) and answered with the scripted `Status`; any other action answers 501, since
        this fake makes no images or pages (the offline model and ``durapipe/local`` do)."""
        received_at = time.time()
        raw = await request.read()
        kernel_received_at = self._kernel_arrival(request)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError:
            return _json_response(
                400, _error_body("We could not parse the JSON body.", "invalid_request_error", None)
            )
        record, action = self._begin(
            str(body.get("model", "")), received_at, body, request, None, kernel_received_at
        )
        record.options = {k: v for k, v in body.items() if k != "model"}
        try:
            if isinstance(action, Status):
                return await self._respond(request, record, action, body)
            record.outcome = "status:501"
            return _json_response(
                501,
                _error_body(
                    "The fake provider answers image and OCR requests with failures only.",
                    "server_error",
                    None,
                ),
            )
        finally:
            self._finish(record)

    def _kernel_arrival(self, request: web.Request) -> float | None:
        """When the kernel had received this request whole (read just now, so every read on its
        connection since the previous request carried it), or None without kernel stamps."""
        transport = request.transport
        connection = transport.get_extra_info("socket") if transport is not None else None
        return kernel_arrival(self._listener, connection)

    async def _answered_or_free(self, key: str) -> None:
        """Wait while an earlier request with ``key`` is being answered (a deduplicating provider
        answers a concurrent repeat with the first answer, not a second completion)."""
        while True:
            with self._lock:
                if not self._keys_in_flight.get(key):
                    return
            await asyncio.sleep(_HANG_POLL_S)

    async def _respond(
        self,
        request: web.Request,
        record: _Record,
        action: Action | _Replay,
        body: Mapping[str, Any],
    ) -> web.StreamResponse:
        if isinstance(action, _Replay):
            return await self._send_answer(request, record, action.answer, body, "replayed")
        if isinstance(action, Hang):
            record.outcome = "hang"
            if await _hang(request, action.seconds):
                record.outcome = "client_closed"
                return web.Response(status=499)  # never reaches anyone
            return await self._send_completion(request, record, Reply(), body, "hang")
        if isinstance(action, Status):
            record.outcome = f"status:{action.code}"
            return await self._send(request, record, *_status_response(action, body))
        if isinstance(action, Drop):
            record.outcome = "dropped"
            self._run_hooks(record, after_send=False)
            transport = request.transport
            if transport is not None:
                transport.abort()
            self._run_hooks(record, after_send=True)
            return web.Response(status=499)  # written nowhere: the connection is gone
        if isinstance(action, Malformed):
            return await self._send_completion(
                request, record, Reply(content=action.content), body, "malformed"
            )
        if isinstance(action, SchemaInvalid):
            value = action.json if action.json is not None else _schema_violation(body)
            return await self._send_completion(
                request, record, Reply(content=json.dumps(value)), body, "schema_invalid"
            )
        if isinstance(action, ToolCalls):
            reply = Reply(content=action.content, tool_calls=action.calls)
            return await self._send_completion(request, record, reply, body, "tool_calls")
        return await self._send_completion(
            request, record, action, body, "tool_calls" if action.tool_calls else "ok"
        )

    async def _send_completion(
        self,
        request: web.Request,
        record: _Record,
        reply: Reply,
        body: Mapping[str, Any],
        outcome: str,
    ) -> web.StreamResponse:
        record.outcome = outcome
        content = reply.content
        if content is None and reply.json is not None:
            content = json.dumps(reply.json)
        tool_calls: list[dict[str, Any]] | None = None
        if reply.tool_calls:
            tool_calls = []
            for spec in reply.tool_calls:
                with self._lock:
                    self._tool_call_seq += 1
                    n = self._tool_call_seq
                arguments = spec.get("arguments", {})
                tool_calls.append(
                    {
                        "id": str(spec.get("id") or f"call_{n}"),
                        "type": "function",
                        "function": {
                            "name": str(spec["name"]),
                            "arguments": arguments
                            if isinstance(arguments, str)
                            else json.dumps(arguments),
                        },
                    }
                )
        elif content is None:
            content = _default_content(record.model, body)
        if reply.prompt_tokens is not None:
            record.prompt_tokens = reply.prompt_tokens
        if reply.completion_tokens is not None:
            record.completion_tokens = reply.completion_tokens
        else:
            produced = content or ""
            if tool_calls:
                produced += " ".join(tc["function"]["arguments"] for tc in tool_calls)
            record.completion_tokens = _count_tokens(produced)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        usage: dict[str, Any] = {
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "total_tokens": record.prompt_tokens + record.completion_tokens,
        }
        if reply.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens}
        answer = _Answer(
            completion_id=f"chatcmpl-fake-{record.seq}",
            created=int(record.received_at),
            message=message,
            finish_reason=reply.finish_reason or ("tool_calls" if tool_calls else "stop"),
            usage=usage,
        )
        return await self._send_answer(request, record, answer, body, outcome)

    async def _send_answer(
        self,
        request: web.Request,
        record: _Record,
        answer: _Answer,
        body: Mapping[str, Any],
        outcome: str,
    ) -> web.StreamResponse:
        record.outcome = outcome
        record.answer = answer
        record.prompt_tokens = answer.usage["prompt_tokens"]
        record.completion_tokens = answer.usage["completion_tokens"]
        if body.get("stream"):
            return await self._send_stream(request, record, answer, body)
        payload = {
            "id": answer.completion_id,
            "object": "chat.completion",
            "created": answer.created,
            "model": record.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": dict(answer.message),
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": dict(answer.usage),
        }
        return await self._send(request, record, 200, payload, {})

    async def _send(
        self,
        request: web.Request,
        record: _Record,
        status: int,
        payload: Mapping[str, Any] | str,
        headers: Mapping[str, str],
    ) -> web.StreamResponse:
        record.http_status = status
        self._run_hooks(record, after_send=False)
        response = _json_response(status, payload, headers, request_id=f"req_fake_{record.seq}")
        await response.prepare(request)
        await response.write_eof()
        self._run_hooks(record, after_send=True)
        return response

    async def _send_stream(
        self, request: web.Request, record: _Record, answer: _Answer, body: Mapping[str, Any]
    ) -> web.StreamResponse:
        completion_id, created, message = answer.completion_id, answer.created, answer.message
        finish_reason, usage = answer.finish_reason, answer.usage
        record.http_status = 200
        self._run_hooks(record, after_send=False)

        def chunk(delta: Mapping[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": record.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
                ],
            }

        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(message["tool_calls"])]
        events: list[dict[str, Any]] = [chunk(delta, None), chunk({}, finish_reason)]
        stream_options = body.get("stream_options")
        if isinstance(stream_options, Mapping) and stream_options.get("include_usage"):
            usage_chunk = chunk({}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = dict(usage)
            events.append(usage_chunk)
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "x-request-id": f"req_fake_{record.seq}"},
        )
        await response.prepare(request)
        for event in events:
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self._run_hooks(record, after_send=True)
        return response

    # -- control endpoints -----------------------------------------------------

    def ledger_snapshot(self) -> dict[str, Any]:
        """The ``GET /_fake/ledger`` document.

        Returns:
            ``{"calls": [Call.to_dict(), ...], "max_concurrency": int,
            "max_concurrency_by_model": {model: int},
            "max_rate_1s_by_model": {model: int}, "max_rate_1s_by_model_loop": {model: int},
            "arrivals_timed_by": "kernel" | "loop"}``: rates by the kernel's arrival stamps
            (`Call.arrived_at`), and for comparison by when the loop got to each request.
        """
        with self._lock:
            models = sorted(self._max_in_flight_by_model)
            return {
                "calls": [r.snapshot().to_dict() for r in self._records],
                "max_concurrency": self._max_in_flight,
                "max_concurrency_by_model": dict(self._max_in_flight_by_model),
                "max_rate_1s_by_model": {m: self.max_rate_for(m) for m in models},
                "max_rate_1s_by_model_loop": {
                    m: self.max_rate_for(m, kernel=False) for m in models
                },
                "arrivals_timed_by": "kernel" if self.kernel_stamps else "loop",
            }

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            names = sorted(set(self._prices) | set(self._scripts))
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]
        return _json_response(200, {"object": "list", "data": data})

    async def _handle_ledger(self, request: web.Request) -> web.StreamResponse:
        return _json_response(200, self.ledger_snapshot())

    async def _handle_script(self, request: web.Request) -> web.StreamResponse:
        try:
            document = await request.json()
            if not isinstance(document, dict):
                raise ValueError("script document must be a JSON object")
            self.load_script(document)
        except (ValueError, KeyError, TypeError) as exc:
            return _json_response(400, _error_body(str(exc), "invalid_request_error", None))
        return _json_response(200, {"ok": True})

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return _json_response(200, {"ok": True})


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    """The output tokens a request asked for at most, if it said (see `Call.max_tokens`)."""
    asked = body.get("max_tokens")
    if asked is None:
        asked = body.get("max_completion_tokens")
    return asked if isinstance(asked, int) and not isinstance(asked, bool) else None
