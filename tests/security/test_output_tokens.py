"""A worker caps the output tokens one chat request may ask for (``DURAPIPE_MAX_OUTPUT_TOKENS``):
each is billed, and a client's ``settings.max_tokens: 10000000`` (or none at all) made every call
of a run billable up to the model's maximum. A request asking more is refused before the provider
is called, one asking none is sent with the cap, whatever spelling or raw input the run came
from, on Temporal and with ``--local``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.activities import estimate_cost
from durapipe.adapters import pipe_run
from durapipe.runtime import LlmCall
from durapipe.testing import FakeProvider, Reply
from tests.support import priced_openai, raw_run_fails

CAP = "DURAPIPE_MAX_OUTPUT_TOKENS"
# $0.001 an output token: 1,000 output tokens cost $1, the model's maximum in the fake provider's
# price data (1,000,000) $1,000.
PRICES = {"gpt-cap": (1e-6, 1e-3)}
ASK = """
pipes:
  ask:
    kind: llm
    model: openai/gpt-cap
    inputs: {text: text}
    prompt: "Say: {{ text }}"
    retry: {max_attempts: 1}
"""
HELPER = """
pipes:
  helper:
    kind: agent
    model: openai/gpt-cap
    inputs: {text: text}
    prompt: "Say: {{ text }}"
    retry: {max_attempts: 1}
"""
BUNDLE = """domain = "capped"
main_pipe = "ask"

[pipe.ask]
type = "PipeLLM"
description = "Say it"
inputs = { text = "Text" }
output = "Text"
model = { model = "openai/gpt-cap", max_tokens = 10000000 }
prompt = "Say: $text"
"""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with priced_openai(PRICES) as fake:
        fake.set_default(Reply(content="said", completion_tokens=10))
        yield fake


def with_settings(text: str, settings: str) -> str:
    return text.replace("    prompt:", f"    settings: {settings}\n    prompt:")


def spelled(spelling: str, tmp_path: Path) -> tuple[dp.Pipeline, str, str]:
    """A pipeline asking 10,000,000 output tokens per request, its pipe and the setting's name."""
    if spelling == "yaml":
        return dp.load_yaml(with_settings(ASK, "{max_tokens: 10000000}")), "ask", "max_tokens"
    if spelling == "agent":
        return dp.load_yaml(with_settings(HELPER, "{max_tokens: 10000000}")), "helper", "max_tokens"
    if spelling == "python":
        ask = dp.llm(
            "ask",
            model="openai/gpt-cap",
            inputs={"text": str},
            prompt="Say: {{ text }}",
            settings={"max_completion_tokens": 10_000_000},
            retry={"max_attempts": 1},
        )
        return dp.pipeline(ask), "ask", "max_completion_tokens"
    file = tmp_path / "capped.mthds"
    file.write_text(BUNDLE)
    pipeline = dp.load(file)
    [name] = [n for n, p in pipeline.pipes.items() if p.kind == "llm"]
    return pipeline, name, "max_tokens"


def refusal(pipe: str, setting: str) -> str:
    return (
        f"pipe '{pipe}', field 'settings.{setting}': asks for up to 10,000,000 output tokens per "
        f"request, and this worker lets a request ask for at most 1,000 ({CAP}); ask for 1,000 "
        "or fewer, or raise the setting on the workers"
    )


@pytest.mark.parametrize("spelling", ["yaml", "python", "mthds", "agent"])
async def test_a_request_over_the_cap_never_reaches_the_provider(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider, tmp_path: Path, spelling: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(CAP, "1000")
    pipeline, pipe, setting = spelled(spelling, tmp_path)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, pipe, {"text": "x"}, task_queue=task_queue)
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 30)
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, pipe, {"text": "x"})
    for refused in (failed.value, local.value):
        assert (refused.cause_type, refused.cause) == (
            "durapipe.SettingNotAllowed",
            refusal(pipe, setting),
        )
        assert refused.attempts == 1  # not retried: the next attempt would ask the same
    assert fake.calls == []  # not one request, on Temporal or in-process


def sent(fake: FakeProvider) -> list[int | None]:
    return [call.max_tokens for call in fake.calls]


