"""The agent bench (`bench.agent`): both sides' figures, and its refusal of a side that made other
calls than the bench's work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.agent import BenchError, Calls, check_ledgers, check_run

ROOT = Path(__file__).resolve().parent.parent
TURNS = 5


def bench(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.agent --quick`` on the session's dev server."""
    return subprocess.run(
        [sys.executable, "-m", "bench.agent", "--quick", "--address", address, *args],
        cwd=ROOT,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def figures(output: str) -> dict[str, str]:
    return dict(
        line.split(" = ", 1) for line in output.splitlines() if " = " in line and line[0] != "#"
    )


def test_the_smallest_race_prints_both_sides_ratios_and_exact_calls(temporal_address: str) -> None:
    ran = bench(temporal_address)
    assert ran.returncode == 0, ran.stderr[-2000:]
    found = figures(ran.stdout)
    # --quick: 2 counted rounds, 2 runs one after another, 4 at once; K=5 tool calls a run.
    for shape, runs in (("agent_seq", 2), ("agent_fan", 4)):
        for suffix in ("", ".handwritten"):
            assert int(found[f"{shape}.model_calls{suffix}"]) == 2 * runs * (TURNS + 1)
            assert int(found[f"{shape}.tool_calls{suffix}"]) == 2 * runs * TURNS
            for name in (
                "cpu_ms_per_model_call",
                "cpu_ms_per_tool_call",
                "history_events_per_model_call",
                "history_bytes_per_call",
                "payload_bytes_per_model_call",
                "payload_bytes_per_tool_call",
            ):
                assert float(found[f"{shape}.{name}{suffix}"]) > 0, (shape, name, suffix)
        for ratio in ("wall_ratio", "cpu_ratio"):
            assert float(found[f"{shape}.{ratio}"]) > 0
            assert f"{shape}.{ratio}.ci" in found
    assert "load_average.end" in found


def test_a_side_that_makes_other_calls_stops_the_bench_in_one_sentence(
    temporal_address: str,
) -> None:
    ran = bench(temporal_address, "--only", "agent_seq", "--handwritten-turns", str(TURNS - 1))
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    assert "agent_seq.cpu_ratio" not in ran.stdout  # no figure from runs that did other work
    assert (
        f"made {TURNS} model calls and {TURNS - 1} tool calls (its history), "
        f"not {TURNS + 1} and {TURNS}" in ran.stderr
    )
    assert ran.stderr.startswith("bench-agent stopped: handwritten run ")


def test_a_run_is_refused_for_its_answer_its_history_or_its_sides_ledgers() -> None:
    right = Calls(model=TURNS + 1, tool=TURNS)
    check_run("durapipe", "r", "Offline answer: q", "q", right, TURNS)
    with pytest.raises(BenchError, match="answered 'Offline answer: x'"):
        check_run("durapipe", "r", "Offline answer: x", "q", right, TURNS)
    with pytest.raises(BenchError, match="made 6 model calls and 6 tool calls"):
        check_run("durapipe", "r", "Offline answer: q", "q", Calls(model=6, tool=6), TURNS)
    check_ledgers("handwritten", (12, 10), 2, TURNS)
    with pytest.raises(BenchError, match="counted 12 model calls and 11 tool calls over 2 runs"):
        check_ledgers("handwritten", (12, 11), 2, TURNS)
