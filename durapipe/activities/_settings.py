"""What a provider call sends besides the prompt: the pipe's generation settings, refused if they
reach past them, ask more output tokens than the worker's cap, or ask a model to think for more
tokens than the request may use, plus the connection settings of this worker's model deck.

The spec arrives as workflow input, which any client of the namespace can send without running
validation, so the activity checks the settings again before anything is sent (see
`durapipe.spec._deck`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe.adapters._litellm import thinking_budget
from durapipe.spec._deck import OFFLINE_PREFIX, OWN_MODELS, ModelDeck, refused_settings

# The settings that bound a chat request's output tokens (litellm maps one onto the other where a
# provider knows only one), and the worker's cap on both.
OUTPUT_TOKEN_SETTINGS = ("max_tokens", "max_completion_tokens")
OUTPUT_TOKENS_VARIABLE = "DURAPIPE_MAX_OUTPUT_TOKENS"
# The kinds whose provider requests are chat completions, billed per output token.
CHAT_KINDS = frozenset({"llm", "agent"})
# With Anthropic's interleaved thinking (a beta header a deck entry may send) a thinking budget
# spans all of a turn's thinking blocks and may pass the request's max_tokens.
_INTERLEAVED_THINKING = "interleaved-thinking"
# The litellm provider of durapipe's own models (``durapipe/offline``): the only reader of a pipe's
# ``offline_*`` settings.
_OWN_PROVIDER = OWN_MODELS.removesuffix("/*")


def check_settings(kind: str, pipe_name: str, settings: Mapping[str, Any]) -> None:
    """Refuse a pipe whose settings go past generation parameters.

    Raises:
        ApplicationError: non-retryable ``durapipe.SettingNotAllowed`` naming the pipe and setting.
    """
    if not settings:
        return  # most pipes set none: nothing to refuse (checked twice a call, once per model)
    refused = refused_settings(kind, pipe_name, settings)
    if refused is not None:
        raise ApplicationError(refused, type=ErrorType.SETTING_NOT_ALLOWED, non_retryable=True)


def check_output_tokens(
    pipe_name: str, settings: Mapping[str, Any], deck: ModelDeck | None
) -> None:
    """Refuse a chat request (llm call, agent turn) asking more output tokens than this worker's
    cap (``DURAPIPE_MAX_OUTPUT_TOKENS``, on its deck): each is billed, and a budget's estimate
    follows what the request asks.

    Raises:
        ApplicationError: non-retryable ``durapipe.SettingNotAllowed`` naming the pipe, the
            setting, its value, the cap and the variable.
    """
    cap = deck.max_output_tokens if deck is not None else None
    if cap is None or not settings:
        return
    for name in OUTPUT_TOKEN_SETTINGS:
        asked = settings.get(name)
        if asked is None:
            continue
        if isinstance(asked, bool) or not isinstance(asked, int):
            why = f"{asked!r} is not a whole number of tokens"
        elif asked > cap:
            why = f"asks for up to {asked:,} output tokens per request"
        elif asked < 1:
            # Ollama reads -1 as no limit, and a proto3 provider (Gemini) 0 as unset: its default.
            why = f"asks for {asked:,} output tokens, which some providers read as no limit"
        else:
            continue
        raise ApplicationError(
            f"pipe '{pipe_name}', field 'settings.{name}': {why}, and this worker lets a request "
            f"ask for at most {cap:,} ({OUTPUT_TOKENS_VARIABLE}); ask for {cap:,} or fewer, or "
            "raise the setting on the workers",
            type=ErrorType.SETTING_NOT_ALLOWED,
            non_retryable=True,
        )


def check_thinking(
    pipe_name: str, model: str, settings: Mapping[str, Any], deck: ModelDeck | None
) -> None:
    """Refuse a chat request whose thinking, as litellm sends it to ``model``, cannot fit the
    output tokens the request may use (its own ``max_tokens``, else the worker's cap).

    litellm sends ``settings.reasoning_effort`` to an Anthropic model without adaptive thinking
    as ``thinking.budget_tokens`` (1,024 to 16,384 by effort; `thinking_budget` asks litellm),
    and Anthropic answers 400 to a budget that is not below the ``max_tokens`` sent: the step
    then failed with the provider's words (``durapipe.BadRequest``), which named neither the
    pipe, nor the cap, nor what to do. Nothing is sent instead.

    Raises:
        ApplicationError: non-retryable ``durapipe.SettingNotAllowed`` naming the pipe, the
            effort, the model, its budget and the limit.
    """
    effort = settings.get("reasoning_effort")
    if effort is None:
        return  # most requests: no question to litellm
    asked = [(settings.get(name), name) for name in OUTPUT_TOKEN_SETTINGS]
    asked = [(value, name) for value, name in asked if value is not None]
    if any(isinstance(value, bool) or not isinstance(value, int) for value, _ in asked):
        return  # not a number of tokens: `check_output_tokens` or the provider says so
    cap = deck.max_output_tokens if deck is not None else None
    limit, field = min(asked) if asked else (cap, None)
    if limit is None or limit < 1:
        return  # none: litellm sends max_tokens at the budget plus 4,096; below 1: no limit
    connection = deck.connection(model) if deck is not None else {}
    if _interleaved(connection):
        return
    budget = thinking_budget(model, effort, limit, connection)
    if budget is None or budget < limit:
        return
    lower = "ask for a lower effort (or 'none')"
    said = (
        f"pipe '{pipe_name}', field 'settings.reasoning_effort': {effort!r} gives {model} a "
        f"thinking budget of {budget:,} tokens, which does not fit the {limit:,} output tokens"
    )
    if field is None:
        said += (
            f" this request may use ({OUTPUT_TOKENS_VARIABLE}); {lower}, or raise the cap on "
            "the workers"
        )
    elif cap is not None and budget >= cap:
        said += (
            f" settings.{field} asks for, nor the {cap:,} this worker lets a request ask for "
            f"({OUTPUT_TOKENS_VARIABLE}); {lower}, or raise the cap on the workers"
        )
    else:
        said += f" settings.{field} asks for; {lower}, or more than {budget:,} output tokens"
    raise ApplicationError(said, type=ErrorType.SETTING_NOT_ALLOWED, non_retryable=True)


def _interleaved(connection: Mapping[str, Any]) -> bool:
    for headers in (connection.get("extra_headers"), connection.get("headers")):
        for name, value in (headers or {}).items():
            if name.lower() == "anthropic-beta" and _INTERLEAVED_THINKING in str(value):
                return True
    return False


def provider_settings(
    kind: str, pipe_name: str, model: str, settings: Mapping[str, Any], deck: ModelDeck | None
) -> dict[str, Any]:
    """The keyword arguments of a provider call: the deck's connection, then the pipe's settings
    (a chat request that asks for no output-token limit is sent with the worker's cap, if any).

    Raises:
        ApplicationError: the pipe's settings hold more than generation parameters, its
            thinking does not fit its output tokens, or this worker does not call ``model``
            (checked again here, at the request: a body that forgot `check_models` or
            `check_thinking` still sends nothing).
    """
    check_settings(kind, pipe_name, settings)
    if kind in CHAT_KINDS:
        check_thinking(pipe_name, model, settings, deck)
    if deck is None:
        return _read_by(model, {}, settings)
    allowed = deck.allowed
    if allowed is not None and not allowed.allows(model):
        refused = allowed.refusal(pipe_name, "model", "model", model)
        raise ApplicationError(refused, type=ErrorType.MODEL_NOT_ALLOWED, non_retryable=True)
    connection = deck.connection(model)
    sent = {**connection, **_read_by(model, connection, settings)}
    cap = deck.max_output_tokens
    if cap is not None and kind in CHAT_KINDS:
        check_output_tokens(pipe_name, settings, deck)  # again, at the request (see above)
        if all(sent.get(name) is None for name in OUTPUT_TOKEN_SETTINGS):
            sent["max_tokens"] = cap  # so the bill, and a budget's estimate, are bounded
    return sent


def _read_by(
    model: str, connection: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The pipe's settings ``model`` reads: ``offline_*`` options go only to durapipe's own models.

    They pass the generation-settings check for any pipe (a pipe's model is an alias a worker's
    deck may point anywhere), so sent to a real provider they would put any keys and values a
    client chose into its request's body (litellm passes unknown keyword arguments through).
    """
    own = model.split("/", 1)[0] == _OWN_PROVIDER
    if own and connection.get("custom_llm_provider") in (None, _OWN_PROVIDER):
        return dict(settings)
    return {name: value for name, value in settings.items() if not name.startswith(OFFLINE_PREFIX)}
