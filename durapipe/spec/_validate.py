"""Static validation: every mistake in a pipeline, found before anything runs.

`check` returns all problems at once, each naming the pipe (and step or field) it is in, so a user
fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import pydantic

from durapipe._errors import PipelineError, Problem
from durapipe.spec import _templates, _types
from durapipe.spec._check_controllers import check_batch, check_condition, check_parallel
from durapipe.spec._compose import check_compose
from durapipe.spec._deck import ModelEntry, entry_problems, settings_problems, target
from durapipe.spec._flow import (
    Memory,
    check_pipe_ref,
    check_reads,
    output_shape,
    path_shape,
    suggest,
)
from durapipe.spec._spec import (
    AgentPipe,
    ApprovalPipe,
    BatchPipe,
    ComposePipe,
    ConditionPipe,
    ExtractPipe,
    ImagePipe,
    LlmPipe,
    ParallelPipe,
    Pipeline,
    SequencePipe,
    ToolPipe,
    pipes_used,
)

_PIPE_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
_INPUT_NAME = re.compile(r"^[A-Za-z_]\w*$")

_Report = Callable[[str, str], None]


def validate(pipeline: Pipeline, *, source: str = "") -> None:
    """Raise `PipelineError` listing every problem in ``pipeline``; return quietly when it is sound."""
    problems = check(pipeline, source=source)
    if problems:
        raise PipelineError(problems)


MAX_PIPE_DEPTH = 50  # pipes calling pipes: each level is a child workflow


def check(pipeline: Pipeline, *, source: str = "") -> list[Problem]:
    """Every problem in ``pipeline``, in a stable order."""
    too_deep = _nesting_problem(pipeline)
    if too_deep is not None:
        # The other checks follow pipes into the pipes they call: not past this depth.
        return [Problem(too_deep[0], too_deep[1], source)]
    problems: list[Problem] = []

    def report(where: str, message: str) -> None:
        problems.append(Problem(where, message, source))

    for name, structure in pipeline.structures.items():
        if name in _types.BUILTINS or name in _types.SCALARS:
            report(
                f"structure '{name}'",
                f"'{name}' is a built-in type; give the structure another name",
            )
        for field_name, field in structure.fields.items():
            for message in _field_problems(field, pipeline.structures):
                report(f"structure '{name}', field '{field_name}'", message)
    for alias, entry in pipeline.models.items():
        model = target(entry)
        if isinstance(entry, ModelEntry):
            for entry_field, message in entry_problems(entry):
                report(f"model alias '{alias}', field '{entry_field}'", message)
        if "/" not in model:
            report(
                f"model alias '{alias}'",
                f"model '{model}' needs a provider prefix, e.g. openai/{model}",
            )
    if pipeline.default_model:
        _check_model(pipeline, pipeline.default_model, "default_model", report)
    seen: set[str] = set()
    for rule in pipeline.limits:
        if rule.bucket in seen:
            report(f"limit '{rule.bucket}'", "two limits have this name; give each its own")
        seen.add(rule.bucket)
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
        elif isinstance(pipe, ExtractPipe | ImagePipe):
            _check_operator(pipeline, name, pipe, report)
        elif isinstance(pipe, SequencePipe):
            _check_sequence(pipeline, name, pipe, report)
        elif isinstance(pipe, AgentPipe):
            _check_agent(pipeline, name, pipe, report)
        elif isinstance(pipe, ApprovalPipe):
            _check_approval(name, pipe, report)
        elif isinstance(pipe, ComposePipe):
            check_compose(name, pipe, pipeline.structures, report)
        elif isinstance(pipe, ParallelPipe):
            check_parallel(pipeline, name, pipe, report)
        elif isinstance(pipe, BatchPipe):
            check_batch(pipeline, name, pipe, report)
        elif isinstance(pipe, ConditionPipe):
            check_condition(pipeline, name, pipe, report)
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


def _field_problems(field: _types.FieldSpec, structures: _types.Structures) -> list[str]:
    """Why a structure field is unusable: its type, or choices and a default that do not fit it."""
    problems = _types.type_problems(field.type, structures, loops=False)
    if problems:
        return problems
    values = [("choice", choice) for choice in field.choices or []]
    if field.default is not None:
        values.append(("default", field.default))
    for label, value in values:
        try:
            _types.validate(field.type, structures, value)
        except pydantic.ValidationError:
            problems.append(f"{label} {value!r} is not of the field's type {field.type}")
    if field.default is not None and field.choices and field.default not in field.choices:
        problems.append(f"default {field.default!r} is not one of the choices {field.choices}")
    return problems


def _check_operator(
    pipeline: Pipeline, name: str, pipe: ExtractPipe | ImagePipe, report: _Report
) -> None:
    where = f"pipe '{name}'"
    if pipe.model is not None:
        _check_model(pipeline, pipe.model, f"{where}, field 'model'", report)
    _check_settings(where, pipe.kind, pipe.settings, report)
    if isinstance(pipe, ImagePipe):
        _check_templates(where, pipe.inputs, [("prompt", pipe.prompt)], report)
        return
    blobs = [n for n, t in pipe.inputs.items() if _types.is_assignable(t, "file")]
    if len(pipe.inputs) != 1 or len(blobs) != 1:
        declared = ", ".join(f"{n}: {t}" for n, t in pipe.inputs.items()) or "none"
        report(
            f"{where}, field 'inputs'",
            f"an extract pipe reads exactly one input of type document, image or file (declared: {declared})",
        )


def _check_model_and_output(
    pipeline: Pipeline, where: str, pipe: LlmPipe | AgentPipe, report: _Report
) -> None:
    if pipe.model is not None:
        _check_model(pipeline, pipe.model, f"{where}, field 'model'", report)
    for message in _types.type_problems(pipe.output, pipeline.structures):
        report(f"{where}, field 'output'", message)


def _check_llm(pipeline: Pipeline, name: str, pipe: LlmPipe, report: _Report) -> None:
    where = f"pipe '{name}'"
    _check_model_and_output(pipeline, where, pipe, report)
    _check_settings(where, "llm", pipe.settings, report)
    _check_templates(where, pipe.inputs, [("system", pipe.system), ("prompt", pipe.prompt)], report)


def _check_agent(pipeline: Pipeline, name: str, pipe: AgentPipe, report: _Report) -> None:
    where = f"pipe '{name}'"
    _check_model_and_output(pipeline, where, pipe, report)
    _check_settings(where, "agent", pipe.settings, report)
    templates = [("instructions", pipe.instructions), ("prompt", pipe.prompt)]
    _check_templates(where, pipe.inputs, templates, report)
    for tool_name in pipe.tools:
        target = pipeline.pipes.get(tool_name)
        if target is None:
            report(
                f"{where}, field 'tools'",
                f"unknown pipe '{tool_name}'{suggest(tool_name, pipeline.pipes)}",
            )
        elif not isinstance(target, ToolPipe):
            report(
                f"{where}, field 'tools'",
                f"pipe '{tool_name}' is a {target.kind} pipe; an agent can only call tool pipes",
            )
    if len(set(pipe.tools)) < len(pipe.tools):
        report(f"{where}, field 'tools'", "a tool is listed twice")


def _check_templates(
    where: str,
    inputs: Mapping[str, str],
    templates: list[tuple[str, str | None]],
    report: _Report,
) -> None:
    """Every template variable must be a declared input, and every declared input used."""
    used: set[str] = set()
    parsed = True
    for field, template in templates:
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
        for variable in sorted(names - set(inputs)):
            report(
                f"{where}, field '{field}'",
                f"template variable '{variable}' is not a declared input "
                f"(declared: {', '.join(inputs) or 'none'})",
            )
    # A template that does not parse says nothing about which inputs it uses.
    fields = " or ".join(field for field, _ in templates)
    for unused in sorted(set(inputs) - used) if parsed else []:
        report(
            f"{where}, input '{unused}'", f"declared input is never used by the {fields} template"
        )


def _check_approval(name: str, pipe: ApprovalPipe, report: _Report) -> None:
    where = f"pipe '{name}'"
    if pipe.value is not None and pipe.value not in pipe.inputs:
        report(
            f"{where}, field 'value'",
            f"'{pipe.value}' is not a declared input (declared: {', '.join(pipe.inputs) or 'none'})",
        )
    elif pipe.value_name is None:
        report(
            f"{where}, field 'value'",
            "name the input the run continues with when approved (the pipe has "
            f"{len(pipe.inputs)} inputs)",
        )
    try:
        names = _templates.variables(pipe.message)
    except _templates.TemplateError as err:
        report(f"{where}, field 'message'", str(err))
        return
    for variable in sorted(names - set(pipe.inputs)):
        report(
            f"{where}, field 'message'",
            f"template variable '{variable}' is not a declared input "
            f"(declared: {', '.join(pipe.inputs) or 'none'})",
        )


def _check_settings(where: str, kind: str, settings: Mapping[str, object], report: _Report) -> None:
    for name, message in settings_problems(kind, settings):
        report(f"{where}, field 'settings.{name}'", message)


def _check_sequence(pipeline: Pipeline, name: str, pipe: SequencePipe, report: _Report) -> None:
    where = f"pipe '{name}'"
    memory: Memory = dict(pipe.inputs)
    step_names: set[str] = set()
    for index, step in enumerate(pipe.steps):
        step_where = f"{where}, step '{step.step_name}'"
        if step.step_name in step_names:
            report(
                step_where, f"step name '{step.step_name}' is used twice; give one a distinct name"
            )
        step_names.add(step.step_name)
        if step.from_ is not None:
            bound = path_shape(pipeline, memory, step.from_)
            if bound is None:
                report(
                    f"{step_where}, field 'from'",
                    f"nothing provides '{step.from_}' at step {index + 1} "
                    f"(available: {', '.join(memory) or 'nothing'})",
                )
            memory[step.result_name] = bound or "any"
            continue
        assert step.pipe is not None  # a step is a binding or runs a pipe (checked by the spec)
        if not check_pipe_ref(pipeline, f"{step_where}, field 'pipe'", step.pipe, report):
            memory[step.result_name] = "any"
            continue
        check_reads(
            pipeline, step_where, step.pipe, step.inputs, memory, report, f" at step {index + 1}"
        )
        memory[step.result_name] = output_shape(pipeline, step.pipe)
    for output_path in _output_paths(pipe):
        if path_shape(pipeline, memory, output_path) is None:
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


def output_type(pipeline: Pipeline, name: str) -> str:
    """The type of what pipe ``name`` returns (``any`` when it cannot be known statically)."""
    shape = output_shape(pipeline, name)
    return shape if isinstance(shape, str) else "any"


def _nesting_problem(pipeline: Pipeline) -> tuple[str, str] | None:
    """The pipe whose calls nest deeper than `MAX_PIPE_DEPTH`, if any (iterative: any depth)."""
    depth: dict[str, int] = {}
    for start in pipeline.pipes:
        stack: list[tuple[str, int]] = [(start, 0)]
        on_path: set[str] = set()
        while stack:
            name, index = stack.pop()
            pipe = pipeline.pipes.get(name)
            children = [c for c in pipes_used(pipe) if c in pipeline.pipes] if pipe else []
            if index == 0:
                if name in depth:
                    continue
                on_path.add(name)
            if index < len(children):
                stack.append((name, index + 1))
                child = children[index]
                if child not in depth and child not in on_path:  # a cycle is reported elsewhere
                    stack.append((child, 0))
                continue
            on_path.discard(name)
            depth[name] = 1 + max((depth.get(c, 0) for c in children), default=0)
            if depth[name] > MAX_PIPE_DEPTH:
                return (
                    f"pipe '{name}'",
                    f"pipes call each other more than {MAX_PIPE_DEPTH} levels deep from here; "
                    "flatten the pipeline",
                )
    return None


def _check_cycles(pipeline: Pipeline, report: _Report) -> None:
    def children(name: str) -> list[str]:
        pipe = pipeline.pipes.get(name)
        return pipes_used(pipe) if pipe is not None else []

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
                    f"no such pipe{suggest(pipe_name, pipeline.pipes)} (pipes: {known})",
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
