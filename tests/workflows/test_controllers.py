"""The parallel, batch and condition controllers and binding steps, run in-process (`run_local`).

The same interpreter runs them on Temporal; tests/test_controllers_temporal.py checks parity.
"""

from __future__ import annotations

import random

import pytest

import durapipe as dp
from tests import control_tools
from tests.control_tools import counted, fail_on, negate, square, tracked

NO_RETRY = {"max_attempts": 1}


@pytest.fixture(autouse=True)
def reset_tools() -> None:
    control_tools.STARTED.clear()
    control_tools.IN_FLIGHT[:] = [0, 0]


def batch_of(
    pipe: dp.Pipe, *, name: str = "mapped", bad: bool = False, **options: object
) -> dp.Pipeline:
    """A batch ``name`` of ``pipe`` over ``numbers`` (item ``n``), with a ``bad`` input if asked."""
    inputs: dict[str, object] = {"numbers": list[int], **({"bad": int} if bad else {})}
    mapped = dp.batch(
        name,
        inputs=inputs,  # type: ignore[arg-type]
        over="numbers",
        item="n",
        pipe=pipe,
        **options,  # type: ignore[arg-type]
    )
    return dp.pipeline(mapped)


def squares(**options: object) -> dp.Pipeline:
    return batch_of(dp.tool(square), name="squares", **options)


async def test_parallel_output_maps_branch_names_to_results() -> None:
    both = dp.parallel(
        "both", inputs={"n": int}, branches={"sq": dp.tool(square), "neg": dp.tool(negate)}
    )
    result = await dp.run_local(dp.pipeline(both), "both", {"n": 7})
    assert result.output == {"sq": 49, "neg": -7}
    assert [(s.path, s.status) for s in result.steps] == [
        ("sq", "succeeded"),
        ("neg", "succeeded"),
    ]


def failing_parallel(on_error: str) -> dp.Pipeline:
    bad = dp.tool(fail_on, retry=NO_RETRY)
    both = dp.parallel(
        "both",
        inputs={"n": int, "bad": int},
        branches={"ok": dp.tool(square), "broken": bad},
        on_error=on_error,  # type: ignore[arg-type]
    )
    return dp.pipeline(both)


async def test_a_failing_branch_fails_the_parallel_pipe_naming_the_branch() -> None:
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(failing_parallel("fail"), "both", {"n": 3, "bad": 3})
    assert caught.value.path == "broken" and caught.value.cause == "item 3 is bad"
    statuses = {s.path: s.status for s in caught.value.steps}
    assert statuses == {"ok": "succeeded", "broken": "failed"}  # the other branch still ended


async def test_parallel_collect_returns_results_and_typed_errors() -> None:
    result = await dp.run_local(failing_parallel("collect"), "both", {"n": 3, "bad": 3})
    assert result.output == {
        "results": {"ok": 9},
        "errors": {"broken": {"type": "ValueError", "message": "item 3 is bad", "path": "broken"}},
    }


async def test_batch_keeps_input_order_and_respects_max_concurrency() -> None:
    numbers = list(range(20, 0, -1))
    pipeline = batch_of(dp.tool(tracked), max_concurrency=3)
    result = await dp.run_local(pipeline, "mapped", {"numbers": numbers})
    assert result.output == numbers
    assert control_tools.IN_FLIGHT[1] == 3
    assert [s.path for s in result.steps][:3] == ["mapped[0]", "mapped[1]", "mapped[2]"]


def failing_batch(**options: object) -> dp.Pipeline:
    return batch_of(dp.tool(fail_on, retry=NO_RETRY), bad=True, **options)


async def test_batch_fail_fast_starts_nothing_after_a_failure() -> None:
    pipeline = failing_batch(max_concurrency=1)
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(pipeline, "mapped", {"numbers": [1, 2, 3, 4], "bad": 2})
    assert caught.value.path == "mapped[1]"
    assert control_tools.STARTED == [1, 2]
    statuses = [s.status for s in caught.value.steps]
    assert statuses == ["succeeded", "failed", "skipped", "skipped"]


async def test_batch_collect_runs_every_item_and_lists_errors_by_index() -> None:
    pipeline = failing_batch(on_error="collect")
    result = await dp.run_local(pipeline, "mapped", {"numbers": [1, 2, 3], "bad": 2})
    assert result.output == {
        "results": [1, None, 3],
        "errors": [
            {"index": 1, "type": "ValueError", "message": "item 2 is bad", "path": "mapped[1]"}
        ],
    }


