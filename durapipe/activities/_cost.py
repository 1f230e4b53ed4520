"""The worst-case cost of a paid call (llm, agent turn, image), from litellm's price data (checked against a run's budget).

worst case = asks * (input tokens * input price) + asks * (max output tokens * output price), where

- input tokens: litellm's ``token_counter`` over the rendered messages plus the JSON schema of a
  structured output; each re-ask adds the previous answer (max output tokens) and the complaint;
- max output tokens: the larger of the pipe's ``max_tokens`` and ``max_completion_tokens``
  settings (one below 1 bounds nothing), else the model's ``max_output_tokens`` in litellm's
  price data, else 4096; at most the worker's cap (``DURAPIPE_MAX_OUTPUT_TOKENS``, which a
  request asking none is sent with);
- asks: 1, or ``reask + 1`` for a structured output;
- an llm step with ``fallbacks``: the dearest model of its waterfall, any of which may answer;
- a model litellm has no price for estimates (and costs) 0.

An agent's turn is one request by the same rule: its conversation so far (``messages``) and its
tools' schemas are the input, one ask. An image step's worst case is its ``count`` images at the
model's price per image (litellm's image price for the size, else its ``output_cost_per_image``).
An extract step is not estimated: its price is per page (``ocr_cost_per_page``), and the pages
are known only once the document is read, which an estimate next to the workflow should not do.
"""

from __future__ import annotations

import json
from typing import Any

from durapipe.activities._llm import OFFLINE_PREFIX, messages_for, response_format
from durapipe.activities._settings import OUTPUT_TOKEN_SETTINGS
from durapipe.adapters._litellm import litellm_module
from durapipe.runtime._budget import SPEND_CAP_SETTING
from durapipe.runtime._calls import AgentTurnCall, ImageCall, LlmCall
from durapipe.spec import OFFLINE_MODEL

DEFAULT_MAX_OUTPUT_TOKENS = 4096
# The re-ask complaint is a sentence plus the validation error; this bounds it generously.
REASK_TOKENS = 200


def estimate_cost(
    call: LlmCall | AgentTurnCall | ImageCall, max_output_tokens: int | None = None
) -> float:
    """The most ``call`` can cost in USD (see the module docstring for the formula), on a worker
    whose cap on a request's output tokens is ``max_output_tokens`` (None: no cap)."""
    if isinstance(call, AgentTurnCall):
        return _turn_cost(call, max_output_tokens)
    if isinstance(call, ImageCall):
        return _image_cost(call)
    return _llm_cost(call, max_output_tokens)


def unpriced_model(call: LlmCall | AgentTurnCall | ImageCall) -> str | None:
    """The first model that may answer ``call`` whose price is unknown (litellm has no data on it,
    or for an image step no price for its size), or None. durapipe's own offline models are free.

    Such a call estimates and costs $0, so a cap on what a run spends cannot bound it.
    """
    if isinstance(call, LlmCall):
        chain = [call.pipe.model or OFFLINE_MODEL, *call.pipe.fallbacks]
    else:
        chain = [call.pipe.model or OFFLINE_MODEL]
    for model in chain:
        if model.startswith(OFFLINE_PREFIX):
            continue
        if isinstance(call, ImageCall):
            if _image_cost(call) == 0.0:
                return model
        elif not _model_info(model):
            return model
    return None


def unpriced_refusal(pipe_name: str, model: str) -> str:
    """Why a worker that caps a run's spend refuses a call to ``model``, which has no price."""
    return (
        f"pipe '{pipe_name}': model '{model}' has no known price, so this worker, which caps "
        f"what one run spends ({SPEND_CAP_SETTING}), cannot bound what the call costs; give its "
        "price in DURAPIPE_MODEL_PRICES, or call a model with a known price"
    )


