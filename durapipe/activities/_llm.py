"""The llm operator: render the prompt, call the model through litellm, check the answer's shape."""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
from temporalio.exceptions import ApplicationError

from durapipe.adapters._calls import LeafResult, LlmCall, Usage
from durapipe.adapters._litellm import classify, litellm_module
from durapipe.pipes import TemplateError, _types, render


def messages_for(call: LlmCall) -> list[dict[str, str]]:
    """The chat messages of a call: the rendered system prompt (if any) and user prompt.

    Raises:
        ApplicationError: a template failed to render (non-retryable ``durapipe.TemplateError``).
    """
    pipe = call.pipe
    messages = []
    for role, field, template in (
        ("system", "system", pipe.system),
        ("user", "prompt", pipe.prompt),
    ):
        if template is None:
            continue
        try:
            messages.append({"role": role, "content": render(template, call.inputs)})
        except TemplateError as err:
            raise ApplicationError(
                f"pipe '{call.pipe_name}', field '{field}': {err}",
                type="durapipe.TemplateError",
                non_retryable=True,
            ) from None
    return messages


def response_format(
    output: str, structures: _types.Structures
) -> tuple[dict[str, Any] | None, str | None]:
    """The litellm ``response_format`` for an output type, and the key the value is wrapped in.

    Providers want an object at the root of a JSON schema, so lists and scalars travel wrapped in
    ``{"items": [...]}`` or ``{"value": ...}`` and are unwrapped after validation.
    """
    if output == "text":
        return None, None
    schema = _types.json_schema(output, structures)
    wrap = None
    if schema.get("type") != "object" and "$ref" not in schema:
        wrap = "items" if schema.get("type") == "array" else "value"
        defs = schema.pop("$defs", None)
        schema = {
            "type": "object",
            "properties": {wrap: schema},
            "required": [wrap],
            "additionalProperties": False,
            **({"$defs": defs} if defs else {}),
        }
    name = re.sub(r"[^A-Za-z0-9_-]", "_", output)[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}, wrap


def parse_output(text: str, output: str, structures: _types.Structures, wrap: str | None) -> Any:
    """The validated value of a structured answer.

    Raises:
        ValueError: the text is not JSON, or does not fit the output type.
    """
    try:
        data = json.loads(_strip_fences(text))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"the answer is not valid JSON ({err.msg} at position {err.pos})"
        ) from None
    if wrap is not None:
        if not isinstance(data, dict) or wrap not in data:
            raise ValueError(f"the answer must be a JSON object with the key '{wrap}'")
        data = data[wrap]
    try:
        return _types.validate(output, structures, data)
    except pydantic.ValidationError as err:
        raise ValueError(_validation_summary(err)) from None


async def run_llm(call: LlmCall, attempt: int = 1) -> LeafResult:
    """Run one llm call: the activity body, shared by Temporal and the local runner.

    Raises:
        ApplicationError: a classified provider error, a template error, or an answer that still did
            not fit the output type after ``reask`` more asks.
    """
    pipe = call.pipe
    model = pipe.model or "durapipe/offline"
    messages = messages_for(call)
    fmt, wrap = response_format(pipe.output, call.structures)
    usage = Usage()
    problem = ""
    for _ in range(pipe.reask + 1):
        response = await _complete(model, messages, fmt, pipe.settings, pipe.timeout)
        usage += _usage_of(response)
        text = response.choices[0].message.content or ""
        if fmt is None:
            return LeafResult(output=text, usage=usage, model=model, attempt=attempt)
        try:
            value = parse_output(text, pipe.output, call.structures, wrap)
        except ValueError as err:
            problem = str(err)
            messages = [
                *messages,
                {"role": "assistant", "content": text},
                {
                    "role": "user",
                    "content": f"That answer was rejected: {problem}. "
                    "Answer again with only JSON that matches the schema.",
                },
            ]
            continue
        return LeafResult(output=value, usage=usage, model=model, attempt=attempt)
    raise ApplicationError(
        f"{model}: the answer did not fit the output type {pipe.output} after {pipe.reask + 1} asks: {problem}",
        type="durapipe.InvalidOutput",
        non_retryable=True,
    )


async def _complete(
    model: str,
    messages: list[dict[str, str]],
    fmt: dict[str, Any] | None,
    settings: dict[str, Any],
    timeout: float | None,
) -> Any:
    litellm = litellm_module()
    extra = {"response_format": fmt} if fmt is not None else {}
    try:
        # num_retries=0: Temporal owns retries, so a failed call is one attempt in the history.
        return await litellm.acompletion(
            model=model, messages=messages, num_retries=0, timeout=timeout, **extra, **settings
        )
    except Exception as err:
        # from None: the provider's own exception may quote the key it was sent; only the
        # classified, redacted error may reach history and the worker's log.
        raise classify(err, model=model) from None


def _usage_of(response: Any) -> Usage:
    usage = getattr(response, "usage", None)
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    try:
        cost = float(litellm_module().completion_cost(completion_response=response) or 0.0)
    except Exception:  # a model without a known price costs what we cannot know: record 0
        cost = 0.0
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost)


def _strip_fences(text: str) -> str:
    # Some models wrap JSON in ```json fences even when asked not to.
    match = re.match(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", text, re.DOTALL)
    return match.group(1) if match else text


def _validation_summary(err: pydantic.ValidationError) -> str:
    parts = []
    for error in err.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
