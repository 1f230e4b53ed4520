"""Activity inputs as they travel through Temporal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from temporalio.contrib.pydantic import pydantic_data_converter

from durapipe.activities._agent import run_agent_turn
from durapipe.activities._llm import messages_for
from durapipe.runtime import (
    AgentTurnCall,
    CallBase,
    ImageCall,
    LeafResult,
    LlmCall,
    ToolCall,
    Usage,
)
from durapipe.runtime._agent_messages import AgentReply, tool_schema
from durapipe.spec import AgentPipe, ImagePipe, LlmPipe, ToolPipe
from durapipe.spec._base import RetrySpec
from durapipe.spec._messages import WORKFLOW_ONLY, end_loan, lend_wire_pipe, pipe_on_the_wire
from durapipe.stores._checkpoints import checkpoint_key

C = TypeVar("C", bound=CallBase)


def travelled(call: C) -> tuple[bytes, C]:
    """``call`` as a payload, and as the activity reads it back."""
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([call])
    [back] = converter.from_payloads([payload], [type(call)])
    return payload.data, back


def test_an_llm_step_travels_without_its_pipes_defaults_and_reads_back_the_same() -> None:
    pipe = LlmPipe(model="openai/gpt-4o-mini", prompt="{{ question }}")
    call = LlmCall(run_id="r1", scope="s" * 32, path="ask", pipe_name="ask", pipe=pipe)
    data, back = travelled(call)
    assert back == call
    assert b'"reask"' not in data and b'"summary"' not in data  # defaults left out
    assert len(data) < 200


def test_an_llm_step_travels_without_what_only_the_workflow_reads() -> None:
    pipe = LlmPipe(
        model="durapipe/offline",
        prompt="{{ question }}",
        description="asks",
        inputs={"question": "text"},
        timeout=120,
        retry=RetrySpec(max_attempts=5),
        queue="llm",
        budget_usd=1.0,
    )
    call = LlmCall(
        run_id="batch-1", scope="s" * 32, path="batch[0]", pipe_name="ask", pipe=pipe,
        inputs={"question": "q0"},
    )  # fmt: skip
    data, back = travelled(call)
    assert json.loads(data)["pipe"] == {
        "timeout": 120.0,
        "model": "durapipe/offline",
        "prompt": "{{ question }}",
    }
    # What the activity reads is all there: the same messages, the same checkpoint key.
    assert back.pipe == pipe.model_copy(
        update=dict.fromkeys(WORKFLOW_ONLY) | {"inputs": {}, "description": ""}
    )
    assert messages_for(back) == messages_for(call)
    assert checkpoint_key(back, namespace="n") == checkpoint_key(call, namespace="n")
    # Records, the local runner and CLI output (python-mode dumps) keep the whole pipe.
    assert call.model_dump()["pipe"]["retry"] == {"max_attempts": 5}


def test_an_llm_step_recorded_with_its_whole_pipe_still_reads_back() -> None:
    # What histories written before the workflow-only fields were left out hold.
    recorded = (
        b'{"run_id":"b","scope":"","path":"batch[0]","pipe_name":"ask","inputs":{"question":"q0"},'
        b'"pipe":{"inputs":{"question":"text"},"timeout":120.0,"retry":{"max_attempts":5},'
        b'"model":"durapipe/offline","prompt":"{{ question }}"}}'
    )
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([LeafResult()])  # a JSON payload, given the recorded bytes
    payload.data = recorded
    [back] = converter.from_payloads([payload], [LlmCall])
    assert back.pipe.retry == RetrySpec(max_attempts=5) and back.pipe.inputs == {"question": "text"}


def test_values_a_pipe_sets_travel_even_when_they_look_like_defaults_elsewhere() -> None:
    pipe = LlmPipe(
        model="openai/gpt-4o-mini",
        prompt="Say {{ word }}",
        reask=0,
        memoize=True,
        timeout="7s",
        settings={"temperature": 0},
    )
    call = LlmCall(run_id="r1", path="say", pipe_name="say", pipe=pipe, inputs={"word": ""})
    _, back = travelled(call)
    assert back == call
    assert back.pipe.reask == 0 and back.pipe.memoize and back.inputs == {"word": ""}


def returned(result: LeafResult) -> tuple[bytes, LeafResult]:
    """``result`` as an activity's result payload, and as the workflow reads it back."""
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([result])
    [back] = converter.from_payloads([payload], [LeafResult])
    return payload.data, back


