"""The bench's second baseline really has durapipe's features: read back from real runs' histories
on the dev server, beside a durapipe run of the same step, each activity carries a UI summary and
durapipe's heartbeat timeout, start-to-close timeout and retry policy, and the run's totals are
upserted as the same typed search attributes at the moments durapipe upserts them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.converter import decode_typed_search_attributes

import durapipe as dp
from bench import handwritten, handwritten_features
from bench.__main__ import load_pipeline
from durapipe.workflows._search import COST_USD, INPUT_TOKENS, OUTPUT_TOKENS, PIPE, STEPS
from durapipe.workflows._workflow import TOTALS_EVERY
from tests.support import history_events, summary_of

SCHEDULED = "activity_task_scheduled_event_attributes"
COMPLETED = "activity_task_completed_event_attributes"
UPSERT = "upsert_workflow_search_attributes_event_attributes"
TOTALS = (COST_USD, INPUT_TOKENS, OUTPUT_TOKENS, STEPS)
# Steps of the slow sequence, each answered after DELAY seconds: a run of about 3 s, so its
# totals are upserted once while it runs (2 s in) and once at its end.
SLOW_STEPS, DELAY = 6, "0.5"


@dataclass
class Runs:
    durapipe: list[HistoryEvent]
    single: list[HistoryEvent]
    slow: list[HistoryEvent]
    single_start: TypedSearchAttributes


@pytest.fixture(scope="module")
async def runs(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Runs]:
    pipeline, _ = load_pipeline(Path(tmp_path_factory.mktemp("bench")))
    queue = f"features-{uuid.uuid4().hex[:8]}"
    ours = await dp.connect(temporal_address, pipeline=pipeline)
    theirs = await handwritten.connect(temporal_address)
    ids = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("dp", "single", "slow")}
    async with (
        dp.build_worker(ours, task_queue=queue),
        handwritten_features.build(theirs, queue + "-hwf"),
    ):
        await dp.run(ours, pipeline, "ask", {"question": "q"}, run_id=ids["dp"], task_queue=queue)
        single = await handwritten_features.start(
            theirs, "bench.features.single", "q", id=ids["single"], task_queue=queue + "-hwf"
        )
        await single.result()
        with pytest.MonkeyPatch.context() as env:
            env.setenv("DURAPIPE_OFFLINE_DELAY", DELAY)
            slow = await handwritten_features.start(
                theirs,
                "bench.features.sequence",
                "q",
                SLOW_STEPS,
                id=ids["slow"],
                task_queue=queue + "-hwf",
            )
            await slow.result()
        start = (await single.describe()).typed_search_attributes
    yield Runs(
        await history_events(ours, ids["dp"]),
        await history_events(theirs, ids["single"]),
        await history_events(theirs, ids["slow"]),
        start,
    )


def scheduled(events: list[HistoryEvent]) -> list[HistoryEvent]:
    return [e for e in events if e.HasField(SCHEDULED)]


def upserts(events: list[HistoryEvent]) -> list[TypedSearchAttributes]:
    return [
        decode_typed_search_attributes(
            e.upsert_workflow_search_attributes_event_attributes.search_attributes
        )
        for e in events
        if e.HasField(UPSERT)
    ]


def when(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime()


def test_each_activity_has_a_summary_and_durapipes_timeouts_and_retry_policy(runs: Runs) -> None:
    [ours] = scheduled(runs.durapipe)
    theirs = scheduled(runs.single) + scheduled(runs.slow)
    assert len(theirs) == 1 + SLOW_STEPS
    mine = ours.activity_task_scheduled_event_attributes
    for event in theirs:
        plan = event.activity_task_scheduled_event_attributes
        assert plan.heartbeat_timeout.ToTimedelta() == mine.heartbeat_timeout.ToTimedelta()
        assert plan.heartbeat_timeout.ToTimedelta().total_seconds() > 0
        assert plan.start_to_close_timeout == mine.start_to_close_timeout
        assert plan.retry_policy == mine.retry_policy
        # A static summary of the same order of length as durapipe's ("llm ask · durapipe/offline").
        label = summary_of(event)
        assert label.startswith("ask ")
        assert len(summary_of(ours)) / 2 <= len(label) <= 2 * len(summary_of(ours))
    assert summary_of(theirs[1]) == "ask 0 · durapipe/offline"


def test_a_short_run_upserts_durapipes_totals_once_at_its_end(runs: Runs) -> None:
    [ours], [theirs] = upserts(runs.durapipe), upserts(runs.single)
    # The same typed attributes, durapipe's four totals (the pipe is set at the start).
    assert {(p.key.name, p.key.value_type) for p in theirs} == {
        (p.key.name, p.key.value_type) for p in ours
    }
    assert {p.key for p in ours} == set(TOTALS)
    assert runs.single_start.get(PIPE) == "ask"
    # At the end: after the call's result, as the last command before the run completes.
    kinds = [e.WhichOneof("attributes") for e in runs.single]
    assert kinds.index(UPSERT) > kinds.index(COMPLETED)
    assert kinds[kinds.index(UPSERT) + 1] == "workflow_execution_completed_event_attributes"
    # The totals are the call's: one step, its tokens, and its cost (the offline model is free).
    answer = runs.single[kinds.index(COMPLETED)].activity_task_completed_event_attributes
    spent = handwritten_features.Spent.model_validate_json(answer.result.payloads[0].data)
    assert theirs.get(STEPS) == 1 == ours.get(STEPS)
    assert (theirs.get(INPUT_TOKENS), theirs.get(OUTPUT_TOKENS)) == (
        spent.input_tokens,
        spent.output_tokens,
    )
    assert theirs.get(INPUT_TOKENS) > 0
    assert theirs.get(COST_USD) == spent.cost_usd


def test_a_longer_run_upserts_every_two_seconds_and_at_its_end(runs: Runs) -> None:
    events = runs.slow
    totals = upserts(events)
    at = [when(e) for e in events if e.HasField(UPSERT)]
    started = when(events[0])
    assert len(totals) >= 2, "a run of about 3 s upserts 2 s in and at its end"
    steps = [t.get(STEPS) for t in totals]
    assert steps == sorted(set(steps)) and steps[-1] == SLOW_STEPS
    # Each upsert while the run goes comes at least TOTALS_EVERY after the one before (or the
    # start), when a step finished; the last one right after the last step, summing every step.
    for before, now in zip([started, *at[:-2]], at[:-1], strict=True):
        assert now - before >= TOTALS_EVERY
    completed = [e for e in events if e.HasField(COMPLETED)]
    assert at[-1] > when(completed[-1])
    spent = [
        handwritten_features.Spent.model_validate_json(
            e.activity_task_completed_event_attributes.result.payloads[0].data
        )
        for e in completed
    ]
    assert totals[-1].get(INPUT_TOKENS) == sum(s.input_tokens for s in spent)
    assert totals[-1].get(OUTPUT_TOKENS) == sum(s.output_tokens for s in spent)


def test_the_attributes_are_durapipes_own() -> None:
    keys: list[SearchAttributeKey[object]] = [
        handwritten_features.PIPE,  # type: ignore[list-item]
        handwritten_features.COST_USD,  # type: ignore[list-item]
        handwritten_features.INPUT_TOKENS,  # type: ignore[list-item]
        handwritten_features.OUTPUT_TOKENS,  # type: ignore[list-item]
        handwritten_features.STEPS,  # type: ignore[list-item]
    ]
    assert keys == [PIPE, *TOTALS]
    assert handwritten_features.TOTALS_EVERY == TOTALS_EVERY
