"""Heartbeats of the activities running on an event loop: one timer per heartbeat interval.

An activity heartbeats every ``interval`` seconds while it runs, the first time one interval after
it starts (so a call that ends sooner sends none), in its own context. A timer per activity (made,
then cancelled when the call ends milliseconds later) cost a handle, a heap push and, once
cancelled handles are half the heap, a rebuild of it: more than the beats. So the activities of one interval share a
queue, in the order their beats fall due (each joins the end one interval ahead, as does each
beat's next one), and one timer, set for the first of them that has not ended; ended ones are
dropped from the front as calls start and beats fall due.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections import deque

from temporalio import activity

_ENDED = contextvars.Context()


class Beating:
    """One activity's heartbeats, until `end`."""

    __slots__ = ("context", "due", "ended", "stamp")

    def __init__(self, due: float, stamp: dict[str, int]) -> None:
        self.due = due
        self.stamp = stamp
        self.ended = False
        # The activity's context: `activity.heartbeat` finds the activity there.
        self.context = contextvars.copy_context()

    def end(self) -> None:
        """No more heartbeats (the call ended)."""
        self.ended = True
        self.context = _ENDED  # the activity's context is not kept until its entry leaves the queue


class _Queue:
    """The activities of one loop that beat every ``interval`` seconds, in the order they are due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.beatings: deque[Beating] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, stamp: dict[str, int]) -> Beating:
        beatings = self.beatings
        # Calls mostly end in the order they started: drop the ended ones at the front now, so
        # the queue holds about the calls in flight rather than an interval's worth of calls.
        while beatings and beatings[0].ended:
            beatings.popleft()
        beating = Beating(self.loop.time() + self.interval, stamp)
        beatings.append(beating)
        if self.timer is None:
            self.timer = self.loop.call_at(beating.due, self.beat)
        return beating

    def beat(self) -> None:
        """Heartbeat each activity that is due, then set the timer for the next one due."""
        self.timer = None
        now = self.loop.time()
        beatings = self.beatings
        while beatings:
            first = beatings[0]
            if not first.ended and first.due > now:
                self.timer = self.loop.call_at(first.due, self.beat)
                return
            beatings.popleft()
            if first.ended:
                continue
            try:
                first.context.run(activity.heartbeat, first.stamp)
            except Exception as err:
                # As a timer of its own did when its callback raised: logged, and it beats no more.
                self.loop.call_exception_handler(
                    {"message": "Exception in an activity's heartbeat", "exception": err}
                )
                continue
            first.due = now + self.interval
            beatings.append(first)


_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Queue]] = (
    weakref.WeakKeyDictionary()
)


def start(interval: float, stamp: dict[str, int]) -> Beating:
    """Heartbeat the current activity with ``stamp`` every ``interval`` seconds until the result's
    `Beating.end`, on the running loop, from one interval on."""
    loop = asyncio.get_running_loop()
    queues = _QUEUES.get(loop)
    if queues is None:
        queues = _QUEUES[loop] = {}
    queue = queues.get(interval)
    if queue is None:
        queue = queues[interval] = _Queue(loop, interval)
    return queue.add(stamp)
