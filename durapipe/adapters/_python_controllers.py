"""The Python spelling of the parallel, batch and condition controllers.

Example:
    >>> import durapipe as dp
    >>> short = dp.llm("short", inputs={"text": str}, prompt="One line: {{ text }}")
    >>> long = dp.llm("long", inputs={"text": str}, prompt="One paragraph: {{ text }}")
    >>> both = dp.parallel("both", inputs={"text": str}, branches={"short": short, "long": long})
    >>> sorted(both.spec.branches)
    ['long', 'short']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from durapipe.adapters._python import Pipe, _types_of
from durapipe.spec._spec import (
    BatchPipe,
    Branch,
    ConditionPipe,
    ParallelPipe,
)
from durapipe.spec._types import Structures

Outcome = Pipe | Literal["fail", "continue"]


@dataclass(frozen=True)
class BranchRef:
    """A branch of a parallel pipe built in Python (see `branch`)."""

    pipe: Pipe
    inputs: Mapping[str, str] = field(default_factory=dict)


def branch(pipe: Pipe, *, inputs: Mapping[str, str] | None = None) -> BranchRef:
    """A parallel branch running ``pipe``, its inputs read from these working-memory paths."""
    return BranchRef(pipe, dict(inputs or {}))


def parallel(
    name: str,
    *,
    branches: Mapping[str, Pipe | BranchRef],
    inputs: Mapping[str, Any] | None = None,
    on_error: Literal["fail", "collect"] = "fail",
    description: str = "",
) -> Pipe:
    """A parallel pipe: its branches run at once; the output maps branch names to results.

    Args:
        name: the pipe's name.
        branches: branch name -> a pipe (inputs read by name) or a `branch`.
        inputs: input names and their types.
        on_error: ``fail`` stops at a failing branch; ``collect`` returns
            ``{"results": {...}, "errors": {branch: {"type", "message", "path"}}}``.
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}
    refs = {b: r if isinstance(r, BranchRef) else BranchRef(r) for b, r in branches.items()}
    spec = ParallelPipe(
        description=description,
        inputs=_types_of(inputs, structures),
        branches={b: Branch(pipe=r.pipe.name, inputs=dict(r.inputs)) for b, r in refs.items()},
        on_error=on_error,
    )
    return Pipe(name, spec, structures, uses=tuple(r.pipe for r in refs.values()))


def batch(
    name: str,
    *,
    over: str,
    item: str,
    pipe: Pipe,
    inputs: Mapping[str, Any] | None = None,
    pipe_inputs: Mapping[str, str] | None = None,
    max_concurrency: int = 10,
    on_error: Literal["fail", "collect"] = "fail",
    chunk_size: int = 1000,
    flatten: bool = False,
    description: str = "",
) -> Pipe:
    """A batch pipe: ``pipe`` runs once per element of the list at ``over``; order is kept.

    Args:
        name: the pipe's name.
        over: the working-memory path of the list.
        item: the name each element has for ``pipe``.
        pipe: the pipe mapped over the list (a leaf or a controller).
        inputs: the batch's input names and their types.
        pipe_inputs: where ``pipe``'s inputs come from, when not from the value of their own name.
        max_concurrency: how many elements run at once.
        on_error: ``fail`` (fail fast) or ``collect`` (see `durapipe.spec.BatchPipe`).
        chunk_size: most items (or chunks) per workflow; longer lists nest child workflows.
        flatten: ``pipe`` returns a list per element; the output joins them into one list.
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}
    spec = BatchPipe(
        description=description,
        inputs=_types_of(inputs, structures),
        over=over,
        item=item,
        pipe=pipe.name,
        pipe_inputs=dict(pipe_inputs or {}),
        max_concurrency=max_concurrency,
        on_error=on_error,
        chunk_size=chunk_size,
        flatten=flatten,
    )
    return Pipe(name, spec, structures, uses=(pipe,))


def condition(
    name: str,
    *,
    expression: str,
    outcomes: Mapping[Any, Outcome],
    default: Outcome | None = None,
    inputs: Mapping[str, Any] | None = None,
    description: str = "",
) -> Pipe:
    """A condition pipe: the value of ``expression`` picks the outcome that runs.

    Args:
        name: the pipe's name.
        expression: a Jinja2 expression over ``inputs``, e.g. ``"amount > 1000"``.
        outcomes: value -> a pipe, ``"fail"`` or ``"continue"``; ``True`` and ``"true"`` are
            the same key.
        default: the outcome when no key matches.
        inputs: input names and their types (outcome pipes read their inputs from them).
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}

    def target(outcome: Outcome) -> str:
        return outcome if isinstance(outcome, str) else outcome.name

    spec = ConditionPipe(
        description=description,
        inputs=_types_of(inputs, structures),
        expression=expression,
        outcomes={key: target(o) for key, o in outcomes.items()},
        default=target(default) if default is not None else None,
    )
    chosen = [*outcomes.values(), *([default] if default is not None else [])]
    return Pipe(name, spec, structures, uses=tuple(o for o in chosen if isinstance(o, Pipe)))
