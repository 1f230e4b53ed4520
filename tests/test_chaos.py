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
    # Checkpoints serve every retry of an answer that reached the store; the provider, deduplicating
    # by durapipe's idempotency key, serves again only answers a SIGKILL caught before the store
    # write (see README, "What a checkpoint covers"). Nothing is paid twice.
    assert figures.paid_calls == figures.succeeded_steps
    assert figures.paid_twice == 0
    assert figures.provider_replays <= figures.worker_kills * MAX_CONCURRENT
