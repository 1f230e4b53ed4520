"""The leaf call messages: what each leaf kind's activity takes (declared with its `Kind`).

They are pure data over the spec classes (recorded in histories by the pydantic data converter:
field names, never class names), so they live beside the specs, and a `Kind` can name its message
without the spec layer importing the runtime. `durapipe.runtime` re-exports them.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    field_serializer,
)

from durapipe.spec._base import PipeBase
from durapipe.spec._spec import (
    AgentPipe,
    ExtractPipe,
    ImagePipe,
    LimitRule,
    LlmPipe,
    ToolPipe,
)
from durapipe.spec._types import StructureSpec


class CallBase(BaseModel):
    """What every leaf call message carries; a kind's message adds ``pipe: ItsPipe`` (and
    ``structures`` when its types may name declared structures).

    Attributes:
        run_id: the top-level run's id.
        scope: the run's scope (see `PipeRun`).
        path: the step path of the call.
        pipe_name: the name of the pipe called.
        inputs: the pipe's input values.
        summary: the UI label when the default (kind and path) would not read well.
        limits: the provider limits this call shares with every other matching call.
        pipe: the pipe's resolved spec.
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    scope: str = ""
    path: str
    pipe_name: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    # E.g. an agent's tool call, which reads better as the tool's name than as a path.
    summary: str | None = None
    limits: list[LimitRule] = Field(default_factory=list)
    pipe: PipeBase


def _empty(value: object) -> bool:
    return not value


# The pipe fields an llm call's activity never reads: the workflow declares and checks the inputs'
# types, schedules the retries, routes to the queue and keeps the budget; the description is for
# people. The activity reads them back as their defaults (its call is the same call to the model,
# the same checkpoint key). 56 of the 290 bytes a one-line batch item's input took.
WORKFLOW_ONLY: set[str] = {"description", "inputs", "retry", "queue", "budget_usd"}


def pipe_on_the_wire(pipe: LlmPipe) -> dict[str, Any]:
    """What an llm call's JSON carries for ``pipe``: no defaults, nothing in `WORKFLOW_ONLY`."""
    return pipe.model_dump(mode="json", exclude_defaults=True, exclude=WORKFLOW_ONLY)


# The wire form of one pipe, made once by a caller that serializes many calls of it (the workflow:
# a call per step, each dumping the same pipe again was ~1.5 us of its ~3 us of JSON). Lent while
# that caller serializes (`lend_wire_pipe`), and only to calls of that very pipe object. A task
# made during the loan copies the context with it (the SDK's activity handle is one) and holds the
# loan for its life: harmless, since a frozen pipe's wire form is a pure function of the object.
# A token, not a context manager: the generator of one cost ~1 us, most of what the loan saves.
_LENT: ContextVar[tuple[PipeBase, dict[str, Any]] | None] = ContextVar(
    "durapipe_lent_wire_pipe", default=None
)
LentPipe = Token[tuple[PipeBase, dict[str, Any]] | None]


def lend_wire_pipe(pipe: PipeBase, wire: dict[str, Any]) -> LentPipe:
    """Serialize llm calls of ``pipe`` with ``wire`` (its `pipe_on_the_wire`, made earlier and not
    changed since: a frozen pipe's dump is a pure function of it) instead of dumping it again,
    until `end_loan` is called with the token returned. Call it right before serializing, in a
    ``try`` whose ``finally`` ends the loan."""
    return _LENT.set((pipe, wire))


def end_loan(token: LentPipe) -> None:
    """Stop lending the pipe `lend_wire_pipe` lent."""
    _LENT.reset(token)


class LlmCall(CallBase):
    """The input of the ``durapipe.llm`` activity."""

    # Every llm step's input goes through Temporal (history, bridge, converter): its pipe with
    # every default spelled out was half of it (436 bytes for a one-line step, 219 without), so
    # the pipe travels without its defaults and empty fields not at all. Read back, the defaults
    # are filled in again: the same call. Field-level rules, not a wrap serializer over the whole
    # call: the workflow serializes one per step, and the wrap took 15 us of its 10 (pydantic
    # re-inferred the types of the dict the wrap returned).
    summary: str | None = Field(default=None, exclude_if=_empty)
    limits: list[LimitRule] = Field(default_factory=list, exclude_if=_empty)
    pipe: LlmPipe
    structures: dict[str, StructureSpec] = Field(default_factory=dict, exclude_if=_empty)

    @field_serializer("pipe", mode="plain")
    def _pipe_without_defaults(self, pipe: LlmPipe, info: SerializationInfo) -> dict[str, Any]:
        # On the wire (JSON) the pipe also leaves out what only the workflow reads (see
        # `WORKFLOW_ONLY`): a batch sends it once per item. Python-mode dumps keep it.
        if info.mode != "json":
            return pipe.model_dump(mode=info.mode, exclude_defaults=True)
        lent = _LENT.get()
        if lent is not None and lent[0] is pipe:
            return lent[1]
        return pipe_on_the_wire(pipe)


class ToolCall(CallBase):
    """The input of the ``durapipe.tool`` activity."""

    pipe: ToolPipe
    structures: dict[str, StructureSpec] = Field(default_factory=dict)


class ExtractCall(CallBase):
    """The input of the ``durapipe.extract`` activity: the document travels as a `Blob` reference."""

    pipe: ExtractPipe


class ImageCall(CallBase):
    """The input of the ``durapipe.image`` activity."""

    pipe: ImagePipe


class AgentTurnCall(CallBase):
    """The input of the ``durapipe.agent_turn`` activity: one model request of an agent.

    Attributes:
        turn: the turn number, from 1.
        messages: the conversation so far, as compact chat messages.
        tools: the tools offered, as OpenAI-style function schemas.
    """

    pipe: AgentPipe
    structures: dict[str, StructureSpec] = Field(default_factory=dict)
    turn: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
