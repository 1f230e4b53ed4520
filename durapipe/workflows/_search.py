"""Run totals as Temporal search attributes: their names, types, and the values a run upserts.

Only top-level runs carry them (a nested pipe's child workflow does not), so a visibility query over
``DurapipePipe`` lists runs, never their parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from durapipe.runtime._calls import StepRecord, Usage
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


def finished_steps(records: Sequence[StepRecord]) -> int:
    """How many leaf steps (and batch items) have finished, nested runs included."""
    total = 0
    for record in records:
        if record.counts:
            total += sum(n for status, n in record.counts.items() if status in _FINISHED)
        elif not is_controller_kind(record.kind) and record.status in _FINISHED:
            total += 1
    return total


def spent(records: Sequence[StepRecord]) -> Usage:
    """What these step records spent: leaves and batch summaries (a nested run's record repeats
    what its own steps spent, so it is not added again)."""
    total = Usage()
    for record in records:
        if record.counts or not is_controller_kind(record.kind):
            total += Usage(
                input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                cost_usd=record.cost_usd,
            )
    return total


def run_totals(
    pipe: str, usage: Usage, records: Sequence[StepRecord]
) -> list[SearchAttributeUpdate[Any]]:
    """The search attribute values of a run with this spend and these step records."""
    return [
        PIPE.value_set(pipe),
        COST_USD.value_set(usage.cost_usd),
        INPUT_TOKENS.value_set(usage.input_tokens),
        OUTPUT_TOKENS.value_set(usage.output_tokens),
        STEPS.value_set(finished_steps(records)),
    ]


def start_totals(pipe: str) -> TypedSearchAttributes:
    """A new run's totals, set by the client that starts it (nothing spent, no step finished), so
    the run's workflow need not upsert them at its start (one history event less per run)."""
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
