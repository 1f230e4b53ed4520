"""Structured outputs: declared structures (choices, nesting, optional, defaults) and multiplicity."""

from __future__ import annotations

import pydantic
import pytest
from pydantic import BaseModel, conlist

import durapipe as dp
from durapipe.spec import _types
from durapipe.spec import check as _check

STRUCTURES = dp.load_yaml(
    """
structures:
  Item:
    fields:
      name: text
      rating: {type: integer, choices: [1, 2, 3]}
      quantity: {type: integer, default: 1}
      note: {type: text, optional: true}
  Order:
    fields:
      items: list[Item]
      tags: {type: 'list[text]', default: []}
"""
).structures


def test_integer_choices_are_enforced_and_in_the_schema() -> None:
    schema = _types.json_schema("Item", STRUCTURES)
    assert schema["properties"]["rating"]["enum"] == [1, 2, 3]
    assert _types.validate("Item", STRUCTURES, {"name": "a", "rating": 2})["rating"] == 2
    with pytest.raises(pydantic.ValidationError):
        _types.validate("Item", STRUCTURES, {"name": "a", "rating": 4})


def test_defaults_fill_missing_fields_and_optional_fields_may_be_null() -> None:
    item = _types.validate("Item", STRUCTURES, {"name": "a", "rating": 1})
    assert item == {"name": "a", "rating": 1, "quantity": 1, "note": None}
    assert "quantity" not in _types.json_schema("Item", STRUCTURES)["required"]
    with pytest.raises(pydantic.ValidationError):
        _types.validate("Item", STRUCTURES, {"name": "a", "rating": 1, "quantity": None})


def test_nested_structures_in_lists_are_validated() -> None:
    order = _types.validate("Order", STRUCTURES, {"items": [{"name": "a", "rating": 3}]})
    assert order == {
        "items": [{"name": "a", "rating": 3, "quantity": 1, "note": None}],
        "tags": [],
    }
    with pytest.raises(pydantic.ValidationError):
        _types.validate("Order", STRUCTURES, {"items": [{"name": "a", "rating": 9}]})


def test_exactly_n_is_in_the_schema_and_enforced() -> None:
    schema = _types.json_schema("list[Item, 3]", STRUCTURES)
    assert (schema["minItems"], schema["maxItems"]) == (3, 3)
    one = {"name": "a", "rating": 1}
    assert len(_types.validate("list[Item, 3]", STRUCTURES, [one] * 3)) == 3
    with pytest.raises(pydantic.ValidationError):
        _types.validate("list[Item, 3]", STRUCTURES, [one] * 2)


class Claim(BaseModel):
    text: str


def test_python_spelling_of_exactly_n_is_conlist() -> None:
    from_python = dp.llm(
        "three", prompt="Three claims.", output=conlist(Claim, min_length=3, max_length=3)
    )
    assert from_python.spec.output == "list[Claim, 3]"  # type: ignore[union-attr]


