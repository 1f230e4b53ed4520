"""An output type's JSON Schema is built once per type and structures, and each caller gets its own."""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel

from durapipe.activities._llm import response_format
from durapipe.spec import _types


class Verdict(BaseModel):
    label: str
    score: float


class Verdict2(BaseModel):
    label: str
    reasons: list[str]


def built_now(ref: str, structures: _types.Structures) -> dict[str, Any]:
    """The schema as it was built before it was cached: a new type adapter per call."""
    return pydantic.TypeAdapter(_types.annotation(ref, structures)).json_schema()


def structures_of(model: type[BaseModel], name: str = "Verdict") -> _types.Structures:
    structures: _types.Structures = {}
    _types.type_ref(model, structures)
    return {name: next(iter(structures.values()))}


def test_each_type_and_structures_get_their_own_schema() -> None:
    # Two pipes' outputs, and one structure edited under the same name: never each other's schema.
    first, edited = structures_of(Verdict), structures_of(Verdict2)
    for ref in ("Verdict", "list[Verdict]", "integer", "list[text, 3]"):
        for structures in (first, edited):
            assert _types.json_schema(ref, structures) == built_now(ref, structures)
    assert _types.json_schema("Verdict", first) != _types.json_schema("Verdict", edited)
    assert "reasons" in str(_types.json_schema("Verdict", edited))
    assert "score" in str(_types.json_schema("Verdict", first))


def test_a_caller_changing_its_schema_does_not_change_the_next_callers() -> None:
    structures = structures_of(Verdict)
    fmt, wrap = response_format("list[Verdict]", structures)  # moves "$defs" out of the schema
    assert wrap == "items"
    assert response_format("list[Verdict]", structures) == (fmt, wrap)
    schema = _types.json_schema("list[Verdict]", structures)
    schema.clear()
    assert _types.json_schema("list[Verdict]", structures) == built_now("list[Verdict]", structures)
