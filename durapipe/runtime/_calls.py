"""What travels between the client, workflows and activities: one model per message.

These are the payloads Temporal records in history (via the pydantic data converter), so they are
plain data: no callables, no clients, nothing that changes meaning when code is edited.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    model_serializer,
    model_validator,
)

from durapipe._errors import StepFailed
from durapipe.spec import Pipeline, is_controller_kind
from durapipe.spec._kinds import lenient_kinds
from durapipe.spec._messages import (
    AgentTurnCall,
    CallBase,
    ExtractCall,
    ImageCall,
    LlmCall,
    ToolCall,
)

__all__ = [
    "AgentTurnCall",
    "BatchSlice",
    "CallBase",
    "ExtractCall",
    "FailedAttempt",
    "ImageCall",
    "LeafCall",
    "LeafResult",
    "LlmCall",
    "PipeRun",
    "RunResult",
    "StepFailure",
    "StepRecord",
    "ToolCall",
    "Usage",
    "spent_by",
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchSlice(_Message):
    """A contiguous part of a batch's list, run by a child workflow of the batch.

    Attributes:
        offset: the index of the first item in the whole list (item paths use whole-list indexes).
        items: the items of this part.
        max_concurrency: this part's share of the batch's ``max_concurrency`` (None: all of it).
    """

    offset: int = 0
    items: list[Any] = Field(default_factory=list)
    max_concurrency: int | None = None


WORKFLOW_VERSION = 5
"""The workflow behaviour a run started by this code asks for (`PipeRun.workflow_version`)."""


class PipeRun(_Message):
    """The input of a pipe workflow: which pipe, its resolved spec, its inputs, and where it sits.

    Attributes:
        run_id: the id of the top-level run (the top-level workflow id).
        path: the step path of this pipe inside the run; empty for the top-level pipe.
        pipe: the name of the pipe to run.
        spec: the resolved spec (only the pipes this run reaches).
        inputs: the pipe's input values.
        resume: where a run continued-as-new picks up (an agent's transcript); None at the start.
        budget_usd: what this part of the run may still spend (None: no budget).
        slice: for a batch pipe run as a chunk of a larger batch, the items it maps.
        scope: a random id of this run, made when it starts and kept by a re-drive of it
            (``durapipe retry`` reuses the recorded input): it scopes the run's checkpoints, so a
            new run that reuses the run id does not get the earlier run's answers.
        workflow_version: the workflow behaviour the run was started with. 0 (runs recorded
            before the field) decides each change by ``workflow.patched``; 1 has every change up
            to ``durapipe.totals-from-start`` in force without a patch marker (each marker costs a
            run two history events: the marker and Temporal's ``TemporalChangeVersion`` upsert).
            2 is 1 with fewer search attributes at the start: the client sets only the pipe, and
            the run's first upsert (2 s in, or at its end) sets its totals. 3 is 2 with
            ``searchable_totals``. 4 is 3 with every later change in force without a marker
            but ``durapipe.max-run-usd`` (whose marker says the starting worker had a cap).
        searchable_totals: whether the run upserts its totals as search attributes (version 3 and
            later; older runs always do). Off, a run's workflow upserts nothing, so its history
            holds the events of the same work written by hand; `durapipe runs` and `show` read
            its totals from the run itself. The client that starts the run chooses.
    """

    run_id: str
    path: str = ""
    pipe: str
    spec: Pipeline
    inputs: dict[str, Any] = Field(default_factory=dict)
    resume: dict[str, Any] | None = None
    budget_usd: float | None = None
    slice: BatchSlice | None = None
    # Histories recorded before scopes existed hold none: their checkpoints are scoped by run id.
    scope: str = ""
    workflow_version: int = 0
    # Written only when off: an input with it on is the bytes of version 2 but for the version,
    # so a worker of version 2 decodes it and refuses it by its version (the upgrade sentence)
    # instead of failing on a field it lacks; runs recorded before it hold none.
    searchable_totals: bool = Field(default=True, exclude_if=lambda on: on is True)
    # A nested run's allowance of steps (see `durapipe.runtime.Steps`), set by its parent; a
    # top-level run's is its worker's cap, whatever its input says. None: runs recorded before.
    steps_left: int | None = Field(default=None, exclude_if=lambda left: left is None)
    # The worker's cap on the run's spend (DURAPIPE_MAX_RUN_USD), already in ``budget_usd``: kept
    # so that a refusal names it. Set by the run's workflow, never read from a top-level input.
    spend_cap: float | None = Field(default=None, exclude_if=lambda cap: cap is None)
    # A nested run its parent started while paused (a batch's next chunk, since patch
    # ``durapipe.start-paused``): it starts paused, so none of its steps starts before the parent's
    # resume reaches it. Never read from a top-level input. Written only when set.
    paused: bool = Field(default=False, exclude_if=lambda paused: paused is False)

    @model_validator(mode="wrap")
    @classmethod
    def _lenient_kinds(cls, data: Any, handler: ModelWrapValidatorHandler[PipeRun]) -> PipeRun:
        # A worker reads a pipe of a kind it lacks as UnknownPipe, so the interpreter fails that
        # step at once (durapipe.UnknownKind) instead of the workflow task failing forever.
        with lenient_kinds():
            return handler(data)


# Every leaf call is a CallBase (each kind's message is declared with its kind, in spec/_messages).
LeafCall = LlmCall | ToolCall | ExtractCall | ImageCall | AgentTurnCall | CallBase


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


class FailedAttempt(_Message):
    """What one attempt of a step spent before it failed: answers the provider billed (an answer
    that never fit its type, a re-ask whose next request failed, an image whose download failed).

    Attributes:
        attempt: the attempt, from 1.
    """

    attempt: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def usage(self) -> Usage:
        """The attempt's spend as a `Usage`."""
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
        )


def failed_spend(attempts: list[FailedAttempt]) -> Usage:
    """What ``attempts`` spent together."""
    total = Usage()
    for attempt in attempts:
        total += attempt.usage
    return total


# Key of what failed attempts spent in a leaf activity's failure details: a list of
# `FailedAttempt` dicts. A provider bills an answer whether or not the step then succeeds, so the
# run counts them in the step's record, its totals and its budget.
SPENT_DETAIL = "durapipe.spent"


def spend_detail(attempts: list[FailedAttempt]) -> dict[str, Any]:
    """The failure detail that carries what failed attempts spent (read by `spent_in`)."""
    return {SPENT_DETAIL: [a.model_dump(mode="json") for a in attempts]}


def spent_in(details: Iterable[object]) -> list[FailedAttempt]:
    """The failed attempts' spend a failure's details carry; none from a worker of before it, or
    from details it did not write."""
    found: list[FailedAttempt] = []
    for detail in details:
        entries = detail.get(SPENT_DETAIL) if isinstance(detail, dict) else None
        if not isinstance(entries, list):
            continue
        for entry in entries:
            try:
                found.append(FailedAttempt.model_validate(entry))
            except ValueError:
                continue  # not one this code wrote: nothing to count
    return found


def _empty(value: object) -> bool:
    return not value


class LeafResult(_Message):
    """The output of a leaf activity, with what it cost.

    ``usage`` is what the attempt that succeeded spent; ``failed_attempts``, what earlier attempts
    of the step spent before they failed (known to a local run's retries: see `spent`).
    ``truncated``: the model stopped the answer at its output limit (a text answer, kept as it is).
    """

    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None
    attempt: int = 1
    cache_hit: bool = False
    # Left out when empty: a result dumps as before (histories and checkpoints hold those bytes).
    failed_attempts: list[FailedAttempt] = Field(default_factory=list, exclude_if=_empty)
    truncated: bool = Field(default=False, exclude_if=_empty)

    @property
    def spent(self) -> Usage:
        """Everything the step spent: the attempt that succeeded and the failed ones before it."""
        if not self.failed_attempts:
            return self.usage
        return self.usage + failed_spend(self.failed_attempts)

    @model_serializer(mode="plain", when_used="json")
    def _without_defaults(self) -> dict[str, Any]:
        # Every leaf's result goes through Temporal (history, bridge, converter) and into the
        # checkpoint store: a first-attempt answer with every default spelled out was 148 bytes
        # of JSON where 103 say the same. Read back, the defaults are filled in again.
        # Python-mode dumps (records, CLI output) keep every field: this runs for JSON only.
        # Built field by field, not by trimming the full dump (a wrap serializer): that dumped
        # each result twice, the second time from the dict, and cost twice as much.
        data: dict[str, Any] = {"output": self.output}
        usage = self.usage
        spent: dict[str, Any] = {}
        if usage.input_tokens:
            spent["input_tokens"] = usage.input_tokens
        if usage.output_tokens:
            spent["output_tokens"] = usage.output_tokens
        if usage.cost_usd:
            spent["cost_usd"] = usage.cost_usd
        if spent:
            data["usage"] = spent
        if self.model is not None:
            data["model"] = self.model
        if self.attempt != 1:
            data["attempt"] = self.attempt
        if self.cache_hit:
            data["cache_hit"] = self.cache_hit
        if self.failed_attempts:
            data["failed_attempts"] = [a.model_dump(mode="json") for a in self.failed_attempts]
        if self.truncated:
            data["truncated"] = True
        return data


# The JSON of the last leaf result `result_json` dumped in this task (an activity's: the checkpoint
# store dumps the result it keeps), and the result itself. The activity returns that very object
# right after, and the data converter sends these bytes for it (`dumped_json`) instead of dumping
# the result a second time. Per task (a context variable), so concurrent activities each find
# their own; matched by identity, so another result (a copy, a replay's) is dumped afresh.
_DUMPED: ContextVar[tuple[LeafResult, bytes] | None] = ContextVar(
    "durapipe_dumped_result", default=None
)


def result_json(result: LeafResult) -> bytes:
    """``result`` as JSON (the bytes the data converter would send for it), kept for this task's
    data converter (see `dumped_json`)."""
    data = result.__pydantic_serializer__.to_json(result)
    _DUMPED.set((result, data))
    return data


def dumped_json(value: object) -> bytes | None:
    """The JSON `result_json` made in this task, if ``value`` is the result it dumped."""
    kept = _DUMPED.get()
    return kept[1] if kept is not None and kept[0] is value else None


StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled", "waiting"]


class StepRecord(_Message):
    """What one step of a run did.

    ``attempts`` is the attempt the step ended on, as in the history (a failed step included).
    A step that stands for many items (a batch) may report ``counts``, the number of its items in
    each status (``{"succeeded": 998, "failed": 2}``), instead of one record per item; its tokens
    and cost are then the items' totals.

    Tokens and cost are everything the step spent, failed attempts included: what each attempt
    spent before it failed is also listed in ``failed_attempts`` (a failed step's last attempt
    among them).

    ``truncated``: the model stopped the step's text answer at its output limit; the step's output
    is that answer as it was cut (a cut-off answer that cannot be used fails the step instead, with
    ``durapipe.OutputTruncated``).
    """

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
    # Histories recorded before this field had a default hold null: read it as empty.
    counts: Annotated[dict[str, int], BeforeValidator(lambda v: v or {})] = Field(
        default_factory=dict
    )
    waiting_for: str | None = None
    # Left out when empty, so records without it read as before (on clients of before it, too).
    failed_attempts: list[FailedAttempt] = Field(default_factory=list, exclude_if=_empty)
    # Left out when false, like ``failed_attempts``.
    truncated: bool = Field(default=False, exclude_if=_empty)


def spent_by(records: Iterable[StepRecord]) -> Usage:
    """What these step records spent: leaves and batch summaries (a nested run's record repeats
    what its own steps spent, so it is not added again)."""
    total = Usage()
    for record in records:
        if record.counts or not is_controller_kind(record.kind):
            total += Usage(
                input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                cost_usd=record.cost_usd,
            )
    return total


class RunResult(_Message):
    """The output of a pipe workflow (or a local run): the value, the spend, and every step."""

    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    steps: list[StepRecord] = Field(default_factory=list)
    # The steps a nested run held against its allowance (see `durapipe.runtime.Steps`), so its
    # parent counts them; None: a top-level run, or one recorded before.
    steps_held: int | None = Field(default=None, exclude_if=lambda held: held is None)


class StepFailure(_Message):
    """Details attached to a failed pipe workflow, so the parent can name the failed step."""

    path: str
    kind: str
    model: str | None = None
    cause_type: str
    cause: str
    attempts: int = 0
    steps: list[StepRecord] = Field(default_factory=list)

    @classmethod
    def of(cls, err: StepFailed) -> StepFailure:
        """The details of a `StepFailed`, to attach to a workflow failure."""
        return cls(
            path=err.path,
            kind=err.kind,
            model=err.model,
            cause_type=err.cause_type,
            cause=err.cause,
            attempts=err.attempts,
            steps=err.steps,
        )

    def error(self, run_id: str = "") -> StepFailed:
        """The `StepFailed` these details describe (in a parent workflow or on the client)."""
        return StepFailed(
            path=self.path,
            kind=self.kind,
            model=self.model,
            cause_type=self.cause_type,
            cause=self.cause,
            attempts=self.attempts,
            run_id=run_id,
            steps=list(self.steps),
        )
