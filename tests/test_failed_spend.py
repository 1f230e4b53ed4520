"""Every paid call counts: what a step spent before it failed is in its record, the run's totals,
the budget and the worker's metrics, on Temporal and with ``--local``, as the provider billed it."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory

import durapipe as dp
from durapipe.ops import _replay
from durapipe.ops._dev import free_port
from durapipe.testing import FakeProvider, Hang, Reply, Status, ToolCalls
from durapipe.workflows._search import COST_USD, INPUT_TOKENS, OUTPUT_TOKENS
from tests.fixtures.agent_tools import note
from tests.support import eventually, history_events, patch_markers, priced_openai

# $0.01 an output token: each answer of 100 tokens costs $1 and a little input.
MODELS = ("gpt-nofit", "gpt-bad", "gpt-retry", "gpt-agent", "gpt-cancel")
PRICES = {m: (1e-5, 0.01) for m in MODELS}
FAST_RETRY = {"max_attempts": 3, "initial_interval": 0.05, "backoff": 1.0}


class Verdict(BaseModel):
    """A structured answer the fake's plain text never fits."""

    ok: bool


def not_json() -> Reply:
    return Reply(content="this is not json", completion_tokens=100)


def pipeline() -> dp.Pipeline:
    def llm(name: str, model: str) -> dp.Pipe:
        return dp.llm(
            name,
            model=f"openai/{model}",
            inputs={"topic": str},
            prompt="Judge {{ topic }}.",
            output=Verdict,
            settings={"max_tokens": 100},
            retry=FAST_RETRY,
        )

    helper = dp.agent(
        "helper",
        model="openai/gpt-agent",
        inputs={"topic": str},
        prompt="Take notes on {{ topic }}.",
        tools=[note],
        max_turns=2,
        settings={"max_tokens": 100},
    )
    nested = dp.sequence(
        "nested", inputs={"topic": str}, steps=[dp.step(helper, result="notes")], output="notes"
    )
    items = dp.batch(
        "items",
        over="topics",
        item="topic",
        inputs={"topics": list[str]},
        pipe=llm("judge", "gpt-nofit"),
        max_concurrency=1,
        on_error="collect",
    )
    chunked = dp.batch(
        "chunked",
        over="topics",
        item="topic",
        inputs={"topics": list[str]},
        pipe=llm("judge", "gpt-nofit"),
        max_concurrency=1,
        chunk_size=2,
    )
    return dp.pipeline(
        llm("nofit", "gpt-nofit"),
        llm("bad", "gpt-bad"),
        llm("retried", "gpt-retry"),
        nested,
        items,
        chunked,
    )


def script(fake: FakeProvider) -> None:
    fake.set_default(not_json())  # gpt-nofit: every answer misses the type
    fake.script("gpt-bad", [not_json(), Status(400)])
    fake.script(
        "gpt-retry", [not_json(), Status(500), Reply(json={"ok": True}, completion_tokens=100)]
    )
    fake.script("gpt-agent", [ToolCalls([{"name": "note", "arguments": {"text": "x"}}])] * 2)


@dataclass
class Spend:
    calls: int
    cost: float
    input_tokens: int = 0
    output_tokens: int = 0


def billed(fake: FakeProvider, model: str, since: int = 0) -> Spend:
    """What the fake provider billed for ``model`` (its paid calls, at its prices)."""
    cost_in, cost_out = PRICES[model]
    paid = [c for c in fake.calls[since:] if c.model == model and c.paid]
    return Spend(
        len(paid),
        sum(c.prompt_tokens * cost_in + c.completion_tokens * cost_out for c in paid),
        sum(c.prompt_tokens for c in paid),
        sum(c.completion_tokens for c in paid),
    )


def recorded(steps: list[dp.StepRecord]) -> Spend:
    """What the step records say was spent (leaves only: a nested run's record repeats them)."""
    from durapipe.workflows._search import spent

    total = spent(steps)
    return Spend(0, total.cost_usd, total.input_tokens, total.output_tokens)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with priced_openai(PRICES) as fake:
        yield fake


SCENARIOS = [
    # pipe, model, inputs, the step that fails, its cause type
    ("nofit", "gpt-nofit", {"topic": "x"}, "nofit", "durapipe.InvalidOutput"),
    ("bad", "gpt-bad", {"topic": "x"}, "bad", "durapipe.BadRequest"),
    ("nested", "gpt-agent", {"topic": "x"}, "helper", "durapipe.MaxTurnsExceeded"),
]


