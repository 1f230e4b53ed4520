"""HTTP helpers of the fake provider: responses, error bodies, token counts, schema-shaped content."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from durapipe.adapters._schema_sample import sample_from_schema
from durapipe.testing._fake_provider._actions import (
    _HANG_POLL_S,
    _TOKEN_RE,
    IDEMPOTENCY_HEADER,
    Drop,
    Hang,
    Malformed,
    Reply,
    SchemaInvalid,
    Status,
    ToolCalls,
)

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


def _idempotency_key(request: web.Request, body: Mapping[str, Any]) -> str | None:
    """The ``X-Durapipe-Idempotency-Key`` header, else ``metadata.idempotency_key`` of the body."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("idempotency_key") is not None:
            key = str(metadata["idempotency_key"])
    return key
