"""Decisions a client sends to a waiting approval step that are too large for Temporal: a reason
of megabytes becomes the run's failure message, which no payload store takes. Refused in one
sentence, by the client before sending and by the worker's update validator (any client of the
namespace can send the update); the run keeps waiting for a decision it can record."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError

import durapipe as dp
from durapipe.runtime._approvals import DECIDE_UPDATE, ApprovalDecision
from tests.support import until_waiting

PIPELINE = """
pipes:
  held:
    kind: approval
    inputs: {draft: text}
    value: draft
    message: "ok?"
"""
HUGE = "r" * 3_000_000
REFUSED = "the reason for step 'held' is 3,000,000 characters long; a decision's reason may be at most 2,000"


async def waiting_run(client: Client, task_queue: str) -> dp.RunHandle:
    handle = await dp.start(
        client, dp.load_yaml(PIPELINE), "held", {"draft": "x"}, task_queue=task_queue
    )
    return await until_waiting(handle)


async def test_a_huge_reason_is_refused_and_the_run_still_takes_a_decision(
    temporal_address: str, task_queue: str
) -> None:
    client = await dp.connect(temporal_address)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await waiting_run(client, task_queue)
        with pytest.raises(dp.DecisionRefused, match=REFUSED + "; nothing was sent"):
            await handle.reject("held", reason=HUGE)
        # A raw client skips that check: the worker's validator refuses it, recording nothing.
        raw = client.get_workflow_handle(handle.run_id)
        decision = ApprovalDecision(step="held", approved=False, reason=HUGE)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await asyncio.wait_for(raw.execute_update(DECIDE_UPDATE, decision, result_type=str), 60)
        assert REFUSED in str(refused.value.cause)
        await handle.reject("held", reason="not now")
        with pytest.raises(dp.StepFailed, match="rejected by the reviewer: not now"):
            await asyncio.wait_for(handle.result(), 60)


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


async def test_data_nested_too_deep_to_send_is_refused_in_one_sentence(
    temporal_address: str, task_queue: str
) -> None:
    client = await dp.connect(temporal_address)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await waiting_run(client, task_queue)
        with pytest.raises(dp.DecisionRefused) as refused:
            await handle.approve("held", data=nested(3_000))
        assert str(refused.value).startswith(
            "decision refused: the data for step 'held' cannot be sent: "
        ), refused.value
        assert str(refused.value).endswith("; nothing was sent")
        await handle.approve("held", data="fine")
        assert (await asyncio.wait_for(handle.result(), 60)).output == "fine"
