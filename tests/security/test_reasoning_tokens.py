"""A worker's cap on a request's output tokens (``DURAPIPE_MAX_OUTPUT_TOKENS``) holds for a pipe
that asks a model to reason (``settings.reasoning_effort``): each provider family bills reasoning
as output tokens within the limit the request sends, and litellm sends the cap as that limit.

What reaches the wire, for each family litellm maps ``reasoning_effort`` for:

- OpenAI's o-series and gpt-5: ``max_completion_tokens`` (litellm renames the ``max_tokens``
  durapipe sends), which bounds reasoning and answer together;
- Anthropic: ``thinking.budget_tokens`` (1,024 to 16,384 by effort) beside ``max_tokens`` as
  sent. Thinking counts within ``max_tokens``; a request that sends no ``max_tokens`` is sent by
  litellm with the budget plus 4,096, which is why the worker always sends one;
- Gemini: ``thinkingConfig`` beside ``maxOutputTokens`` as sent; thoughts count within it.

The fake OpenAI-compatible provider answers the OpenAI shape; a recorder in this module answers
Anthropic's and Gemini's, each keeping the bodies it received.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

import durapipe as dp
from durapipe._settings import settings
from durapipe.testing import FakeProvider, Reply

CAP = "DURAPIPE_MAX_OUTPUT_TOKENS"


class Recorder:
    """Anthropic's ``/v1/messages`` and Gemini's ``:generateContent`` on 127.0.0.1, recording
    each request's body and answering it with one short text."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.base_url = ""

    async def _messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        return web.json_response(
            {
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": "said"}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2},
            }
        )  # fmt: skip

    async def _generate(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.json_response(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": "said"}], "role": "model"},
                        "finishReason": "STOP", "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5
                },
            }
        )  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/models/{model}:generateContent", self._generate)
        return app


@pytest.fixture
async def recorder(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Recorder]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    recorder = Recorder()
    runner = web.AppRunner(recorder.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def reasoning(model: str, api_base: str, settings: str) -> dp.Pipeline:
    """A pipeline whose one llm pipe asks ``model`` (through ``api_base``) to reason."""
    return dp.load_yaml(
        f"""
models:
  thinker: {{model: {model}, api_base: "{api_base}"}}
pipes:
  ask:
    kind: llm
    model: thinker
    inputs: {{text: text}}
    prompt: "Say: {{{{ text }}}}"
    settings: {settings}
    retry: {{max_attempts: 1}}
"""
    )


@pytest.mark.parametrize("effort", ["low", "high", "max"])
async def test_an_anthropic_models_thinking_is_sent_within_the_cap(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, effort: str
) -> None:
    monkeypatch.setenv(CAP, "20000")
    pipeline = reasoning(
        "anthropic/claude-sonnet-4-5", recorder.base_url, f"{{reasoning_effort: {effort}}}"
    )
    assert (await dp.run_local(pipeline, "ask", {"text": "x"})).output == "said"
    [body] = recorder.bodies
    # Without the cap sent, litellm sends max_tokens as the thinking budget plus 4,096 (8,192
    # for 'high'; 20,480 for 'max', past this cap).
    assert body["max_tokens"] == 20000
    assert body["thinking"]["type"] == "enabled"
    assert body["thinking"]["budget_tokens"] < body["max_tokens"]


async def test_a_gemini_models_thinking_is_sent_within_the_cap(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAP, "1000")
    pipeline = reasoning("gemini/gemini-2.5-flash", recorder.base_url, "{reasoning_effort: high}")
    assert (await dp.run_local(pipeline, "ask", {"text": "x"})).output == "said"
    [body] = recorder.bodies
    config = body["generationConfig"]
    assert config["max_output_tokens"] == 1000, json.dumps(config)
    assert config["thinkingConfig"]["thinkingBudget"] > 0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    with FakeProvider() as fake:
        fake.set_default(Reply(content="said", completion_tokens=10))
        yield fake


@pytest.mark.parametrize(
    ("settings", "expected"),
    [("{reasoning_effort: high}", 1000), ("{reasoning_effort: high, max_tokens: 400}", 400)],
)
async def test_an_openai_reasoning_models_limit_is_the_cap(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider, settings: str, expected: int,
) -> None:  # fmt: skip
    # o-series and gpt-5 count reasoning within max_completion_tokens; litellm renames the
    # max_tokens durapipe sends (the fake's Call.max_tokens reads either).
    monkeypatch.setenv(CAP, "1000")
    pipeline = reasoning("openai/o3-mini", fake.base_url, settings)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(client, pipeline, "ask", {"text": "x"}, task_queue=task_queue)
    assert result.output == "said"
    assert (await dp.run_local(pipeline, "ask", {"text": "y"})).output == "said"
    assert [call.max_tokens for call in fake.calls] == [expected, expected]


def test_a_cap_below_what_every_api_accepts_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenAI's Responses API (which litellm calls for o1-pro, gpt-5-codex, openai/responses/*)
    # takes at least 16 output tokens, and litellm raises a smaller limit to 16: a cap of 10
    # would send 16.
    monkeypatch.setenv(CAP, "10")
    with pytest.raises(dp.ConfigError) as refused:
        settings()
    assert str(refused.value) == (
        f"{CAP}='10' is not valid: Input should be greater than or equal to 16"
    )
    monkeypatch.setenv(CAP, "16")
    assert settings().max_output_tokens == 16
