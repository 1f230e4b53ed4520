"""Instructions per step of ``--local``, counted by valgrind: an A/B that load does not move.

``python -m bench.local_instructions [--rounds 2] [--only VARIANT ...]`` runs `bench.local_ab`'s
variants (the bench's 50 plain litellm calls, ``run_local`` of ``seq50``, ``durapipe only`` with a
recorded answer, ...) in one process under callgrind, alternating round by round, and prints
the instructions each run's main thread executed, per step (median and every run), and each
variant's difference from the first. On a shared 2-core host, time medians of identical variants
differ by hundreds of microseconds per step; these counts repeat within 1-2 % from run to run
(within ~9 % where a SQLite store is written: its file grows, and a thread copies its log).
It needs valgrind (``apt-get install valgrind``) and takes minutes: the interpreter runs ~50
times slower under it (imports run uninstrumented). Compare two checkouts by running it in each.

Instructions are not time (a cache miss costs more than an add), but the main thread's count is
the work durapipe adds to each step, which a time figure measures through the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

from bench.__main__ import STEPS
from bench.local_ab import variants_in

DEFAULT = ("plain litellm", "run_local", "durapipe only")


async def measured(names: list[str], rounds: int, order_file: Path) -> None:
    """Run each variant once untimed, then ``rounds`` alternating rounds, each run between two
    ``getppid`` calls (callgrind dumps its counts before each one)."""
    with tempfile.TemporaryDirectory(prefix="durapipe-local-ir-") as tmp:
        runs = await variants_in(Path(tmp))
        for name in names:
            await runs[name]()
        # From here on counted: imports and warm-up ran at valgrind's uninstrumented speed.
        switch = ["callgrind_control", "-i", "on", str(os.getpid())]
        await asyncio.to_thread(subprocess.run, switch, capture_output=True)
        order = []
        for index in range(rounds):
            for name in names if index % 2 == 0 else names[::-1]:
                await asyncio.sleep(0.2)  # litellm's logging threads settle between runs
                os.getppid()
                await runs[name]()
                os.getppid()
                order.append(name)
        order_file.write_text(json.dumps(order))


def report(out: Path) -> None:
    """Each variant's main-thread instructions per step from the dumps in ``out``."""
    order = json.loads((out / "order.json").read_text())
    totals = {}
    for dump in out.glob("callgrind.*-01"):  # thread 1's dumps: callgrind.<number>-01
        number = int(dump.name.split(".")[1].split("-")[0])
        summary = re.search(r"^summary: (\d+)", dump.read_text(), re.M)
        if summary is not None:
            totals[number] = int(summary.group(1))
    # Dump 1 ends at the first getppid; then each run is one dump and each gap another.
    per_run = [totals[n] / STEPS for n in sorted(totals)[1:] if n % 2 == 0]
    counts: dict[str, list[float]] = {}
    for name, count in zip(order, per_run, strict=True):
        counts.setdefault(name, []).append(count)
    base = statistics.median(counts[order[0]])
    print(f"{'instructions per step':26s} {'median':>9s} {'over':>9s}   runs")
    for name, values in counts.items():
        median = statistics.median(values)
        runs = " ".join(f"{v / 1000:.1f}k" for v in values)
        print(f"{name:26s} {median / 1000:8.1f}k {(median - base) / 1000:+8.1f}k   {runs}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.local_instructions")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", action="append", help="a variant (repeatable; first is the base)")
    parser.add_argument("--measured", help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args(argv)
    names = args.only or list(DEFAULT)
    if args.measured:
        asyncio.run(measured(names, args.rounds, Path(args.measured)))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="durapipe-local-ir-") as tmp:
        out = Path(tmp)
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-before=getppid",
            "--separate-threads=yes", "--dump-instr=no",
            f"--callgrind-out-file={out / 'callgrind'}",
            sys.executable, "-m", "bench.local_instructions", "--rounds", str(args.rounds),
            *(f"--only={name}" for name in names), "--measured", str(out / "order.json"),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the run under valgrind failed:\n{done.stderr[-2000:]}")
        report(out)


if __name__ == "__main__":
    main()
