"""A worker's cap on a request's output tokens (``DURAPIPE_MAX_OUTPUT_TOKENS``) holds for a pipe
that asks a model to reason (``settings.reasoning_effort``): each provider family bills reasoning
as output tokens within the limit the request sends, and litellm sends the cap as that limit.

What reaches the wire, for each family litellm maps ``reasoning_effort`` for:

- OpenAI's o-series and gpt-5: ``max_completion_tokens`` (litellm renames the ``max_tokens``
  durapipe sends), which bounds reasoning and answer together;
- Anthropic: ``thinking.budget_tokens`` (1,024 to 16,384 by effort) beside ``max_tokens`` as
  sent. Thinking counts within ``max_tokens``; a request that sends no ``max_tokens`` is sent by
  litellm with the budget plus 4,096, which is why the worker always sends one. Anthropic answers
  400 to a budget that is not below the ``max_tokens`` sent, so such a request is refused before
  anything is sent, in one sentence saying what to do;
- Gemini: ``thinkingConfig`` beside ``maxOutputTokens`` as sent; thoughts count within it (a
  budget past the limit is legal there: generation stops at the limit, so it is sent).

The fake OpenAI-compatible provider answers the OpenAI shape; a recorder in this module answers
Anthropic's and Gemini's, each keeping the bodies it received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

import durapipe as dp
from durapipe._settings import settings
from durapipe.adapters._litellm import thinking_budget
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
        thinking = body.get("thinking") or {}
        interleaved = "interleaved-thinking" in request.headers.get("anthropic-beta", "")
        if thinking.get("budget_tokens", 0) >= body["max_tokens"] and not interleaved:
            message = "`max_tokens` must be greater than `thinking.budget_tokens`."
            error = {"type": "invalid_request_error", "message": message}
            return web.json_response({"type": "error", "error": error}, status=400)  # Anthropic's
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


def reasoning(model: str, api_base: str, settings: str, attempts: int = 1) -> dp.Pipeline:
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
    retry: {{max_attempts: {attempts}}}
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
    # A thinking budget (4,096 for 'high') past maxOutputTokens is legal on Gemini: generation
    # stops at the limit (finishReason MAX_TOKENS), so the request is sent, not refused as
    # Anthropic's would be.
    monkeypatch.setenv(CAP, "1000")
    pipeline = reasoning("gemini/gemini-2.5-flash", recorder.base_url, "{reasoning_effort: high}")
    assert (await dp.run_local(pipeline, "ask", {"text": "x"})).output == "said"
    [body] = recorder.bodies
    config = body["generationConfig"]
    assert config["max_output_tokens"] == 1000, json.dumps(config)
    assert config["thinkingConfig"]["thinkingBudget"] > 0


# An Anthropic model with extended thinking by budget (no adaptive thinking).
OLDER = "anthropic/claude-3-7-sonnet-20250219"
LOWER = "ask for a lower effort (or 'none')"


def too_much_thinking(effort: str, budget: str, limit: str) -> str:
    return (
        f"pipe 'ask', field 'settings.reasoning_effort': '{effort}' gives {OLDER} a thinking "
        f"budget of {budget} tokens, which does not fit the {limit} output tokens"
    )


@pytest.mark.parametrize(
    ("effort", "expected"), [("low", 1024), ("medium", 2048), ("high", 4096), ("max", 16384)]
)
def test_litellms_thinking_budgets_are_the_ones_refusals_quote(effort: str, expected: int) -> None:
    # litellm's own mapping (get_optional_params), read rather than copied: a litellm that maps
    # an effort to another budget fails here first.
    assert thinking_budget(OLDER, effort, 100_000, {}) == expected
    bedrock = "bedrock/us.anthropic.claude-3-7-sonnet-20250219-v1:0"
    assert thinking_budget(bedrock, effort, 100_000, {}) == expected
    for model in ("gemini/gemini-2.5-flash", "openai/o3-mini", "anthropic/claude-opus-4-6"):
        assert thinking_budget(model, effort, 100_000, {}) is None, model


@pytest.mark.parametrize(
    ("cap", "settings", "expected"),
    [
        (
            "1000",
            "{reasoning_effort: high}",
            f"{too_much_thinking('high', '4,096', '1,000')} this request may use ({CAP}); "
            f"{LOWER}, or raise the cap on the workers",
        ),
        (
            None,
            "{reasoning_effort: low, max_tokens: 1024}",
            f"{too_much_thinking('low', '1,024', '1,024')} settings.max_tokens asks for; "
            f"{LOWER}, or more than 1,024 output tokens",
        ),
        (
            "20000",
            "{reasoning_effort: max, max_completion_tokens: 4000}",
            f"{too_much_thinking('max', '16,384', '4,000')} settings.max_completion_tokens "
            f"asks for; {LOWER}, or more than 16,384 output tokens",
        ),
        (
            "8000",
            "{reasoning_effort: max, max_tokens: 4000}",
            f"{too_much_thinking('max', '16,384', '4,000')} settings.max_tokens asks for, nor "
            f"the 8,000 this worker lets a request ask for ({CAP}); {LOWER}, or raise the cap "
            "on the workers",
        ),
    ],
)
async def test_a_thinking_budget_the_request_cannot_hold_is_refused_before_anything_is_sent(
    temporal_address: str, task_queue: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
    cap: str | None, settings: str, expected: str,
) -> None:  # fmt: skip
    # Anthropic answers 400 to a budget at or above the max_tokens sent, which the step showed as
    # durapipe.BadRequest in the provider's words: nothing named the cap, or what to do.
    if cap is None:
        monkeypatch.delenv(CAP, raising=False)
    else:
        monkeypatch.setenv(CAP, cap)
    pipeline = reasoning(OLDER, recorder.base_url, settings, attempts=3)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "ask", {"text": "x"}, task_queue=task_queue)
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 30)
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, "ask", {"text": "x"})
    for refused in (failed.value, local.value):
        assert (refused.cause_type, refused.cause) == ("durapipe.SettingNotAllowed", expected)
        assert refused.attempts == 1  # not retried: the next attempt would ask the same
    assert recorder.bodies == []  # not one request, on Temporal or in-process


async def test_a_fallback_whose_thinking_does_not_fit_is_refused_before_the_first_model_is_asked(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refusal at the fallback's own request would come after the first model answered, or
    # hand the step on: every model of the waterfall is checked before any is asked.
    monkeypatch.setenv(CAP, "1000")
    pipeline = dp.load_yaml(
        f"""
