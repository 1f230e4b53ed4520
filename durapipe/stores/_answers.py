"""Provider answers kept as they arrive: where they are kept, and which store a call keeps them in.

The checkpoint stores keep, beside each step's result, the raw provider answers of its requests
(`AnswerStore`); `keeping_answers` tells the HTTP transport (`durapipe.adapters._answers`) which
store the current step keeps them in. See that module for why.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import typing
from collections.abc import Iterator
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


@contextlib.contextmanager
def keeping_answers(store: object) -> Iterator[None]:
    """Within the block, provider answers of requests durapipe sends are kept in ``store``.

    A context variable carries the store to the HTTP transport, so concurrent steps of one worker
    each keep theirs in their own run's store.
    """
    if not _keeps_answers(type(store)):
        yield
        return
    token = _store.set(typing.cast(AnswerStore, store))
    try:
        yield
    finally:
        _store.reset(token)


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
