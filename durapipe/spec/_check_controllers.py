"""Static checks of the controller kinds: sequence, parallel, batch and condition.

Each is registered with its kind (`durapipe.spec._builtin_kinds`) and called by `durapipe.spec.check`.
"""

from __future__ import annotations

from durapipe.spec import _templates
from durapipe.spec._flow import (
    Memory,
    Report,
    Shape,
    check_pipe_ref,
    check_reads,
    describe,
    output_shape,
    path_shape,
)
from durapipe.spec._names import suggest
from durapipe.spec._spec import (
    CONTINUE_OUTCOME,
    FAIL_OUTCOME,
    BatchPipe,
    ConditionPipe,
    ParallelPipe,
    Pipeline,
    SequencePipe,
)
from durapipe.spec._types import parse_type


def check_parallel(pipeline: Pipeline, name: str, pipe: ParallelPipe, report: Report) -> None:
    """Every branch runs a known pipe whose inputs the parallel pipe's inputs provide."""
    memory: Memory = dict(pipe.inputs)
    for branch_name, branch in pipe.branches.items():
        where = f"pipe '{name}', branch '{branch_name}'"
        if check_pipe_ref(pipeline, f"{where}, field 'pipe'", branch.pipe, report):
            check_reads(pipeline, where, branch.pipe, branch.inputs, memory, report)


def check_batch(pipeline: Pipeline, name: str, pipe: BatchPipe, report: Report) -> None:
    """The batch maps over a list, its item name is free, and the mapped pipe's inputs are there."""
    where = f"pipe '{name}'"
    memory: Memory = dict(pipe.inputs)
    item_type: str | None = "any"
    listed = path_shape(pipeline, memory, pipe.over)
    if listed is None:
        report(
            f"{where}, field 'over'",
            f"nothing provides '{pipe.over}' (available: {', '.join(memory) or 'nothing'})",
        )
    else:
        item_type = _item_type(listed)
    if item_type is None:
        report(
            f"{where}, field 'over'",
            f"'{pipe.over}' is {describe(listed or 'any')}, not a list: a batch maps a pipe over a list",
        )
    if pipe.item in memory:
        report(
            f"{where}, field 'item'",
            f"item name '{pipe.item}' is already the input '{pipe.item}'; give the item another name",
        )
    memory[pipe.item] = item_type or "any"
    if check_pipe_ref(pipeline, f"{where}, field 'pipe'", pipe.pipe, report):
        check_reads(pipeline, where, pipe.pipe, pipe.pipe_inputs, memory, report)
        if pipe.flatten:
            _check_flatten(pipeline, where, pipe, report)


def _check_flatten(pipeline: Pipeline, where: str, pipe: BatchPipe, report: Report) -> None:
    """A flattened batch maps a pipe that returns a list, and fails fast."""
    if pipe.on_error != "fail":
        report(
            f"{where}, field 'flatten'",
            "a batch that collects errors keeps one result (or null) per element: "
            "use flatten only with on_error: fail",
        )
    returned = output_shape(pipeline, pipe.pipe)
    if returned != "any" and _item_type(returned) is None:
        report(
            f"{where}, field 'flatten'",
            f"pipe '{pipe.pipe}' returns {describe(returned)}, not a list: only lists are joined",
        )


def _item_type(shape: Shape) -> str | None:
    """The element type of a list shape, ``any`` when unknown, None when it is not a list."""
    if isinstance(shape, dict):
        return None
    try:
        node = parse_type(shape)
    except ValueError:
        return "any"  # reported as a bad type where it is declared
    if node.item is not None:
        return str(node.item)
    return "any" if node.name == "any" else None


def check_condition(pipeline: Pipeline, name: str, pipe: ConditionPipe, report: Report) -> None:
    """The expression parses and reads declared inputs; every outcome names a pipe that can run."""
    where = f"pipe '{name}'"
    try:
        names = _templates.expression_variables(pipe.expression)
    except _templates.TemplateError as err:
        report(f"{where}, field 'expression'", str(err))
        names = set()
    for variable in sorted(names - set(pipe.inputs)):
        report(
            f"{where}, field 'expression'",
            f"expression variable '{variable}' is not a declared input "
            f"(declared: {', '.join(pipe.inputs) or 'none'})",
        )
    memory: Memory = dict(pipe.inputs)
    targets = [(f"outcome '{key}'", target) for key, target in pipe.outcomes.items()]
    if pipe.default is not None:
        targets.append(("field 'default'", pipe.default))
    for label, target in targets:
        if target in (FAIL_OUTCOME, CONTINUE_OUTCOME):
            continue
        if target not in pipeline.pipes:
            known = {**pipeline.pipes, FAIL_OUTCOME: None, CONTINUE_OUTCOME: None}
            report(
                f"{where}, {label}",
                f"unknown pipe '{target}'{suggest(target, known)}; an outcome names a pipe, "
                f"'{FAIL_OUTCOME}' or '{CONTINUE_OUTCOME}'",
            )
            continue
        check_reads(pipeline, f"{where}, {label}", target, {}, memory, report)


def check_sequence(pipeline: Pipeline, name: str, pipe: SequencePipe, report: Report) -> None:
    """Step names are distinct, each step's pipe and reads are there, the output is provided."""
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
