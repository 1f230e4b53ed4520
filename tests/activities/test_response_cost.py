"""What a step's answer cost: litellm's own pricing of the response, never asked twice."""

from __future__ import annotations

from typing import Any

import pytest

import durapipe as dp
from durapipe.activities import run_llm
from durapipe.activities._llm import usage_of
from durapipe.adapters._litellm import litellm_module, response_attribute, response_cost
from durapipe.testing import FakeProvider
from tests.support import call_to, deck_for


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Each time durapipe asks litellm to price a response itself."""
    calls: list[dict[str, Any]] = []

    def completion_cost(**kwargs: Any) -> float:
        calls.append(kwargs)
        return 0.5

    monkeypatch.setattr(litellm_module(), "completion_cost", completion_cost)
    return calls


async def test_a_model_without_a_price_is_not_priced_again(asked: list[dict[str, Any]]) -> None:
    async with FakeProvider() as fake:  # gpt-keep has no price anywhere
        result = await run_llm(call_to(), 1, None, deck_for(fake.base_url))
    assert result.usage.output_tokens > 0
    assert result.usage.cost_usd == 0.0  # litellm found no price: the step cost what we cannot know
    assert asked == []  # ... and durapipe did not ask again (a millisecond per step)


class _Response:
    def __init__(self, hidden: dict[str, Any]) -> None:
        self._hidden_params = hidden


def test_litellm_s_price_is_used_and_a_response_it_never_priced_is_priced(
    asked: list[dict[str, Any]],
) -> None:
    assert response_cost(_Response({"response_cost": 0.25})) == 0.25
    assert asked == []
    assert response_cost(_Response({})) == 0.5  # litellm did not price it (another call type)
    assert len(asked) == 1


async def test_a_response_s_usage_and_hidden_params_read_as_getattr_reads_them() -> None:
    # Read from pydantic's extra and private slots (not through its __getattr__): the same objects.
    response = await litellm_module().acompletion(
        model=dp.OFFLINE_MODEL, messages=[{"role": "user", "content": "two words"}], num_retries=0
    )
    for name in ("usage", "_hidden_params", "choices", "model", "missing", "_missing"):
        assert response_attribute(response, name) is getattr(response, name, None)
    assert response_attribute(_Response({"response_cost": 1.0}), "_hidden_params") == {
        "response_cost": 1.0
    }
    assert response_attribute(object(), "usage") is None
    usage = usage_of(response)
    assert usage.input_tokens == response.usage.prompt_tokens > 0
    assert usage.output_tokens == response.usage.completion_tokens > 0
