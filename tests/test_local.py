"""The in-process runner: same specs and activity code, Temporal's retry semantics."""

from __future__ import annotations

import asyncio
import json

import pytest

import durapipe as dp
from durapipe.adapters._litellm import litellm_module
from tests import flaky_tools
from tests.conftest import ARTICLE, EXAMPLES
from tests.support import run_cli


@pytest.fixture(autouse=True)
def reset_flaky() -> None:
    flaky_tools.CALLS.clear()


def flaky_pipeline(**retry: object) -> dp.Pipeline:
    return dp.pipeline(dp.tool(flaky_tools.flaky, retry={"initial_interval": 0.01, **retry}))


async def test_brief_runs_locally(brief_yaml: dp.Pipeline) -> None:
    result = await dp.run_local(brief_yaml, "brief", {"article": ARTICLE})
    assert result.output["word_count"] == len(ARTICLE.split())
    assert [s.status for s in result.steps] == ["succeeded"] * 5


async def test_retryable_failures_are_retried_up_to_the_policy() -> None:
    result = await dp.run_local(flaky_pipeline(max_attempts=5), "flaky", {"failures": 2})
    assert result.output == "ok after 3 calls"
    assert result.steps[0].attempts == 3


async def test_attempts_run_out_and_the_step_fails_naming_the_cause() -> None:
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(flaky_pipeline(max_attempts=2), "flaky", {"failures": 5})
    assert caught.value.path == "flaky" and caught.value.cause_type == "ConnectionError"
    assert "step 'flaky' (tool) failed: ConnectionError: call 2 failed" in str(caught.value)
    assert len(flaky_tools.CALLS) == 2


async def test_non_retryable_error_types_stop_at_once() -> None:
    with pytest.raises(dp.StepFailed):
        await dp.run_local(
            flaky_pipeline(max_attempts=5, non_retryable=["ConnectionError"]),
            "flaky",
            {"failures": 5},
        )
    assert len(flaky_tools.CALLS) == 1


async def test_a_failed_step_marks_later_steps_skipped() -> None:
    failing = dp.tool(flaky_tools.flaky, retry={"max_attempts": 1})
    after = dp.tool(flaky_tools.shout)
    seq = dp.sequence(
        "seq", inputs={"failures": int}, steps=[dp.step(failing, result="text"), dp.step(after)]
    )
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(dp.pipeline(seq), "seq", {"failures": 1})
    statuses = {s.path: s.status for s in caught.value.steps}
    assert statuses == {"flaky": "failed", "shout": "skipped"}


async def test_inputs_are_checked_before_anything_runs() -> None:
    with pytest.raises(dp.PipelineError, match="input 'failures': expected integer"):
        await dp.run_local(flaky_pipeline(), "flaky", {"failures": "many"})
    assert flaky_tools.CALLS == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DURAPIPE_PAYLOAD_THRESHOLD", "lots"), ("DURAPIPE_ENCRYPTION_KEYS", "k1:not-base64!")],
)
async def test_a_bad_setting_fails_at_start_naming_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(dp.ConfigError, match=f"^{variable}") as caught:
        await dp.run_local(flaky_pipeline(), "flaky", {"failures": 0})
    assert "\n" not in str(caught.value)
    assert flaky_tools.CALLS == []  # refused before any step ran


def slow_pipeline(**retry: object) -> dp.Pipeline:
    return dp.pipeline(
        dp.tool(flaky_tools.slow, timeout=0.2, retry={"initial_interval": 0.01, **retry})
    )


async def test_an_attempt_past_its_timeout_is_cut_off_and_the_next_attempt_runs() -> None:
    started = asyncio.get_running_loop().time()
    result = await dp.run_local(slow_pipeline(max_attempts=2), "slow", {"seconds": 30})
    assert result.output == "answered on call 2" and result.steps[0].attempts == 2
    assert asyncio.get_running_loop().time() - started < 10  # not the 30 s the first one slept
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timer's cancellations taken back
    await asyncio.sleep(0)  # and none is left pending for the caller


async def test_a_step_whose_attempts_all_time_out_fails_as_a_timeout() -> None:
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(slow_pipeline(max_attempts=1), "slow", {"seconds": 30})
    assert caught.value.cause_type == "durapipe.Timeout"
    assert caught.value.cause == "start-to-close timeout exceeded" and caught.value.attempts == 1


async def test_a_run_cancelled_during_a_step_with_a_timeout_is_cancelled_not_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = asyncio.Event()
    monkeypatch.setattr(flaky_tools, "STARTED", started)
    run = asyncio.create_task(dp.run_local(slow_pipeline(max_attempts=3), "slow", {"seconds": 30}))
    await started.wait()  # the first attempt is sleeping
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert flaky_tools.CALLS == [1]  # not retried: Ctrl-C stops the run


def test_a_local_run_says_why_its_first_model_step_waits() -> None:
    # The first llm step of `run --local` waited for `import litellm` (3.5 s idle, 12-19 s on a
    # loaded machine) with nothing on screen. It says why on stderr, before any step line, and
    # stdout keeps the output alone (--json).
    done = run_cli(
        "run", "brief", "--file", str(EXAMPLES / "brief.yaml"), "--local", "--json",
        "--input-json", json.dumps({"article": ARTICLE}),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and json.loads(done.stdout)
    first, *rest = done.stderr.splitlines()
    assert first == (
        "  … step 'extract_claims' waits for the model library (litellm) to load: once per "
        "process, a few seconds (more on a busy machine)"
    )
    assert rest[0].startswith("  ✓ extract_claims (llm · durapipe/offline)")
    assert not any("litellm" in line for line in rest)  # said once


async def test_a_local_run_says_nothing_when_litellm_is_imported(brief_yaml: dp.Pipeline) -> None:
    litellm_module()
    notices: list[str] = []
    await dp.run_local(brief_yaml, "brief", {"article": ARTICLE}, on_notice=notices.append)
    assert notices == []
