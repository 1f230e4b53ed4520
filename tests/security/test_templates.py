"""Known Jinja2 sandbox escapes are refused with the pipe and field named, never executed."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

import durapipe as dp
from durapipe.activities._llm import messages_for
from durapipe.runtime import LlmCall

STATIC_ESCAPES = {
    "{{ ''.__class__.__mro__[1].__subclasses__() }}": "access to '__class__'",
    "{{ cycler.__init__.__globals__ }}": "access to '__init__'",
    "{{ self._TemplateReference__context }}": "access to '_TemplateReference__context'",
    "{% include '/etc/passwd' %}": "'include' is not allowed",
    "{% import '/etc/passwd' as p %}": "'import' is not allowed",
    "{% extends '/etc/passwd' %}": "'extends' is not allowed",
    "{{ lipsum.__globals__ }}": "access to '__globals__'",
    "{{ text['__class__'] }}": "access to '__class__'",
    "{{ config.items() }}": "template variable 'config' is not a declared input",
    "{{ request.application }}": "template variable 'request' is not a declared input",
}


@pytest.mark.parametrize("template", list(STATIC_ESCAPES))
def test_escapes_are_refused_at_validation_naming_pipe_and_field(template: str) -> None:
    pipe = dp.llm("leaky", inputs={"text": str}, prompt="{{ text }}", system=template)
    with pytest.raises(dp.PipelineError) as raised:
        dp.validate(dp.pipeline(pipe))
    problems = [str(p) for p in raised.value.problems if "field 'system'" in p.where]
    assert problems and all(p.startswith("pipe 'leaky', field 'system'") for p in problems)
    assert any(STATIC_ESCAPES[template] in p for p in problems), problems


RENDER_ESCAPES = [
    "{{ '{0.__class__}'.format(text) }}",
    "{{ '{x.__class__.__mro__}'.format_map({'x': text}) }}",
    "{{ text.upper.__self__ }}",
    "{{ items.append(1) }}",
    "{{ items.pop() }}",
]


@pytest.mark.parametrize("template", RENDER_ESCAPES)
def test_escapes_the_sandbox_sees_only_at_render_fail_the_step_naming_pipe_and_field(
    template: str,
) -> None:
    # Built without validation, as a spec edited by hand in history would be.
    pipe = dp.spec.LlmPipe(inputs={"text": "text", "items": "list[integer]"}, prompt=template)
    call = LlmCall(
        run_id="r", path="p", pipe_name="leaky", pipe=pipe, inputs={"text": "t", "items": [1]}
    )
    with pytest.raises(ApplicationError) as raised:
        messages_for(call)
    assert raised.value.type == "durapipe.TemplateError" and raised.value.non_retryable
    assert raised.value.message.startswith("pipe 'leaky', field 'prompt': template ")
    assert "<class" not in str(raised.value)  # nothing was executed and shown
