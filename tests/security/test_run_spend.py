"""A worker caps what one run may spend (``DURAPIPE_MAX_RUN_USD``, unset by default): the run's
budget is the tighter of its client's and the worker's, carried to its nested runs as a budget is,
read by the run's workflow from its history (a local activity), whatever the run's input says. A
worker without the cap adds nothing to a run's history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import durapipe as dp
from durapipe.adapters import pipe_run
from durapipe.runtime._calls import WORKFLOW_VERSION
from durapipe.testing import FakeProvider, Reply, ToolCalls
from durapipe.workflows import _workflow
from tests.fixtures import agent_tools
from tests.support import patch_markers, priced_openai, raw_run_fails, started_as_version

CAP = "DURAPIPE_MAX_RUN_USD"
# $0.001 an output token: an answer of 100 tokens costs $0.1 (and a little input), and so does
# the worst case of a call asking at most 100.
PRICES = {"gpt-spend": (1e-7, 1e-3), "gpt-agent": (1e-3, 1e-3)}
ASK = """
  ask{n}:
    kind: llm
    model: openai/gpt-spend
    inputs: {{text: text}}
    prompt: "Say {n}: {{{{ text }}}}"
    settings: {{max_tokens: 100}}
    retry: {{max_attempts: 1}}
"""
# Three paid steps in a nested sequence: under $0.25 the third does not fit.
PIPES = """
pipes:
  outer:
    kind: sequence
    inputs: {text: text}
    steps:
      - {pipe: inner, result: said}
  inner:
    kind: sequence
    inputs: {text: text}
    steps:
      - {pipe: ask1, result: one}
      - {pipe: ask2, result: two}
      - {pipe: ask3, result: three}
