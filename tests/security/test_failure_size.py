"""A step's failure message larger than Temporal records (a failure is not a payload: no payload
store takes it; the dev server refuses more than 2 MB): the step fails at once with the message
cut, saying how much, not 30 s later as a heartbeat timeout."""

from __future__ import annotations

import asyncio

import pytest

import durapipe as dp
from tests.security import secret_tools


async def test_a_tool_failing_with_megabytes_fails_with_its_message_cut(
    temporal_address: str, task_queue: str
) -> None:
    pipe = dp.tool(secret_tools.loud, name="find", retry={"max_attempts": 1})
    pipeline = dp.pipeline(pipe)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed) as failed:
            run = dp.run(client, pipeline, "find", {"customer": "c"}, task_queue=task_queue)
            await asyncio.wait_for(run, 25)  # a heartbeat timeout is 30 s away
    assert failed.value.cause_type == "ValueError"
    assert failed.value.cause.startswith("x" * 1000)
    assert failed.value.cause.endswith("... (2,990,000 more characters cut)")
