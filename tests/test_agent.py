"""Agent pipes on the real dev server and locally: one activity per model request and tool call."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory

import durapipe as dp
from durapipe.runtime._agent_messages import tool_schema
from durapipe.spec import ModelEntry
from durapipe.testing import FakeProvider, Reply, ToolCalls
from durapipe.workflows import _workflow
from tests.conftest import EXAMPLES
from tests.fixtures import agent_tools
from tests.support import eventually, history_events, scheduled_activities, started_as_version

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
        retry={"max_attempts": 1},
        **options,
    )
    return dp.pipeline(
        agent, models={"agent": ModelEntry(model="openai/fake-agent", api_base=base_url)}
    )


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


TURNS = 4  # an agent's turns per run in the test below (AGENT_TURNS_PER_RUN, 25, made smaller)


class HeldAnswer:
    """A `FakeProvider` hook that holds its answer to call ``at`` (counted from `reset`) until
    ``released`` is set: the call then finishes as scripted, whatever was asked of it meanwhile."""

    def __init__(self) -> None:
        self.at = self.calls = 0
        self.reached = threading.Event()
        self.released = threading.Event()

    def reset(self, at: int) -> None:
        self.at, self.calls = at, 0
        self.reached.clear()
        self.released.clear()

    def __call__(self, call: Any) -> None:  # in the provider's thread, before it answers
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            self.released.wait(timeout=60)  # bounded: a failing test leaves no server stuck


async def cancel_at_the_boundary(
    client: Client, fake: FakeProvider, hold: HeldAnswer, run_id: str, task_queue: str
) -> dp.RunHandle:
    """Start the agent and cancel it while its last model turn before continue-as-new is held; the
    turn answers once the workflow has asked it to cancel (before a heartbeat tells the call)."""
    # Turns that call a tool, then one that asks for a tool the agent does not have: the error goes
    # back to the model in the next turn, so no step starts between that turn and the new run.
    fake.script(
        "fake-agent",
        [ToolCalls([{"name": "lookup", "arguments": {"key": "known"}}])] * (TURNS - 1)
        + [ToolCalls([{"name": "nope", "arguments": {}}])],
    )  # then the default answer
    hold.reset(at=TURNS)
    pipeline = fake_agent(fake.base_url, max_turns=TURNS + 5)
    handle = await dp.start(client, pipeline, "asker", {}, run_id=run_id, task_queue=task_queue)

    async def held() -> bool:
        return hold.reached.is_set()

    async def cancel_sent_to_the_call() -> bool:
        events = await history_events(client, run_id)
        return any(e.HasField("activity_task_cancel_requested_event_attributes") for e in events)

    await eventually(held, f"model turn {TURNS} to be held")
    await client.get_workflow_handle(run_id).cancel()
    await eventually(cancel_sent_to_the_call, "the workflow to ask the call to cancel")
    hold.released.set()
    return handle


async def test_a_cancel_spent_at_the_continue_as_new_boundary_ends_the_agent_cancelled(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last model turn of a run answers before its cancellation reaches it: the SDK hands the
    # workflow its answer and the cancellation is spent. No step starts after it (cancel-holds),
    # but the agent continued as new there, and the fresh run, which knew nothing of the cancel,
    # asked the model again and completed.
    monkeypatch.setattr(_workflow, "AGENT_TURNS_PER_RUN", TURNS)
    hold = HeldAnswer()
    async with FakeProvider() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        fake.on_response(hold)
        fake.set_default(Reply(content="It is the value."))
        pipeline = fake_agent(fake.base_url, max_turns=TURNS + 5)
        client = await dp.connect(temporal_address, pipeline=pipeline)
        run_id = f"cancel-can-{uuid.uuid4().hex[:8]}"
        async with dp.build_worker(client, task_queue=task_queue):
            handle = await cancel_at_the_boundary(client, fake, hold, run_id, task_queue)
            with pytest.raises(dp.RunCancelled):
                await handle.result()
            steps = {s.path: s.status for s in await handle.steps()}
            asked = len(fake.calls)
            # A run of version 3 asks the patch (and records its marker) and ends the same way.
            with monkeypatch.context() as v3:
                started_as_version(v3, 3)
                handle_v3 = await cancel_at_the_boundary(
                    client, fake, hold, f"{run_id}-v3", task_queue
                )
                with pytest.raises(dp.RunCancelled):
                    await handle_v3.result()
            # Recorded as before the change: the run continues as new and the agent goes on.
            with monkeypatch.context() as old:
                started_as_version(old, 3)  # the last version before the change
                patched = _workflow._TemporalRuntime.patched
                old.setattr(
                    _workflow._TemporalRuntime,
                    "patched",
                    lambda self, change: (
                        change != _workflow.CANCEL_ENDS_AGENT_PATCH and patched(self, change)
                    ),
                )
                before = await cancel_at_the_boundary(
                    client, fake, hold, f"{run_id}-old", task_queue
                )
                went_on = await before.result()
    assert asked == TURNS  # no model call after the cancel
    assert steps[f"turn-{TURNS}"] == "succeeded" and f"turn-{TURNS + 1}" not in steps
    described = await client.get_workflow_handle(run_id).describe()
    assert described.status == WorkflowExecutionStatus.CANCELED
    [events] = await history_chain(client, run_id)  # one run: it did not continue as new
    assert scheduled_activities(events)[-1][1] == f"turn-{TURNS}"
    assert went_on.output == "It is the value."
    old_chain = await history_chain(client, f"{run_id}-old")
    assert len(old_chain) == 2  # the old path continued as new and asked the model again
    assert scheduled_activities(old_chain[1])[0][1] == f"turn-{TURNS + 1}"
    [events_v3] = await history_chain(client, f"{run_id}-v3")
    # Every path replays against the current code: the patch finds no marker in the old history,
    # and a run of version 4 has the change in force (no marker, no patch asked).
    histories = [
        WorkflowHistory(workflow_id, run)
        for workflow_id, chain in (
            (run_id, [events]),
            (f"{run_id}-v3", [events_v3]),
            (f"{run_id}-old", old_chain),
        )
        for run in chain
    ]
    reports = await dp.ops.replay(histories)
    assert [(r.compatible, r.problem) for r in reports] == [(True, None)] * 4
    assert marked(events_v3) and not marked(events) and not marked(old_chain[0])


def marked(events: list[Any]) -> bool:
    """Whether a history carries the marker of the patch that ends a cancelled agent."""
    patch = _workflow.CANCEL_ENDS_AGENT_PATCH.encode()
    return any(
        e.HasField("marker_recorded_event_attributes") and patch in e.SerializeToString()
        for e in events
    )


async def test_a_tools_optional_input_is_not_required_of_the_model_and_reads_null() -> None:
    # `optional[T]` (Python `T | None`, MTHDS `T?`): the model may leave it out, and the tool then
    # reads null, as a pipe does when a run leaves such an input out; a given value is checked.
    async with FakeProvider() as fake:
        agent = dp.agent(
            "greeter", model="openai/fake-agent", prompt="Greet people.", tools=[agent_tools.greet]
        )
        pipeline = dp.pipeline(
            agent, models={"agent": ModelEntry(model="openai/fake-agent", api_base=fake.base_url)}
        )
        tool = pipeline.pipes["greet"]
        assert tool.inputs == {"name": "optional[text]"}
        schema = tool_schema("greet", tool, {})  # type: ignore[arg-type]
        assert schema["function"]["parameters"]["required"] == []
        assert {"type": "string"} in schema["function"]["parameters"]["properties"]["name"]["anyOf"]
        fake.script(
            "fake-agent",
            [
                ToolCalls(
                    [
                        {"name": "greet", "arguments": {}},
                        {"name": "greet", "arguments": {"name": None}},
                        {"name": "greet", "arguments": {"name": "Ada"}},
                        {"name": "greet", "arguments": {"name": 3}},
                    ]
                ),
                Reply(content="Done."),
            ],
        )
        result = await dp.run_local(pipeline, "greeter", {})
        calls = fake.calls
    assert result.output == "Done."
    tool_messages = [m["content"] for m in calls[1].messages if m["role"] == "tool"]
    assert tool_messages[:3] == ["hello stranger", "hello stranger", "hello Ada"]
    assert "argument 'name' must be optional[text]" in tool_messages[3]
