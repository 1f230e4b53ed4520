"""The short variant of `make chaos`: 10 runs, 20% provider failures, two worker SIGKILLs."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import chaos


async def test_chaos_runs_all_complete_and_no_call_is_paid_twice(tmp_path: Path) -> None:
    figures = await chaos(10, max_kills=2, kill_every=(2.0, 4.0), workdir=tmp_path)
    assert figures.worker_kills == 2
    assert figures.runs_completed == figures.runs_started == 10
    assert figures.outputs_verified == 10
    assert figures.succeeded_steps == 50
    assert figures.paid_calls == 50  # exactly one paid call per step, however often workers died
