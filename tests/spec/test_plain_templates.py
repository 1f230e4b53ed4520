"""Plain templates (literal text and ``{{ name }}``) render without running Jinja, to the same text."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from durapipe.spec import TemplateError, render
from durapipe.spec._sandbox import MAX_OUTPUT, bounded_render
from durapipe.spec._templates import _compile, _plain_pieces, _plain_render

PLAIN = [
    "",
    "Name a colour.",
    "{{ question }}",
    "Summarise:\n{{ text }}\nin {{ style }} style.\n",
    "{{ text }}{{ style }}",
    "  {{- text -}}  \n\n{{ style }}",
    "a {# a comment #}{{ text }}{% raw %}{{ not_a_name }}{% endraw %}",
    "{{ text }}\n",
    "{{ range }}",
]
VALUES: list[dict[str, Any]] = [
    {"question": "What is it?", "text": "word " * 50, "style": "plain", "range": "r"},
    {"question": "", "text": "quotes \" ' {{ x }} {% y %} \u00e9 \U0001f600", "style": "\n"},
]


@pytest.mark.parametrize("source", PLAIN)
def test_a_plain_template_renders_as_jinja_renders_it(source: str) -> None:
    assert _plain_pieces(source) is not None  # the fast way is the one taken
    for values in VALUES:
        fast = _plain_render(source, values)
        names = {text for is_name, text in _plain_pieces(source) or () if is_name}
        if not names <= values.keys():
            assert fast is None
            continue
        assert fast == bounded_render(_compile(source), values, None)
        assert render(source, values) == fast


@pytest.mark.parametrize(
    "source",
    [
        "{{ text | upper }}",
        "{{ text.strip() }}",
        "{% if text %}{{ text }}{% endif %}",
        "{% for w in words %}{{ w }}{% endfor %}",
        "{{ text ~ style }}",
        "{{ 'literal' }}",
        "{{ text",
    ],
)
def test_any_other_template_takes_the_full_render(source: str) -> None:
    assert _plain_pieces(source) is None


@pytest.mark.parametrize(
    "values",
    [
        {"text": 42},  # not a str: Jinja's str() of it
        {"text": ["a", "b"]},
        {"text": None},
        {"other": "x"},  # undefined: the full render words the error
        {"text": "x", 1: "a key Jinja refuses"},
    ],
    ids=["int", "list", "none", "undefined", "non-str-key"],
)
def test_values_that_are_not_plain_strings_take_the_full_render(values: dict[Any, Any]) -> None:
    assert _plain_render("Say {{ text }}.", values) is None
    try:
        expected: str | type[TemplateError] = bounded_render(_compile("Say {{ text }}."), values, 1)
    except Exception:
        expected = TemplateError
    if expected is TemplateError:
        with pytest.raises(TemplateError):
            render("Say {{ text }}.", values, seconds=1)
    else:
        assert render("Say {{ text }}.", values, seconds=1) == expected


def test_output_past_the_bound_is_refused_as_before() -> None:
    big = "x" * (MAX_OUTPUT // 2 + 1)
    assert _plain_render("{{ a }}{{ b }}", {"a": big, "b": big}) is None
    with pytest.raises(TemplateError, match="template output went past"):
        render("{{ a }}{{ b }}", {"a": big, "b": big})


def test_output_past_the_bound_is_never_built() -> None:
    # A client's template may repeat a big input: the bound is checked piece by piece, before
    # anything is joined, so refusing it costs no more memory than the input itself.
    big = "x" * (1024 * 1024)
    source = "{{ x }}\n" * (MAX_OUTPUT // len(big) + 8)
    tracemalloc.start()
    try:
        assert _plain_render(source, {"x": big}) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(big)


def test_a_template_of_many_pieces_keeps_the_operation_bound() -> None:
    # The full render counts one operation per piece it outputs; a plain template with more
    # pieces than the fast path takes is rendered (and bounded) by it. This one is refused
    # sooner: its 300,003 tokens are more than a template is read with.
    with pytest.raises(TemplateError, match=r"operations|more than 10,000 tokens"):
        render("{{ x }}," * 100_001, {"x": "y"})


def test_self_is_jinjas_template_reference_not_a_value() -> None:
    values = {"self": "hello"}
    assert _plain_pieces("{{ self }}") is None
    assert render("{{ self }}", values) == bounded_render(_compile("{{ self }}"), values, None)


def test_a_changed_template_renders_the_new_text_not_the_cached_one() -> None:
    # The pieces are cached by the template's text: two pipes' templates, and one edited, never
    # get each other's.
    values = {"question": "q1", "topic": "t1"}
    assert render("Ask: {{ question }}", values) == "Ask: q1"
    assert render("Tell: {{ topic }}", values) == "Tell: t1"
    assert render("Ask: {{ question }}!", values) == "Ask: q1!"
    assert render("Ask: {{ topic }}", values) == "Ask: t1"
    assert render("Ask: {{ question }}", {"question": "q2"}) == "Ask: q2"
