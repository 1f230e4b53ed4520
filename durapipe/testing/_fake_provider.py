"""A fake OpenAI-compatible Chat Completions provider for tests.

`FakeProvider` is a small real HTTP server (aiohttp) on ``127.0.0.1`` that speaks
enough of the OpenAI Chat Completions API for ``litellm`` (and the ``openai`` SDK)
to talk to it for real::

    with FakeProvider() as fake:
        response = litellm.completion(
            model="openai/gpt-x",  # any name after "openai/"
            api_base=fake.base_url,  # http://127.0.0.1:<port>/v1
            api_key="sk-fake",
            messages=[{"role": "user", "content": "hi"}],
            num_retries=0,
        )

Every call is recorded in a ledger (`Call` records) and the answer for each call
can be scripted per model name (`Reply`, `Status`, `Hang`, `Drop`, `Malformed`,
`SchemaInvalid`, `ToolCalls`), or made to fail at random with a seeded rate.

Passing the idempotency key and attempt number:
    The server reads the idempotency key from the ``X-Durapipe-Idempotency-Key``
    request header (falling back to ``metadata.idempotency_key`` in the JSON body,
    for raw HTTP clients) and the attempt number from ``X-Durapipe-Attempt``.
    With litellm, pass them as ``extra_headers``; litellm hands them to the
    ``openai`` SDK, which sends them as ordinary HTTP headers to ``api_base``::

        await litellm.acompletion(
            model="openai/gpt-x",
            api_base=fake.base_url,
            api_key="sk-fake",
            messages=messages,
            extra_headers={
                "X-Durapipe-Idempotency-Key": key,
                "X-Durapipe-Attempt": str(attempt),
            },
        )

    (``metadata={...}`` given to litellm is *not* forwarded to the provider; it is
    litellm's own logging metadata.)

    ``FakeProvider(honour_idempotency=True)`` (``--honour-idempotency``) models a
    provider or gateway that deduplicates by that key: a repeated key gets the
    stored answer again, recorded as ``replayed`` and not billed. Without it,
    every completion is billed, as the OpenAI API does.

Retries:
    Pass ``num_retries=0`` to litellm when a test needs exactly one HTTP request
    per call: litellm then also sets the ``openai`` SDK's ``max_retries`` to 0.
    Without it, the SDK itself retries connection errors, 408/409/429 and 5xx
    responses (2 retries by default), and the ledger shows 3 calls.

What litellm raises (``openai/`` models, litellm 1.106):
    ``Status(401)`` -> ``AuthenticationError``; ``Status(404)`` ->
    ``NotFoundError``; ``Status(400)`` -> ``BadRequestError``;
    ``Status(400, error_code="context_length_exceeded")`` ->
    ``ContextWindowExceededError``; ``Status(400,
    error_code="content_policy_violation")`` -> ``ContentPolicyViolationError``;
    ``Status(429)`` -> ``RateLimitError``; ``Status(500)`` ->
    ``InternalServerError``; ``Status(502)`` -> ``BadGatewayError``;
    ``Status(503)`` -> ``ServiceUnavailableError``; `Drop` ->
    ``InternalServerError`` ("Connection error."); `Hang` beyond the client's
    ``timeout`` -> ``Timeout``.

Retry-After on litellm exceptions:
    For a `Status` with ``retry_after`` the server sends a ``Retry-After``
    header. On the litellm exception it is in
    ``exc.litellm_response_headers["retry-after"]`` (an ``httpx.Headers``);
    ``exc.response.headers`` is empty for these mapped exceptions.

Three ways to run it:
    * ``with FakeProvider() as fake:`` -- the server runs on its own event loop
      in a background thread, so synchronous tests and any other event loop can
      call it.
    * ``async with FakeProvider() as fake:`` -- the same, started and stopped
      without blocking the caller's event loop.
    * As a separate process, for scenarios where workers in several processes
      share one provider::

          python -m durapipe.testing.fake_provider --port 0 \\
              [--script FILE.json] [--ledger FILE.jsonl] \\
              [--failure-rate 0.2 --seed 1] [--honour-idempotency]
              [--max-concurrency-report]

      It prints ``listening on http://127.0.0.1:PORT/v1`` and serves until
      SIGTERM/SIGINT. The ledger is appended to the JSONL file (one flushed line
      per finished call, see `read_ledger`). Control endpoints:
      ``GET /_fake/ledger`` (calls and concurrency figures as JSON),
      ``POST /_fake/script`` (a script document, see `FakeProvider.load_script`)
      and ``POST /_fake/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias

from aiohttp import web

from durapipe.testing._schema_sample import sample_from_schema

__all__ = [
    "PAID_OUTCOMES",
    "Action",
    "Call",
    "Drop",
    "FakeProvider",
    "Hang",
    "Malformed",
    "Reply",
    "ResponseHook",
    "SchemaInvalid",
    "Status",
    "ToolCalls",
    "action_from_dict",
    "action_to_dict",
    "main",
    "read_ledger",
]

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "X-Durapipe-Idempotency-Key"
ATTEMPT_HEADER = "X-Durapipe-Attempt"

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_HANG_POLL_S = 0.02


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A normal ``200`` chat completion.

    Attributes:
        content: The assistant message text. When neither ``content`` nor
            ``json`` is given the server makes one up: a schema-valid JSON
            instance for ``response_format`` ``json_schema`` requests, a small
            JSON object for ``json_object`` requests, otherwise the deterministic
            text ``"Fake <model> reply to: <last user message>"``.
        json: A JSON-serialisable value sent as the message content
            (``json.dumps(json)``).
        tool_calls: Tool calls to include, as for `ToolCalls`. The outcome is
            then ``tool_calls`` and ``finish_reason`` is ``"tool_calls"``.
        prompt_tokens: Reported ``usage.prompt_tokens``; by default the number
            of ``\\w+|[^\\w\\s]`` matches over the request's message contents.
        completion_tokens: Reported ``usage.completion_tokens``; by default the
            same count over the produced content (or tool-call arguments).
    """

    content: str | None = None
    json: Any = None
    tool_calls: Sequence[Mapping[str, Any]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Status:
    """An HTTP error response with an OpenAI-style error body.

    The body is ``{"error": {"message", "type", "param", "code"}}`` with the
    message/type/code OpenAI uses for that status, e.g. 401 ``invalid_api_key``,
    404 ``model_not_found``, 429 ``rate_limit_exceeded``, 500/503
    ``server_error``. ``error_code`` selects a specific flavour:

    * ``Status(400, error_code="context_length_exceeded")`` -- "This model's
      maximum context length is ..." (litellm: ``ContextWindowExceededError``).
    * ``Status(400, error_code="content_policy_violation")`` -- request rejected
      by the safety system (litellm: ``ContentPolicyViolationError``).
    * ``Status(429, error_code="insufficient_quota")`` -- quota exhausted.

    Attributes:
        code: The HTTP status code.
        retry_after: If set, sent as the ``Retry-After`` header (seconds).
        body: Replaces the whole response body: a mapping is sent as JSON, a
            string as-is.
        error_code: Selects the error flavour (see above); it becomes
            ``error.code`` in the body.
        message: Replaces the default ``error.message``.
        headers: Extra response headers, e.g. ``{"x-should-retry": "false"}`` or
            ``{"retry-after-ms": "1500"}`` (OpenAI's hints).
    """

    code: int
    retry_after: float | None = None
    body: Mapping[str, Any] | str | None = None
    error_code: str | None = field(default=None, kw_only=True)
    message: str | None = field(default=None, kw_only=True)
    headers: Mapping[str, str] | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Hang:
    """Wait ``seconds`` before answering like `Reply` (outcome ``hang``).

    Use it to exceed client timeouts. If the client disconnects while the
    server waits, the call is recorded with outcome ``client_closed``.

    Attributes:
        seconds: How long to wait before replying.
    """

    seconds: float


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending any response (outcome ``dropped``)."""


@dataclass(frozen=True)
class Malformed:
    """A ``200`` completion whose content is not valid JSON (outcome ``malformed``).

    Attributes:
        content: The message content to send.
    """

    content: str = "{not json"


@dataclass(frozen=True)
class SchemaInvalid:
    """A ``200`` completion with valid JSON that violates the requested schema.

    By default the content is ``{}`` when the ``response_format`` schema has
    required properties, otherwise a value of the wrong JSON type. Outcome
    ``schema_invalid``.

    Attributes:
        json: If given, this value (JSON-encoded) is sent instead.
    """

    json: Any = None


@dataclass(frozen=True)
class ToolCalls:
    """An assistant message with ``tool_calls`` (outcome ``tool_calls``).

    Attributes:
        calls: One mapping per call: ``{"name": str, "arguments": dict | str}``
            and optionally ``"id"``; ids default to ``call_<n>`` with ``n``
            counting up from 1 over the server's lifetime.
        content: Optional assistant text sent alongside the tool calls.
    """

    calls: Sequence[Mapping[str, Any]]
    content: str | None = None


Action: TypeAlias = Reply | Status | Hang | Drop | Malformed | SchemaInvalid | ToolCalls
"""Anything the fake provider can be scripted to do for one call."""

_ACTION_TYPES: dict[str, type[Any]] = {
    "reply": Reply,
    "status": Status,
    "hang": Hang,
    "drop": Drop,
    "malformed": Malformed,
    "schema_invalid": SchemaInvalid,
    "tool_calls": ToolCalls,
}


def action_to_dict(action: Action) -> dict[str, Any]:
    """Serialise an action to the JSON form used by script files.

    Args:
        action: The action.

    Returns:
        ``{"type": <kind>, **fields}``, e.g. ``{"type": "status", "code": 429,
        "retry_after": 1}``; fields left at their default are omitted.
    """
    kind = next(k for k, cls in _ACTION_TYPES.items() if isinstance(action, cls))
    out: dict[str, Any] = {"type": kind}
    defaults = type(action)
    for name in action.__dataclass_fields__:
        value = getattr(action, name)
        fdef = defaults.__dataclass_fields__[name].default
        if value is not fdef and value != fdef:
            out[name] = _jsonable(value)
    return out


def action_from_dict(data: Mapping[str, Any]) -> Action:
    """Build an action from its JSON form (see `action_to_dict`).

    Args:
        data: A mapping with a ``"type"`` key (``reply``, ``status``, ``hang``,
            ``drop``, ``malformed``, ``schema_invalid``, ``tool_calls``) and the
            action's fields.

    Returns:
        The action.

    Raises:
        ValueError: If the type is unknown or the fields do not fit.
    """
    fields = dict(data)
    kind = fields.pop("type", None)
    cls = _ACTION_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown fake provider action type: {kind!r}")
    try:
        action: Action = cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad fields for action {kind!r}: {exc}") from exc
    return action


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------

PAID_OUTCOMES = frozenset({"ok", "hang", "malformed", "schema_invalid", "tool_calls"})
"""Outcomes a real provider would bill: it produced a completion (``hang``
means the answer was sent after the delay, the client still being there)."""


@dataclass(frozen=True)
class Call:
    """One request received by the fake provider.

    Attributes:
        seq: 1-based sequence number, in order of arrival.
        model: The ``model`` of the request body (litellm strips ``openai/``).
        received_at: ``time.time()`` when the request arrived.
        finished_at: ``time.time()`` when handling finished; ``None`` while the
            call is still in flight.
        outcome: ``ok``, ``status:<code>``, ``hang``, ``client_closed``,
            ``dropped``, ``malformed``, ``schema_invalid``, ``tool_calls`` or
            ``replayed`` (a repeated idempotency key answered from the stored
            answer, not billed; see ``honour_idempotency``).
        idempotency_key: From the ``X-Durapipe-Idempotency-Key`` header, else
            ``metadata.idempotency_key`` of the body, else ``None``.
        attempt: From the ``X-Durapipe-Attempt`` header (if an integer).
        prompt_tokens: Reported (or, for errors, counted) prompt tokens.
        completion_tokens: Reported completion tokens (0 when nothing was sent).
        messages: The request's ``messages``.
        headers: The request's HTTP headers.
        http_status: The status sent, or ``None`` if no response was sent.
        peer_port: The client's TCP port (one connection's requests share it).
    """

    seq: int
    model: str
    received_at: float
    finished_at: float | None
    outcome: str
    idempotency_key: str | None
    attempt: int | None
    prompt_tokens: int
    completion_tokens: int
    messages: list[dict[str, Any]]
    headers: dict[str, str]
    http_status: int | None
    peer_port: int | None = None

    @property
    def paid(self) -> bool:
        """Whether a real provider would bill this call (see `PAID_OUTCOMES`)."""
        return self.outcome in PAID_OUTCOMES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (the JSONL ledger line format)."""
        return {
            "seq": self.seq,
            "model": self.model,
            "received_at": self.received_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "idempotency_key": self.idempotency_key,
            "attempt": self.attempt,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "messages": self.messages,
            "headers": self.headers,
            "http_status": self.http_status,
            "peer_port": self.peer_port,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Call:
        """Build a `Call` from `to_dict` output (e.g. a JSONL ledger line)."""
        return cls(
            seq=int(data["seq"]),
            model=str(data["model"]),
            received_at=float(data["received_at"]),
            finished_at=None if data.get("finished_at") is None else float(data["finished_at"]),
            outcome=str(data["outcome"]),
            idempotency_key=data.get("idempotency_key"),
            attempt=data.get("attempt"),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            messages=list(data.get("messages", [])),
            headers=dict(data.get("headers", {})),
            http_status=data.get("http_status"),
            peer_port=data.get("peer_port"),
        )


def read_ledger(path: str | os.PathLike[str]) -> list[Call]:
    """Read a JSONL ledger written by a provider started with a ledger path.

    Args:
        path: The ``--ledger`` / ``ledger_path`` file.

    Returns:
        The finished calls in the order they finished (a partially written
        last line is ignored).
    """
    calls: list[Call] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                calls.append(Call.from_dict(json.loads(line)))
            except (ValueError, KeyError):
                continue
    return calls


ResponseHook: TypeAlias = Callable[[Call], None]
"""A hook called with a snapshot of the `Call` whose response is being sent."""


@dataclass(frozen=True)
class _Answer:
    """A completion as sent, kept to answer a repeated idempotency key the same way."""

    completion_id: str
    created: int
    message: Mapping[str, Any]
    finish_reason: str
    usage: Mapping[str, int]


@dataclass(frozen=True)
class _Replay:
    """Send a stored answer again (outcome ``replayed``)."""

    answer: _Answer


@dataclass
class _Record:
    seq: int
    model: str
    received_at: float
    idempotency_key: str | None
    attempt: int | None
    prompt_tokens: int
    messages: list[dict[str, Any]]
    headers: dict[str, str]
    outcome: str = "ok"
    completion_tokens: int = 0
    finished_at: float | None = None
    http_status: int | None = None
    answer: _Answer | None = None
    peer_port: int | None = None

    def snapshot(self) -> Call:
        return Call(
            seq=self.seq,
            model=self.model,
            received_at=self.received_at,
            finished_at=self.finished_at,
            outcome=self.outcome,
            idempotency_key=self.idempotency_key,
            attempt=self.attempt,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            messages=self.messages,
            headers=self.headers,
            http_status=self.http_status,
            peer_port=self.peer_port,
        )


@dataclass
class _FailureRate:
    rate: float
    rng: random.Random
    actions: tuple[Action, ...]
    models: frozenset[str] | None


_DEFAULT_FAILURES: tuple[Action, ...] = (Status(500), Status(429, retry_after=1), Drop())


# ---------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------


class FakeProvider:
    """A fake OpenAI-compatible Chat Completions server for tests.

    The server listens on ``host:port`` (port 0 picks a free port) and serves
    ``POST /v1/chat/completions`` (JSON or ``stream: true`` SSE),
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
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prices: Mapping[str, tuple[float, float]] | None = None,
        ledger_path: str | os.PathLike[str] | None = None,
        honour_idempotency: bool = False,
    ) -> None:
        self._host = host
        self._honour_idempotency = honour_idempotency
        self._answers: dict[str, _Answer] = {}
        self._keys_in_flight: dict[str, int] = {}
        self._requested_port = port
        self._port: int | None = None
        self._prices: dict[str, tuple[float, float]] = dict(prices or {})
        self._ledger_path = Path(ledger_path) if ledger_path is not None else None
        self._ledger_file: IO[str] | None = None

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._scripts: dict[str, list[Action]] = {}
        self._default: Action = Reply()
        self._failure: _FailureRate | None = None
        self._records: list[_Record] = []
        self._seq = 0
        self._tool_call_seq = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._in_flight_by_model: dict[str, int] = {}
        self._max_in_flight_by_model: dict[str, int] = {}
        self._before_hooks: list[ResponseHook] = []
        self._after_hooks: list[ResponseHook] = []

        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on (valid once started)."""
        if self._port is None:
            raise RuntimeError("FakeProvider is not running")
        return self._port

    @property
    def url(self) -> str:
        """The server root, ``http://HOST:PORT``."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``api_base``, ``http://HOST:PORT/v1``."""
        return f"{self.url}/v1"

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
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/_fake/ledger", self._handle_ledger)
        app.router.add_post("/_fake/script", self._handle_script)
        app.router.add_post("/_fake/reset", self._handle_reset)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
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
        self._runner = None
        self._port = None
        with self._lock:
            if self._ledger_file is not None:
                self._ledger_file.close()
                self._ledger_file = None

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

    # -- scripting ---------------------------------------------------------

    def script(self, model: str, responses: Iterable[Action]) -> None:
        """Queue actions for the next calls to ``model``, consumed in order.

        Appends to anything already queued for that model. Once the queue is
        empty the model falls back to the random failures / default action.

        Args:
            model: The model name as the server sees it (``"gpt-x"`` for
                litellm's ``"openai/gpt-x"``).
            responses: The actions, one per call.
        """
        actions = list(responses)
        for action in actions:
            _check_action(action)
        with self._lock:
            self._scripts.setdefault(model, []).extend(actions)

    def set_default(self, action: Action) -> None:
        """Set what calls get when nothing is scripted (initially ``Reply()``).

        Args:
            action: The action used for every such call.
        """
        _check_action(action)
        with self._lock:
            self._default = action

    def set_failure_rate(
        self,
        rate: float,
        *,
        seed: int | None = None,
        actions: Sequence[Action] | None = None,
        models: Iterable[str] | None = None,
    ) -> None:
        """Make a random fraction of unscripted calls fail.

        For every call not served from a `script` queue, a ``random.Random(seed)``
        draw decides whether it fails and, if so, which of ``actions`` it gets;
        the same seed and call order give the same failing calls.

        Args:
            rate: Probability in ``[0, 1]``; 0 turns random failures off.
            seed: RNG seed (``None``: unseeded).
            actions: Failure actions to pick from; default
                ``[Status(500), Status(429, retry_after=1), Drop()]``.
            models: Only calls to these models can fail (default: all).
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        chosen = tuple(actions) if actions else _DEFAULT_FAILURES
        for action in chosen:
            _check_action(action)
        with self._lock:
            if rate == 0.0:
                self._failure = None
            else:
                self._failure = _FailureRate(
                    rate=rate,
                    rng=random.Random(seed),
                    actions=chosen,
                    models=frozenset(models) if models is not None else None,
                )

    def load_script(self, document: Mapping[str, Any]) -> None:
        """Apply a JSON script document (the ``--script`` / ``POST /_fake/script`` format).

        ``models`` replaces all queued scripts; ``default`` and
        ``failure_rate`` are only changed when present (``"failure_rate":
        null`` turns random failures off)::

            {
              "models": {"gpt-x": [{"type": "status", "code": 429, "retry_after": 1},
                                   {"type": "reply", "content": "hi"}]},
              "default": {"type": "reply"},
              "failure_rate": {"rate": 0.2, "seed": 1,
                               "actions": [{"type": "status", "code": 500}],
                               "models": ["gpt-x"]}
            }

        Args:
            document: The parsed JSON document.

        Raises:
            ValueError: If an action is malformed.
        """
        models = {
            str(model): [action_from_dict(a) for a in actions]
            for model, actions in dict(document.get("models", {})).items()
        }
        default = (
            action_from_dict(document["default"]) if document.get("default") is not None else None
        )
        with self._lock:
            self._scripts = models
            if default is not None:
                self._default = default
        if "failure_rate" in document:
            fr = document["failure_rate"]
            if fr is None:
                self.set_failure_rate(0.0)
            else:
                acts = fr.get("actions")
                self.set_failure_rate(
                    float(fr["rate"]),
                    seed=fr.get("seed"),
                    actions=[action_from_dict(a) for a in acts] if acts else None,
                    models=fr.get("models"),
                )

    def reset(self) -> None:
        """Forget calls, stored answers, scripts, random failures, hooks and concurrency figures.

        The default action goes back to ``Reply()``; the JSONL ledger file (if
        any) is left as is; prices are kept.
        """
        with self._lock:
            self._scripts.clear()
            self._default = Reply()
            self._failure = None
            self._records.clear()
            self._answers.clear()
            self._seq = 0
            self._max_in_flight = self._in_flight
            self._max_in_flight_by_model = {
                m: n for m, n in self._in_flight_by_model.items() if n > 0
            }
            self._before_hooks.clear()
            self._after_hooks.clear()
            self._changed.notify_all()

    # -- hooks ---------------------------------------------------------------

    def on_response(
        self, callback: ResponseHook, *, after_send: bool = False
    ) -> Callable[[], None]:
        """Register a hook called for each call that gets a response.

        With ``after_send=False`` the hook runs right after the response has
        been decided and *before* any byte of it is sent; with
        ``after_send=True`` it runs after the whole body was written and
        flushed (for `Drop`: after the connection was closed). It is not called
        for calls whose client went away first (``client_closed``).

        Hooks run synchronously in the server's thread and block the server
        while they run (so e.g. a hook can SIGKILL a worker process between
        "provider answered" and "the worker recorded it"). Exceptions are
        logged and ignored.

        Args:
            callback: Receives a `Call` snapshot (``finished_at`` is ``None``;
                ``outcome`` and token counts are final).
            after_send: Run after sending instead of before.

        Returns:
            A function that unregisters the hook.
        """
        hooks = self._after_hooks if after_send else self._before_hooks
        with self._lock:
            hooks.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                hooks.remove(callback)

        return remove

    # -- ledger ----------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """A copy of the ledger, in order of arrival (in-flight calls included)."""
        with self._lock:
            return [r.snapshot() for r in self._records]

    def calls_for(self, model: str) -> list[Call]:
        """The calls to ``model``, in order of arrival."""
        return [c for c in self.calls if c.model == model]

    def paid_calls(self) -> list[Call]:
        """The calls a real provider would bill (outcome in `PAID_OUTCOMES`)."""
        return [c for c in self.calls if c.paid]

    @property
    def max_concurrency(self) -> int:
        """The largest number of chat requests in flight at the same time."""
        with self._lock:
            return self._max_in_flight

    def max_concurrency_for(self, model: str) -> int:
        """The largest number of requests for ``model`` in flight at once."""
        with self._lock:
            return self._max_in_flight_by_model.get(model, 0)

    def max_rate(self, window_s: float = 1.0) -> int:
        """The largest number of calls received within any ``window_s`` window.

        Args:
            window_s: Window length in seconds (half-open ``[t, t + window_s)``).
        """
        return _max_in_window([c.received_at for c in self.calls], window_s)

    def max_rate_for(self, model: str, window_s: float = 1.0) -> int:
        """The largest number of calls for ``model`` received within any ``window_s`` window."""
        return _max_in_window([c.received_at for c in self.calls_for(model)], window_s)

    def wait_until(
        self, predicate: Callable[[list[Call]], bool], timeout: float = 5.0
    ) -> list[Call]:
        """Block until ``predicate(calls)`` holds, re-checking on every ledger change.

        Args:
            predicate: Called with a `calls` snapshot.
            timeout: Seconds to wait at most.

        Returns:
            The snapshot that satisfied the predicate.

        Raises:
            TimeoutError: If it did not hold within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                snapshot = [r.snapshot() for r in self._records]
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("FakeProvider.wait_until: condition not met in time")
                self._changed.wait(remaining)

    async def wait_until_async(
        self,
        predicate: Callable[[list[Call]], bool],
        timeout: float = 5.0,
    ) -> list[Call]:
        """`wait_until` for async code (waits in a worker thread)."""
        return await asyncio.to_thread(self.wait_until, predicate, timeout)

    # -- prices ----------------------------------------------------------------

    @property
    def prices(self) -> dict[str, tuple[float, float]]:
        """``{model: (input_cost_per_token, output_cost_per_token)}`` as given."""
        return dict(self._prices)

    def register_prices_with_litellm(self) -> None:
        """Register `prices` with litellm so its cost accounting knows these models.

        Registers ``openai/<model>`` (and ``<model>`` with provider ``openai``)
        via ``litellm.register_model``, after which ``litellm.completion_cost``
        on a response from this provider is ``input * prompt_tokens + output *
        completion_tokens``. Imports litellm lazily, with
        ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so the import stays offline.
        """
        if "litellm" not in sys.modules:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        import litellm

        entries: dict[str, Any] = {}
        for model, (input_cost, output_cost) in self._prices.items():
            info = {
                "input_cost_per_token": input_cost,
                "output_cost_per_token": output_cost,
                "litellm_provider": "openai",
                "mode": "chat",
                "max_tokens": 1_000_000,
                "max_input_tokens": 1_000_000,
                "max_output_tokens": 1_000_000,
                "supports_function_calling": True,
                "supports_response_schema": True,
            }
            entries[f"openai/{model}"] = dict(info)
            entries[model] = dict(info)
        if entries:
            litellm.register_model(entries)

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
                idempotency_key=key,
                attempt=attempt,
                prompt_tokens=_count_prompt_tokens(messages),
                messages=messages,
                headers=dict(request.headers),
                peer_port=_peer_port(request),
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
        record, action = self._begin(model, received_at, body, request)
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
        answer = _Answer(
            completion_id=f"chatcmpl-fake-{record.seq}",
            created=int(record.received_at),
            message=message,
            finish_reason="tool_calls" if tool_calls else "stop",
            usage={
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "total_tokens": record.prompt_tokens + record.completion_tokens,
            },
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
            "max_rate_1s_by_model": {model: int}}``.
        """
        with self._lock:
            models = set(self._max_in_flight_by_model)
            return {
                "calls": [r.snapshot().to_dict() for r in self._records],
                "max_concurrency": self._max_in_flight,
                "max_concurrency_by_model": dict(self._max_in_flight_by_model),
                "max_rate_1s_by_model": {m: self.max_rate_for(m) for m in sorted(models)},
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


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _max_in_window(times: Iterable[float], window_s: float) -> int:
    """The most of ``times`` inside any half-open window ``[t, t + window_s)``."""
    ordered = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _check_action(action: object) -> None:
    if not isinstance(action, Reply | Status | Hang | Drop | Malformed | SchemaInvalid | ToolCalls):
        raise TypeError(f"not a fake provider action: {action!r}")


async def _hang(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds``; return True as soon as the client has gone away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(remaining, _HANG_POLL_S))


def _json_response(
    status: int,
    payload: Mapping[str, Any] | str,
    headers: Mapping[str, str] | None = None,
    *,
    request_id: str | None = None,
) -> web.Response:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    all_headers = dict(headers or {})
    if request_id is not None:
        all_headers.setdefault("x-request-id", request_id)
    return web.Response(
        status=status, text=text, content_type="application/json", headers=all_headers
    )


def _error_body(
    message: str, type_: str | None, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _status_response(
    action: Status, body: Mapping[str, Any]
) -> tuple[int, Mapping[str, Any] | str, dict[str, str]]:
    headers: dict[str, str] = dict(action.headers or {})
    if action.retry_after is not None:
        ra = action.retry_after
        headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
    if action.body is not None:
        return action.code, action.body, headers
    model = str(body.get("model", ""))
    code, err_code = action.code, action.error_code
    param: str | None = None
    if code == 400 and err_code == "context_length_exceeded":
        prompt = _count_prompt_tokens(body.get("messages") or [])
        message = (
            "This model's maximum context length is 8192 tokens. However, your messages "
            f"resulted in {max(prompt, 8193)} tokens. Please reduce the length of the messages."
        )
        type_: str | None = "invalid_request_error"
        param = "messages"
    elif code == 400 and err_code in ("content_policy_violation", "content_filter"):
        message = (
            "Your request was rejected as a result of our safety system. Your prompt may "
            "contain text that is not allowed by our safety system."
        )
        type_ = "invalid_request_error"
        err_code = "content_policy_violation"
    elif code == 400:
        message, type_ = "Invalid request.", "invalid_request_error"
    elif code == 401:
        message = (
            "Incorrect API key provided: sk-fake. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        type_, err_code = "invalid_request_error", err_code or "invalid_api_key"
    elif code == 403:
        message = "You are not allowed to sample from this model"
        type_, err_code = "invalid_request_error", err_code or "model_not_allowed"
    elif code == 404:
        message = f"The model `{model}` does not exist or you do not have access to it."
        type_, err_code = "invalid_request_error", err_code or "model_not_found"
    elif code == 429 and err_code == "insufficient_quota":
        message = "You exceeded your current quota, please check your plan and billing details."
        type_ = "insufficient_quota"
    elif code == 429:
        wait = f"{action.retry_after:g}s" if action.retry_after is not None else "20ms"
        message = (
            f"Rate limit reached for {model} in organization org-fake on requests per min "
            f"(RPM): Limit 60, Used 60, Requested 1. Please try again in {wait}."
        )
        type_, err_code = "requests", err_code or "rate_limit_exceeded"
    elif code == 503:
        message = "The engine is currently overloaded, please try again later."
        type_ = "server_error"
    elif code >= 500:
        message = "The server had an error while processing your request. Sorry about that!"
        type_ = "server_error"
    else:
        message, type_ = f"HTTP {code}", "invalid_request_error"
    if action.message is not None:
        message = action.message
    return code, _error_body(message, type_, err_code, param), headers


def _count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _count_prompt_tokens(messages: Iterable[Any]) -> int:
    return sum(_count_tokens(_message_text(m)) for m in messages if isinstance(m, Mapping))


def _response_schema(body: Mapping[str, Any]) -> tuple[str | None, Any]:
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping):
        return None, None
    kind = fmt.get("type")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return "json_schema", schema if schema is not None else {}
    if kind == "json_object":
        return "json_object", None
    return None, None


def _default_content(model: str, body: Mapping[str, Any]) -> str:
    kind, schema = _response_schema(body)
    messages = body.get("messages")
    last_user = ""
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, Mapping) and m.get("role") == "user":
                last_user = _message_text(m)
                break
    if kind == "json_schema":
        return json.dumps(sample_from_schema(schema, f"{model} {last_user}"))
    if kind == "json_object":
        return json.dumps({"reply": f"fake {model} reply", "echo": last_user})
    return f"Fake {model} reply to: {last_user}" if last_user else f"Fake {model} reply."


def _schema_violation(body: Mapping[str, Any]) -> Any:
    _, schema = _response_schema(body)
    if not isinstance(schema, Mapping):
        return {"unexpected": True} if schema is None else []
    resolved = _deref(schema)
    kind = resolved.get("type")
    if kind == "object" or "properties" in resolved:
        return {} if resolved.get("required") else []
    wrong: dict[str, Any] = {
        "array": {},
        "string": 0,
        "integer": "not a number",
        "number": "not a number",
        "boolean": "not a boolean",
        "null": 0,
    }
    return wrong.get(str(kind), {"unexpected": True})


def _deref(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema a root ``$ref`` (``#/$defs/Name``) points at, or the schema itself."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return target if isinstance(target, Mapping) else {}
    return schema


def _peer_port(request: web.Request) -> int | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else None


def _idempotency_key(request: web.Request, body: Mapping[str, Any]) -> str | None:
    """The ``X-Durapipe-Idempotency-Key`` header, else ``metadata.idempotency_key`` of the body."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("idempotency_key") is not None:
            key = str(metadata["idempotency_key"])
    return key


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m durapipe.testing.fake_provider",
        description="Run a fake OpenAI-compatible chat completions provider until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--script", type=Path, help="JSON script document to load at start")
    parser.add_argument("--ledger", type=Path, help="append one JSON line per call to this file")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="random failure rate")
    parser.add_argument("--seed", type=int, default=None, help="seed for --failure-rate")
    parser.add_argument(
        "--honour-idempotency",
        action="store_true",
        help="answer a repeated idempotency key with its stored answer, unbilled",
    )
    parser.add_argument(
        "--max-concurrency-report",
        action="store_true",
        help="on exit, print a 'max concurrency report: {json}' line",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    provider = FakeProvider(
        host=args.host,
        port=args.port,
        ledger_path=args.ledger,
        honour_idempotency=args.honour_idempotency,
    )
    if args.script is not None:
        provider.load_script(json.loads(args.script.read_text(encoding="utf-8")))
    if args.failure_rate:
        provider.set_failure_rate(args.failure_rate, seed=args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await provider.start_async()
    print(f"listening on {provider.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await provider.stop_async()
        if args.max_concurrency_report:
            report = {
                "max_concurrency": provider.max_concurrency,
                "max_concurrency_by_model": provider.ledger_snapshot()["max_concurrency_by_model"],
                "max_rate_1s": provider.max_rate(1.0),
                "calls": len(provider.calls),
            }
            print(f"max concurrency report: {json.dumps(report)}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m durapipe.testing.fake_provider``.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    args = _parse_args(argv)
    asyncio.run(_serve(args))
    return 0
