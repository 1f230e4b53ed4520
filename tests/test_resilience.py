"""Classified retries, checkpoints and re-drive on the real dev server, against the fake provider."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.testing import FakeProvider, Status
from tests.chain import expected_output, paid_by_step, write_chain
from tests.support import cli_env, eventually


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


async def durapipe_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI without blocking this event loop (an in-process worker shares it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durapipe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_401_fails_the_step_after_one_attempt_with_a_sentence_naming_it(
    temporal_address: str,
    task_queue: str,
    fake: FakeProvider,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    file = write_chain(tmp_path / "chain.yaml", fake.base_url, steps=2)
    pipeline = dp.load(file)
    fake.script("gpt-s1", [Status(401), Status(401)])
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed) as raised:
            await dp.run(client, pipeline, "chain", {"topic": "otters"}, task_queue=task_queue)
        assert len(fake.calls) == 1  # max_attempts is 5: a 401 is not worth a second try
        message = str(raised.value)
        assert message.startswith("step 's1' (llm on model openai/gpt-s1) failed: ")
        assert "durapipe.AuthenticationError" in message

        code, _, stderr = await durapipe_cli(
            "run", "chain", "--file", str(file), "--input", "topic=otters",
            "--address", temporal_address, "--task-queue", task_queue,
        )  # fmt: skip
    assert code == 1 and "Traceback" not in stderr
    assert "step 's1' (llm on model openai/gpt-s1) failed: durapipe.AuthenticationError" in stderr
    assert len(fake.calls) == 2
    # The worker's log: one line for an expected, non-retryable failure, no SDK traceback.
    failed = [r for r in caplog.records if r.name == "temporalio.activity"]
    assert failed and all(r.exc_info is None for r in failed), [r.getMessage() for r in failed]
    assert "durapipe.AuthenticationError" in failed[0].getMessage()


async def test_429_retry_after_delays_the_next_attempt_and_the_run_succeeds(
    temporal_address: str, task_queue: str, fake: FakeProvider, tmp_path: Path
) -> None:
    pipeline = dp.load(write_chain(tmp_path / "chain.yaml", fake.base_url, steps=2))
    fake.script("gpt-s1", [Status(429, retry_after=2)])
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(client, pipeline, "chain", {"topic": "otters"}, task_queue=task_queue)
    assert result.output == expected_output("otters", steps=2)
    first, second = fake.calls_for("gpt-s1")
    assert first.outcome == "status:429" and second.outcome == "ok"
    assert first.finished_at is not None
    # The retry policy's own interval is 200 ms: only Retry-After explains two seconds.
    assert second.received_at - first.finished_at >= 2.0
    assert second.attempt == 2 and second.idempotency_key == first.idempotency_key
    assert {s.path: s.attempts for s in result.steps}["s1"] == 2


async def test_retry_of_a_failed_run_calls_the_provider_only_for_the_failed_and_later_steps(
    temporal_address: str, task_queue: str, fake: FakeProvider, tmp_path: Path
) -> None:
    file = write_chain(tmp_path / "chain.yaml", fake.base_url, steps=5)
    pipeline = dp.load(file)
    fake.script("gpt-s4", [Status(401)])  # e.g. a revoked key, fixed by the operator later
    run_id = f"redrive-{uuid.uuid4().hex[:8]}"
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed):
            await dp.run(
                client, pipeline, "chain", {"topic": "otters"}, run_id=run_id, task_queue=task_queue
            )
        assert paid_by_step(fake.calls) == {"s1": 1, "s2": 1, "s3": 1}

        async def listed_failed() -> list[dp.RunSummary] | None:
            runs = await dp.list_runs(client, status="failed")
            return [r for r in runs if r.run_id == run_id] or None

        # Temporal's listing (visibility) catches up with a run's end a moment later.
        failed = await eventually(listed_failed, f"{run_id} listed as failed")
        assert [(r.pipe, r.failed_step) for r in failed] == [("chain", "s4")]
        assert failed[0].error is not None
        assert failed[0].error.startswith("durapipe.AuthenticationError")
        code, stdout, stderr = await durapipe_cli(
            "runs", "--status", "failed", "--address", temporal_address
        )
        assert code == 0, stderr
        assert (
            f"{run_id}  chain  failed" in stdout and "step 's4': durapipe.Authentication" in stdout
        )

        code, stdout, stderr = await durapipe_cli(
            "retry", run_id, "--address", temporal_address, "--ui-url", "http://ui.test"
        )
        assert code == 0, stderr
        assert "✓ s1 (llm · openai/gpt-s1)" in stderr and "from checkpoint" in stderr
        # As `run` says them: the run id and its link first, the run id again last.
        lines = stderr.splitlines()
        assert lines[:2] == [
            f"retrying run {run_id} on task queue '{task_queue}'",
            f"Temporal UI: http://ui.test/namespaces/default/workflows/{run_id}",
        ]
        assert lines[-1] == f"run id: {run_id}"
    assert expected_output("otters") in stdout
    # The retry paid for steps 4 and 5 only (s4's 401 was not a paid call).
    assert paid_by_step(fake.calls) == {"s1": 1, "s2": 1, "s3": 1, "s4": 1, "s5": 1}
    result = await dp.RunHandle(client, run_id).result()
    hits = {s.path: s.cache_hit for s in result.steps}
    assert hits == {"s1": True, "s2": True, "s3": True, "s4": False, "s5": False}

    async def left_failed() -> bool:
        runs = await dp.list_runs(client, status="failed")
        return [r.run_id for r in runs].count(run_id) == 0

    await eventually(left_failed, f"{run_id} gone from the failed runs after its retry")


async def test_retry_refuses_a_run_that_did_not_fail(
    temporal_address: str, task_queue: str, fake: FakeProvider, tmp_path: Path
) -> None:
    pipeline = dp.load(write_chain(tmp_path / "chain.yaml", fake.base_url, steps=1))
    run_id = f"fine-{uuid.uuid4().hex[:8]}"
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        await dp.run(
            client, pipeline, "chain", {"topic": "x"}, run_id=run_id, task_queue=task_queue
        )
    with pytest.raises(dp.RunError, match=f"run '{run_id}' is completed, not failed"):
        await dp.client.redrive(client, run_id)
    with pytest.raises(dp.RunNotFound):
        await dp.client.redrive(client, f"missing-{run_id}")


async def test_memoized_pipes_reuse_answers_across_runs(
    temporal_address: str, task_queue: str, fake: FakeProvider, tmp_path: Path
) -> None:
    file = write_chain(tmp_path / "chain.yaml", fake.base_url, steps=1)
    memo = file.read_text().replace("kind: llm", "kind: llm\n    memoize: true")
    pipeline = dp.load_yaml(memo)
    topic = f"memo {uuid.uuid4().hex}"
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        first = await dp.run(client, pipeline, "chain", {"topic": topic}, task_queue=task_queue)
        second = await dp.run(client, pipeline, "chain", {"topic": topic}, task_queue=task_queue)
    assert first.output == second.output
    assert len(fake.calls) == 1
    assert [s.cache_hit for s in second.steps] == [True]
    assert second.usage.input_tokens == 0  # a memoised answer costs the second run nothing
    third = await dp.run_local(pipeline, "chain", {"topic": topic})
    assert (
        third.output == first.output and len(fake.calls) == 1
    )  # the local runner shares the store
