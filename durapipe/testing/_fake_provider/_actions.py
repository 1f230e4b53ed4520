"""The fake provider's scripted actions: what a call gets (a reply, an error status, a hang...)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

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
        finish_reason: The choice's ``finish_reason``; by default ``"tool_calls"``
            with tool calls, else ``"stop"``. ``"length"`` is an answer cut off
            at the request's output limit (send ``content=""`` for one that
            spent the whole limit on reasoning).
        reasoning_tokens: If set, reported as
            ``usage.completion_tokens_details.reasoning_tokens`` (the part of the
            completion tokens a reasoning model spent thinking).
    """

    content: str | None = None
    json: Any = None
    tool_calls: Sequence[Mapping[str, Any]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    reasoning_tokens: int | None = None


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
