"""The leaf call messages: what each leaf kind's activity takes (declared with its `Kind`).

They are pure data over the spec classes (recorded in histories by the pydantic data converter:
field names, never class names), so they live beside the specs, and a `Kind` can name its message
without the spec layer importing the runtime. `durapipe.runtime` re-exports them.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Annotated, Any, ClassVar

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


def _empty(value: object) -> bool:
    return not value


# The pipe fields no leaf's activity reads: the workflow declares and checks the inputs' types,
# schedules the retries, routes to the queue and keeps the budget; the description is for people
# (an agent's tool schema carries it). The activity reads them back as their defaults (its call
# is the same call, the same checkpoint key). 56 of the 290 bytes a one-line batch item's input
# took. A kind whose checkpoint key hashes its whole pipe (extract, image, a registered kind's)
# keeps them: left out, they would read back as defaults and change its key.
WORKFLOW_ONLY: set[str] = {"description", "inputs", "retry", "queue", "budget_usd"}

# What else of an agent's pipe only its loop reads (in the workflow): the turn's activity gets
# the instructions and prompt rendered into its messages (the prompt still travels: a pipe is
# not read without one), and the tools as their schemas.
AGENT_LOOP_ONLY: set[str] = WORKFLOW_ONLY | {
    "instructions",
    "tools",
    "max_turns",
    "max_bad_turns",
    "reask",
}


def pipe_on_the_wire(
    pipe: PipeBase, omit: set[str] = WORKFLOW_ONLY, *, kind: bool = False
) -> dict[str, Any]:
    """What a call's JSON carries for ``pipe``: no defaults, nothing in ``omit`` (its call
    message's `CallBase.pipe_omits`: an llm call's by default), and its ``kind`` (a default, so
    otherwise left out) when ``kind`` is true (`CallBase.pipe_kind_travels`)."""
    wire = pipe.model_dump(mode="json", exclude_defaults=True, exclude=omit)
    return {"kind": pipe.kind, **wire} if kind else wire


# The wire form of one pipe, made once by a caller that serializes many calls of it (the workflow:
# a call per step, each dumping the same pipe again was ~1.5 us of its ~3 us of JSON). Lent while
# that caller serializes (`lend_wire_pipe`), and only to calls of that very pipe object. A task
# made during the loan copies the context with it (the SDK's activity handle is one) and holds the
# loan for its life: harmless, since a frozen pipe's wire form is a pure function of the object
# (and a pipe's calls are all of one message type, so of one `CallBase.pipe_omits`).
# A token, not a context manager: the generator of one cost ~1 us, most of what the loan saves.
_LENT: ContextVar[tuple[PipeBase, dict[str, Any]] | None] = ContextVar(
    "durapipe_lent_wire_pipe", default=None
)
LentPipe = Token[tuple[PipeBase, dict[str, Any]] | None]


def lend_wire_pipe(pipe: PipeBase, wire: dict[str, Any]) -> LentPipe:
    """Serialize calls of ``pipe`` with ``wire`` (their `CallBase.wire_pipe`, made earlier and
    not changed since: a frozen pipe's dump is a pure function of it) instead of dumping it
    again, until `end_loan` is called with the token returned. Call it right before serializing,
    in a ``try`` whose ``finally`` ends the loan."""
    return _LENT.set((pipe, wire))


def end_loan(token: LentPipe) -> None:
    """Stop lending the pipe `lend_wire_pipe` lent."""
    _LENT.reset(token)


class CallBase(BaseModel):
    """What every leaf call message carries; a kind's message adds ``pipe: ItsPipe`` (and
    ``structures`` when its types may name declared structures).

    Every call's input goes through Temporal (history, bridge, converter): its pipe with every
    default spelled out was half of an llm step's (436 bytes for a one-line step, 219 without),
    and 4.9 times a hand-written agent's tool call, so on the wire (JSON) the pipe travels
    without its defaults and without the fields its activity never reads (`pipe_omits`), and
    empty fields not at all. Read back, the defaults are filled in again: the same call to the
    model or the tool, the same checkpoint key; an input recorded in full (an older release's)
    decodes to the same call. Field-level rules, not a wrap serializer over the whole call: the
    workflow serializes one per step, and the wrap took 15 us of its 10 (pydantic re-inferred
    the types of the dict the wrap returned).

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

    # The pipe's fields its activity never reads, left out of the call's JSON (see
    # `WORKFLOW_ONLY`): none by default, since a registered kind's key hashes its whole pipe.
    pipe_omits: ClassVar[set[str]] = set()
    # Whether the pipe's kind travels, default as it is: a message may be decoded where several
    # kinds' may arrive (the budget's estimate takes an llm, agent turn or image call), and an
    # image call without it read as an llm call. The llm call goes without (the first kind there,
    # and most calls: 13 bytes of a one-line batch item's 234).
    pipe_kind_travels: ClassVar[bool] = True

    run_id: str
    scope: str = ""
    path: str
    pipe_name: str
    inputs: dict[str, Any] = Field(default_factory=dict, exclude_if=_empty)
    # E.g. an agent's tool call, which reads better as the tool's name than as a path. Only the
    # workflow reads it (the UI label it schedules the activity with), so it never travels.
    summary: str | None = Field(default=None, exclude=True)
    limits: list[LimitRule] = Field(default_factory=list, exclude_if=_empty)
    pipe: PipeBase

    def wire_pipe(self) -> dict[str, Any]:
        """The pipe as this call's JSON carries it (see `lend_wire_pipe`)."""
        return pipe_on_the_wire(self.pipe, self.pipe_omits, kind=self.pipe_kind_travels)

    @field_serializer("pipe", mode="plain")
    def _pipe_without_defaults(self, pipe: PipeBase, info: SerializationInfo) -> dict[str, Any]:
        # Python-mode dumps keep what only the workflow reads.
        if info.mode != "json":
            return pipe.model_dump(mode=info.mode, exclude_defaults=True)
        lent = _LENT.get()
        if lent is not None and lent[0] is pipe:
            return lent[1]
        return pipe_on_the_wire(pipe, self.pipe_omits, kind=self.pipe_kind_travels)


# The declared structures a call's types name; most name none, and then the JSON carries nothing.
Structures = Annotated[dict[str, StructureSpec], Field(default_factory=dict, exclude_if=_empty)]


class LlmCall(CallBase):
    """The input of the ``durapipe.llm`` activity."""

    pipe_omits = WORKFLOW_ONLY
    pipe_kind_travels = False

    pipe: LlmPipe
    structures: Structures


class ToolCall(CallBase):
    """The input of the ``durapipe.tool`` activity."""

    # It reads the function, the output type, ``memoize`` and the timeout.
    pipe_omits = WORKFLOW_ONLY

    pipe: ToolPipe
    structures: Structures


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

    # It reads the model, settings, output type and timeout; the loop reads the rest.
    pipe_omits = AGENT_LOOP_ONLY

    pipe: AgentPipe
    structures: Structures
    turn: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list, exclude_if=_empty)
