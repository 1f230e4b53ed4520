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

from durapipe.spec import _types
from durapipe.spec._base import RetrySpec
from durapipe.spec._deck import ModelEntry
from durapipe.spec._spec import (
    AgentPipe,
    ApprovalPipe,
    ExtractPipe,
    ImagePipe,
    LimitRule,
    LlmPipe,
    Pipeline,
    PipeSpec,
    RouteRule,
    SequencePipe,
    Step,
    ToolPipe,
)
from durapipe.spec._types import Structures


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


@dataclass(frozen=True)
class Binding:
    """A binding step of a sequence built in Python (see `bind`)."""

    source: str
    result: str
    name: str | None = None


def bind(source: str, *, result: str, name: str | None = None) -> Binding:
    """A sequence step that copies working-memory path ``source`` to ``result``; it runs nothing.

    Example:
        >>> bind("invoice.total", result="amount")
        Binding(source='invoice.total', result='amount', name=None)
    """
    return Binding(source, result=result, name=name)


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


def extract(
    name: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    model: str | None = None,
    language: str = "eng",
    output: Any = "list[Page]",
    settings: Mapping[str, Any] | None = None,
    timeout: float | str | None = None,
    retry: RetrySpec | Mapping[str, Any] | None = None,
    queue: str | None = None,
    description: str = "",
) -> Pipe:
    """An extract pipe: a document or image becomes pages of text.

    Args:
        name: the pipe's name.
        inputs: its one input, of type ``"document"``, ``"image"`` or ``"file"``
            (default ``{"document": "document"}``).
        model: ``durapipe/local`` (default: pypdf and tesseract, offline) or a litellm OCR model.
        language: tesseract language codes for the local engine, e.g. ``"eng+deu"``.
        output: ``list[Page]`` (default) or ``str``/``"text"`` for all pages joined.
        settings: extra litellm OCR arguments.
        timeout: start-to-close timeout of one attempt (seconds or ``"30s"``).
        retry: the retry policy (`RetrySpec` or its fields).
        queue: the task queue the call runs on.
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}
    spec = ExtractPipe.model_validate(
        {
            "description": description,
            "inputs": _types_of(inputs or {"document": "document"}, structures),
            "model": model,
            "language": language,
            "output": _types.type_ref(output, structures),
            "settings": dict(settings or {}),
            "timeout": timeout,
            "retry": _retry(retry),
            "queue": queue,
        }
    )
    return Pipe(name, spec, structures)


def image(
    name: str,
    *,
    prompt: str,
    inputs: Mapping[str, Any] | None = None,
    model: str | None = None,
    size: str = "1024x1024",
    settings: Mapping[str, Any] | None = None,
    timeout: float | str | None = None,
    retry: RetrySpec | Mapping[str, Any] | None = None,
    queue: str | None = None,
    description: str = "",
) -> Pipe:
    """An image pipe: generates one image; its output is an ``image`` blob reference.

    Args:
        name: the pipe's name.
        prompt: a Jinja2 template over ``inputs``.
        inputs: input names and their types.
        model: a litellm image model or alias; the offline placeholder model by default.
        size: ``WIDTHxHEIGHT``.
        settings: extra litellm image arguments (``quality``, ...).
        timeout: start-to-close timeout of one attempt (seconds or ``"30s"``).
        retry: the retry policy (`RetrySpec` or its fields).
        queue: the task queue the call runs on.
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}
    spec = ImagePipe.model_validate(
        {
            "description": description,
            "inputs": _types_of(inputs, structures),
            "model": model,
            "prompt": prompt,
            "size": size,
            "settings": dict(settings or {}),
            "timeout": timeout,
            "retry": _retry(retry),
            "queue": queue,
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


def agent(
    name: str,
    *,
    prompt: str,
    tools: Sequence[Pipe | Callable[..., Any]] = (),
    inputs: Mapping[str, Any] | None = None,
    instructions: str | None = None,
    model: str | None = None,
    output: Any = "text",
    settings: Mapping[str, Any] | None = None,
    max_turns: int = 10,
    max_bad_turns: int = 3,
    reask: int = 2,
    timeout: float | str | None = None,
    retry: RetrySpec | Mapping[str, Any] | None = None,
    queue: str | None = None,
    description: str = "",
) -> Pipe:
    """An agent pipe: the model calls ``tools`` until it gives a final answer.

    Args:
        name: the pipe's name.
        prompt: the first user message, a Jinja2 template over ``inputs``.
        tools: tool pipes (`tool`), or module-level functions (made into tool pipes); the model
            sees each one's name, docstring and input types.
        inputs: input names and their types.
        instructions: optional system prompt template.
        model: a model alias of the pipeline or a litellm model string.
        output: ``str``/``"text"`` for a plain final answer, or a structured type.
        settings: extra litellm arguments such as ``temperature``.
        max_turns: model requests allowed before the step fails.
        max_bad_turns: consecutive turns with unknown tools or invalid arguments before it fails.
        reask: final answers that do not fit ``output`` fed back before the step fails.
        timeout: start-to-close timeout of one model request.
        retry: the retry policy of one model request.
        queue: the task queue of the model requests.
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}
    tool_pipes = [t if isinstance(t, Pipe) else tool(t) for t in tools]
    spec = AgentPipe.model_validate(
        {
            "description": description,
            "inputs": _types_of(inputs, structures),
            "model": model,
            "instructions": instructions,
            "prompt": prompt,
            "tools": [t.name for t in tool_pipes],
            "output": _types.type_ref(str if output == "text" else output, structures),
            "settings": dict(settings or {}),
            "max_turns": max_turns,
            "max_bad_turns": max_bad_turns,
            "reask": reask,
            "timeout": timeout,
            "retry": _retry(retry),
            "queue": queue,
        }
    )
    return Pipe(name, spec, structures, uses=tuple(tool_pipes))


def sequence(
    name: str,
    *,
    steps: Sequence[StepRef | Binding | Pipe],
    inputs: Mapping[str, Any] | None = None,
    output: str | list[str] | dict[str, str] | None = None,
    description: str = "",
    budget_usd: float | None = None,
) -> Pipe:
    """A sequence pipe: its steps run one after another over a shared working memory.

    Args:
        name: the pipe's name.
        steps: `step` values, `bind` values, or bare pipes (their output is stored under the
            pipe's name).
        inputs: input names and their types.
        output: a working-memory name, a list of names, or a mapping of output names to paths;
            defaults to the last step's result.
        description: shown in ``durapipe validate`` and the UI.
        budget_usd: the most a run of this pipe may spend (see the README's budgets).
    """
    structures: Structures = {}
    refs = [s if isinstance(s, StepRef | Binding) else StepRef(s) for s in steps]
    spec = SequencePipe(
        description=description,
        inputs=_types_of(inputs, structures),
        steps=[
            Step(from_=r.source, name=r.name, result=r.result)
            if isinstance(r, Binding)
            else Step(pipe=r.pipe.name, name=r.name, result=r.result, inputs=dict(r.inputs))
            for r in refs
        ],
        output=output,
        budget_usd=budget_usd,
    )
    uses = tuple(r.pipe for r in refs if isinstance(r, StepRef))
    return Pipe(name, spec, structures, uses=uses)


def approval(
    name: str,
    *,
    message: str,
    inputs: Mapping[str, Any],
    value: str | None = None,
    timeout: float | str | None = None,
    on_timeout: str = "reject",
    description: str = "",
) -> Pipe:
    """An approval pipe: the run waits for a human to approve, edit or reject a value.

    Args:
        name: the pipe's name.
        message: what the reviewer reads, a Jinja2 template over ``inputs``.
        inputs: input names and their types; their values are shown to the reviewer.
        value: the input the run continues with (edited data replaces it); defaults to the only input.
        timeout: how long to wait (seconds or ``"2h"``); wait forever when unset.
        on_timeout: ``"approve"`` or ``"reject"`` when the timeout passes with no decision.
        description: shown in ``durapipe validate`` and the UI.
    """
    structures: Structures = {}
    spec = ApprovalPipe.model_validate(
        {
            "description": description,
            "inputs": _types_of(inputs, structures),
            "message": message,
            "value": value,
            "timeout": timeout,
            "on_timeout": on_timeout,
        }
    )
    return Pipe(name, spec, structures)


def pipeline(
    *pipes: Pipe,
    models: Mapping[str, str | ModelEntry] | None = None,
    default_model: str | None = None,
    routing: Sequence[RouteRule] = (),
    limits: Sequence[LimitRule] = (),
) -> Pipeline:
    """A pipeline of ``pipes`` and every pipe they use.

    ``routing`` sends leaves to task queues by kind, provider or model glob (see `RouteRule`);
    ``limits`` caps the calls that match, across every worker (see `LimitRule`).

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
        routing=list(routing),
        limits=list(limits),
    )
