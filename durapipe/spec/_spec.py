"""The pipe model: pydantic specs shared by the Python and YAML spellings.

A `Pipeline` holds named pipes, model aliases and declared structures. Pipes are operators (leaves:
one activity per call) or controllers (one workflow each). The spec knows nothing of Temporal.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import ConfigDict, Field, SerializeAsAny
from pydantic_core import InitErrorDetails, PydanticCustomError

from durapipe.spec._base import PipeBase, _Spec
from durapipe.spec._deck import ModelRef
from durapipe.spec._kinds import (
    UnknownPipe,
    is_controller_kind,
    kind_of,
    kinds,
    reading_leniently,
)
from durapipe.spec._types import StructureSpec

OFFLINE_MODEL = "durapipe/offline"
# The embedded extractor: pypdf for text pages, the tesseract OCR engine for images and scans.
LOCAL_EXTRACTOR = "durapipe/local"


class LlmPipe(PipeBase):
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
        memoize: reuse a stored answer for the same call content in any run (cross-run
            memoisation); by default a stored answer serves only retries of the same run.
        fallbacks: models tried in order, within the same attempt, when a call to ``model`` (or
            the fallback before) fails with a provider error (MTHDS's ``~waterfall``).
    """

    kind: Literal["llm"] = "llm"
    model: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    system: str | None = None
    prompt: str
    output: str = "text"
    settings: dict[str, Any] = Field(default_factory=dict)
    reask: int = Field(default=2, ge=0, le=10)
    memoize: bool = False


class ToolPipe(PipeBase):
    """A call to a registered Python function (sync or async).

    Attributes:
        function: where the function lives, ``module:name``; the module is imported from the
            pipeline file's folder or the Python path.
        output: the type the function returns.
        memoize: reuse a stored result for the same function and arguments in any run.
    """

    kind: Literal["tool"] = "tool"
    function: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    output: str = "any"
    memoize: bool = False


