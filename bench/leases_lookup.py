"""A/B of the limits file's lease-id index: microseconds per `SqliteLimits.sent` and `release`.

Each call marks one unsent lease sent, then ends it, as a provider call does, with 10,000 other
leases in the table (about two hours of history at the rates the limits allow). Two files, one
without the ``leases_lease`` index (as durapipe left it before) and one with it, are timed round by round
in one process, so both see the same machine; wall time includes the commit's write to the WAL,
process CPU time is the lookup's cost. ``python bench/leases_lookup.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

from durapipe.spec import LimitRule
from durapipe.stores import SqliteLimits

RULES = [LimitRule.model_validate({"model": "openai/*", "concurrency": 100_000})]
HISTORY = 10_000  # leases already in the table
CALLS = 1000  # per round and variant


def _limits(path: Path, *, index: bool) -> SqliteLimits:
    limits = SqliteLimits(path)
    db = sqlite3.connect(path)
    with db:
        if not index:
            db.execute("DROP INDEX leases_lease")
        now = time.time()
        db.executemany(
            "INSERT INTO leases VALUES (?, ?, ?, ?, ?)",
            [
                (RULES[0].bucket, f"old-{i}", now - i * 0.5, now - i * 0.5 + 60, 0)
                for i in range(HISTORY)
            ],
        )
    db.close()
    return limits


def _round(limits: SqliteLimits, name: str) -> dict[str, tuple[float, float]]:
    """(wall µs, CPU µs) per call of `sent` and of `release`."""
    leases = [f"{name}-{i}" for i in range(CALLS)]
    for lease in leases:
        limits.try_acquire(lease, RULES, 0, 60, unsent=True)
    timed: dict[str, tuple[float, float]] = {}
    for call in ("sent", "release"):
        wall, cpu = time.perf_counter(), time.process_time()
        for lease in leases:
            if call == "sent":
                limits.sent(lease, RULES)
            else:
                limits.release(lease, RULES, 1)
        timed[call] = (
            (time.perf_counter() - wall) / CALLS * 1e6,
            (time.process_time() - cpu) / CALLS * 1e6,
        )
    return timed


def main() -> None:
    """Time both files, alternating, and print every round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "without leases_lease": _limits(Path(tmp) / "one.sqlite", index=False),
            "with leases_lease": _limits(Path(tmp) / "two.sqlite", index=True),
        }
        seen: dict[str, list[dict[str, tuple[float, float]]]] = {name: [] for name in variants}
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                seen[name].append(_round(variants[name], f"r{r}"))
    print(f"{HISTORY} leases in the table, {CALLS} calls per round; wall/CPU µs per call")
    for name, timings in seen.items():
        for call in ("sent", "release"):
            values = " ".join(f"{t[call][0]:.0f}/{t[call][1]:.0f}" for t in timings)
            print(f"  {name:24} {call:8} {values}")


if __name__ == "__main__":
    main()
