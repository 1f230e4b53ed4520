"""A spec that arrives in a raw workflow input need not have been validated: pipes that call each
other in a cycle, or name a pipe the spec lacks, fail the run at once in one sentence, instead of
starting child workflows without end (a parallel cycle doubles them at each level) or failing a
workflow task forever."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import Client

import durapipe as dp
from durapipe.adapters import WORKFLOW_NAME, pipe_run
from tests.support import acli, raw_run_fails, raw_run_failure

PIPES = """
pipes:
  ask:
    kind: llm
    inputs: {text: text}
    prompt: "Say: {{ text }}"
  flow:
    kind: sequence
    inputs: {text: text}
    steps:
      - {pipe: ask, result: answer}
"""
# What an attacker makes of `flow` in the JSON it sends.
TAMPERED: dict[str, tuple[dict[str, Any], str]] = {
    "sequence_cycle": (
        {"kind": "sequence", "inputs": {"text": "text"}, "steps": [{"pipe": "flow"}]},
        "pipe 'flow': pipes call each other in a cycle: flow -> flow",
    ),
    "parallel_cycle": (
        {
            "kind": "parallel",
            "inputs": {"text": "text"},
            "branches": {"a": {"pipe": "flow"}, "b": {"pipe": "ask"}},
        },
        "pipe 'flow': pipes call each other in a cycle: flow -> flow",
    ),
    "missing_pipe": (
        {"kind": "sequence", "inputs": {"text": "text"}, "steps": [{"pipe": "ghost"}]},
        "pipe 'flow' calls pipe 'ghost', which the run's spec does not hold",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERED))
async def test_a_raw_spec_that_calls_itself_or_nothing_fails_at_once(
    case: str, temporal_address: str, task_queue: str
) -> None:
    flow, sentence = TAMPERED[case]
    data = pipe_run(dp.load_yaml(PIPES), "flow", {"text": "x"}).model_dump(mode="json")
    data["spec"]["pipes"]["flow"] = flow
    client = await Client.connect(temporal_address, plugins=[dp.DurapipePlugin()])
    async with dp.build_worker(client, task_queue=task_queue):
        handle, failure = await raw_run_fails(client, data, task_queue)
    assert failure.cause_type == "durapipe.InvalidSpec"
    assert sentence in failure.cause
    started = [
        e
        async for e in handle.fetch_history_events()
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert started == []  # not one child workflow


async def test_a_run_cannot_hold_a_worker_slot_past_the_workers_step_timeout_cap(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client sets a step timeout of 31 years and makes the offline model sleep through it: with
    # as many such runs as the worker has slots, no other run's step would start for as long.
    monkeypatch.setenv("DURAPIPE_MAX_STEP_TIMEOUT", "10m")
    data = pipe_run(dp.load_yaml(PIPES), "ask", {"text": "x"}).model_dump(mode="json")
    data["spec"]["pipes"]["ask"].update(timeout=10**9, settings={"offline_delay": 10**8})
    client = await Client.connect(temporal_address, plugins=[dp.DurapipePlugin()])
    async with dp.build_worker(client, task_queue=task_queue, max_concurrent_activities=1):
        _, failure = await raw_run_fails(client, data, task_queue)
        ordinary = await asyncio.wait_for(
            dp.run(client, dp.load_yaml(PIPES), "ask", {"text": "x"}, task_queue=task_queue), 30
        )
    assert failure.cause_type == "durapipe.TimeoutNotAllowed"
    assert failure.cause.startswith("pipe 'ask', field 'timeout': ")
    assert "DURAPIPE_MAX_STEP_TIMEOUT" in failure.cause
    assert ordinary.output == "Offline answer: Say: x"


# Names and errors of a run come from whoever started it: a terminal title (OSC), a screen clear
# (CSI), a bidi override that reverses what follows, and a C1 control (8-bit CSI).
HOSTILE_NAME = "ask\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b"


async def test_cli_lines_never_carry_a_runs_control_characters_to_the_terminal(
    temporal_address: str, task_queue: str
) -> None:
    data = pipe_run(dp.load_yaml(PIPES), "ask", {"text": "x"}).model_dump(mode="json")
    data["spec"]["pipes"][HOSTILE_NAME] = data["spec"]["pipes"].pop("ask")
    data["pipe"] = HOSTILE_NAME
    data["spec"]["pipes"][HOSTILE_NAME]["prompt"] = "{{ text "  # fails, quoting the template
    client = await Client.connect(temporal_address, plugins=[dp.DurapipePlugin()])
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await client.start_workflow(
            WORKFLOW_NAME, data, id=data["run_id"], task_queue=task_queue
        )
        with pytest.raises(dp.StepFailed):
            await asyncio.wait_for(dp.RunHandle(client, handle.id).result(), 30)
        shown = await acli(temporal_address, "show", handle.id)
        result = await acli(temporal_address, "result", handle.id)
    printed = shown.stdout + shown.stderr + result.stdout + result.stderr
    assert "TemplateError" in printed and "\\x1b]0;pwned\\x07" in printed
    assert not [c for c in printed if ord(c) < 32 and c not in "\n\t"]
    assert "\x9b" not in printed and "\u202e" not in printed


def test_an_exact_list_length_past_the_bound_is_refused_naming_pipe_and_field() -> None:
    text = PIPES.replace('prompt: "Say', 'output: "list[text, 10000000]"\n    prompt: "Say')
    with pytest.raises(dp.PipelineError) as raised:
        dp.validate(dp.load_yaml(text))
    (problem,) = raised.value.problems
    assert problem.where == "pipe 'ask', field 'output'"
    assert "at most 10000" in problem.message


async def test_a_raw_spec_asking_for_ten_million_items_fails_at_once(
    temporal_address: str, task_queue: str
) -> None:
    # The offline model built all ten million (2 GB, a minute of a worker's CPU and counting).
    data = pipe_run(dp.load_yaml(PIPES), "ask", {"text": "x"}).model_dump(mode="json")
    data["spec"]["pipes"]["ask"]["output"] = "list[text, 10000000]"
    failure = await raw_run_failure(temporal_address, data, task_queue)
    assert failure.cause_type == "durapipe.InvalidSpec"
    assert failure.cause.startswith("pipe 'ask', field 'output': ")
    assert "at most 10000" in failure.cause


async def test_a_raw_spec_with_a_structure_that_refers_to_itself_fails_at_once(
    temporal_address: str, task_queue: str
) -> None:
    # Each of 5 attempts failed with a bare RecursionError (16 s) before the run checked it.
    data = pipe_run(dp.load_yaml(PIPES), "ask", {"text": "x"}).model_dump(mode="json")
    data["spec"]["structures"] = {"Node": {"fields": {"child": {"type": "Node"}}}}
    data["spec"]["pipes"]["ask"]["output"] = "Node"
    failure = await raw_run_failure(temporal_address, data, task_queue)
    assert failure.cause_type == "durapipe.InvalidSpec"
    assert failure.cause.startswith("pipe 'ask', field 'output': structure 'Node' refers")
