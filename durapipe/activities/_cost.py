"""The worst-case cost of an llm call, from litellm's price data (checked against a run's budget).

worst case = asks * (input tokens * input price) + asks * (max output tokens * output price), where

- input tokens: litellm's ``token_counter`` over the rendered messages plus the JSON schema of a
  structured output; each re-ask adds the previous answer (max output tokens) and the complaint;
- max output tokens: the pipe's ``max_tokens`` / ``max_completion_tokens`` setting, else the
  model's ``max_output_tokens`` in litellm's price data, else 4096;
- asks: 1, or ``reask + 1`` for a structured output;
- a model litellm has no price for estimates (and costs) 0.
"""

from __future__ import annotations

import json
from typing import Any

from durapipe.activities._llm import messages_for, response_format
from durapipe.adapters._litellm import litellm_module
from durapipe.runtime._calls import LlmCall

DEFAULT_MAX_OUTPUT_TOKENS = 4096
# The re-ask complaint is a sentence plus the validation error; this bounds it generously.
REASK_TOKENS = 200


def estimate_cost(call: LlmCall) -> float:
    """The most ``call`` can cost in USD (see the module docstring for the formula)."""
    litellm = litellm_module()
    pipe = call.pipe
    model = pipe.model or "durapipe/offline"
    info = _model_info(model)
    input_price = float(info.get("input_cost_per_token") or 0.0)
    output_price = float(info.get("output_cost_per_token") or 0.0)
    if not input_price and not output_price:
        return 0.0
    messages = messages_for(call)
    fmt, _ = response_format(pipe.output, call.structures)
    input_tokens = int(litellm.token_counter(model=model, messages=messages))
    if fmt is not None:
        input_tokens += int(litellm.token_counter(model=model, text=json.dumps(fmt)))
    max_output = int(
        pipe.settings.get("max_tokens")
        or pipe.settings.get("max_completion_tokens")
        or info.get("max_output_tokens")
        or DEFAULT_MAX_OUTPUT_TOKENS
    )
    asks = pipe.reask + 1 if fmt is not None else 1
    total_input = sum(input_tokens + ask * (max_output + REASK_TOKENS) for ask in range(asks))
    return total_input * input_price + asks * max_output * output_price


def _model_info(model: str) -> dict[str, Any]:
    try:
        return dict(litellm_module().get_model_info(model))
    except Exception:  # litellm raises for models it has no data for: no price known
        return {}
