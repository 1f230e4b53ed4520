"""The step views without a server: the `show` tree, the live view, batch counts, run totals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.workflow.v1 import PendingActivityInfo

import durapipe as dp
from durapipe._words import counted
from durapipe.cli._live import render
from durapipe.cli._progress import header, newly_finished, run_line, step_line, tree_lines
from durapipe.client._pending import retry_update
from durapipe.runtime._calls import FailedAttempt
from durapipe.workflows._search import finished_steps

START = datetime(2026, 1, 1, tzinfo=UTC)
RECORDS = [
    dp.StepRecord(
        path="extract",
        pipe="extract",
        kind="llm",
        status="succeeded",
        attempts=2,
        started_at=START,
        ended_at=START + timedelta(seconds=1.5),
        model="openai/gpt-x",
        input_tokens=100,
        output_tokens=20,
        cost_usd=0.00014,
    ),
    dp.StepRecord(
        path="items",
        pipe="per_item",
        kind="batch",
        status="running",
        counts={"succeeded": 998, "failed": 2, "running": 5},
        input_tokens=5000,
        output_tokens=900,
    ),
    dp.StepRecord(
        path="items/check",
        pipe="check",
        kind="tool",
        status="failed",
        attempts=3,
        error_type="ValueError",
        error="bad item",
    ),
    dp.StepRecord(path="publish", pipe="publish", kind="tool", status="skipped"),
]


def test_tree_lines_show_status_attempts_time_tokens_cost_counts_and_errors() -> None:
    assert tree_lines(RECORDS) == [
        "✓ extract (llm · openai/gpt-x)  succeeded  2 attempts  1.50s  100 in / 20 out tokens  $0.000140",
        "· items (batch)  running  998 succeeded, 2 failed, 5 running  5000 in / 900 out tokens",
        "  ✗ check (tool)  failed  3 attempts  ValueError: bad item",
        "- publish (tool)  skipped",
    ]


def test_a_step_that_spent_on_failed_attempts_says_how_much_of_its_cost_that_was() -> None:
    failed = [
        FailedAttempt(attempt=1, input_tokens=36, output_tokens=100, cost_usd=1.00036),
        FailedAttempt(attempt=2, input_tokens=72, output_tokens=200, cost_usd=2.00072),
    ]
    record = dp.StepRecord(
        path="judge", pipe="judge", kind="llm", status="failed", attempts=2, model="openai/m",
        input_tokens=108, output_tokens=300, cost_usd=3.00108, failed_attempts=failed,
        error_type="durapipe.InvalidOutput", error="no fit",
    )  # fmt: skip
    assert tree_lines([record]) == [
        "✗ judge (llm · openai/m)  failed  2 attempts  108 in / 300 out tokens  $3.001080  "
        "($3.001080 of it on failed attempts 1, 2)  durapipe.InvalidOutput: no fit"
    ]
    assert "($1.000360 of it on failed attempt 1)" in step_line(
        record.model_copy(update={"failed_attempts": failed[:1]})
    )


def test_finished_steps_counts_batch_items_not_rows() -> None:
    assert finished_steps(RECORDS) == 1 + 998 + 2 + 1


def test_live_view_lists_steps_and_totals() -> None:
    console = Console(record=True, width=120)
    console.print(render(RECORDS, "run-1"))
    text = console.export_text()
    assert "extract" in text and "llm · openai/gpt-x" in text and "100/20" in text
    assert "check" in text and "publish" in text
    # The batch's row stands for its items: its spend counts once, beside the leaf's.
    assert "run run-1: 5100 in / 920 out tokens, $0.000140" in text


def test_a_controllers_step_line_comes_after_its_steps() -> None:
    def step(path: str, kind: str, status: str, ended: float | None) -> dp.StepRecord:
        at = START + timedelta(seconds=ended) if ended is not None else None
        return dp.StepRecord(path=path, pipe=path, kind=kind, status=status, ended_at=at)

    # The query lists a controller before its steps; it finished after them.
    polled = [
        step("headline", "llm", "succeeded", 1.0),
        step("fact_check", "sequence", "succeeded", 3.0),
        step("fact_check/count_words", "tool", "succeeded", 2.0),
        step("fact_check/verify", "llm", "running", None),
    ]
    shown: set[str] = set()
    assert [r.path for r in newly_finished(polled, shown)] == ["headline", "fact_check/count_words"]
    polled[-1] = step("fact_check/verify", "llm", "succeeded", 3.0)  # ends as its sequence does
    assert [r.path for r in newly_finished(polled, shown)] == ["fact_check/verify", "fact_check"]
    assert newly_finished(polled, shown, final=True) == []  # each line once
    # A failed run is over: its controller's line shows even with a step left unfinished.
    failed = [
        step("fact_check", "sequence", "failed", 3.0),
        polled[2],
        step("fact_check/verify", "llm", "running", None),
    ]
    assert [r.path for r in newly_finished(failed, set(), final=True)] == [
        "fact_check/count_words",
        "fact_check",
    ]


def test_counts_of_one_are_singular() -> None:
    # `show` said "1 steps done" for a one-step run.
    one = dp.RunSummary(
        run_id="r", pipe="p", status="succeeded", started_at=datetime(2026, 1, 1, tzinfo=UTC),
        steps=1, input_tokens=3, output_tokens=4,
    )  # fmt: skip
    assert "  1 step done  3 in / 4 out tokens  $0.000000" in header(one, paused=False)
    assert "  2 steps done  " in header(one.model_copy(update={"steps": 2}), paused=False)
    assert [counted(n, "history", "histories") for n in (0, 1, 2)] == [
        "0 histories",
        "1 history",
        "2 histories",
    ]


def test_a_running_runs_totals_read_from_it_may_be_searchable_later() -> None:
    # A run started with searchable totals on has none in its first seconds (before its first
    # upsert), and `show` called it "not searchable", which read as if it had been started so.
    running = dp.RunSummary(
        run_id="r", pipe="p", status="running", started_at=datetime(2026, 1, 1, tzinfo=UTC),
        searchable_totals=False,
    )  # fmt: skip
    assert header(running, paused=False).endswith(
        " * (read from the run: not searchable, or not yet)"
    )
    unknown = running.model_copy(update={"totals_known": False, "totals_unknown_why": "why"})
    assert header(unknown, paused=False).endswith(
        "  (not searchable, or not yet, and the run could not tell them: why)"
    )
    ended = running.model_copy(update={"status": "completed"})  # an ended run upserted, if on
    assert header(ended, paused=False).endswith(" * (read from the run: not searchable)")


@pytest.fixture
def in_paris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local zone is Europe/Paris (UTC+1 in winter) for the test."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_printed_with_their_utc_offset(in_paris: None) -> None:
    # `show` and `runs` printed "started 2026-01-01 00:00:00": UTC, with nothing saying so (and
    # a retry's wait said "UTC" while they did not). All print local time with its offset now.
    started = datetime(2026, 1, 1, 0, 0, 5, 123456, tzinfo=UTC)
    run = dp.RunSummary(
        run_id="r", pipe="p", status="failed", started_at=started, failed_step="s", error="x",
    )  # fmt: skip
    assert "  started 2026-01-01 01:00:05+01:00  " in header(run, paused=False)
    assert run_line(run).startswith("r  p  failed  2026-01-01 01:00:05+01:00  0 steps  ")
    next_attempt = Timestamp()
    next_attempt.FromDatetime(started + timedelta(minutes=2))
    info = PendingActivityInfo(
        state=PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED,
        attempt=2,
        maximum_attempts=4,
        next_attempt_schedule_time=next_attempt,
        last_failure=Failure(
            message="busy", application_failure_info=ApplicationFailureInfo(type="durapipe.X")
        ),
    )
    assert retry_update(info)["waiting_for"] == (
        "attempt 2 of 4 at 01:02:05+01:00: attempt 1 failed: durapipe.X: busy"
    )
