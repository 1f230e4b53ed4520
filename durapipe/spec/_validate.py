"""Static validation: every mistake in a pipeline, found before anything runs.

`check` returns all problems at once, each naming the pipe (and step or field) it is in, so a user
fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pydantic

from durapipe._errors import PipelineError, Problem
from durapipe.spec import _blob_refs, _types
from durapipe.spec._check_leaves import check_model
from durapipe.spec._deck import ModelEntry, entry_problems, target
from durapipe.spec._flow import output_shape
from durapipe.spec._kinds import is_controller_kind, kind_of
from durapipe.spec._names import suggest
from durapipe.spec._spec import (
    Pipeline,
    PipeSpec,
    SequencePipe,
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
        if structure.refines is not None and structure.refines not in pipeline.structures:
            report(
                f"structure '{name}', field 'refines'",
                f"'{structure.refines}' is not a structure of the pipeline"
                + suggest(structure.refines, pipeline.structures),
            )
        for message in _types.refinement_problems(name, pipeline.structures):
            report(f"structure '{name}', field 'refines'", message)
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
        check_model(pipeline, pipeline.default_model, "default_model", report)
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
        kind = kind_of(pipe.kind)
        if kind is not None and kind.check is not None:
            kind.check(pipeline, name, pipe, report)  # each kind's own checks, built-in or not
    _check_cycles(pipeline, report)
    return problems


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


def call_problem(pipeline: Pipeline, start: str, *, nesting: bool = True) -> str | None:
    """Why the pipes ``start`` calls cannot run as ``pipeline`` holds them, in one sentence, or None.

    A spec that arrives in a workflow input need not have been validated (any client of the
    namespace can start a run): a cycle would start child workflows without end (doubling them at
    each level of a parallel), and a pipe the spec lacks would fail a workflow task forever. So a
    run checks what it was sent: a pipe it names that the spec lacks, pipes that call each other in
    a cycle, calls nested deeper than `MAX_PIPE_DEPTH` (iterative: any depth of input).
    ``nesting=False`` leaves out types nested past `durapipe.spec._types.MAX_NESTING`.
    """
    if start not in pipeline.pipes:
        return f"the run's spec holds no pipe '{start}'"
    wrong_type = _type_problem(start, pipeline.pipes[start], pipeline, nesting)
    if wrong_type is not None:
        return wrong_type
    done: set[str] = set()
    trail = [start]
    stack = [iter(pipes_used(pipeline.pipes[start]))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            done.add(trail.pop())
            continue
        if child in done:
            continue
        if child not in pipeline.pipes:
            return f"pipe '{trail[-1]}' calls pipe '{child}', which the run's spec does not hold"
        if child in trail:
            cycle = " -> ".join([*trail[trail.index(child) :], child])
            return f"pipe '{child}': pipes call each other in a cycle: {cycle}"
        if len(trail) >= MAX_PIPE_DEPTH:
            return f"pipe '{start}': pipes call each other more than {MAX_PIPE_DEPTH} levels deep"
        wrong_type = _type_problem(child, pipeline.pipes[child], pipeline, nesting)
        if wrong_type is not None:
            return wrong_type
        trail.append(child)
        stack.append(iter(pipes_used(pipeline.pipes[child])))
    return None


def _type_problem(
    name: str, pipe: PipeSpec, pipeline: Pipeline, nesting: bool = True
) -> str | None:
    """Why a type ``pipe`` declares cannot be used: unreadable, unknown, or a structure that refers
    to itself (its steps would fail on it, each attempt, with a RecursionError)."""
    # A controller's output names working-memory values; a leaf's is a type.
    output = None if is_controller_kind(pipe.kind) else getattr(pipe, "output", None)
    fields = [*(("input", n, t) for n, t in pipe.inputs.items()), ("field", "output", output)]
    for label, field, ref in fields:
        if not isinstance(ref, str):
            continue
        try:
            problems = _types.type_problems(ref, pipeline.structures, nesting=nesting)
        except RecursionError:
            problems = [f"'{ref[:40]}' nests too deeply (types or structures)"]
        if problems:
            return f"pipe '{name}', {label} '{field}': {problems[0]}"
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
        if name not in inputs and _types.optional_of(type_ref) is not None:
            checked[name] = None  # an optional input left out: the pipe reads null
            continue
        if name not in inputs:
            problems.append(
                Problem(f"pipe '{pipe_name}', input '{name}'", f"missing input value ({type_ref})")
            )
            continue
        given = inputs[name]
        if type_ref in _types.BLOB_TYPES and isinstance(given, str):
            # Most often a path with its @ forgotten; pydantic would say "a valid dictionary".
            shown = given if len(given) <= 60 else given[:57] + "..."
            problems.append(
                Problem(
                    f"pipe '{pipe_name}', input '{name}'",
                    f"expected {type_ref}, got the text '{shown}'; pass a file as --input "
                    f"{name}=@PATH (in Python, a Path or bytes)",
                )
            )
            continue
        try:
            checked[name] = _types.validate(type_ref, pipeline.structures, inputs[name])
        except pydantic.ValidationError as err:
            first = err.errors(include_url=False)[0]
            why = (
                _blob_refs.not_a_blob(given, err) if type_ref in _types.BLOB_TYPES else first["msg"]
            )
            problems.append(
                Problem(f"pipe '{pipe_name}', input '{name}'", f"expected {type_ref}: {why}")
            )
    if not problems:
        problems = _blobs_downstream(pipeline, pipe_name, pipe_name, checked)
    if problems:
        raise PipelineError(problems)
    return checked


def _blobs_downstream(
    pipeline: Pipeline, run_pipe: str, pipe_name: str, values: dict[str, object], at: str = ""
) -> list[Problem]:
    """Run inputs a sequence passes by name to a ``file``/``document``/``image`` input of one of
    its steps (e.g. through an input typed ``any``) that are not blob references: known before
    the run starts, so refused before it starts."""
    pipe = pipeline.pipes.get(pipe_name)
    if not isinstance(pipe, SequencePipe):
        return []
    memory = dict(values)
    for step in pipe.steps:
        target = pipeline.pipes.get(step.pipe or "")
        path = f"{at}{step.step_name}"
        if target is not None:
            sources = {name: step.inputs.get(name, name) for name in target.inputs}
            given = {name: memory[src] for name, src in sources.items() if src in memory}
            refused = _blob_refs.blob_input_problem(dict(target.inputs), given)
            if refused is not None:
                name, why = refused
                return [
                    Problem(
                        f"pipe '{run_pipe}', input '{sources[name]}'",
                        f"step '{path}' (pipe '{step.pipe}') reads it as its {why}",
                    )
                ]
            found = _blobs_downstream(pipeline, run_pipe, step.pipe or "", given, f"{path}/")
            if found:
                return found
        memory.pop(step.result_name, None)  # a later step reads this step's result instead
    return []
