"""Workflow version 5: a top-level run that may grow past the steps every worker allows (it reaches
a batch or an agent) starts with that many (`STEPS_ALWAYS_ALLOWED`) and asks its worker for the cap
(a local activity, its marker one event) only when it would count more, or lend a share to a child
run that may grow. An agent of a few turns or a batch of a few items never asks; a run of version 4
asked when it started, and still does when replayed."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import yaml
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

import durapipe as dp
from durapipe._settings import STEPS_ALWAYS_ALLOWED
from durapipe.adapters._plan import STEPS_CAP_ACTIVITY
from durapipe.runtime._calls import WORKFLOW_VERSION
from durapipe.testing import FakeProvider, Status
from tests.chain import chain_spec, expected_output, paid_by_step
from tests.fixtures import agent_tools
from tests.support import (
    EACH_SQUARE,
    LISTED_BATCH,
    SQUARE_TOOL,
    eventually,
    history_events,
    listed_asking,
    local_activities,
    replays_clean,
    run_or_failure,
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


async def _replays(client: dp.Client, run_id: str) -> None:
    await replays_clean(client, run_id)  # the run and its child runs, each as it ran


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
                run_id, result = await run_or_failure(
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
        run_id, result = await run_or_failure(
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
        run_id, result = await run_or_failure(client, pipeline, "listed", {"n": 110}, task_queue)
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
        run_id, result = await run_or_failure(
            client, pipeline, "both", {"numbers": [1, 2, 3]}, task_queue
        )
        assert isinstance(result, dp.RunResult), result
        assert result.output == {"a": [1, 4, 9], "b": [1, 4, 9]}
        assert local_activities(await history_events(client, run_id)) == [STEPS_CAP_ACTIVITY]
        await _replays(client, run_id)


async def test_a_run_cancelled_while_it_asks_for_the_cap_cancels_the_step_that_asked(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `listed` asks mid-run, before it lends its batch step a share: cancelled while the worker's
    # answer is held, that step is cancelled (not left running in a cancelled run).
    async with listed_asking(temporal_address, task_queue, monkeypatch) as listed:
        client, handle, _, cancelled = listed
        run_id = handle.run_id
        await client.get_workflow_handle(run_id).cancel()
        await asyncio.wait_for(cancelled.wait(), timeout=30)  # the run cancelled the question
        with pytest.raises(dp.RunCancelled):
            await handle.result()
        steps = {s.path: s.status for s in await handle.steps()}
        assert steps == {"count": "succeeded", "each": "cancelled"}
        await _replays(client, run_id)


def _asked_caps(events: list[HistoryEvent]) -> list[tuple[list[str], int]]:
    """Each answer of the worker's step cap a history records, with the activities (their ids)
    scheduled before it was asked."""
    scheduled: list[str] = []
    asked: list[tuple[list[str], int]] = []
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled.append(event.activity_task_scheduled_event_attributes.activity_id)
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_local_activity":
            data = json.loads(marker.details["data"].payloads[0].data)
            # An attempt given up (held past its timeout) is recorded failed, with no answer.
            if data["activity_type"] == STEPS_CAP_ACTIVITY and not marker.HasField("failure"):
                answer = json.loads(marker.details["result"].payloads[0].data)
                asked.append((list(scheduled), answer))
    return asked


def _redriven_pipeline(base_url: str) -> dp.Pipeline:
    # s1, then 110 numbers counted by a tool and a batch asking the fake provider once per number
    # (a child run that may grow: the run asks its worker's cap before lending it a share), then
    # s2, which a test scripts to fail once.
    spec = chain_spec(base_url, steps=2)
    spec["pipes"].update(
        yaml.safe_load(
            """
  redriven:
    kind: sequence
    inputs: {topic: text, n: integer}
    steps:
      - {pipe: s1, result: r1}
      - {pipe: count, result: numbers}
      - {pipe: ask_each, result: answers}
      - {pipe: s2, result: r2}
    output: r2
  ask_each:
    kind: batch
    inputs: {numbers: 'list[integer]'}
    over: numbers
    item: n
    pipe: ask
    max_concurrency: 50
  ask:
    kind: llm
    model: openai/gpt-item
    inputs: {n: integer}
    prompt: 'Item {{ n }}'
  count:
    kind: tool
    function: tests.control_tools:count_to
    inputs: {n: integer}
    output: 'list[integer]'
