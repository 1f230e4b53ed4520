"""The YAML spelling of a pipeline.

```yaml
models:
  fast: durapipe/offline
pipes:
  summarize:
    kind: llm
    model: fast
    inputs: {article: text}
    prompt: "Summarize: {{ article }}"
```

Mistakes come back as `PipelineError` with one `Problem` per mistake, each naming the pipe and field
and the file with line and column.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
import typing
from dataclasses import dataclass
from typing import Any

import pydantic
import yaml

from durapipe._errors import PipelineError, Problem
from durapipe.adapters._yaml_guard import LOADER, check_limits, duplicate_keys, unquoted_names
from durapipe.spec._deck import ModelEntry
from durapipe.spec._kinds import kinds
from durapipe.spec._spec import Branch, Pipeline, Step
from durapipe.spec._types import FieldSpec


def _kind_models() -> dict[str, type[pydantic.BaseModel]]:
    """Every registered pipe kind and its spec class: pydantic names the kind in error locations."""
    return {name: kind.spec for name, kind in kinds().items()}


def load_yaml(text: str, *, source: str = "<yaml>") -> Pipeline:
    """Parse and check the shape of a YAML pipeline (not its meaning: see `validate`).

    Raises:
        PipelineError: the YAML does not parse or does not describe a pipeline.
    """
    shaped = shape_yaml(text, source=source)
    if shaped.problems:
        raise PipelineError(shaped.problems)
    assert shaped.pipeline is not None  # no shape problem: it validated
    return shaped.pipeline


@dataclass(frozen=True)
class Shaped:
    """A YAML pipeline read as far as its shape allows, so the meaning checks can look at the
    rest of the file in the same pass.

    Attributes:
        problems: its shape problems (values pydantic refused), in pydantic's order.
        pipeline: the pipeline without the refused values (a pipe whose ``kind``, ``inputs`` or
            ``output`` was refused, or that lacks a required field, left out whole); None when
            even that does not validate.
        left_out: the names of the pipes, structures and model aliases left out whole, and the
            top-level fields dropped: a meaning problem that names one is not reported (it would
            be a consequence of the shape problem, not a mistake of its own).
        trimmed: ``pipe 'x', field 'f'`` for each field dropped from a pipe that stays: a
            meaning problem there comes from the default that took its place.
    """

    problems: list[Problem]
    pipeline: Pipeline | None
    left_out: frozenset[str] = frozenset()
    trimmed: frozenset[str] = frozenset()

    def consequence(self, problem: Problem) -> bool:
        """Whether ``problem`` (a meaning problem of `pipeline`) may come from a value refused."""
        text = f"{problem.where}: {problem.message}"
        return any(f"'{name}'" in text for name in self.left_out) or any(
            problem.where.startswith(where) for where in self.trimmed
        )


# Pipe fields the rest of a pipe's checks (and other pipes') depend on: a pipe with one refused is
# left out whole rather than checked with a default in its place.
_CORE_FIELDS = frozenset({"kind", "inputs", "output"})
# Rounds of dropping refused values: dropping a required field's bad value makes it missing,
# which the next round answers by leaving its pipe out.
_SALVAGE_ROUNDS = 3


def shape_yaml(text: str, *, source: str = "<yaml>") -> Shaped:
    """The pipeline a YAML text describes and its shape problems (see `Shaped`).

    Raises:
        PipelineError: the YAML does not parse, or is not a mapping: nothing to check further.
    """
    root = _compose(text, source)
    try:
        # Built from the one composed tree: the file is parsed once (with libyaml when present).
        data = yaml.SafeLoader("").construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        raise _yaml_problem(err, source, text) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PipelineError(
            [Problem("YAML", "the file must be a mapping with a 'pipes' key", source)]
        )
    try:
        return Shaped([], Pipeline.model_validate(data))
    except pydantic.ValidationError as err:
        errors = err.errors(include_url=False)
    problems = [p for error in errors if (p := _problem(error, data, root, source)) is not None]
    # In file order: pydantic reports a pipe's fields in the order its model declares them.
    problems.sort(key=_line)
    kept = copy.deepcopy(data)
    left_out: set[str] = set()
    trimmed: set[str] = set()
    for _ in range(_SALVAGE_ROUNDS):
        if not all(_drop(kept, list(e["loc"]), e["type"], left_out, trimmed) for e in errors):
            break
        try:
            pipeline = Pipeline.model_validate(kept)
        except pydantic.ValidationError as err:
            errors = err.errors(include_url=False)
            continue
        return Shaped(problems, pipeline, frozenset(left_out), frozenset(trimmed))
    return Shaped(problems, None)


_SECTIONS = {"pipes": "pipe", "structures": "structure", "models": "model alias"}


def _line(problem: Problem) -> int:
    """The line a problem's ``source`` ends with (``file.yaml:12``); 0 when it names none."""
    tail = problem.source.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _drop(
    data: dict[str, Any], loc: list[Any], kind: str, left_out: set[str], trimmed: set[str]
) -> bool:
    """Remove the value at ``loc`` that pydantic refused (or the entry holding it); False when
    nothing sensible can be removed (the file's whole shape is wrong)."""
    if not loc:
        return False
    section = data.get(loc[0])
    if loc[0] not in _SECTIONS or len(loc) < 2:
        if loc[0] in data and loc[0] not in _SECTIONS:
            del data[loc[0]]  # a top-level field: default_model, routing, limits, a typo
            left_out.add(str(loc[0]))
            return True
        return False
    if not isinstance(section, dict):
        return False  # e.g. `pipes:` holding a list
    if loc[1] not in section:
        return True  # left out already, for an earlier problem of the same entry
    name, entry = loc[1], section[loc[1]]
    rest = loc[2:]
    if (
        loc[0] == "pipes"
        and rest
        and rest[0] in _kind_models()
        and not _has_dict_key(entry, rest[0])
    ):
        rest = rest[1:]  # pydantic's discriminator tag, not a key of the pipe
    whole = (
        loc[0] != "pipes"
        or not rest
        or kind in ("missing", "union_tag_invalid", "union_tag_not_found")
        or rest[0] in _CORE_FIELDS
    )
    if not whole:
        holder: Any = entry
        for part in rest[:-1]:
            if isinstance(holder, dict):
                holder = holder.get(part)
            elif isinstance(holder, list) and isinstance(part, int) and part < len(holder):
                holder = holder[part]  # a step or branch
            else:
                holder = None
        if isinstance(holder, dict):
            holder.pop(rest[-1], None)  # gone already when pydantic had two words for it
            trimmed.add(f"pipe '{name}', field '{rest[0]}")
            return True
    del section[name]
    left_out.add(str(name))
    return True