def test_a_first_attempt_result_travels_without_its_defaults_and_reads_back_the_same() -> None:
    result = LeafResult(
        output="Offline answer: q1",
        usage=Usage(input_tokens=1, output_tokens=4),
        model="durapipe/offline",
    )
    data, back = returned(result)
    assert back == result
    assert data == (
        b'{"output":"Offline answer: q1","usage":{"input_tokens":1,"output_tokens":4},'
        b'"model":"durapipe/offline"}'
    )


def test_a_result_keeps_what_differs_from_the_defaults() -> None:
    result = LeafResult(output=None, usage=Usage(cost_usd=0.25), attempt=3, cache_hit=True)
    data, back = returned(result)
    assert back == result
    assert json.loads(data) == {
        "output": None,
        "usage": {"cost_usd": 0.25},
        "attempt": 3,
        "cache_hit": True,
    }
    assert returned(LeafResult())[0] == b'{"output":null}'


def test_a_result_recorded_with_every_field_still_reads_back() -> None:
    # What histories and checkpoint stores written before the compact form hold.
    recorded = (
        b'{"output":"Offline answer: q1","usage":{"input_tokens":1,"output_tokens":4,'
        b'"cost_usd":0.0},"model":"durapipe/offline","attempt":1,"cache_hit":false}'
    )
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([LeafResult()])
    payload.data = recorded
    [back] = converter.from_payloads([payload], [LeafResult])
    assert back == LeafResult(
        output="Offline answer: q1",
        usage=Usage(input_tokens=1, output_tokens=4),
        model="durapipe/offline",
    )
    # Records and CLI output (python-mode dumps) keep every field.
    assert set(back.model_dump()) == {"output", "usage", "model", "attempt", "cache_hit"}


