"""Activity bodies of registered pipe kinds, by activity name (the I/O half of a `Kind`).

A kind's pure half (spec class, defaults, checks, call message, activity name) is a
`durapipe.spec.Kind`; its body is registered here under the same activity name, so the spec layer
never imports this one. Every worker's `Activities.all()` and every local run find the body here:
the same code runs on Temporal and with ``--local``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from durapipe.runtime._calls import CallBase, LeafResult
from durapipe.spec._deck import ModelDeck
from durapipe.spec._kinds import kinds
from durapipe.stores._checkpoints import CheckpointStore


@dataclass(frozen=True)
class CallContext:
    """What a worker (or a local run) gives a registered activity body besides its call.

    Attributes:
        attempt: the attempt number, from 1 (Temporal's, or the local runner's).
        checkpoints: the worker's checkpoint store (None: checkpoints are off).
        deck: the worker's connection settings per model.
        tools: the worker's tool functions by ``module:name`` reference.
    """

    attempt: int
    checkpoints: CheckpointStore | None
    deck: ModelDeck | None
    tools: Mapping[str, Callable[..., Any]]


ActivityBody = Callable[[Any, CallContext], Awaitable[LeafResult]]
B = TypeVar("B", bound=ActivityBody)

_BODIES: dict[str, ActivityBody] = {}
# Activities whose calls count in the worker's usage metrics (`record_usage`): the ones that
# spend provider tokens or run user tools, as before bodies were registered by name.
_METERED: set[str] = set()


def register_activity(name: str, *, metered: bool = False) -> Callable[[B], B]:
    """Register the body of activity ``name``: ``async def body(call, context) -> LeafResult``.

    ``name`` is the ``activity`` of a registered `durapipe.spec.Kind`, whose ``call`` is the
    message the body takes. ``metered``: on a worker, each successful call adds its tokens,
    cost and cache hit to the worker's metrics (labelled with the kind and model).

    Example:
        >>> @register_activity("acme.shout")  # doctest: +SKIP
        ... async def shout(call: ShoutCall, context: CallContext) -> LeafResult:
        ...     return LeafResult(output=call.pipe.text.upper())
    """

    def add(body: B) -> B:
        known = _BODIES.get(name)
        if known is not None and known is not body:
            raise ValueError(f"activity '{name}' already has a body ({known.__qualname__})")
        _BODIES[name] = body
        if metered:
            _METERED.add(name)
        return body

    return add


def unregister_activity(name: str) -> None:
    """Forget the body of activity ``name`` (for tests that register a throwaway kind)."""
    _BODIES.pop(name, None)
    _METERED.discard(name)


def is_metered(name: str) -> bool:
    """Whether activity ``name``'s calls count in the worker's usage metrics."""
    return name in _METERED


def activity_body(name: str) -> ActivityBody | None:
    """The registered body of activity ``name`` (None: no module registered one)."""
    return _BODIES.get(name)


def registered_activities() -> dict[str, tuple[type[CallBase], ActivityBody]]:
    """Each registered body whose kind is registered too: activity name -> (message, body)."""
    found: dict[str, tuple[type[CallBase], ActivityBody]] = {}
    for kind in kinds().values():
        body = _BODIES.get(kind.activity or "")
        if body is not None and kind.call is not None and issubclass(kind.call, CallBase):
            found[kind.activity or ""] = (kind.call, body)
    return found
