"""A run's current details in the Temporal UI (the SDK's metadata query) name its latest step event
and its progress while it runs: the workflow keeps the event and the plugin's interceptor writes the
line when the query asks (`durapipe.workflows._details`)."""

from __future__ import annotations

import uuid

from temporalio.api.sdk.v1 import WorkflowMetadata

import durapipe as dp
from durapipe.workflows._details import METADATA_QUERY
from tests.support import eventually, held_pipeline


async def test_a_waiting_run_names_its_running_step_and_progress(
    temporal_address: str, task_queue: str
) -> None:
    pipe = f"held{uuid.uuid4().hex[:8]}"
    pipeline = held_pipeline(pipe)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, pipe, {"question": "q"}, task_queue=task_queue)
        workflow = client.get_workflow_handle(handle.run_id)
        seen: list[str] = []

        async def waiting() -> str | None:
            metadata = await workflow.query(METADATA_QUERY, result_type=WorkflowMetadata)
            seen.append(metadata.current_details)
            return metadata.current_details if "approval" in metadata.current_details else None

        details = await eventually(waiting, lambda: f"the approval step's details (saw {seen})")
        assert details == f"pipe {pipe}: running approval step review (1 of 2 steps done)"
        # Before it: nothing (the run's first step had not started) or the first step running.
        assert all(
            d in ("", f"pipe {pipe}: running llm step ask (0 of 2 steps done)") for d in seen[:-1]
        )
        await handle.cancel()
