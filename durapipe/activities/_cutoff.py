"""An answer the model stopped at its output limit (finish reason ``length``), told apart from a
wrong one.

litellm reports each provider's stop reason in OpenAI's words: Anthropic's ``max_tokens`` and
Gemini's ``MAX_TOKENS`` both arrive as ``"length"`` (litellm's ``_FINISH_REASON_MAP``). Such an
answer is whole only by chance: a reasoning model may have spent the whole limit thinking and
answered nothing, a JSON answer stops mid-string, a tool call's arguments mid-object. The same
request under the same limit is cut again, so a cut-off answer that cannot be used fails its step
with ``durapipe.OutputTruncated``: not retried, not re-asked, not handed to the next model of a
waterfall, and worded with the limit, where it came from and what to do. The call was paid: the
caller counts it (`durapipe.runtime._spend.paid`) before it asks here, so the failure carries it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe.activities._settings import OUTPUT_TOKEN_SETTINGS, OUTPUT_TOKENS_VARIABLE
from durapipe.adapters._litellm import response_attribute
from durapipe.spec._deck import ModelDeck

LENGTH = "length"


def cut_off(response: Any) -> bool:
    """Whether the model stopped ``response`` at its output limit (finish reason ``length``)."""
    choices = response_attribute(response, "choices")
    return bool(choices) and getattr(choices[0], "finish_reason", None) == LENGTH


def truncated(
    where: str,
    model: str,
    response: Any,
    settings: Mapping[str, Any],
    deck: ModelDeck | None,
    what: str,
) -> ApplicationError:
    """The non-retryable ``durapipe.OutputTruncated`` of a cut-off answer that cannot be used.

    Args:
        where: the pipe (and turn), e.g. ``pipe 'summary'`` or ``agent 'helper', turn 3``.
        model: the model that answered.
        response: its litellm response (its usage says the tokens used, and how many reasoning).
        settings: the pipe's settings (its ``max_tokens`` is the limit, when it sets one).
        deck: this worker's deck (its cap is the limit a request asking none was sent with).
        what: what the cut left, e.g. ``with no answer``.
    """
    cap = deck.max_output_tokens if deck is not None else None
    asked = [(settings.get(n), n) for n in OUTPUT_TOKEN_SETTINGS]
    asked = [(v, n) for v, n in asked if isinstance(v, int) and not isinstance(v, bool)]
    usage = response_attribute(response, "usage")
    used = int(getattr(usage, "completion_tokens", 0) or 0)
    reasoning = getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", 0)
    thought = (
        f", {reasoning:,} of them reasoning" if isinstance(reasoning, int) and reasoning else ""
    )
    effort = "reasoning_effort" in settings or bool(thought)
    shorter = "lower settings.reasoning_effort" if effort else "ask for a shorter answer"
    if asked:
        limit, name = min(asked)
        source = f"of {limit:,} tokens (settings.{name})"
        room = f" (this worker allows up to {cap:,}, {OUTPUT_TOKENS_VARIABLE})" if cap else ""
        todo = f"raise settings.{name}{room}, or {shorter}"
    elif cap is not None:
        source = f"of {cap:,} tokens (this worker's cap, {OUTPUT_TOKENS_VARIABLE})"
        todo = f"raise {OUTPUT_TOKENS_VARIABLE} on the workers, or {shorter}"
    else:
        source = "(its provider's default: the pipe sets no settings.max_tokens)"
        todo = f"set settings.max_tokens above that default, or {shorter}"
    return ApplicationError(
        f"{where}: {model} stopped at its output limit {source} {what}, after {used:,} output "
        f"tokens{thought}; {todo}",
        type=ErrorType.OUTPUT_TRUNCATED,
        non_retryable=True,
    )
