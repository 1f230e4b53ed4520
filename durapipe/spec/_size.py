"""How many steps a run of a pipe starts: what a worker's cap on one run's size counts.

A step is what a run's step records list: a leaf call (llm, tool, extract, image, agent), an
approval, a compose, a nested controller (each a child workflow on Temporal), and an agent's turns
and tool calls. A pipe's size is known from the spec alone, except a batch's items (they count
when the batch starts, once its list is read) and an agent's turns and tool calls (each counts
before it starts; see `durapipe.runtime.Steps`).
"""

from __future__ import annotations

from durapipe.spec._spec import (
    AgentPipe,
    BatchPipe,
    ConditionPipe,
    ParallelPipe,
    Pipeline,
    SequencePipe,
    pipes_used,
)


class RunSize:
    """The steps the pipes of one spec start, worked out once per pipe (memoised: 30 nested
    two-branch parallels are 30 sums, not 2^30 visits).

    The spec's calls must nest at most `MAX_PIPE_DEPTH` deep and hold no cycle (see
    `durapipe.spec._validate.call_problem`, which a run checks first): the walk recurses.
    """

    __slots__ = ("_batches", "_inside", "spec")

    def __init__(self, spec: Pipeline) -> None:
        self.spec = spec
        self._inside: dict[str, int] = {}
        self._batches: dict[str, bool] = {}

    def run(self, name: str) -> int:
        """The steps a run of pipe ``name`` starts before any batch's items: a leaf run is its one
        step; a controller's are its steps and theirs (a condition's largest outcome)."""
        pipe = self.spec.pipes[name]
        return self.inside(name) if _controller(pipe) else 1

    def inside(self, name: str) -> int:
        """The steps pipe ``name`` starts inside itself (not counting its own step)."""
        known = self._inside.get(name)
        if known is not None:
            return known
        pipe = self.spec.pipes[name]
        if isinstance(pipe, (SequencePipe, ParallelPipe)):
            size = sum(1 + self.inside(child) for child in pipes_used(pipe))
        elif isinstance(pipe, ConditionPipe):
            size = max((1 + self.inside(child) for child in pipes_used(pipe)), default=0)
        else:  # a leaf, an agent (its turns count as they start), a batch (see `item`)
            size = 0
        self._inside[name] = size
        return size

    def item(self, batch: BatchPipe) -> int:
        """The steps each item of ``batch`` starts: its step, and the steps inside it."""
        return 1 + self.inside(batch.pipe)

    def grows(self, name: str) -> bool:
        """Whether a run of pipe ``name`` reaches a batch or an agent, whose items, turns and tool
        calls count only once they start."""
        known = self._batches.get(name)
        if known is not None:
            return known
        pipe = self.spec.pipes[name]
        found = isinstance(pipe, (BatchPipe, AgentPipe)) or any(
            self.grows(child) for child in pipes_used(pipe) if child in self.spec.pipes
        )
        self._batches[name] = found
        return found


def _controller(pipe: object) -> bool:
    return isinstance(pipe, (SequencePipe, ParallelPipe, ConditionPipe, BatchPipe))
