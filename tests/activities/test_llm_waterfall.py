"""An llm call's model waterfall and its limits, over http against the fake provider."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from durapipe.activities import run_llm
from durapipe.runtime import LlmCall
from durapipe.spec import LimitRule, LlmPipe, limits_for
from durapipe.spec._deck import ModelDeck
from durapipe.stores import SqliteLimits
from durapipe.stores import _limits as limits_module
from durapipe.testing import FakeProvider
from durapipe.testing.fake_provider import SchemaInvalid, Status


def _call(pipe: LlmPipe, limits: list[LimitRule] | None = None) -> LlmCall:
    return LlmCall(run_id="r", path="ask", pipe_name="ask", pipe=pipe, limits=limits or [])


async def test_a_failed_model_hands_the_same_request_to_the_next_of_its_waterfall() -> None:
    async with FakeProvider() as fake:
        deck = ModelDeck({m: {"api_base": fake.base_url} for m in ("openai/a", "openai/b")})
        fake.script("a", [Status(503)])
        pipe = LlmPipe(model="openai/a", fallbacks=["openai/b"], prompt="hi")
        result = await run_llm(_call(pipe), 1, None, deck)
        single = await run_llm(_call(LlmPipe(model="openai/b", prompt="hi")), 1, None, deck)
    assert [c.model for c in fake.calls] == ["a", "b", "b"]
    assert [c.outcome for c in fake.calls] == ["status:503", "ok", "ok"]
    assert result.model == "openai/b" and result.output == single.output
    assert result.usage == single.usage and result.usage.input_tokens > 0
    # Both models got the step's key and attempt, as a one-model call does.
    assert fake.calls[0].idempotency_key == fake.calls[1].idempotency_key is not None
    assert {c.attempt for c in fake.calls} == {1}


async def test_a_limited_call_holds_a_lease_that_counts_the_tokens_it_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = SqliteLimits(tmp_path / "limits.sqlite")
    monkeypatch.setattr(limits_module, "configured_limits", lambda: limits)
    rules = [LimitRule.model_validate({"model": "openai/*", "tokens": "100000/m"})]
    async with FakeProvider() as fake:
        deck = ModelDeck({"openai/a": {"api_base": fake.base_url}})
        result = await run_llm(_call(LlmPipe(model="openai/a", prompt="hi"), rules), 1, None, deck)
    used = result.usage.input_tokens + result.usage.output_tokens
    assert used > 0
    # The lease's row keeps the tokens the provider reported, not the estimate.
    with contextlib.closing(sqlite3.connect(tmp_path / "limits.sqlite")) as db:
        assert [row[0] for row in db.execute("SELECT tokens FROM leases")] == [used]


async def test_each_request_of_a_waterfall_takes_its_own_models_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = SqliteLimits(tmp_path / "limits.sqlite")
    monkeypatch.setattr(limits_module, "configured_limits", lambda: limits)
    rules = [
        LimitRule.model_validate({"model": "openai/a", "concurrency": 5, "name": "a-pool"}),
        LimitRule.model_validate({"model": "openai/b", "tokens": "100000/m", "name": "b-pool"}),
        LimitRule.model_validate({"model": "openai/c", "rate": "5/s", "name": "c-pool"}),
    ]
    pipe = LlmPipe(model="openai/a", fallbacks=["openai/b"], prompt="hi")
    # The call carries the limits of every model it may ask, and not those of others.
    assert [r.bucket for r in limits_for(pipe, rules)] == ["a-pool", "b-pool"]
    async with FakeProvider() as fake:
        deck = ModelDeck({m: {"api_base": fake.base_url} for m in ("openai/a", "openai/b")})
        fake.script("a", [Status(503)])
        result = await run_llm(_call(pipe, limits_for(pipe, rules)), 1, None, deck)
    assert [c.model for c in fake.calls] == ["a", "b"]
    used = result.usage.input_tokens + result.usage.output_tokens
    # A lease per request, in the limit of the model it went to: the fallback's tokens count
    # against its own provider's budget, not against the primary's concurrency.
    with contextlib.closing(sqlite3.connect(tmp_path / "limits.sqlite")) as db:
        rows = db.execute("SELECT bucket, lease, tokens FROM leases ORDER BY started").fetchall()
    assert [bucket for bucket, _, _ in rows] == ["a-pool", "b-pool"]
    assert rows[0][1] != rows[1][1] and rows[1][2] == used > 0


async def test_a_reask_goes_on_from_the_model_that_answered() -> None:
    async with FakeProvider() as fake:
        models = ("openai/a", "openai/b", "openai/c")
        deck = ModelDeck({m: {"api_base": fake.base_url} for m in models})
        fake.script("a", [Status(503)])
        fake.script("b", [SchemaInvalid(), Status(503)])
        pipe = LlmPipe(
            model="openai/a", fallbacks=["openai/b", "openai/c"], prompt="hi", output="integer",
            reask=1,
        )  # fmt: skip
        result = await run_llm(_call(pipe), 1, None, deck)
    # b answered the first ask with a wrong shape; the re-ask went to b (it failed) and then to
    # c, never back to a, and never to b twice.
    assert [c.model for c in fake.calls] == ["a", "b", "b", "c"]
    assert result.model == "openai/c" and isinstance(result.output, int)


async def test_a_reasks_lease_estimates_what_it_sends_the_rejected_answer_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SqliteLimits(tmp_path / "limits.sqlite")
    estimates: list[int] = []

    class Recording:  # the estimate each request's lease is taken with (held while in flight)
        def try_acquire(self, lease: str, rules: Any, tokens: int, *args: Any) -> float:
            estimates.append(tokens)
            return real.try_acquire(lease, rules, tokens, *args)

        sent = real.sent
        release = real.release

    monkeypatch.setattr(limits_module, "configured_limits", Recording)
    rules = [LimitRule.model_validate({"model": "openai/*", "tokens": "1000000/m"})]
    wrong = {"value": "not a number " * 400}  # ~5,200 characters the re-ask sends back
    async with FakeProvider() as fake:
        deck = ModelDeck({"openai/a": {"api_base": fake.base_url}})
        fake.script("a", [SchemaInvalid(json=wrong)])
        pipe = LlmPipe(model="openai/a", prompt="hi", output="integer", reask=1)
        result = await run_llm(_call(pipe, rules), 1, None, deck)
    assert isinstance(result.output, int) and len(estimates) == 2
    # Four characters a token of what the request sends: the re-ask carries the rejected answer.
    assert estimates[1] >= len(json.dumps(wrong)) // 4 > estimates[0]
