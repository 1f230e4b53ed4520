"""A run's totals upsert sets the same attributes, of the same types, to the same values as the
SDK's own ``value_set`` updates would (the command a replay compares is built from them)."""

from __future__ import annotations

from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.converter import encode_typed_search_attribute_value

from durapipe.runtime import StepRecord, Usage
from durapipe.workflows._search import (
    COST_USD,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    PIPE,
    STEPS,
    run_totals,
)


def test_the_totals_updates_encode_as_the_sdks_value_set_does() -> None:
    usage = Usage(input_tokens=12, output_tokens=34, cost_usd=0.0125)
    records = [
        StepRecord(path="a", pipe="ask", kind="llm", status="succeeded"),
        StepRecord(path="b", pipe="ask", kind="llm", status="running"),
    ]
    expected = [
        PIPE.value_set("ask"),
        COST_USD.value_set(0.0125),
        INPUT_TOKENS.value_set(12),
        OUTPUT_TOKENS.value_set(34),
        STEPS.value_set(1),
    ]
    for with_pipe, wanted in ((True, expected), (False, expected[1:])):
        updates = run_totals("ask", usage, records, with_pipe=with_pipe)
        assert [(u.key, u.value) for u in updates] == [(u.key, u.value) for u in wanted]
        assert [type(u.value) for u in updates] == [type(u.value) for u in wanted]
        assert [encode_typed_search_attribute_value(u.key, u.value) for u in updates] == [
            encode_typed_search_attribute_value(u.key, u.value) for u in wanted
        ]


def test_the_upserted_keys_equal_and_hash_as_the_sdks_keys() -> None:
    # The SDK keeps the upserted pairs in the workflow's info: a read of it with the SDK's own keys
    # (`workflow.info().typed_search_attributes.get(COST_USD)`) must find them, and the reverse.
    usage = Usage(input_tokens=12, output_tokens=34, cost_usd=0.0125)
    updates = run_totals("ask", usage, [], with_pipe=True)
    sdk_keys = [PIPE, COST_USD, INPUT_TOKENS, OUTPUT_TOKENS, STEPS]
    for update, key in zip(updates, sdk_keys, strict=True):
        assert update.key == key and key == update.key
        assert hash(update.key) == hash(key)
        assert update.key != (COST_USD if key is not COST_USD else STEPS)
    kept = TypedSearchAttributes([SearchAttributePair(u.key, u.value) for u in updates])
    assert [kept.get(key) for key in sdk_keys] == ["ask", 0.0125, 12, 34, 0]
    sdk_kept = TypedSearchAttributes([SearchAttributePair(COST_USD, 0.5)])
    assert sdk_kept.get(updates[1].key) == 0.5
