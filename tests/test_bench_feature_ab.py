"""Each variant of the per-feature A/B (`bench.feature_ab`) differs from the minimal baseline in
its one feature and in nothing else: read back from real runs' histories on the dev server."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.api.history.v1 import HistoryEvent

from bench import feature_ab, handwritten, handwritten_features
from tests.support import history_events, summary_of

LEAVES = 2


@pytest.fixture(scope="module")
async def scheduled(temporal_address: str) -> AsyncIterator[dict[str, list[HistoryEvent]]]:
    """Each variant's scheduled activity events, from one run of ``LEAVES`` calls."""
    client = await handwritten.connect(temporal_address)
    queue = f"feature-ab-{uuid.uuid4().hex[:8]}"
    found = {}
    async with feature_ab.build(client, queue):
        for variant in feature_ab.VARIANTS:
            run_id = f"ab-{variant}-{uuid.uuid4().hex[:8]}"
            await feature_ab.run_variant(client, queue, variant, LEAVES, run_id)
            found[variant] = [
                e
                for e in await history_events(client, run_id)
                if e.HasField("activity_task_scheduled_event_attributes")
            ]
    yield found


def plan(event: HistoryEvent) -> tuple[str, timedelta, timedelta, object, bool]:
    """What a scheduled activity carries that the variants may change."""
    attributes = event.activity_task_scheduled_event_attributes
    return (
        attributes.activity_type.name,
        attributes.heartbeat_timeout.ToTimedelta(),
        attributes.start_to_close_timeout.ToTimedelta(),
        attributes.retry_policy,
        event.user_metadata.HasField("summary"),
    )


def test_each_variant_adds_its_one_feature_to_the_minimal_baseline(
    scheduled: dict[str, list[HistoryEvent]],
) -> None:
    assert all(len(events) == LEAVES for events in scheduled.values())
    name, heartbeat, timeout, retry, labelled = plan(scheduled["minimal"][0])
    assert (name, heartbeat, labelled) == ("bench.ask", timedelta(0), False)
    assert timeout == handwritten.TIMEOUT
    twenty = handwritten_features.HEARTBEAT_TIMEOUT
    expected = {
        "minimal_again": (name, heartbeat, timeout, retry, False),
        "heartbeat": ("bench.features.ask", twenty, timeout, retry, False),
        "heartbeat_timeout_only": (name, twenty, timeout, retry, False),
        "summary": (name, heartbeat, timeout, retry, True),
    }
    for variant, want in expected.items():
        assert [plan(e) for e in scheduled[variant]] == [want] * LEAVES, variant
    assert summary_of(scheduled["summary"][1]) == "ask [1] · durapipe/offline"


def test_the_features_variant_is_the_features_baseline_without_its_totals(
    scheduled: dict[str, list[HistoryEvent]],
) -> None:
    name, heartbeat, timeout, retry, labelled = plan(scheduled["features"][0])
    assert (name, heartbeat, timeout, labelled) == (
        "bench.features.ask",
        handwritten_features.HEARTBEAT_TIMEOUT,
        handwritten.TIMEOUT,
        True,
    )
    assert retry != plan(scheduled["minimal"][0])[3]
    assert retry.initial_interval.ToTimedelta() == timedelta(seconds=1)
    assert retry.maximum_interval.ToTimedelta() == timedelta(seconds=60)


def test_every_variant_runs_first_and_last_and_on_both_sides_of_its_neighbours() -> None:
    variants = list(feature_ab.DEFAULT_VARIANTS)
    orders = [feature_ab.order(round_no, variants) for round_no in range(2 * len(variants))]
    assert all(sorted(order) == sorted(variants) for order in orders)
    assert {order[0] for order in orders} == set(variants)
    assert {order[-1] for order in orders} == set(variants)
    follows = {(a, b) for order in orders for a, b in itertools.pairwise(order)}
    assert all((b, a) in follows for a, b in follows)
