"""A compose pipe's ``from`` paths are checked against its inputs' types when the pipeline loads:
a path into a value with no such field is refused then, naming the pipe, the field and the path,
instead of failing the step when it runs."""

from __future__ import annotations

from typing import Any

import pytest

import durapipe as dp
from durapipe.spec import check

STRUCTURES = {
    "Skill": {"fields": {"name": "text", "years": "integer"}},
    "Analysis": {
        "fields": {
            "score": "number",
            "summary": "text",
            "top": "Skill",
            "skills": "list[Skill]",
            "note": {"type": "Skill", "optional": True},
        }
    },
    "Sheet": {"fields": {"value": "any"}},
}
INPUTS = {
    "analysis": "Analysis",
    "skills": "list[Skill]",
    "page": "Page",
    "memo": "any",
    "maybe": "optional[Analysis]",
    "verdict": "text",
}


def _problems(build: dict[str, Any]) -> list[str]:
    pipeline = dp.Pipeline.model_validate(
        {
            "structures": STRUCTURES,
            "pipes": {
                "sheet": {"kind": "compose", "inputs": INPUTS, "build": build, "output": "Sheet"}
            },
        }
    )
    return [f"{p.where}: {p.message}" for p in check(pipeline)]


@pytest.mark.parametrize(
    "read",
    [
        {"from": "analysis.score"},
        {"from": "analysis.top.years"},  # a nested structure's field
        {"from": "analysis.note.name"},  # through an optional field
        {"from": "maybe.top.name"},  # an optional input
        {"from": "analysis.skills"},  # a list, whole
        {"from": "skills", "list_to_dict_keyed_by": "name"},
        {"from": "analysis.skills", "list_to_dict_keyed_by": "name"},
        {"from": "page.text"},  # a built-in's field
        {"from": "memo.anything.at.all"},  # a value of unknown shape
    ],
)
def test_a_path_its_input_holds_is_accepted(read: dict[str, Any]) -> None:
    # Each input is read somewhere, so the only problem could be this path.
    assert _problems({"value": read}) == []


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (
            {"from": "verdict.score"},
            "'verdict.score' reads nothing: 'verdict' is text, which has no field 'score'",
        ),
        (
            {"from": "analysis.scor"},
            "'analysis.scor' reads nothing: 'analysis' is Analysis, which has no field 'scor' "
            "(did you mean 'score'?)",
        ),
        (
            {"from": "analysis.top.level"},
            "'analysis.top.level' reads nothing: 'analysis.top' is Skill, which has no field "
            "'level'",
        ),
        (
            {"from": "analysis.summary.text"},
            "'analysis.summary.text' reads nothing: 'analysis.summary' is text, which has no "
            "field 'text'",
        ),
        (
            {"from": "skills.name"},
            "'skills.name' reads nothing: 'skills' is list[Skill], which has no field 'name' "
            "(a list has no fields: read it whole, or map a pipe over it)",
        ),
        (
            {"from": "analysis.skills.years"},
            "'analysis.skills.years' reads nothing: 'analysis.skills' is list[Skill], which has "
            "no field 'years' (a list has no fields",
        ),
        (
            {"from": "page.number"},
            "'page.number' reads nothing: 'page' is Page, which has no field 'number'",
        ),
        (
            {"from": "skills", "list_to_dict_keyed_by": "title"},
            "list_to_dict_keyed_by 'title': in 'skills', 'each item' is Skill, which has no "
            "field 'title'",
        ),
        (
            {"from": "analysis.top", "list_to_dict_keyed_by": "name"},
            "list_to_dict_keyed_by 'name' keys a list, and 'analysis.top' is Skill",
        ),
    ],
)
def test_a_path_into_a_value_without_that_field_is_refused(
    read: dict[str, Any], expected: str
) -> None:
    problems = _problems({"value": read})
    assert len(problems) == 1, problems
    assert problems[0].startswith("pipe 'sheet', field 'build.value': " + expected), problems


def test_a_nested_field_is_named_with_its_path_and_every_bad_read_is_reported() -> None:
    build = {
        "value": {"head": {"from": "analysis.score"}, "tail": {"from": "verdict.x"}},
        "other": {"from": "analysis.nope"},
    }
    problems = _problems(build)
    assert [p.split(": ")[0] for p in problems] == [
        "pipe 'sheet', field 'build.value.tail'",
        "pipe 'sheet', field 'build.other'",
    ]


def test_an_undeclared_root_is_reported_once() -> None:
    assert _problems({"value": {"from": "ghost.field"}}) == [
        "pipe 'sheet', field 'build.value': 'ghost' is not a declared input "
        f"(declared: {', '.join(INPUTS)})"
    ]