""" + "".join(ASK.format(n=n) for n in (1, 2, 3))


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with priced_openai(PRICES) as fake:
        fake.set_default(Reply(content="said", completion_tokens=100))
        yield fake


@pytest.mark.parametrize(
    ("client_budget", "limit", "paid"),
    [(None, "0.250000", 2), (100.0, "0.250000", 2), (0.15, "0.150000", 1)],
    ids=["no-budget", "a-looser-budget", "a-tighter-budget"],
)
async def test_a_run_spends_at_most_the_workers_cap(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider, client_budget: float | None, limit: str, paid: int,
) -> None:  # fmt: skip
    monkeypatch.setenv(CAP, "0.25")
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client,
            pipeline,
            "outer",
            {"text": "x"},
            task_queue=task_queue,
            budget_usd=client_budget,
        )
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 60)
        [history, *_] = await dp.ops.fetch_histories(client, run_id=handle.run_id)
    assert len(fake.calls) == paid
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, "outer", {"text": "x"}, budget_usd=client_budget)
    assert len(fake.calls) == 2 * paid
    for refused in (failed.value, local.value):
        step = "inner/ask3" if paid == 2 else "inner/ask2"
        assert (refused.path, refused.cause_type) == (step, "durapipe.BudgetExceeded")
        assert f" of its ${limit} budget and this step could cost up to $0.100" in refused.cause
        assert refused.cause.endswith(
            "no further paid call was made (its worker lets one run spend at most $0.250000: "
            f"{CAP})"
        )
    assert "durapipe.max-run-usd" in patch_markers(history.events)
    # The cap is the one in the run's history: a worker without it replays the run as it ran.
    monkeypatch.delenv(CAP)
    [replayed] = await dp.ops.replay([history])
    assert replayed.compatible, replayed.problem


async def test_a_forged_input_cannot_raise_the_workers_cap(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, fake: FakeProvider
) -> None:
    # A raw client writes a budget of a billion dollars into the run's input.
    monkeypatch.setenv(CAP, "0.25")
    data = pipe_run(dp.load_yaml(PIPES), "outer", {"text": "x"}).model_dump(mode="json")
    data["budget_usd"] = 1e9
    data["spend_cap"] = 1e9  # what a parent tells its nested runs, for refusals: never read
    client = await dp.connect(temporal_address, pipeline=dp.load_yaml(PIPES))
    async with dp.build_worker(client, task_queue=task_queue):
        _, failure = await raw_run_fails(client, data, task_queue, timeout=60)
    assert failure.cause_type == "durapipe.BudgetExceeded"
    assert " of its $0.250000 budget" in failure.cause
    assert failure.cause.endswith(f"(its worker lets one run spend at most $0.250000: {CAP})")
    assert len(fake.calls) == 2


async def test_without_the_cap_a_run_asks_nothing_more(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, fake: FakeProvider
) -> None:
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "outer", {"text": "x"}, task_queue=task_queue)
        result = await asyncio.wait_for(handle.result(), 60)
        histories = await dp.ops.fetch_histories(client, run_id=handle.run_id)
    assert result.output == "said"
    assert len(fake.calls) == 3
    for history in histories:  # no marker, no local activity: its history is as before
        assert "durapipe.max-run-usd" not in patch_markers(history.events)
        assert all(
            not e.HasField("marker_recorded_event_attributes")
            or "patch-data" in e.marker_recorded_event_attributes.details
            for e in history.events
        )
    # A worker with the cap replays it as it ran: without asking for a cap the run never had.
    monkeypatch.setenv(CAP, "0.05")
    reports = await dp.ops.replay(histories)
    assert [(r.compatible, r.problem) for r in reports] == [(True, None)] * len(histories)


@pytest.mark.parametrize("version", [3, WORKFLOW_VERSION], ids=["version-3", "current"])
async def test_an_agent_that_continues_as_new_keeps_what_it_spent(
    temporal_address: str,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider,
    version: int,
) -> None:
    # An agent goes on in a fresh run every few turns (here 2): each fresh run began with nothing
    # spent, so an agent of many turns spent the worker's cap once per run. A run of version 3
    # asks the patch (its fresh runs record the marker); since version 4 the change is in force.
    started_as_version(monkeypatch, version)
    monkeypatch.setenv(CAP, "0.25")
    monkeypatch.setattr(_workflow, "AGENT_TURNS_PER_RUN", 2)
    fake.script("gpt-agent", [ToolCalls([{"name": "lookup", "arguments": {"key": "known"}}])] * 20)
    agent = dp.agent(
        "asker",
        model="openai/gpt-agent",
        prompt="Find the value.",
        tools=[agent_tools.lookup],
        settings={"max_tokens": 10},
        retry={"max_attempts": 1},
        max_turns=20,
    )
    pipeline = dp.pipeline(agent)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "asker", {}, task_queue=task_queue)
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 120)
        histories = await dp.ops.fetch_histories(client, run_id=handle.run_id)
    # A turn costs $0.001 a token, its prompt the whole conversation so far: a few turns fit, and
    # the refusal counts what every run of the agent spent, not only the last run's turns.
    assert failed.value.cause_type == "durapipe.BudgetExceeded"
    assert len(fake.calls) > 2  # it went on in a fresh run at least once
    billed = sum(c.prompt_tokens + c.completion_tokens for c in fake.calls) * 1e-3
    assert f"the run has spent ${billed:.6f} of its $0.250000 budget" in failed.value.cause
    # A run of version 3's fresh runs record the patch; each replays as it ran.
    marked = any("durapipe.resumed-spend" in patch_markers(h.events) for h in histories)
    assert marked == (version == 3)
    reports = await dp.ops.replay(histories)
    assert [(r.compatible, r.problem) for r in reports] == [(True, None)] * len(histories)


async def test_a_forged_resume_cannot_spend_less_than_nothing(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, fake: FakeProvider
) -> None:
    # A raw client starts an agent "resumed" with a spend of -$1,000: read, it would have left the
    # run $1,000.25 under the worker's $0.25 cap.
    monkeypatch.setenv(CAP, "0.25")
    fake.set_default(ToolCalls([{"name": "lookup", "arguments": {"key": "known"}}]))
    agent = dp.agent(
        "asker",
        model="openai/gpt-spend",
        prompt="Find the value.",
        tools=[agent_tools.lookup],
        settings={"max_tokens": 100},
        retry={"max_attempts": 1},
        max_turns=20,
    )
    pipeline = dp.pipeline(agent)
    data = pipe_run(pipeline, "asker", {}).model_dump(mode="json")
    data["resume"] = {
        "messages": [{"role": "user", "content": "Find the value."}],
        "usage": {"cost_usd": -1000.0},
    }
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        _, failure = await raw_run_fails(client, data, task_queue, timeout=60)
    # Each turn's worst case is $0.1 (100 output tokens), and it bills its few tokens: the cap
    # holds within max_turns, counted from nothing spent.
    assert failure.cause_type == "durapipe.BudgetExceeded", failure.cause
    assert failure.cause.startswith("budget exceeded: the run has spent $0.1")
    assert len(fake.calls) < 20


UNPRICED = """
pipes:
  ask:
    kind: llm
    model: {first}
    fallbacks: [{then}]
    inputs: {{text: text}}
    prompt: "Say: {{{{ text }}}}"
    settings: {{max_tokens: 100}}
    retry: {{max_attempts: 1}}
"""


@pytest.mark.parametrize(
    ("first", "then"),
    [("openai/gpt-unpriced", "openai/gpt-spend"), ("openai/gpt-spend", "openai/gpt-unpriced")],
    ids=["first-model", "fallback"],
)
async def test_a_capped_worker_refuses_a_model_with_no_price(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider, first: str, then: str,
) -> None:  # fmt: skip
    # A model litellm has no price for estimates and costs $0: under a cap it would spend freely.
    monkeypatch.setenv(CAP, "0.25")
    pipeline = dp.load_yaml(UNPRICED.format(first=first, then=then))
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "ask", {"text": "x"}, task_queue=task_queue)
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 60)
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, "ask", {"text": "x"})
    assert fake.calls == []
    for refused in (failed.value, local.value):
        assert (refused.path, refused.cause_type) == ("ask", "durapipe.ModelNotAllowed")
        assert refused.cause == (
            "pipe 'ask': model 'openai/gpt-unpriced' has no known price, so this worker, which "
            f"caps what one run spends ({CAP}), cannot bound what the call costs; give its price "
            "in DURAPIPE_MODEL_PRICES, or call a model with a known price"
        )
    # Without the cap the same run calls the model (its cost unknown, counted as $0).
    monkeypatch.delenv(CAP)
    await dp.run_local(pipeline, "ask", {"text": "x"})
    assert len(fake.calls) == 1
