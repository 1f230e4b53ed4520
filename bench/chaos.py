"""Chaos: runs of a 5-step pipeline while the provider fails 20% of calls and workers get SIGKILLed.

One command (``make chaos``, or ``python bench/chaos.py --runs 100``) starts its own Temporal dev
server, the fake provider as a process (20% transient failures: 500, 429 with Retry-After, dropped
connections), and two ``durapipe worker`` processes sharing a SQLite checkpoint file. It starts every
run once both workers poll, SIGKILLs a random worker as soon as the provider has answered its first
call, then every few seconds (while both poll, so one always works), restarting it each time, until
all runs have ended.
It prints one ``name = value`` per line; ``paid_calls_per_succeeded_step`` counts the provider's
paid answers (its own ledger) per step that succeeded, so 1.00 means no call was paid twice.

The provider deduplicates by the ``X-Durapipe-Idempotency-Key`` durapipe sends (as a gateway in front
of the model would; ``--no-provider-idempotency`` turns that off). Checkpoints serve every retry of a
step whose answer reached the store; ``provider_replays`` counts the rest: answers a SIGKILL caught
between the provider and the store, which the provider served again for the same key instead of
billing a second completion. ``paid_calls_per_succeeded_step_without_provider_idempotency`` is what
a provider that bills every request would have charged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-fake-chaos")  # the fake provider takes any key

import durapipe as dp  # noqa: E402
from durapipe.testing import read_ledger  # noqa: E402
from tests.chain import expected_output, write_chain  # noqa: E402

STEPS = 5


@dataclass
class Figures:
    """What a chaos scenario measured."""

    runs_started: int
    runs_completed: int
    outputs_verified: int
    succeeded_steps: int
    paid_calls: int
    paid_twice: int
    provider_replays: int
    worker_kills: int
    wall_s: float

    @property
    def paid_calls_per_succeeded_step(self) -> float:
        return self.paid_calls / self.succeeded_steps if self.succeeded_steps else float("nan")

    @property
    def without_provider_idempotency(self) -> float:
        billed = self.paid_calls + self.provider_replays
        return billed / self.succeeded_steps if self.succeeded_steps else float("nan")

    def lines(self) -> list[str]:
        return [
            f"runs_started = {self.runs_started}",
            f"runs_completed = {self.runs_completed}",
            f"outputs_verified = {self.outputs_verified}",
            f"paid_calls = {self.paid_calls}",
            f"paid_calls_per_succeeded_step = {self.paid_calls_per_succeeded_step:.2f}",
            f"calls_paid_again_with_the_same_key = {self.paid_twice}",
            f"provider_replays = {self.provider_replays}",
            "paid_calls_per_succeeded_step_without_provider_idempotency = "
            f"{self.without_provider_idempotency:.2f}",
            f"worker_kills = {self.worker_kills}",
            f"wall_s = {self.wall_s:.1f}",
        ]


class Worker:
    """A ``durapipe worker`` process, killed with SIGKILL and restarted by its own pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env, self.logs = name, args, env, logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.logs / f"{self.name}-{self.starts}.log"

    def ready(self) -> bool:
        """Whether the worker polls its task queue (a worker killed while starting proves nothing)."""
        return self.process is not None and "worker ready" in self.log.read_text(errors="replace")

    def start(self) -> None:
        self.starts += 1
        log = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durapipe", "worker", *self.args],
            stdout=subprocess.DEVNULL, stderr=log, env=self.env,
        )  # fmt: skip

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


