"""A worker's usage counters show every series from a label set's first call, zeros included."""

from __future__ import annotations

import dataclasses
import re
import urllib.request

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment

from durapipe.activities._metrics import _worker_meter, record_usage
from durapipe.ops._dev import free_port
from durapipe.runtime import LeafResult, Usage

SERIES = (
    "durapipe_calls",
    "durapipe_input_tokens",
    "durapipe_output_tokens",
    "durapipe_cost_microusd",
    "durapipe_cache_hits",
)


def _scrape(url: str, model: str) -> dict[str, float]:
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    values: dict[str, float] = {}
    for name in SERIES:
        pattern = rf'^{name}(?:_total)?\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$'
        found = re.findall(pattern, body, re.MULTILINE)
        if found:
            values[name] = sum(float(v) for v in found)
    return values


def test_zero_usage_still_shows_every_series_and_later_usage_adds_up() -> None:
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )
    environment = ActivityEnvironment()
    environment.metric_meter = runtime.metric_meter
    environment.info = dataclasses.replace(environment.info, activity_type="durapipe.llm")
    model = f"m-{port}"  # a label set no other test's counters share

    def first_call() -> bool:
        # Nothing spent, no hit: the adds a zero would make are left out.
        record_usage(LeafResult(output="a", model=model), "llm")
        return _worker_meter() is not None

    # The counters are the cached ones of the worker's meter (what a worker uses), not made anew.
    assert environment.run(first_call)
    url = f"http://127.0.0.1:{port}/metrics"
    assert _scrape(url, model) == {name: 0.0 for name in SERIES} | {"durapipe_calls": 1.0}

    spent = Usage(input_tokens=3, output_tokens=5, cost_usd=0.000002)
    environment.run(lambda: record_usage(LeafResult(output="b", usage=spent, model=model), "llm"))
    environment.run(
        lambda: record_usage(LeafResult(output="b", model=model, cache_hit=True), "llm")
    )
    assert _scrape(url, model) == {
        "durapipe_calls": 3.0,
        "durapipe_input_tokens": 3.0,
        "durapipe_output_tokens": 5.0,
        "durapipe_cost_microusd": 2.0,
        "durapipe_cache_hits": 1.0,
    }
