"""Agent pipes on the real dev server and locally: one activity per model request and tool call."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import Client

import durapipe as dp
from durapipe.testing import FakeProvider, Reply, ToolCalls
from tests.conftest import EXAMPLES
from tests.fixtures import agent_tools
from tests.support import history_events, scheduled_activities

QUESTION = {"question": "How much does the bridge cost per kilometre of river?"}


async def run_on_temporal(
    address: str, task_queue: str, pipeline: dp.Pipeline, pipe: str, inputs: dict[str, Any]
) -> tuple[dp.RunResult, str]:
    client = await dp.connect(address, pipeline=pipeline)
    run_id = f"{pipe}-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(client, pipeline, pipe, inputs, run_id=run_id, task_queue=task_queue)
    return result, run_id


async def test_researcher_runs_the_same_on_temporal_and_locally_one_activity_per_call(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = dp.load(EXAMPLES / "researcher.yaml")
    assert pipeline == dp.load(EXAMPLES / "researcher.py")
    result, run_id = await run_on_temporal(
        temporal_address, task_queue, pipeline, "researcher", QUESTION
    )
    local = await dp.run_local(pipeline, "researcher", QUESTION)
    assert result.output == local.output
    assert set(result.output) == {"answer", "sources", "confidence"}
    assert result.usage == local.usage and result.usage.input_tokens > 0

    client = await dp.connect(temporal_address)
    events = await history_events(client, run_id)
    # Three model requests, two tool calls: exactly one scheduled activity each, in order.
    assert scheduled_activities(events) == [
        ("durapipe.agent_turn", "turn-1", "agent researcher · turn 1 · durapipe/offline"),
        ("durapipe.tool", "turn-1/search", "tool search"),
        ("durapipe.agent_turn", "turn-2", "agent researcher · turn 2 · durapipe/offline"),
        ("durapipe.tool", "turn-2/calculator", "tool calculator"),
        ("durapipe.agent_turn", "turn-3", "agent researcher · turn 3 · durapipe/offline"),
    ]
    completed = [e for e in events if e.HasField("activity_task_completed_event_attributes")]
    assert len(completed) == 4  # the calculator's ToolError is a failed activity, not retried
    steps = {s.path: s for s in result.steps}
    assert [(s.path, s.kind, s.status) for s in result.steps] == [
        ("turn-1", "llm", "succeeded"),
        ("turn-1/search", "tool", "succeeded"),
        ("turn-2", "llm", "succeeded"),
        ("turn-2/calculator", "tool", "failed"),
        ("turn-3", "llm", "succeeded"),
    ]
    assert steps["turn-2/calculator"].error_type == "durapipe.ToolError"
    assert all(steps[f"turn-{n}"].input_tokens > 0 for n in (1, 2, 3))
    assert all(s.attempts == 1 for s in result.steps if s.status == "succeeded")


async def test_agent_nested_in_a_sequence_runs_as_its_own_child_workflow(
    temporal_address: str, task_queue: str
) -> None:
    researcher = dp.load(EXAMPLES / "researcher.py")
    agent_pipe = dp.Pipe("researcher", researcher.pipes["researcher"], researcher.structures)
    shout = dp.tool(agent_tools.note)
    flow = dp.sequence(
        "flow",
        inputs={"question": str},
        steps=[
            dp.step(agent_pipe, result="finding"),
            dp.step(shout, inputs={"text": "finding.answer"}),
        ],
    )
    pipeline = dp.pipeline(
        flow,
        dp.tool(agent_tools.lookup),  # unused; keeps the test module's tools importable
        *[dp.Pipe(n, researcher.pipes[n]) for n in ("search", "calculator")],
        models={"fast": "durapipe/offline"},
    )
    result, run_id = await run_on_temporal(temporal_address, task_queue, pipeline, "flow", QUESTION)
    assert result.output.startswith("noted ")
    client = await dp.connect(temporal_address)
    child = await history_events(client, f"{run_id}/researcher")
    assert [a[1] for a in scheduled_activities(child)] == [
        "researcher/turn-1",
        "researcher/turn-1/search",
        "researcher/turn-2",
        "researcher/turn-2/calculator",
        "researcher/turn-3",
    ]
    assert [s.path for s in result.steps][:2] == ["researcher", "researcher/turn-1"]
    assert result.steps[-1].path == "note"


async def history_chain(client: Client, workflow_id: str) -> list[list[Any]]:
    """Every run's history of a workflow that continued as new, oldest first."""
    handle = client.get_workflow_handle(workflow_id)
    chain = [list((await handle.fetch_history()).events)]
    while True:
        started = chain[0][0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return chain
        previous = client.get_workflow_handle(
            workflow_id, run_id=started.continued_execution_run_id
        )
        chain.insert(0, list((await previous.fetch_history()).events))


# Each turn is a model request and a tool call (3 events each) plus workflow tasks (3 each).
EVENTS_PER_RUN_BOUND = 25 * 20 + 20


async def test_a_200_turn_conversation_continues_as_new_with_bounded_histories(
    temporal_address: str, task_queue: str
) -> None:
    talker = dp.agent(
        "talker",
        prompt="Keep taking notes about {{ topic }}.",
        inputs={"topic": str},
        tools=[agent_tools.note],
        settings={"offline_tool_rounds": 199},
        max_turns=200,
    )
    pipeline = dp.pipeline(talker)
    result, run_id = await run_on_temporal(
        temporal_address, task_queue, pipeline, "talker", {"topic": "rivers"}
    )
    assert result.output.startswith("Offline answer")
    turns = [s for s in result.steps if s.kind == "llm"]
    assert len(turns) == 200 and len(result.steps) == 399
    client = await dp.connect(temporal_address)
    chain = await history_chain(client, run_id)
    assert len(chain) == 8  # 25 turns per run
    assert all(len(events) < EVENTS_PER_RUN_BOUND for events in chain)
    scheduled = [a for events in chain for a in scheduled_activities(events)]
    assert len(scheduled) == 399  # nothing repeated across runs
    assert scheduled[-1][:2] == ("durapipe.agent_turn", "turn-200")


def fake_agent(base_url: str, **options: Any) -> dp.Pipeline:
    agent = dp.agent(
        "asker",
        model="openai/fake-agent",
        prompt="Find the value.",
        tools=[agent_tools.lookup],
        settings={"api_base": base_url},
        retry={"max_attempts": 1},
        **options,
    )
    return dp.pipeline(agent)


async def test_tool_errors_unknown_tools_and_bad_arguments_go_back_to_the_model() -> None:
    async with FakeProvider() as fake:
        fake.script(
            "fake-agent",
            [
                ToolCalls([{"name": "nope", "arguments": {}}]),
                ToolCalls([{"name": "lookup", "arguments": {"key": 3}}]),
                ToolCalls([{"name": "lookup", "arguments": {"key": "other"}}]),
                ToolCalls(
                    [
                        {"name": "lookup", "arguments": {"key": "known"}},
                        {"name": "lookup", "arguments": {"key": "known"}},
                    ]
                ),
                Reply(content="It is the value."),
            ],
        )
        result = await dp.run_local(fake_agent(fake.base_url), "asker", {})
        calls = fake.calls
    assert result.output == "It is the value."
    tool_messages = [[m["content"] for m in c.messages if m["role"] == "tool"] for c in calls]
    assert "unknown tool 'nope' (tools: lookup)" in tool_messages[1][0]
    assert "argument 'key' must be text" in tool_messages[2][1]
    assert "no entry 'other'; try 'known'" in tool_messages[3][2]
    assert tool_messages[4][3:] == ["the value", "the value"]  # parallel calls, both answered
    assert [s.path for s in result.steps if s.kind == "tool"] == [
        "turn-3/lookup",
        "turn-4/lookup",
        "turn-4/lookup-2",
    ]


async def test_bad_tool_calls_fail_after_max_bad_turns_and_turns_after_max_turns() -> None:
    async with FakeProvider() as fake:
        fake.script("fake-agent", [ToolCalls([{"name": "nope", "arguments": {}}])] * 3)
        with pytest.raises(dp.StepFailed) as bad:
            await dp.run_local(fake_agent(fake.base_url, max_bad_turns=2), "asker", {})
        fake.script(
            "fake-agent", [ToolCalls([{"name": "lookup", "arguments": {"key": "known"}}])] * 2
        )
        with pytest.raises(dp.StepFailed) as long:
            await dp.run_local(fake_agent(fake.base_url, max_turns=2), "asker", {})
    assert bad.value.cause_type == "durapipe.InvalidToolCalls" and bad.value.path == "asker"
    assert "3 turns in a row (max_bad_turns=2)" in bad.value.cause
    assert str(long.value) == (
        "step 'asker' (agent on model openai/fake-agent) failed: durapipe.MaxTurnsExceeded: "
        "agent 'asker' reached max_turns=2 without a final answer"
    )


async def test_offline_model_calls_every_offered_tool_at_once_when_asked() -> None:
    both = dp.agent(
        "both",
        prompt="Look up {{ key }} and note it.",
        inputs={"key": str},
        tools=[agent_tools.note, agent_tools.lookup],
        settings={"offline_parallel_tools": True, "offline_tool_rounds": 1},
    )
    result = await dp.run_local(dp.pipeline(both), "both", {"key": "known"})
    assert [(s.path, s.kind) for s in result.steps] == [
        ("turn-1", "llm"),
        ("turn-1/note", "tool"),
        ("turn-1/lookup", "tool"),
        ("turn-2", "llm"),
    ]


def test_agent_validation_names_the_pipe_and_field() -> None:
    bad = dp.Pipeline.model_validate(
        {
            "pipes": {
                "a": {"kind": "agent", "prompt": "{{ x }}", "tools": ["missing", "b"]},
                "b": {"kind": "llm", "prompt": "hi"},
            }
        }
    )
    messages = [str(p) for p in dp.spec.check(bad)]
    assert "pipe 'a', field 'tools': unknown pipe 'missing'" in messages
    assert "pipe 'a', field 'tools': pipe 'b' is a llm pipe; an agent can only call tool pipes" in (
        messages
    )
    assert any(m.startswith("pipe 'a', field 'prompt': template variable 'x'") for m in messages)
