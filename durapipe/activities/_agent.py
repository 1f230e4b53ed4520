"""One model request of an agent: the conversation so far and the tools in, a reply out."""

from __future__ import annotations

import json
from typing import Any

from durapipe.activities._cutoff import cut_off, truncated
from durapipe.activities._llm import (
    complete,
    idempotency_headers,
    parse_output,
    response_format,
    usage_of,
)
from durapipe.activities._models import check_models
from durapipe.activities._registry import CallContext, register_activity
from durapipe.activities._settings import (
    check_output_tokens,
    check_settings,
    check_thinking,
    provider_settings,
)
from durapipe.adapters._answers import carries
from durapipe.adapters._plan import ACTIVITY_NAMES
from durapipe.runtime._agent_messages import AgentReply, ToolRequest
from durapipe.runtime._calls import AgentTurnCall, LeafResult
from durapipe.runtime._spend import paid
from durapipe.spec import OFFLINE_MODEL
from durapipe.spec._deck import ModelDeck
from durapipe.stores._checkpoints import CheckpointStore, checkpoint_key, checkpointed
from durapipe.stores._limits import limited


async def run_agent_turn(
    call: AgentTurnCall,
    attempt: int = 1,
    checkpoints: CheckpointStore | None = None,
    deck: ModelDeck | None = None,
) -> LeafResult:
    """Ask the model for its next move: the activity body, shared by Temporal and the local runner.

    A final answer (no tool calls) is checked against the agent's output type here; one that does
    not fit comes back with ``problem`` set, for the loop to feed back to the model. A turn is
    checkpointed like an llm call, so a worker lost after the model answered does not pay again.

    Raises:
        ApplicationError: a classified provider error, a setting the pipe may not carry (or a
            thinking budget its output tokens cannot hold), a model this worker does not call,
            or a turn cut off at its output limit with nothing the loop can use
            (``durapipe.OutputTruncated``: no answer, a cut tool call, a cut structured answer).
    """
    check_settings("agent", call.pipe_name, call.pipe.settings)
    check_output_tokens(call.pipe_name, call.pipe.settings, deck)
    check_models("agent", call.pipe_name, call.pipe.model or OFFLINE_MODEL, (), deck)
    check_thinking(call.pipe_name, call.pipe.model or OFFLINE_MODEL, call.pipe.settings, deck)
    key = checkpoint_key(call)
    return await checkpointed(
        checkpoints, call, key, attempt, lambda: _turn(call, key, attempt, deck)
    )


async def _turn(call: AgentTurnCall, key: str, attempt: int, deck: ModelDeck | None) -> LeafResult:
    pipe = call.pipe
    model = pipe.model or OFFLINE_MODEL
    fmt, wrap = response_format(pipe.output, call.structures)
    extra: dict[str, Any] = {
        # Names the request in litellm's logging (and the offline model's ledger).
        "metadata": {"durapipe_run": call.run_id, "durapipe_path": call.path},
    }
    if call.tools:
        # litellm 1.106 routes calls with tools= through its MCP handler unless told not to.
        extra.update(tools=call.tools, _skip_mcp_handler=True)
    sent = provider_settings("agent", call.pipe_name, model, pipe.settings, deck)
    settings = idempotency_headers(sent, key, attempt)
    sent_by_transport = bool(call.limits) and carries(model, settings)
    async with limited(call, model, sent_by_transport=sent_by_transport) as lease:
        response = await complete(model, call.messages, fmt, settings, pipe.timeout, **extra)
        spent = usage_of(response)
        lease.used(spent)
    paid(spent, model)  # billed, whatever happens to the answer: a failure carries it
    message = response.choices[0].message
    calls = message.tool_calls or []
    requests = [
        ToolRequest(id=c.id, name=c.function.name or "", arguments=c.function.arguments or "{}")
        for c in calls
    ]
    reply = AgentReply(content=message.content, tool_calls=requests)
    if not requests:
        reply.output, reply.problem = _final(reply.content or "", call, wrap, fmt is None)
    cut = cut_off(response)
    if cut:
        # The arguments as they came: a call cut before its arguments began has "" (read as "{}"
        # from a whole answer, a tool that takes none), which is no call to make up arguments for.
        what = _unusable(reply, [c.function.arguments or "" for c in calls])
        if what is not None:
            where = f"agent '{call.pipe_name}', turn {call.turn}"
            raise truncated(where, model, response, pipe.settings, deck, what)
    return LeafResult(
        # Without defaults (no ``content``, ``output`` or ``problem`` beside tool calls): the
        # loop reads them back as such. 45 of a tool-calling turn's 260-byte result.
        output=reply.model_dump(mode="json", exclude_defaults=True),
        usage=spent,
        model=model,
        attempt=attempt,
        # Marked like an llm step's: a text final answer kept as it was cut (whole tool calls
        # and a structured answer that fits are whole).
        truncated=cut and not requests and fmt is None,
    )


def _unusable(reply: AgentReply, arguments: list[str]) -> str | None:
    """What a turn cut off at its output limit left that the loop cannot use (None: nothing).

    ``arguments``: each tool call's arguments as the model sent them. A cut tool call would be
    answered with its parse error and the turn asked again (or, its arguments empty, run on
    arguments nobody sent), and a cut final answer re-asked: each under the same limit, so cut
    again, and paid each time. A call's arguments are whole when they parse as a JSON object: an
    object cut anywhere inside misses its closing brace.
    """
    for request, sent in zip(reply.tool_calls, arguments, strict=True):
        try:
            whole = isinstance(json.loads(sent), dict)
        except ValueError:
            whole = False
        if not whole:
            return f"with the arguments of its call to tool '{request.name}' cut off"
    if reply.tool_calls:
        return None  # whole calls: the loop goes on
    if not (reply.content or "").strip():
        return "with no answer"
    if reply.problem is not None:
        return f"before its answer was complete ({reply.problem})"
    return None  # a text answer, kept as it is (like an llm step's)


def _final(text: str, call: AgentTurnCall, wrap: str | None, plain: bool) -> tuple[Any, str | None]:
    if plain:
        return text, None
    try:
        return parse_output(text, call.pipe.output, call.structures, wrap), None
    except ValueError as err:
        return None, str(err)


@register_activity(ACTIVITY_NAMES["agent"], metered=True)
async def agent_turn(call: AgentTurnCall, context: CallContext) -> LeafResult:
    """Ask an agent's model for its next move (``durapipe.agent_turn``)."""
    return await run_agent_turn(call, context.attempt, context.checkpoints, context.deck)
