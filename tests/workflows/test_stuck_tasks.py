"""A run whose workflow task cannot complete says why: a nested pipe's task that keeps failing
(the run itself looks healthy, waiting on its child), and a task that keeps timing out (which is
not called a failure: Temporal recorded a timeout)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow

import durapipe as dp
import durapipe.workflows._workflow as pipe_workflow
from durapipe.adapters._plan import WORKFLOW_NAME, pipe_run
from durapipe.runtime._interpret import Interpreter
from durapipe.workflows._search import start_totals
from tests.support import attempt_of, eventually

NESTED = """
pipes:
  post:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: write
        result: draft
    output: draft
  write:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: outline
        result: plan
    output: plan
  outline:
    kind: llm
    inputs: {topic: text}
    prompt: "Outline a post about {{ topic }}."
"""


def _refusing_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers whose code fails every workflow task of a nested pipe (pipe code changed under a
    running run, say), and runs the top-level pipe as before."""
    interpreter = Interpreter

    def refusing(*args: Any, **kwargs: Any) -> Any:
        if workflow.info().parent is not None:
            raise RuntimeError("pipe code changed under the run")
        return interpreter(*args, **kwargs)

    monkeypatch.setattr(pipe_workflow, "Interpreter", refusing)


async def _stuck(handle: dp.RunHandle, opening: str) -> str | None:
    # Until the in-process worker has polled, the queue has no worker: not yet.
    why = await handle.stalled()
    return why if why and why.startswith(opening) else None


async def test_a_nested_pipe_whose_workflow_task_keeps_failing_is_named(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nested.yaml"
    path.write_text(NESTED)
    pipeline = dp.load(path)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"stuck-child-{uuid.uuid4().hex[:8]}"
    _refusing_children(monkeypatch)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client, pipeline, "post", {"topic": "bridges"}, run_id=run_id, task_queue=task_queue
        )
        why = await eventually(
            lambda: _stuck(handle, "the workflow task of its nested pipe"),
            "the nested pipe's failing workflow task to be reported",
        )
    # Temporal keeps the first failure of the run of attempts and counts them: the sentence says
    # that, not how many failed (a later attempt's outcome is recorded nowhere).
    attempt = attempt_of(why)
    assert why == (
        f"the workflow task of its nested pipe at step 'write' is on attempt {attempt} on the "
        f"workers of task queue '{task_queue}'; the first attempt failed (Temporal records no "
        "later one's outcome): pipe code changed under the run"
    )
    assert attempt >= 3
    # The attempt is the server's count for the nested workflow's pending task (it only grows).
    child = await client.get_workflow_handle(f"{run_id}/write").describe()
    assert child.raw_description.pending_workflow_task.attempt >= attempt
    await client.get_workflow_handle(run_id).terminate("test over")


async def test_a_workflow_task_that_keeps_timing_out_is_not_called_failed(
    temporal_address: str,
    task_queue: str,
    brief_yaml: dp.Pipeline,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An overloaded worker: it takes every workflow task of the run and finishes it after the
    # task's timeout (1 s here; Temporal's default is 10 s), so the server times each one out.
    interpreter = Interpreter

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # blocks the workflow task, as a starved worker would
        return interpreter(*args, **kwargs)

    monkeypatch.setattr(pipe_workflow, "Interpreter", slow)
    client = await dp.connect(temporal_address, pipeline=brief_yaml)
    run_id = f"stuck-slow-{uuid.uuid4().hex[:8]}"
    run = pipe_run(brief_yaml, "brief", {"article": "Some text."}, run_id=run_id)
    async with dp.build_worker(client, task_queue=task_queue):
        await client.start_workflow(
            WORKFLOW_NAME,
            run,
            id=run_id,
            task_queue=task_queue,
            task_timeout=timedelta(seconds=1),
            search_attributes=start_totals("brief"),
        )
        handle = dp.RunHandle(client, run_id)
        why = await eventually(
            lambda: _stuck(handle, "its workflow task"), "the timed-out workflow task"
        )
    assert "failed" not in why
    attempt = attempt_of(why)
    assert why == (
        f"its workflow task is on attempt {attempt} on the workers of task queue '{task_queue}'; "
        "the first attempt timed out (Temporal records no later one's outcome): no worker "
        "finished it within 1 s (overloaded or dying workers?)"
    )
    assert attempt >= 3
    await client.get_workflow_handle(run_id).terminate("test over")
