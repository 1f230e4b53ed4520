"""Static validation: every mistake in a pipeline, found before anything runs.

`check` returns all problems at once, each naming the pipe (and step or field) it is in, so a user
fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping

import pydantic

from durapipe._errors import PipelineError, Problem
from durapipe.pipes import _templates, _types
from durapipe.pipes._spec import LlmPipe, Pipeline, SequencePipe, ToolPipe

_PIPE_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
_INPUT_NAME = re.compile(r"^[A-Za-z_]\w*$")

_Report = Callable[[str, str], None]

# litellm arguments that carry credentials. Settings travel in the spec, so in workflow history:
# a key there would be stored in plain text. Credentials belong in the worker's environment.
CREDENTIAL_SETTINGS = frozenset(
    {
        "api_key",
        "azure_ad_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "client_secret",
        "password",
        "token",
        "vertex_credentials",
    }
)
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})


def validate(pipeline: Pipeline, *, source: str = "") -> None:
    """Raise `PipelineError` listing every problem in ``pipeline``; return quietly when it is sound."""
    problems = check(pipeline, source=source)
    if problems:
        raise PipelineError(problems)


def check(pipeline: Pipeline, *, source: str = "") -> list[Problem]:
    """Every problem in ``pipeline``, in a stable order."""
    problems: list[Problem] = []

    def report(where: str, message: str) -> None:
        problems.append(Problem(where, message, source))

    for name, structure in pipeline.structures.items():
        for field_name, field in structure.fields.items():
            for message in _types.type_problems(field.type, pipeline.structures):
                report(f"structure '{name}', field '{field_name}'", message)
    for alias, model in pipeline.models.items():
        if "/" not in model:
            report(
                f"model alias '{alias}'",
                f"model '{model}' needs a provider prefix, e.g. openai/{model}",
            )
    if pipeline.default_model:
        _check_model(pipeline, pipeline.default_model, "default_model", report)
    for name, pipe in pipeline.pipes.items():
        where = f"pipe '{name}'"
        if not _PIPE_NAME.match(name):
            report(
                where,
                "a pipe name must start with a letter or '_' and hold only letters, digits, '_' or '-'",
            )
        for input_name, input_type in pipe.inputs.items():
            if not _INPUT_NAME.match(input_name):
                report(
                    f"{where}, input '{input_name}'",
                    "an input name must be a Python-style identifier",
                )
            for message in _types.type_problems(input_type, pipeline.structures):
                report(f"{where}, input '{input_name}'", message)
        if isinstance(pipe, LlmPipe):
            _check_llm(pipeline, name, pipe, report)
        elif isinstance(pipe, ToolPipe):
            for message in _types.type_problems(pipe.output, pipeline.structures):
                report(f"{where}, field 'output'", message)
        elif isinstance(pipe, SequencePipe):
            _check_sequence(pipeline, name, pipe, report)
    _check_cycles(pipeline, report)
    return problems


def _check_model(pipeline: Pipeline, model: str, where: str, report: _Report) -> None:
    if model not in pipeline.models and "/" not in model:
        known = ", ".join(sorted(pipeline.models)) or "none declared"
        report(
            where,
            f"model '{model}' is neither a declared alias ({known}) nor a provider/model string "
            "such as openai/gpt-4o-mini",
        )


def _check_llm(pipeline: Pipeline, name: str, pipe: LlmPipe, report: _Report) -> None:
    where = f"pipe '{name}'"
    if pipe.model is not None:
        _check_model(pipeline, pipe.model, f"{where}, field 'model'", report)
    for message in _types.type_problems(pipe.output, pipeline.structures):
        report(f"{where}, field 'output'", message)
    _check_settings(where, pipe.settings, report)
    used: set[str] = set()
    parsed = True
    for field, template in (("system", pipe.system), ("prompt", pipe.prompt)):
        if template is None:
            continue
        try:
            names = _templates.variables(template)
        except _templates.TemplateError as err:
            report(f"{where}, field '{field}'", str(err))
            parsed = False
            continue
        used |= names
        for construct in _templates.unsafe_constructs(template):
            report(f"{where}, field '{field}'", construct)
        for variable in sorted(names - set(pipe.inputs)):
            report(
                f"{where}, field '{field}'",
                f"template variable '{variable}' is not a declared input "
                f"(declared: {', '.join(pipe.inputs) or 'none'})",
            )
    # A template that does not parse says nothing about which inputs it uses.
    for unused in sorted(set(pipe.inputs) - used) if parsed else []:
        report(
            f"{where}, input '{unused}'",
            "declared input is never used by the system or prompt template",
        )


def _check_settings(where: str, settings: Mapping[str, object], report: _Report) -> None:
    for name in sorted(settings):
        if name.lower() in CREDENTIAL_SETTINGS:
            report(
                f"{where}, field 'settings.{name}'",
                "credentials must not be in a pipe (settings are stored in run history); "
                "set the provider's key in the worker's environment or --secrets-file",
            )
        headers = settings[name] if name in ("extra_headers", "headers") else None
        if isinstance(headers, Mapping):
            for header in sorted(str(h) for h in headers):
                if header.lower() in _CREDENTIAL_HEADERS:
                    report(
                        f"{where}, field 'settings.{name}.{header}'",
                        "credential headers must not be in a pipe (settings are stored in run "
                        "history); set the provider's key in the worker's environment",
                    )


def _check_sequence(pipeline: Pipeline, name: str, pipe: SequencePipe, report: _Report) -> None:
    where = f"pipe '{name}'"
    memory: dict[str, str] = dict(pipe.inputs)
    step_names: set[str] = set()
    for index, step in enumerate(pipe.steps):
        step_where = f"{where}, step '{step.step_name}'"
        if step.step_name in step_names:
            report(
                step_where, f"step name '{step.step_name}' is used twice; give one a distinct name"
            )
        step_names.add(step.step_name)
        target = pipeline.pipes.get(step.pipe)
        if target is None:
            report(
                f"{step_where}, field 'pipe'",
                f"unknown pipe '{step.pipe}'{_suggest(step.pipe, pipeline.pipes)}",
            )
            memory[step.result_name] = "any"
            continue
        for input_name in step.inputs:
            if input_name not in target.inputs:
                report(
                    f"{step_where}, input '{input_name}'",
                    f"pipe '{step.pipe}' has no input '{input_name}'",
                )
        for input_name, input_type in target.inputs.items():
            path = step.inputs.get(input_name, input_name)
            source_type = _path_type(pipeline, memory, path)
            if source_type is None:
                available = ", ".join(memory) or "nothing"
                report(
                    f"{step_where}, input '{input_name}'",
                    f"nothing provides '{path}' at step {index + 1} (available: {available})",
                )
            elif not _types.type_problems(
                input_type, pipeline.structures
            ) and not _types.is_assignable(source_type, input_type):
                report(
                    f"{step_where}, input '{input_name}'",
                    f"'{path}' is {source_type} but pipe '{step.pipe}' expects {input_type}",
                )
        memory[step.result_name] = output_type(pipeline, step.pipe)
    for output_path in _output_paths(pipe):
        if _path_type(pipeline, memory, output_path) is None:
            report(
                f"{where}, field 'output'",
                f"nothing provides '{output_path}' (available: {', '.join(memory)})",
            )


def _output_paths(pipe: SequencePipe) -> list[str]:
    if pipe.output is None:
        return []
    if isinstance(pipe.output, str):
        return [pipe.output]
    if isinstance(pipe.output, list):
        return list(pipe.output)
    return list(pipe.output.values())


def output_type(pipeline: Pipeline, name: str, _seen: frozenset[str] = frozenset()) -> str:
    """The type of what pipe ``name`` returns (``any`` when it cannot be known statically)."""
    pipe = pipeline.pipes.get(name)
    if pipe is None or name in _seen:
        return "any"
    if isinstance(pipe, LlmPipe | ToolPipe):
        return pipe.output
    if pipe.output is None:
        last = pipe.steps[-1]
        return output_type(pipeline, last.pipe, _seen | {name})
    if isinstance(pipe.output, str):
        memory = dict(pipe.inputs)
        for step in pipe.steps:
            memory[step.result_name] = output_type(pipeline, step.pipe, _seen | {name})
        return _path_type(pipeline, memory, pipe.output) or "any"
    return "any"


def _path_type(pipeline: Pipeline, memory: dict[str, str], path: str) -> str | None:
    """The type at a dotted working-memory path, ``any`` when unknown, None when the root is missing."""
    root, *fields = path.split(".")
    if root not in memory:
        return None
    current = memory[root]
    for field in fields:
        structure = pipeline.structures.get(current)
        if structure is None:
            return "any"
        if field not in structure.fields:
            return None
        current = structure.fields[field].type
    return current


def _check_cycles(pipeline: Pipeline, report: _Report) -> None:
    def children(name: str) -> list[str]:
        pipe = pipeline.pipes.get(name)
        return [s.pipe for s in pipe.steps] if isinstance(pipe, SequencePipe) else []

    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for child in children(name):
            if state.get(child) == 1:
                cycle = [*trail[trail.index(child) :], child] if child in trail else [name, child]
                report(f"pipe '{child}'", "pipes call each other in a cycle: " + " -> ".join(cycle))
            elif child in pipeline.pipes and state.get(child) is None:
                visit(child, [*trail, child])
        state[name] = 2

    for name in pipeline.pipes:
        if state.get(name) is None:
            visit(name, [name])


def _suggest(name: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_inputs(
    pipeline: Pipeline, pipe_name: str, inputs: dict[str, object]
) -> dict[str, object]:
    """The run inputs for pipe ``pipe_name``, checked against its declared inputs.

    Raises:
        PipelineError: the pipe is unknown, an input is missing or unknown, or has the wrong type.
    """
    pipe = pipeline.pipes.get(pipe_name)
    if pipe is None:
        known = ", ".join(sorted(pipeline.pipes)) or "none"
        raise PipelineError(
            [
                Problem(
                    f"pipe '{pipe_name}'",
                    f"no such pipe{_suggest(pipe_name, pipeline.pipes)} (pipes: {known})",
                )
            ]
        )
    problems = []
    checked: dict[str, object] = {}
    for name in sorted(set(inputs) - set(pipe.inputs)):
        declared = ", ".join(pipe.inputs) or "none"
        problems.append(
            Problem(
                f"pipe '{pipe_name}', input '{name}'",
                f"the pipe has no such input (declared: {declared})",
            )
        )
    for name, type_ref in pipe.inputs.items():
        if name not in inputs:
            problems.append(
                Problem(f"pipe '{pipe_name}', input '{name}'", f"missing input value ({type_ref})")
            )
            continue
        try:
            checked[name] = _types.validate(type_ref, pipeline.structures, inputs[name])
        except pydantic.ValidationError as err:
            first = err.errors(include_url=False)[0]
            problems.append(
                Problem(
                    f"pipe '{pipe_name}', input '{name}'", f"expected {type_ref}: {first['msg']}"
                )
            )
    if problems:
        raise PipelineError(problems)
    return checked
