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
