"""The trust boundary of `durapipe serve`, on specs alone (no server needed)."""

from __future__ import annotations

import pytest

from durapipe.adapters import load_yaml
from durapipe.adapters.mthds import ModelDeck, load_mthds
from durapipe.serve import Capabilities, trust_problems
from durapipe.spec import AgentPipe, ExtractPipe, ImagePipe, LlmPipe, Pipeline, resolve
from durapipe.spec._deck import CONNECTION_SETTINGS, GENERATION_SETTINGS, settings_problems

DECK = ModelDeck(
    aliases={"fast": "openai/gpt-4o-mini"},
    presets={"house": {"model": "openai/house-model", "api_base": "http://10.0.0.5/v1"}},
    waterfalls={"safe": {"models": ["anthropic/claude-x", "openai/gpt-4o-mini"]}},
)
BUNDLE = """
domain      = "trust"
description = "Model references through the worker's deck"

[pipe.ask]
type        = "PipeLLM"
description = "Ask"
inputs      = { q = "Text" }
output      = "Text"
model       = "{model}"
prompt      = "Answer: $q"
"""


def problems(model: str) -> list[tuple[str, str, str]]:
    pipeline = load_mthds(BUNDLE.replace("{model}", model), deck=DECK)
    return trust_problems(resolve(pipeline, "ask"), Capabilities.of(None, (), DECK))


def test_the_deck_is_what_a_bundle_may_name() -> None:
    assert problems("@fast") == []
    assert problems("$house") == []  # the preset's endpoint is the deck's, so it may travel
    assert problems("~safe") == []  # every model of the waterfall is in the deck
    [(pipe, field, sentence)] = problems("openai/gpt-5")
    assert (pipe, field) == ("ask", "model")
    assert "openai/gpt-5" in sentence and "openai/gpt-4o-mini" in sentence


def test_a_client_cannot_bring_an_endpoint_or_a_function() -> None:
    capabilities = Capabilities.of(None, (), DECK)
    pipeline = load_yaml(
        """
version: 1
pipes:
  ask:
    kind: llm
    model: openai/house-model
    inputs: {q: text}
    prompt: "{{ q }}"
    settings: {api_base: "http://evil.example/v1", temperature: 0.2}
  run:
    kind: tool
    function: os:getcwd
    inputs: {q: text}
""",
        source="m.yaml",
    )
    found = trust_problems(resolve(pipeline, "ask"), capabilities) + trust_problems(
        resolve(pipeline, "run"), capabilities
    )
    assert [(pipe, field) for pipe, field, _ in found] == [
        ("ask", "settings.api_base"),
        ("run", "function"),
    ]


LEAVES = {"llm": LlmPipe, "agent": AgentPipe, "image": ImagePipe, "extract": ExtractPipe}
# Every name either list could hold, and names neither may: an endpoint, a key, a callback.
CANDIDATES = sorted(
    frozenset().union(*GENERATION_SETTINGS.values())
    | CONNECTION_SETTINGS
    | {"callbacks", "api_key", "size", "offline_tool_rounds", "made_up"}
)


@pytest.mark.parametrize("kind", sorted(LEAVES))
def test_serve_lets_a_client_set_exactly_what_the_deck_lets_a_pipe_carry(kind: str) -> None:
    assert set(GENERATION_SETTINGS) == set(LEAVES)  # a new kind with settings is checked here too
    for name in CANDIDATES:
        pipe = LEAVES[kind].model_construct(settings={name: 1})
        spec = Pipeline.model_construct(pipes={"p": pipe})
        fields = [field for _, field, _ in trust_problems(spec, Capabilities())]
        served = f"settings.{name}" not in fields
        carried = not settings_problems(kind, {name: 1})
        assert served == carried, f"{kind} pipe, setting '{name}': serve {served}, deck {carried}"
