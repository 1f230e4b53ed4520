"""In-process A/B timing of ``--local``: exact microseconds per step, alternating rounds.

``python -m bench.local_ab [--rounds 15]`` (or ``make bench-local``) runs, in one process and
round by round, the bench's ``seq50`` pipeline with `durapipe.run_local` in several variants and
the bench's baseline (50 plain awaited litellm calls of the offline model), and prints each
variant's wall time, process CPU and main-thread CPU per step, and its overhead over the baseline
(medians over the rounds). Alternating lets every variant see the same machine, which on a shared
host moves by more than the changes being measured.

Variants:

- ``run_local``: as shipped.
- ``step checkpoint per step``: every step's result written to the SQLite store on the step's
  path, one transaction each (how local runs wrote them before `durapipe.local.RunCheckpoints`).
- ``checkpoints off``: ``DURAPIPE_CHECKPOINTS=off``, what the store costs in all.
- ``durapipe only``: ``run_local`` with litellm's ``acompletion`` replaced by a function that
  returns a recorded answer: durapipe's own code per step, without litellm's (``, per step`` and
  ``, ck off``: the same with a checkpoint write per step, and with checkpoints off).

The store is a SQLite file in a temporary folder, not the user's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

import durapipe as dp
import durapipe.local
from bench.__main__ import STEPS, load_pipeline, plain_seq50
from durapipe.adapters._litellm import litellm_module
from durapipe.stores import SqliteCheckpoints

Variant = Callable[[], Awaitable[object]]


async def variants_in(folder: Path) -> dict[str, Variant]:
    """`variants` of the bench's pipeline, with a checkpoint store and files in ``folder`` and one
    offline answer (the bench's local A/B and its instruction counts share this setup)."""
    pipeline, _ = load_pipeline(folder)
    store = SqliteCheckpoints(folder / "checkpoints.sqlite")
    answer = await litellm_module().acompletion(
        model=dp.OFFLINE_MODEL, messages=[{"role": "user", "content": "q"}], num_retries=0
    )
    return variants(pipeline, store, answer)


def variants(pipeline: dp.Pipeline, store: SqliteCheckpoints, answer: Any) -> dict[str, Variant]:
    """The baseline first, then each way of running ``seq50`` locally (see the module docs)."""
    litellm = litellm_module()

    async def recorded(**_: Any) -> Any:
        return answer

    def local(checkpoints: Any, *, per_step: bool = False, stub: bool = False) -> Variant:
        async def run() -> None:
            with (
                _patched(
                    durapipe.local,
                    configured_store=lambda: checkpoints,
                    **({"RunCheckpoints": lambda _store: None} if per_step else {}),
                ),
                _patched(litellm, **({"acompletion": recorded} if stub else {})),
            ):
                await dp.run_local(pipeline, "seq50", {"question": "q"})

        return run

    return {
        "plain litellm": plain_seq50,
        "run_local": local(store),
        "step checkpoint per step": local(store, per_step=True),
        "checkpoints off": local(None),
        "durapipe only": local(store, stub=True),
        "durapipe only, per step": local(store, per_step=True, stub=True),
        "durapipe only, ck off": local(None, stub=True),
    }


@contextmanager
def _patched(target: Any, **values: Any) -> Iterator[None]:
    saved = {name: getattr(target, name) for name in values}
    for name, value in values.items():
        setattr(target, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


async def compare(runs: Mapping[str, Variant], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Microseconds per step of each variant (wall, process CPU, main-thread CPU), per round."""
    for run in runs.values():  # imports, caches and litellm's first-call setup, untimed
        await run()
    timings: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "thread": []} for name in runs
    }
    for _ in range(rounds):
        for name, run in runs.items():
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            await run()
            figures = timings[name]
            figures["wall"].append((time.perf_counter() - wall) / STEPS * 1e6)
            figures["cpu"].append((time.process_time() - cpu) / STEPS * 1e6)
            figures["thread"].append((time.thread_time() - thread) / STEPS * 1e6)
    return timings


def report(timings: Mapping[str, Mapping[str, list[float]]]) -> None:
    """Each variant's medians and its overhead over the first (the baseline), in µs per step."""
    base = {what: statistics.median(v) for what, v in next(iter(timings.values())).items()}
    labels = " ".join(f"{'+' + w:>7s}" for w in ("wall", "cpu", "thread"))
    print(f"{'us per step (median)':26s} {'wall':>8s} {'cpu':>8s} {'thread':>8s}   {labels}")
    for name, figures in timings.items():
        median = {what: statistics.median(v) for what, v in figures.items()}
        over = " ".join(f"{median[w] - base[w]:+7.0f}" for w in ("wall", "cpu", "thread"))
        print(
            f"{name:26s} {median['wall']:8.0f} {median['cpu']:8.0f} {median['thread']:8.0f}   {over}"
        )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.local_ab")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--only", action="append", help="a variant to run beside the baseline (repeatable)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durapipe-local-ab-") as tmp:
        runs = await variants_in(Path(tmp))
        if args.only:
            runs = {n: r for i, (n, r) in enumerate(runs.items()) if i == 0 or n in args.only}
        report(await compare(runs, args.rounds))


if __name__ == "__main__":
    asyncio.run(main())