async def test_a_long_batch_keeps_one_record_with_counts_and_nests_chunks() -> None:
    numbers = list(range(130))
    result = await dp.run_local(squares(chunk_size=5), "squares", {"numbers": numbers})
    assert result.output == [n * n for n in numbers]
    assert [(s.path, s.status, s.counts) for s in result.steps] == [
        ("squares[*]", "succeeded", {"succeeded": 130})
    ]


@pytest.mark.parametrize(("budget", "most_at_once"), [(None, 10), (1.0, 5)])
async def test_chunks_share_max_concurrency_and_run_one_at_a_time_under_a_budget(
    budget: float | None, most_at_once: int
) -> None:
    # 25 items in 5 chunks of 5: together the chunks reach max_concurrency (10, two items per
    # chunk); under a budget one chunk runs at a time, all 5 of its items at once.
    numbers = list(range(25))
    pipeline = batch_of(dp.tool(tracked), chunk_size=5, max_concurrency=10)
    result = await dp.run_local(pipeline, "mapped", {"numbers": numbers}, budget_usd=budget)
    assert result.output == numbers
    assert control_tools.IN_FLIGHT[1] == most_at_once


async def test_a_failed_chunk_fails_the_batch_with_the_first_failed_item() -> None:
    pipeline = failing_batch(chunk_size=5, max_concurrency=2)
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(pipeline, "mapped", {"numbers": list(range(25)), "bad": 7})
    assert caught.value.path == "mapped[7]"
    # Two chunks ran at once, one item each; chunks after the failed one never started.
    assert 7 in control_tools.STARTED and max(control_tools.STARTED) < 10
    (summary,) = caught.value.steps
    assert summary.counts["failed"] == 1


async def test_batch_pipe_inputs_map_item_fields() -> None:
    mapped = dp.batch(
        "mapped",
        inputs={"pairs": list},
        over="pairs",
        item="pair",
        pipe=dp.tool(square),
        pipe_inputs={"n": "pair.left"},
    )
    pairs = [{"left": 2, "right": 0}, {"left": 5, "right": 1}]
    result = await dp.run_local(dp.pipeline(mapped), "mapped", {"pairs": pairs})
    assert result.output == [4, 25]


def router(**options: object) -> dp.Pipeline:
    pick = dp.condition(
        "pick",
        inputs={"n": int},
        expression="'big' if n > 10 else n % 2 == 0",
        **options,  # type: ignore[arg-type]
    )
    return dp.pipeline(pick)


@pytest.mark.parametrize(("n", "output"), [(12, 144), (4, -4), (3, None)])
async def test_condition_picks_the_outcome_by_value(n: int, output: int | None) -> None:
    pipeline = router(outcomes={"big": dp.tool(square), True: dp.tool(negate)}, default="continue")
    result = await dp.run_local(pipeline, "pick", {"n": n})
    assert result.output == output


async def test_condition_fail_outcome_and_unmatched_value_fail_clearly() -> None:
    pipeline = router(outcomes={"big": "fail", True: dp.tool(negate)})
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(pipeline, "pick", {"n": 11})
    assert caught.value.cause_type == "durapipe.ConditionFailed"
    assert "'big', whose outcome is 'fail'" in caught.value.cause
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(pipeline, "pick", {"n": 3})
    assert caught.value.cause_type == "durapipe.NoOutcome"
    assert "the value 'false'" in caught.value.cause and "there is no default" in caught.value.cause


async def test_binding_step_copies_a_path_without_a_step_record() -> None:
    both = dp.parallel("both", inputs={"n": int}, branches={"sq": dp.tool(square)})
    seq = dp.sequence(
        "seq",
        inputs={"n": int},
        steps=[
            both,
            dp.bind("both.sq", result="value"),
            dp.step(dp.tool(negate), inputs={"n": "value"}),
        ],
    )
    result = await dp.run_local(dp.pipeline(seq), "seq", {"n": 5})
    assert result.output == -25
    assert [s.path for s in result.steps] == ["both", "both/sq", "negate"]


async def test_a_nested_local_run_serves_memoised_steps_from_the_checkpoint_store() -> None:
    inner = dp.sequence("inner", inputs={"n": int}, steps=[dp.step(dp.tool(counted, memoize=True))])
    outer = dp.pipeline(dp.sequence("outer", inputs={"n": int}, steps=[dp.step(inner)]))
    n = random.randrange(10**9)  # a value no earlier run memoised
    first = await dp.run_local(outer, "outer", {"n": n})
    second = await dp.run_local(outer, "outer", {"n": n})
    assert first.output == second.output == n
    assert control_tools.CALLED.count(n) == 1
    assert [s.cache_hit for s in second.steps if s.kind == "tool"] == [True]
