"""At most so many method loads at once: each holds Python's GIL while it runs.

A method's load and checks (`validate`, `start`, `execute`) run on a thread, off the event loop,
but they are CPU work in Python (0.8 s for a 236 KB method of 2,000 pipes): every thread that
loads takes the GIL in turn with the event loop, so ten loads at once left the loop a tenth of
it, and a status poll waited for seconds. Past the cap a request waits its turn, first come
first served, for at most `LOAD_WAIT_S`; with `MAX_WAITING` waiting already it is refused at
once with a ``503`` (``runtime.unavailable``, ``Retry-After``), before its method is read.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

from durapipe.serve._problems import ServeError

logger = logging.getLogger("durapipe.serve")

DEFAULT_MAX_LOADS: Final = 2
# A burst (a client sending its batch of executes at once) is served in turn rather than
# refused; a queue that would not drain within the wait is refused, not held open.
MAX_WAITING = 32
LOAD_WAIT_S = 10.0
T = TypeVar("T")


class MethodLoads:
    """The method loads of one server, at most ``limit`` at once (0: no cap), and at most
    `MAX_WAITING` requests waiting for a place, each for at most `LOAD_WAIT_S`.

    A load counts until its thread ends, not until its request does: a client that leaves while
    its method loads frees no place for another load while the thread still runs.
    """

    def __init__(self, limit: int = DEFAULT_MAX_LOADS) -> None:
        self.limit = limit
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _full(self) -> bool:
        return bool(self.limit) and self.running >= self.limit

    def refuse_if_full(self, what: str) -> None:
        """Refuse ``what`` (``POST /v1/validate``, named in the log line) when ``limit`` loads run
        and `MAX_WAITING` requests wait already: called before its body is read too, so a refused
        request's method is not even read or parsed (on the event loop, ~240 KB of JSON for 2,000
        pipes).

        Raises:
            ServeError: ``runtime.unavailable``.
        """
        if self._full() and len(self._waiters) >= MAX_WAITING:
            self._refuse(what, f"{len(self._waiters)} more wait for a place")

    def _refuse(self, what: str, why: str) -> None:
        logger.warning(
            "durapipe serve: %s refused: %d method loads run already (--max-loads) and %s",
            what,
            self.running,
            why,
        )
        raise ServeError(
            "runtime.unavailable",
            f"This runner already loads {self.limit} methods at once (its limit, --max-loads) "
            f"and {why}; nothing was read or started: send the request again shortly.",
            params={"limit": self.limit},
        )

    async def run(self, what: str, load: Callable[..., T], *args: Any) -> T:
        """``load(*args)`` on a thread, once a place is free.

        Raises:
            ServeError: ``runtime.unavailable``: the queue is full, or no place came free within
                `LOAD_WAIT_S`.
        """
        self.refuse_if_full(what)
        if self._full() or self._waiters:
            await self._wait_turn(what)
        else:
            self.running += 1
        call = functools.partial(contextvars.copy_context().run, load, *args)
        loading = asyncio.get_running_loop().run_in_executor(None, call)
        loading.add_done_callback(self._ended)
        # Shielded: a client that leaves ends its wait, not the load's place (see the class).
        return await asyncio.shield(loading)

    async def _wait_turn(self, what: str) -> None:
        """Wait for a place handed over by `_ended` (counted in ``running`` when handed)."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        logger.debug("durapipe serve: %s waits for a place (%d loads run)", what, self.running)
        wait_s = LOAD_WAIT_S
        try:
            await asyncio.wait_for(asyncio.shield(turn), wait_s)
        except BaseException as err:
            if turn.done():  # handed over as the wait ended: give the place on
                self._ended(turn)
            else:
                turn.cancel()
                self._waiters.remove(turn)
            if isinstance(err, TimeoutError):
                self._refuse(what, f"no place came free within {wait_s:g} s")
            raise

    def _ended(self, _: asyncio.Future[Any]) -> None:
        """A load's place comes free: handed to the first request still waiting, if any."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the place passes on; ``running`` stays
                return
        self.running -= 1