def _has_dict_key(entry: Any, key: str) -> bool:
    return isinstance(entry, dict) and key in entry


@functools.lru_cache(maxsize=4)
def _compose(text: str, source: str) -> yaml.Node | None:
    """The file's node tree, within the limits of `check_limits` and with no key written twice.

    Cached: `load` asks for the pipes' lines right after building the pipeline.

    Raises:
        PipelineError: the YAML does not parse, passes a limit, or repeats a key.
    """
    try:
        check_limits(text, source)
        root = yaml.compose(text, Loader=LOADER)
    except yaml.YAMLError as err:
        raise _yaml_problem(err, source, text) from None
    problems = duplicate_keys(root, source) + unquoted_names(root, source)
    if problems:
        raise PipelineError(problems)
    return root


# A type with brackets as a value inside a {...} mapping (`inputs: {xs: list[integer]}`): YAML
# reads the bracket as the start of a list, and says only "did not find expected ',' or '}'".
_FLOW_BRACKET_TYPE = re.compile(r"\{[^}]*:\s*([A-Za-z_]\w*\[[^\]]*\])")


def _yaml_problem(err: yaml.YAMLError, source: str, text: str = "") -> PipelineError:
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        message = f"{err.problem or err}"
        lines = text.splitlines()
        if mark and mark.line < len(lines):
            line = lines[mark.line]
            bracketed = _FLOW_BRACKET_TYPE.search(line)
            if bracketed:
                message += (
                    f" (a type with brackets inside {{...}} must be quoted, "
                    f"'{bracketed.group(1)}', or its mapping written one entry a line)"
                )
            elif line[mark.column : mark.column + 1] == "\t":
                message += " (a tab: YAML indents with spaces only)"
            elif "{{" in line and "unhashable" in message:
                # `prompt: {{ topic }}`: YAML reads a value that starts with { as a mapping.
                message += ' (a template that starts with {{ must be quoted: "{{ ... }}")'
        return PipelineError([Problem("YAML", message, where)])
    return PipelineError([Problem("YAML", str(err), source)])


