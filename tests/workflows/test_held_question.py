"""A worker's cap question (`durapipe.max_run_steps`, a local activity) held by its worker: each
attempt is given up after 2 s and the next asked after a timer, so the run's workflow task
completes between attempts and the run answers queries and takes signals meanwhile. The timer
doubles, up to a minute, so a question held for hours adds a few events a minute, not 6 every 4 s."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.common import RetryPolicy

import durapipe as dp
from durapipe.workflows import _caps
from tests.support import eventually, history_events, listed_asking, replays_clean


def _timers(events: list[HistoryEvent]) -> list[float]:
    """The durations (s) of the timers a run's history started, in order."""
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        for e in events
        if e.HasField("timer_started_event_attributes")
    ]


async def _held_past_four_attempts(
    address: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dp.Client, str, list[float]]:
    """Run `listed` with its cap question held until a fourth timer is recorded, then answered:
    the client, the run id and the timers its history recorded."""
    async with listed_asking(address, queue, monkeypatch) as listed:
        client, handle, release, _ = listed
        run_id = handle.run_id
        try:

            async def four_timers() -> bool:
                return len(_timers(await history_events(client, run_id))) >= 4

            # Attempts of 2 s, then 0.5, 1, 2 and 4 s between them: the fourth timer 11.5 s in.
            await eventually(four_timers, "the fourth attempt's timer", timeout=40)
        finally:
            release.set()  # a failing test leaves no question held
        result = await handle.result()
    assert result.output == [n * n for n in range(1, 111)]
    return client, run_id, _timers(await history_events(client, run_id))


async def test_a_held_question_is_asked_again_less_and_less_often(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, run_id, timers = await _held_past_four_attempts(
        temporal_address, task_queue, monkeypatch
    )
    # Before the change the wait stopped growing at 2 s: [0.5, 1.0, 2.0, 2.0, ...].
    assert timers[:4] == [0.5, 1.0, 2.0, 4.0]
    events = await history_events(client, run_id)
    kinds = [EventType.Name(e.event_type) for e in events]
    first, last = (
        kinds.index("EVENT_TYPE_TIMER_STARTED"),
        len(kinds) - kinds[::-1].index("EVENT_TYPE_TIMER_STARTED"),
    )
    print(f"held question: {(last - first) / (len(timers) - 1):.1f} events per attempt given up")
    await replays_clean(client, run_id)


async def test_a_run_recorded_with_the_waits_of_before_replays_as_it_ran(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The policy before the change: the wait stopped growing at 2 s.
    before = RetryPolicy(
        initial_interval=timedelta(milliseconds=500), maximum_interval=_caps.QUESTION_TIMEOUT
    )
    with monkeypatch.context() as old:
        old.setattr(_caps, "QUESTION_RETRY", before)
        client, run_id, timers = await _held_past_four_attempts(
            temporal_address, task_queue, monkeypatch
        )
    assert timers[:4] == [0.5, 1.0, 2.0, 2.0]
    # Each attempt's wait is read from its marker, not worked out again from the policy.
    await replays_clean(client, run_id)
