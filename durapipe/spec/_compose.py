"""The compose pipe: its output assembled from its inputs (a template, or fields), no model call.

Pure and deterministic, so the interpreter runs it inside the workflow with no activity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic

from durapipe.spec import _templates, _types
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
    """Template variables and ``from`` roots must be declared inputs; the output a known type."""
    where = f"pipe '{name}'"
    sources: list[tuple[str, str]] = []
    roots: list[tuple[str, str]] = []
    if pipe.template is not None:
        sources.append(("template", pipe.template))
    _collect(pipe.build or {}, "build", sources, roots)
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
    for message in _types.type_problems(pipe.output, structures):
        report(f"{where}, field 'output'", message)


def _collect(
    fields: dict[str, Any],
    prefix: str,
    sources: list[tuple[str, str]],
    roots: list[tuple[str, str]],
) -> None:
    for name, spec in fields.items():
        field = f"{prefix}.{name}"
        if isinstance(spec, dict) and "from" in spec:
            roots.append((field, str(spec["from"]).split(".")[0]))
        elif isinstance(spec, dict) and "template" in spec:
            sources.append((field, str(spec["template"])))
        elif isinstance(spec, dict):
            _collect(spec, field, sources, roots)