async def test_the_model_is_asked_for_exactly_n_and_returns_n() -> None:
    pipeline = dp.pipeline(
        dp.llm("three", prompt="Three claims.", output=conlist(Claim, min_length=3, max_length=3))
    )
    result = await dp.run_local(pipeline, "three", {})
    assert len(result.output) == 3 and all(set(c) == {"text"} for c in result.output)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "structures: {S: {fields: {n: {type: integer, choices: [1, two]}}}}",
            "structure 'S', field 'n': choice 'two' is not of the field's type integer",
        ),
        (
            "structures: {S: {fields: {n: {type: integer, default: many}}}}",
            "structure 'S', field 'n': default 'many' is not of the field's type integer",
        ),
        (
            "structures: {S: {fields: {n: {type: text, choices: [a, b], default: c}}}}",
            "structure 'S', field 'n': default 'c' is not one of the choices ['a', 'b']",
        ),
        (
            "structures: {Page: {fields: {n: text}}}",
            "structure 'Page': 'Page' is a built-in type; give the structure another name",
        ),
        (
            "pipes: {p: {kind: llm, prompt: hi, output: 'list[text, 0]'}}",
            "pipe 'p', field 'output': 'list[text, 0]': the length after the comma must be a whole number >= 1",
        ),
        (
            "pipes: {read: {kind: extract, inputs: {a: document, b: text}}}",
            "pipe 'read', field 'inputs': an extract pipe reads exactly one input of type document, "
            "image or file (declared: a: document, b: text)",
        ),
        (
            "pipes: {read: {kind: extract, inputs: {a: text}}}",
            "pipe 'read', field 'inputs': an extract pipe reads exactly one input of type document, "
            "image or file (declared: a: text)",
        ),
        (
            "pipes: {cover: {kind: image, inputs: {topic: text}, prompt: '{{ topic }} {{ subject }}'}}",
            "pipe 'cover', field 'prompt': template variable 'subject' is not a declared input (declared: topic)",
        ),
        (
            "pipes: {read: {kind: extract, inputs: {d: document}, model: fsat}}",
            "pipe 'read', field 'model': model 'fsat' is neither a declared alias (none declared) "
            "nor a provider/model string such as openai/gpt-4o-mini",
        ),
        # A fallback is a model too: without its provider a `provider:` limit or routing rule
        # would never see it (litellm still sends gpt-4o-mini to OpenAI).
        (
            "pipes: {ask: {kind: llm, prompt: hi, model: openai/gpt-4o, fallbacks: [gpt-4o-mini]}}",
            "pipe 'ask', field 'fallbacks': model 'gpt-4o-mini' is neither a declared alias (none "
            "declared) nor a provider/model string such as openai/gpt-4o-mini",
        ),
        (
            "pipes: {read: {kind: extract, inputs: {d: document}, fallbacks: [durapipe/local, fsat]}}",
            "pipe 'read', field 'fallbacks': model 'fsat' is neither a declared alias (none declared) "
            "nor a provider/model string such as openai/gpt-4o-mini",
        ),
        (
            "pipes: {draw: {kind: image, prompt: hi, fallbacks: [dall-e-3]}}",
            "pipe 'draw', field 'fallbacks': model 'dall-e-3' is neither a declared alias (none "
            "declared) nor a provider/model string such as openai/gpt-4o-mini",
        ),
    ],
)
def test_mistakes_in_structures_and_operators_are_named(yaml_text: str, expected: str) -> None:
    with pytest.raises(dp.PipelineError) as caught:
        dp.validate(dp.load_yaml(yaml_text))
    assert [str(p) for p in caught.value.problems] == [expected]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "pipes: {cover: {kind: image, prompt: hi, size: big}}",
            "<yaml>:1: pipe 'cover': field 'size': String should match pattern",
        ),
        (
            "pipes: {read: {kind: extract, inputs: {d: document}, output: Invoice}}",
            "<yaml>:1: pipe 'read': field 'output': Input should be 'list[Page]' or 'text'",
        ),
        (
            "pipes: {read: {kind: extract, inputs: {d: document}, pages: 3}}",
            "<yaml>:1: pipe 'read': unknown field 'pages'",
        ),
    ],
)
def test_shape_mistakes_in_operators_are_named(yaml_text: str, expected: str) -> None:
    with pytest.raises(dp.PipelineError) as caught:
        dp.load_yaml(yaml_text)
    assert len(caught.value.problems) == 1
    assert str(caught.value.problems[0]).startswith(expected)


def test_invoice_yaml_and_python_spellings_produce_the_same_spec() -> None:
    from tests.conftest import EXAMPLES

    from_yaml = dp.load(EXAMPLES / "invoice.yaml")
    assert from_yaml.model_dump() == dp.load(EXAMPLES / "invoice.py").model_dump()
    assert from_yaml.structures["LineItem"].fields["quantity"].default == 1


async def test_an_optional_input_is_the_same_in_yaml_and_python_and_may_be_left_out() -> None:
    assert _types.type_ref(str | None, {}) == "optional[text]"
    assert _types.validate("optional[list[text]]", {}, None) is None
    assert _types.is_assignable("text", "optional[text]")
    assert _types.is_assignable("optional[text]", "text")
    pipeline = dp.load_yaml(
        """
default_model: durapipe/offline
pipes:
  greet:
    kind: llm
    inputs: {name: text, title: 'optional[text]'}
    prompt: "Greet {% if title %}{{ title }} {% endif %}{{ name }}."
  welcome:
    kind: sequence
    inputs: {name: text}
    steps:
      - {pipe: greet, result: greeting}
"""
    )
    assert dp.spec.check_inputs(pipeline, "greet", {"name": "Ada"}) == {
        "name": "Ada",
        "title": None,
    }
    # Nothing in the sequence holds `title`: the step reads null rather than failing.
    run = await dp.run_local(pipeline, "welcome", {"name": "Ada"})
    assert run.output.startswith("Offline answer: Greet Ada."), run.output