def part_lines(text: str, source: str = "<yaml>") -> dict[str, int]:
    """The 1-based line of each part a meaning problem names, to point it at the file: a pipe
    (``pipe 'x'``), a structure and its fields (``structure 'X', field 'refines'``), a model alias.
    """
    try:
        root = _compose(text, source)
    except PipelineError:
        return {}
    lines: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    labels = {"pipes": "pipe", "structures": "structure", "models": "model alias"}
    for key, value in root.value:
        label = labels.get(key.value)
        if label is None or not isinstance(value, yaml.MappingNode):
            continue
        for name, part in value.value:
            where = f"{label} '{name.value}'"
            lines[where] = name.start_mark.line + 1
            if label == "structure":
                lines.update(_structure_lines(where, part))
    return lines


def _structure_lines(where: str, structure: yaml.Node) -> dict[str, int]:
    """The line of a structure's ``refines`` and of each of its fields."""
    lines: dict[str, int] = {}
    for key, value in structure.value if isinstance(structure, yaml.MappingNode) else []:
        if key.value == "refines":
            lines[f"{where}, field 'refines'"] = key.start_mark.line + 1
        elif key.value == "fields" and isinstance(value, yaml.MappingNode):
            for field, _ in value.value:
                lines[f"{where}, field '{field.value}'"] = field.start_mark.line + 1
    return lines


def _problem(
    error: Any, data: dict[str, Any], root: yaml.Node | None, source: str
) -> Problem | None:
    """One problem in the user's words, or None for pydantic's report of a union branch the value
    was not written as (a model alias is a string or a mapping: only its own form's errors)."""
    loc = list(error["loc"])
    line = _line_of(root, loc)
    where_source = f"{source}:{line}" if line else source
    if len(loc) >= 3 and loc[0] == "models":
        written_as_mapping = isinstance(_get(data, loc[:2]), dict)
        if (loc[2] == "ModelEntry") != written_as_mapping:
            return None
        where = f"model alias '{loc[1]}'"
        if not written_as_mapping:
            return Problem(
                where,
                "expected a model string (e.g. openai/gpt-4o-mini) or a mapping with 'model'",
                where_source,
            )
        return Problem(where, _describe(error, loc[3:], data, loc), where_source)
    if len(loc) >= 2 and loc[0] == "pipes":
        pipe = loc[1]
        rest = loc[3:] if len(loc) > 2 and loc[2] in _kind_models() else loc[2:]
        where = f"pipe '{pipe}'"
        if error["type"] == "union_tag_not_found":
            known = ", ".join(_kind_models())
            return Problem(where, f"field 'kind' is missing (one of {known})", where_source)
        if error["type"] == "union_tag_invalid":
            kind = _get(data, ["pipes", pipe, "kind"])
            known = ", ".join(_kind_models())
            return Problem(where, f"unknown kind '{kind}' (one of {known})", where_source)
        if rest and rest[0] == "steps" and len(rest) >= 2:
            step = _get(data, ["pipes", pipe, "steps", rest[1]])
            label = _step_label(step, rest[1])
            where = f"{where}, step {label}"
            rest = rest[2:]
            if isinstance(step, str) and not rest:  # `steps: [summarize]`, a common shorthand
                return Problem(
                    where,
                    f"a step is a mapping, not '{step}': write `- pipe: {step}` "
                    f"(or `{{pipe: {step}}}`)",
                    where_source,
                )
        return Problem(where, _describe(error, rest, data, loc), where_source)
    if loc and loc[0] == "structures" and len(loc) >= 2:
        rest = loc[2:]
        if len(rest) >= 2 and rest[0] == "fields":
            return Problem(
                f"structure '{loc[1]}', field '{rest[1]}'",
                _describe(error, rest[2:], data, loc),
                where_source,
            )
        return Problem(f"structure '{loc[1]}'", _describe(error, rest, data, loc), where_source)
    return Problem("pipeline", _describe(error, loc, data, loc), where_source)