"""
        )
    )
    spec["models"]["item"] = {"model": "openai/gpt-item", "api_base": base_url}
    return dp.load_yaml(yaml.safe_dump(spec, sort_keys=False))


async def test_a_redrive_of_a_run_that_asked_mid_run_asks_again_and_pays_for_no_finished_step(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAP, "120")
    async with FakeProvider() as fake:
        pipeline = _redriven_pipeline(fake.base_url)
        fake.script("gpt-s2", [Status(401)])  # e.g. a revoked key, fixed by the operator later
        client = await dp.connect(temporal_address, pipeline=pipeline)
        async with dp.build_worker(client, task_queue=task_queue):
            run_id, failed = await run_or_failure(
                client, pipeline, "redriven", {"topic": "otters", "n": 110}, task_queue
            )
            assert isinstance(failed, dp.StepFailed) and failed.path == "s2", failed
            assert paid_by_step(fake.calls) == {"s1": 1, "item": 110}
            executions = [(await client.get_workflow_handle(run_id).describe()).run_id]

            # Re-driven on workers whose cap is now 100: the re-drive asks again, mid-run as the
            # run did, and its batch is refused before any item starts, in the cap's words.
            monkeypatch.setenv(CAP, "100")
            with pytest.raises(dp.StepFailed) as refused:
                await (await dp.client.redrive(client, run_id)).result()
            assert refused.value.cause_type == "durapipe.RunTooLarge"
            assert "would start 110 steps, more than the 96 this nested run has left" in (
                refused.value.cause
            )
            assert paid_by_step(fake.calls) == {"s1": 1, "item": 110}
            executions.append((await client.get_workflow_handle(run_id).describe()).run_id)

            monkeypatch.setenv(CAP, "120")
            result = await (await dp.client.redrive(client, run_id)).result()
            executions.append((await client.get_workflow_handle(run_id).describe()).run_id)
        assert result.output == expected_output("otters", steps=2)
        # Only s2 was paid for again: s1 and the 110 items came from their checkpoints.
        assert paid_by_step(fake.calls) == {"s1": 1, "item": 110, "s2": 1}
        hits = {s.path: s.cache_hit for s in result.steps}
        assert (hits["s1"], hits["s2"]) == (True, False)

    # Each execution asked its worker once, after s1 and count, and read the cap set then.
    asked = []
    for execution in executions:
        history = await client.get_workflow_handle(run_id, run_id=execution).fetch_history()
        asked.append(_asked_caps(list(history.events)))
    assert asked == [[(["s1", "count"], 120)], [(["s1", "count"], 100)], [(["s1", "count"], 120)]]

    # The three executions and their batches' child runs replay against this code.
    async def all_listed() -> list[WorkflowHistory] | None:
        histories = await dp.ops.fetch_histories(client, run_id=run_id)
        return histories if len(histories) == 6 else None

    histories = await eventually(all_listed, f"the 6 histories of {run_id} listed")
    reports = await dp.ops.replay(histories)
    assert [(r.compatible, r.problem) for r in reports] == [(True, None)] * 6


async def test_a_run_paused_while_it_asks_for_the_cap_starts_nothing_until_resumed(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `listed` asks mid-run, before it lends its batch step a share; paused while the worker's
    # answer is held, the answer arrives while the run is paused: the batch's child run (and so
    # any of its items) must not start before the run is resumed.
    async with listed_asking(temporal_address, task_queue, monkeypatch) as listed:
        client, handle, release, _ = listed
        run_id = handle.run_id
        # A signal: no query is answered while the question holds the workflow task open.
        await handle.pause()

        async def delivered() -> bool:
            # The signal reaches the workflow in the task after it (a task held open by a local
            # activity completes every 8 s or so to go on waiting): release the answer only then.
            events = await history_events(client, run_id)
            signalled = [
                i for i, e in enumerate(events)
                if e.HasField("workflow_execution_signaled_event_attributes")
            ]  # fmt: skip
            return bool(signalled) and any(
                e.HasField("workflow_task_started_event_attributes") for e in events[signalled[0] :]
            )

        await eventually(delivered, "the pause to reach the run while it asks")
        release.set()

        async def answered() -> bool:
            return bool(_asked_caps(await history_events(client, run_id)))

        await eventually(answered, "the cap's answer recorded")
        held_since = time.monotonic()
        while time.monotonic() - held_since < 2.0:  # paused: nothing new may start
            assert await handle.paused()
            steps = {s.path: s.status for s in await handle.steps()}
            assert steps == {"count": "succeeded", "each": "running"}, steps
            await asyncio.sleep(0.2)
        await handle.resume()
        result = await handle.result()
    assert result.output == [n * n for n in range(1, 111)]
    rows = {s.path: (s.status, s.counts) for s in result.steps}
    assert rows["each[*]"] == ("succeeded", {"succeeded": 110})

    # Measured in the histories: the batch's run, and its first item, started after the resume.
    events = await history_events(client, run_id)
    resumed = next(
        e.event_time.ToDatetime()
        for e in events
        if e.workflow_execution_signaled_event_attributes.signal_name == "durapipe.resume"
    )
    child_started = next(
        e.event_time.ToDatetime()
        for e in events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    )
    assert child_started >= resumed
    child = await history_events(client, f"{run_id}/each")
    first_item = min(
        e.event_time.ToDatetime()
        for e in child
        if e.HasField("activity_task_scheduled_event_attributes")
    )
    assert first_item >= resumed
    await _replays(client, run_id)


async def test_a_run_answers_whether_it_is_paused_while_its_cap_question_is_held(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The question is a local activity, run inside the run's workflow task: held, it kept the task
    # open, so the paused query got no answer (RunStalled after 5 s) and a pause reached the run
    # only when the SDK completed the task to go on waiting (8 s). Now a held attempt is given up
    # after 2 s and the next is asked after a timer, the task completing between them.
    async with listed_asking(temporal_address, task_queue, monkeypatch) as listed:
        client, handle, release, _ = listed
        run_id = handle.run_id
        try:
            asked_at = time.monotonic()
            # RunStalled here before the change, or an answer only when the task completed (8 s).
            assert await asyncio.wait_for(handle.paused(), timeout=4) is False
            await handle.pause()
            await asyncio.wait_for(eventually(handle.paused, "the run to say it is paused"), 6)
            paused_after = time.monotonic() - asked_at
            print(f"held question: paused query answered, pause applied {paused_after:.2f} s in")
            steps = {s.path: s.status for s in await handle.steps()}
            assert steps == {"count": "succeeded", "each": "running"}, steps
        finally:
            release.set()  # a failing test leaves no question held
        await handle.resume()
        result = await handle.result()
    assert result.output == [n * n for n in range(1, 111)]
    # Attempts given up are recorded as failed (no answer); the one answer is the worker's cap.
    events = await history_events(client, run_id)
    assert [answer for _, answer in _asked_caps(events)] == [200]
    assert local_activities(events).count(STEPS_CAP_ACTIVITY) > 1
    await _replays(client, run_id)