async def until(condition: Callable[[], bool], *, what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` every 20 ms; fail after ``timeout`` seconds waiting for ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def start_provider(
    ledger: Path, failure_rate: float, seed: int, *, idempotent: bool
) -> tuple[subprocess.Popen[str], str]:
    provider = subprocess.Popen(
        [sys.executable, "-m", "durapipe.testing.fake_provider", "--port", "0",
         "--ledger", str(ledger), "--failure-rate", str(failure_rate), "--seed", str(seed),
         *(["--honour-idempotency"] if idempotent else [])],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert provider.stdout is not None
    line = provider.stdout.readline()
    if not line.startswith("listening on "):
        provider.kill()
        raise RuntimeError(f"the fake provider did not start: {line!r}")
    return provider, line.removeprefix("listening on ").strip()


async def chaos(
    runs: int, *, max_kills: int | None, failure_rate: float = 0.2, seed: int = 1,
    kill_every: tuple[float, float] = (2.0, 5.0), workdir: Path, provider_idempotency: bool = True,
) -> Figures:  # fmt: skip
    """Run the scenario and return its figures (see the module docstring)."""
    rng = random.Random(seed)
    ledger = workdir / "ledger.jsonl"
    provider, base_url = start_provider(ledger, failure_rate, seed, idempotent=provider_idempotency)
    server = dp.ops.DevServer(headless=True, log_file=str(workdir / "temporal.log"))
    await asyncio.to_thread(server.start)
    pipeline_file = write_chain(
        workdir / "chain.yaml", base_url, STEPS, timeout="20s",
        retry={"initial_interval": "200ms", "max_interval": "2s", "max_attempts": 30},
    )  # fmt: skip
    env = {**os.environ, "DURAPIPE_CHECKPOINTS": str(workdir / "checkpoints.sqlite")}
    # A bounded worker keeps its event loop responsive: a starved loop misses heartbeats (a second
    # attempt starts while the first still runs) and leaves answers unread when it is killed.
    args = [str(pipeline_file), "--address", server.address, "--task-queue", "chaos"]
    args += ["--max-concurrent", "8"]
    workers = [Worker(f"worker{n}", args, env, workdir) for n in (1, 2)]
    kills = 0
    began = time.monotonic()
    try:
        for worker in workers:
            worker.start()
        await until(lambda: all(w.ready() for w in workers), what="both workers to poll")
        pipeline = dp.load(pipeline_file)
        client = await dp.connect(server.address)
        topics = [f"topic {n}" for n in range(runs)]
        handles = [
            await dp.start(client, pipeline, "chain", {"topic": t}, task_queue="chaos")
            for t in topics
        ]
        waiting = asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        # The first kill lands mid-run however fast the steps are: once the provider has answered.
        await until(lambda: ledger.stat().st_size > 0, what="the provider's first answer")
        while not waiting.done() and (max_kills is None or kills < max_kills):
            if kills:
                await asyncio.wait({waiting}, timeout=rng.uniform(*kill_every))
            if waiting.done():
                break
            # Kill only while both workers poll, so one always works while the other restarts.
            if not all(w.ready() for w in workers):
                await asyncio.sleep(0.05)
                continue
            victim = rng.choice(workers)
            victim.kill()
            kills += 1
            victim.start()
        results = await asyncio.wait_for(waiting, timeout=600)
        wall_s = time.monotonic() - began
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.to_thread(server.stop)
        provider.terminate()
        provider.wait(timeout=20)
    completed = [r for r in results if isinstance(r, dp.RunResult)]
    verified = sum(
        1 for t, r in zip(topics, results, strict=True)
        if isinstance(r, dp.RunResult) and r.output == expected_output(t, STEPS)
    )  # fmt: skip
    succeeded = sum(1 for r in completed for s in r.steps if s.status == "succeeded")
    calls = read_ledger(ledger)
    paid_keys = [call.idempotency_key for call in calls if call.paid]
    duplicated = len(paid_keys) - len(set(paid_keys))
    replays = sum(1 for call in calls if call.outcome == "replayed")
    return Figures(
        runs, len(completed), verified, succeeded, len(paid_keys), duplicated, replays, kills,
        wall_s,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--max-kills", type=int, default=None, help="stop killing after this many")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-provider-idempotency", action="store_true",
        help="the provider bills every request, even one repeating a key",
    )  # fmt: skip
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durapipe-chaos-") as tmp:
        figures = asyncio.run(
            chaos(
                options.runs,
                max_kills=options.max_kills,
                seed=options.seed,
                workdir=Path(tmp),
                provider_idempotency=not options.no_provider_idempotency,
            )
        )
    print("\n".join(figures.lines()))


if __name__ == "__main__":
    main()
