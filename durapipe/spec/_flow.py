"""Static data flow: the type of every working-memory value, and checks of what a pipe reads.

A value's static type is a `Shape`: a type string of the type language (``text``,
``list[Claim]``), or a mapping of names to shapes for values that controllers assemble (a parallel
pipe's output, a sequence's mapping output), so ``summaries.short`` has a type a later step can check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from durapipe.spec import _types
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

Shape = str | dict[str, "Shape"]
Memory = dict[str, Shape]
Report = Callable[[str, str], None]


def path_shape(pipeline: Pipeline, memory: Memory, path: str) -> Shape | None:
    """The shape at a dotted working-memory path, ``any`` when unknown, None when it is missing."""
    return walk_path(pipeline.structures, memory, path)[0]


def walk_path(
    structures: _types.Structures, memory: Mapping[str, Shape], path: str
) -> tuple[Shape | None, str]:
    """The shape at a dotted path (as `path_shape`) and, when it names nothing, why.

    Example:
        >>> walk_path({}, {"analysis": "text"}, "analysis.score")
        (None, "'analysis' is text, which has no field 'score'")
    """
    root, *fields = path.split(".")
    if root not in memory:
        return None, f"nothing is named '{root}'"
    current = memory[root]
    walked = root
    for field in fields:
        known = current if isinstance(current, dict) else fields_of(current, structures)
        if known is None:
            return "any", ""  # a value of unknown shape: any field may be there
        if field not in known:
            why = f"'{walked}' is {describe(current)}, which has no field '{field}'"
            if isinstance(current, str) and _is_list(current):
                why += " (a list has no fields: read it whole, or map a pipe over it)"
            return None, why + suggest(field, known)
        current = known[field]
        walked += f".{field}"
    return current, ""


def fields_of(ref: str, structures: _types.Structures) -> Mapping[str, str] | None:
    """The fields a value of type ``ref`` has, by name and type: a structure's, a built-in's
    (``Page``, a blob reference); none for text, numbers and lists; None when unknown (``any``)."""
    ref = _types.optional_of(ref) or ref
    if ref == "any":
        return None
    if ref in structures:
        return {name: field.type for name, field in structures[ref].fields.items()}
    if ref in _types.BUILTINS:
        return {
            name: _BUILTIN_FIELD_TYPES.get(info.annotation, "any")
            for name, info in _types.BUILTINS[ref].model_fields.items()
        }
    return {}


_BUILTIN_FIELD_TYPES: dict[object, str] = {str: "text", int: "integer"}


def _is_list(ref: str) -> bool:
    try:
        return _types.parse_type(ref).item is not None
    except ValueError:
        return False


def describe(shape: Shape) -> str:
    """A shape in words, for messages."""
    if isinstance(shape, dict):
        return "a mapping of " + ", ".join(shape) if shape else "an empty mapping"
    return shape


def assignable(pipeline: Pipeline, source: Shape, target: str) -> bool:
    """Whether a value of shape ``source`` may flow where type ``target`` is declared."""
    if isinstance(source, dict):
        # A mapping fits a declared structure when it has the structure's required fields.
        structure = pipeline.structures.get(target)
        if structure is None:
            return target == "any"
        required = {n for n, f in structure.fields.items() if not f.optional}
        return required <= set(source)
    if _types.type_problems(source, pipeline.structures):
        return True  # a bad type is reported where it is declared, once
    return _types.is_assignable(source, target, pipeline.structures)


def output_shape(pipeline: Pipeline, name: str, _seen: frozenset[str] = frozenset()) -> Shape:
    """The shape of what pipe ``name`` returns (``any`` when it cannot be known statically)."""
    pipe = pipeline.pipes.get(name)
    if pipe is None or name in _seen:
        return "any"
    seen = _seen | {name}
    if isinstance(pipe, SequencePipe):
        return _sequence_shape(pipeline, pipe, seen)
    if isinstance(pipe, ParallelPipe):
        results: Shape = {
            b: output_shape(pipeline, br.pipe, seen) for b, br in pipe.branches.items()
        }
        return results if pipe.on_error == "fail" else {"results": results, "errors": "any"}
    if isinstance(pipe, BatchPipe):
        item = output_shape(pipeline, pipe.pipe, seen)
        listed = f"list[{item}]" if isinstance(item, str) else "list[any]"
        if pipe.flatten:  # each element's list joined: a list of the element's items
            listed = f"list[{_list_item(item)}]"
        return listed if pipe.on_error == "fail" else {"results": listed, "errors": "list[any]"}
    if isinstance(pipe, ConditionPipe):
        targets = {pipe.default or CONTINUE_OUTCOME, *pipe.outcomes.values()}
        shapes = [
            output_shape(pipeline, t, seen)
            for t in sorted(targets - {FAIL_OUTCOME, CONTINUE_OUTCOME})
        ]
        return shapes[0] if shapes and all(s == shapes[0] for s in shapes) else "any"
    return str(getattr(pipe, "output", "any"))


def _list_item(shape: Shape) -> str:
    """The item type of a list shape (``any`` when it is not a known list)."""
    try:
        node = _types.parse_type(shape) if isinstance(shape, str) else None
    except ValueError:
        return "any"
    return str(node.item) if node is not None and node.item is not None else "any"


def _sequence_shape(pipeline: Pipeline, pipe: SequencePipe, seen: frozenset[str]) -> Shape:
    memory: Memory = dict(pipe.inputs)
    for step in pipe.steps:
        if step.pipe is not None:
            memory[step.result_name] = output_shape(pipeline, step.pipe, seen)
        elif step.from_ is not None:
            memory[step.result_name] = path_shape(pipeline, memory, step.from_) or "any"
    if pipe.output is None:
        return memory[pipe.steps[-1].result_name]
    if isinstance(pipe.output, str):
        return path_shape(pipeline, memory, pipe.output) or "any"
    paths = (
        dict(zip(pipe.output, pipe.output, strict=True))
        if isinstance(pipe.output, list)
        else pipe.output
    )
    return {n: path_shape(pipeline, memory, p) or "any" for n, p in paths.items()}


def check_pipe_ref(pipeline: Pipeline, where: str, name: str, report: Report) -> bool:
    """Report an unknown pipe name; True when the pipe exists."""
    if name in pipeline.pipes:
        return True
    report(where, f"unknown pipe '{name}'{suggest(name, pipeline.pipes)}")
    return False


def check_reads(
    pipeline: Pipeline,
    where: str,
    target_name: str,
    mapping: Mapping[str, str],
    memory: Memory,
    report: Report,
    at: str = "",
) -> None:
    """Check that working memory provides every input of pipe ``target_name``, with fitting types.

    ``mapping`` says where an input comes from when not from the value of its own name; ``at`` tells
    the user when the read happens (``" at step 2"``).
    """
    target = pipeline.pipes[target_name]
    for input_name in mapping:
        if input_name not in target.inputs:
            report(
                f"{where}, input '{input_name}'",
                f"pipe '{target_name}' has no input '{input_name}'",
            )
    for input_name, input_type in target.inputs.items():
        path = mapping.get(input_name, input_name)
        source = path_shape(pipeline, memory, path)
        if source is None and _types.optional_of(input_type) is not None:
            continue  # nothing provides an optional input: the pipe reads null
        if source is None:
            available = ", ".join(memory) or "nothing"
            report(
                f"{where}, input '{input_name}'",
                f"nothing provides '{path}'{at} (available: {available})",
            )
        elif not _types.type_problems(input_type, pipeline.structures) and not assignable(
            pipeline, source, input_type
        ):
            report(
                f"{where}, input '{input_name}'",
                f"'{path}' is {describe(source)} but pipe '{target_name}' expects {input_type}",
            )
