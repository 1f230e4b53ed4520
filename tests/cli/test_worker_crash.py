"""A worker killed with SIGKILL mid-run: a new worker finishes the run and no completed step reruns."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import durapipe as dp
from tests.conftest import ROOT
from tests.support import WorkerProcess, history_events, wait_for_event

FIXTURES = ROOT / "tests" / "fixtures"


async def test_sigkilled_worker_resumes_without_repeating_completed_steps(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    ledger, gate = tmp_path / "ledger.jsonl", tmp_path / "gate"
    env = {"DURAPIPE_OFFLINE_LEDGER": str(ledger), "DURAPIPE_TEST_GATE": str(gate)}
    pipeline = dp.load(FIXTURES / "gated.yaml")
    client = await dp.connect(temporal_address)
    run_id = f"crash-{uuid.uuid4().hex[:8]}"

    first = WorkerProcess(
        FIXTURES / "gated.yaml", temporal_address, task_queue, tmp_path / "w1.log", **env
    )
    try:
        handle = await dp.start(
            client, pipeline, "gated", {"topic": "rivers"}, run_id=run_id, task_queue=task_queue
        )
        await wait_for_event(client, run_id, "activity_task_completed_event_attributes", "outline")
        # Activity-started events reach history only when an attempt ends, so the tool says it is waiting.
        for _ in range(600):
            if Path(f"{gate}.waiting").exists():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the gate step never started")
    finally:
        first.kill()
    gate.touch()
    second = WorkerProcess(
        FIXTURES / "gated.yaml", temporal_address, task_queue, tmp_path / "w2.log", **env
    )
    try:
        result = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        second.stop()

    assert result.output["released"].startswith("released after")
    events = await history_events(client, run_id)
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    completed = [e for e in events if e.HasField("activity_task_completed_event_attributes")]
    assert scheduled == ["outline", "wait_for_gate"]  # one schedule each; the retry is an attempt
    assert len(completed) == 2
    calls = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert len(calls) == 1  # the completed llm step was not called again by the second worker
    steps = {s.path: s for s in result.steps}
    assert steps["outline"].attempts == 1
    assert steps["wait_for_gate"].attempts >= 2  # the in-flight step was retried on the new worker
