"""Issue 15, item 3: templates and condition expressions render within loop, size and time bounds."""

from __future__ import annotations

import asyncio
import time

import pytest
from temporalio.exceptions import ApplicationError

import durapipe as dp
from durapipe.activities._llm import messages_for
from durapipe.runtime import LlmCall
from durapipe.spec import render

HOSTILE = {
    "{% for x in range(10**9) %}{% endfor %}": "range() of 1000000000 numbers",
    "{{ 'a' * 10**10 }}": "'*' would add",
    "{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}": "operations",
    "{{ 'x'.ljust(10**9) }}": "'ljust' would add",
    "{{ '%999999999s' % 1 }}": "format width",
    "{{ '{:>999999999}'.format(1) }}": "format width",
    "{{ text|indent(100000) }}": "'indent' would add",
    "{{ text|replace('', 'xxxxxxxxxx') }}": "'replace' would add",
    "{{ xs|join('x' * 100000) }}": "'join' would add",
    "{{ 10 ** 100000 }}": "'**' would build",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}": "recursed too deeply",
    # Each operation within its own growth bound, the values they make together past any: a
    # width read from an argument, one document held many times over then flattened, text
    # joined inside a block (which the output's bound never sees). Each built gigabytes before.
    "{{ '{:{}}'.format(1, 999999999) }}": "width may not come from an argument",
    "{{ ([text] * 1000)|join }}": "'join' would build",
    "{{ ''.join([text] * 1000) }}": "'join' would build",
    "{{ ([text] * 1000)|string }}": "'string' would build",
    "{{ ([text] * 1000)|tojson }}": "'tojson' would build",
    "{{ ('%s' * 1000) % ([text] * 1000) }}": "'%' would build",
    "{{ " + " ~ ".join(["text"] * 40) + " }}": "'~' would build",
    "{% set a = text %}" + "{% set a = a + a %}" * 6 + "{{ a }}": "'+' would build",
    "{% set s %}{% for x in xs %}{{ text }}{% endfor %}{% endset %}{{ s|length }}": "in all",
    "{% macro m() %}{% for x in xs %}{{ text }}{% endfor %}{% endmacro %}{{ m()|length }}": "in all",
}
INPUTS = {"xs": list(range(10_000)), "text": "line\n" * 200_000}


@pytest.mark.parametrize("template", list(HOSTILE))
def test_a_hostile_template_fails_its_step_at_once_naming_pipe_and_field(template: str) -> None:
    pipe = dp.spec.LlmPipe(inputs={"xs": "list[integer]", "text": "text"}, prompt=template)
    call = LlmCall(run_id="r", path="p", pipe_name="bomb", pipe=pipe, inputs=INPUTS)
    started = time.perf_counter()
    with pytest.raises(ApplicationError) as raised:
        messages_for(call)
    assert time.perf_counter() - started < 2.0  # refused at once (a shared machine: not 0.1 s)
    assert raised.value.type == "durapipe.TemplateError" and raised.value.non_retryable
    assert raised.value.message.startswith("pipe 'bomb', field 'prompt': ")
    assert HOSTILE[template] in raised.value.message


def test_ordinary_templates_still_render() -> None:
    template = (
        "{{ '{:>6}'.format(n) }}|{{ '%5.2f' % 3.14159 }}|{{ xs|join(', ') }}|{{ 'ab' * 3 }}|"
        "{{ 2 ** 10 }}|{% for i in range(3) %}{{ i }}{% endfor %}|{{ doc|replace('\n', ' ')|length }}"
    )
    doc = "a long document\n" * 300_000  # 4.8 MB: a prompt may quote a whole document
    out = render(template, {"n": 1, "xs": [1, 2], "doc": doc})
    assert out == f"     1| 3.14|1, 2|ababab|1024|012|{len(doc)}"


def test_a_condition_expression_joins_within_the_same_bound() -> None:
    # Expressions compile apart from templates (and render inside workflows): `~` is bounded there.
    many = " ~ ".join(["text"] * 40)
    with pytest.raises(dp.spec.TemplateError, match="'~' would build"):
        dp.spec.evaluate(f"({many})|length", {"text": "x" * 1_000_000})
    assert dp.spec.evaluate("(a ~ '-' ~ b)|length", {"a": "xy", "b": "z"}) == 4


CONDITION = """
pipes:
  gate:
    kind: condition
    inputs: {{n: integer}}
    expression: "{expression}"
    outcomes: {{"true": noop, "false": noop}}
  noop:
    kind: llm
    inputs: {{n: integer}}
    prompt: "n is {{{{ n }}}}"
"""


async def test_a_hostile_condition_fails_its_run_without_stalling_the_worker(
    temporal_address: str, task_queue: str
) -> None:
    # A CPU bomb in an expression that renders inside the workflow: sum over 10^8 numbers.
    hostile = dp.load_yaml(CONDITION.format(expression="(range(10 ** 8) | sum) > n"))
    plain = dp.load_yaml(CONDITION.format(expression="n > 0"))
    client = await dp.connect(temporal_address, pipeline=plain)
    async with dp.build_worker(client, task_queue=task_queue):
        started = time.perf_counter()
        bomb = await dp.start(client, hostile, "gate", {"n": 1}, task_queue=task_queue)
        ordinary = await dp.start(client, plain, "gate", {"n": 1}, task_queue=task_queue)
        outcomes = await asyncio.gather(bomb.result(), ordinary.result(), return_exceptions=True)
        elapsed = time.perf_counter() - started
    failed, done = outcomes
    assert isinstance(failed, dp.StepFailed), failed
    assert failed.cause_type == "durapipe.ExpressionError"
    assert "range() of 100000000 numbers" in failed.cause
    assert isinstance(done, dp.RunResult), done
    assert elapsed < 10
