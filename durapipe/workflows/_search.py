"""Run totals as Temporal search attributes: their names, types, and the values a run upserts.

Only top-level runs carry them (a nested pipe's child workflow does not), so a visibility query over
``DurapipePipe`` lists runs, never their parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from durapipe.runtime._calls import WORKFLOW_VERSION, StepRecord, Usage, spent_by
from durapipe.spec._kinds import controller_kinds

PIPE = SearchAttributeKey.for_keyword("DurapipePipe")
COST_USD = SearchAttributeKey.for_float("DurapipeCostUsd")
INPUT_TOKENS = SearchAttributeKey.for_int("DurapipeInputTokens")
OUTPUT_TOKENS = SearchAttributeKey.for_int("DurapipeOutputTokens")
STEPS = SearchAttributeKey.for_int("DurapipeSteps")

# Name -> the type name Temporal's CLI and operator service use ("Keyword", "Double", "Int").
SEARCH_ATTRIBUTES = {
    PIPE.name: "Keyword",
    COST_USD.name: "Double",
    INPUT_TOKENS.name: "Int",
    OUTPUT_TOKENS.name: "Int",
    STEPS.name: "Int",
}

_FINISHED = frozenset({"succeeded", "failed"})


def finished_steps(records: Iterable[StepRecord]) -> int:
    """How many leaf steps (and batch items) have finished, nested runs included.

    Every upsert of a run's totals scans all its records (after every step, once steps take
    2 s or more), so a record's test is a set's: no call per record."""
    controllers = controller_kinds()
    total = 0
    for record in records:
        counts = record.counts
        if counts:
            total += sum(n for status, n in counts.items() if status in _FINISHED)
        elif record.status in _FINISHED and record.kind not in controllers:
            total += 1
    return total


def spent(records: Iterable[StepRecord]) -> Usage:
    """What these step records spent (see `durapipe.runtime._calls.spent_by`)."""
    return spent_by(records)


# Runs started with this `PipeRun.workflow_version` or later carry only their pipe from the start.
PIPE_ONLY_AT_START = 2


class _Key(SearchAttributeKey[Any]):
    """One of the totals' keys with its properties as plain attributes, for the updates a run
    upserts: the SDK reads a key's name, type and Python type several times per attribute while it
    builds the upsert command and updates the workflow's info, and each read of the SDK's own key
    is a Python property (``origin_value_type`` a `typing.get_origin` call). Equal to, and hashing
    as, the SDK's key of the same name and types, so `TypedSearchAttributes.get` finds a value
    under either; the command and the attribute's payload are the same."""

    __slots__ = ("indexed_value_type", "name", "origin_value_type", "value_type")
    name: str
    indexed_value_type: SearchAttributeIndexedValueType
    value_type: type[Any]
    origin_value_type: type

    def __init__(self, key: SearchAttributeKey[Any]) -> None:
        self.name = key.name
        self.indexed_value_type = key.indexed_value_type
        self.value_type = key.value_type
        self.origin_value_type = key.origin_value_type

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchAttributeKey):
            return NotImplemented
        return (self.name, self.indexed_value_type, self.value_type) == (
            other.name,
            other.indexed_value_type,
            other.value_type,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.indexed_value_type, self.value_type))


class _ValueSet(SearchAttributeUpdate[Any]):
    """An update setting ``key`` to ``value``: what ``key.value_set(value)`` returns, made
    without the generic alias that method subscripts on every call (whose call then tries, and
    fails, to set ``__orig_class__`` on a frozen dataclass), and with ``key`` and ``value`` as
    plain attributes, which the SDK reads several times per attribute. The SDK reads only them,
    so the upsert command is the same. With `_Key`, an upsert of the four totals takes ~65k
    instructions fewer of the SDK's ~385k (bench.workflow_instructions)."""

    __slots__ = ("key", "value")
    key: SearchAttributeKey[Any]
    value: Any

    def __init__(self, key: SearchAttributeKey[Any], value: Any) -> None:
        self.key = key
        self.value = value


_UPSERTED = {key.name: _Key(key) for key in (PIPE, COST_USD, INPUT_TOKENS, OUTPUT_TOKENS, STEPS)}
_PIPE, _COST_USD, _INPUT_TOKENS, _OUTPUT_TOKENS, _STEPS = _UPSERTED.values()


def run_totals(
    pipe: str, usage: Usage, records: Iterable[StepRecord], *, with_pipe: bool = True
) -> list[SearchAttributeUpdate[Any]]:
    """The search attribute values of a run with this spend and these step records (without
    ``DurapipePipe`` when not ``with_pipe``: it never changes after the start)."""
    return [
        *([_ValueSet(_PIPE, pipe)] if with_pipe else []),
        _ValueSet(_COST_USD, usage.cost_usd),
        _ValueSet(_INPUT_TOKENS, usage.input_tokens),
        _ValueSet(_OUTPUT_TOKENS, usage.output_tokens),
        _ValueSet(_STEPS, finished_steps(records)),
    ]


def start_totals(pipe: str, workflow_version: int = WORKFLOW_VERSION) -> TypedSearchAttributes:
    """The search attributes the client that starts a run sets, for a run of ``workflow_version``.

    A run of version 2 or later gets only its pipe, so `durapipe runs` lists it before any worker
    has picked it up; its workflow sets the totals with its first upsert (2 s in, or at its end).
    Every attribute set at the start is decoded by the worker whenever it (re)builds the run's
    workflow: the four zeros cost ~57 µs of worker CPU per run (73 against 16.5 µs, alternating
    in one process) for figures the run's last upsert sets anyway. Older runs (a re-drive reuses
    the recorded version) get all five, nothing spent yet, as their workflow code expects.
    """
    if workflow_version >= PIPE_ONLY_AT_START:
        return TypedSearchAttributes([SearchAttributePair(PIPE, pipe)])
    return TypedSearchAttributes(
        [
            SearchAttributePair(PIPE, pipe),
            SearchAttributePair(COST_USD, 0.0),
            SearchAttributePair(INPUT_TOKENS, 0),
            SearchAttributePair(OUTPUT_TOKENS, 0),
            SearchAttributePair(STEPS, 0),
        ]
    )


def has_totals(attributes: TypedSearchAttributes) -> bool:
    """Whether a run already carries every total (set by its client at the start, or carried over
    by continue-as-new), else its workflow sets them."""
    return all(
        attributes.get(key) is not None
        for key in (PIPE, COST_USD, INPUT_TOKENS, OUTPUT_TOKENS, STEPS)
    )
