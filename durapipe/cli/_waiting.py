"""Waiting for a run: its result, a stalled run said within seconds, what a waiting step waits for.

Shared by the step lines (`_progress`) and the live view (`_live`), which import it, not each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import typer
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

import durapipe as dp
from durapipe.cli._printable import printable

POLL_INTERVAL_S = 0.25
STALL_CHECK_S = 1.0  # how often a followed run's queues are checked for workers
STALL_GRACE_S = 5.0  # how long a queue may lack a worker before the wait stops
# A server refusing the connection (stopped, restarting) is gone at once. One that does not answer
# a health check in HEALTH_TIMEOUT may only be slow (a loaded machine): it is asked again at once,
# with SLOW_HEALTH_TIMEOUT to answer, and is gone only if that check gets no answer either.
HEALTH_TIMEOUT = timedelta(seconds=2)
SLOW_HEALTH_TIMEOUT = timedelta(seconds=10)
_REFUSED = RPCStatusCode.UNAVAILABLE  # refused, unresolvable: no server there
# No answer: the call's own timeout (which the SDK reports as CANCELLED, "Timeout expired"), the
# server's deadline, or the connection dropped under the call ("transport error").
_NO_ANSWER = (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNKNOWN)
# After an outage, how long workers get to poll again before a run counts as stalled.
RECONNECT_GRACE_S = 30.0


def waiting_line(record: dp.StepRecord, run_id: str) -> str:
    """What a waiting step waits for, and the command that ends the wait."""
    line = f"  ⏸ {record.path} waiting for {record.waiting_for or 'a decision'}"
    if record.kind == "approval":
        line += (
            f"; decide with `durapipe approve {run_id} {record.path}` "
            f"or `durapipe reject {run_id} {record.path}`"
        )
    elif (record.waiting_for or "").startswith("resume"):
        line += f"; continue with `durapipe resume {run_id}`"
    return printable(line)


WAITING_MEANWHILE = "waiting for it to come back (Ctrl-C stops the waiting, not the run)"


class ServerWatch:
    """Says once on stderr that the server stopped answering, and once that it answers again.

    It runs beside the waiting (a step poll stuck in the SDK's retries would delay it). Meanwhile
    the run's result rides the outage out (`RunHandle.result`), and the SDK core's retry lines,
    one per call every second or two, are held back: this sentence says it all.
    """

    def __init__(self, client: Client, *, meanwhile: str = WAITING_MEANWHILE) -> None:
        self.client = client
        self.meanwhile = meanwhile  # what goes on while the server is away, said with its loss
        self.lost = False
        self.back_at: float | None = None  # when the server answered again after an outage
        self._level = logging.NOTSET  # the SDK core logger's level before the outage

    async def follow(self) -> None:
        """Check the server every `STALL_CHECK_S` until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(STALL_CHECK_S)

    async def check(self) -> None:
        """Ask the server once (twice if it is slow) and say if it was lost or is back."""
        answers = await self._answers()
        if answers is None:
            return
        address = self.client.service_client.config.target_host
        if not answers:
            if self.lost:
                return
            self.lost = True
            core = logging.getLogger("temporalio.core")
            self._level = core.level
            core.setLevel(logging.ERROR)
            typer.echo(
                f"lost Temporal at {address}: it does not answer; {self.meanwhile}", err=True
            )
            return
        if self.lost:
            self.lost, self.back_at = False, time.monotonic()
            logging.getLogger("temporalio.core").setLevel(self._level)
            typer.echo(f"Temporal at {address} answers again", err=True)

    async def _answers(self) -> bool | None:
        """Whether the server answers a health check: False once the connection is refused, or
        after two checks in a row without an answer; None when its answer says nothing of it
        (e.g. a server without the health service)."""
        service = self.client.service_client
        for timeout in (HEALTH_TIMEOUT, SLOW_HEALTH_TIMEOUT):
            try:
                await service.check_health(timeout=timeout)
            except RPCError as err:
                if err.status == _REFUSED:
                    return False
                if err.status not in _NO_ANSWER:
                    return None
                continue  # slow or gone: one more check, with longer to answer, tells
            return True
        return False


class OutageFilter(logging.Filter):
    """On the SDK core's logger: a line of the core saying the server is unavailable is held back
    and starts a `ServerWatch` check at once. If the server is gone the watch says so once (and
    once more when it is back) and the held lines are dropped, as are the core's warnings until
    then; if it answers after all, the held lines are printed as they were. Idle, it costs
    nothing: no health check runs until such a line."""

    def __init__(self, watch: ServerWatch, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.watch = watch
        self.loop = loop
        self._held: list[logging.LogRecord] = []
        self._task: asyncio.Task[None] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.watch.lost:
            return record.levelno >= logging.ERROR  # as `ServerWatch` leaves the core's level
        if (
            record.levelno >= logging.ERROR
            or getattr(record, "durapipe_released", False)
            or "code: Unavailable" not in record.getMessage()
        ):
            return True
        # The core's lines may arrive on another thread: the watch runs on the loop.
        try:
            self.loop.call_soon_threadsafe(self._hold, record)
        except RuntimeError:  # the loop has closed: nothing will watch, print it
            return True
        return False

    def close(self) -> None:
        """Stop watching (the filter is off the logger)."""
        if self._task is not None:
            self._task.cancel()

    def _hold(self, record: logging.LogRecord) -> None:
        self._held.append(record)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        try:
            await self.watch.check()
            while self.watch.lost:
                self._held.clear()  # the outage sentence says what they said
                await asyncio.sleep(STALL_CHECK_S)
                await self.watch.check()
        finally:  # the server answers (a passing hiccup), or the check could not tell
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, []
        for record in held:
            setattr(record, "durapipe_released", True)  # noqa: B010  (not a LogRecord field)
            logging.getLogger(record.name).handle(record)


class StallWatch:
    """Says, within seconds, that a run cannot make progress (no worker polls a queue it needs).

    A queue may lack a poller for a moment (a worker starting just after the run); only a stall
    that lasts `STALL_GRACE_S` stops the wait. While the server does not answer, and for
    `RECONNECT_GRACE_S` after it is back (its workers reconnect on their own back-off), the
    run is not taken as stalled.
    """

    def __init__(self, handle: dp.RunHandle, server: ServerWatch | None = None) -> None:
        self.handle = handle
        self.server = server
        self._next_check = 0.0
        self._since: float | None = None

    async def check(self) -> None:
        """Raise `durapipe.RunStalled` once the run has been stuck for `STALL_GRACE_S`."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + STALL_CHECK_S
        server = self.server
        if server is not None and (
            server.lost or (server.back_at and now - server.back_at < RECONNECT_GRACE_S)
        ):
            self._since = None
            return
        why = await self.handle.stalled()
        if why is None:
            self._since = None
            return
        self._since = self._since or now
        if now - self._since >= STALL_GRACE_S:
            raise dp.RunStalled(
                f"run '{self.handle.run_id}' cannot make progress: {why}; the run stays queued "
                f"(`durapipe result {self.handle.run_id}` waits for it, "
                f"`durapipe cancel {self.handle.run_id}` stops it)",
                run_id=self.handle.run_id,
            )


async def wait_for(
    handle: dp.RunHandle, tick: Callable[[], Awaitable[None]] | None = None
) -> dp.RunResult:
    """Wait for a run's result, calling ``tick`` between polls; a stalled run raises RunStalled."""
    server = ServerWatch(handle.client)
    watch = StallWatch(handle, server)
    # The SDK core's retry lines can come before the periodic check sees the server gone.
    core = logging.getLogger("temporalio.core")
    outage = OutageFilter(server, asyncio.get_running_loop())
    core.addFilter(outage)
    result_task = asyncio.ensure_future(handle.result())
    server_task = asyncio.ensure_future(server.follow())
    try:
        while not result_task.done():
            if tick is not None:
                await tick()
            await watch.check()
            await asyncio.wait({result_task}, timeout=POLL_INTERVAL_S)
    finally:
        core.removeFilter(outage)
        outage.close()
        server_task.cancel()
        if not result_task.done():
            result_task.cancel()
    return result_task.result()