models:
  thinker: {{model: gemini/gemini-2.5-flash, api_base: "{recorder.base_url}"}}
  older: {{model: {OLDER}, api_base: "{recorder.base_url}"}}
pipes:
  ask:
    kind: llm
    model: thinker
    fallbacks: [older]
    inputs: {{text: text}}
    prompt: "Say: {{{{ text }}}}"
    settings: {{reasoning_effort: high}}
"""
    )
    with pytest.raises(dp.StepFailed) as refused:
        await dp.run_local(pipeline, "ask", {"text": "x"})
    assert refused.value.cause_type == "durapipe.SettingNotAllowed"
    assert refused.value.cause.startswith(too_much_thinking("high", "4,096", "1,000"))
    assert recorder.bodies == []


async def test_an_agents_turn_whose_thinking_does_not_fit_is_refused(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAP, "1000")
    pipeline = dp.load_yaml(
        f"""
models:
  thinker: {{model: {OLDER}, api_base: "{recorder.base_url}"}}
pipes:
  ask:
    kind: agent
    model: thinker
    inputs: {{text: text}}
    prompt: "Say: {{{{ text }}}}"
    settings: {{reasoning_effort: high}}
    retry: {{max_attempts: 3}}
"""
    )
    with pytest.raises(dp.StepFailed) as refused:
        await dp.run_local(pipeline, "ask", {"text": "x"})
    assert (refused.value.cause_type, refused.value.cause, refused.value.attempts) == (
        "durapipe.SettingNotAllowed",
        f"{too_much_thinking('high', '4,096', '1,000')} this request may use ({CAP}); "
        f"{LOWER}, or raise the cap on the workers",
        1,
    )
    assert recorder.bodies == []


@pytest.mark.parametrize(
    ("cap", "settings", "limit", "budget"),
    [
        ("5000", "{reasoning_effort: high}", 5000, 4096),
        (None, "{reasoning_effort: low, max_tokens: 1025}", 1025, 1024),
        ("20000", "{reasoning_effort: high, max_completion_tokens: 4097}", 4097, 4096),
    ],
)
async def test_a_thinking_budget_that_fits_is_sent_unchanged(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
    cap: str | None, settings: str, limit: int, budget: int,
) -> None:  # fmt: skip
    if cap is None:
        monkeypatch.delenv(CAP, raising=False)
    else:
        monkeypatch.setenv(CAP, cap)
    pipeline = reasoning(OLDER, recorder.base_url, settings)
    assert (await dp.run_local(pipeline, "ask", {"text": "x"})).output == "said"
    [body] = recorder.bodies
    assert (body["max_tokens"], body["thinking"]) == (
        limit,
        {"type": "enabled", "budget_tokens": budget},
    )


async def test_interleaved_thinking_may_think_past_the_limit(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With Anthropic's interleaved-thinking beta (a header only the worker's deck can send) the
    # budget spans a turn's thinking blocks and may pass max_tokens: nothing to refuse.
    monkeypatch.setenv(CAP, "1000")
    beta = "{anthropic-beta: interleaved-thinking-2025-05-14}"
    pipeline = dp.load_yaml(
        f"""
models:
  thinker:
    model: {OLDER}
    api_base: "{recorder.base_url}"
    extra_headers: {beta}
pipes:
  ask:
    kind: llm
    model: thinker
    inputs: {{text: text}}
    prompt: "Say: {{{{ text }}}}"
    settings: {{reasoning_effort: high}}
"""
    )
    assert (await dp.run_local(pipeline, "ask", {"text": "x"})).output == "said"
    [body] = recorder.bodies
    assert (body["max_tokens"], body["thinking"]["budget_tokens"]) == (1000, 4096)


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
