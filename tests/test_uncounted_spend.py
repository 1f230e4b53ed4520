"""Paid calls whose spend used to go uncounted: an attempt whose worker died after a paid answer
(checkpoints off), an answer on its way when its call is cancelled, and a ``--local`` run stopped
by Ctrl-C. Against the fake provider's ledger, on the real dev server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.testing import FakeProvider, Hang, Reply
from durapipe.workflows._search import COST_USD
from tests.support import (
    WorkerProcess,
    cli_env,
    durapipe_command,
    eventually,
    interruptible_popen,
    priced_openai,
)

# $0.01 an output token: an answer of 100 tokens costs $1 and a little input.
PRICES = {"gpt-lost": (1e-5, 0.01)}
PRICES_ENV = json.dumps(
    {
        name: {"input_cost_per_token": cost_in, "output_cost_per_token": cost_out}
        for model, (cost_in, cost_out) in PRICES.items()
        for name in (f"openai/{model}", model)
    }
)


def not_json() -> Reply:
    return Reply(content="this is not json", completion_tokens=100)


def billed(fake: FakeProvider, model: str) -> tuple[int, float]:
    """The paid calls the fake provider's ledger holds for ``model``, and what they cost."""
    cost_in, cost_out = PRICES[model]
    paid = [c for c in fake.calls if c.model == model and c.paid]
    return len(paid), sum(c.prompt_tokens * cost_in + c.completion_tokens * cost_out for c in paid)


def judge_file(tmp_path: Path, base_url: str, **pipe: Any) -> Path:
    """A structured llm step (an integer) on the fake provider, as a worker's YAML file."""
    judge = {
        "kind": "llm",
        "model": "openai/gpt-lost",
        "inputs": {"topic": "text"},
        "prompt": "Judge {{ topic }}.",
        "output": "integer",
        "settings": {"max_tokens": 100},
        **pipe,
    }
    path = tmp_path / "judge.yaml"
    models = {"lost": {"model": "openai/gpt-lost", "api_base": base_url}}
    path.write_text(json.dumps({"models": models, "pipes": {"judge": judge}}))  # JSON is YAML
    return path


