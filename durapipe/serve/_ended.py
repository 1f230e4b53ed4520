"""What the lifecycle reads (status, results, progress) learn of a run that ended, kept.

An execution that ended never changes: `durapipe retry` of a failed run, or a reset, is a new
execution of the same workflow id, with its own execution id. So its results, its failure and its
step records are read from Temporal once (one history fetch and its decoding), and every later
poll of it, by any client, costs the one describe that says which execution is the latest. Kept
by execution id, least recently read first out, at most `ENDED_KEPT` answers of at most
`ENDED_KEPT_BYTES` each (a larger one is read again each time): a bounded cache, not state; a
restarted server reads them again.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

T = TypeVar("T")

# How many answers about ended executions are kept, and the largest kept (as JSON).
ENDED_KEPT: Final = 256
ENDED_KEPT_BYTES: Final = 256 * 1024


class EndedRuns:
    """Answers about ended executions, each read once, whoever asks (readers at the same time
    share the one read).

    Example:
        >>> ended = EndedRuns()
        >>> body = await ended.read("results", execution, lambda: results_of(run))  # doctest: +SKIP
    """

    def __init__(self, kept: int = ENDED_KEPT, kept_bytes: int = ENDED_KEPT_BYTES) -> None:
        self._kept = kept
        self._kept_bytes = kept_bytes
        self._answers: OrderedDict[tuple[str, str], asyncio.Future[Any]] = OrderedDict()

    async def read(self, what: str, execution: str, ask: Callable[[], Awaitable[T]]) -> T:
        """``what`` of ended execution ``execution``: kept, or ``ask``-ed (and kept if small)."""
        key = (what, execution)
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
            # Shielded: one reader that goes away must not cancel the answer others wait on.
            return await asyncio.shield(answer)
        answer = asyncio.ensure_future(ask())
        self._answers[key] = answer
        answer.add_done_callback(lambda done: self._settle(key, done))
        while len(self._answers) > self._kept:
            self._answers.popitem(last=False)
        return await asyncio.shield(answer)

    def _settle(self, key: tuple[str, str], done: asyncio.Future[Any]) -> None:
        # A failed read is no answer (the next reader asks again), nor is a large one kept.
        if self._answers.get(key) is not done:
            return
        if done.cancelled() or done.exception() is not None or not self._small(done.result()):
            del self._answers[key]

    def _small(self, value: Any) -> bool:
        try:
            size = len(json.dumps(value, default=str))
        except (TypeError, ValueError):
            return False
        return size <= self._kept_bytes
