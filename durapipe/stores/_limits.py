"""Provider limits: calls that match a `LimitRule` wait for room, counted across every worker.

A call takes a lease in each of its limits before it reaches the provider and gives it back when it
ends. A limit holds when, at the moment a lease is taken:

- ``concurrency``: fewer than N leases are in flight;
- ``rate``: fewer than N leases started within the window (plus a guard, `GUARD`, for calls whose
  lease starts when room is taken), counting a lease not yet sent as started;
- ``tokens``: the tokens of the leases started within the window (the provider-reported usage of
  finished calls, an estimate of the prompt for calls in flight) leave room for this call's estimate.

When a lease starts. Work between taking room and sending (litellm building the request, a busy
host's scheduling) spread by over 0.2 s on two loaded cores (arrivals timed by the provider's
kernel), so a lease that started when room was taken let requests bunch at the provider. A lease whose request goes through durapipe's transport
(`durapipe.adapters._answers`) is therefore taken *unsent*: until the transport reports the
request's first bytes on the wire (`request_sent`), it counts as started in every window (its row
holds a start in the future, its expiry), and then it starts at a time read after those bytes
left. Why that is sound for any number of workers: the store orders every take and stamp (one
SQLite transaction, one Redis script each). Say N + 1 requests left within one window (a, a + W]
and k was the last of them to take room, at T_k <= s_k <= a + W. When k took room, each of the
other N was either unsent (counted) or stamped at r_i >= s_i > a >= T_k - W (counted too), so k
saw N starts and waited: contradiction. Merely moving a start later would not do: a check made
while the start was early may have let another lease in beside where it lands. A lease that ends
unsent (an answer kept earlier, a failure before sending, a request another client carried) starts
at its end, which is no earlier than anything it could have sent. Calls durapipe's transport does
not carry (a tool, a provider litellm reaches through its own client) start when room is taken,
as before, and rely on the guard.

A lease of a worker that died expires after the call's timeout, so a crash never leaks capacity
for longer than that (an unsent one holds its room for the whole timeout plus a window: nothing
can tell that it was never sent).
The counts live where the checkpoints live (``DURAPIPE_CHECKPOINTS``), or in ``DURAPIPE_LIMITS``:
a SQLite file for the workers of one host (one transaction per lease: atomic across processes), or
Redis for workers on several hosts (one Lua script per lease, on the server's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from durapipe._errors import ConfigError
from durapipe._settings import settings
from durapipe.runtime._calls import AgentTurnCall, LeafCall, LlmCall, Usage
from durapipe.spec import LimitRule, request_limits
from durapipe.spec._spec import parse_per
from durapipe.stores._paths import default_path, is_off, is_redis
from durapipe.stores._schema import LIMITS, migrate

# Of a rate window (at most a second) added to it: the time from a lease's start to its request
# reaching the provider, for calls whose start is when room is taken (tools, providers durapipe's
# transport does not carry), where the work in between spread by up to 0.2 s on a loaded host
# (kernel-timed arrivals: leases 1.206 s apart arrived 0.996 s apart with two CPU burners).
GUARD = 0.2
Rules = Sequence[LimitRule]  # the limits one call matches
POLL_S = 0.05  # how often a call waiting for a concurrency slot looks again
HOLD_MARGIN_S = 5.0  # a lease outlives its call's timeout by this much before it expires


def windows(rule: LimitRule) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """``(calls, window seconds)`` of the rate (guard included) and ``(tokens, window)``."""
    rate = None
    if rule.rate is not None:
        amount, window = parse_per(rule.rate)
        if amount < 1:  # 0.5/s is 1 per 2 s
            amount, window = 1.0, window / amount
        amount = float(int(amount))  # whole calls
        rate = (amount, window + min(GUARD * window, 1.0))
    tokens = parse_per(rule.tokens) if rule.tokens is not None else None
    return rate, tokens


class LimitStore(Protocol):
    """Where the leases of every worker are counted."""

    def try_acquire(
        self, lease: str, rules: Rules, tokens: int, hold_s: float, unsent: bool = False
    ) -> float:
        """Take ``lease`` in every rule's limit if all have room: 0.0; else the seconds to wait.

        An ``unsent`` lease counts as started in every window until `sent` (or `release`).
        """
        ...

    def sent(self, lease: str, rules: Sequence[LimitRule]) -> None:
        """Start an unsent ``lease`` now: its request's first bytes have left."""
        ...

    def release(self, lease: str, rules: Sequence[LimitRule], tokens: int) -> None:
        """End ``lease`` (it still counts towards rates), recording the tokens it really used.

        A lease still unsent starts now (whatever it sent left no later than this).
        """
        ...


