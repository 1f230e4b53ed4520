"""The compose pipe: its output assembled from its inputs (a template, or fields), no model call.

Pure and deterministic, so the interpreter runs it inside the workflow with no activity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic

from durapipe.spec import _templates, _types
from durapipe.spec._flow import walk_path
from durapipe.spec._spec import ComposePipe


def compose(
    pipe: ComposePipe, values: dict[str, Any], structures: _types.Structures | None = None
) -> Any:
    """The output of ``pipe`` for the input ``values``, checked against its output type.

    Raises:
        TemplateError: a template failed to render.
        KeyError: a ``from`` path names nothing in ``values``.
        ValueError: the output does not fit the pipe's output type.
    """
    if pipe.template is not None:
        output: Any = _templates.render(pipe.template, values)
    else:
        assert pipe.build is not None  # the spec holds exactly one of template and build
        output = _build(pipe.build, values)
    try:
        return _types.validate(pipe.output, structures or {}, output)
    except pydantic.ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        raise ValueError(f"the output is not {pipe.output}: {where}: {first['msg']}") from None


def _build(fields: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    built: dict[str, Any] = {}
    for name, spec in fields.items():
        if isinstance(spec, dict) and "from" in spec:
            value = _lookup(values, str(spec["from"]))
            key = spec.get("list_to_dict_keyed_by")
            if key is not None:
                value = {str(_attribute(item, str(key))): item for item in value}
            built[name] = value
        elif isinstance(spec, dict) and "template" in spec:
            built[name] = _templates.render(str(spec["template"]), values)
        elif isinstance(spec, dict):
            built[name] = _build(spec, values)
        else:
            built[name] = spec
    return built


def _lookup(values: dict[str, Any], path: str) -> Any:
    current: Any = values
    for part in path.split("."):
        current = _attribute(current, part)
    return current


def _attribute(value: Any, name: str) -> Any:
    if isinstance(value, dict) and name in value:
        return value[name]
    raise KeyError(f"'{name}' is not in the value read by the compose pipe")


def check_compose(
    name: str, pipe: ComposePipe, structures: _types.Structures, report: Callable[[str, str], None]
) -> None:
    """Template variables and ``from`` roots must be declared inputs, each ``from`` path a field
    its input's type has; the output a known type."""
    where = f"pipe '{name}'"
    sources: list[tuple[str, str]] = []
    reads: list[tuple[str, dict[str, Any]]] = []
    if pipe.template is not None:
        sources.append(("template", pipe.template))
    _collect(pipe.build or {}, "build", sources, reads)
    roots = [(field, str(read["from"]).split(".")[0]) for field, read in reads]
    for field, source in sources:
        try:
            used = _templates.variables(source)
        except _templates.TemplateError as err:
            report(f"{where}, field '{field}'", str(err))
            continue
        roots += [(field, root) for root in used]
    for field, root in roots:
        if root not in pipe.inputs:
            report(
                f"{where}, field '{field}'",
                f"'{root}' is not a declared input (declared: {', '.join(pipe.inputs) or 'none'})",
            )
    check_compose_paths(name, pipe, structures, report)
    for message in _types.type_problems(pipe.output, structures):
        report(f"{where}, field 'output'", message)


def check_compose_paths(
    name: str, pipe: ComposePipe, structures: _types.Structures, report: Callable[[str, str], None]
) -> None:
    """Each ``from`` path (and its ``list_to_dict_keyed_by``) must name a field its input's type
    has: the part of `check_compose` an MTHDS bundle's rules do not cover, so it is listed with
    their problems too."""
    reads: list[tuple[str, dict[str, Any]]] = []
    _collect(pipe.build or {}, "build", [], reads)
    for field, read in reads:
        problem = _read_problem(read, pipe.inputs, structures)
        if problem is not None:
            report(f"pipe '{name}', field '{field}'", problem)


def _read_problem(
    read: dict[str, Any], inputs: dict[str, str], structures: _types.Structures
) -> str | None:
    """Why a ``from`` read (and its ``list_to_dict_keyed_by``) names nothing its input's type
    holds: found when the pipeline loads, not when the step runs. None when it may."""
    path = str(read["from"])
    root = path.split(".")[0]
    if root not in inputs or _types.type_problems(inputs[root], structures):
        return None  # an undeclared input or a bad type: reported once, where it is
    shape, fault = walk_path(structures, inputs, path)
    if shape is None:
        return f"'{path}' reads nothing: {fault}"
    key = read.get("list_to_dict_keyed_by")
    if key is None or shape == "any":
        return None
    assert isinstance(shape, str)  # an input's type, or a field's: never a controller's mapping
    try:
        item = _types.parse_type(shape).item
    except ValueError:
        return None  # a structure field's bad type: reported where the field is declared
    if item is None:
        return f"list_to_dict_keyed_by '{key}' keys a list, and '{path}' is {shape}"
    _, fault = walk_path(structures, {"each item": str(item)}, f"each item.{key}")
    if fault:
        return f"list_to_dict_keyed_by '{key}': in '{path}', {fault}"
    return None


def _collect(
    fields: dict[str, Any],
    prefix: str,
    sources: list[tuple[str, str]],
    reads: list[tuple[str, dict[str, Any]]],
) -> None:
    for name, spec in fields.items():
        field = f"{prefix}.{name}"
        if isinstance(spec, dict) and "from" in spec:
            reads.append((field, spec))
        elif isinstance(spec, dict) and "template" in spec:
            sources.append((field, str(spec["template"])))
        elif isinstance(spec, dict):
            _collect(spec, field, sources, reads)
