"""Output types that a few lines of spec make enormous: structures that share a structure (each
with two fields of the next one), lists of lists of exact lengths. Any client can send them, and
a worker checks the types when a run starts (in its workflow) and the offline model builds a value
of them; neither may take time or memory that grows with the size the type describes."""

from __future__ import annotations

import json

import pytest

import durapipe as dp
from durapipe.adapters import pipe_run
from durapipe.spec._types import StructureSpec, parse_type, type_problems
from tests.support import raw_run_failure


def shared_structures(levels: int) -> dict[str, StructureSpec]:
    """``S0`` .. ``S<levels>``, each with two fields of the next: 2^levels paths, ``levels`` + 1
    structures."""
    structures = {
        f"S{i}": StructureSpec(fields={"a": f"S{i + 1}", "b": f"list[S{i + 1}]"})
        for i in range(levels)
    }
    structures[f"S{levels}"] = StructureSpec(fields={"x": "text"})
    return structures


class CountedLookups(dict[str, StructureSpec]):
    """Structures that count how often a check reads one (the work of a walk, load-independent)."""

    lookups = 0

    def __getitem__(self, name: str) -> StructureSpec:
        self.lookups += 1
        return super().__getitem__(name)


def test_structures_that_share_a_structure_are_walked_once() -> None:
    # 15 levels nest 31 deep (each a structure and a list), within the 32 a worker reads.
    structures = CountedLookups(shared_structures(15))
    assert type_problems("S0", structures) == []
    # Two reads per structure (its depth, then loops): walked on every path, 2^16 - 1 each.
    assert structures.lookups == 2 * 16
    # A loop behind the shared structures is still found.
    looped = shared_structures(15)
    looped["S15"] = StructureSpec(fields={"x": "text", "back": "S14"})
    (problem,) = type_problems("S0", looped)
    assert "structure 'S14' refers to itself (S14.a -> S15.back -> S14)" in problem


def pipes(output: str, structures: dict[str, StructureSpec] | None = None) -> dp.Pipeline:
    """One llm pipe on the offline model whose output is ``output``."""
    declared = {name: spec.model_dump() for name, spec in (structures or {}).items()}
    ask = {"kind": "llm", "inputs": {"text": "text"}, "prompt": "{{ text }}", "output": output}
    return dp.load_yaml(json.dumps({"structures": declared, "pipes": {"ask": ask}}))


async def test_the_offline_model_refuses_a_value_it_would_build_without_end(
    temporal_address: str, task_queue: str
) -> None:
    # A million strings, and at least 2^15 objects: each refused before it is built, in one attempt.
    matrix = pipes("list[list[text, 1000], 1000]")
    shared = pipes("S0", shared_structures(15))
    client = await dp.connect(temporal_address)
    async with dp.build_worker(client, task_queue=task_queue):
        for pipeline in (matrix, shared):
            try:
                await dp.run(client, pipeline, "ask", {"text": "x"}, task_queue=task_queue)
            except dp.StepFailed as failed:
                assert failed.cause_type == "durapipe.BadRequest"
                assert "holds more than 100,000 values" in failed.cause
                (record,) = failed.steps
                assert record.attempts == 1
            else:
                raise AssertionError("the run succeeded")


def padded(levels: int) -> str:
    """A type of ``levels`` nested lists around a megabyte of spaces."""
    return "list[" * levels + " " * 1_000_000 + "text" + "]" * levels


def test_a_type_longer_than_any_written_is_refused_before_it_is_read() -> None:
    # Each level read the text below it again: 20 levels took 5 s here, 100 levels 21 s.
    with pytest.raises(ValueError, match="1,000,124 characters long; a type may be at most 1,000"):
        parse_type(padded(20))


async def test_a_raw_spec_with_a_padded_type_fails_at_once(
    temporal_address: str, task_queue: str
) -> None:
    data = pipe_run(pipes("text"), "ask", {"text": "x"}).model_dump(mode="json")
    data["spec"]["pipes"]["ask"]["inputs"]["text"] = padded(300)
    failure = await raw_run_failure(temporal_address, data, task_queue)
    assert failure.cause_type == "durapipe.InvalidSpec"
    assert failure.cause.startswith("pipe 'ask', input 'text': 'list[list[")
    assert "a type may be at most 1,000" in failure.cause
