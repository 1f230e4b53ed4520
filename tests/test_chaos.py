"""The short variant of `make chaos`: 10 runs, 20% provider failures, two worker SIGKILLs."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import chaos

MAX_CONCURRENT = 8  # the chaos workers' --max-concurrent: the most answers a kill can leave unread


async def test_chaos_runs_all_complete_and_only_a_kill_can_cost_a_second_call(
    tmp_path: Path,
) -> None:
    figures = await chaos(10, max_kills=2, kill_every=(2.0, 4.0), workdir=tmp_path)
    # Kills happen only while both workers poll; a quick run may end before the second one.
    assert 1 <= figures.worker_kills <= 2
    assert figures.runs_completed == figures.runs_started == 10
    assert figures.outputs_verified == 10
    assert figures.succeeded_steps == 50
    # Provider failures, retries and checkpointed answers never pay twice: every paid call beyond
    # one per step repeats a key whose answer a SIGKILL caught between the provider's answer and
    # the checkpoint write (see README, "What a checkpoint covers").
    assert figures.paid_calls - figures.succeeded_steps == figures.paid_twice
    assert figures.paid_twice <= figures.worker_kills * MAX_CONCURRENT
