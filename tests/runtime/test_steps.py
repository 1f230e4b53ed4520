"""The count behind a worker's cap on one run (`RunSize`) and the allowance a part of a run holds
(`Steps`): pure code, checked without Temporal (the dev-server tests are tests/security/test_run_size.py)."""

from __future__ import annotations

import time

import pytest

import durapipe as dp
from durapipe.runtime._steps import Steps
from durapipe.spec._size import RunSize
from durapipe.spec._spec import BatchPipe
from tests.support import LISTED_BATCH, SQUARE_TOOL

PIPES = """
pipes:
  leaf:
    kind: tool
    function: tests.control_tools:square
    inputs: {n: integer}
    output: integer
  two:
    kind: sequence
    inputs: {n: integer}
    steps:
      - {pipe: leaf, result: a}
      - {pipe: leaf, inputs: {n: a}}
  pick:
    kind: condition
    inputs: {n: integer}
    expression: "n > 3"
    outcomes: {"true": two, "false": leaf}
    default: continue
  each:
    kind: batch
    inputs: {numbers: 'list[integer]'}
    over: numbers
    item: n
    pipe: pick
  both:
    kind: parallel
    inputs: {n: integer, numbers: 'list[integer]'}
    branches: {a: pick, b: each}
"""


def test_a_run_counts_every_step_a_condition_its_largest_outcome_a_batch_its_items_later() -> None:
    size = RunSize(dp.load_yaml(PIPES))
    assert size.run("leaf") == 1  # a leaf run is its own one step
    assert size.run("two") == 2
    assert size.run("pick") == 3  # the step `two` and its two leaves, not `leaf`'s one
    assert size.run("each") == 0  # its items count when it has read its list
    spec = dp.load_yaml(PIPES)
    batch = spec.pipes["each"]
    assert isinstance(batch, BatchPipe) and size.item(batch) == 4
    assert size.run("both") == (1 + 3) + (1 + 0)
    assert [size.grows(name) for name in ("leaf", "two", "pick", "each", "both")] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_nested_parallels_are_counted_once_per_pipe_not_once_per_leaf() -> None:
    lines = ["pipes:", "  p0: {kind: tool, function: m:f, inputs: {n: integer}}"]
    for level in range(1, 61):
        below = f"p{level - 1}"
        lines.append(
            f"  p{level}: {{kind: parallel, inputs: {{n: integer}}, "
            f"branches: {{a: {below}, b: {below}}}}}"
        )
    size = RunSize(dp.load_yaml("\n".join(lines) + "\n"))
    began = time.perf_counter()
    assert size.run("p60") == 2**61 - 2
    assert time.perf_counter() - began < 0.1


def test_free_steps_are_lent_evenly_to_the_children_that_may_run_at_once() -> None:
    steps = Steps(100, RunSize(dp.load_yaml(PIPES)))
    steps.take(10, "each", "batch", "x")
    steps.lanes = 3
    first, second, third = steps.lend(2), steps.lend(2), steps.lend(2)
    assert [first, second, third] == [(32, 30), (32, 30), (32, 30)]
    steps.repay(2, 30, 12)  # held 10 beyond its share: kept; 20 of its loan free again
    steps.repay(2, 30, None)  # failed, its count unknown: its whole loan is kept
    assert (steps.held, steps.lent) == (10 + 10 + 30, 30)
    assert steps.lend(2) == (2 + 10, 10)  # the 20 free, split between the two free lanes


def test_exact_shares_lend_a_fixed_child_nothing_and_split_the_free_among_growing_ones() -> None:
    # `both`: branch a runs `pick` (fixed, 3 steps inside), b the batch `each` (it may grow).
    steps = Steps(100, RunSize(dp.load_yaml(PIPES)))
    steps.take(5, "both", "parallel", "x")
    steps.lanes, steps.exact = 1, True
    assert steps.lend(3, grows=False) == (3, None)  # its own steps, counted here: no loan
    assert steps.lend(0) == (95, 95)  # all 95 free to the one branch that may grow
    steps.repay(3, None, 3)
    steps.repay(3, None, None)  # a fixed child that failed held no more than its share
    assert (steps.held, steps.lent, steps.loans) == (5, 95, 1)
    before = Steps(100, RunSize(dp.load_yaml(PIPES)))
    before.take(5, "both", "parallel", "x")
    before.lanes = 2  # not exact (a run recorded before): the fixed child takes half the free
    assert [before.lend(3, grows=False), before.lend(0)] == [(3 + 47, 47), (48, 48)]


def test_steps_past_what_is_left_are_refused_naming_what_and_the_setting() -> None:
    steps = Steps(100, RunSize(dp.load_yaml(PIPES)), whole=True)
    steps.take(40, "each", "batch", "x")
    with pytest.raises(dp.StepFailed) as refused:
        steps.take(
            61, "each", "batch", "batch pipe 'each' over the 61 items of 'numbers' would start"
        )
    assert refused.value.cause_type == "durapipe.RunTooLarge"
    assert refused.value.cause == (
        "batch pipe 'each' over the 61 items of 'numbers' would start 61 steps, more than the 60 "
        "left of the 100 steps this worker lets one run start (DURAPIPE_MAX_RUN_STEPS); make the "
        "run smaller, or raise the setting on the workers"
    )
    steps.take(60, "each", "batch", "x")  # exactly what is left
    assert Steps(None, RunSize(dp.load_yaml(PIPES))).lend(5) == (None, 0)  # recorded before: none


WIDE = (
    """
pipes:
  wide:
    kind: parallel
    inputs: {n: integer}
    branches:
%s
      listed: listed
  each:
    kind: batch
    inputs: {numbers: 'list[integer]'}
    over: numbers
    item: n
    pipe: square"""
    + LISTED_BATCH
    + SQUARE_TOOL
)


async def test_leaf_branches_borrow_nothing_so_the_one_nested_run_gets_every_free_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 10 leaf branches + the branch `listed` + its 2 steps hold 13 of 100: its batch, which learns
    # its length at run time, may have the other 87, not an eleventh of them.
    monkeypatch.setenv("DURAPIPE_MAX_RUN_STEPS", "100")
    leaves = "\n".join(f"      leaf{i}: square" for i in range(10))
    pipeline = dp.load_yaml(WIDE % leaves)
    result = await dp.run_local(pipeline, "wide", {"n": 87})
    assert len(result.output["listed"]) == 87
    with pytest.raises(dp.StepFailed, match="would start 88 steps, more than the 87 this nested"):
        await dp.run_local(pipeline, "wide", {"n": 88})