def _token_prices(model: str) -> tuple[dict[str, Any], float, float]:
    """litellm's data on ``model``, and its input and output prices per token (0.0 unknown)."""
    info = _model_info(model)
    input_price = float(info.get("input_cost_per_token") or 0.0)
    return info, input_price, float(info.get("output_cost_per_token") or 0.0)


def _llm_cost(call: LlmCall, cap: int | None) -> float:
    # Any model of a waterfall may be the one that answers (a client can name a first model that
    # always fails): the worst case is the dearest one's.
    chain = [call.pipe.model or "durapipe/offline", *call.pipe.fallbacks]
    return max(_model_cost(call, model, cap) for model in chain)


def _model_cost(call: LlmCall, model: str, cap: int | None) -> float:
    pipe = call.pipe
    info, input_price, output_price = _token_prices(model)
    if not input_price and not output_price:
        return 0.0
    fmt, _ = response_format(pipe.output, call.structures)
    input_tokens = _request_tokens(model, messages_for(call), fmt)
    max_output = _max_output(pipe.settings, info, cap)
    asks = pipe.reask + 1 if fmt is not None else 1
    total_input = sum(input_tokens + ask * (max_output + REASK_TOKENS) for ask in range(asks))
    return total_input * input_price + asks * max_output * output_price


def _request_tokens(model: str, messages: Any, fmt: Any, tools: list[Any] | None = None) -> int:
    """Input tokens of one request: its messages (and tool schemas), plus the JSON schema of a
    structured output (``fmt``) when it has one."""
    litellm = litellm_module()
    tokens = int(litellm.token_counter(model=model, messages=messages, tools=tools or None))
    if fmt is not None:
        tokens += int(litellm.token_counter(model=model, text=json.dumps(fmt)))
    return tokens


def _model_info(model: str) -> dict[str, Any]:
    try:
        return dict(litellm_module().get_model_info(model))
    except Exception:  # litellm raises for models it has no data for: no price known
        return {}


def _turn_cost(call: AgentTurnCall, cap: int | None) -> float:
    pipe = call.pipe
    model = pipe.model or "durapipe/offline"
    info, input_price, output_price = _token_prices(model)
    if not input_price and not output_price:
        return 0.0
    fmt, _ = response_format(pipe.output, call.structures)
    input_tokens = _request_tokens(model, call.messages, fmt, tools=call.tools)
    return input_tokens * input_price + _max_output(pipe.settings, info, cap) * output_price


def _image_cost(call: ImageCall) -> float:
    pipe = call.pipe
    model = pipe.model or OFFLINE_MODEL
    if model == OFFLINE_MODEL:
        return 0.0
    try:
        from litellm.cost_calculator import default_image_cost_calculator

        bare, provider, _, _ = litellm_module().get_llm_provider(model)
        size = pipe.size.replace("x", "-x-")  # litellm's price keys: 1024-x-1024/dall-e-3
        return float(
            default_image_cost_calculator(
                model=bare, custom_llm_provider=provider, n=pipe.count, size=size
            )
        )
    except Exception:  # litellm has no price by size for it: its price per image, if any
        return pipe.count * float(_model_info(model).get("output_cost_per_image") or 0.0)


def _max_output(settings: dict[str, Any], info: dict[str, Any], cap: int | None) -> int:
    # The larger of the two: a provider may honour either (litellm maps one onto the other), and
    # a value below one is no bound at all to some (see `check_output_tokens`).
    asked = max((_tokens(settings.get(name)) for name in OUTPUT_TOKEN_SETTINGS), default=0)
    most = int(asked or info.get("max_output_tokens") or 0)
    if cap is not None:
        # A request asking none is sent with the cap; one asking more is refused by the worker.
        return min(most, cap) if most else cap
    return most or DEFAULT_MAX_OUTPUT_TOKENS


def _tokens(value: Any) -> int:
    """A setting's output tokens, or 0 when it sets no bound a provider is sure to keep."""
    try:
        tokens = int(value) if value is not None and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        return 0
    return max(tokens, 0)