async def test_a_retry_counts_what_a_killed_attempt_paid_for_without_a_checkpoint_store(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    # Attempt 1 is answered (paid, not an integer) and its re-ask hangs; its worker is killed
    # there. No store keeps the answer, and the attempt never fails to say what it paid for: only
    # a heartbeat sent when the answer arrived can. Attempt 2, on another worker, is answered.
    with priced_openai(PRICES) as fake:
        fake.script("gpt-lost", [not_json(), Hang(120), Reply(json={"value": 3})])
        file = judge_file(
            tmp_path, fake.base_url, timeout="8s",
            retry={"initial_interval": "100ms", "max_attempts": 3},
        )  # fmt: skip
        env = {"DURAPIPE_MODEL_PRICES": PRICES_ENV, "DURAPIPE_CHECKPOINTS": "off"}
        flow = dp.load(file)
        client = await dp.connect(temporal_address, pipeline=flow)
        run_id = f"lost-{uuid.uuid4().hex[:8]}"
        first = WorkerProcess(file, temporal_address, task_queue, tmp_path / "w1.log", **env)
        try:
            handle = await dp.start(
                client, flow, "judge", {"topic": "x"}, run_id=run_id, task_queue=task_queue
            )
            await fake.wait_until_async(lambda calls: len(calls) == 2, timeout=60)

            async def told() -> bool:
                # The heartbeat leaves the worker at once, but reaches the server a moment later.
                described = await client.get_workflow_handle(run_id).describe()
                pending = described.raw_description.pending_activities
                beats = [p.data for a in pending for p in a.heartbeat_details.payloads]
                return any(b"durapipe.spent" in b for b in beats)

            # Killed once the server has it, or after 10 s anyway: the run's totals then say
            # whether the retry counted it.
            with contextlib.suppress(AssertionError):
                await eventually(told, "the attempt's heartbeat saying what it paid for", 10)
        finally:
            first.kill()  # by its own pid
        second = WorkerProcess(file, temporal_address, task_queue, tmp_path / "w2.log", **env)
        try:
            result = await handle.result()
        finally:
            second.stop()
        calls, cost = billed(fake, "gpt-lost")
    described = await client.get_workflow_handle(run_id).describe()
    totals = described.typed_search_attributes.get(COST_USD)
    print(f"killed attempt, no store: provider {calls} paid calls ${cost:.6f}; run "
          f"${result.usage.cost_usd:.6f}, totals ${totals:.6f}")  # fmt: skip
    assert calls == 2  # attempt 1's first answer and attempt 2's: the hung re-ask was not billed
    [step] = result.steps
    assert (step.status, step.attempts) == ("succeeded", 2)
    assert [a.attempt for a in step.failed_attempts] == [1]
    assert abs(result.usage.cost_usd - cost) < 1e-9, (result.usage, cost)  # $1.000030 before
    assert step.cost_usd is not None and abs(step.cost_usd - cost) < 1e-9
    assert totals is not None and abs(totals - cost) < 1e-9


async def test_an_answer_on_its_way_when_the_run_is_cancelled_is_waited_for_and_counted(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    # The first answer misses the type (paid); the re-ask's answer takes 6.5 s. The cancel, sent
    # as the re-ask leaves, reaches the call at its first heartbeat, 5 s after the call started
    # (a third of the 15 s heartbeat timeout of a 60 s step; the workflow task that asks for it
    # has those 5 s), while the provider still generates the answer it bills: the answer comes
    # 1.5 s plus the first answer's time later. The call used to close its connection at the
    # cancel (the fake records `client_closed`, nothing counted); now it waits for the answer
    # (at most 5 s) and counts it.
    with priced_openai(PRICES) as fake:
        fake.script("gpt-lost", [not_json(), Hang(6.5)])
        flow = dp.load(judge_file(tmp_path, fake.base_url, timeout="60s"))
        client = await dp.connect(temporal_address, pipeline=flow)
        run_id = f"wire-{uuid.uuid4().hex[:8]}"
        async with dp.build_worker(client, task_queue=task_queue):
            handle = await dp.start(
                client, flow, "judge", {"topic": "x"}, run_id=run_id, task_queue=task_queue
            )
            await fake.wait_until_async(lambda calls: len(calls) == 2, timeout=60)
            await handle.cancel()
            with pytest.raises(dp.RunCancelled):
                await handle.result()
            steps = await handle.steps()
        calls, cost = billed(fake, "gpt-lost")
        outcomes = [c.outcome for c in fake.calls]
    described = await client.get_workflow_handle(run_id).describe()
    totals = described.typed_search_attributes.get(COST_USD)
    print(f"answer on the wire at the cancel: provider {outcomes}, {calls} paid calls "
          f"${cost:.6f}; totals ${totals:.6f}")  # fmt: skip
    assert outcomes == ["ok", "hang"], outcomes  # ["ok", "client_closed"] before
    [step] = steps
    assert step.status == "cancelled"
    assert step.cost_usd is not None and abs(step.cost_usd - cost) < 1e-9, (step, cost)
    assert totals is not None and abs(totals - cost) < 1e-9


async def test_ctrl_c_of_a_local_run_says_what_its_calls_spent(tmp_path: Path) -> None:
    # The first answer misses the type (paid); Ctrl-C lands while the re-ask hangs. The run's
    # records never ended, so it exited 130 saying nothing of the $1 its provider billed.
    with priced_openai(PRICES) as fake:
        fake.script("gpt-lost", [not_json(), Hang(120)])
        file = judge_file(tmp_path, fake.base_url)
        child = interruptible_popen(
            durapipe_command("run", "judge", "--file", str(file), "--local", "--input", "topic=x"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_env(DURAPIPE_MODEL_PRICES=PRICES_ENV),
        )  # fmt: skip
        try:
            await fake.wait_until_async(lambda calls: len(calls) == 2, timeout=120)
            child.send_signal(signal.SIGINT)
            out, err = await asyncio.to_thread(child.communicate, timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        calls, cost = billed(fake, "gpt-lost")
    print(err)
    assert (child.returncode, out, calls) == (130, "", 1), err
    assert "Traceback" not in err
    assert "✗ judge (llm · openai/gpt-lost)" in err  # its record, cancelled, with its spend
    assert err.splitlines()[-1] == (
        "stopped by Ctrl-C; what its calls had spent (those in flight included): "
        f"tokens: {fake.calls[0].prompt_tokens} in / 100 out, cost: ${cost:.6f}"
    )
