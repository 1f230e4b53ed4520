"""The example pipeline on the real dev server: translation, history shape and parity with --local."""

from __future__ import annotations

import uuid
from typing import Any

import durapipe as dp
from tests.conftest import ARTICLE, EXAMPLES
from tests.support import history_events, scheduled_activities


async def run_on_temporal(
    address: str, task_queue: str, pipeline: dp.Pipeline, run_id: str
) -> dp.RunResult:
    client = await dp.connect(address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        return await dp.run(
            client, pipeline, "brief", {"article": ARTICLE}, run_id=run_id, task_queue=task_queue
        )


def check_brief_output(output: Any) -> None:
    assert set(output) == {"claims", "headline", "word_count", "verdict"}
    assert output["word_count"] == len(ARTICLE.split())
    assert output["claims"] and all(
        c["importance"] in ("low", "medium", "high") for c in output["claims"]
    )
    assert isinstance(output["headline"], str) and output["headline"]


async def test_brief_is_one_workflow_with_a_child_and_one_activity_per_call(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline
) -> None:
    run_id = f"brief-{uuid.uuid4().hex[:8]}"
    result = await run_on_temporal(temporal_address, task_queue, brief_yaml, run_id)
    check_brief_output(result.output)

    client = await dp.connect(temporal_address)
    top = await history_events(client, run_id)
    assert scheduled_activities(top) == [
        ("durapipe.llm", "extract_claims", "llm extract_claims · durapipe/offline"),
        ("durapipe.llm", "headline", "llm headline · durapipe/offline"),
    ]
    children = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in top
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert [(c.workflow_id, c.workflow_type.name) for c in children] == [
        (f"{run_id}/fact_check", "durapipe.pipe")
    ]
    child = await history_events(client, f"{run_id}/fact_check")
    assert scheduled_activities(child) == [
        ("durapipe.tool", "fact_check/count_words", "tool fact_check/count_words"),
        ("durapipe.llm", "fact_check/verify", "llm fact_check/verify · durapipe/offline"),
    ]
    assert [(s.path, s.kind, s.status) for s in result.steps] == [
        ("extract_claims", "llm", "succeeded"),
        ("headline", "llm", "succeeded"),
        ("fact_check", "sequence", "succeeded"),
        ("fact_check/count_words", "tool", "succeeded"),
        ("fact_check/verify", "llm", "succeeded"),
    ]
    llm_steps = [s for s in result.steps if s.kind == "llm"]
    assert all(s.input_tokens > 0 and s.output_tokens > 0 for s in llm_steps)
    assert result.usage.input_tokens == sum(s.input_tokens for s in llm_steps)


async def test_temporal_local_and_python_spelling_give_the_same_output(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline
) -> None:
    on_temporal = await run_on_temporal(
        temporal_address, task_queue, brief_yaml, f"parity-{uuid.uuid4().hex[:8]}"
    )
    local = await dp.run_local(brief_yaml, "brief", {"article": ARTICLE})
    python_spelling = dp.load(EXAMPLES / "brief.py")
    local_python = await dp.run_local(python_spelling, "brief", {"article": ARTICLE})
    check_brief_output(local.output)
    assert on_temporal.output == local.output == local_python.output
    assert on_temporal.usage == local.usage


async def test_a_failed_nested_step_fails_the_run_naming_that_step(
    temporal_address: str, task_queue: str
) -> None:
    from tests import flaky_tools

    flaky_tools.CALLS.clear()
    failing = dp.tool(flaky_tools.flaky, retry={"max_attempts": 2, "initial_interval": 0.05})
    inner = dp.sequence("inner", inputs={"failures": int}, steps=[dp.step(failing, result="text")])
    outer = dp.sequence(
        "outer",
        inputs={"failures": int},
        steps=[dp.step(inner, result="text"), dp.step(dp.tool(flaky_tools.shout))],
    )
    pipeline = dp.pipeline(outer)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"fails-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client, pipeline, "outer", {"failures": 99}, run_id=run_id, task_queue=task_queue
        )
        try:
            await handle.result()
        except dp.StepFailed as err:
            failure = err
        else:
            raise AssertionError("the run should have failed")
    assert (
        failure.run_id == run_id
        and failure.path == "inner/flaky"
        and failure.cause_type == "ConnectionError"
    )
    assert str(failure) == "step 'inner/flaky' (tool) failed: ConnectionError: call 2 failed"
    statuses = {s.path: s.status for s in (dp.StepRecord.model_validate(r) for r in failure.steps)}
    assert statuses == {"inner": "failed", "inner/flaky": "failed", "shout": "skipped"}


async def test_a_tool_the_worker_lacks_names_the_queue_whose_workers_must_load_it(
    temporal_address: str, task_queue: str
) -> None:
    # Workers of other files on one queue (the README's default queue, `durapipe`) take each
    # other's steps: "start the worker with the pipeline file" did not say which workers.
    from tests import flaky_tools

    shout = dp.sequence("loud", inputs={"text": str}, steps=[dp.step(dp.tool(flaky_tools.shout))])
    pipeline = dp.pipeline(shout)
    client = await dp.connect(temporal_address, pipeline=dp.load(EXAMPLES / "brief.yaml"))
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "loud", {"text": "hi"}, task_queue=task_queue)
        try:
            await handle.result()
        except dp.StepFailed as err:
            failure = err
        else:
            raise AssertionError("the run should have failed")
    assert str(failure) == (
        "step 'shout' (tool) failed: durapipe.ToolNotFound: tool 'tests.flaky_tools:shout' "
        "(pipe 'shout') is not registered on this worker; start every worker of task queue "
        f"'{task_queue}' with the pipeline file that defines it (any of them may take the step)"
    )
