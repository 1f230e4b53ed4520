"""Run totals as Temporal search attributes: their names, types, and the values a run upserts.

Only top-level runs carry them (a nested pipe's child workflow does not), so a visibility query over
``DurapipePipe`` lists runs, never their parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from durapipe.runtime._calls import WORKFLOW_VERSION, StepRecord, Usage, spent_by
from durapipe.spec import is_controller_kind

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
    """How many leaf steps (and batch items) have finished, nested runs included."""
    total = 0
    for record in records:
        if record.counts:
            total += sum(n for status, n in record.counts.items() if status in _FINISHED)
        elif not is_controller_kind(record.kind) and record.status in _FINISHED:
            total += 1
    return total


def spent(records: Iterable[StepRecord]) -> Usage:
    """What these step records spent (see `durapipe.runtime._calls.spent_by`)."""
    return spent_by(records)


# Runs started with this `PipeRun.workflow_version` or later carry only their pipe from the start.
PIPE_ONLY_AT_START = 2


class _ValueSet(SearchAttributeUpdate[Any]):
    """An update setting ``key`` to ``value``: what ``key.value_set(value)`` returns, made
    without the generic alias that method subscripts on every call (whose call then tries, and
    fails, to set ``__orig_class__`` on a frozen dataclass). The SDK reads only `key` and `value`,
    so the upsert command is the same; a run's upsert of its four totals made ~40k instructions
    fewer (bench.workflow_instructions)."""

    __slots__ = ("_key", "_value")

    def __init__(self, key: SearchAttributeKey[Any], value: Any) -> None:
        self._key = key
        self._value = value

    @property
    def key(self) -> SearchAttributeKey[Any]:
        """The attribute set."""
        return self._key

    @property
    def value(self) -> Any:
        """Its new value."""
        return self._value


def run_totals(
    pipe: str, usage: Usage, records: Iterable[StepRecord], *, with_pipe: bool = True
) -> list[SearchAttributeUpdate[Any]]:
    """The search attribute values of a run with this spend and these step records (without
    ``DurapipePipe`` when not ``with_pipe``: it never changes after the start)."""
    return [
        *([_ValueSet(PIPE, pipe)] if with_pipe else []),
        _ValueSet(COST_USD, usage.cost_usd),
        _ValueSet(INPUT_TOKENS, usage.input_tokens),
        _ValueSet(OUTPUT_TOKENS, usage.output_tokens),
        _ValueSet(STEPS, finished_steps(records)),
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
