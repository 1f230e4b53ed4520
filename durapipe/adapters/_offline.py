"""An embedded offline LLM: ``durapipe/offline``, a litellm custom provider that never leaves the process.

It answers every chat completion locally and deterministically, so pipelines, examples and tests
run with no network, no API key and no cost::

    from durapipe.adapters._offline import register_offline_model

    register_offline_model()
    response = await litellm.acompletion(
        model="durapipe/offline",
        messages=[{"role": "user", "content": "Summarise the council meeting."}],
        num_retries=0,
    )
    response.choices[0].message.content  # "Offline answer: Summarise the council meeting."

What it answers:
    * No ``response_format`` (or ``{"type": "text"}``): ``"Offline answer: "`` followed by the first
      dozen words of the last user message.
    * ``{"type": "json_schema", "json_schema": {"schema": ...}}``: JSON text of an instance that
      validates against the schema, built by `sample_from_schema`.
    * ``{"type": "json_object"}``: a small JSON object.

    * ``tools=[...]`` offered (a scripted tool-calling policy): for the first ``offline_tool_rounds``
      turns (a setting; default: one per offered tool) the answer is a tool call instead of text --
      turn ``k`` calls the ``k``-th offered tool (cycling), or every offered tool at once with
      ``offline_parallel_tools=True`` -- with arguments sampled from the tool's JSON schema. A turn
      is an assistant message with tool calls already in the conversation. After that it answers
      as above. Tool call ids are ``call_<turn>_<n>``.

    The same messages and ``response_format`` always give the same answer: the only randomness is a
    ``random.Random`` seeded from the SHA-256 of both. ``stream=True`` works too: the whole answer
    arrives as one chunk.

Usage and cost:
    ``usage`` counts tokens as words and punctuation marks (``\\w+|[^\\w\\s]``) over all message
    contents (prompt) and over the answer (completion), at least 1 each. The model is registered
    with a price of zero, so ``litellm.completion_cost(response)`` is ``0.0``.

Scripted delay:
    Pass ``offline_delay=<seconds>`` to ``litellm.acompletion``/``litellm.completion`` and the model
    waits that long before answering (``asyncio.sleep`` in the async path, so it can be cancelled).
    litellm hands keyword arguments it does not know to a custom provider in ``optional_params``,
    so that is where the handler reads it (even with ``litellm.drop_params = True``). The
    environment variable ``DURAPIPE_OFFLINE_DELAY`` is the default when the argument is absent.

Call ledger:
    When the environment variable ``DURAPIPE_OFFLINE_LEDGER`` names a file, every call appends one
    JSON line to it -- ``ts``, ``pid``, ``model``, ``last_user`` (first 200 characters) and
    ``metadata`` (the ``metadata=`` dict given to litellm, which litellm passes to the handler in
    ``litellm_params``) -- with a single ``os.write`` on an ``O_APPEND`` descriptor, so calls from
    concurrent processes never interleave. The line is written when the call arrives, before any
    delay, so a call cut short by a killed worker still counts, as it would at a real provider.
    Read it back with `read_offline_ledger`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from durapipe._settings import settings
from durapipe.adapters._schema_sample import (
    MAX_VALUES,
    LargeSample,
    Sampler,
    rng_for,
    sample_from_schema,
    words_of,
)

# litellm fetches its price list from the internet at import time unless told to use the local copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import litellm
from litellm.exceptions import BadRequestError
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
from litellm.llms.custom_llm import CustomLLM
from litellm.types.utils import GenericStreamingChunk

__all__ = [
    "DELAY_ENV",
    "LEDGER_ENV",
    "OFFLINE_MODEL",
    "PROVIDER",
    "OfflineModel",
    "read_offline_ledger",
    "register_offline_model",
    "sample_from_schema",
]

OFFLINE_MODEL: Final = "durapipe/offline"
"""The model string to pass to litellm."""

PROVIDER: Final = "durapipe"
"""The litellm provider name: the part of the model string before the slash."""
DELAY_ENV: Final = "DURAPIPE_OFFLINE_DELAY"
"""Environment variable: default delay in seconds before every offline answer."""
LEDGER_ENV: Final = "DURAPIPE_OFFLINE_LEDGER"
"""Environment variable: path of a JSON-lines file that records every offline call."""

_PRICING: Final[dict[str, Any]] = {
    "input_cost_per_token": 0.0,
    "output_cost_per_token": 0.0,
    # Explicit cache prices keep litellm from warning that they default to 0 for an unknown model.
    "cache_creation_input_token_cost": 0.0,
    "cache_read_input_token_cost": 0.0,
    "litellm_provider": PROVIDER,
    "mode": "chat",
    "max_tokens": 8192,
    "max_input_tokens": 128000,
    "max_output_tokens": 8192,
}
_TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]")
_PLAIN_WORDS: Final = 12
_LEDGER_TEXT: Final = 200
# Values an answer is built with on the event loop (a few ms); a larger one is built in a thread.
# Built on the loop, the 100,000 values an answer may hold stopped the worker's other runs for
# 1.3-1.6 s here (their activities, heartbeats and workflow tasks).
_ON_LOOP_VALUES: Final = 2_000


# --------------------------------------------------------------------------------------------------
# The litellm provider
# --------------------------------------------------------------------------------------------------


class OfflineModel(CustomLLM):
    """The ``durapipe`` litellm custom provider: deterministic local answers, zero cost.

    Register it with `register_offline_model` and call it as ``model="durapipe/offline"``
    (litellm strips the provider prefix, so the handler sees ``model == "offline"``; any other
    name after ``durapipe/`` is answered the same way but has no registered price).
    See the module docstring for the answers, the delay and the ledger.
    """

    def completion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: HTTPHandler | None = None,
    ) -> litellm.ModelResponse:
        """Answer synchronously (``litellm.completion``); a scripted delay blocks the thread."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            time.sleep(delay)
        return _answer(messages, optional_params, model_response)

    async def acompletion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: AsyncHTTPHandler | None = None,
    ) -> litellm.ModelResponse:
        """Answer asynchronously (``litellm.acompletion``); a scripted delay is cancellable, and a
        large answer is built in a thread (see `_ON_LOOP_VALUES`)."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            return _answer(messages, optional_params, model_response, _ON_LOOP_VALUES)
        except LargeSample:
            return await asyncio.to_thread(_answer, messages, optional_params, model_response)

    def streaming(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: HTTPHandler | None = None,
    ) -> Iterator[GenericStreamingChunk]:
        """Stream the answer (``stream=True``) as a single final chunk."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            time.sleep(delay)
        yield _chunk(messages, optional_params)

    # litellm iterates what astreaming returns, so it must be an async generator; the base class
    # declares a coroutine returning an iterator, hence the override ignore.
    async def astreaming(  # type: ignore[override, misc]
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: AsyncHTTPHandler | None = None,
    ) -> AsyncIterator[GenericStreamingChunk]:
        """Stream the answer (``stream=True``) as a single final chunk (a large one built in a
        thread, see `_ON_LOOP_VALUES`)."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            chunk = _chunk(messages, optional_params, _ON_LOOP_VALUES)
        except LargeSample:
            chunk = await asyncio.to_thread(_chunk, messages, optional_params)
        yield chunk


def register_offline_model() -> None:
    """Make ``durapipe/offline`` callable through litellm, priced at zero.

    Idempotent and cheap to call again: it adds the handler to ``litellm.custom_provider_map`` and
    the price to ``litellm.model_cost`` only when they are missing (e.g. after a test reset them).
    """
    if not any(
        entry.get("provider") == PROVIDER and isinstance(entry.get("custom_handler"), OfflineModel)
        for entry in litellm.custom_provider_map
    ):
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": OfflineModel()})
    if OFFLINE_MODEL not in litellm.model_cost:
        litellm.register_model({OFFLINE_MODEL: dict(_PRICING)})


def read_offline_ledger(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The calls recorded in a ledger file (see ``DURAPIPE_OFFLINE_LEDGER``), oldest first.

    Args:
        path: The ledger file.

    Returns:
        One dict per call with ``ts``, ``pid``, ``model``, ``last_user`` and ``metadata``; an empty
        list when the file does not exist yet. A trailing line without its newline (a write still
        in progress) is left out.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _arrive(
    model: str, messages: Sequence[Any], optional_params: Mapping[str, Any], litellm_params: Any
) -> float:
    """Record the call in the ledger (if enabled) and return the scripted delay in seconds."""
    params: Mapping[str, Any] = litellm_params if isinstance(litellm_params, Mapping) else {}
    ledger = settings().offline_ledger
    if ledger:
        metadata = optional_params.get("metadata") or params.get("metadata")
        _append_ledger(
            ledger,
            {
                "ts": time.time(),
                "pid": os.getpid(),
                "model": f"{PROVIDER}/{model}",
                "last_user": _last_user(messages)[:_LEDGER_TEXT],
                "metadata": metadata if isinstance(metadata, dict) else None,
            },
        )
    return _delay(optional_params)


def _delay(optional_params: Mapping[str, Any]) -> float:
    raw = optional_params.get("offline_delay")
    if raw is None:
        raw = settings().offline_delay or 0
    try:
        return max(0.0, float(raw))
    except (TypeError, ValueError):
        raise ValueError(f"offline_delay / {DELAY_ENV} must be seconds, got {raw!r}") from None


def _append_ledger(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    line = (json.dumps(record, default=str) + "\n").encode()
    # One write on an O_APPEND descriptor: the kernel appends it whole, so lines from concurrent
    # processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _answer(
    messages: Sequence[Any],
    optional_params: Mapping[str, Any],
    model_response: litellm.ModelResponse,
    limit: int = MAX_VALUES,
) -> litellm.ModelResponse:
    """The answer, built with at most ``limit`` values (past it: `LargeSample`, below
    `MAX_VALUES`; a `BadRequestError` past that)."""
    try:
        calls = _tool_calls(messages, optional_params, limit)
        text, usage = ("", {}) if calls else _reply(messages, optional_params, limit)
    except ValueError as err:
        # A schema the offline model cannot answer (recursion without end, a value too large)
        # is the request's fault: no second attempt answers it (400, as a provider would).
        raise BadRequestError(str(err), model=OFFLINE_MODEL, llm_provider=PROVIDER) from None
    if calls:
        usage = _usage(messages, " ".join(c["function"]["arguments"] for c in calls))
        model_response.choices = [
            litellm.Choices(
                index=0,
                finish_reason="tool_calls",
                message=litellm.Message(content=None, tool_calls=calls),
            )
        ]
    else:
        _set_content(model_response, text)
    model_response.usage = litellm.Usage(**usage)
    model_response.model = OFFLINE_MODEL
    return model_response


def _tool_calls(
    messages: Sequence[Any], optional_params: Mapping[str, Any], limit: int = MAX_VALUES
) -> list[dict[str, Any]]:
    """The scripted tool calls for this turn (see the module docstring); empty to answer."""
    tools = [t for t in optional_params.get("tools") or [] if isinstance(t, Mapping)]
    done = sum(1 for m in messages if _role(m) == "assistant" and _has_tool_calls(m))
    rounds = optional_params.get("offline_tool_rounds")
    if not tools or done >= (len(tools) if rounds is None else int(rounds)):
        return []
    chosen = tools if optional_params.get("offline_parallel_tools") else [tools[done % len(tools)]]
    seed, words = _seed(messages, tools), words_of(_last_user(messages))
    calls = []
    for n, tool in enumerate(chosen, start=1):
        function = tool.get("function") or {}
        schema = function.get("parameters") or {"type": "object"}
        arguments = Sampler(schema, rng_for(f"{seed}/{n}"), words, limit).sample(schema)
        calls.append(
            {
                "id": f"call_{done + 1}_{n}",
                "type": "function",
                "function": {"name": function.get("name", ""), "arguments": json.dumps(arguments)},
            }
        )
    return calls


def _has_tool_calls(message: Any) -> bool:
    if isinstance(message, Mapping):
        return bool(message.get("tool_calls"))
    return bool(getattr(message, "tool_calls", None))


def _chunk(
    messages: Sequence[Any], optional_params: Mapping[str, Any], limit: int = MAX_VALUES
) -> GenericStreamingChunk:
    """The whole answer as the one and final chunk of a stream."""
    text, usage = _reply(messages, optional_params, limit)
    return {
        "text": text,
        "tool_use": None,
        "is_finished": True,
        "finish_reason": "stop",
        "usage": {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
        "index": 0,
    }


def _reply(
    messages: Sequence[Any], optional_params: Mapping[str, Any], limit: int = MAX_VALUES
) -> tuple[str, dict[str, int]]:
    """The answer text and its token usage."""
    text = _reply_text(messages, optional_params.get("response_format"), limit)
    return text, _usage(messages, text)


def _usage(messages: Sequence[Any], answer: str) -> dict[str, int]:
    prompt_tokens = max(1, sum(_count_tokens(_content_text(m)) for m in messages))
    completion_tokens = max(1, _count_tokens(answer))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _reply_text(messages: Sequence[Any], response_format: Any, limit: int = MAX_VALUES) -> str:
    """The answer text for a conversation and a ``response_format``."""
    last_user = _last_user(messages)
    kind = _format_kind(response_format)
    if kind == "json_schema":
        schema = response_format["json_schema"].get("schema") or {}
        seed = rng_for(_seed(messages, response_format))
        sampler = Sampler(schema, seed, words_of(last_user), limit)
        return json.dumps(sampler.sample(schema))
    if kind == "json_object":
        words = last_user.split()[:_PLAIN_WORDS]
        return json.dumps({"answer": " ".join(words) or "offline", "offline": True})
    words = last_user.split()[:_PLAIN_WORDS]
    return f"Offline answer: {' '.join(words)}" if words else "Offline answer."


def _format_kind(response_format: Any) -> str:
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_schema" and isinstance(response_format.get("json_schema"), Mapping):
            return "json_schema"
        if kind == "json_object":
            return "json_object"
    return "text"


def _seed(messages: Sequence[Any], response_format: Any) -> str:
    """A stable digest of the conversation and the format: the seed of every choice."""
    conversation = [[_role(m), _content_text(m)] for m in messages]
    blob = json.dumps([conversation, response_format], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _set_content(model_response: litellm.ModelResponse, text: str) -> None:
    choices = model_response.choices
    if choices and isinstance(choices[0], litellm.Choices):
        choices[0].message.content = text
        choices[0].finish_reason = "stop"
    else:
        model_response.choices = [
            litellm.Choices(index=0, finish_reason="stop", message=litellm.Message(content=text))
        ]


def _last_user(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if _role(message) == "user":
            return _content_text(message)
    return ""


def _role(message: Any) -> str:
    role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", "")
    return str(role or "")


def _content_text(message: Any) -> str:
    """The text of a message; multimodal content keeps only its text parts."""
    if isinstance(message, Mapping):
        content = message.get("content")
    else:
        content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _count_tokens(text: str) -> int:
    # One match at a time, not `findall`: a regex call holds the GIL to its end, which for the
    # 1.5 MB of a large answer (counted in a thread) stopped the event loop for 0.2 s.
    return sum(1 for _ in _TOKEN_RE.finditer(text))
