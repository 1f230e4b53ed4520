"""Cost budgets: a run stops before the paid call that could exceed its budget, on both runtimes."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from durapipe.testing import FakeProvider, Reply
from tests.support import WorkerProcess, paid_pipeline, run_cli

# Each call reports 100 output tokens (its max_tokens) at $0.01 each: $1 and a little input. The
# worst-case estimate of a call is therefore just over $1, so $3.50 allows 3 calls of 5.
PRICES = {"gpt-paid": (1e-5, 0.01)}
PRICES_ENV = json.dumps(
    {
        name: {"input_cost_per_token": cost_in, "output_cost_per_token": cost_out}
        for model, (cost_in, cost_out) in PRICES.items()
        for name in (f"openai/{model}", model)
    }
)


def test_a_budget_for_3_of_5_paid_steps_stops_after_the_third(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    with FakeProvider(prices=PRICES) as fake:
        fake.set_default(Reply(completion_tokens=100))
        file = paid_pipeline(tmp_path, fake.base_url, "gpt-paid", 5)
        env = {"DURAPIPE_MODEL_PRICES": PRICES_ENV}
        worker = WorkerProcess(file, temporal_address, task_queue, tmp_path / "w.log", **env)
        try:
            on_temporal = run_cli(
                "run", "paid", "--file", str(file), "--input", "topic=x", "--budget-usd", "3.5",
                "--id", f"budget-{uuid.uuid4().hex[:8]}", "--address", temporal_address,
                "--task-queue", task_queue,
            )  # fmt: skip
        finally:
            worker.stop()
        temporal_calls = len(fake.calls)
        fake.register_prices_with_litellm()  # the local run prices calls in this process
        invoked = CliRunner().invoke(
            app, ["run", "paid", "--file", str(file), "--input", "topic=x", "--budget-usd", "3.5",
                  "--local"],
        )  # fmt: skip
        local = subprocess.CompletedProcess([], invoked.exit_code, invoked.stdout, invoked.stderr)
        local_calls = len(fake.calls) - temporal_calls

    for result in (on_temporal, local):
        assert result.returncode == 1, result.stderr
        assert "step 'call4' (llm on model openai/gpt-paid) failed: durapipe.BudgetExceeded: " \
            "budget exceeded: the run has spent $3.000" in result.stderr  # fmt: skip
        assert "of its $3.500000 budget" in result.stderr
    for done in ("call1", "call2", "call3"):
        assert f"✓ {done} (" in on_temporal.stderr
    assert "- call5 (llm" in on_temporal.stderr  # the later step is marked skipped
    assert temporal_calls == 3 and local_calls == 3


async def test_without_a_budget_all_paid_steps_run_and_cost_is_counted(tmp_path: Path) -> None:
    with FakeProvider(prices=PRICES) as fake:
        fake.set_default(Reply(completion_tokens=100))
        fake.register_prices_with_litellm()
        file = paid_pipeline(tmp_path, fake.base_url, "gpt-paid", 5)
        result = await dp.run_local(dp.load(file), "paid", {"topic": "x"})
        assert len(fake.calls) == 5
    assert 5.0 <= result.usage.cost_usd < 5.1
