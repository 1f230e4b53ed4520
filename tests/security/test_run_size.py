"""A worker caps the steps one run may start (``DURAPIPE_MAX_RUN_STEPS``), across its child runs:
a valid, acyclic spec can fan out without bound (nested parallels double at each level; a batch maps
a list of any length), and one such run would hold the worker and the cluster for hours. The cap is
the worker's: refused before what it counts starts, whatever the run's input says."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

import durapipe as dp
from durapipe.adapters import pipe_run
from tests.support import EACH_SQUARE, LISTED_BATCH, SQUARE_TOOL, acli, raw_run_fails

CAP = "DURAPIPE_MAX_RUN_STEPS"
SQUARE = SQUARE_TOOL
BATCHES = "pipes:" + EACH_SQUARE + LISTED_BATCH + SQUARE


def fan(levels: int) -> dp.Pipeline:
    """Parallels nested ``levels`` deep, two branches each: 2^levels squares (pipe ``fan``)."""
    pipes = [SQUARE]
    below = "square"
    for level in range(levels):
        name = "fan" if level == levels - 1 else f"fan{level}"
        pipes.append(
            f"  {name}:\n    kind: parallel\n    inputs: {{n: integer}}\n"
            f"    branches: {{a: {below}, b: {below}}}\n"
        )
        below = name
    return dp.load_yaml("pipes:\n" + "".join(pipes))


async def started(handle: WorkflowHandle[Any, Any]) -> tuple[int, int]:
    """The child workflows and activities a run's history started."""
    events = [e async for e in handle.fetch_history_events()]
    children = [
        e for e in events if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    activities = [e for e in events if e.HasField("activity_task_scheduled_event_attributes")]
    return len(children), len(activities)


async def test_nested_parallels_past_the_cap_are_refused_before_any_step_starts(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = fan(20)  # 2^21 - 2 steps: parallels and squares, against the default 100,000
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "fan", {"n": 2}, task_queue=task_queue)
        with pytest.raises(dp.StepFailed) as failed:
            await asyncio.wait_for(handle.result(), 30)
        history = client.get_workflow_handle(handle.run_id)
        assert await started(history) == (0, 0)  # not one child workflow, not one activity
    with pytest.raises(dp.StepFailed) as local:
        await dp.run_local(pipeline, "fan", {"n": 2})
    for refused in (failed.value, local.value):
        assert refused.cause_type == "durapipe.RunTooLarge"
        assert refused.cause == (
            "pipe 'fan' would start 2,097,150 steps, more than the 100,000 steps this worker lets "
            f"one run start ({CAP}); make the run smaller, or raise the setting on the workers"
        )


@pytest.mark.parametrize(
    ("cap", "pipe", "items", "passes"),
    [
        ("100", "each", 100, True),
        ("100", "each_in_chunks", 100, True),  # ten child runs of ten: none counted twice
        ("100", "each", 101, False),
        ("150", "each", 101, True),
    ],
    ids=["exactly-at-the-cap", "at-the-cap-in-chunks", "one-past-it", "the-setting-raises-it"],
)
async def test_a_batch_over_a_list_past_the_cap_is_refused_at_its_start(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, cap: str, pipe: str,
    items: int, passes: bool,
) -> None:  # fmt: skip
    monkeypatch.setenv(CAP, cap)
    pipeline = dp.load_yaml(BATCHES)
    inputs = {"numbers": list(range(items))}
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, pipe, inputs, task_queue=task_queue)
        try:
            result = await asyncio.wait_for(handle.result(), 60)
        except dp.StepFailed as failed:
            assert not passes, failed
            assert failed.cause_type == "durapipe.RunTooLarge"
            assert failed.cause.startswith(
                f"batch pipe 'each' over the {items} items of 'numbers' would start {items} "
                f"steps, more than the {cap} steps this worker lets one run start ({CAP})"
            )
            assert await started(client.get_workflow_handle(handle.run_id)) == (0, 0)
        else:
            assert passes
            assert result.output == [n * n for n in range(items)]
        history = await client.get_workflow_handle(handle.run_id).fetch_history()
    # The cap a run got is in its history (a local activity's answer): a worker set otherwise
    # replays it as it ran, refused or not, instead of deciding again.
    monkeypatch.setenv(CAP, "100" if cap != "100" else "1000")
    [replayed] = await dp.ops.replay([history])
    assert replayed.compatible, replayed.problem
    monkeypatch.setenv(CAP, cap)
    local = dp.run_local(pipeline, pipe, inputs)
    if passes:
        assert (await local).output == [n * n for n in range(items)]
    else:
        with pytest.raises(dp.StepFailed, match="would start 101 steps, more than the 100 "):
            await local


