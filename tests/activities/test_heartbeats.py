"""An activity heartbeats while its call runs, stamped with its attempt, and words its failures."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from durapipe._errors import ErrorType
from durapipe.activities._activities import _heartbeating
from durapipe.adapters._plan import ATTEMPT_DETAIL
from durapipe.security._codec import EncryptionError

WAIT_S = 30.0  # a broken feature fails the test by then, instead of hanging it


class Beats(list[Any]):
    """The heartbeats an activity sent, each its details."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def record(self, *details: Any) -> None:
        self.append(details)
        self.arrived.set()

    async def reach(self, count: int) -> None:
        """Wait until ``count`` heartbeats have arrived."""
        async with asyncio.timeout(WAIT_S):
            while len(self) < count:
                self.arrived.clear()
                await self.arrived.wait()


def environment(heartbeat_timeout: float, attempt: int = 1) -> tuple[ActivityEnvironment, Beats]:
    """An activity context with this heartbeat timeout, and the heartbeats it records."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, heartbeat_timeout=timedelta(seconds=heartbeat_timeout), attempt=attempt
    )
    beats = Beats()
    env.on_heartbeat = beats.record
    return env, beats


def in_activity(env: ActivityEnvironment, work: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    async def run() -> Any:
        return await _heartbeating(work())

    return env.run(run)


async def test_a_long_call_heartbeats_with_its_attempt_and_stops_when_it_ends() -> None:
    # 0.6 s: a beat every 200 ms (a third). 30 s: every 10 s, so none in this test. Both run at
    # once on one loop, so each must beat on its own interval (worked out once per timeout).
    fast, fast_beats = environment(0.6, attempt=3)
    slow, slow_beats = environment(30.0)
    slow_done = asyncio.Event()

    async def slow_call() -> str:
        await slow_done.wait()
        return "slow"

    slow_run = asyncio.ensure_future(in_activity(slow, slow_call))

    async def fast_call() -> str:
        await fast_beats.reach(3)
        return "fast"

    assert await in_activity(fast, fast_call) == "fast"
    assert fast_beats[:3] == [({ATTEMPT_DETAIL: 3},)] * 3
    assert slow_beats == []  # 3 beats of 200 ms went by: less than the slow one's interval
    # The fast call ended: its beats stop. Another 0.6 s call beats 3 times meanwhile.
    ended_with = len(fast_beats)
    again, again_beats = environment(0.6)

    async def another_call() -> None:
        await again_beats.reach(3)

    await in_activity(again, another_call)
    assert len(fast_beats) == ended_with
    slow_done.set()
    assert await slow_run == "slow"
    assert slow_beats == []


async def test_a_failure_is_reraised_stamped_with_the_attempt() -> None:
    env, _ = environment(30.0, attempt=2)
    stamp = {ATTEMPT_DETAIL: 2}

    async def fails(err: BaseException) -> None:
        raise err

    provider = ApplicationError("m: 429", "detail", type=ErrorType.RATE_LIMITED)
    with pytest.raises(ApplicationError) as raised:
        await in_activity(env, lambda: fails(provider))
    assert raised.value.details == ("detail", stamp)
    assert (raised.value.type, raised.value.non_retryable) == (ErrorType.RATE_LIMITED, False)
    assert raised.value.__cause__ is provider

    plain = KeyError("no such thing")
    with pytest.raises(ApplicationError) as raised:
        await in_activity(env, lambda: fails(plain))
    assert (raised.value.type, raised.value.details) == ("KeyError", (stamp,))
    assert raised.value.__cause__ is plain

    with pytest.raises(ApplicationError) as raised:
        await in_activity(env, lambda: fails(EncryptionError("no key for this blob")))
    assert raised.value.type == ErrorType.ENCRYPTION_KEY_ERROR and raised.value.non_retryable
    assert raised.value.details == (stamp,) and raised.value.__cause__ is None

    cancelled = CancelledError("cancelled")
    with pytest.raises(CancelledError) as kept:
        await in_activity(env, lambda: fails(cancelled))
    assert kept.value is cancelled  # Temporal's own failures pass as they are


async def test_activities_of_one_interval_each_beat_until_they_end() -> None:
    # One queue and one timer serve every activity of an interval: each still beats on its own
    # schedule, one that ends early sends none, and one that ends stops while the others go on.
    short, short_beats = environment(0.6)
    first, first_beats = environment(0.6)
    second, second_beats = environment(0.6)
    first_may_end = asyncio.Event()

    async def waits_for(event: asyncio.Event) -> None:
        await event.wait()

    async def short_call() -> None:
        return None

    first_run = asyncio.ensure_future(in_activity(first, lambda: waits_for(first_may_end)))
    await in_activity(short, short_call)

    async def second_call() -> None:
        await first_beats.reach(2)
        first_may_end.set()
        await first_run
        ended_with = len(first_beats)
        await second_beats.reach(len(second_beats) + 3)
        assert len(first_beats) == ended_with

    await in_activity(second, second_call)
    assert short_beats == []
    assert len(second_beats) >= 3


async def test_a_heartbeat_that_raises_stops_only_its_own_activity() -> None:
    failing, failing_beats = environment(0.6)
    healthy, healthy_beats = environment(0.6)

    def refuse(*details: Any) -> None:
        failing_beats.record(*details)
        raise RuntimeError("heartbeat refused")

    failing.on_heartbeat = refuse
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    failing_may_end = asyncio.Event()

    async def failing_call() -> None:
        await failing_may_end.wait()

    failing_run = asyncio.ensure_future(in_activity(failing, failing_call))

    async def healthy_call() -> None:
        await failing_beats.reach(1)
        await healthy_beats.reach(len(healthy_beats) + 3)

    try:
        await in_activity(healthy, healthy_call)
    finally:
        failing_may_end.set()
        await failing_run
        loop.set_exception_handler(None)
    assert len(failing_beats) == 1  # as a timer whose callback raised: logged, no more beats
    assert [str(c["exception"]) for c in reported] == ["heartbeat refused"]
