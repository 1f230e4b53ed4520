"""Reading a template or an expression is bounded too, not only rendering it: parsing and compiling
cost about 70 us a token, before any render bound applies, and Jinja walks its trees recursively.
A condition's expression is compiled inside its run's workflow, a prompt in an activity."""

from __future__ import annotations

import time

import pytest

import durapipe as dp
from durapipe.adapters import pipe_run
from durapipe.spec._templates import TemplateError, evaluate, render, variables
from tests.support import raw_run_failure

HOSTILE = {
    # 1.4 MB, 400,000 tokens: 27 s to compile here.
    "a long list": "[" + ",".join(["x"] * 200_000) + "]|length",
    # Each overflowed the recursion of Jinja's parser, code generator or tree walks.
    "150 brackets": "(" * 150 + "x" + ")" * 150,
    "400 conditionals": " if x else ".join(["x"] * 400),
    "2,000 filters": "x" + "|string" * 2000,
}
CONDITION = """
pipes:
  route:
    kind: condition
    inputs: {x: integer}
    expression: x > 1
    outcomes: {true: continue, false: continue}
"""


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_template_or_expression_too_large_or_deep_to_read_is_one_error(case: str) -> None:
    source = HOSTILE[case]
    started = time.process_time()
    for read in (
        lambda: evaluate(source, {"x": 1}),
        lambda: render("{{ " + source + " }}", {"x": 1}),
        lambda: variables("{{ " + source + " }}"),
    ):
        with pytest.raises(TemplateError, match=r"more than 10,000 tokens|nests too deeply"):
            read()
    assert time.process_time() - started < 5  # the list's lexing stops at the bound


def test_templates_as_written_still_read() -> None:
    assert evaluate(" or ".join(["x"] * 50), {"x": 0}) == 0
    assert render("{{ " + "(" * 40 + "x" + ")" * 40 + " }}", {"x": 1}) == "1"
    assert render("Text " * 100_000 + "{{ x }}", {"x": 1}).endswith("Text 1")


async def test_a_raw_condition_nested_past_reading_fails_its_step(
    temporal_address: str, task_queue: str
) -> None:
    # Its RecursionError failed the workflow task, again on every retry: a run that never ends.
    data = pipe_run(dp.load_yaml(CONDITION), "route", {"x": 2}).model_dump(mode="json")
    data["spec"]["pipes"]["route"]["expression"] = HOSTILE["400 conditionals"]
    failure = await raw_run_failure(temporal_address, data, task_queue)
    assert failure.cause_type == "durapipe.ExpressionError"
    assert "nests too deeply" in failure.cause
