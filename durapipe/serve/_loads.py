"""At most so many method loads at once: each holds Python's GIL while it runs.

A method's load and checks (`validate`, `start`, `execute`) run on a thread, off the event loop,
but they are CPU work in Python (0.8 s for a 236 KB method of 2,000 pipes): every thread that
loads takes the GIL in turn with the event loop, so ten loads at once left the loop a tenth of
it, and a status poll waited for seconds. Past the cap a request is refused at once with a
``503`` (``runtime.unavailable``, ``Retry-After``), before its method is read.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

from durapipe.serve._problems import ServeError

logger = logging.getLogger("durapipe.serve")

DEFAULT_MAX_LOADS: Final = 2
T = TypeVar("T")


class MethodLoads:
    """The method loads of one server, at most ``limit`` at once (0: no cap).

    A load counts until its thread ends, not until its request does: a client that leaves while
    its method loads frees no place for another load while the thread still runs.
    """

    def __init__(self, limit: int = DEFAULT_MAX_LOADS) -> None:
        self.limit = limit
        self.running = 0

    def refuse_if_full(self, what: str) -> None:
        """Refuse ``what`` (``POST /v1/validate``, named in the log line) when ``limit`` loads run
        already: called before its body is read too, so a refused request's method is not even
        read or parsed (on the event loop, ~240 KB of JSON for 2,000 pipes).

        Raises:
            ServeError: ``runtime.unavailable``.
        """
        if self.limit and self.running >= self.limit:
            logger.warning(
                "durapipe serve: %s refused: %d method loads run already (--max-loads)",
                what,
                self.running,
            )
            raise ServeError(
                "runtime.unavailable",
                f"This runner already loads {self.limit} methods at once (its limit, "
                "--max-loads); nothing was read or started: send the request again shortly.",
                params={"limit": self.limit},
            )

    async def run(self, what: str, load: Callable[..., T], *args: Any) -> T:
        """``load(*args)`` on a thread, when a place is free.

        Raises:
            ServeError: ``runtime.unavailable``, ``limit`` loads run already (`refuse_if_full`).
        """
        self.refuse_if_full(what)
        self.running += 1
        call = functools.partial(contextvars.copy_context().run, load, *args)
        loading = asyncio.get_running_loop().run_in_executor(None, call)
        loading.add_done_callback(self._ended)
        # Shielded: a client that leaves ends its wait, not the load's place (see the class).
        return await asyncio.shield(loading)

    def _ended(self, _: asyncio.Future[Any]) -> None:
        self.running -= 1