class _TrimmedFromTheFullDump(BaseModel):
    """`LeafResult` as it was serialized before its JSON form was built field by field: the full
    dump with its defaults trimmed (a wrap serializer), the bytes every recorded history holds."""

    model_config = ConfigDict(extra="forbid")
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None
    attempt: int = 1
    cache_hit: bool = False

    @model_serializer(mode="wrap")
    def _without_defaults(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if info.mode != "json":
            return data
        if self.attempt == 1:
            data.pop("attempt", None)
        if not self.cache_hit:
            data.pop("cache_hit", None)
        if self.model is None:
            data.pop("model", None)
        usage = data.get("usage")
        if isinstance(usage, dict):
            spent = {name: value for name, value in usage.items() if value}
            if spent:
                data["usage"] = spent
            else:
                del data["usage"]
        return data


class _Verdict(BaseModel):
    label: str
    score: float
    when: datetime


_OUTPUTS: list[Any] = [
    None,
    "",
    "Offline answer: q1",
    'quotes " and \\ and \u00e9 and \U0001f600',
    0,
    -3,
    2.5,
    1e-9,
    True,
    [],
    ["a", 1, None, {"b": [2.0, False]}],
    {"items": [{"x": 1}], "value": None},
    _Verdict(label="ok", score=0.25, when=datetime(2026, 11, 27, 12, 0, tzinfo=UTC)),
    [_Verdict(label="a", score=1, when=datetime(2026, 1, 1, tzinfo=UTC))],
]
_USAGES = [
    Usage(),
    Usage(input_tokens=1, output_tokens=4),
    Usage(cost_usd=0.25),
    Usage(input_tokens=12, output_tokens=0, cost_usd=4e-05),
    Usage(input_tokens=7, output_tokens=9, cost_usd=-0.0),
]


@pytest.mark.parametrize("output", _OUTPUTS, ids=range(len(_OUTPUTS)))
def test_a_result_serializes_to_the_bytes_recorded_histories_hold(output: Any) -> None:
    # Histories and checkpoint stores hold the old serializer's bytes: the same result must give
    # the same bytes (a replay compares payloads; a checkpoint's text is the one already written).
    converter = pydantic_data_converter.payload_converter
    for usage in _USAGES:
        for model in (None, "durapipe/offline"):
            for attempt in (1, 2):
                for cache_hit in (False, True):
                    fields = {
                        "output": output,
                        "usage": usage,
                        "model": model,
                        "attempt": attempt,
                        "cache_hit": cache_hit,
                    }
                    result = LeafResult(**fields)
                    recorded = _TrimmedFromTheFullDump(**fields)
                    assert result.model_dump_json() == recorded.model_dump_json()
                    assert result.model_dump(mode="json") == recorded.model_dump(mode="json")
                    assert result.model_dump() == recorded.model_dump()
                    [ours] = converter.to_payloads([result])
                    [theirs] = converter.to_payloads([recorded])
                    assert ours.data == theirs.data


def lent_pipe() -> LlmPipe:
    return LlmPipe(
        model="durapipe/offline",
        prompt="Summarize {{ text }}",
        system="Be brief.",
        settings={"temperature": 0.2},
        inputs={"text": "text"},
        timeout=45,
        retry=RetrySpec(max_attempts=5),
    )


def test_a_lent_wire_pipe_gives_the_bytes_of_dumping_the_pipe_again() -> None:
    # The workflow lends each pipe's wire form to every call of it: a step's input must be the
    # very bytes the dump per call gave (recorded histories and checkpoint keys depend on them).
    pipe = lent_pipe()
    calls = [
        LlmCall(run_id="r1", scope="s" * 32, path=f"s{i}", pipe_name="sum", pipe=pipe,
                inputs={"text": f"t{i}"})
        for i in range(3)
    ]  # fmt: skip
    dumped = [travelled(call)[0] for call in calls]
    loan = lend_wire_pipe(pipe, pipe_on_the_wire(pipe))
    try:
        lent = [travelled(call)[0] for call in calls]
    finally:
        end_loan(loan)
    assert lent == dumped
    assert json.loads(dumped[0])["pipe"] == pipe_on_the_wire(pipe)


def test_a_loan_serves_only_its_own_pipe_and_only_while_it_lasts() -> None:
    pipe, twin = lent_pipe(), lent_pipe()  # equal, but another object: not the one lent for
    stale = {"prompt": "a stale wire form"}
    loan = lend_wire_pipe(pipe, stale)
    try:
        for_pipe = json.loads(travelled(LlmCall(run_id="r", path="a", pipe_name="p", pipe=pipe))[0])
        for_twin = json.loads(travelled(LlmCall(run_id="r", path="b", pipe_name="p", pipe=twin))[0])
        kept = LlmCall(run_id="r", path="a", pipe_name="p", pipe=pipe).model_dump()["pipe"]
    finally:
        end_loan(loan)
    after = json.loads(travelled(LlmCall(run_id="r", path="a", pipe_name="p", pipe=pipe))[0])
    assert for_pipe["pipe"] == stale  # the loan is what travels (so the two tests above mean it)
    assert for_twin["pipe"] == after["pipe"] == pipe_on_the_wire(pipe)
    assert kept["retry"] == {"max_attempts": 5}  # python-mode dumps never take the wire form


def agent_and_tool() -> tuple[AgentPipe, ToolPipe]:
    """The pipes of `make bench-agent` as a run's resolved spec holds them (timeouts and
    retries filled in)."""
    agent = AgentPipe(
        model="durapipe/offline",
        inputs={"question": "text"},
        prompt="{{ question }}",
        tools=["lookup"],
        max_turns=7,
        settings={"offline_tool_rounds": 5},
        timeout=120,
        retry=RetrySpec(max_attempts=5),
    )
    tool = ToolPipe(
        function="bench.agent_tools:lookup",
        description="Look up the record filed under a query.",
        inputs={"query": "text"},
        output="text",
        timeout=60,
        retry=RetrySpec(max_interval=30),
    )
    return agent, tool


def test_an_agents_turn_and_tool_call_travel_with_only_what_their_activities_read() -> None:
    agent, tool = agent_and_tool()
    offered = [tool_schema("lookup", tool, {})]
    turn = AgentTurnCall(
        run_id="agent-1", scope="s" * 32, path="turn-1", pipe_name="agent", pipe=agent, turn=1,
        messages=[{"role": "user", "content": "what is filed under item 1"}], tools=offered,
    )  # fmt: skip
    call = ToolCall(
        run_id="agent-1", scope="s" * 32, path="turn-1/lookup", pipe_name="lookup", pipe=tool,
        inputs={"query": "item 1"}, summary="tool lookup",
    )  # fmt: skip
    turn_data, turn_back = travelled(turn)
    call_data, call_back = travelled(call)
    # The loop reads the agent's prompt, tools and caps in the workflow; the workflow retries.
    assert json.loads(turn_data)["pipe"] == {
        "kind": "agent",
        "timeout": 120.0,
        "model": "durapipe/offline",
        "prompt": "{{ question }}",
        "settings": {"offline_tool_rounds": 5},
    }
    assert json.loads(call_data)["pipe"] == {
        "kind": "tool",
        "timeout": 60.0,
        "function": "bench.agent_tools:lookup",
        "output": "text",
    }
    assert set(json.loads(turn_data)) == {
        "run_id", "scope", "path", "pipe_name", "pipe", "turn", "messages", "tools"
    }  # fmt: skip
    # The summary is the UI label the workflow schedules the call with: it never travels.
    assert set(json.loads(call_data)) == {"run_id", "scope", "path", "pipe_name", "inputs", "pipe"}
    assert (len(turn_data), len(call_data)) == (543, 227)  # 875 and 511 before
    # What each activity reads is all there.
    assert turn_back.pipe == AgentPipe(
        model="durapipe/offline",
        prompt="{{ question }}",
        settings={"offline_tool_rounds": 5},
        timeout=120,
    )
    assert turn_back.model_copy(update={"pipe": agent}) == turn
    assert call_back.model_copy(update={"pipe": tool, "summary": "tool lookup"}) == call
    assert (call_back.pipe.function, call_back.pipe.output, call_back.pipe.memoize) == (
        tool.function,
        tool.output,
        tool.memoize,
    )


def test_a_tool_call_recorded_with_its_whole_pipe_reads_back_the_same() -> None:
    # What an older release's workflow worker sends, mid rolling upgrade.
    _, tool = agent_and_tool()
    call = ToolCall(
        run_id="agent-1", path="turn-1/lookup", pipe_name="lookup", pipe=tool,
        inputs={"query": "item 1"}, summary="tool lookup",
    )  # fmt: skip
    recorded = json.dumps(
        {
            "run_id": "agent-1", "scope": "", "path": "turn-1/lookup", "pipe_name": "lookup",
            "inputs": {"query": "item 1"}, "summary": "tool lookup", "limits": [],
            "pipe": tool.model_dump(mode="json"), "structures": {},
        }
    ).encode()  # fmt: skip
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([call])
    payload.data = recorded
    [back] = converter.from_payloads([payload], [ToolCall])
    assert back == call


def test_each_estimated_call_reads_back_as_its_own_kind_where_several_may_arrive() -> None:
    # The budget's estimate takes an llm, agent turn or image call (one activity): an image call
    # that travelled without its pipe's kind read as an llm call, priced at nothing.
    agent, _ = agent_and_tool()
    calls: list[LlmCall | AgentTurnCall | ImageCall] = [
        LlmCall(run_id="r", path="ask", pipe_name="ask", pipe=LlmPipe(prompt="{{ t }}")),
        AgentTurnCall(
            run_id="r", path="turn-1", pipe_name="agent", pipe=agent, turn=1,
            messages=[{"role": "user", "content": "q"}],
        ),
        ImageCall(
            run_id="r", path="cover", pipe_name="cover", inputs={"t": "x"},
            pipe=ImagePipe(model="openai/gpt-img", prompt="{{ t }}"),
        ),
    ]  # fmt: skip
    converter = pydantic_data_converter.payload_converter
    for call in calls:
        [payload] = converter.to_payloads([call])
        [back] = converter.from_payloads([payload], [LlmCall | AgentTurnCall | ImageCall])
        assert type(back) is type(call)
        assert converter.to_payloads([back]) == [payload]


async def test_an_agents_turn_answers_without_its_replys_empty_fields() -> None:
    # A tool-calling turn's result said ``"content":null,...,"output":null,"problem":null``:
    # 45 of its 260 bytes. The loop reads the reply back the same.
    agent, tool = agent_and_tool()
    call = AgentTurnCall(
        run_id="agent-1", path="turn-1", pipe_name="agent", pipe=agent, turn=1,
        messages=[{"role": "user", "content": "q"}], tools=[tool_schema("lookup", tool, {})],
    )  # fmt: skip
    data, back = returned(await run_agent_turn(call))
    assert json.loads(data)["output"] == {
        "tool_calls": [{"id": "call_1_1", "name": "lookup", "arguments": '{"query": "query 1: q"}'}]
    }
    reply = AgentReply.model_validate(back.output)
    assert (reply.content, reply.output, reply.problem) == (None, None, None)
    assert reply.tool_calls[0].name == "lookup"
