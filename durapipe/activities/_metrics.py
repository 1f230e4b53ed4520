"""Worker metrics of leaf calls: tokens, cost and cache hits, on the Temporal runtime's meter.

They go wherever the runtime's metrics go (the worker's Prometheus endpoint with
``durapipe worker --metrics-port``), beside Temporal's own SDK metrics, labelled with the model.
Cost is a counter of micro-dollars because Temporal's meter has integer counters only.
"""

from __future__ import annotations

from temporalio import activity

from durapipe.runtime._calls import LeafResult

INPUT_TOKENS = "durapipe_input_tokens"
OUTPUT_TOKENS = "durapipe_output_tokens"
COST_MICRO_USD = "durapipe_cost_microusd"
CACHE_HITS = "durapipe_cache_hits"
CALLS = "durapipe_calls"


def record_usage(result: LeafResult, kind: str) -> None:
    """Add a finished leaf call's tokens, cost and cache hit to the worker's counters."""
    meter = activity.metric_meter().with_additional_attributes(
        {"kind": kind, "model": result.model or ""}
    )
    meter.create_counter(CALLS, "Leaf calls that succeeded.").add(1)
    meter.create_counter(INPUT_TOKENS, "Input (prompt) tokens.", "tokens").add(
        result.usage.input_tokens
    )
    meter.create_counter(OUTPUT_TOKENS, "Output (completion) tokens.", "tokens").add(
        result.usage.output_tokens
    )
    meter.create_counter(COST_MICRO_USD, "Provider cost in millionths of a dollar.").add(
        round(result.usage.cost_usd * 1_000_000)
    )
    meter.create_counter(CACHE_HITS, "Calls answered from the checkpoint store.").add(
        int(result.cache_hit)
    )
