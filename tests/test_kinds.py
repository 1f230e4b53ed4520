"""A pipe kind declared in one place: a throwaway kind, defined only here, read from YAML, checked,
run with --local and on a real Temporal worker; and a kind nothing can run fails at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import pytest

import durapipe as dp
from durapipe.activities import CallContext, register_activity, unregister_activity
from durapipe.client import step_detail
from durapipe.runtime import CallBase, LeafResult
from durapipe.spec import InlineError, Kind, PipeBase, RetrySpec, check, register_kind
from durapipe.spec._kinds import unregister_kind
from tests.support import history_events, scheduled_activities

# --- the throwaway kind: everything a new kind needs, in one place --------------------------------


class ShoutPipe(PipeBase):
    """Repeats its ``text`` input in capitals."""

    kind: Literal["shout"] = "shout"
    times: int = 1
    output: Literal["text"] = "text"


class ShoutCall(CallBase):
    """The input of the ``tests.shout`` activity."""

    pipe: ShoutPipe


def check_shout(pipeline: Any, name: str, pipe: ShoutPipe, report: Any) -> None:
    if pipe.times > 3:
        report(f"pipe '{name}', field 'times'", "shouting more than 3 times is rude")
    if "text" not in pipe.inputs:
        report(f"pipe '{name}', field 'inputs'", "a shout pipe needs a 'text' input")


SHOUT = Kind(
    "shout",
    ShoutPipe,
    timeout=7.0,
    retry=RetrySpec(max_attempts=2),
    activity="tests.shout",
    call=ShoutCall,
    check=check_shout,
)


async def shout(call: ShoutCall, context: CallContext) -> LeafResult:
    text = str(call.inputs["text"]).upper()
    return LeafResult(output=" ".join([text] * call.pipe.times), attempt=context.attempt)


# --- end of the kind -------------------------------------------------------------------------------


class MutePipe(PipeBase):
    """A kind with a spec and nothing to run it."""

    kind: Literal["mute"] = "mute"


YAML = """
pipes:
  twice:
    kind: shout
    inputs: {text: text}
    times: 2
  brief:
    kind: sequence
    inputs: {topic: text}
    steps:
      - {pipe: twice, inputs: {text: topic}, result: loud}
      - {pipe: tidy, inputs: {text: loud}}
  tidy:
    kind: compose
    inputs: {text: text}
    template: "<{{ text }}>"
