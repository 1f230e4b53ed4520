"""Provider limits: calls that match a `LimitRule` wait for room, counted across every worker.

A call takes a lease in each of its limits before it reaches the provider and gives it back when it
ends. A limit holds when, at the moment a lease is taken:

- ``concurrency``: fewer than N leases are in flight;
- ``rate``: fewer than N leases started within the window (plus a guard, so network and scheduling
  jitter between the worker and the provider cannot squeeze N + 1 arrivals into one window);
- ``tokens``: the tokens of the leases started within the window (the provider-reported usage of
  finished calls, an estimate of the prompt for calls in flight) leave room for this call's estimate.

A lease of a worker that died expires after the call's timeout, so a crash never leaks capacity.
The counts live where the checkpoints live (``DURAPIPE_CHECKPOINTS``), or in ``DURAPIPE_LIMITS``:
a SQLite file for the workers of one host (one transaction per lease: atomic across processes), or
Redis for workers on several hosts (one Lua script per lease, on the server's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from durapipe._errors import ConfigError
from durapipe._settings import settings
from durapipe.runtime._calls import AgentTurnCall, LeafCall, LlmCall, Usage
from durapipe.spec import LimitRule
from durapipe.spec._spec import parse_per
from durapipe.stores._paths import default_path, is_off, is_redis
from durapipe.stores._schema import LIMITS, migrate

# Of a rate window (at most a second) added to it: absorbs the time between a worker taking room and
# its request reaching the provider (network, and a loaded host's scheduling: single requests took
# up to ~0.15 s on two busy cores, which a 10% guard let bunch 4 arrivals into a second at 3/s).
GUARD = 0.2
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
        self, lease: str, rules: Sequence[LimitRule], tokens: int, hold_s: float
    ) -> float:
        """Take ``lease`` in every rule's limit if all have room: 0.0; else the seconds to wait."""
        ...

    def release(self, lease: str, rules: Sequence[LimitRule], tokens: int) -> None:
        """End ``lease`` (it still counts towards rates), recording the tokens it really used."""
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
        self, lease: str, rules: Sequence[LimitRule], tokens: int, hold_s: float
    ) -> float:
        """Take ``lease`` in every rule's limit if all have room: 0.0; else the seconds to wait."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # one writer at a time across every process
            try:
                now = time.time()
                wait = max((self._wait(rule, tokens, now) for rule in rules), default=0.0)
                if wait == 0.0:
                    db.executemany(
                        "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                        [(rule.bucket, lease, now, now + hold_s, tokens) for rule in rules],
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
                wait = max(wait, starts[len(starts) - int(amount)] + window - now)
        if token_window is not None:
            budget, window = token_window
            used, oldest = db.execute(
                "SELECT COALESCE(SUM(tokens), 0), MIN(started) FROM leases "
                "WHERE bucket = ? AND started > ?",
                (bucket, now - window),
            ).fetchone()
            if used and used + tokens > budget:  # a call bigger than the budget may run alone
                wait = max(wait, oldest + window - now, POLL_S)
        return wait

    def release(self, lease: str, rules: Sequence[LimitRule], tokens: int) -> None:
        """End ``lease`` (it still counts towards rates), recording the tokens it really used."""
        with self._lock:
            self._db.execute(
                "UPDATE leases SET expires = 0, tokens = ? WHERE lease = ?", (tokens, lease)
            )


# KEYS: per rule, its in-flight zset, starts zset and tokens hash. ARGV: lease, tokens, hold_s,
# then per rule: concurrency, rate amount, rate window, token budget, token window (0 = none).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local lease, tokens, hold = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
for i = 0, #KEYS / 3 - 1 do
  local flying, starts, used = KEYS[i*3+1], KEYS[i*3+2], KEYS[i*3+3]
  local a = 4 + i * 5
  local conc, rate, rwin = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local budget, twin = tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  redis.call('ZREMRANGEBYSCORE', flying, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', starts, '-inf', now - math.max(rwin, twin, 1))
  if conc > 0 and redis.call('ZCARD', flying) >= conc then wait = math.max(wait, 0.05) end
  if rate > 0 then
    local recent = redis.call('ZRANGEBYSCORE', starts, now - rwin, '+inf', 'WITHSCORES')
    local n = #recent / 2
    if n >= rate then wait = math.max(wait, tonumber(recent[(n - rate) * 2 + 2]) + rwin - now) end
  end
  if budget > 0 then
    local recent = redis.call('ZRANGEBYSCORE', starts, now - twin, '+inf', 'WITHSCORES')
    local total = 0
    for j = 1, #recent, 2 do total = total + tonumber(redis.call('HGET', used, recent[j]) or 0) end
    if total > 0 and total + tokens > budget then
      wait = math.max(wait, tonumber(recent[2]) + twin - now, 0.05)
    end
  end
end
if wait > 0 then return tostring(wait) end
for i = 0, #KEYS / 3 - 1 do
  redis.call('ZADD', KEYS[i*3+1], now + hold, lease)
  redis.call('ZADD', KEYS[i*3+2], now, lease)
  redis.call('HSET', KEYS[i*3+3], lease, tokens)
  redis.call('EXPIRE', KEYS[i*3+3], 7200)
end
return '0'
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

    def _keys(self, rule: LimitRule) -> list[str]:
        base = self.prefix + rule.bucket
        return [f"{base}:flying", f"{base}:starts", f"{base}:tokens"]

    def try_acquire(
        self, lease: str, rules: Sequence[LimitRule], tokens: int, hold_s: float
    ) -> float:
        """Take ``lease`` in every rule's limit if all have room: 0.0; else the seconds to wait."""
        keys: list[str] = []
        args: list[Any] = [lease, tokens, hold_s]
        for rule in rules:
            keys += self._keys(rule)
            rate, token_window = windows(rule)
            args += [rule.concurrency or 0, *(rate or (0, 0)), *(token_window or (0, 0))]
        return float(self._acquire(keys=keys, args=args))

    def release(self, lease: str, rules: Sequence[LimitRule], tokens: int) -> None:
        """End ``lease`` (it still counts towards rates), recording the tokens it really used."""
        with self._redis.pipeline() as pipe:
            for rule in rules:
                flying, _, used = self._keys(rule)
                pipe.zrem(flying, lease)
                pipe.hset(used, lease, tokens)
            pipe.execute()


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
    return len(json.dumps(sent, default=str)) // 4