def test_a_refined_structure_flows_where_its_parent_is_declared_and_no_other() -> None:
    structures = {
        "Choice": _types.StructureSpec(fields={"choice": "text"}),
        "Pick": _types.StructureSpec(fields={"choice": "text"}, refines="Choice"),
        "Other": _types.StructureSpec(fields={"choice": "text"}),
    }
    pipes = {
        "pick": {"kind": "llm", "prompt": "x", "output": "Pick"},
        "other": {"kind": "llm", "prompt": "x", "output": "Other"},
        "read": {"kind": "llm", "inputs": {"c": "Choice"}, "prompt": "{{ c.choice }}"},
    }
    for first, fits in (("pick", True), ("other", False)):
        sequence = {
            "kind": "sequence",
            "steps": [{"pipe": first, "result": "c"}, {"pipe": "read", "result": "r"}],
            "output": "r",
        }
        spec = dp.Pipeline.model_validate(
            {"structures": structures, "pipes": {**pipes, "flow": sequence}}
        )
        problems = _check(spec)
        assert (not problems) == fits, problems
    unknown = dp.Pipeline.model_validate(
        {
            "structures": {"Pick": _types.StructureSpec(fields={"c": "text"}, refines="Nope")},
            "pipes": {},
        }
    )
    assert any("'Nope' is not a structure" in p.message for p in _check(unknown))


def test_a_structure_that_refines_none_dumps_as_before() -> None:
    assert "refines" not in STRUCTURES["Item"].model_dump()
    narrowed = _types.StructureSpec(fields={"c": "text"}, refines="Item")
    assert narrowed.model_dump(mode="json")["refines"] == "Item"


_NOTE = {"type": "text", "choices": ["fine"]}


@pytest.mark.parametrize(
    ("child", "fault"),
    [
        ({"note": _NOTE}, "has no field 'ok'"),
        ({"ok": "text", "note": _NOTE}, "refines 'Verdict', but its field 'ok' holds text"),
        ({"ok": "boolean", "note": "integer"}, "its field 'note' holds integer"),
        (
            {"ok": "boolean", "note": {"type": "text", "choices": ["fine", "late"]}},
            "allows values 'Verdict'.note does not",
        ),
        ({"ok": {"type": "boolean", "optional": True}, "note": _NOTE}, "'ok' is optional"),
        ({"ok": "boolean", "note": _NOTE, "extra": "text"}, "adds field 'extra'"),
    ],
)
def test_a_refining_structure_must_carry_its_parents_fields(
    child: dict[str, object], fault: str
) -> None:
    structures = {
        "Verdict": {
            "fields": {"ok": "boolean", "note": {"type": "text", "choices": ["fine", "bad"]}}
        },
        "Strict": {"fields": child, "refines": "Verdict"},
    }
    problems = _check(dp.Pipeline.model_validate({"structures": structures, "pipes": {}}))
    assert [p.where for p in problems] == ["structure 'Strict', field 'refines'"], problems
    assert fault in problems[0].message and "'Strict'" in problems[0].message


def test_a_refining_structure_may_narrow_its_parents_fields() -> None:
    structures = {
        "Grade": {"fields": {"level": "integer"}},
        "Pass": {"fields": {"level": {"type": "integer", "choices": [0, 1]}}, "refines": "Grade"},
        "Report": {"fields": {"grade": "Grade", "score": "number", "why": "optional[text]"}},
        "Short": {
            "fields": {"grade": "Pass", "score": "integer", "why": "text"},
            "refines": "Report",
        },
    }
    assert _check(dp.Pipeline.model_validate({"structures": structures, "pipes": {}})) == []


class Answer(BaseModel):
    """A yes or no."""

    yes: bool
    why: str = ""


class Firm(Answer):
    """A yes or no that says why."""

    why: str


class Detailed(Answer):
    """A yes or no with a score: an extension, not a refinement."""

    score: int


def test_a_pydantic_subclass_declaring_no_field_of_its_own_refines_its_base() -> None:
    structures: _types.Structures = {}
    assert _types.type_ref(Firm, structures) == "Firm"
    assert structures["Firm"].refines == "Answer"
    assert structures["Answer"].refines is None and set(structures["Answer"].fields) == {
        "yes",
        "why",
    }
    assert _types.is_assignable("Firm", "Answer", structures)
    assert not _types.is_assignable("Answer", "Firm", structures)
    _types.type_ref(Detailed, structures)
    assert structures["Detailed"].refines is None
    assert not _types.is_assignable("Detailed", "Answer", structures)


def test_a_python_pipe_reading_the_base_takes_the_subclass() -> None:
    firm = dp.llm("firm", prompt="Is it? {{ q }}", inputs={"q": str}, output=Firm)
    read = dp.llm("read", prompt="{{ a.yes }}", inputs={"a": Answer})
    flow = dp.sequence(
        "flow", steps=[dp.step(firm, result="a"), dp.step(read, result="r")], inputs={"q": str}
    )
    pipeline = dp.pipeline(flow)
    assert pipeline.structures["Firm"].refines == "Answer"
    assert _check(pipeline) == []