class ExtractPipe(PipeBase):
    """Reads the text of a document or image: its one input is a ``document``, ``image`` or ``file``.

    Attributes:
        model: ``durapipe/local`` (the default: pypdf for PDF text, the tesseract OCR engine for
            images and scanned pages, no network) or a litellm OCR model such as
            ``mistral/mistral-ocr-latest``; a model alias works too.
        language: the OCR language(s) of the local engine, tesseract codes such as ``eng`` or
            ``eng+deu``.
        output: ``list[Page]`` (one ``{page, text}`` per page) or ``text`` (all pages joined).
        settings: extra litellm OCR arguments.
        fallbacks: engines tried in order, within the same attempt, when ``model`` (or the
            fallback before) fails (MTHDS's ``~waterfall``; ``durapipe/local`` may be one).
    """

    kind: Literal["extract"] = "extract"
    model: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    language: str = Field(default="eng", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")
    output: Literal["list[Page]", "text"] = "list[Page]"
    settings: dict[str, Any] = Field(default_factory=dict)


class ImagePipe(PipeBase):
    """Generates images from a prompt; the output is an ``image`` reference to the blob store.

    Attributes:
        model: a litellm image model (``openai/gpt-image-1``, ``openai/dall-e-3``) or an alias; the
            default ``durapipe/offline`` draws a labelled placeholder PNG (deterministic, no network).
        prompt: a Jinja2 template over ``inputs``.
        size: ``WIDTHxHEIGHT``, e.g. ``1024x1024``.
        output: ``image`` for one image, ``list[image, N]`` for N images of one call (the
            provider's ``n``).
        settings: extra litellm image arguments (``quality``, ``style``, ...).
        fallbacks: models tried in order, within the same attempt, when ``model`` (or the
            fallback before) fails with a provider error (MTHDS's ``~waterfall``).
    """

    kind: Literal["image"] = "image"
    model: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    prompt: str
    size: str = Field(default="1024x1024", pattern=r"^\d{2,5}x\d{2,5}$")
    output: str = Field(default="image", pattern=r"^(image|list\[image, ?([1-9]|10)\])$")
    settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def count(self) -> int:
        """How many images one call makes (1, or the N of ``list[image, N]``)."""
        return 1 if self.output == "image" else int(self.output[:-1].rpartition(",")[2])


class ComposePipe(PipeBase):
    """Assembles its output from its inputs, with no model call (MTHDS's PipeCompose).

    It runs in the controller itself (deterministic, like a condition's expression): no activity.

    Attributes:
        template: a Jinja2 template over ``inputs``; the output is the rendered text.
        build: instead of ``template``, the output's fields: each one a literal, ``{"from":
            "path"}`` (a working-memory path, optionally with ``"list_to_dict_keyed_by": "attr"``),
            ``{"template": "..."}``, or a mapping of nested fields.
        output: ``text`` for a template, the structure the fields build otherwise.
    """

    kind: Literal["compose"] = "compose"
    template: str | None = None
    build: dict[str, Any] | None = None
    output: str = "text"

    @pydantic.model_validator(mode="after")
    def _template_or_build(self) -> ComposePipe:
        if (self.template is None) == (self.build is None):
            raise ValueError("a compose pipe needs exactly one of 'template' or 'build'")
        return self


class ApprovalPipe(PipeBase):
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
    """One step of a sequence: it runs a pipe, or binds a working-memory path to a new name.

    Attributes:
        pipe: the name of the pipe this step runs.
        from_: (``from`` in YAML) a binding step: copy this working-memory path
            (``invoice.total``) to ``result`` without running anything.
        name: the step's name in paths and the UI; defaults to the pipe's name.
        result: the working-memory name the step's output is stored under; defaults to ``name``.
        inputs: where each input of the pipe comes from, as a working-memory path
            (``claims`` or ``fact_check.word_count``); an input not listed is read by its own name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    pipe: str | None = None
    from_: str | None = Field(default=None, alias="from", pattern=r"^[A-Za-z_]\w*(\.\w+)*$")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w-]*$")
    result: str | None = Field(default=None, pattern=r"^[A-Za-z_]\w*$")
    inputs: dict[str, str] = Field(default_factory=dict)

    @pydantic.model_validator(mode="after")
    def _pipe_or_binding(self) -> Step:
        if (self.pipe is None) == (self.from_ is None):
            raise ValueError(
                "a step needs exactly one of 'pipe' (run a pipe) or 'from' (bind a value)"
            )
        if self.from_ is not None and (self.result is None or self.inputs):
            raise ValueError("a binding step ('from') needs 'result' and takes no 'inputs'")
        return self

    @property
    def step_name(self) -> str:
        """The step's name as it appears in step paths."""
        return self.name or self.pipe or self.result or ""

    @property
    def result_name(self) -> str:
        """The working-memory name the output is stored under."""
        return self.result or self.name or self.pipe or ""


class SequencePipe(PipeBase):
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


OnError = Literal["fail", "collect"]
# Outcomes of a condition that run no pipe.
FAIL_OUTCOME, CONTINUE_OUTCOME = "fail", "continue"


def outcome_key(value: Any) -> str:
    """The outcome key a condition value selects: ``true``/``false``/``none`` or ``str(value)``.

    YAML reads ``true:`` and ``3:`` as a boolean and an integer; both spellings of a key and the
    expression's value meet in this one string form.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Branch(_Spec):
    """One branch of a parallel pipe: the pipe it runs and where its inputs come from.

    In YAML a branch is either a pipe name or a mapping with these keys.
    """

    pipe: str
    inputs: dict[str, str] = Field(default_factory=dict)


class ParallelPipe(PipeBase):
    """Named branches run concurrently; the output maps each branch name to its result.

    Attributes:
        branches: branch name -> the pipe it runs (inputs read from working memory by name, or as
            mapped by the branch's ``inputs``).
        on_error: ``fail`` (default): a failing branch fails the pipe, naming the branch;
            ``collect``: every branch runs to its end and the output is
            ``{"results": {branch: output}, "errors": {branch: {"type", "message", "path"}}}``.
    """

    kind: Literal["parallel"] = "parallel"
    branches: dict[str, Branch] = Field(min_length=1)
    on_error: OnError = "fail"

    @pydantic.field_validator("branches", mode="before")
    @classmethod
    def _bare_pipe_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"pipe": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


class BatchPipe(PipeBase):
    """One pipe mapped over a list; results keep the list's order.

    Attributes:
        over: the working-memory path of the list (one of the batch's inputs, or a field of one).
        item: the name each element has in the mapped pipe's working memory.
        pipe: the pipe run once per element (a leaf or a controller).
        pipe_inputs: where the mapped pipe's inputs come from, as working-memory paths (the batch's
            inputs and ``item``); an input not listed is read by its own name.
        max_concurrency: how many elements run at once, across the whole batch.
        on_error: ``fail`` (default): the first failure stops new elements from starting (running
            ones finish) and fails the batch naming the element; ``collect``: every element runs and
            the output is ``{"results": [output or null, ...], "errors": [{"index", "type",
            "message", "path"}, ...]}``.
        chunk_size: at most this many elements (or sub-batches) per workflow; longer lists are
            split into child workflows, nested as deep as needed, so no history grows with the list.
        flatten: the mapped pipe returns a list for each element, and the output is those lists
            joined in order (``list[T]``), not a list of lists (``list[list[T]]``). Only with
            ``on_error: fail``.
    """

    kind: Literal["batch"] = "batch"
    over: str = Field(pattern=r"^[A-Za-z_]\w*(\.\w+)*$")
    item: str = Field(pattern=r"^[A-Za-z_]\w*$")
    pipe: str
    pipe_inputs: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=10, ge=1, le=1000)
    on_error: OnError = "fail"
    chunk_size: int = Field(default=1000, ge=2, le=1000)
    flatten: bool = False


class ConditionPipe(PipeBase):
    """An expression over the inputs picks the pipe that runs.

    Attributes:
        expression: a Jinja2 expression (no braces) over the inputs, e.g. ``amount > 1000`` or
            ``ticket.category``; evaluated in the same sandbox as templates.
        outcomes: expression value -> pipe name, or ``fail`` (fail the step) or ``continue`` (do
            nothing; the output is null). Keys match the value's string form (``true``, ``3``).
        default: the outcome when no key matches; without one, an unmatched value fails the step.
    """

    kind: Literal["condition"] = "condition"
    expression: str = Field(min_length=1)
    outcomes: dict[str, str] = Field(min_length=1)
    default: str | None = None

    @pydantic.field_validator("outcomes", mode="before")
    @classmethod
    def _string_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {outcome_key(k): v for k, v in value.items()}
        return value


class AgentPipe(PipeBase):
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


AnyPipe = (
    LlmPipe
    | ToolPipe
    | ExtractPipe
    | ImagePipe
    | SequencePipe
    | ParallelPipe
    | BatchPipe
    | ConditionPipe
    | AgentPipe
    | ApprovalPipe
    | ComposePipe
)


def _pipe_of_kind(value: Any) -> Any:
    """A pipe read by its ``kind`` through the registry (`durapipe.spec.register_kind`), so a kind
    registered by any module reads like a built-in one."""
    if isinstance(value, PipeBase):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        )
    known = ", ".join(kinds())
    if "kind" not in value:
        raise PydanticCustomError(
            "union_tag_not_found", "field 'kind' is missing (one of {known})", {"known": known}
        )
    kind = kind_of(str(value["kind"]))
    if kind is None and reading_leniently():
        return UnknownPipe.model_validate(value)
    if kind is None:
        raise PydanticCustomError(
            "union_tag_invalid",
            "unknown kind '{tag}' (one of {known})",
            {"tag": str(value["kind"]), "known": known},
        )
    try:
        return kind.spec.model_validate(value)
    except pydantic.ValidationError as err:
        raise _tagged(err, kind.name) from None


def _tagged(err: pydantic.ValidationError, tag: str) -> pydantic.ValidationError:
    """``err`` with each location under ``tag``, as pydantic's own tagged unions report it (the
    YAML spelling names fields through it)."""
    details: list[InitErrorDetails] = [
        {
            "type": line["type"],
            "loc": (tag, *line["loc"]),
            "input": line["input"],
            **({"ctx": line["ctx"]} if "ctx" in line else {}),  # type: ignore[typeddict-item]
        }
        for line in err.errors()
    ]
    try:
        return pydantic.ValidationError.from_exception_data(err.title, details)
    except (KeyError, TypeError, ValueError):
        return err  # an error type pydantic cannot rebuild: keep it as it was, untagged


# A pipe of any registered kind. Statically the built-in union (what code narrows with
# isinstance); when read, the registry picks the class by `kind`; when written, the pipe's own
# class writes it (SerializeAsAny), so a registered kind travels through workflow inputs whole.
PipeSpec = Annotated[SerializeAsAny[AnyPipe], pydantic.PlainValidator(_pipe_of_kind)]


class _Criteria(_Spec):
    """Which calls a rule applies to; every criterion given must match (`durapipe.spec.matches`).

    Attributes:
        kind: the kind (``llm``, ``tool``, ``agent``, ...).
        provider: the provider of the model, the part before the first ``/``
            (``openai`` for ``openai/gpt-4o-mini``).
        model: a glob over the resolved model string (``openai/*``, ``*/gpt-4o*``).
    """

    kind: str | None = None
    provider: str | None = None
    model: str | None = None

    def criteria(self) -> str:
        """The criteria as text, e.g. ``model=openai/*``."""
        given = {"kind": self.kind, "provider": self.provider, "model": self.model}
        return ",".join(f"{name}={value}" for name, value in given.items() if value is not None)

    @pydantic.model_validator(mode="after")
    def _has_criterion(self) -> _Criteria:
        if self.kind is None and self.provider is None and self.model is None:
            raise ValueError(f"the rule for {self._subject()} needs kind, provider or model")
        return self

    def _subject(self) -> str:
        return "a rule"


class RouteRule(_Criteria):
    """A routing rule: leaves that match go to ``queue`` (see `durapipe.spec.route`).

    A pipe's own ``queue`` always wins over the rules.

    Attributes:
        queue: the task queue matching leaves run on.
    """

    queue: str = Field(min_length=1)

    def _subject(self) -> str:
        return f"queue '{self.queue}'"


_PER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_per(value: Any) -> tuple[float, float]:
    """``(amount, window seconds)`` from ``'5/s'``, ``'300/m'`` or ``'100000/h'``.

    Raises:
        ValueError: not of that form, or not positive.
    """
    match = _PER.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a positive amount per s, m or h (e.g. '5/s', '300/m')")
    return float(match.group(1)), _PER_SECONDS[match.group(2)]


Per = Annotated[str, pydantic.AfterValidator(lambda v: parse_per(v) and v)]


class LimitRule(_Criteria):
    """A provider limit shared by every worker and run: calls that match wait for room.

    Attributes:
        name: the name the limit's calls are counted under (shared by every worker and run); by
            default its criteria, e.g. ``model=openai/gpt-4o``.
        concurrency: the most matching calls in flight at once.
        rate: the most matching calls started in any window, e.g. ``5/s`` or ``300/m``.
        tokens: the most tokens matching calls may use in any window, e.g. ``60000/m``.
    """

    name: str | None = None
    concurrency: int | None = Field(default=None, ge=1)
    rate: Per | None = None
    tokens: Per | None = None

    def _subject(self) -> str:
        return f"limit '{self.name}'" if self.name else "a limit"

    @property
    def bucket(self) -> str:
        """The name under which this limit's calls are counted."""
        return self.name or self.criteria()

    @pydantic.model_validator(mode="after")
    def _limits_something(self) -> LimitRule:
        if self.concurrency is None and self.rate is None and self.tokens is None:
            raise ValueError(f"the limit '{self.bucket}' needs concurrency, rate or tokens")
        return self


class Pipeline(_Spec):
    """A set of named pipes, the model aliases and the structures they use.

    The same class is the resolved spec a run carries: `durapipe.spec.resolve` keeps only the pipes
    a run reaches, replaces aliases with model strings and fills timeouts and retries.
    """

    version: Literal[1] = 1
    default_model: str | None = None
    models: dict[str, ModelRef] = Field(default_factory=dict)
    structures: dict[str, StructureSpec] = Field(default_factory=dict)
    pipes: dict[str, PipeSpec] = Field(default_factory=dict)
    routing: list[RouteRule] = Field(default_factory=list)
    limits: list[LimitRule] = Field(default_factory=list)


def is_controller(pipe: AnyPipe) -> bool:
    """Whether ``pipe`` runs as its own workflow (a controller) rather than an activity."""
    return is_controller_kind(pipe.kind)


def pipes_used(pipe: AnyPipe) -> list[str]:
    """Names of the pipes a controller runs directly, in declaration order (none for a leaf)."""
    if isinstance(pipe, SequencePipe):
        return [step.pipe for step in pipe.steps if step.pipe is not None]
    if isinstance(pipe, ParallelPipe):
        return [branch.pipe for branch in pipe.branches.values()]
    if isinstance(pipe, BatchPipe):
        return [pipe.pipe]
    if isinstance(pipe, ConditionPipe):
        targets = [*pipe.outcomes.values(), *([pipe.default] if pipe.default else [])]
        special = (FAIL_OUTCOME, CONTINUE_OUTCOME)
        return list(dict.fromkeys(t for t in targets if t not in special))
    if isinstance(pipe, AgentPipe):
        return list(pipe.tools)
    return []
