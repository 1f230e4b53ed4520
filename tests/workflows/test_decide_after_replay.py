"""A decision sent to a run whose worker has no cached state for it: the worker rebuilds the run
from its history first, and the update's validator must see the step waiting (a validator that
ran before the replay reached the approval would refuse it as "steps waiting: none")."""

from __future__ import annotations

import asyncio

from temporalio.worker import Worker

import durapipe as dp
from tests.support import until_waiting

PIPELINE = """
pipes:
  draft:
    kind: llm
    prompt: "Draft a note about {{ topic }}."
    inputs: {topic: text}
  held:
    kind: approval
    inputs: {draft: text}
    value: draft
    message: "ok?"
  flow:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: draft
      - pipe: held
        result: approved
    output: approved
"""


async def test_a_decision_after_a_worker_restart_and_with_no_cache_is_taken(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = dp.load_yaml(PIPELINE)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(client, pipeline, "flow", {"topic": "tea"}, task_queue=task_queue)
        await until_waiting(handle)
    # A new worker that keeps no run cached: every workflow task replays the whole history.
    async with Worker(client, task_queue=task_queue, max_cached_workflows=0):
        await asyncio.wait_for(handle.approve("held"), 60)
        assert await asyncio.wait_for(handle.result(), 60) is not None
