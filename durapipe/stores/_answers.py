"""Provider answers kept as they arrive: where they are kept, and which store a call keeps them in.

The checkpoint stores keep, beside each step's result, the raw provider answers of its requests
(`AnswerStore`); `keeping_answers` tells the HTTP transport (`durapipe.adapters._answers`) which
store the current step keeps them in. See that module for why.
"""

from __future__ import annotations

import contextvars
import hashlib
import typing
from typing import Protocol, runtime_checkable

IDEMPOTENCY_HEADER = "X-Durapipe-Idempotency-Key"
"""The header carrying a step's checkpoint key to the provider; answers are kept under it."""


@runtime_checkable
class AnswerStore(Protocol):
    """A checkpoint store that can also keep raw provider answers (the built-in ones do)."""

    def get_answer(self, key: str) -> bytes | None:
        """The answer kept under ``key``, if any."""
        ...

    def put_answer(self, key: str, answer: bytes) -> None:
        """Keep ``answer`` under ``key`` (the first one kept stays)."""
        ...


_store: contextvars.ContextVar[AnswerStore | None] = contextvars.ContextVar(
    "durapipe_answer_store", default=None
)


class keeping_answers:
    """Within the block, provider answers of requests durapipe sends are kept in ``store``.

    A context variable carries the store to the HTTP transport, so concurrent steps of one worker
    each keep theirs in their own run's store. A class, not a generator context manager: it is
    entered once per leaf, and the generator's machinery cost as much again as the work.
    """

    __slots__ = ("_store", "_token")

    def __init__(self, store: object) -> None:
        self._store = store
        self._token: contextvars.Token[AnswerStore | None] | None = None

    def __enter__(self) -> None:
        if _keeps_answers(type(self._store)):
            self._token = _store.set(typing.cast(AnswerStore, self._store))

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _store.reset(self._token)


_KEEPS_ANSWERS: dict[type[object], bool] = {}


def _keeps_answers(kind: type[object]) -> bool:
    # Once per store class: an isinstance check against a runtime-checkable protocol looks up
    # every method each time, which was measurable per step.
    known = _KEEPS_ANSWERS.get(kind)
    if known is None:
        names = ("get_answer", "put_answer")
        known = _KEEPS_ANSWERS[kind] = all(callable(getattr(kind, n, None)) for n in names)
    return known


def answer_store() -> AnswerStore | None:
    """The store the current step keeps provider answers in, if any."""
    return _store.get()


def answer_key(idempotency_key: str, body: bytes) -> str:
    """Where the answer to one request is kept: its step's key and the hash of what it sent."""
    return "answer:" + hashlib.sha256(idempotency_key.encode() + b"\0" + body).hexdigest()
