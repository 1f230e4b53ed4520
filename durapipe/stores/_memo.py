"""The results of memoised pipes (``memoize: true``), which every run reads by content.

An answer cut off at its output limit (``truncated``) is not shared: the next run may have a
higher limit (a worker's cap is not part of the key), and would be given the cut text as if it
were whole. It is kept for its own run, under the memo key, the run's scope and the step path, so
a retry of the step (or a re-drive of the run) still never pays twice; and so is the provider's
cut answer kept as it arrived (`durapipe.stores._answers`), which another run sending the same
request would otherwise be given. A cut entry an earlier durapipe left under the memo key is
passed over, and the next whole answer replaces it (`put_over_cut` of the built-in stores): first
writer wins otherwise, and the key would hold the cut entry for its whole TTL. So is a cut provider
answer it left under the shared answer key passed over: served to the next run, it would be cut
again, and the memo would never fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from durapipe.runtime._calls import LeafCall, LeafResult, Usage
from durapipe.stores._answers import AnswerStore, keeping_answers
from durapipe.stores._keys import canonical_json


class _Store(Protocol):
    def get(self, key: str) -> LeafResult | None: ...

    def put(self, key: str, result: LeafResult) -> bool: ...


async def memoized_result(
    store: _Store,
    call: LeafCall,
    key: str,
    attempt: int,
    compute: Callable[[], Awaitable[LeafResult]],
) -> LeafResult:
    """`durapipe.stores._checkpoints.checkpointed` for a memoised pipe's call, whose ``key`` every
    run reads: a hit costs this run nothing (its usage is zero), a hit of the run's own cut answer
    keeps what the run paid for it."""
    stored = await _read(store, key)
    if stored is not None and not stored.truncated:
        return stored.model_copy(update={"cache_hit": True, "attempt": attempt, "usage": Usage()})
    scope = canonical_json([key, call.run_id, call.scope, call.path])
    own = hashlib.sha256(scope.encode()).hexdigest()
    stored = await _read(store, own)
    if stored is not None:
        return stored.model_copy(update={"cache_hit": True, "attempt": attempt})
    answers = _RunAnswers(store, own) if isinstance(store, AnswerStore) else store
    with keeping_answers(answers):
        result = await compute()
    if result.truncated:
        await asyncio.to_thread(store.put, own, result)
    else:
        # A cut entry an earlier durapipe shared under the memo key gives way to a whole answer
        # (the built-in stores, atomically); a store of the user's keeps its first writer.
        put = getattr(store, "put_over_cut", store.put)
        await asyncio.to_thread(put, key, result)
    return result


async def _read(store: _Store, key: str) -> LeafResult | None:
    get_nowait = getattr(store, "get_nowait", None)
    if get_nowait is not None:
        with contextlib.suppress(BlockingIOError):
            result: LeafResult | None = get_nowait(key)
            return result
    return await asyncio.to_thread(store.get, key)


class _RunAnswers:
    """``store``'s provider answers for one memoised step of one run: a whole answer is shared
    with every run, as the step's result is; one cut off at its output limit is kept under the
    run's own key ``own``, for a retry of this step only."""

    def __init__(self, store: AnswerStore, own: str) -> None:
        self.store = store
        self.own = own

    def _own(self, key: str) -> str:
        return "answer:" + hashlib.sha256(f"{self.own}\0{key}".encode()).hexdigest()

    def get_answer(self, key: str) -> bytes | None:
        return _pick(self.store.get_answer, key, self._own(key))

    def put_answer(self, key: str, answer: bytes) -> None:
        _keep(self.store.get_answer, self.store.put_answer, key, self._own(key), answer)

    def get_answer_nowait(self, key: str) -> bytes | None:
        return _pick(_nowait(self.store, "get_answer_nowait"), key, self._own(key))

    def put_answer_nowait(self, key: str, answer: bytes) -> None:
        get = _nowait(self.store, "get_answer_nowait")
        _keep(get, _nowait(self.store, "put_answer_nowait"), key, self._own(key), answer)


def _pick(get: Callable[[str], bytes | None], shared: str, own: str) -> bytes | None:
    """The answer kept under ``shared`` unless it is cut (an earlier durapipe shared cut answers
    too), else the run's own one under ``own``."""
    answer = get(shared)
    if answer is not None and not _cut(answer):
        return answer
    return get(own)


def _keep(
    get: Callable[[str], bytes | None],
    put: Callable[[str, bytes], None],
    shared: str,
    own: str,
    answer: bytes,
) -> None:
    """Keep a cut ``answer`` under the run's ``own`` key, a whole one under ``shared``; and under
    ``own`` too when ``shared`` holds a cut answer an earlier durapipe kept (first writer wins
    there, and `_pick` passes over it: a retry of this step still finds the answer it paid for)."""
    if _cut(answer):
        put(own, answer)
        return
    put(shared, answer)
    kept = get(shared)
    if kept is not None and _cut(kept):
        put(own, answer)


def _nowait(store: AnswerStore, method: str) -> Any:
    nowait = getattr(store, method, None)
    if nowait is None:
        raise BlockingIOError  # the caller goes to a thread
    return nowait


def _cut(answer: bytes) -> bool:
    """Whether a kept provider answer (see `durapipe.adapters._answers`) is a chat completion the
    model stopped at its output limit (finish reason ``length``, as `durapipe.activities._cutoff`
    reads it)."""
    try:
        body = json.loads(json.loads(answer)["text"])
        return bool(body["choices"][0]["finish_reason"] == "length")
    except (ValueError, TypeError, KeyError, IndexError):
        return False