class SqliteLimits:
    """Leases in a SQLite file: the embedded default, shared by the workers of one host."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # The table, created or brought up from an earlier durapipe's layout (see `_schema`).
        migrate(self.path, LIMITS)
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, timeout=30, isolation_level=None
        )

    def try_acquire(
        self, lease: str, rules: Rules, tokens: int, hold_s: float, unsent: bool = False
    ) -> float:
        """Take ``lease`` in every rule's limit if all have room: 0.0; else the seconds to wait."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # one writer at a time across every process
            try:
                now = time.time()
                wait = max((self._wait(rule, tokens, now) for rule in rules), default=0.0)
                if wait == 0.0:
                    # An unsent lease starts at its expiry: in the future, so in every window.
                    started = now + hold_s if unsent else now
                    db.executemany(
                        "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                        [(rule.bucket, lease, started, now + hold_s, tokens) for rule in rules],
                    )
                    # Rows older than any window are history: drop them now and then.
                    if random.random() < 0.01:
                        db.execute(
                            "DELETE FROM leases WHERE started < ? AND expires < ?",
                            (now - 7200, now),
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return wait

    def _wait(self, rule: LimitRule, tokens: int, now: float) -> float:
        db, bucket = self._db, rule.bucket
        wait = 0.0
        if rule.concurrency is not None:
            (flying,) = db.execute(
                "SELECT COUNT(*) FROM leases WHERE bucket = ? AND expires > ?", (bucket, now)
            ).fetchone()
            if flying >= rule.concurrency:
                wait = POLL_S
        rate, token_window = windows(rule)
        if rate is not None:
            amount, window = rate
            starts = [
                row[0]
                for row in db.execute(
                    "SELECT started FROM leases WHERE bucket = ? AND started > ? ORDER BY started",
                    (bucket, now - window),
                )
            ]
            if len(starts) >= amount:  # room again once the oldest that fills the window leaves it
                wait = max(wait, _until_out(starts[len(starts) - int(amount)], window, now))
        if token_window is not None:
            budget, window = token_window
            used, oldest = db.execute(
                "SELECT COALESCE(SUM(tokens), 0), MIN(started) FROM leases "
                "WHERE bucket = ? AND started > ?",
                (bucket, now - window),
            ).fetchone()
            if used and used + tokens > budget:  # a call bigger than the budget may run alone
                wait = max(wait, _until_out(oldest, window, now), POLL_S)
        return wait

    def sent(self, lease: str, rules: Sequence[LimitRule]) -> None:
        """Start an unsent ``lease`` now: its request's first bytes have left."""
        with self._lock:
            now = time.time()  # read after the bytes left: never earlier than they did
            self._db.execute(
                "UPDATE leases SET started = ? WHERE lease = ? AND started > ?", (now, lease, now)
            )

    def release(self, lease: str, rules: Sequence[LimitRule], tokens: int) -> None:
        """End ``lease`` (it still counts towards rates), recording the tokens it really used."""
        with self._lock:
            now = time.time()
            self._db.execute(
                "UPDATE leases SET expires = 0, tokens = ?, started = MIN(started, ?) "
                "WHERE lease = ?",
                (tokens, now, lease),
            )


def _until_out(started: float, window: float, now: float) -> float:
    """Seconds until a lease that started at ``started`` leaves the window; unsent: poll."""
    return POLL_S if started > now else started + window - now


# KEYS: per rule, its in-flight zset, starts zset and tokens hash. ARGV: lease, tokens, hold_s,
# unsent (1/0), then per rule: concurrency, rate amount, rate window, token budget, token window
# (0 = none). An unsent lease's start is its expiry (in the future, so in every window); a start
# in the future means unsent, so a wait on it polls.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local lease, tokens, hold = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local unsent = ARGV[4] == '1'
local function out(started, win)
  if started > now then return 0.05 end
  return started + win - now
end
local wait = 0
for i = 0, #KEYS / 3 - 1 do
  local flying, starts, used = KEYS[i*3+1], KEYS[i*3+2], KEYS[i*3+3]
  local a = 5 + i * 5
  local conc, rate, rwin = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local budget, twin = tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  redis.call('ZREMRANGEBYSCORE', flying, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', starts, '-inf', now - math.max(rwin, twin, 1))
  if conc > 0 and redis.call('ZCARD', flying) >= conc then wait = math.max(wait, 0.05) end
  if rate > 0 then
    local recent = redis.call('ZRANGEBYSCORE', starts, now - rwin, '+inf', 'WITHSCORES')
    local n = #recent / 2
    if n >= rate then wait = math.max(wait, out(tonumber(recent[(n - rate) * 2 + 2]), rwin)) end
  end
  if budget > 0 then
    local recent = redis.call('ZRANGEBYSCORE', starts, now - twin, '+inf', 'WITHSCORES')
    local total = 0
    for j = 1, #recent, 2 do total = total + tonumber(redis.call('HGET', used, recent[j]) or 0) end
    if total > 0 and total + tokens > budget then
      wait = math.max(wait, out(tonumber(recent[2]), twin), 0.05)
    end
  end
end
if wait > 0 then return tostring(wait) end
for i = 0, #KEYS / 3 - 1 do
  redis.call('ZADD', KEYS[i*3+1], now + hold, lease)
  redis.call('ZADD', KEYS[i*3+2], unsent and now + hold or now, lease)
  redis.call('HSET', KEYS[i*3+3], lease, tokens)
  redis.call('EXPIRE', KEYS[i*3+3], 7200)
end
return '0'
"""

# KEYS as for _ACQUIRE. ARGV: lease, tokens, ending (1/0). Starts an unsent lease now, on the
# server's clock (read after the request's bytes left); ending also takes it out of flight.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local lease = ARGV[1]
for i = 0, #KEYS / 3 - 1 do
  local started = redis.call('ZSCORE', KEYS[i*3+2], lease)
  if started and tonumber(started) > now then redis.call('ZADD', KEYS[i*3+2], now, lease) end
  if ARGV[3] == '1' then
    redis.call('ZREM', KEYS[i*3+1], lease)
    redis.call('HSET', KEYS[i*3+3], lease, ARGV[2])
  end
end
return 0
"""


class RedisLimits:
    """Leases in Redis, for workers on several hosts (atomic Lua scripts on the server's clock)."""

    def __init__(self, url: str, *, prefix: str = "durapipe:limit:") -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                f"limits in {url} need the redis client: pip install 'durapipe[redis]'"
            ) from None
        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._settle = self._redis.register_script(_SETTLE)

    def _keys(self, rule: LimitRule) -> list[str]:
        base = self.prefix + rule.bucket
        return [f"{base}:flying", f"{base}:starts", f"{base}:tokens"]

    def try_acquire(
        self, lease: str, rules: Rules, tokens: int, hold_s: float, unsent: bool = False
    ) -> float:
        """Take ``lease`` in every rule's limit if all have room: 0.0; else the seconds to wait."""
        keys: list[str] = []
        args: list[Any] = [lease, tokens, hold_s, int(unsent)]
        for rule in rules:
            keys += self._keys(rule)
            rate, token_window = windows(rule)
            args += [rule.concurrency or 0, *(rate or (0, 0)), *(token_window or (0, 0))]
        return float(self._acquire(keys=keys, args=args))

    def sent(self, lease: str, rules: Sequence[LimitRule]) -> None:
        """Start an unsent ``lease`` now: its request's first bytes have left."""
        self._settle(keys=[key for rule in rules for key in self._keys(rule)], args=[lease, 0, 0])

    def release(self, lease: str, rules: Sequence[LimitRule], tokens: int) -> None:
        """End ``lease`` (it still counts towards rates), recording the tokens it really used."""
        keys = [key for rule in rules for key in self._keys(rule)]
        self._settle(keys=keys, args=[lease, tokens, 1])


def open_limits(where: str | None = None) -> LimitStore:
    """The store named by ``where``, else ``DURAPIPE_LIMITS``, else where the checkpoints are."""
    if where is None:
        where = settings().limits_store
    if is_redis(where):
        return RedisLimits(where)
    return SqliteLimits(default_path() if not where or is_off(where) else where)


@functools.cache
def _limits_for(where: str) -> LimitStore:
    return open_limits(where)


def configured_limits() -> LimitStore:
    """The store of this process's settings, opened once per setting."""
    return _limits_for(settings().limits_store)


def estimated_tokens(call: LeafCall) -> int:
    """A rough count of the tokens a call sends (four characters a token), for token limits."""
    if isinstance(call, AgentTurnCall):
        sent: Any = call.messages
    elif isinstance(call, LlmCall):
        sent = [call.pipe.system, call.pipe.prompt, call.inputs]
    else:
        sent = call.inputs
    return _tokens_in(sent)


def _tokens_in(sent: Any) -> int:
    return len(json.dumps(sent, default=str)) // 4


class Lease:
    """Room taken in a call's limits; set `tokens` to what the request really used."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._stamp: asyncio.Task[None] | None = None
        self._send: functools.partial[None] | None = None  # the store's `sent`, while unsent

    def used(self, usage: Usage) -> None:
        """Record the provider-reported usage (it replaces the estimate in token limits)."""
        self.tokens = usage.input_tokens + usage.output_tokens

    def request_sent(self) -> None:
        """Start the lease now, if it was taken unsent (the first call counts; later ones do not).

        The store is written on a thread, so the request is not held up; the time is read there,
        after the bytes left, and until it is written the lease counts as started everywhere.
        """
        send, self._send = self._send, None
        if send is not None:
            self._stamp = asyncio.get_running_loop().create_task(asyncio.to_thread(send))


# The running activity's heartbeat details (the activity wrapper sets them; None elsewhere, e.g.
# in a local run): a call waiting for room says so there, under `WAITING_DETAIL`, so a client
# describing the run can tell why its step does not move.
beat_details: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "durapipe_beat_details", default=None
)
WAITING_DETAIL = "durapipe.waiting_for"

_sending: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "durapipe_limit_lease", default=None
)


def request_sent() -> None:
    """Tell the lease of the call this task is making that its request's first bytes have left.

    Called by durapipe's HTTP transport (`durapipe.adapters._answers`); nothing happens outside a
    limited call or when the lease was not taken unsent.
    """
    lease = _sending.get()
    if lease is not None:
        lease.request_sent()


def limited(
    call: LeafCall,
    model: str | None = None,
    *,
    sent_by_transport: bool = False,
    sent: Any = None,
) -> contextlib.AbstractAsyncContextManager[Lease]:
    """Wait until every limit of one request of ``call`` to ``model`` has room, hold it for the
    block, then give it back.

    The request takes the limits of its own model (a waterfall's fallback those of its provider,
    not the primary's; ``None``, the default, for a request that names no model: a tool call's,
    or a registered kind's, which then takes the limits without provider or model). Wrap the
    provider request itself, not the work around it. With ``sent_by_transport`` (the request goes
    through durapipe's transport, which calls `request_sent`), the lease starts when the request's
    first bytes leave; otherwise when room is taken (see the module docs). ``sent`` is what the
    request sends (an llm request's messages: a re-ask's hold the rejected answer), for the token
    estimate; by default the call's (`estimated_tokens`).
    """
    rules = request_limits(call.limits, call.pipe.kind, model) if call.limits else None
    if not rules:
        # Most calls have no limits: no generator-based context manager (a generator, its wrapper
        # and two awaits per call, for nothing to wait for or give back). Nothing counts the
        # lease's tokens, so no estimate (a JSON dump per call).
        return contextlib.nullcontext(Lease(0))
    return _limited(call, rules, sent_by_transport, sent)


@contextlib.asynccontextmanager
async def _limited(
    call: LeafCall, rules: list[LimitRule], sent_by_transport: bool, sent: Any
) -> AsyncIterator[Lease]:
    lease = Lease(estimated_tokens(call) if sent is None else _tokens_in(sent))
    store = configured_limits()
    name = uuid.uuid4().hex
    hold_s = (call.pipe.timeout or 60.0) + HOLD_MARGIN_S
    acquire = functools.partial(
        store.try_acquire, name, rules, lease.tokens, hold_s, sent_by_transport
    )
    # Room is made by other processes, so there is nothing to await but time; a little jitter
    # keeps calls that wait for the same moment from all asking at once.
    give_back = functools.partial(store.release, name, rules, 0)
    details = None
    try:
        while wait := await _take(acquire, give_back):
            if details is None and (details := beat_details.get()) is not None:
                names = ", ".join(f"'{rule.bucket}'" for rule in rules)
                details[WAITING_DETAIL] = f"room in provider limit {names}"
            await asyncio.sleep(wait + random.uniform(0, POLL_S / 2))
    finally:
        if details is not None:
            details.pop(WAITING_DETAIL, None)
    if sent_by_transport:
        lease._send = functools.partial(store.sent, name, rules)
    token = _sending.set(lease)
    try:
        yield lease
    finally:
        _sending.reset(token)
        lease._send = None
        await asyncio.shield(_settle(lease, store, name, rules))


_giving_back: set[asyncio.Future[None]] = set()  # releases of cancelled takes, until they end


async def _take(acquire: Callable[[], float], give_back: Callable[[], None]) -> float:
    """``acquire()`` on a thread: 0.0 when it took room, else the seconds to wait.

    The thread runs on when the call is cancelled meanwhile (a timeout, a cancelled run): room it
    then takes is given back, not left held until the lease's hold runs out.
    """
    taking = asyncio.get_running_loop().run_in_executor(None, acquire)
    try:
        return await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(functools.partial(_give_back, give_back))
        raise


def _give_back(give_back: Callable[[], None], taking: asyncio.Future[float]) -> None:
    if taking.cancelled() or taking.exception() is not None or taking.result() != 0.0:
        return  # it took no room
    try:
        release = asyncio.get_running_loop().run_in_executor(None, give_back)
    except RuntimeError:  # the executor is shutting down (asyncio.run ending): give it back here
        give_back()
        return
    _giving_back.add(release)
    release.add_done_callback(_given_back)


def _given_back(release: asyncio.Future[None]) -> None:
    _giving_back.discard(release)
    if not release.cancelled():
        release.exception()  # a failed store: the lease expires after its hold (a dead worker's)


async def _settle(lease: Lease, store: LimitStore, name: str, rules: Sequence[LimitRule]) -> None:
    if lease._stamp is not None:  # the stamp first: it holds the earlier time
        with contextlib.suppress(Exception):  # release starts the lease anyway
            await lease._stamp
    await asyncio.to_thread(store.release, name, rules, lease.tokens)
