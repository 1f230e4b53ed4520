"""A worker SIGKILLed mid-loop: the agent resumes and no completed model request or tool call reruns."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import durapipe as dp
from durapipe.testing import read_offline_ledger
from tests.conftest import ROOT
from tests.support import WorkerProcess, history_events, scheduled_activities, wait_for_event

FIXTURE = ROOT / "tests" / "fixtures" / "agent_gated.yaml"


async def test_sigkilled_worker_resumes_the_agent_without_repeating_completed_calls(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    ledger, tools, gate = tmp_path / "model.jsonl", tmp_path / "tools.jsonl", tmp_path / "gate"
    env = {
        "DURAPIPE_OFFLINE_LEDGER": str(ledger),
        "DURAPIPE_TEST_TOOL_LEDGER": str(tools),
        "DURAPIPE_TEST_GATE": str(gate),
    }
    pipeline = dp.load(FIXTURE)
    client = await dp.connect(temporal_address)
    run_id = f"agent-crash-{uuid.uuid4().hex[:8]}"
    first = WorkerProcess(FIXTURE, temporal_address, task_queue, tmp_path / "w1.log", **env)
    try:
        handle = await dp.start(
            client,
            pipeline,
            "gated_agent",
            {"topic": "rivers"},
            run_id=run_id,
            task_queue=task_queue,
        )
        await wait_for_event(client, run_id, "activity_task_completed_event_attributes", "turn-2")
        for _ in range(600):  # the gate tool says when it is in flight
            if Path(f"{gate}.waiting").exists():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the gate tool never started")
    finally:
        first.kill()
    gate.touch()
    second = WorkerProcess(FIXTURE, temporal_address, task_queue, tmp_path / "w2.log", **env)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        second.stop()

    assert result.output.startswith("Offline answer")
    events = await history_events(client, run_id)
    assert [a[1] for a in scheduled_activities(events)] == [
        "turn-1", "turn-1/note", "turn-2", "turn-2/wait_for_gate", "turn-3",
    ]  # fmt: skip
    paths = [call["metadata"]["durapipe_path"] for call in read_offline_ledger(ledger)]
    assert paths == ["turn-1", "turn-2", "turn-3"]  # each model request paid for once
    assert len(tools.read_text().splitlines()) == 1  # the completed tool call did not rerun
    steps = {s.path: s for s in result.steps}
    assert steps["turn-2/wait_for_gate"].attempts >= 2  # the in-flight call was retried
    assert all(steps[p].attempts == 1 for p in ("turn-1", "turn-1/note", "turn-2", "turn-3"))
