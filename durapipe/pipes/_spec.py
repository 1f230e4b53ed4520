"""The pipe model: pydantic specs shared by the Python and YAML spellings.

A `Pipeline` holds named pipes, model aliases and declared structures. Pipes are operators (leaves:
one activity per call) or controllers (one workflow each). The spec knows nothing of Temporal.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from durapipe.pipes._types import StructureSpec

OFFLINE_MODEL = "durapipe/offline"
# The embedded extractor: pypdf for text pages, the tesseract OCR engine for images and scans.
LOCAL_EXTRACTOR = "durapipe/local"
# An agent runs its tool-calling loop in a workflow of its own (see AgentPipe), so it counts as one.
CONTROLLER_KINDS = frozenset({"sequence", "agent"})
LEAF_KINDS = frozenset({"llm", "tool", "extract", "image"})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``2m``, ``1h``, ``1d``.

    Raises:
        ValueError: not a duration, or not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (use seconds, or e.g. '30s', '2m', '1h')")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySpec(_Spec):
    """How a step is retried (Temporal's RetryPolicy; the same rules apply with ``--local``).

    Attributes:
        max_attempts: total attempts including the first; 1 means no retry.
        initial_interval: delay before the first retry.
        backoff: multiplier applied to the delay after each retry.
        max_interval: the delay never grows past this.
        non_retryable: error type names that stop retrying at once.
    """

    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_interval: Duration = 1.0
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    max_interval: Duration = 60.0
    non_retryable: tuple[str, ...] = ()

    @pydantic.model_validator(mode="after")
    def _interval_order(self) -> RetrySpec:
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must not be shorter than initial_interval")
        return self


# Per-kind defaults: an llm call is slow and flaky (providers rate-limit), a tool is local code,
# OCR of a long scan takes minutes, and image models are slow and rate-limited. An agent's timeout
# and retry apply to each of its model requests, so they default like llm's.
DEFAULT_TIMEOUT = {"llm": 120.0, "tool": 60.0, "extract": 300.0, "image": 180.0, "agent": 120.0}
DEFAULT_RETRY = {
    "llm": RetrySpec(max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=60.0),
    "agent": RetrySpec(max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=60.0),
    "tool": RetrySpec(max_attempts=3, initial_interval=1.0, backoff=2.0, max_interval=30.0),
    "extract": RetrySpec(max_attempts=3, initial_interval=2.0, backoff=2.0, max_interval=60.0),
    "image": RetrySpec(max_attempts=4, initial_interval=2.0, backoff=2.0, max_interval=60.0),
}


class _PipeBase(_Spec):
    description: str = ""
    inputs: dict[str, str] = Field(default_factory=dict)
    timeout: Duration | None = None
    retry: RetrySpec | None = None
    queue: str | None = None
    # The most a run of this pipe may spend, in USD; checked before each paid call.
    budget_usd: float | None = Field(default=None, gt=0)


class LlmPipe(_PipeBase):
    """One call to a language model.

    Attributes:
        model: a model alias declared in the pipeline, or a litellm model string
            (``openai/gpt-4o-mini``); the pipeline's default model when unset.
        system: optional system prompt (a Jinja2 template over ``inputs``).
        prompt: the user prompt (a Jinja2 template over ``inputs``).
        output: ``text`` for a plain answer, or a structured type (``Claim``, ``list[Claim]``).
        settings: extra litellm arguments (``temperature``, ``max_tokens``, ...).
        reask: how many times an answer that does not fit ``output`` is asked again, with the
            validation error fed back.
    """

    kind: Literal["llm"] = "llm"
    model: str | None = None
    system: str | None = None
    prompt: str
    output: str = "text"
    settings: dict[str, Any] = Field(default_factory=dict)
    reask: int = Field(default=2, ge=0, le=10)


class ToolPipe(_PipeBase):
    """A call to a registered Python function (sync or async).

    Attributes:
        function: where the function lives, ``module:name``; the module is imported from the
            pipeline file's folder or the Python path.
        output: the type the function returns.
    """

    kind: Literal["tool"] = "tool"
    function: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    output: str = "any"


class ExtractPipe(_PipeBase):
    """Reads the text of a document or image: its one input is a ``document``, ``image`` or ``file``.

    Attributes:
        model: ``durapipe/local`` (the default: pypdf for PDF text, the tesseract OCR engine for
            images and scanned pages, no network) or a litellm OCR model such as
            ``mistral/mistral-ocr-latest``; a model alias works too.
        language: the OCR language(s) of the local engine, tesseract codes such as ``eng`` or
            ``eng+deu``.
        output: ``list[Page]`` (one ``{page, text}`` per page) or ``text`` (all pages joined).
        settings: extra litellm OCR arguments.
    """

    kind: Literal["extract"] = "extract"
    model: str | None = None
    language: str = Field(default="eng", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")
    output: Literal["list[Page]", "text"] = "list[Page]"
    settings: dict[str, Any] = Field(default_factory=dict)


class ImagePipe(_PipeBase):
    """Generates one image from a prompt; the output is an ``image`` reference to the blob store.

    Attributes:
        model: a litellm image model (``openai/gpt-image-1``, ``openai/dall-e-3``) or an alias; the
            default ``durapipe/offline`` draws a labelled placeholder PNG (deterministic, no network).
        prompt: a Jinja2 template over ``inputs``.
        size: ``WIDTHxHEIGHT``, e.g. ``1024x1024``.
        settings: extra litellm image arguments (``quality``, ``style``, ...).
    """

    kind: Literal["image"] = "image"
    model: str | None = None
    prompt: str
    size: str = Field(default="1024x1024", pattern=r"^\d{2,5}x\d{2,5}$")
    output: Literal["image"] = "image"
    settings: dict[str, Any] = Field(default_factory=dict)


class ApprovalPipe(_PipeBase):
    """A human decision: the run waits (durably, for days if needed) until someone approves,
    approves with edited data, or rejects. It runs in the workflow itself, with no activity.

    Attributes:
        message: what the reviewer reads (a Jinja2 template over ``inputs``); the input values are
            shown with it.
        value: the input the run continues with when approved; edited data replaces it and must fit
            its type. Defaults to the only input.
        on_timeout: the decision taken when ``timeout`` passes with no answer (no ``timeout``:
            wait forever).
    """

    kind: Literal["approval"] = "approval"
    message: str
    value: str | None = None
    on_timeout: Literal["approve", "reject"] = "reject"

    @property
    def value_name(self) -> str | None:
        """The input the approved value comes from (None when it cannot be chosen)."""
        if self.value is not None:
            return self.value
        return next(iter(self.inputs)) if len(self.inputs) == 1 else None

    @property
    def output(self) -> str:
        """The type of the approved value: the type of the reviewed input."""
        name = self.value_name
        return self.inputs.get(name, "any") if name else "any"


class Step(_Spec):
    """One step of a sequence.

    Attributes:
        pipe: the name of the pipe this step runs.
        name: the step's name in paths and the UI; defaults to the pipe's name.
        result: the working-memory name the step's output is stored under; defaults to ``name``.
        inputs: where each input of the pipe comes from, as a working-memory path
            (``claims`` or ``fact_check.word_count``); an input not listed is read by its own name.
    """

    pipe: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w-]*$")
    result: str | None = Field(default=None, pattern=r"^[A-Za-z_]\w*$")
    inputs: dict[str, str] = Field(default_factory=dict)

    @property
    def step_name(self) -> str:
        """The step's name as it appears in step paths."""
        return self.name or self.pipe

    @property
    def result_name(self) -> str:
        """The working-memory name the output is stored under."""
        return self.result or self.name or self.pipe


class SequencePipe(_PipeBase):
    """Steps run one after another over a shared working memory.

    Attributes:
        steps: the steps, in order.
        output: what the sequence returns: a working-memory name, a list of names (returned as a
            mapping), or a mapping of output names to working-memory paths. Defaults to the last
            step's result.
    """

    kind: Literal["sequence"] = "sequence"
    steps: list[Step] = Field(min_length=1)
    output: str | list[str] | dict[str, str] | None = None


class AgentPipe(_PipeBase):
    """A tool-calling loop: the model asks for tool calls until it gives a final answer.

    Each model request is one ``durapipe.agent_turn`` activity (with this pipe's ``timeout`` and
    ``retry``) and each tool call one ``durapipe.tool`` activity (with the tool pipe's own).

    Attributes:
        model: a model alias or a litellm model string; the pipeline's default model when unset.
        instructions: optional system prompt (a Jinja2 template over ``inputs``).
        prompt: the first user message (a Jinja2 template over ``inputs``).
        tools: names of the ``tool`` pipes the model may call; their declared inputs and
            descriptions become the JSON schemas the model sees.
        output: ``text`` for a plain final answer, or a structured type.
        settings: extra litellm arguments (``temperature``, ...).
        max_turns: model requests allowed before the step fails.
        max_bad_turns: consecutive turns with an unknown tool or invalid arguments (fed back to
            the model each time) before the step fails.
        reask: final answers that do not fit ``output`` fed back to the model before the step fails.
    """

    kind: Literal["agent"] = "agent"
    model: str | None = None
    instructions: str | None = None
    prompt: str
    tools: list[str] = Field(default_factory=list)
    output: str = "text"
    settings: dict[str, Any] = Field(default_factory=dict)
    max_turns: int = Field(default=10, ge=1, le=10_000)
    max_bad_turns: int = Field(default=3, ge=1, le=100)
    reask: int = Field(default=2, ge=0, le=10)


PipeSpec = Annotated[
    LlmPipe | ToolPipe | ExtractPipe | ImagePipe | SequencePipe | AgentPipe | ApprovalPipe,
    Field(discriminator="kind"),
]


class RouteRule(_Spec):
    """A routing rule: leaves that match go to ``queue`` (see `durapipe.pipes.route`).

    Every criterion given must match; a pipe's own ``queue`` always wins over the rules.

    Attributes:
        kind: the leaf kind (``llm``, ``tool``, ...).
        provider: the provider of an llm's model, the part before the first ``/``
            (``openai`` for ``openai/gpt-4o-mini``).
        model: a glob over the resolved model string (``openai/*``, ``*/gpt-4o*``).
        queue: the task queue matching leaves run on.
    """

    kind: str | None = None
    provider: str | None = None
    model: str | None = None
    queue: str = Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _has_criterion(self) -> RouteRule:
        if self.kind is None and self.provider is None and self.model is None:
            raise ValueError(f"the rule for queue '{self.queue}' needs kind, provider or model")
        return self


class Pipeline(_Spec):
    """A set of named pipes, the model aliases and the structures they use.

    The same class is the resolved spec a run carries: `durapipe.pipes.resolve` keeps only the pipes
    a run reaches, replaces aliases with model strings and fills timeouts and retries.
    """

    version: Literal[1] = 1
    default_model: str | None = None
    models: dict[str, str] = Field(default_factory=dict)
    structures: dict[str, StructureSpec] = Field(default_factory=dict)
    pipes: dict[str, PipeSpec] = Field(default_factory=dict)
    routing: list[RouteRule] = Field(default_factory=list)


def is_controller(
    pipe: LlmPipe | ToolPipe | ExtractPipe | ImagePipe | SequencePipe | AgentPipe | ApprovalPipe,
) -> bool:
    """Whether ``pipe`` runs as its own workflow (a controller) rather than an activity."""
    return pipe.kind in CONTROLLER_KINDS