def scrape(url: str, model: str) -> float:
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    pattern = rf'^durapipe_cost_microusd(?:_total)?\{{[^}}]*model="openai/{model}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, body, re.MULTILINE)) / 1e6


async def totals_of(client: Client, run_id: str) -> Spend:
    description = await client.get_workflow_handle(run_id).describe()
    attributes = description.typed_search_attributes
    return Spend(
        0,
        attributes.get(COST_USD) or 0.0,
        attributes.get(INPUT_TOKENS) or 0,
        attributes.get(OUTPUT_TOKENS) or 0,
    )


def same(a: Spend, b: Spend) -> bool:
    return (a.input_tokens, a.output_tokens) == (b.input_tokens, b.output_tokens) and abs(
        a.cost - b.cost
    ) < 1e-9


async def test_failed_steps_spend_is_counted_on_temporal(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    script(fake)
    flow = pipeline()
    metrics = f"127.0.0.1:{free_port()}"
    client = await dp.connect(
        temporal_address, pipeline=flow, telemetry=dp.Telemetry(metrics_address=metrics)
    )
    seen: dict[str, tuple[Spend, Spend, Spend, Spend]] = {}
    ids: list[str] = []
    async with dp.build_worker(client, task_queue=task_queue):
        for pipe, model, inputs, failed, cause in SCENARIOS:
            since = len(fake.calls)
            run_id = f"{pipe}-{uuid.uuid4().hex[:8]}"
            ids.append(run_id)
            with pytest.raises(dp.StepFailed) as raised:
                await dp.run(client, flow, pipe, inputs, run_id=run_id, task_queue=task_queue)
            assert raised.value.cause_type == cause
            step = next(s for s in raised.value.steps if s.path.endswith(failed))
            assert step.status == "failed"
            seen[pipe] = (
                billed(fake, model, since),
                recorded(raised.value.steps),
                await totals_of(client, run_id),
                Spend(0, scrape(f"http://{metrics}/metrics", model)),
            )
        since = len(fake.calls)
        run_id = f"retried-{uuid.uuid4().hex[:8]}"
        result = await dp.run(
            client, flow, "retried", {"topic": "x"}, run_id=run_id, task_queue=task_queue
        )
        seen["retried"] = (
            billed(fake, "gpt-retry", since),
            recorded(result.steps),
            await totals_of(client, run_id),
            Spend(0, scrape(f"http://{metrics}/metrics", "gpt-retry")),
        )
    # Counting a failure's spend is a patch, asked only by runs of workflow version 3 or older
    # whose failure carried some: in force since version 4, it marks no run.
    for run in [*ids, run_id]:
        assert "durapipe.failed-spend" not in patch_markers(await history_events(client, run))
    # The runs replay against this code (the nested one with its child workflows).
    query = " OR ".join(f"RootWorkflowId = '{r}'" for r in ids)

    async def listed() -> list[WorkflowHistory] | None:
        found = [h async for h in client.list_workflows(query).map_histories()]
        return found if len(found) == len(ids) + 1 else None  # and the nested agent's run

    histories = await eventually(listed, "the runs' histories listed")
    assert all(r.compatible for r in await _replay.replay(histories)), histories
    report(seen)
    for pipe, (provider, steps, totals, metered) in seen.items():
        assert provider.calls > 0 and provider.cost > 0, pipe
        assert same(steps, provider), (pipe, steps, provider)
        assert same(totals, provider), (pipe, totals, provider)
        assert abs(metered.cost - provider.cost) < 2e-6, (pipe, metered, provider)


def report(seen: dict[str, Any]) -> None:
    for pipe, (provider, *reported) in seen.items():
        print(
            f"{pipe}: provider {provider.calls} paid calls ${provider.cost:.6f} "
            f"({provider.input_tokens} in / {provider.output_tokens} out); "
            + "; ".join(f"${r.cost:.6f} ({r.input_tokens}/{r.output_tokens})" for r in reported)
        )


async def test_failed_steps_spend_is_counted_locally(fake: FakeProvider) -> None:
    script(fake)
    flow = pipeline()
    seen: dict[str, tuple[Spend, Spend]] = {}
    for pipe, model, inputs, failed, cause in SCENARIOS:
        since = len(fake.calls)
        with pytest.raises(dp.StepFailed) as raised:
            await dp.run_local(flow, pipe, inputs)
        assert raised.value.cause_type == cause
        step = next(s for s in raised.value.steps if s.path.endswith(failed))
        assert step.status == "failed"
        seen[pipe] = (billed(fake, model, since), recorded(raised.value.steps))
    since = len(fake.calls)
    result = await dp.run_local(flow, "retried", {"topic": "x"})
    seen["retried"] = (billed(fake, "gpt-retry", since), recorded(result.steps))
    assert same(Spend(0, result.usage.cost_usd, *_tokens(result.usage)), seen["retried"][0])
    [retried] = result.steps
    # The first attempt paid for one answer before its re-ask failed; the second for the other.
    assert [a.attempt for a in retried.failed_attempts] == [1]
    report(seen)
    for pipe, (provider, steps) in seen.items():
        assert provider.calls > 0 and provider.cost > 0, pipe
        assert same(steps, provider), (pipe, steps, provider)


def _tokens(usage: dp.Usage) -> tuple[int, int]:
    return usage.input_tokens, usage.output_tokens


async def test_a_budget_counts_what_failed_items_paid_for(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    # Each item asks 3 times ($1 an answer) and never fits: $3.00 spent, and the next item's worst
    # case is $3.00 too, so a $5 budget allows one item. Before, failed items spent nothing.
    script(fake)
    flow = pipeline()
    topics = {"topics": ["a", "b", "c"]}
    client = await dp.connect(temporal_address, pipeline=flow)
    async with dp.build_worker(client, task_queue=task_queue):
        on_temporal = await dp.run(
            client, flow, "items", topics, task_queue=task_queue, budget_usd=5
        )
    temporal_calls = len(fake.calls)
    local = await dp.run_local(flow, "items", topics, budget_usd=5)
    for result, calls in ((on_temporal, temporal_calls), (local, len(fake.calls) - temporal_calls)):
        errors = result.output["errors"]
        assert [e["type"] for e in errors] == [
            "durapipe.InvalidOutput",
            "durapipe.BudgetExceeded",
            "durapipe.BudgetExceeded",
        ], errors
        assert calls == 3
        assert 3.0 < result.usage.cost_usd < 3.01


async def test_a_retry_counts_what_the_attempt_before_it_paid_for_without_a_checkpoint_store(
    temporal_address: str, task_queue: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Attempt 1 is paid for one answer (it does not fit), then its re-ask gets a 500; attempt 2 is
    # answered at once. No store keeps attempt 1's answer, so only its failure can say it.
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", "off")
    flow = pipeline()
    retried = [not_json(), Status(500), Reply(json={"ok": True}, completion_tokens=100)]
    client = await dp.connect(temporal_address, pipeline=flow)
    fake.script("gpt-retry", retried)
    async with dp.build_worker(client, task_queue=task_queue):
        on_temporal = await dp.run(client, flow, "retried", {"topic": "x"}, task_queue=task_queue)
    temporal = billed(fake, "gpt-retry")
    fake.script("gpt-retry", retried)
    since = len(fake.calls)
    local = await dp.run_local(flow, "retried", {"topic": "x"})
    for result, provider in ((on_temporal, temporal), (local, billed(fake, "gpt-retry", since))):
        print(f"retried, no store: provider {provider.calls} paid calls ${provider.cost:.6f}; "
              f"run ${result.usage.cost_usd:.6f}, records ${recorded(result.steps).cost:.6f}")  # fmt: skip
        assert provider.calls == 2
        [step] = result.steps
        assert (step.attempts, [a.attempt for a in step.failed_attempts]) == (2, [1])
        assert same(recorded(result.steps), provider), (recorded(result.steps), provider)
        assert same(Spend(0, result.usage.cost_usd, *_tokens(result.usage)), provider)


async def test_a_batch_in_chunks_counts_what_its_failed_chunk_paid_for(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    # Three items in chunks of two (child runs): the first item never fits and fails its chunk.
    script(fake)
    flow = pipeline()
    topics = {"topics": ["a", "b", "c"]}
    client = await dp.connect(temporal_address, pipeline=flow)
    run_id = f"chunked-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed):
            await dp.run(client, flow, "chunked", topics, run_id=run_id, task_queue=task_queue)
        provider = billed(fake, "gpt-nofit")
        assert provider.calls >= 3
        assert same(await totals_of(client, run_id), provider)
    since = len(fake.calls)
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(flow, "chunked", topics)
    assert same(recorded(local.value.steps), billed(fake, "gpt-nofit", since))


def cancelled_judge(fake: FakeProvider) -> dp.Pipe:
    """An llm step whose first answer misses its type (paid) and whose re-ask hangs, to be
    cancelled while it is in flight."""
    fake.script("gpt-cancel", [not_json(), Hang(120)])
    return dp.llm(
        "judge",
        model="openai/gpt-cancel",
        inputs={"topic": str},
        prompt="Judge {{ topic }}.",
        output=Verdict,
        settings={"max_tokens": 100},
    )


async def test_what_a_cancelled_step_paid_for_is_counted_on_temporal(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    # The first answer misses the type (paid); the re-ask is in flight when the run is cancelled.
    judge = cancelled_judge(fake)
    flow = dp.pipeline(judge)
    metrics = f"127.0.0.1:{free_port()}"
    client = await dp.connect(
        temporal_address, pipeline=flow, telemetry=dp.Telemetry(metrics_address=metrics)
    )
    run_id = f"cancelled-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, flow, "judge", {"topic": "x"}, run_id=run_id,
                                task_queue=task_queue)  # fmt: skip
        await fake.wait_until_async(lambda calls: len(calls) == 2, timeout=60)
        cancelled_at = time.monotonic()
        await handle.cancel()
        with pytest.raises(dp.RunCancelled):
            await handle.result()
        closed_after = time.monotonic() - cancelled_at
        steps = await handle.steps()
        totals = await totals_of(client, run_id)
        metered = scrape(f"http://{metrics}/metrics", "gpt-cancel")
        histories = [await client.get_workflow_handle(run_id).fetch_history()]
        await fake.wait_until_async(lambda calls: calls[1].outcome == "client_closed", timeout=30)
    provider = billed(fake, "gpt-cancel")
    print(f"cancelled: closed {closed_after:.3f} s after the cancel; provider {provider.calls} "
          f"paid calls ${provider.cost:.6f}; records ${recorded(steps).cost:.6f}, totals "
          f"${totals.cost:.6f}, metrics ${metered:.6f}")  # fmt: skip
    assert provider.calls == 1  # the re-ask was never answered
    [step] = steps
    assert step.status == "cancelled"
    assert same(recorded(steps), provider), (recorded(steps), provider)
    assert same(totals, provider), (totals, provider)
    assert abs(metered - provider.cost) < 2e-6
    # The run ends as cancelled; the patch that counts it marks only a run like this one.
    description = await client.get_workflow_handle(run_id).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert "durapipe.cancelled-spend" in patch_markers(await history_events(client, run_id))
    assert all(r.compatible for r in await _replay.replay(histories))


async def test_what_a_cancelled_nested_run_paid_for_counts_in_its_parent(
    temporal_address: str, task_queue: str, fake: FakeProvider
) -> None:
    # The same call in a nested run: its run is cancelled with its parent, having paid. A run
    # ending as cancelled carries no details, so the parent's totals missed it ($0); since patch
    # durapipe.cancelled-run-spend the nested run fails with type durapipe.Cancelled and its
    # records, which the parent reads as the cancellation it is.
    judge = cancelled_judge(fake)
    asked = dp.sequence(
        "asked", inputs={"topic": str}, steps=[dp.step(judge, result="v")], output="v"
    )
    outer = dp.sequence(
        "outer", inputs={"topic": str}, steps=[dp.step(asked, result="v")], output="v"
    )
    flow = dp.pipeline(outer)
    client = await dp.connect(temporal_address, pipeline=flow)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, flow, "outer", {"topic": "x"}, task_queue=task_queue)
        await fake.wait_until_async(lambda calls: len(calls) == 2, timeout=60)
        await handle.cancel()
        with pytest.raises(dp.RunCancelled):
            await handle.result()
        steps = await handle.steps()
        totals = await totals_of(client, handle.run_id)
    provider = billed(fake, "gpt-cancel")
    assert provider.calls == 1
    assert same(totals, provider), (totals, provider)  # $0 before the change
    rows = {s.path: (s.status, s.cost_usd) for s in steps}
    assert rows == {
        "asked": ("cancelled", provider.cost),
        "asked/judge": ("cancelled", provider.cost),
    }
    assert same(recorded(steps), provider), (recorded(steps), provider)
    description = await client.get_workflow_handle(handle.run_id).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    child = await history_events(client, f"{handle.run_id}/asked")
    assert patch_markers(child) == ["durapipe.cancelled-spend", "durapipe.cancelled-run-spend"]
    assert patch_markers(await history_events(client, handle.run_id)) == []
    histories = await dp.ops.fetch_histories(client, run_id=handle.run_id)
    assert [r.compatible for r in await _replay.replay(histories)] == [True, True]
