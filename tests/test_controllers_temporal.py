"""Every controller on the real dev server: parity with --local, child workflow ids, batch chunking."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.adapters import batch_history_bound
from durapipe.testing import run_histories
from durapipe.worker import SANDBOX_ENV
from tests.conftest import ARTICLE, EXAMPLES, ROOT
from tests.control_tools import square

CONTROLLERS = ROOT / "tests" / "fixtures" / "controllers.yaml"
TICKETS = json.loads((EXAMPLES / "tickets.json").read_text())

# (file, pipe, inputs): every example in both spellings, and each controller as the top-level pipe.
CASES = [
    (EXAMPLES / "research.yaml", "research", {"article": ARTICLE}),
    (EXAMPLES / "research.py", "research", {"article": ARTICLE}),
    (EXAMPLES / "triage.yaml", "triage", TICKETS),
    (EXAMPLES / "triage.py", "triage", TICKETS),
    (CONTROLLERS, "fan", {"numbers": [1, 2, 3, 4, 5, 6, 7], "n": 5}),
    (CONTROLLERS, "squares", {"numbers": list(range(10))}),
    (CONTROLLERS, "pick", {"n": 4}),
    (CONTROLLERS, "pick", {"n": 1}),
]


async def run_on_temporal(
    address: str,
    task_queue: str,
    pipeline: dp.Pipeline,
    pipe: str,
    inputs: dict[str, Any],
    run_id: str,
) -> dp.RunResult:
    # In Temporal's sandbox, so every controller's workflow code is checked for I/O, clocks and
    # randomness (workers run it outside; see durapipe.workflows.SandboxedPipeWorkflow).
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SANDBOX_ENV, "on")
        client = await dp.connect(address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        return await dp.run(client, pipeline, pipe, inputs, run_id=run_id, task_queue=task_queue)


@pytest.mark.parametrize(
    ("file", "pipe", "inputs"),
    CASES,
    ids=[f"{f.name}:{p}:{i}" for i, (f, p, _) in enumerate(CASES)],
)
async def test_temporal_and_local_give_identical_outputs(
    temporal_address: str, task_queue: str, file: Path, pipe: str, inputs: dict[str, Any]
) -> None:
    pipeline = dp.load(file)
    run_id = f"{pipe}-{uuid.uuid4().hex[:8]}"
    on_temporal = await run_on_temporal(
        temporal_address, task_queue, pipeline, pipe, inputs, run_id
    )
    local = await dp.run_local(pipeline, pipe, inputs)
    assert on_temporal.output == local.output
    assert on_temporal.usage == local.usage
    assert [(s.path, s.status, s.counts) for s in on_temporal.steps] == [
        (s.path, s.status, s.counts) for s in local.steps
    ]


async def test_nested_controllers_are_child_workflows_with_readable_ids(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = dp.load(EXAMPLES / "research.yaml")
    run_id = f"research-{uuid.uuid4().hex[:8]}"
    result = await run_on_temporal(
        temporal_address, task_queue, pipeline, "research", {"article": ARTICLE}, run_id
    )
    claims = len(result.output["checks"])
    client = await dp.connect(temporal_address)
    workflows = set(await run_histories(client, run_id))
    assert workflows == {
        run_id,
        f"{run_id}/check_claims",
        *(f"{run_id}/check_claims[{i}]" for i in range(claims)),
        f"{run_id}/summaries",
        f"{run_id}/decide",
    }
    activities = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in (
            await client.get_workflow_handle(f"{run_id}/check_claims[0]").fetch_history()
        ).events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert activities == ["check_claims[0]/find_evidence", "check_claims[0]/judge"]


async def test_a_long_batch_nests_chunks_and_no_history_grows_with_the_list(
    temporal_address: str, task_queue: str
) -> None:
    chunk_size = 8
    mapped = dp.batch(
        "squares",
        inputs={"numbers": list[int]},
        over="numbers",
        item="n",
        pipe=dp.tool(square),
        max_concurrency=10,
        chunk_size=chunk_size,
    )
    pipeline = dp.pipeline(mapped)
    numbers = list(range(200))
    run_id = f"batch-{uuid.uuid4().hex[:8]}"
    result = await run_on_temporal(
        temporal_address, task_queue, pipeline, "squares", {"numbers": numbers}, run_id
    )
    assert result.output == [n * n for n in numbers]
    assert [(s.path, s.counts) for s in result.steps] == [("squares[*]", {"succeeded": 200})]
    client = await dp.connect(temporal_address)
    histories = await run_histories(client, run_id)
    # 200 items, at most 8 per workflow: 8 chunks of 25, each split into 4 of 6 or 7.
    assert f"{run_id}/squares[0:25]" in histories and f"{run_id}/squares[0:6]" in histories
    assert len(histories) == 1 + 8 + 32
    assert max(histories.values()) <= batch_history_bound(chunk_size)
    # The chunks share max_concurrency (10 over 8 chunks) and run at once, not one after another.
    first, second = [
        await client.get_workflow_handle(f"{run_id}/squares[{part}]").describe()
        for part in ("0:25", "25:50")
    ]
    assert first.close_time is not None and second.start_time < first.close_time