"""


@pytest.fixture
def shout_kind() -> Iterator[Kind]:
    register_kind(SHOUT)
    register_activity("tests.shout")(shout)
    yield SHOUT
    unregister_kind("shout")
    unregister_activity("tests.shout")


@pytest.fixture
def mute_kind() -> Iterator[None]:
    register_kind(Kind("mute", MutePipe))
    yield
    unregister_kind("mute")


@pytest.mark.usefixtures("shout_kind")
def test_the_kind_reads_from_yaml_and_its_checks_run() -> None:
    pipeline = dp.load_yaml(YAML)
    assert isinstance(pipeline.pipes["twice"], ShoutPipe)
    assert check(pipeline) == []
    rude = dp.load_yaml(YAML.replace("times: 2", "times: 5"))
    assert [str(p) for p in check(rude)] == [
        "pipe 'twice', field 'times': shouting more than 3 times is rude"
    ]
    with pytest.raises(dp.PipelineError, match=r"pipe 'twice'.*'volume'"):
        dp.load_yaml(YAML.replace("times: 2", "times: 2\n    volume: 11"))
    # The kind's defaults are filled when a run resolves its spec.
    resolved = dp.spec.resolve(pipeline, "twice")
    assert resolved.pipes["twice"].timeout == 7.0
    assert resolved.pipes["twice"].retry == RetrySpec(max_attempts=2)


def test_an_unregistered_kind_is_one_sentence_naming_it() -> None:
    with pytest.raises(dp.PipelineError, match=r"pipe 'twice': unknown kind 'shout' \(one of llm"):
        dp.load_yaml(YAML)


@pytest.mark.usefixtures("shout_kind")
async def test_the_kind_runs_locally() -> None:
    result = await dp.run_local(dp.load_yaml(YAML), "brief", {"topic": "tides"})
    assert result.output == "<TIDES TIDES>"
    assert [(s.path, s.kind, s.status) for s in result.steps] == [
        ("twice", "shout", "succeeded"),
        ("tidy", "compose", "succeeded"),
    ]


@pytest.mark.usefixtures("shout_kind")
async def test_the_kind_runs_on_a_temporal_worker(temporal_address: str, task_queue: str) -> None:
    pipeline = dp.load_yaml(YAML)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"shout-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client, pipeline, "brief", {"topic": "tides"}, run_id=run_id, task_queue=task_queue
        )
    assert result.output == "<TIDES TIDES>"
    events = await history_events(client, run_id)
    assert scheduled_activities(events) == [("tests.shout", "twice", "shout twice")]
    scheduled = next(e for e in events if e.HasField("activity_task_scheduled_event_attributes"))
    attributes = scheduled.activity_task_scheduled_event_attributes
    assert attributes.start_to_close_timeout.seconds == 7  # the kind's default
    assert attributes.retry_policy.maximum_attempts == 2
    detail = await step_detail(client, run_id, "twice")  # `durapipe show --step` reads the call
    assert (detail.kind, detail.inputs, detail.output) == (
        "shout",
        {"text": "tides"},
        "TIDES TIDES",
    )


@pytest.mark.usefixtures("mute_kind")
async def test_a_kind_nothing_can_run_fails_at_once(temporal_address: str, task_queue: str) -> None:
    pipeline = dp.Pipeline(
        pipes={"quiet": MutePipe(inputs={"text": "text"})},
    )
    sentence = (
        "pipe 'quiet' is of kind 'mute', which this worker cannot run (no module registered "
        "a call message and an activity for it: see durapipe.spec.Kind)"
    )
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, "quiet", {"text": "hi"})
    assert (local.value.cause_type, local.value.cause) == ("durapipe.UnknownKind", sentence)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        # Before, the workflow task failed and was retried forever: the run never ended.
        async with asyncio.timeout(60):
            with pytest.raises(dp.StepFailed) as remote:
                await dp.run(client, pipeline, "quiet", {"text": "hi"}, task_queue=task_queue)
    assert (remote.value.path, remote.value.kind) == ("quiet", "mute")
    assert (remote.value.cause_type, remote.value.cause) == ("durapipe.UnknownKind", sentence)


def test_a_kind_is_declared_once() -> None:
    with pytest.raises(ValueError, match="must declare kind: Literal\\['loud'\\]"):
        Kind("loud", ShoutPipe)
    with pytest.raises(ValueError, match="pipe kind 'llm' is already registered"):
        register_kind(Kind("llm", dp.spec.LlmPipe, timeout=1.0))
    with pytest.raises(ValueError, match="'activity' it goes to"):
        Kind("shout", ShoutPipe, call=ShoutCall)


async def test_a_worker_without_the_kind_fails_the_run_at_once(
    temporal_address: str, task_queue: str, shout_kind: Kind
) -> None:
    pipeline = dp.load_yaml(YAML)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    handle = await dp.start(client, pipeline, "brief", {"topic": "tides"}, task_queue=task_queue)
    # The client knew the kind; this worker never imported the module that registers it.
    unregister_kind(shout_kind.name)
    async with dp.build_worker(client, task_queue=task_queue), asyncio.timeout(60):
        with pytest.raises(dp.StepFailed) as failed:
            await handle.result()
    assert (failed.value.path, failed.value.kind) == ("twice", "shout")
    assert failed.value.cause_type == "durapipe.UnknownKind"
    assert failed.value.cause.startswith("pipe 'twice' is of kind 'shout', which this worker")


def test_the_built_in_kinds_take_the_registered_path() -> None:
    """Each built-in leaf is a full `Kind` (checks, call message, activity) whose body is
    registered under its activity name, every built-in kind brings its own checks, and a
    worker's activities are exactly the registered bodies (plus the budget's estimate and the
    run-size cap), under the names and input types that histories record."""
    from typing import get_type_hints

    from durapipe.activities import Activities, activity_body
    from durapipe.runtime import AgentTurnCall, ExtractCall, ImageCall, LlmCall, ToolCall
    from durapipe.spec import kinds

    messages = {
        "durapipe.llm": LlmCall,
        "durapipe.tool": ToolCall,
        "durapipe.extract": ExtractCall,
        "durapipe.image": ImageCall,
        "durapipe.agent_turn": AgentTurnCall,
    }
    builtin = ["llm", "tool", "extract", "image", "agent", "sequence", "parallel", "batch"]
    for name in [*builtin, "condition", "approval", "compose"]:
        assert kinds()[name].check is not None, name
    leaves = {kinds()[name].activity: kinds()[name].call for name in builtin[:5]}
    assert leaves == messages
    assert all(activity_body(activity) is not None for activity in messages)
    worker = {
        getattr(fn, "__temporal_activity_definition").name: get_type_hints(fn).get("call")
        for fn in Activities(checkpoints=None).all()
    }
    # The budget's estimate takes every call it prices before it runs.
    estimated = LlmCall | AgentTurnCall | ImageCall
    assert worker == {
        **messages,
        "durapipe.estimate_cost": estimated,
        "durapipe.max_run_steps": None,  # takes no call: it answers the worker's setting
        "durapipe.max_run_usd": None,  # likewise
    }


class EchoPipe(PipeBase):
    """A throwaway inline kind: computed in the workflow, no activity."""

    kind: Literal["echo"] = "echo"
    output: Literal["text"] = "text"


def echo(pipe: EchoPipe, inputs: dict[str, Any], structures: dict[str, Any]) -> str:
    if not inputs["text"]:
        raise InlineError("tests.Silence", f"pipe 'say': input 'text' is empty ({pipe.kind})")
    return f"{inputs['text']}!"


@pytest.fixture
def echo_kind() -> Iterator[None]:
    register_kind(Kind("echo", EchoPipe, inline=echo))
    yield
    unregister_kind("echo")


@pytest.mark.usefixtures("echo_kind")
async def test_an_inline_kind_runs_in_the_interpreter_and_fails_with_its_own_type() -> None:
    pipeline = dp.load_yaml("pipes:\n  say: {kind: echo, inputs: {text: text}}\n")
    assert (await dp.run_local(pipeline, "say", {"text": "tides"})).output == "tides!"
    with pytest.raises(dp.StepFailed) as failed:
        await dp.run_local(pipeline, "say", {"text": ""})
    assert (failed.value.path, failed.value.cause_type) == ("say", "tests.Silence")
    assert failed.value.cause == "pipe 'say': input 'text' is empty (echo)"
    with pytest.raises(ValueError, match="an inline kind runs in the workflow"):
        Kind("echo", EchoPipe, inline=echo, activity="tests.echo")


def test_a_run_totals_steps_count_no_record_of_a_kind_registered_as_a_controller() -> None:
    # The totals' step count reads the controller kinds as a set kept per registry generation:
    # a kind registered (or forgotten) after a count is read as it is now.
    from durapipe.workflows._search import finished_steps

    record = dp.StepRecord(path="outer", pipe="outer", kind="mute", status="succeeded")
    leaf = dp.StepRecord(path="inner", pipe="inner", kind="llm", status="failed")
    assert finished_steps([record, leaf]) == 2  # not a controller while no kind says so
    register_kind(Kind("mute", MutePipe, controller=True))
    try:
        assert finished_steps([record, leaf]) == 1
    finally:
        unregister_kind("mute")
    assert finished_steps([record, leaf]) == 2
