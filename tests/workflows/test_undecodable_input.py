"""A run whose input does not decode (a field out of bounds, sent raw through temporalio) fails its
workflow task on every attempt and waits (an upgraded worker may take it in a rolling deploy): the
worker says so in one line per attempt naming the run and the field, not a traceback, and `durapipe
show` names the field without pydantic's report and its documentation links."""

from __future__ import annotations

import uuid
from pathlib import Path

import pydantic

import durapipe as dp
from durapipe.adapters._plan import WORKFLOW_NAME, pipe_run
from durapipe.client._stalls import _pydantic_condensed
from durapipe.runtime._calls import WORKFLOW_VERSION
from durapipe.workflows._search import start_totals
from tests.conftest import EXAMPLES
from tests.support import WorkerProcess, acli, attempt_of, eventually

RESEARCHER = EXAMPLES / "researcher.yaml"
FIELD = "field 'spec.pipes.researcher.agent.max_turns': Input should be less than or equal to 10000"


async def test_an_undecodable_input_is_one_line_per_attempt_naming_the_field(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    pipeline = dp.load(RESEARCHER)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    data = pipe_run(pipeline, "researcher", {"question": "q"}, run_id=run_id).model_dump(
        mode="json"
    )
    data["spec"]["pipes"]["researcher"]["max_turns"] = 1e9
    log = tmp_path / "worker.log"
    worker = WorkerProcess(RESEARCHER, temporal_address, task_queue, log)
    try:
        # Until the worker's first poll reaches the server, the stall check says no worker polls
        # the queue (seen at load ~19: the check below took that sentence for the task's).
        await worker.polling(client)
        await client.start_workflow(
            WORKFLOW_NAME,
            data,
            id=run_id,
            task_queue=task_queue,
            search_attributes=start_totals("researcher"),
        )
        handle = dp.RunHandle(client, run_id)
        said: list[str | None] = [None]

        async def failing() -> str | None:
            why = said[0] = await handle.stalled()
            stuck = why is not None and why.startswith("its workflow task")
            return why if stuck and attempt_of(why) >= 3 else None

        # Temporal retries a failing workflow task with a growing backoff: attempt 3 came 10 s
        # after the start, 4 at 20 s (idle); each attempt waits for the worker's turn at the CPU.
        why = await eventually(
            failing,
            lambda: f"the run's workflow task on its third attempt (last said: {said[0]})",
            timeout=90,
        )
        shown = await acli(temporal_address, "show", run_id)
    finally:
        await client.get_workflow_handle(run_id).terminate("test over")
        worker.stop()
    assert why.endswith(
        "the first attempt failed (Temporal records no later one's outcome): the run's input "
        f"does not decode on this worker (durapipe workflow version {WORKFLOW_VERSION}): {FIELD}"
    ), why
    assert shown.returncode == 1
    assert FIELD in shown.stderr, shown.stderr
    assert "pydantic.dev" not in shown.stderr and "validation error" not in shown.stderr
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if run_id in line]
    assert len(lines) >= 2, text  # one a failed attempt (the first and its retries)
    for line in lines:
        assert "cannot be decoded here" in line and FIELD in line, line
    assert "Traceback" not in text and "pydantic.dev" not in text, text


def test_a_pydantic_report_recorded_by_an_older_worker_is_condensed_to_its_field() -> None:
    class Run(pydantic.BaseModel):
        turns: int = pydantic.Field(le=10)
        name: str

    try:
        Run.model_validate_json('{"turns": 1e9, "name": 3}')
    except pydantic.ValidationError as err:
        report = str(err)
    assert "pydantic.dev" in report  # what such a worker records
    assert _pydantic_condensed(report) == (
        "its input does not decode as a Run: field 'turns': Input should be less than or equal "
        "to 10 (and 1 more problem)"
    )
    try:
        Run.model_validate_json("[" * 300 + "]" * 300)
    except pydantic.ValidationError as err:
        report = str(err)
    assert _pydantic_condensed(report) == (
        "its input does not decode as a Run: Invalid JSON: recursion limit exceeded at line 1 "
        "column 202"
    )
    assert _pydantic_condensed("no such thing\nat all") is None
