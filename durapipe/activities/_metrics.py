"""Worker metrics of leaf calls: tokens, cost and cache hits, on the Temporal runtime's meter.

They go wherever the runtime's metrics go (the worker's Prometheus endpoint with
``durapipe worker --metrics-port``), beside Temporal's own SDK metrics, labelled with the model.
Cost is a counter of micro-dollars because Temporal's meter has integer counters only.
"""

from __future__ import annotations

from typing import NamedTuple

from temporalio import activity
from temporalio.common import MetricCounter, MetricMeter

from durapipe.runtime._calls import LeafResult, Usage

INPUT_TOKENS = "durapipe_input_tokens"
OUTPUT_TOKENS = "durapipe_output_tokens"
COST_MICRO_USD = "durapipe_cost_microusd"
CACHE_HITS = "durapipe_cache_hits"
CALLS = "durapipe_calls"


class _Counters(NamedTuple):
    calls: MetricCounter
    input_tokens: MetricCounter
    output_tokens: MetricCounter
    cost: MetricCounter
    cache_hits: MetricCounter


_COUNTERS: dict[tuple[object, ...], _Counters] = {}
"""Counters per worker meter and label set (a handful per worker: kinds x models x queues)."""


def record_usage(
    result: LeafResult,
    kind: str,
    info: activity.Info | None = None,
    usage: Usage | None = None,
) -> None:
    """Add a finished leaf call's tokens, cost and cache hit to the worker's counters.

    ``info``: the activity's (read here when not given); ``usage``: what the call was billed
    (the result's usage when not given).
    """
    counters = _counters(kind, result.model or "", info or activity.info())
    counters.calls.add(1)
    # Adding 0 changes no counter, and each add is a call into Temporal's core: most calls are no
    # cache hit, and many cost nothing known (an unpriced model). The series still show from the
    # first call on, at 0: `_counters` adds 0 to each when it makes them.
    usage = result.usage if usage is None else usage
    if usage.input_tokens:
        counters.input_tokens.add(usage.input_tokens)
    if usage.output_tokens:
        counters.output_tokens.add(usage.output_tokens)
    if cost := round(usage.cost_usd * 1_000_000):
        counters.cost.add(cost)
    if result.cache_hit:
        counters.cache_hits.add(1)


def record_spend(usage: Usage, kind: str, model: str | None, info: activity.Info) -> None:
    """Add what a failed attempt paid for to the worker's counters (not a call that succeeded:
    ``durapipe_calls`` stays as it is)."""
    counters = _counters(kind, model or "", info)
    if usage.input_tokens:
        counters.input_tokens.add(usage.input_tokens)
    if usage.output_tokens:
        counters.output_tokens.add(usage.output_tokens)
    if cost := round(usage.cost_usd * 1_000_000):
        counters.cost.add(cost)


def _counters(kind: str, model: str, info: activity.Info) -> _Counters:
    # Creating a counter and a meter with more labels are calls into Temporal's core (~10 us each,
    # six per leaf); the counters of one label set on one worker are the same every time, so they
    # are made once. The key holds the worker's own meter (each activity's meter is a fresh
    # object: it adds the namespace, task queue and activity type, which the key holds too).
    worker_meter = _worker_meter()
    key = (worker_meter, info.namespace, info.task_queue, info.activity_type, kind, model)
    counters = _COUNTERS.get(key) if worker_meter is not None else None
    if counters is None:
        meter = activity.metric_meter().with_additional_attributes({"kind": kind, "model": model})
        counters = _Counters(
            meter.create_counter(CALLS, "Leaf calls that succeeded."),
            meter.create_counter(INPUT_TOKENS, "Input (prompt) tokens.", "tokens"),
            meter.create_counter(OUTPUT_TOKENS, "Output (completion) tokens.", "tokens"),
            meter.create_counter(COST_MICRO_USD, "Provider cost in millionths of a dollar."),
            meter.create_counter(CACHE_HITS, "Calls answered from the checkpoint store."),
        )
        # A counter's series shows once something was added to it: at 0 until the first
        # tokens, cost or hit, as when every call added its zeros (see `record_usage`).
        for counter in counters[1:]:
            counter.add(0)
        if worker_meter is not None:
            _COUNTERS[key] = counters
    return counters


def _worker_meter() -> MetricMeter | None:
    # temporalio has no public accessor for the worker's meter an activity's meter derives from;
    # without it (another SDK version) nothing is cached: correct, only slower.
    context = getattr(activity, "_Context", None)
    meter = getattr(context.current(), "runtime_metric_meter", None) if context else None
    return meter if isinstance(meter, MetricMeter) else None
