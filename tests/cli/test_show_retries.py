"""A step that does not move says why: while the server retries it (`show`, the followed run and
`steps()` carry the attempt it is on and how the last one failed), and while its call waits for
room in a provider limit, not a bare "running"."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from durapipe.cli._progress import failed_attempt_lines, follow
from durapipe.cli._waiting import waiting_line
from durapipe.testing.fake_provider import FakeProvider, Hang, Status
from tests.support import eventually

MODEL = "gpt-retry"


def pipeline(nested: bool) -> dp.Pipeline:
    ask = dp.llm(
        "ask",
        inputs={"question": str},
        prompt="{{ question }}",
        model=f"openai/{MODEL}",
        # Two seconds between attempts: long enough to be seen waiting, short for the suite.
        retry=dp.RetrySpec(max_attempts=4, initial_interval=2, backoff=1.0, max_interval=2),
    )
    step = dp.step(ask)
    if nested:  # the step runs in a nested workflow, whose own pending activities say it
        step = dp.step(dp.sequence("inner", inputs={"question": str}, steps=[step]))
    return dp.pipeline(dp.sequence("asked", inputs={"question": str}, steps=[step]))


@pytest.mark.parametrize("nested", [False, True], ids=["top", "nested"])
async def test_a_retrying_step_shows_its_attempt_and_last_failure(
    nested: bool, temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run_id = f"retrying-{uuid.uuid4().hex[:8]}"
    path = "inner/ask" if nested else "ask"
    with FakeProvider() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        fake.script(MODEL, [Status(503), Status(503)])  # then the default answer
        piped = pipeline(nested)
        client = await dp.connect(temporal_address, pipeline=piped)
        async with dp.build_worker(client, task_queue=task_queue):
            handle = await dp.start(
                client, piped, "asked", {"question": "q"}, run_id=run_id, task_queue=task_queue
            )
            follower = asyncio.ensure_future(follow(handle))

            async def retrying() -> dp.StepRecord | None:
                try:
                    steps = await handle.steps()
                except dp.RunStalled:  # the worker above has not polled yet (a busy machine)
                    return None
                step = next((s for s in steps if s.path == path), None)  # a nested run starts
                return step if step is not None and step.waiting_for else None

            step = await eventually(retrying, "the step to wait for its next attempt")
            assert step.status == "running" and step.attempts in (2, 3)
            assert step.error_type == "durapipe.ProviderError" and "ServiceUnavailable" in (
                step.error or ""
            )
            assert step.waiting_for is not None
            assert step.waiting_for.startswith(f"attempt {step.attempts} of 4 at ")
            assert (
                f"attempt {step.attempts - 1} failed: durapipe.ProviderError: " in step.waiting_for
            )
            shown = await asyncio.to_thread(
                CliRunner().invoke, app, ["show", run_id, "--address", temporal_address]
            )
            assert shown.exit_code == 0, shown.stderr
            [line] = [line for line in shown.stdout.splitlines() if " ask (llm" in line]
            assert " running " in line and f"{step.attempts} attempts" in line
            assert "waiting for attempt" in line and "ServiceUnavailable" in line
            result = await follower
    [done] = [s for s in result.steps if s.path == path]
    assert done.attempts == 3 and done.status == "succeeded"
    # While `show` runs, CliRunner holds sys.stderr: what the follower said meanwhile is there.
    printed = shown.stderr + capsys.readouterr().err
    # The followed run said each failed attempt once: with its wait; when it polled past a wait
    # (a busy machine), on the line that the next attempt is under way; past a whole attempt, as
    # failed without its error (the server keeps only the last failure).
    said = {
        attempt: [x for x in printed.splitlines() if " failed" in x and _names(x, attempt)]
        for attempt in (1, 2)
    }
    assert all(len(lines) == 1 for lines in said.values()), printed
    for attempt, [line] in said.items():
        failed = f"attempt {attempt} failed: durapipe.ProviderError: "
        if " waiting for attempt " in line:
            assert f"waiting for attempt {attempt + 1} of 4 at " in line and failed in line
        elif " now on attempt " in line:
            assert failed in line and line.endswith(f"; now on attempt {attempt + 1}"), line
        else:
            assert line.startswith(f"  ↻ {path} attempt") and "how is not known" in line, line
    assert [c.outcome for c in fake.calls] == ["status:503", "status:503", "ok"]


async def test_a_call_waiting_for_room_in_a_limit_says_which(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DURAPIPE_LIMITS", str(tmp_path / "limits.sqlite"))
    # An 8 s timeout gives a 5 s heartbeat timeout: a beat every 1.7 s, sent at once the first time.
    asks = {
        name: dp.llm(name, inputs={"question": str}, prompt="{{ question }}",
                     model="openai/gpt-narrow", timeout=8)
        for name in ("one", "two")
    }  # fmt: skip
    both = dp.parallel("both", inputs={"question": str}, branches=asks)
    piped = dp.pipeline(
        both, limits=[dp.LimitRule(model="openai/gpt-narrow", concurrency=1, name="narrow")]
    )
    run_id = f"narrow-{uuid.uuid4().hex[:8]}"
    with FakeProvider() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        fake.script("gpt-narrow", [Hang(6)])  # the first call holds the only room for 6 s
        client = await dp.connect(temporal_address, pipeline=piped)
        async with dp.build_worker(client, task_queue=task_queue):
            handle = await dp.start(
                client, piped, "both", {"question": "q"}, run_id=run_id, task_queue=task_queue
            )

            async def held() -> dp.StepRecord | None:
                try:
                    steps = await handle.steps()
                except dp.RunStalled:  # the worker above has not polled yet (a busy machine)
                    return None
                return next((s for s in steps if s.waiting_for), None)

            step = await eventually(held, "a step to say it waits for room", timeout=30)
            assert step.status == "running" and step.path in ("one", "two")
            assert step.waiting_for == "room in provider limit 'narrow'"
            result = await handle.result()
    assert sorted(s.status for s in result.steps) == ["succeeded", "succeeded"]
    assert fake.max_concurrency_for("gpt-narrow") == 1


def _names(line: str, attempt: int) -> bool:
    """Whether a line saying failed attempts names ``attempt`` (alone, or in a range)."""
    if f"attempt {attempt} failed" in line:
        return True
    words = line.split()
    if "attempts" not in words:
        return False
    at = words.index("attempts")
    return int(words[at + 1]) <= attempt <= int(words[at + 3])


def test_a_followed_step_says_each_failed_attempt_once_even_past_a_missed_wait() -> None:
    # A followed run polls every 0.25 s: it could miss a retry's wait, and with it the only line
    # saying that an attempt failed.
    said: dict[str, int] = {}
    waiting = dp.StepRecord(
        path="ask", pipe="ask", kind="llm", status="running", attempts=2,
        error_type="durapipe.ProviderError", error="ServiceUnavailableError: 503",
        waiting_for="attempt 2 of 4 at 14:02:11 UTC: attempt 1 failed: "
        "durapipe.ProviderError: ServiceUnavailableError: 503",
    )  # fmt: skip
    assert failed_attempt_lines(waiting, said, "r1") == [waiting_line(waiting, "r1")]
    running = waiting.model_copy(update={"waiting_for": None})  # attempt 2 under way
    assert failed_attempt_lines(running, said, "r1") == []
    # The wait for attempt 3 fell between two polls: the next finds attempt 3 under way.
    third = running.model_copy(update={"attempts": 3, "error": "InternalServerError: 500"})
    assert failed_attempt_lines(third, said, "r1") == [
        "  ↻ ask attempt 2 failed: durapipe.ProviderError: InternalServerError: 500; "
        "now on attempt 3"
    ]
    assert failed_attempt_lines(third, said, "r1") == []
    done = third.model_copy(update={"status": "succeeded", "error_type": None, "error": None})
    assert failed_attempt_lines(done, said, "r1") == []
    # Attempts that failed between two looks, the step then done: the server kept no failure.
    quick = dp.StepRecord(path="b", pipe="b", kind="llm", status="succeeded", attempts=3)
    assert failed_attempt_lines(quick, said, "r1") == [
        "  ↻ b attempts 1 to 2 failed (how is not known: not seen while it ran)"
    ]
    # On attempt 4, having seen none of the failures before the last one.
    fourth = third.model_copy(update={"path": "c", "attempts": 4})
    assert failed_attempt_lines(fourth, said, "r1") == [
        "  ↻ c attempts 1 to 2 failed (how is not known: not seen while it ran)",
        "  ↻ c attempt 3 failed: durapipe.ProviderError: InternalServerError: 500; "
        "now on attempt 4",
    ]
