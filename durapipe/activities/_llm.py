"""The llm operator: render the prompt, call the model through litellm, check the answer's shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from opentelemetry.trace import Status, StatusCode
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe.activities._cutoff import cut_off, truncated
from durapipe.activities._models import check_models
from durapipe.activities._registry import CallContext, register_activity
from durapipe.activities._settings import (
    check_output_tokens,
    check_settings,
    check_thinking,
    provider_settings,
)
from durapipe.activities._spans import provider_span, record_response
from durapipe.adapters._answers import carries
from durapipe.adapters._answers import install as keep_answers
from durapipe.adapters._litellm import (
    classify,
    litellm_module,
    response_attribute,
    response_cost,
)
from durapipe.adapters._plan import ACTIVITY_NAMES
from durapipe.runtime._calls import LeafResult, LlmCall, Usage
from durapipe.runtime._spend import STEP_TIMED_OUT, paid
from durapipe.spec import OFFLINE_MODEL, TemplateError, _types, render
from durapipe.spec._deck import ModelDeck
from durapipe.stores._answers import IDEMPOTENCY_HEADER
from durapipe.stores._checkpoints import CheckpointStore, checkpoint_key, checkpointed
from durapipe.stores._limits import limited

# Sent with every provider request, so a provider (or the fake one's ledger) can spot a repeat.
# A render runs on the worker's event loop: the sandbox's operation budget keeps it to tens of
# milliseconds, and this wall-clock budget catches whatever slow single operation slips past it.
RENDER_SECONDS = 1.0
ATTEMPT_HEADER = "X-Durapipe-Attempt"
# durapipe's offline models (``durapipe/offline``, ``durapipe/<any>``) answer for free.
OFFLINE_PREFIX = "durapipe/"


def messages_for(call: LlmCall) -> list[dict[str, str]]:
    """The chat messages of a call: the rendered system prompt (if any) and user prompt.

    Raises:
        ApplicationError: a template failed to render (non-retryable ``durapipe.TemplateError``).
    """
    pipe = call.pipe
    messages = (
        [
            {
                "role": "system",
                "content": render_for(call.pipe_name, "system", pipe.system, call.inputs),
            }
        ]
        if pipe.system
        else []
    )
    messages.append(
        {"role": "user", "content": render_for(call.pipe_name, "prompt", pipe.prompt, call.inputs)}
    )
    return messages


def render_for(pipe_name: str, field: str, template: str, inputs: dict[str, Any]) -> str:
    """Render a pipe's template; a failure is the user's mistake, so it is not retried.

    Raises:
        ApplicationError: non-retryable ``durapipe.TemplateError`` naming the pipe and field.
    """
    try:
        return render(template, inputs, seconds=RENDER_SECONDS)
    except TemplateError as err:
        raise ApplicationError(
            f"pipe '{pipe_name}', field '{field}': {err}",
            type=ErrorType.TEMPLATE_ERROR,
            non_retryable=True,
        ) from None


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


async def run_llm(
    call: LlmCall,
    attempt: int = 1,
    checkpoints: CheckpointStore | None = None,
    deck: ModelDeck | None = None,
) -> LeafResult:
    """Run one llm call: the activity body, shared by Temporal and the local runner.

    A result stored in ``checkpoints`` under the call's key is returned without calling the model;
    a new answer is stored there. The key travels to the provider as the
    ``X-Durapipe-Idempotency-Key`` header. Connection settings come from ``deck`` (this worker's),
    never from the call.

    Raises:
        ApplicationError: a classified provider error, a template error, a setting the pipe may
            not carry (or a thinking budget its output tokens cannot hold), a model this worker
            does not call (``durapipe.ModelNotAllowed``), an answer that still did not fit
            the output type after ``reask`` asks, or one cut off at its output limit that is
            empty or does not fit (``durapipe.OutputTruncated``: see `durapipe.activities._cutoff`).
    """
    check_settings("llm", call.pipe_name, call.pipe.settings)
    check_output_tokens(call.pipe_name, call.pipe.settings, deck)
    check_models("llm", call.pipe_name, call.pipe.model or OFFLINE_MODEL, call.pipe.fallbacks, deck)
    if "reasoning_effort" in call.pipe.settings:
        # Every model of a waterfall, here: one refused at its own request would hand the step
        # on, or show the mistake only on the day the models before it fail.
        for model in (call.pipe.model or OFFLINE_MODEL, *call.pipe.fallbacks):
            check_thinking(call.pipe_name, model, call.pipe.settings, deck)
    messages = messages_for(call)
    key = checkpoint_key(call, messages)
    return await checkpointed(
        checkpoints, call, key, attempt, lambda: _ask(call, messages, key, attempt, deck)
    )


async def _ask(
    call: LlmCall, messages: list[dict[str, str]], key: str, attempt: int, deck: ModelDeck | None
) -> LeafResult:
    pipe = call.pipe
    chain = [pipe.model or OFFLINE_MODEL, *pipe.fallbacks]
    model = chain[0]
    fmt, wrap = response_format(pipe.output, call.structures)

    def settings_for(model: str) -> dict[str, Any]:
        # Each model of a waterfall gets its own connection from the deck, never the first's.
        sent = provider_settings("llm", call.pipe_name, model, pipe.settings, deck)
        return idempotency_headers(sent, key, attempt)

    usage: Usage | None = None
    problem = ""
    for _ in range(pipe.reask + 1):
        if call.limits or pipe.fallbacks:
            # A re-ask goes on from the model that answered (its own answer is in the messages).
            model, response, spent = await _first_answer(
                call, chain[chain.index(model) :], messages, fmt, settings_for
            )
        else:
            # Most calls have no limits and one model: no lease to enter and leave (two
            # coroutines), no waterfall around the call (one more layer in the await chain,
            # which runs again every time the call resumes). The same request as the waterfall's.
            response = await complete(model, messages, fmt, settings_for(model), pipe.timeout)
            spent = usage_of(response)
        paid(spent, model)  # billed, whatever happens to the answer: a failure carries it
        # The first ask's usage is the whole of it (most calls ask once): no sum to build.
        usage = spent if usage is None else usage + spent
        text = response.choices[0].message.content or ""
        cut = cut_off(response)
        if fmt is None:
            if cut and not text.strip():
                where = f"pipe '{call.pipe_name}'"
                raise truncated(where, model, response, pipe.settings, deck, "with no answer")
            # A text answer cut off is returned as it is (a pipe may set max_tokens to bound
            # its length on purpose), marked so that its step record says so.
            return LeafResult(output=text, usage=usage, model=model, attempt=attempt, truncated=cut)
        try:
            value = parse_output(text, pipe.output, call.structures, wrap)
        except ValueError as err:
            problem = str(err)
            if cut:  # a re-ask under the same limit is cut again: paid for nothing
                what = f"before its answer was complete ({problem})"
                where = f"pipe '{call.pipe_name}'"
                raise truncated(where, model, response, pipe.settings, deck, what) from None
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
        type=ErrorType.INVALID_OUTPUT,
        non_retryable=True,
    )


async def _first_answer(
    call: LlmCall,
    models: list[str],
    messages: list[dict[str, Any]],
    fmt: dict[str, Any] | None,
    settings_for: Callable[[str], dict[str, Any]],
) -> tuple[str, Any, Usage]:
    """The first model of ``models`` that answers, its response and usage (a waterfall).

    Raises:
        ApplicationError: the last model failed too (its classified error).
    """
    for model in models[:-1]:
        try:
            return model, *await _answer(call, model, messages, fmt, settings_for(model))
        except ApplicationError:
            continue  # the next model of the waterfall gets the same request
    last = models[-1]
    return last, *await _answer(call, last, messages, fmt, settings_for(last))


async def _answer(
    call: LlmCall,
    model: str,
    messages: list[dict[str, Any]],
    fmt: dict[str, Any] | None,
    settings: dict[str, Any],
) -> tuple[Any, Usage]:
    """One request to ``model`` inside the room of its own limits, and the usage it reported."""
    # Whether the transport reports when the request leaves (then the limit counts from there).
    sent_by_transport = bool(call.limits) and carries(model, settings)
    async with limited(call, model, sent_by_transport=sent_by_transport, sent=messages) as lease:
        response = await complete(model, messages, fmt, settings, call.pipe.timeout)
        spent = usage_of(response)  # once: it prices the response (litellm's figure)
        lease.used(spent)
    return response, spent


def idempotency_headers(settings: dict[str, Any], key: str, attempt: int) -> dict[str, Any]:
    """``settings`` plus the headers that tell the provider which step (key) and attempt this is."""
    headers = {
        **settings.get("extra_headers", {}),
        IDEMPOTENCY_HEADER: key,
        ATTEMPT_HEADER: str(attempt),
    }
    return {**settings, "extra_headers": headers}


async def complete(
    model: str,
    messages: list[dict[str, Any]],
    fmt: dict[str, Any] | None,
    settings: dict[str, Any],
    timeout: float | None,
    **more: Any,
) -> Any:
    """One litellm chat completion with retries off; provider errors come back classified.

    Raises:
        ApplicationError: the provider failed (see `classify` for the types and retryability).
    """
    litellm = litellm_module()
    keep_answers()  # litellm's OpenAI-compatible client keeps each answer as it arrives
    extra = {"response_format": fmt, **more} if fmt is not None else more
    with provider_span(model, settings) as span:
        try:
            # num_retries=0: Temporal owns retries, so a failed call is one attempt in the history.
            asked = litellm.acompletion(
                model=model, messages=messages, num_retries=0, timeout=timeout, **extra, **settings
            )
            # durapipe's offline models bill nothing: no answer of theirs is waited for.
            offline = model.startswith(OFFLINE_PREFIX)
            response = await (asked if offline else answered_despite_cancel(asked, model))
        except Exception as err:
            failure = classify(err, model=model)
            span.set_attribute("error.type", failure.type or type(err).__name__)
            span.set_status(Status(StatusCode.ERROR, failure.message))
            # from None: the provider's own exception may quote the key it was sent; only the
            # classified, redacted error may reach history and the worker's log.
            raise failure from None
        record_response(span, response)
        return response


# How long a cancelled call waits for the answer its provider is already generating (and bills):
# the run ends as cancelled that much later at most. A longer answer is lost (see the README).
CANCELLED_ANSWER_WAIT_S = 5.0


async def answered_despite_cancel(asked: Awaitable[Any], model: str) -> Any:
    """The response to ``asked``; cancelled while it is on its way, the answer is waited for
    (`CANCELLED_ANSWER_WAIT_S` at most) and counted as paid before the cancellation goes on.

    The provider bills an answer it generates whether or not the caller stays to read it, so a
    call cancelled while its provider answers (a run's cancel reaching it at a heartbeat, Ctrl-C
    of a local run) would pay for an answer nobody counted. A second cancellation while it waits
    ends the wait.
    """
    task = asyncio.ensure_future(asked)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError as err:
        if _stopped_by_a_timeout(err):  # its attempt is over: no wait past its own timeout
            task.cancel()
            raise
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait((task,), timeout=CANCELLED_ANSWER_WAIT_S)
        if task.done() and not task.cancelled() and task.exception() is None:
            paid(usage_of(task.result()), model)  # a cancelled call fails saying what it paid
        else:
            task.cancel()  # its connection is closed: what the provider generated is not known
            with contextlib.suppress(BaseException):
                await task
        raise


def _stopped_by_a_timeout(err: asyncio.CancelledError) -> bool:
    """Whether ``err`` is the call's own timeout, not its run's cancel (or Ctrl-C of a local run):
    on a worker, Temporal says why it cancels an activity; a local run's step timer says so."""
    if activity.in_activity():
        details = activity.cancellation_details()
        return details is None or not details.cancel_requested
    return STEP_TIMED_OUT in err.args


def usage_of(response: Any) -> Usage:
    """The tokens and cost of a litellm response (cost 0 when the model's price is unknown)."""
    usage = response_attribute(response, "usage")
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    return Usage(
        input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=response_cost(response)
    )


# Some models wrap JSON in ```json fences even when asked not to. The closing fence may be cut
# (an answer stopped at its output limit inside it, "\n``"): what it held is then read as it is.
# That is no guess: a structured answer's root is always an object (`response_format`), and an
# object cut anywhere inside does not parse, so one that parses and fits is whole.
_FENCED = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*`{0,3}\s*$", re.DOTALL)


def _strip_fences(text: str) -> str:
    match = _FENCED.match(text) if text.lstrip().startswith("```") else None
    return match.group(1) if match else text


def _validation_summary(err: pydantic.ValidationError) -> str:
    parts = []
    for error in err.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


@register_activity(ACTIVITY_NAMES["llm"], metered=True)
def llm(call: LlmCall, context: CallContext) -> Awaitable[LeafResult]:
    """Call a language model (``durapipe.llm``)."""
    # run_llm's own coroutine, not one that awaits it: each layer of an activity's await chain
    # runs again every time the call resumes.
    return run_llm(call, context.attempt, context.checkpoints, context.deck)
