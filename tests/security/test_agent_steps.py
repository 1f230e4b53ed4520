"""An agent's turns and tool calls count against its run's steps (``DURAPIPE_MAX_RUN_STEPS``): each
turn is a paid model request and each tool call an activity, and an agent counted as one step
could make up to ``max_turns`` (10,000) of them, with any number of tool calls each. Counted as the
run goes, before each starts; refused with ``durapipe.RunTooLarge`` when the allowance runs out,
on Temporal and with ``--local``, whatever the run's input says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.adapters import pipe_run
from tests.histories.record_agents import AGENTS as RECORDED
from tests.support import SQUARE_TOOL, patch_markers, raw_run_fails

CAP = "DURAPIPE_MAX_RUN_STEPS"
HISTORIES = Path(__file__).parent.parent / "histories"
# The offline model calls `square` on each of its first 1,000 turns: a loop no answer ends before
# max_turns (120: past the cap of 100 steps, so a run that did not count its turns fails there).
AGENTS = (
    """
pipes:
  looper:
    kind: agent
    inputs: {question: text}
    prompt: "{{ question }}"
    tools: [square]
    max_turns: 120
    settings: {offline_tool_rounds: 1000}
  asked:
    kind: sequence
    inputs: {question: text}
    steps:
      - {pipe: looper, result: answer}
"""
    + SQUARE_TOOL
)
# The agent's own step, then a turn and a tool call at a time: 1 + 2 * 49 = 99 steps, the 50th
# turn the 100th, and its tool call is one too many.
REFUSED = (
    "agent 'looper', turn 50, asks for tool calls that would start 1 step, more than the 0 left "
    f"of the 100 steps this worker lets one run start ({CAP}); make the run smaller, or raise "
    "the setting on the workers"
)


def started(steps: list[dp.StepRecord]) -> tuple[int, int]:
    """The turns and tool calls an agent's step records say started."""
    turns = [s for s in steps if s.kind == "llm"]
    tools = [s for s in steps if s.kind == "tool"]
    return len(turns), len(tools)


async def test_an_agent_looping_tool_calls_is_stopped_by_the_runs_steps(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAP, "100")
    pipeline = dp.load_yaml(AGENTS)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client, pipeline, "looper", {"question": "q"}, task_queue=task_queue
        )
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 120)
        history = await client.get_workflow_handle(handle.run_id).fetch_history()
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, "looper", {"question": "q"})
    for refused in (failed.value, local.value):
        assert (refused.path, refused.cause_type) == ("looper", "durapipe.RunTooLarge")
        assert refused.cause == REFUSED
        assert started(refused.steps) == (50, 49)  # the 50th turn's tool call never started
    # The cap is the one in the run's history: a worker set otherwise replays it as it ran.
    monkeypatch.setenv(CAP, "100000")
    [replayed] = await dp.ops.replay([history])
    assert replayed.compatible, replayed.problem


async def test_a_nested_agent_counts_against_the_runs_steps(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAP, "100")
    pipeline = dp.load_yaml(AGENTS)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "asked", {"question": "q"}, task_queue=task_queue)
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 120)
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, "asked", {"question": "q"})
    for refused in (failed.value, local.value):
        assert refused.cause_type == "durapipe.RunTooLarge"
        assert refused.cause == (
            "agent 'looper', turn 50, asks for tool calls that would start 1 step, more than the 0 "
            f"this nested run has left of the steps this worker lets one run start ({CAP}); make "
            "the run smaller, or raise the setting on the workers"
        )
        # Its step (counted by the sequence, once), then its turns and tool calls: the whole
        # cap, as for the same agent at the top level. Its run counted its own step again, so
        # it stopped a step early: at turn 50's model request, after (49, 49).
        assert started(refused.steps) == (50, 49)


# The agent of a sequence whose condition reserves 91 of the run's 100 steps for an outcome it
# does not take (tests.histories.record_agents): the sequence holds 93, the agent is lent the
# other 7, and it starts 7 (three turns with a tool call each, and a turn that answers).
GUARDED = "guarded"


async def test_a_nested_agent_can_start_every_step_its_run_left_it(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAP, "100")
    pipeline = dp.load_yaml(RECORDED)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client, pipeline, GUARDED, {"question": "q"}, run_id=task_queue, task_queue=task_queue
        )
        histories = await dp.ops.fetch_histories(client, run_id=task_queue)
    local = await dp.run_local(pipeline, GUARDED, {"question": "q"})
    for ran in (result, local):
        assert started([s for s in ran.steps if s.path.startswith("helper/")]) == (4, 3)
    # The change is in force in a run of this version (no marker, workflow version 4); one
    # recorded before it (the agent refused at turn 4, its own step counted twice) replays as it
    # ran.
    assert not any("durapipe.nested-agent-step" in patch_markers(h.events) for h in histories)
    recorded = [dp.ops.load_history(p) for p in sorted(HISTORIES.glob("guarded-*.json"))]
    reports = await dp.ops.replay([*recorded, *histories])
    assert [(r.compatible, r.problem) for r in reports] == [(True, None)] * len(reports)


async def test_a_forged_input_cannot_give_an_agent_more_steps(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A raw client writes the allowance a parent gives its child runs into a top-level input.
    monkeypatch.setenv(CAP, "100")
    data = pipe_run(dp.load_yaml(AGENTS), "looper", {"question": "q"}).model_dump(mode="json")
    data["steps_left"] = 10**9
    client = await dp.connect(temporal_address, pipeline=dp.load_yaml(AGENTS))
    async with dp.build_worker(client, task_queue=task_queue):
        _, failure = await raw_run_fails(client, data, task_queue, timeout=120)
    assert (failure.cause_type, failure.cause) == ("durapipe.RunTooLarge", REFUSED)