def _describe(error: Any, rest: list[Any], data: dict[str, Any], loc: list[Any]) -> str:
    field = _dotted(rest)
    if error["type"] == "extra_forbidden":
        known = _known_fields(data, loc)
        close = difflib.get_close_matches(str(rest[-1]), known, n=1) if known else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown field '{field}'{hint}"
    if error["type"] == "missing":
        return f"field '{field}' is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"field '{field}': {message}" if field else message


def _known_fields(data: dict[str, Any], loc: list[Any]) -> list[str]:
    if len(loc) >= 3 and loc[0] == "pipes" and loc[2] in (models := _kind_models()):
        model: type[pydantic.BaseModel] = models[loc[2]]
        if len(loc) >= 6 and loc[3] == "steps":
            return [*(f for f in Step.model_fields if f != "from_"), "from"]
        if len(loc) >= 6 and loc[3] == "branches":
            return list(Branch.model_fields)
        return _fields_at(model, loc[3:-1])
    if len(loc) >= 5 and loc[0] == "structures" and loc[2] == "fields":
        return _fields_at(FieldSpec, loc[4:-1])
    if len(loc) >= 4 and loc[0] == "models" and loc[2] == "ModelEntry":
        return _fields_at(ModelEntry, loc[3:-1])
    if len(loc) == 1:
        return list(Pipeline.model_fields)
    return []


def _fields_at(model: type[pydantic.BaseModel], path: list[Any]) -> list[str]:
    """The fields of the model at ``path`` inside ``model`` (``retry`` -> the retry policy's),
    through lists and mappings of models; [] where the path reaches no model."""
    keyed = False  # the next part is a key of a mapping of models
    for part in path:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        field = model.model_fields.get(str(part))
        nested = _model_in(field.annotation) if field is not None else None
        if nested is None:
            return []
        model = nested
        keyed = typing.get_origin(field.annotation) is dict  # type: ignore[union-attr]
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The pydantic model an annotation holds (``RetrySpec | None``, ``list[Step]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _model_in(arg)) is not None:
            return found
    return None


def _dotted(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _step_label(step: Any, index: int) -> str:
    if isinstance(step, dict):
        for key in ("name", "result", "pipe"):
            if isinstance(step.get(key), str):
                return f"'{step[key]}'"
    return f"{index + 1}"


def _get(data: Any, path: list[Any]) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """The 1-based line of the deepest node ``loc`` reaches in the composed YAML."""
    line = None
    for part in loc:
        if part in _kind_models() and not _has_key(node, part):
            continue  # pydantic's discriminator tag, not a YAML key
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _has_key(node: yaml.Node | None, key: str) -> bool:
    return isinstance(node, yaml.MappingNode) and any(k.value == key for k, _ in node.value)
