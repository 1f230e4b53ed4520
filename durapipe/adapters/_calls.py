"""What travels between the client, workflows and activities: one model per message.

These are the payloads Temporal records in history (via the pydantic data converter), so they are
plain data: no callables, no clients, nothing that changes meaning when code is edited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from durapipe.pipes import LlmPipe, Pipeline, ToolPipe
from durapipe.pipes._types import StructureSpec


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchSlice(_Message):
    """A contiguous part of a batch's list, run by a child workflow of the batch.

    Attributes:
        offset: the index of the first item in the whole list (item paths use whole-list indexes).
        items: the items of this part.
    """

    offset: int = 0
    items: list[Any] = Field(default_factory=list)


class PipeRun(_Message):
    """The input of a pipe workflow: which pipe, its resolved spec, its inputs, and where it sits.

    Attributes:
        run_id: the id of the top-level run (the top-level workflow id).
        path: the step path of this pipe inside the run; empty for the top-level pipe.
        pipe: the name of the pipe to run.
        spec: the resolved spec (only the pipes this run reaches).
        inputs: the pipe's input values.
        slice: for a batch pipe run as a chunk of a larger batch, the items it maps.
    """

    run_id: str
    path: str = ""
    pipe: str
    spec: Pipeline
    inputs: dict[str, Any] = Field(default_factory=dict)
    slice: BatchSlice | None = None


class _Call(_Message):
    run_id: str
    path: str
    pipe_name: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class LlmCall(_Call):
    """The input of the ``durapipe.llm`` activity."""

    pipe: LlmPipe
    structures: dict[str, StructureSpec] = Field(default_factory=dict)


class ToolCall(_Call):
    """The input of the ``durapipe.tool`` activity."""

    pipe: ToolPipe
    structures: dict[str, StructureSpec] = Field(default_factory=dict)


LeafCall = LlmCall | ToolCall


class Usage(_Message):
    """Tokens and money a step (or a run) spent."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class LeafResult(_Message):
    """The output of a leaf activity, with what it cost."""

    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None
    attempt: int = 1
    cache_hit: bool = False


StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled", "waiting"]


class StepRecord(_Message):
    """What one step of a run did."""

    path: str
    pipe: str
    kind: str
    status: StepStatus = "pending"
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: bool = False
    error_type: str | None = None
    error: str | None = None
    # For a large batch, one row stands for all its items: how many ended in each status.
    counts: dict[str, int] = Field(default_factory=dict)


class RunResult(_Message):
    """The output of a pipe workflow (or a local run): the value, the spend, and every step."""

    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    steps: list[StepRecord] = Field(default_factory=list)


class StepFailure(_Message):
    """Details attached to a failed pipe workflow, so the parent can name the failed step."""

    path: str
    kind: str
    model: str | None = None
    cause_type: str
    cause: str
    steps: list[StepRecord] = Field(default_factory=list)