@pytest.mark.parametrize(("n", "passes"), [(98, True), (99, False)])
async def test_a_nested_run_counts_against_the_runs_cap_not_a_fresh_one(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, n: int, passes: bool
) -> None:
    # `listed` holds 2 steps (count, each) before its batch reads the list `count` makes; the
    # batch, a child workflow, has the 98 steps left of 100, not a cap of its own.
    monkeypatch.setenv(CAP, "100")
    pipeline = dp.load_yaml(BATCHES)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "listed", {"n": n}, task_queue=task_queue)
        try:
            result = await asyncio.wait_for(handle.result(), 60)
        except dp.StepFailed as failed:
            assert not passes, failed
            assert (failed.path, failed.cause_type) == ("each", "durapipe.RunTooLarge")
            assert failed.cause.startswith(
                "batch pipe 'each' over the 99 items of 'numbers' would start 99 steps, more "
                f"than the 98 this nested run has left of the steps this worker lets one run "
                f"start ({CAP})"
            )
            child = client.get_workflow_handle(f"{handle.run_id}/each")
            assert await started(child) == (0, 0)  # the batch started none of its items
        else:
            assert passes
            assert result.output == [k * k for k in range(1, n + 1)]
    local = dp.run_local(pipeline, "listed", {"n": n})
    if passes:
        await local
    else:
        with pytest.raises(dp.StepFailed, match="more than the 98 this nested run has left"):
            await local


async def test_a_forged_input_cannot_raise_the_workers_cap(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A raw client writes the allowance a parent gives its child runs into a top-level input.
    monkeypatch.setenv(CAP, "100")
    data = pipe_run(dp.load_yaml(BATCHES), "each", {"numbers": list(range(101))}).model_dump(
        mode="json"
    )
    data["steps_left"] = 10**9
    client = await dp.connect(temporal_address, pipeline=dp.load_yaml(BATCHES))
    async with dp.build_worker(client, task_queue=task_queue):
        handle, failure = await raw_run_fails(client, data, task_queue)
        assert await started(handle) == (0, 0)
    assert failure.cause_type == "durapipe.RunTooLarge"
    assert "more than the 100 steps this worker lets one run start" in failure.cause


async def test_the_cli_exits_non_zero_and_show_names_the_refusal(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CAP, "100")
    file = tmp_path / "batches.yaml"
    file.write_text(BATCHES)
    inputs = json.dumps({"numbers": list(range(101))})
    run_id = f"too-large-{uuid.uuid4().hex[:8]}"
    sentence = "batch pipe 'each' over the 101 items of 'numbers' would start 101 steps"
    args = ("run", "each", "--file", str(file), "--input-json", inputs)
    client = await dp.connect(temporal_address, pipeline=dp.load(file))
    async with dp.build_worker(client, task_queue=task_queue):
        ran = await acli(temporal_address, *args, "--id", run_id, "--task-queue", task_queue)
        shown = await acli(temporal_address, "show", run_id)
    local = await acli(temporal_address, *args, "--local")
    for result in (ran, local):
        assert result.returncode == 1, result.stdout + result.stderr
        assert "durapipe.RunTooLarge: " + sentence in result.stderr
        assert "Traceback" not in result.stdout + result.stderr
    assert "durapipe.RunTooLarge" in shown.stdout + shown.stderr
    assert sentence in shown.stdout + shown.stderr


ASK = """
pipes:
  ask:
    kind: llm
    inputs: {text: text}
    prompt: "Say: {{ text }}"
"""


async def test_a_call_cannot_ask_for_answers_nobody_reads(
    temporal_address: str, task_queue: str
) -> None:
    # `n` choices per call: the step reads the first, the provider bills all of them.
    with pytest.raises(dp.PipelineError, match="'n' asks the provider for 1000000 answers"):
        dp.validate(
            dp.load_yaml(ASK.replace("    prompt:", "    settings: {n: 1000000}\n    prompt:"))
        )
    data = pipe_run(dp.load_yaml(ASK), "ask", {"text": "x"}).model_dump(mode="json")
    data["spec"]["pipes"]["ask"]["settings"] = {"n": 10**6}
    client = await dp.connect(temporal_address, pipeline=dp.load_yaml(ASK))
    async with dp.build_worker(client, task_queue=task_queue):
        _, failure = await raw_run_fails(client, data, task_queue)
    assert failure.cause_type == "durapipe.SettingNotAllowed"
    assert failure.cause.startswith("pipe 'ask', field 'settings.n': 'n' asks the provider")
    one = dp.load_yaml(ASK.replace("    prompt:", "    settings: {n: 1}\n    prompt:"))
    assert (await dp.run_local(one, "ask", {"text": "x"})).output == "Offline answer: Say: x"
