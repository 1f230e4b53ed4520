"""The pipe kinds: each kind declared once, as a `Kind`, and looked up by name everywhere else.

A `Kind` holds the pure parts of a pipe kind: its spec class (which is also its YAML and Python
model), its default timeout and retry, its checks, the activity a leaf of it runs as and the call
message that activity takes. The one impure part, the activity body, is registered by the same
name in `durapipe.activities` (`register_activity`), so this layer never imports Temporal or I/O
code: the interpreter and the workflow see only the activity's name and its message.

Example (a leaf kind, in one module with its activity body)::

    class ShoutPipe(PipeBase):
        kind: Literal["shout"] = "shout"
        text: str

    class ShoutCall(CallBase):
        pipe: ShoutPipe

    register_kind(Kind("shout", ShoutPipe, activity="acme.shout", call=ShoutCall, timeout=10.0))

    @register_activity("acme.shout")
    async def shout(call: ShoutCall, context: CallContext) -> LeafResult:
        return LeafResult(output=call.pipe.text.upper())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from durapipe.spec._base import PipeBase, RetrySpec

# report(where, message): how a check states one problem (see `durapipe.spec.check`).
Report = Callable[[str, str], None]
# check(pipeline, pipe_name, pipe, report); the pipeline is typed Any because `Pipeline` holds
# pipes read through this registry (naming it here would make the two modules import each other).
Check = Callable[[Any, str, Any, Report], None]
# inline(pipe, inputs, structures) -> output: a step computed in the workflow itself (see `Kind`).
Inline = Callable[[Any, dict[str, Any], dict[str, Any]], Any]


class InlineError(Exception):
    """Why an inline step (`Kind.inline`) failed: the step fails with error type ``type``.

    Args:
        type: the step's error type (a ``durapipe.X`` name of `durapipe.ErrorType`, or your own).
        message: one sentence naming the field that is wrong.
    """

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type
        self.message = message


@dataclass(frozen=True)
class Kind:
    """A pipe kind, declared in one place.

    Attributes:
        name: the ``kind`` value in specs (``llm``, ``shout``); the spec class's ``kind`` literal.
        spec: the spec class: a `durapipe.spec.PipeBase` subclass with ``kind: Literal[name]``.
            YAML and workflow inputs are read into it by their ``kind``.
        controller: runs as a workflow of its own (a sequence, a batch, an agent) rather than
            as one activity per call.
        timeout: the default timeout in seconds of each call (None: none is filled in).
        retry: the default `RetrySpec` of each call (filled in with ``timeout``).
        activity: for a leaf, the name of the activity each call runs as. It is recorded in
            histories: it never changes once runs exist.
        call: for a leaf, the activity's input message (the built-in kinds' messages are the
            runtime's own cases) (a `durapipe.runtime.CallBase` subclass
            with a ``pipe`` field of ``spec``'s type; a ``structures`` field is filled when it
            has one).
        check: the kind's static checks, ``check(pipeline, pipe_name, pipe, report)``, called by
            `durapipe.spec.check` with each pipe of this kind.
        inline: for a leaf computed in the workflow itself (no activity, like ``compose``),
            ``inline(pipe, inputs, structures) -> output``, where ``structures`` are the declared
            structures the pipe's ``output`` names. It runs inside Temporal's workflow sandbox and
            is replayed: it must be deterministic and do no I/O. It fails a step by raising
            `InlineError`.
    """

    name: str
    spec: type[PipeBase]
    controller: bool = False
    timeout: float | None = None
    retry: RetrySpec | None = None
    activity: str | None = None
    call: type[BaseModel] | None = None
    check: Check | None = None
    inline: Inline | None = None

    def __post_init__(self) -> None:
        declared = self.spec.model_fields.get("kind")
        if declared is None or declared.default != self.name:
            raise ValueError(
                f"kind '{self.name}': the spec class {self.spec.__name__} must declare "
                f"kind: Literal['{self.name}'] = '{self.name}'"
            )
        if self.call is not None and self.activity is None:
            raise ValueError(
                f"kind '{self.name}': a 'call' message needs the 'activity' it goes to"
            )
        if self.inline is not None and (self.activity is not None or self.controller):
            raise ValueError(
                f"kind '{self.name}': an inline kind runs in the workflow, with no activity"
            )
        if self.retry is not None and self.timeout is None:
            raise ValueError(f"kind '{self.name}': a default 'retry' needs a default 'timeout'")


_KINDS: dict[str, Kind] = {}
# Counts the registry's changes, so what was read under one registry is told from another.
_GENERATION = [0]


def register_kind(kind: Kind) -> Kind:
    """Make ``kind`` known to every spelling, check, resolver and runtime of this process.

    Register a kind at import time of the module that declares it, on clients and workers alike
    (both read specs of it). Registering the same name again replaces it only with an equal
    `Kind` (re-importing a module is harmless); another one is an error.

    Raises:
        ValueError: another kind is registered under this name, or another kind uses the activity.
    """
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"pipe kind '{kind.name}' is already registered (by {known.spec!r})")
    for other in _KINDS.values():
        if kind.activity and other.name != kind.name and other.activity == kind.activity:
            raise ValueError(
                f"kind '{kind.name}': activity '{kind.activity}' already runs kind '{other.name}'"
            )
    if known is None:
        _KINDS[kind.name] = kind
        _GENERATION[0] += 1
    return kind


def unregister_kind(name: str) -> None:
    """Forget kind ``name`` (for tests that register a throwaway kind)."""
    if _KINDS.pop(name, None) is not None:
        _GENERATION[0] += 1


def kinds_generation() -> int:
    """A number that changes whenever a kind is registered or forgotten: a spec read under one
    generation reads the same under it again (a pipe of an unknown kind, for one)."""
    return _GENERATION[0]


def kinds() -> Mapping[str, Kind]:
    """Every registered kind by name, in registration order (the built-in kinds first)."""
    return dict(_KINDS)


def kind_of(name: str) -> Kind | None:
    """The registered kind ``name`` (None when no module registered it in this process)."""
    return _KINDS.get(name)


def is_controller_kind(name: str) -> bool:
    """Whether pipes of kind ``name`` run as a workflow of their own."""
    kind = _KINDS.get(name)
    return kind is not None and kind.controller


# The controller kinds' names under the registry generation they were read under.
_CONTROLLERS: tuple[int, frozenset[str]] = (-1, frozenset())


def controller_kinds() -> frozenset[str]:
    """The names of the kinds whose pipes run as a workflow of their own: `is_controller_kind`
    for a scan of many step records (a run's totals count its finished leaf steps every time they
    are upserted), as a set read again only when the registry changed."""
    global _CONTROLLERS
    generation, names = _CONTROLLERS
    if generation != _GENERATION[0]:
        names = frozenset(name for name, kind in _KINDS.items() if kind.controller)
        _CONTROLLERS = (_GENERATION[0], names)
    return names


class UnknownPipe(PipeBase):
    """A pipe of a kind this process does not know, kept as read where a run's recorded spec is
    read (`lenient_kinds`), so the interpreter can fail its step with one sentence."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str


_LENIENT: ContextVar[bool] = ContextVar("durapipe_lenient_kinds", default=False)


@contextmanager
def lenient_kinds() -> Iterator[None]:
    """Read pipes of unknown kinds as `UnknownPipe` instead of failing (a worker reading a run).

    A pipeline a user writes must name known kinds; a run a worker receives may name a kind only
    its client registered, and failing to read it would fail the workflow task again and again.
    """
    token = _LENIENT.set(True)
    try:
        yield
    finally:
        _LENIENT.reset(token)


def reading_leniently() -> bool:
    """Whether pipes of unknown kinds are being read as `UnknownPipe` (see `lenient_kinds`)."""
    return _LENIENT.get()
