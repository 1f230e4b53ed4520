"""Where a ``durapipe worker``'s start-up time goes, from launch to its first poll.

``python bench/worker_start.py [--starts 5] [--file examples/triage.yaml]`` starts a dev server
(the real one), then, one after another, ``durapipe worker FILE`` processes, each timed from launch
to its ``worker ready`` line (printed once its workers poll), then stopped by pid. It prints one
``name = value`` per line (seconds, medians over the starts) and, from one more start under
``python -X importtime``, the slowest top-level imports of that process:

- ``worker.ready_s``: launch to first poll;
- ``worker.import_s``: what ``-X importtime`` counts for every import of the process;
- ``import.<module>_s``: the top-level imports that took most of it (cumulative).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import dev_server, durapipe_cli, figure, note  # noqa: E402

_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def start_once(args: list[str], log: Path) -> float:
    """Launch ``args``, wait for its ``worker ready`` line; seconds from launch. Stops it."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    began = time.monotonic()
    with log.open("wb") as sink:
        child = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        while "worker ready" not in log.read_text(errors="replace"):
            if child.poll() is not None:
                raise SystemExit(f"the worker exited with code {child.returncode}; see {log}")
            time.sleep(0.01)
        return time.monotonic() - began
    finally:
        child.terminate()
        child.wait(timeout=60)


def top_imports(log: Path, count: int) -> tuple[float, list[tuple[str, float]]]:
    """All import time of a ``-X importtime`` log, and its ``count`` slowest top-level imports."""
    total = 0.0
    top: list[tuple[str, float]] = []
    for line in log.read_text(errors="replace").splitlines():
        match = _IMPORT.match(line)
        if match is None:
            continue
        total += int(match.group(1)) / 1e6
        if len(match.group(3)) == 1:  # one space of indent: imported by the program itself
            top.append((match.group(4), int(match.group(2)) / 1e6))
    return total, sorted(top, key=lambda item: -item[1])[:count]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="worker starts timed")
    parser.add_argument("--file", default="examples/triage.yaml", help="the worker's pipes")
    parser.add_argument("--address", help="a Temporal server (default: a fresh dev server)")
    options = parser.parse_args()
    async with dev_server(options.address) as address:
        with tempfile.TemporaryDirectory(prefix="durapipe-worker-start-") as tmp:
            work = Path(tmp)
            args = durapipe_cli("worker", options.file, "--address", address,
                                "-t", f"start-{uuid.uuid4().hex[:6]}")  # fmt: skip
            note(f"load average at start: {os.getloadavg()[0]:.2f}")
            ready = [
                await asyncio.to_thread(start_once, args, work / f"worker-{n}.log")
                for n in range(options.starts)
            ]
            traced = [sys.executable, "-X", "importtime", *args[1:]]
            await asyncio.to_thread(start_once, traced, work / "importtime.log")
            total, top = top_imports(work / "importtime.log", 8)
            note(f"load average at end: {os.getloadavg()[0]:.2f}")
    figure("worker.ready_s", round(statistics.median(ready), 3))
    note("each start: " + ", ".join(f"{s:.3f}" for s in ready))
    figure("worker.import_s", round(total, 3))
    for module, seconds in top:
        figure(f"import.{module}_s", round(seconds, 3))


if __name__ == "__main__":
    asyncio.run(main())
