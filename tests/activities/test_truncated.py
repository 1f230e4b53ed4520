"""An answer cut off at its output limit (finish reason ``length``), over http against the fake
provider: ``durapipe.OutputTruncated`` at once when it cannot be used, the answer when it can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe.activities import run_agent_turn, run_llm
from durapipe.runtime import AgentTurnCall, LlmCall
from durapipe.runtime._agent_messages import AgentReply
from durapipe.runtime._spend import counting, done
from durapipe.spec import AgentPipe, LlmPipe
from durapipe.spec._deck import ModelDeck
from durapipe.stores import _memo as memo_module
from durapipe.stores._checkpoints import SqliteCheckpoints
from durapipe.testing import FakeProvider, Reply
from durapipe.testing.fake_provider import ToolCalls

MODEL = "openai/gpt-think"
# What a reasoning model sends when it spent the whole limit thinking.
THOUGHT_ONLY = Reply(content="", finish_reason="length", completion_tokens=64, reasoning_tokens=64)
CUT_JSON = Reply(content='{"items": ["alpha", "be', finish_reason="length", completion_tokens=64)


def _call(output: str = "text", reask: int = 2, **settings: Any) -> LlmCall:
    pipe = LlmPipe(model=MODEL, prompt="List names.", output=output, reask=reask, settings=settings)
    return LlmCall(run_id="r", path="names", pipe_name="names", pipe=pipe)


def _deck(fake: FakeProvider, cap: int | None = None) -> ModelDeck:
    return ModelDeck({MODEL: {"api_base": fake.base_url}}, max_output_tokens=cap)


async def _refused(call: Any, deck: ModelDeck, run: Any = run_llm) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await run(call, 1, None, deck)
    return raised.value


async def test_an_empty_answer_cut_off_by_reasoning_fails_after_one_request() -> None:
    async with FakeProvider() as fake:
        fake.set_default(THOUGHT_ONLY)
        spend, token = counting(1)
        try:
            err = await _refused(_call(max_tokens=64), _deck(fake))
        finally:
            done(token)
    assert len(fake.calls) == 1
    assert err.type == ErrorType.OUTPUT_TRUNCATED and err.non_retryable
    assert err.message == (
        "pipe 'names': openai/gpt-think stopped at its output limit of 64 tokens "
        "(settings.max_tokens) with no answer, after 64 output tokens, 64 of them reasoning; "
        "raise settings.max_tokens, or lower settings.reasoning_effort"
    )
    # The request was paid: the attempt counted it, so the failure carries it.
    assert spend.fresh.output_tokens == 64 and spend.fresh.input_tokens > 0


async def test_the_limit_named_is_the_workers_cap_when_the_pipe_sets_none() -> None:
    async with FakeProvider() as fake:
        fake.set_default(THOUGHT_ONLY)
        err = await _refused(_call(), _deck(fake, cap=64))
    assert fake.calls[0].max_tokens == 64  # the cap was sent
    assert "its output limit of 64 tokens (this worker's cap, DURAPIPE_MAX_OUTPUT_TOKENS)" in str(
        err
    )
    assert err.message.endswith(
        "raise DURAPIPE_MAX_OUTPUT_TOKENS on the workers, or lower settings.reasoning_effort"
    )


async def test_a_structured_answer_cut_off_is_not_asked_again() -> None:
    async with FakeProvider() as fake:
        fake.set_default(CUT_JSON)
        err = await _refused(_call("list[text]", reask=2, max_tokens=64), _deck(fake))
    # Without the check: 3 requests (reask=2), then durapipe.InvalidOutput on the JSON error.
    assert len(fake.calls) == 1
    assert err.type == ErrorType.OUTPUT_TRUNCATED
    assert "stopped at its output limit of 64 tokens (settings.max_tokens) before its answer was " \
        "complete (the answer is not valid JSON (Unterminated string" in err.message  # fmt: skip
    assert err.message.endswith("raise settings.max_tokens, or ask for a shorter answer")


async def test_a_structured_answer_that_fits_despite_the_limit_is_accepted() -> None:
    async with FakeProvider() as fake:
        fake.set_default(Reply(json={"items": ["alpha"]}, finish_reason="length"))
        result = await run_llm(_call("list[text]", max_tokens=64), 1, None, _deck(fake))
    assert result.output == ["alpha"] and not result.truncated
    assert len(fake.calls) == 1


async def test_a_text_answer_cut_off_is_kept_and_marked() -> None:
    async with FakeProvider() as fake:
        fake.script(MODEL.split("/")[1], [Reply(content="Alpha, Be", finish_reason="length")])
        cut = await run_llm(_call(max_tokens=4), 1, None, _deck(fake))
        whole = await run_llm(_call(max_tokens=5), 1, None, _deck(fake))
    assert (cut.output, cut.truncated) == ("Alpha, Be", True)
    assert '"truncated":true' in cut.model_dump_json()
    assert not whole.truncated and "truncated" not in whole.model_dump_json()


async def test_a_cut_off_answer_is_not_handed_to_the_next_model_of_a_waterfall() -> None:
    async with FakeProvider() as fake:
        deck = ModelDeck({m: {"api_base": fake.base_url} for m in (MODEL, "openai/gpt-next")})
        fake.set_default(THOUGHT_ONLY)
        pipe = LlmPipe(model=MODEL, fallbacks=["openai/gpt-next"], prompt="hi")
        call = LlmCall(run_id="r", path="names", pipe_name="names", pipe=pipe)
        err = await _refused(call, deck)
    assert err.type == ErrorType.OUTPUT_TRUNCATED
    assert [c.model for c in fake.calls] == ["gpt-think"]
    assert "(its provider's default: the pipe sets no settings.max_tokens)" in err.message


def _turn(output: str = "text") -> AgentTurnCall:
    pipe = AgentPipe(model=MODEL, prompt="hi", output=output, settings={"max_tokens": 64})
    messages = [{"role": "user", "content": "Plan the trip."}]
    return AgentTurnCall(
        run_id="r", path="planner/turn-3", pipe_name="planner", pipe=pipe, turn=3,
        messages=messages,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "output", "said"),
    [
        (THOUGHT_ONLY, "text", "with no answer"),
        (CUT_JSON, "list[text]", "before its answer was complete (the answer is not valid JSON"),
        (
            ToolCalls([{"name": "search", "arguments": '{"query": "wea'}]),
            "text",
            "with the arguments of its call to tool 'search' cut off",
        ),
    ],
    ids=["empty", "structured", "tool-call"],
)
async def test_an_agent_turn_cut_off_fails_naming_the_agent_and_turn(
    answer: Any, output: str, said: str
) -> None:
    async with FakeProvider() as fake:
        if isinstance(answer, ToolCalls):  # ToolCalls has no finish reason: a reply with calls
            answer = Reply(tool_calls=answer.calls, finish_reason="length")
        fake.set_default(answer)
        err = await _refused(_turn(output), _deck(fake), run_agent_turn)
    assert len(fake.calls) == 1
    assert err.type == ErrorType.OUTPUT_TRUNCATED
    assert err.message.startswith(
        f"agent 'planner', turn 3: openai/gpt-think stopped at its output limit of 64 tokens "
        f"(settings.max_tokens) {said}"
    )


async def test_an_agent_turn_cut_off_with_whole_tool_calls_or_text_goes_on() -> None:
    async with FakeProvider() as fake:
        calls = [{"name": "search", "arguments": {"query": "weather"}}]
        fake.script(
            MODEL.split("/")[1],
            [
                Reply(tool_calls=calls, finish_reason="length"),
                Reply(content="Go by tr", finish_reason="length"),
            ],
        )
        called = await run_agent_turn(_turn(), 1, None, _deck(fake))
        text = await run_agent_turn(_turn().model_copy(update={"turn": 4}), 1, None, _deck(fake))
    assert called.output["tool_calls"][0]["name"] == "search" and not called.truncated
    assert (text.output["output"], text.truncated) == ("Go by tr", True)


async def test_a_tool_call_cut_before_its_arguments_is_not_run_on_made_up_ones() -> None:
    # A call cut where its arguments would begin comes back with "": read as "{}" (a whole call
    # to a tool that takes no arguments), the loop would run the tool on arguments never sent.
    cut = Reply(tool_calls=[{"name": "search", "arguments": ""}], finish_reason="length")
    whole = Reply(tool_calls=[{"name": "search", "arguments": ""}])
    async with FakeProvider() as fake:
        fake.set_default(cut)
        err = await _refused(_turn(), _deck(fake), run_agent_turn)
        fake.set_default(whole)
        kept = await run_agent_turn(_turn(), 1, None, _deck(fake))
    assert err.type == ErrorType.OUTPUT_TRUNCATED
    assert "with the arguments of its call to tool 'search' cut off" in err.message
    # Not cut: a tool that takes no arguments, as before.
    [request] = AgentReply.model_validate(kept.output).tool_calls
    assert request.arguments == "{}"


FENCED = '```json\n{"items": ["alpha", "beta"]}\n'


@pytest.mark.parametrize("fence", ["``", "`", "", "```"], ids=["2", "1", "none", "whole"])
async def test_a_structured_answer_cut_inside_its_closing_fence_is_whole(fence: str) -> None:
    # The JSON value is complete; only the fence after it was cut.
    async with FakeProvider() as fake:
        fake.set_default(Reply(content=FENCED + fence, finish_reason="length"))
        result = await run_llm(_call("list[text]", max_tokens=64), 1, None, _deck(fake))
    assert result.output == ["alpha", "beta"] and not result.truncated
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"items": ["alpha", "be',
        '```json\n{"items": ["alpha", "beta"]',
        '```json\n{"items": ["alpha", "beta``',
        '```\n{"items": ["alpha", "beta"], "more": ``',
    ],
)
async def test_a_fenced_structured_answer_cut_inside_its_value_still_fails(text: str) -> None:
    async with FakeProvider() as fake:
        fake.set_default(Reply(content=text, finish_reason="length"))
        err = await _refused(_call("list[text]", reask=2, max_tokens=64), _deck(fake))
    assert err.type == ErrorType.OUTPUT_TRUNCATED and len(fake.calls) == 1


def _memoised(run_id: str) -> LlmCall:
    pipe = LlmPipe(model=MODEL, prompt="List names.", memoize=True, settings={"max_tokens": 4})
    return LlmCall(run_id=run_id, path="names", pipe_name="names", pipe=pipe)


async def test_a_memoised_cut_answer_is_kept_for_its_own_run_only(tmp_path: Path) -> None:
    store, call = SqliteCheckpoints(tmp_path / "checkpoints.sqlite"), _memoised
    async with FakeProvider() as fake:
        fake.set_default(Reply(content="Alpha, Be", finish_reason="length"))
        first = await run_llm(call("r1"), 1, store, _deck(fake))
        retried = await run_llm(call("r1"), 2, store, _deck(fake))
        fake.set_default(Reply(content="Alpha, Beta."))
        other = await run_llm(call("r2"), 1, store, _deck(fake))
    assert (first.output, first.truncated, first.cache_hit) == ("Alpha, Be", True, False)
    # A retry of its own step is not paid again, and keeps what the run paid for.
    assert (retried.output, retried.truncated, retried.cache_hit) == ("Alpha, Be", True, True)
    assert retried.usage == first.usage
    assert (other.output, other.truncated, other.cache_hit) == ("Alpha, Beta.", False, False)
    assert len(fake.calls) == 2


async def test_a_cut_answer_an_earlier_durapipe_shared_does_not_keep_the_memo_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, call = SqliteCheckpoints(tmp_path / "checkpoints.sqlite"), _memoised
    async with FakeProvider() as fake:
        fake.set_default(Reply(content="Alpha, Be", finish_reason="length"))
        with monkeypatch.context() as old:  # a durapipe that shared the provider's cut answer
            old.setattr(memo_module, "_cut", lambda answer: False)
            await run_llm(call("r1"), 1, store, _deck(fake))
        fake.set_default(Reply(content="Alpha, Beta."))
        asked = await run_llm(call("r2"), 1, store, _deck(fake))
        served = await run_llm(call("r3"), 1, store, _deck(fake))
    # The cut answer is not replayed to the next run: it asks, and its whole answer is shared.
    assert (asked.output, asked.truncated, asked.cache_hit) == ("Alpha, Beta.", False, False)
    assert (served.output, served.cache_hit) == ("Alpha, Beta.", True)
    assert len(fake.calls) == 2