@pytest.mark.parametrize(
    ("cap", "settings", "expected"),
    [
        ("1000", None, 1000),  # asks none: sent with the cap
        ("1000", "{max_tokens: 500}", 500),  # asks less: sent as asked
        ("1000", "{max_completion_tokens: 1000}", 1000),
        (None, None, None),  # no cap (the default): sent as before, with none
    ],
    ids=["none-asked", "under-the-cap", "at-the-cap", "no-cap"],
)
async def test_a_request_within_the_cap_is_sent_bounded(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider, cap: str | None, settings: str | None, expected: int | None,
) -> None:  # fmt: skip
    if cap is not None:
        monkeypatch.setenv(CAP, cap)
    pipeline = dp.load_yaml(with_settings(ASK, settings) if settings else ASK)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(client, pipeline, "ask", {"text": "x"}, task_queue=task_queue)
    assert result.output == "said"
    assert (await dp.run_local(pipeline, "ask", {"text": "y"})).output == "said"
    assert sent(fake) == [expected, expected]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (10**7, "asks for up to 10,000,000 output tokens per request"),
        ("10000000", "'10000000' is not a whole number of tokens"),
        # Ollama reads -1 as no limit, a proto3 provider (Gemini) 0 as unset: its own maximum.
        (-1, "asks for -1 output tokens, which some providers read as no limit"),
        (0, "asks for 0 output tokens, which some providers read as no limit"),
    ],
)
async def test_a_forged_input_cannot_ask_past_the_cap(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider, value: Any, why: str,
) -> None:  # fmt: skip
    # A raw client skips validation and writes the setting straight into the run's spec.
    monkeypatch.setenv(CAP, "1000")
    data = pipe_run(dp.load_yaml(ASK), "ask", {"text": "x"}).model_dump(mode="json")
    data["spec"]["pipes"]["ask"]["settings"] = {"max_tokens": value}
    client = await dp.connect(temporal_address, pipeline=dp.load_yaml(ASK))
    async with dp.build_worker(client, task_queue=task_queue):
        _, failure = await raw_run_fails(client, data, task_queue)
    assert failure.cause_type == "durapipe.SettingNotAllowed"
    assert failure.cause == (
        f"pipe 'ask', field 'settings.max_tokens': {why}, and this worker lets a request ask for "
        f"at most 1,000 ({CAP}); ask for 1,000 or fewer, or raise the setting on the workers"
    )
    assert fake.calls == []


def test_the_cap_bounds_a_budgets_estimate(fake: FakeProvider) -> None:
    call = LlmCall(
        run_id="r", path="ask", pipe_name="ask", pipe=dp.load_yaml(ASK).pipes["ask"],
        inputs={"text": "x"},
    )  # fmt: skip
    # No max_tokens: the model's maximum, 1,000,000 output tokens; sent with the cap: 1,000.
    assert 1000.0 < estimate_cost(call) < 1000.001
    assert 1.0 < estimate_cost(call, 1000) < 1.001
    asking = dp.load_yaml(with_settings(ASK, "{max_tokens: 200}")).pipes["ask"]
    asked = call.model_copy(update={"pipe": asking})
    assert 0.2 < estimate_cost(asked, 1000) < 0.201
    # Both spellings set: a provider may honour either, so the larger one is the worst case; a
    # value below one bounds nothing (the worker refuses it, after the estimate).
    for both, worst in [
        ("{max_tokens: 1, max_completion_tokens: 200}", 0.2),
        ("{max_tokens: -1}", 1),
    ]:
        pipe = dp.load_yaml(with_settings(ASK, both)).pipes["ask"]
        assert worst < estimate_cost(call.model_copy(update={"pipe": pipe}), 1000) < worst + 0.001
    # A first model with no price (or one that always fails) before a priced fallback: any model
    # of the waterfall may answer, so the dearest one's worst case counts.
    unpriced = ASK.replace("model: openai/gpt-cap", "model: openai/no-price-anywhere")
    waterfall = with_settings(unpriced, "{max_tokens: 200}").replace(
        "    prompt:", "    fallbacks: [openai/gpt-cap]\n    prompt:"
    )
    pipe = dp.load_yaml(waterfall).pipes["ask"]
    assert 0.2 < estimate_cost(call.model_copy(update={"pipe": pipe}), 1000) < 0.201


async def test_under_a_budget_the_capped_call_runs(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, fake: FakeProvider
) -> None:
    # A $2 budget: the call's worst case is $1,000 without the cap (refused before it is made),
    # $1 with it (made).
    pipeline = dp.load_yaml(ASK)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed, match="budget exceeded"):
            await dp.run(
                client, pipeline, "ask", {"text": "x"}, task_queue=task_queue, budget_usd=2
            )
    assert fake.calls == []
    monkeypatch.setenv(CAP, "1000")
    client = await dp.connect(temporal_address, pipeline=pipeline)  # a worker reads it when built
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client, pipeline, "ask", {"text": "x"}, task_queue=task_queue, budget_usd=2
        )
    assert result.output == "said"
    assert sent(fake) == [1000]
