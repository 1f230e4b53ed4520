"""A pipe's ``offline_*`` settings (options of durapipe's offline model) reach no other provider.

They pass the generation-settings check for every pipe, whatever its model: a pipe's model may be
an alias that the worker's deck points anywhere. Sent with a real provider's request, litellm put
each one, with any value a client chose, into the request's body.
"""

from __future__ import annotations

from typing import Any

import pytest

import durapipe as dp
from durapipe.activities._settings import provider_settings
from durapipe.spec._deck import GENERATION_SETTINGS, ModelDeck, ModelEntry
from durapipe.testing import FakeProvider, Reply

PIPES = """
models:
  gpt:
    model: openai/fake-gpt
    api_base: "{url}"
pipes:
  plain:
    kind: llm
    model: gpt
    inputs: {{text: text}}
    prompt: "Say {{{{ text }}}}."
  padded:
    kind: llm
    model: gpt
    inputs: {{text: text}}
    prompt: "Say {{{{ text }}}}."
    settings:
      offline_api_base: "http://127.0.0.1:9/v1"
      offline_extra_body: {{anything: [1, 2, 3]}}
      offline_delay: 0
"""
PADDING: dict[str, Any] = {"offline_extra_body": {"anything": 1}, "offline_tool_rounds": 2}


async def test_a_real_providers_request_carries_no_offline_setting(
    temporal_address: str, task_queue: str
) -> None:
    async with FakeProvider() as provider:
        provider.set_default(Reply(content="said"))
        pipeline = dp.load_yaml(PIPES.format(url=provider.base_url))
        client = await dp.connect(temporal_address, pipeline=pipeline)
        async with dp.build_worker(client, task_queue=task_queue):
            for pipe in ("plain", "padded"):
                run = await dp.run(client, pipeline, pipe, {"text": "hi"}, task_queue=task_queue)
                assert run.output == "said"
    plain, padded = provider.calls
    # The same prompt to the same model: byte for byte the same body (only headers differ).
    assert padded.body_sha256 == plain.body_sha256


@pytest.mark.parametrize("kind", ["llm", "agent", "image", "extract"])
def test_only_durapipes_own_models_are_sent_offline_settings(kind: str) -> None:
    deck = ModelDeck.of({"gw": ModelEntry(model="openai/fake", api_base="http://gw/v1")})
    generation = {min(GENERATION_SETTINGS[kind]): 1}
    settings = {**PADDING, **generation}
    sent = provider_settings(kind, "p", "openai/fake", settings, deck)
    assert sent == {"api_base": "http://gw/v1", **generation}
    assert provider_settings(kind, "p", "openai/fake", settings, None) == generation
    # A deck entry may route a durapipe/ name to another provider: that one is not durapipe's.
    routed = ModelDeck.of({"x": ModelEntry(model="durapipe/x", custom_llm_provider="openai")})
    assert "offline_tool_rounds" not in provider_settings(kind, "p", "durapipe/x", settings, routed)
    assert provider_settings(kind, "p", "durapipe/offline", settings, deck) == settings
