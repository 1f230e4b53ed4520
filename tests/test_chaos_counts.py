"""How the chaos harness counts (`bench/chaos.py`), on made-up ledgers: which requests were in
flight at a kill, which duplicates they explain, and what a failure prints about each."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import (
    Figures,
    Kill,
    Worker,
    all_started,
    duplicate_counts,
    explanations,
    in_flight_at,
    picked_up_after_freeze,
    too_few_kills,
)
from durapipe.testing import Call

FREEZE = 100.0


def call(seq: int, key: str, process: str, received: float, finished: float, **more: Any) -> Call:
    return Call(
        seq=seq, model="gpt-s1", received_at=received, finished_at=finished, outcome="ok",
        idempotency_key=key, attempt=more.pop("attempt", 1), prompt_tokens=3, completion_tokens=5,
        messages=[{"role": "user", "content": "Step 1: topic 3"}],
        headers={"Authorization": f"Bearer sk-fake-chaos-{process}"}, http_status=200,
        peer_port=more.pop("port", 40000 + seq), body_sha256=more.pop("body", "ab" * 32),
    )  # fmt: skip


def test_a_request_the_provider_picked_up_only_after_the_freeze_was_in_flight() -> None:
    # worker2#1 sent #1 before it was frozen, but the busy provider's handler started (and
    # answered) only after the freeze: the process could never read that answer.
    calls = [
        call(1, "k1", "worker2-1", received=FREEZE + 0.02, finished=FREEZE + 0.03),
        call(2, "k1", "worker1-1", received=FREEZE + 6.0, finished=FREEZE + 6.01, attempt=2),
        call(3, "k3", "worker2-1", received=FREEZE - 0.5, finished=FREEZE - 0.4),  # read by it
    ]
    kill = Kill("sk-fake-chaos-worker2-1", FREEZE)
    assert in_flight_at(calls, kill) == ({1}, set())
    paid, duplicates, unanswered, unread, unexplained = duplicate_counts(calls, [kill], False)
    assert (paid, duplicates, unanswered, unread, unexplained) == (3, 1, 1, 0, 0)
    assert picked_up_after_freeze(calls, [kill]) == 1


def test_an_answer_that_reached_the_worker_and_was_paid_again_is_unexplained(
    tmp_path: Path,
) -> None:
    # worker2#1 read #1's answer long before its kill; the retry paid for it again.
    calls = [
        call(1, "k1", "worker2-1", received=FREEZE - 1.0, finished=FREEZE - 0.9),
        call(2, "k1", "worker1-1", received=FREEZE + 6.0, finished=FREEZE + 6.01, attempt=2),
        call(4, "k4", "worker1-1", received=FREEZE + 1.0, finished=FREEZE + 1.01),
    ]
    kill = Kill("sk-fake-chaos-worker2-1", FREEZE, aimed_at=4)
    *_, unexplained = duplicate_counts(calls, [kill], False)
    assert unexplained == 1
    store = tmp_path / "cp.sqlite"
    keep_answer(store, seq=2, at=FREEZE + 6.02)
    failures = {("topic 3", "s1"): "attempt 2 after TIMEOUT_TYPE_HEARTBEAT of attempt 1"}
    kills, lines = explanations(calls, [kill], store, False, failures, t0=FREEZE)
    assert kills == ("worker2#1 frozen +0.000s, aimed at #4, in flight: none",)
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(
        "UNEXPLAINED duplicate: topic 3 step s1 key k1: #1 by worker2#1 attempt 1"
    )
    assert "then #2 by worker1#1 attempt 2 body abababababab" in line
    assert "same body; #1's answer never kept" in line
    assert "worker2#1 killed +0.000s, this request not in flight then" in line
    assert line.endswith("attempt 2 after TIMEOUT_TYPE_HEARTBEAT of attempt 1")


def test_the_explanation_says_when_the_bodies_differ_and_when_the_first_answer_was_kept(
    tmp_path: Path,
) -> None:
    calls = [
        call(1, "k1", "worker1-1", received=FREEZE - 1.0, finished=FREEZE - 0.9, body="aa" * 32),
        call(2, "k1", "worker1-1", received=FREEZE + 6.0, finished=FREEZE + 6.01, body="bb" * 32),
    ]
    store = tmp_path / "cp.sqlite"
    keep_answer(store, seq=1, at=FREEZE - 0.89)
    _, (line,) = explanations(calls, [], store, False, {}, t0=FREEZE)
    assert "BODIES DIFFER" in line
    assert "#1's answer kept -0.890s (before #2 arrived)" in line
    assert "worker1#1 was never killed" in line


def test_a_run_with_fewer_kills_than_asked_says_so_in_one_line() -> None:
    # make chaos asks for 3 kills in each run; a run that got 2 must not pass as if it met the bar.
    figures = Figures(
        runs_started=160, runs_completed=160, outputs_verified=160, succeeded_steps=800,
        paid_calls=800, duplicate_paid_calls=0, requests_in_flight_at_kills=0,
        requests_unanswered_at_kills=0, answers_unread_at_kills=0,
        duplicates_not_explained_by_in_flight=0, provider_replays=0, worker_kills=2,
        aimed_kills=2, aimed_kills_in_window=2, wall_s=120.0,
    )  # fmt: skip
    assert too_few_kills(figures, 3) == (
        "chaos FAILED: the billing run had 2 worker kills over 160 runs, fewer than --min-kills 3:"
        " its figures above do not meet the bar"
    )
    assert too_few_kills(figures, 2) is None
    assert too_few_kills(figures, None) is None


def keep_answer(store: Path, *, seq: int, at: float) -> None:
    """An answers table as durapipe's SQLite store keeps it (plain, not sealed)."""
    body = json.dumps({"id": f"chatcmpl-fake-{seq}"}).encode()
    answer = json.dumps({"status": 200, "headers": [], "body": base64.b64encode(body).decode()})
    db = sqlite3.connect(store)
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT, answer TEXT, created_at REAL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS checkpoints (key TEXT, result TEXT, created_at REAL)"
        )
        db.execute(
            "INSERT INTO answers VALUES (?, ?, ?)",
            (f"answer:{seq}", base64.b64encode(answer.encode()).decode(), at),
        )
    db.close()


def test_a_worker_that_exits_while_starting_fails_the_run_with_what_it_said(
    tmp_path: Path,
) -> None:
    quits = Worker("worker1", [], {}, tmp_path)
    quits.starts = 1
    quits.log.write_text("error: DURAPIPE_CHECKPOINTS: the checkpoint file is locked\n")
    quits.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
    quits.process.wait()
    starting = Worker("worker2", [], {}, tmp_path)
    starting.starts = 1
    starting.log.write_text("")
    starting.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not all_started([starting])  # alive, not polling yet: wait on
        with pytest.raises(RuntimeError, match="worker1 exited while starting; it said: error"):
            all_started([starting, quits])
        starting.log.write_text("worker ready: task queue 'chaos'\n")
        assert all_started([starting])
    finally:
        starting.process.kill()
        starting.process.wait()