class Lease:
    """Room taken in a call's limits; set `tokens` to what the request really used."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def used(self, usage: Usage) -> None:
        """Record the provider-reported usage (it replaces the estimate in token limits)."""
        self.tokens = usage.input_tokens + usage.output_tokens


@contextlib.asynccontextmanager
async def limited(call: LeafCall) -> AsyncIterator[Lease]:
    """Wait until every limit of ``call`` has room, hold it for the block, then give it back.

    Wrap the provider request itself, not the work around it: a limit counts requests as they
    leave, and a slow step between taking room and sending would let them bunch up.
    """
    if not call.limits:
        yield Lease(0)  # nothing counts its tokens: no estimate (a JSON dump per call)
        return
    lease = Lease(estimated_tokens(call))
    store = configured_limits()
    name = uuid.uuid4().hex
    hold_s = (call.pipe.timeout or 60.0) + HOLD_MARGIN_S
    acquire = functools.partial(store.try_acquire, name, call.limits, lease.tokens, hold_s)
    # Room is made by other processes, so there is nothing to await but time; a little jitter
    # keeps calls that wait for the same moment from all asking at once.
    while wait := await asyncio.to_thread(acquire):  # noqa: ASYNC110
        await asyncio.sleep(wait + random.uniform(0, POLL_S / 2))
    try:
        yield lease
    finally:
        await asyncio.shield(asyncio.to_thread(store.release, name, call.limits, lease.tokens))
