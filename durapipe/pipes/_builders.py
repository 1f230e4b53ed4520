"""The Python spelling of a pipeline: builders that produce the same spec as the YAML spelling.

Example:
    >>> import durapipe as dp
    >>> summarize = dp.llm("summarize", inputs={"article": str}, prompt="Summarize: {{ article }}")
    >>> pipeline = dp.pipeline(summarize)
    >>> pipeline.pipes["summarize"].inputs
    {'article': 'text'}
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from durapipe.pipes import _types
from durapipe.pipes._spec import (
    LlmPipe,
    Pipeline,
    PipeSpec,
    RetrySpec,
    SequencePipe,
    Step,
    ToolPipe,
)
from durapipe.pipes._types import Structures


@dataclass(frozen=True)
class Pipe:
    """A pipe built in Python: its name, its spec and the pipes and structures it uses."""

    name: str
    spec: PipeSpec
    structures: Structures = field(default_factory=dict)
    uses: tuple[Pipe, ...] = ()


@dataclass(frozen=True)
class StepRef:
    """A step of a sequence built in Python (see `step`)."""

    pipe: Pipe
    name: str | None = None
    result: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)


def step(
    pipe: Pipe,
    *,
    result: str | None = None,
    name: str | None = None,
    inputs: Mapping[str, str] | None = None,
) -> StepRef:
    """A step of a sequence that runs ``pipe`` and stores its output under ``result``.

    Args:
        pipe: the pipe to run.
        result: the working-memory name for the output (defaults to ``name``, then the pipe name).
        name: the step's name in step paths and the UI (defaults to the pipe name).
        inputs: where the pipe's inputs come from, as working-memory paths, when not by their own name.
    """
    return StepRef(pipe, name=name, result=result, inputs=dict(inputs or {}))


def _types_of(values: Mapping[str, Any] | None, structures: Structures) -> dict[str, str]:
    return {name: _types.type_ref(value, structures) for name, value in (values or {}).items()}


def _retry(retry: RetrySpec | Mapping[str, Any] | None) -> RetrySpec | None:
    return RetrySpec.model_validate(retry) if isinstance(retry, Mapping) else retry


def llm(
    name: str,
    *,
    prompt: str,
    inputs: Mapping[str, Any] | None = None,
    system: str | None = None,
    model: str | None = None,
    output: Any = "text",
    settings: Mapping[str, Any] | None = None,
    reask: int = 2,
    timeout: float | str | None = None,
    retry: RetrySpec | Mapping[str, Any] | None = None,
    queue: str | None = None,
    description: str = "",
    memoize: bool = False,
) -> Pipe:
    """An llm pipe: one call to a language model.

    Args:
        name: the pipe's name.
        prompt: the user prompt, a Jinja2 template over ``inputs``.
        inputs: input names and their types (Python types or type strings).
        system: optional system prompt template.
        model: a model alias of the pipeline or a litellm model string.
        output: ``str``/``"text"`` for plain text, or a pydantic model, ``list[Model]``, a type string.
        settings: extra litellm arguments such as ``temperature``.
        reask: how often an answer that does not fit ``output`` is asked again.
        timeout: start-to-close timeout of one attempt (seconds or ``"30s"``).
        retry: the retry policy (`RetrySpec` or its fields).
        queue: the task queue the call runs on.
        description: shown in ``durapipe validate`` and the UI.
        memoize: reuse a stored answer for the same call content in any run.
    """
    structures: Structures = {}
    spec = LlmPipe.model_validate(
        {
            "description": description,
            "inputs": _types_of(inputs, structures),
            "model": model,
            "system": system,
            "prompt": prompt,
            "output": _types.type_ref(str if output == "text" else output, structures),
            "settings": dict(settings or {}),
            "reask": reask,
            "timeout": timeout,
            "retry": _retry(retry),
            "queue": queue,
            "memoize": memoize,
        }
    )
    return Pipe(name, spec, structures)


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    timeout: float | str | None = None,
    retry: RetrySpec | Mapping[str, Any] | None = None,
    queue: str | None = None,
    memoize: bool = False,
) -> Any:
    """A tool pipe from a Python function (sync or async); inputs and output come from its type hints.

    Use it as a call, ``tool(count_words)``, or as a decorator, ``@tool`` / ``@tool(name=...)``; both
    return a `Pipe`. The function must be importable by its module and name, so workers can find it.
    """

    def build(fn: Callable[..., Any]) -> Pipe:
        if "<locals>" in fn.__qualname__:
            raise ValueError(
                f"tool function '{fn.__qualname__}' must be defined at module level, so workers can import it"
            )
        hints = typing.get_type_hints(fn)
        structures: Structures = {}
        parameters = inspect.signature(fn).parameters
        inputs = {p: _types.type_ref(hints.get(p, Any), structures) for p in parameters}
        spec = ToolPipe.model_validate(
            {
                "description": inspect.getdoc(fn) or "",
                "inputs": inputs,
                "function": f"{fn.__module__}:{fn.__qualname__}",
                "output": _types.type_ref(hints.get("return", Any), structures),
                "timeout": timeout,
                "retry": _retry(retry),
                "queue": queue,
                "memoize": memoize,
            }
        )
        return Pipe(name or fn.__name__, spec, structures)

    return build(function) if function is not None else build


def sequence(
    name: str,
    *,
    steps: Sequence[StepRef | Pipe],
    inputs: Mapping[str, Any] | None = None,
    output: str | list[str] | dict[str, str] | None = None,
    description: str = "",
) -> Pipe:
    """A sequence pipe: its steps run one after another over a shared working memory.

    Args:
        name: the pipe's name.
        steps: `step` values, or bare pipes (their output is stored under the pipe's name).
        inputs: input names and their types.
        output: a working-memory name, a list of names, or a mapping of output names to paths;
            defaults to the last step's result.
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}
    refs = [s if isinstance(s, StepRef) else StepRef(s) for s in steps]
    spec = SequencePipe(
        description=description,
        inputs=_types_of(inputs, structures),
        steps=[
            Step(pipe=r.pipe.name, name=r.name, result=r.result, inputs=dict(r.inputs))
            for r in refs
        ],
        output=output,
    )
    return Pipe(name, spec, structures, uses=tuple(r.pipe for r in refs))


def pipeline(
    *pipes: Pipe,
    models: Mapping[str, str] | None = None,
    default_model: str | None = None,
) -> Pipeline:
    """A pipeline of ``pipes`` and every pipe they use.

    Raises:
        ValueError: two different pipes or structures share a name.
    """
    collected: dict[str, PipeSpec] = {}
    structures: Structures = {}
    pending = list(pipes)
    while pending:
        current = pending.pop(0)
        if current.name in collected:
            if collected[current.name] != current.spec:
                raise ValueError(f"two different pipes are named '{current.name}'")
            continue
        collected[current.name] = current.spec
        for struct_name, struct in current.structures.items():
            if structures.setdefault(struct_name, struct) != struct:
                raise ValueError(f"two different structures are named '{struct_name}'")
        pending.extend(current.uses)
    return Pipeline(
        default_model=default_model,
        models=dict(models or {}),
        structures=structures,
        pipes=collected,
    )
