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
CONTROLLER_KINDS = frozenset({"sequence"})
LEAF_KINDS = frozenset({"llm", "tool"})

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


# Per-kind defaults: an llm call is slow and flaky (providers rate-limit), a tool is local code.
DEFAULT_TIMEOUT = {"llm": 120.0, "tool": 60.0}
DEFAULT_RETRY = {
    "llm": RetrySpec(max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=60.0),
    "tool": RetrySpec(max_attempts=3, initial_interval=1.0, backoff=2.0, max_interval=30.0),
}


class _PipeBase(_Spec):
    description: str = ""
    inputs: dict[str, str] = Field(default_factory=dict)
    timeout: Duration | None = None
    retry: RetrySpec | None = None
    queue: str | None = None


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
        memoize: reuse a stored answer for the same call content in any run (cross-run
            memoisation); by default a stored answer serves only retries of the same run.
    """

    kind: Literal["llm"] = "llm"
    model: str | None = None
    system: str | None = None
    prompt: str
    output: str = "text"
    settings: dict[str, Any] = Field(default_factory=dict)
    reask: int = Field(default=2, ge=0, le=10)
    memoize: bool = False


class ToolPipe(_PipeBase):
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


PipeSpec = Annotated[LlmPipe | ToolPipe | SequencePipe, Field(discriminator="kind")]


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


def is_controller(pipe: LlmPipe | ToolPipe | SequencePipe) -> bool:
    """Whether ``pipe`` runs as its own workflow (a controller) rather than an activity."""
    return pipe.kind in CONTROLLER_KINDS
