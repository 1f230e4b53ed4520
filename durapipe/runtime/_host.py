"""What the runtime needs from outside (`Runtime`: activities and child runs, time, patches) and
what the controllers and the agent loop need from the interpreter (`Host`).

Both are protocols so that the interpreter, its controllers and the agent loop depend on this module
instead of on each other.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Protocol, TypeVar

from durapipe.runtime._approvals import ApprovalDecision, ApprovalRequest
from durapipe.runtime._calls import (
    LeafCall,
    LeafResult,
    PipeRun,
    RunResult,
    StepRecord,
    StepStatus,
    Usage,
)
from durapipe.runtime._steps import Steps
from durapipe.spec._types import StructureSpec

T = TypeVar("T")


class Runtime(Protocol):
    """Where the interpreter sends work: activities and child runs."""

    async def leaf(self, call: LeafCall) -> LeafResult:
        """Run one leaf call with its timeout and retry policy; raise `StepFailed` when it fails."""
        ...

    async def child(self, run: PipeRun) -> RunResult:
        """Run a nested controller; raise `StepFailed` when one of its steps fails."""
        ...

    async def approval(self, request: ApprovalRequest) -> ApprovalDecision:
        """Wait for a human decision on an approval step (or its timeout's default)."""
        ...

    def now(self) -> datetime:
        """The current time (workflow time on Temporal)."""
        ...

    async def step_starting(self, record: StepRecord) -> None:
        """Called before a step starts; may wait (a paused run) or raise `RunCancelled`."""
        ...

    def step_finished(self, record: StepRecord) -> None:
        """Called when a step has succeeded or failed (its record is final)."""
        ...

    def continue_as_new_suggested(self, turns: int) -> bool:
        """Whether a loop that made ``turns`` turns in this run should go on in a fresh history."""
        ...

    def patched(self, change: str) -> bool:
        """Whether this run takes the new code path of ``change`` (on Temporal, False while
        replaying a run recorded before the change; in-process, always True)."""
        ...

    async def steps_allowed(self, run: PipeRun, asks: bool) -> tuple[int | None, bool]:
        """The steps ``run`` may start (None: no cap), and whether that is the worker's whole
        cap (a top-level run's) rather than a share its parent gave. ``asks``: whether the run
        may need more than `STEPS_ALWAYS_ALLOWED` (a top-level run that asks for no more is
        given that many, without asking the worker)."""
        ...


class Host(Protocol):
    """The interpreter as its controllers and the agent loop see it: the run, its step records and
    usage, and the calls that plan, run and track steps."""

    run: PipeRun
    runtime: Runtime
    records: dict[str, StepRecord]
    usage: Usage
    steps: Steps

    def snapshot(self) -> list[StepRecord]:
        """The step records so far, in plan order."""
        ...

    def plan(self, path: str, pipe_name: str) -> None:
        """Record step ``path`` as pending."""
        ...

    def keep(self, record: StepRecord) -> None:
        """Keep ``record`` in the run's records (records change only through the host)."""
        ...

    def set_status(self, record: StepRecord, status: StepStatus) -> None:
        """Set ``record``'s status (statuses change only through the host)."""
        ...

    async def step(self, path: str, pipe_name: str, inputs: dict[str, Any]) -> Any:
        """Run step ``path`` (pipe ``pipe_name``) on ``inputs``."""
        ...

    def read(self, path: str, kind: str, memory: dict[str, Any], source: str) -> Any:
        """The value at working-memory path ``source``, or `StepFailed` naming step ``path``."""
        ...

    def inputs_for(
        self, path: str, pipe_name: str, memory: dict[str, Any], mapping: dict[str, str]
    ) -> dict[str, Any]:
        """The inputs of pipe ``pipe_name`` read from ``memory``."""
        ...

    async def track(self, record: StepRecord, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` as the step ``record`` describes, keeping its status and times."""
        ...

    async def leaf(self, call: LeafCall, record: StepRecord) -> Any:
        """Run one leaf call through the runtime and put what it spent on ``record``."""
        ...

    def structures_for(self, type_refs: list[str]) -> dict[str, StructureSpec]:
        """The declared structures these types need."""
        ...
