"""The results of memoised pipes (``memoize: true``), which every run reads by content.

An answer cut off at its output limit (``truncated``) is not shared: the next run may have a
higher limit (a worker's cap is not part of the key), and would be given the cut text as if it
were whole. It is kept for its own run, under the memo key, the run's scope and the step path, so
a retry of the step (or a re-drive of the run) still never pays twice; and so is the provider's
cut answer kept as it arrived (`durapipe.stores._answers`), which another run sending the same
request would otherwise be given. A cut entry an earlier durapipe left under the memo key is
passed over.
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
    await asyncio.to_thread(store.put, own if result.truncated else key, result)
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
        return self.store.get_answer(key) or self.store.get_answer(self._own(key))

    def put_answer(self, key: str, answer: bytes) -> None:
        self.store.put_answer(self._own(key) if _cut(answer) else key, answer)

    def get_answer_nowait(self, key: str) -> bytes | None:
        nowait = _nowait(self.store, "get_answer_nowait")
        answer: bytes | None = nowait(key) or nowait(self._own(key))
        return answer

    def put_answer_nowait(self, key: str, answer: bytes) -> None:
        nowait = _nowait(self.store, "put_answer_nowait")
        nowait(self._own(key) if _cut(answer) else key, answer)


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
