"""The throttling scenario, short: one provider limited across three worker processes (two serve its
queue; the third sends it the requests of a waterfall whose first model fails)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def figures(output: str) -> dict[str, float]:
    pairs = (line.split(" = ") for line in output.splitlines() if " = " in line)
    return {name: float(value) for name, value in pairs}


def test_a_limited_provider_sees_at_most_its_limits_across_three_workers_and_a_waterfall(
    temporal_address: str,
) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.throttle", "--runs", "24", "--concurrency", "2"),
            *("--rate", "3", "--address", temporal_address),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    print(done.stdout)  # the figures, for a failure's report (and -rP)
    seen = figures(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen["throttle.runs_completed"] == 24
    # 6 runs of its own pipe and 6 whose first model (delta) failed and fell back to alpha, from
    # the main queue's worker: all 12 within alpha's limits.
    assert seen["throttle.alpha.calls"] == 12
    assert seen["throttle.delta.calls"] == 6
    assert 1 <= seen["throttle.alpha.max_concurrency"] <= 2
    # Arrivals as the provider's kernel stamped them: its event loop, on the same busy cores as the
    # workers, may get to two requests sent a second apart within less than a second.
    assert seen["throttle.arrivals_timed_at_kernel"] == (sys.platform == "linux")
    assert 1 <= seen["throttle.alpha.max_rate_per_s"] <= 3
    # A provider without a limit went past it: the limit is what held alpha back. Either one will
    # do: on a loaded host one of them may see its 6 calls trickle in (beta saw 2 at once, 3 in a
    # second, while gamma saw 7 and 7, with two CPU burners).
    unlimited = ("beta", "gamma")
    assert max(seen[f"throttle.{name}.max_concurrency"] for name in unlimited) > 2
    assert max(seen[f"throttle.{name}.max_rate_per_s"] for name in unlimited) > 3
