"""Workflow version 5: a top-level run that may grow past the steps every worker allows (it reaches
a batch or an agent) starts with that many (`STEPS_ALWAYS_ALLOWED`) and asks its worker for the cap
(a local activity, its marker one event) only when it would count more, or lend a share to a child
run that may grow. An agent of a few turns or a batch of a few items never asks; a run of version 4
asked when it started, and still does when replayed."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio import activity

import durapipe as dp
from durapipe._settings import STEPS_ALWAYS_ALLOWED
from durapipe.activities import _activities
from durapipe.adapters._plan import STEPS_CAP_ACTIVITY
from durapipe.runtime._calls import WORKFLOW_VERSION
from tests.fixtures import agent_tools
from tests.support import (
    EACH_SQUARE,
    LISTED_BATCH,
    SQUARE_TOOL,
    history_events,
    local_activities,
    started_as_version,
)

CAP = "DURAPIPE_MAX_RUN_STEPS"
PIPES = (
    "pipes:"
    + EACH_SQUARE
    + """  both:
    kind: parallel
    inputs: {numbers: 'list[integer]'}
    branches: {a: each, b: each}
"""
    + LISTED_BATCH
    + SQUARE_TOOL
)


async def _run(
    client: dp.Client, pipeline: dp.Pipeline, pipe: str, inputs: dict[str, object], queue: str
) -> tuple[str, dp.RunResult | dp.StepFailed]:
    run_id = f"{pipe}-{uuid.uuid4().hex[:8]}"
    try:
        result: dp.RunResult | dp.StepFailed = await dp.run(
            client, pipeline, pipe, inputs, run_id=run_id, task_queue=queue
        )
    except dp.StepFailed as failed:
        result = failed
    return run_id, result


async def _replays(client: dp.Client, run_id: str) -> None:
    reports = await dp.ops.replay(await dp.ops.fetch_histories(client, run_id=run_id))
    assert reports, run_id  # the run and its child runs, each as it ran
    for report in reports:
        assert (report.compatible, report.problem) == (True, None), run_id


async def test_an_agent_of_a_few_turns_asks_no_cap_and_a_version_4_run_still_does(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = dp.agent(
        "finder",
        prompt="Look up {{ key }}.",
        inputs={"key": str},
        tools=[agent_tools.lookup],
        settings={"offline_tool_rounds": 3},
    )
    pipeline = dp.pipeline(agent)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    asked: dict[int, list[str]] = {}
    async with dp.build_worker(client, task_queue=task_queue):
        for version in (4, WORKFLOW_VERSION):
            with monkeypatch.context() as started:
                started_as_version(started, version)
                run_id, result = await _run(
                    client, pipeline, "finder", {"key": "known"}, task_queue
                )
            assert isinstance(result, dp.RunResult), result
            assert len(result.steps) == 7  # 4 turns and 3 tool calls, each counted
            asked[version] = local_activities(await history_events(client, run_id))
            await _replays(client, run_id)
    assert asked == {4: [STEPS_CAP_ACTIVITY], WORKFLOW_VERSION: []}


@pytest.mark.parametrize(
    ("cap", "pipe", "items", "asks", "passes"),
    [
        ("100", "each", 40, False, True),  # within what every worker allows: nothing to ask
        ("100", "each", STEPS_ALWAYS_ALLOWED, False, True),
        ("120", "each", 110, True, True),  # past it: asked then, and the cap has room
        ("100", "each", 101, True, False),  # asked, and refused in the cap's words
        # Chunks of 10: child runs lent their items, which cannot grow: nothing to ask.
        ("100", "each_in_chunks", 40, False, True),
    ],
    ids=["a-few-items", "exactly-the-least-cap", "past-it", "past-the-cap", "in-chunks"],
)
async def test_a_batch_asks_for_the_cap_only_when_its_items_need_it(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, cap: str,
    pipe: str, items: int, asks: bool, passes: bool,
) -> None:  # fmt: skip
    monkeypatch.setenv(CAP, cap)
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        run_id, result = await _run(
            client, pipeline, pipe, {"numbers": list(range(items))}, task_queue
        )
        if passes:
            assert isinstance(result, dp.RunResult), result
            assert result.output == [n * n for n in range(items)]
        else:
            assert isinstance(result, dp.StepFailed)
            assert result.cause_type == "durapipe.RunTooLarge"
            assert f"would start {items} steps, more than the {cap} steps this worker" in (
                result.cause
            )
        events = await history_events(client, run_id)
        assert local_activities(events) == ([STEPS_CAP_ACTIVITY] if asks else [])
        await _replays(client, run_id)


async def test_a_run_asks_before_it_lends_a_child_that_may_grow(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `listed` counts 110 numbers with a tool, then hands them to the batch `each`, a child run:
    # the child's share must come from the worker's cap (120), not from the 100 every worker
    # allows, or the child would refuse the items its run has room for.
    monkeypatch.setenv(CAP, "120")
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        run_id, result = await _run(client, pipeline, "listed", {"n": 110}, task_queue)
        assert isinstance(result, dp.RunResult), result
        assert len(result.output) == 110
        assert local_activities(await history_events(client, run_id)) == [STEPS_CAP_ACTIVITY]
        await _replays(client, run_id)


async def test_parts_of_a_run_that_need_the_cap_at_once_ask_once(
    temporal_address: str, task_queue: str
) -> None:
    # Two branches, each a batch (a child run that may grow), lent their shares concurrently: the
    # second waits for the first's question instead of asking again.
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        run_id, result = await _run(client, pipeline, "both", {"numbers": [1, 2, 3]}, task_queue)
        assert isinstance(result, dp.RunResult), result
        assert result.output == {"a": [1, 4, 9], "b": [1, 4, 9]}
        assert local_activities(await history_events(client, run_id)) == [STEPS_CAP_ACTIVITY]
        await _replays(client, run_id)


async def test_a_run_cancelled_while_it_asks_for_the_cap_cancels_the_step_that_asked(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `listed` asks mid-run, before it lends its batch step a share: cancelled while the worker's
    # answer is held, that step is cancelled (not left running in a cancelled run).
    asking, cancelled = asyncio.Event(), asyncio.Event()

    @activity.defn(name=STEPS_CAP_ACTIVITY)
    async def held(self: object) -> int:
        asking.set()
        try:
            await asyncio.sleep(60)  # bounded: a failing test leaves no activity behind
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 200

    monkeypatch.setattr(_activities.Activities, "max_run_steps", held)
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        run_id = f"listed-{uuid.uuid4().hex[:8]}"
        handle = await dp.start(
            client, pipeline, "listed", {"n": 110}, run_id=run_id, task_queue=task_queue
        )
        await asyncio.wait_for(asking.wait(), timeout=30)
        await client.get_workflow_handle(run_id).cancel()
        await asyncio.wait_for(cancelled.wait(), timeout=30)  # the run cancelled the question
        with pytest.raises(dp.RunCancelled):
            await handle.result()
        steps = {s.path: s.status for s in await handle.steps()}
        assert steps == {"count": "succeeded", "each": "cancelled"}
        await _replays(client, run_id)
