"""A worker dies after the provider answered and the checkpoint was stored, before Temporal recorded
the activity's completion: the retried attempt, on another worker, makes no second provider call.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import TimeoutType

import durapipe as dp
from durapipe.adapters._litellm import litellm_module
from durapipe.testing import FakeProvider
from tests.chain import expected_output, paid_by_step, write_chain
from tests.conftest import ROOT
from tests.support import cli_env, history_events

STALLING_WORKER = ROOT / "tests" / "fixtures" / "stalling_worker.py"


async def wait_for(path: Path, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 90
    while not path.exists():
        if process.returncode is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared: {log.read_text(errors='replace')}")
        await asyncio.sleep(0.05)


async def test_worker_killed_before_temporal_recorded_the_answer_pays_once(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    marker, log = tmp_path / "checkpointed", tmp_path / "worker.log"
    await asyncio.to_thread(litellm_module)  # so the second worker starts at once when needed
    async with FakeProvider() as fake:
        # 30 s start-to-close: the 7.5 s heartbeat timeout notices the lost worker long before.
        pipeline_file = write_chain(tmp_path / "chain.yaml", fake.base_url, steps=3, timeout="30s")
        pipeline = dp.load(pipeline_file)
        stalling = await asyncio.create_subprocess_exec(
            sys.executable, str(STALLING_WORKER), str(pipeline_file), temporal_address,
            task_queue, str(marker), stderr=log.open("wb"), env=cli_env(),
        )  # fmt: skip
        try:
            client = await dp.connect(temporal_address, pipeline=pipeline)
            run_id = f"crash-{uuid.uuid4().hex[:8]}"
            handle = await dp.start(
                client, pipeline, "chain", {"topic": "owls"}, run_id=run_id, task_queue=task_queue
            )
            await wait_for(marker, stalling, log)  # s1 answered and checkpointed, not recorded
            # The second worker is up before the kill, so the retry waits only for Temporal.
            async with dp.build_worker(client, task_queue=task_queue):
                stalling.send_signal(signal.SIGKILL)
                killed_at = time.time()
                result = await asyncio.wait_for(handle.result(), timeout=60)
        finally:
            if stalling.returncode is None:
                stalling.send_signal(signal.SIGKILL)
            await stalling.wait()

    assert result.output == expected_output("owls", steps=3)
    assert paid_by_step(fake.calls) == {"s1": 1, "s2": 1, "s3": 1}  # s1 was not paid twice
    assert fake.calls[0].idempotency_key == marker.read_text()
    s1 = next(s for s in result.steps if s.path == "s1")
    assert (s1.cache_hit, s1.attempts) == (True, 2)
    # Temporal gave the first attempt up because its heartbeats stopped, not at start-to-close.
    events = await history_events(client, run_id)
    started = [
        e.activity_task_started_event_attributes
        for e in events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert started[0].attempt == 2
    assert started[0].last_failure.timeout_failure_info.timeout_type == (
        TimeoutType.TIMEOUT_TYPE_HEARTBEAT
    )
    retried_after_s = next(
        e.event_time.ToDatetime().timestamp() - killed_at
        for e in events
        if e.HasField("activity_task_started_event_attributes")
    )
    assert retried_after_s < 20  # noticed well within the 30 s start-to-close timeout
