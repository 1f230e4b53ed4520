"""The small type language pipes use for inputs and outputs.

A type is a string, the same in Python and YAML:

- ``text``, ``integer``, ``number``, ``boolean``, ``any``
- ``file``, ``document``, ``image``: binary content, carried as a `Blob` reference (never the bytes)
- ``Page``: one page of extracted text (``{"page": 1, "text": "..."}``), what ``extract`` returns
- ``list[T]`` for a list of ``T``; ``list[T, N]`` for a list of exactly ``N``
- ``optional[T]`` for an input a run may leave out (the pipe then reads null); ``T | None`` in Python
- the name of a declared structure, e.g. ``Claim`` (see `StructureSpec`)

Python users may pass Python types instead (``str``, ``int``, ``list[Claim]``, a pydantic model,
``conlist(Claim, min_length=3, max_length=3)``, `Blob`, `Page`); `type_ref` turns them into these
strings, so both spellings give one spec.
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from durapipe.spec._names import suggest

SCALARS = {"text": str, "integer": int, "number": float, "boolean": bool, "any": Any}
_LIST = re.compile(r"^list\[(.+)\]$")
_OPTIONAL = re.compile(r"^optional\[(.+)\]$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Blob(BaseModel):
    """A reference to binary content kept in the blob store: what travels instead of the bytes.

    Attributes:
        blob: the content address, ``sha256:<hex>``.
        media_type: e.g. ``application/pdf``, ``image/png``.
        size: the number of bytes.
        name: the original file name, when known.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    blob: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    media_type: str = "application/octet-stream"
    size: int = Field(default=0, ge=0)
    name: str = ""


class Page(BaseModel):
    """One page of text an ``extract`` pipe read (pages count from 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    page: int = Field(ge=1)
    text: str


# Built-in named types: binary content travels as a `Blob` reference; an image is a document is a file.
BLOB_TYPES = ("file", "document", "image")
BUILTINS: dict[str, type[BaseModel]] = {**dict.fromkeys(BLOB_TYPES, Blob), "Page": Page}
_WIDER = {"image": ("document", "file"), "document": ("file",)}


class FieldSpec(BaseModel):
    """One field of a declared structure.

    In YAML a field is either a bare type (``text``) or a mapping with these keys.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = "text"
    description: str = ""
    choices: list[str | int | float] | None = None
    optional: bool = False
    default: Any = None


class StructureSpec(BaseModel):
    """A named structure: the shape of a structured output or input.

    Attributes:
        refines: the structure this one narrows: the same fields, some of their values limited
            further (a judgment's options, MTHDS ``PipeJudge``). Its values may flow where that
            structure is declared.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    fields: dict[str, FieldSpec]
    refines: str | None = None

    @pydantic.model_serializer(mode="wrap")
    def _leave_out_no_refines(self, handler: pydantic.SerializerFunctionWrapHandler) -> Any:
        # Most structures refine none: their dump (a run's input) stays as it was.
        data = handler(self)
        if isinstance(data, dict) and data.get("refines") is None:
            data.pop("refines", None)
        return data

    @pydantic.field_validator("fields", mode="before")
    @classmethod
    def _bare_types(cls, value: Any) -> Any:
        # `text: text` is the common case in YAML; expand it to a FieldSpec.
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


Structures = dict[str, StructureSpec]


@dataclass(frozen=True)
class TypeNode:
    """A parsed type: a scalar, a structure name, or a list of another type."""

    name: str
    item: TypeNode | None = None
    count: int | None = None

    def __str__(self) -> str:
        if self.item is None:
            return self.name
        return (
            f"list[{self.item}, {self.count}]" if self.count is not None else f"list[{self.item}]"
        )


def optional_of(ref: str) -> str | None:
    """The type inside ``optional[T]`` (an input a run may leave out: it is then null), else None."""
    match = _OPTIONAL.match(ref.strip())
    return match.group(1).strip() if match else None


# The longest type a spec may write: `list[list[Claim, 3]]` is 20 characters.
MAX_TYPE_LENGTH = 1000


@functools.lru_cache(maxsize=1024)  # every leaf call parses its pipe's types again
def parse_type(ref: str) -> TypeNode:
    """Parse a type string (``optional[T]`` parses as ``T``: being optional is a property of an
    input, not of the shape of its value; `optional_of` reads it).

    Raises:
        ValueError: the string is not a type (the message says why).
    """
    if len(ref) > MAX_TYPE_LENGTH:
        # Each level of a nested type reads the text below it again: a spec's type of a few
        # hundred `list[` around a megabyte of spaces took minutes, in the workflow of a run.
        raise ValueError(
            f"'{ref[:40]}...' is {len(ref):,} characters long; a type may be at most "
            f"{MAX_TYPE_LENGTH:,}"
        )
    ref = ref.strip()
    if (inner := optional_of(ref)) is not None:
        return parse_type(inner)
    match = _LIST.match(ref)
    if match:
        item, count = _split_count(match.group(1))
        return TypeNode("list", parse_type(item), count)
    if not _NAME.match(ref):
        raise ValueError(
            f"'{ref}' is not a type (use text, integer, number, boolean, any, list[T], list[T, N] "
            "or a structure name)"
        )
    return TypeNode(ref)


# The longest exact length a list type may ask for: a spec comes from any client, and a model (the
# offline one builds every item) must not be asked for ten million items.
MAX_LIST_COUNT = 10_000


def _split_count(inner: str) -> tuple[str, int | None]:
    """``Claim, 3`` -> (``Claim``, 3): the item type and the exact length after a top-level comma."""
    depth = 0
    for index in range(len(inner) - 1, -1, -1):
        char = inner[index]
        depth += {"]": 1, "[": -1}.get(char, 0)
        if char == "," and depth == 0:
            count = inner[index + 1 :].strip()
            if not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"'list[{inner}]': the length after the comma must be a whole number >= 1"
                )
            if int(count) > MAX_LIST_COUNT:
                raise ValueError(
                    f"'list[{inner}]': an exact length may be at most {MAX_LIST_COUNT} "
                    "(use list[T] for a list of any length)"
                )
            return inner[:index], int(count)
    return inner, None


def type_problems(
    ref: str, structures: Structures, *, loops: bool = True, nesting: bool = True
) -> list[str]:
    """Every reason ``ref`` is not a usable type given these structures (empty when fine).

    ``loops=False`` leaves out structures that refer to themselves and nesting past `MAX_NESTING`:
    a structure's own fields are checked so, and each is reported once, where a pipe uses it.
    ``nesting=False`` leaves out only the nesting (a run recorded before its bound replays so)."""
    try:
        node = parse_type(ref)
    except ValueError as err:
        return [str(err)]
    while node.item is not None:
        node = node.item
    if node.name in SCALARS or node.name in BUILTINS:
        return []
    if node.name in structures:
        depth = nesting_depth(ref, structures) if loops and nesting else 0
        if depth > MAX_NESTING:
            # pydantic builds a structure's model and schema by recursion: at ~45 levels a
            # step failed each attempt with a RecursionError, and 3,000 raised one in `validate`.
            return [
                f"structure '{node.name}' nests {depth:,} levels deep {NESTING_WORDS}, more "
                f"than the {MAX_NESTING} durapipe reads; flatten it"
            ]
        loop = _loop(node.name, structures) if loops else None
        if loop is None:
            return []
        # A recursive structure has no finite JSON schema or pydantic model here: found now, not
        # as a RecursionError in the worker after five attempts.
        return [
            f"structure '{loop[0].split('.')[0]}' refers to itself ({' -> '.join(loop)}), and "
            "durapipe's structures are not recursive: type the nested field `any` or give each "
            "level its own structure"
        ]
    close = suggest(node.name, [*structures, *SCALARS, *BUILTINS])
    # A close name is the likely fix (a typo of a declared structure); else how to make one.
    return [
        f"unknown type '{node.name}'"
        + (close or " (declare it under structures, or use text, integer, number, boolean, any)")
    ]


def _loop(name: str, structures: Structures) -> list[str] | None:
    """The first path of fields from structure ``name`` back to a structure on the path, e.g.
    ``["Node.children", "Node"]``; None when no structure ``name`` reaches refers to itself.

    Each structure is walked once: one reached again by another path (``A.x`` and ``A.y`` both
    ``B``) was found to reach no loop the first time. Walked on every path, a spec that any client
    can send (40 structures, each with two fields of the next) took 2^40 steps in the workflow.
    """
    done: set[str] = set()

    def visit(current: str, path: list[str], on_path: list[str]) -> list[str] | None:
        for field_name, field in structures[current].fields.items():
            try:
                node = parse_type(field.type)
            except ValueError:
                continue  # reported as that field's own problem
            while node.item is not None:
                node = node.item
            if node.name not in structures:
                continue
            step = [*path, f"{current}.{field_name}"]
            if node.name in on_path:
                return [*step[on_path.index(node.name) :], node.name]
            if node.name in done:
                continue
            found = visit(node.name, step, [*on_path, node.name])
            if found is not None:
                return found
        done.add(current)
        return None

    return visit(name, [], [name])


def structures_used(ref: str, structures: Structures) -> set[str]:
    """Names of the structures ``ref`` needs, following nested fields (iterative: any depth)."""
    seen: set[str] = set()
    pending = [ref]
    while pending:
        name = _structure_of(pending.pop(), structures)[1]
        if name is None or name in seen:
            continue
        seen.add(name)
        pending.extend(field.type for field in structures[name].fields.values())
        if structures[name].refines:
            pending.append(str(structures[name].refines))
    return seen


# The deepest a value's structures and lists may nest within each other (see `nesting_depth`).
MAX_NESTING = 32
# What a problem of nesting past it says (a run's workflow tells it from the others by these words).
NESTING_WORDS = "(structures and lists within each other)"


def _structure_of(type_ref: str, structures: Structures) -> tuple[int, str | None]:
    """The lists around ``type_ref``'s items and the structure they hold (None: no structure)."""
    try:
        node = parse_type(type_ref)
    except ValueError:
        return 0, None  # reported as that type's own problem
    lists = 0
    while node.item is not None:
        node, lists = node.item, lists + 1
    return lists, node.name if node.name in structures else None


def nesting_depth(ref: str, structures: Structures) -> int:
    """How many structures and lists a value of ``ref`` nests within each other, at the most
    (``list[Claim]`` with text fields: 2); a loop of structures counts once, where it closes.

    Iterative, each structure walked once: a client's chain of 3,000 structures is as cheap as
    3,000 fields, where a recursive walk raised a RecursionError.
    """
    lists, top = _structure_of(ref, structures)
    if top is None:
        return lists
    depth: dict[str, int] = {}
    # Each entry: a structure on the path, its fields still to read, its deepest field so far,
    # and the lists around the field whose structure is being walked above it.
    path: list[tuple[str, Iterator[FieldSpec], list[int]]] = [
        (top, iter(structures[top].fields.values()), [0, 0])
    ]
    on_path = {top}
    while path:
        name, fields, (deepest, _) = path[-1]
        for field in fields:
            field_lists, inner = _structure_of(field.type, structures)
            if inner is None or inner in depth or inner in on_path:
                deepest = max(deepest, field_lists + depth.get(inner or "", 0))
                continue
            path[-1][2][:] = [deepest, field_lists]
            path.append((inner, iter(structures[inner].fields.values()), [0, 0]))
            on_path.add(inner)
            break
        else:
            depth[name] = deepest + 1
            path.pop()
            on_path.discard(name)
            if path:
                parent = path[-1][2]
                parent[0] = max(parent[0], parent[1] + depth[name])
    return lists + depth[top]


def is_assignable(source: str, target: str, structures: Structures | None = None) -> bool:
    """Whether a value of type ``source`` may flow where ``target`` is declared.

    A structure that refines another (``structures`` says which) flows where that one is declared.
    """
    # An optional input takes its type's values; an optional value is checked when it arrives.
    source, target = optional_of(source) or source, optional_of(target) or target
    if source == target or "any" in (source, target):
        return True
    src, dst = parse_type(source), parse_type(target)
    if src.item is not None and dst.item is not None:
        # A length is checked when the value arrives; statically only the lengths both know clash.
        if None not in (src.count, dst.count) and src.count != dst.count:
            return False
        return is_assignable(str(src.item), str(dst.item), structures)
    # An integer is a number, an image is a document is a file; everything else matches by name.
    if (src.name == "integer" and dst.name == "number") or dst.name in _WIDER.get(src.name, ()):
        return True
    return dst.name in _refined(src.name, structures or {})


def _refined(name: str, structures: Structures) -> list[str]:
    """The structures ``name`` refines, nearest first (a loop is cut where it closes)."""
    found: list[str] = []
    structure = structures.get(name)
    while structure is not None and structure.refines and structure.refines not in found:
        found.append(structure.refines)
        structure = structures.get(structure.refines)
    return found


def refinement_problems(name: str, structures: Structures) -> list[str]:
    """Why structure ``name`` cannot flow where the structure it refines is declared (empty when
    it can), one sentence each naming both structures and the field.

    A value of a refining structure is read as its parent's wherever the parent is declared (see
    `is_assignable`), so it carries the parent's fields and no other (a structure's values hold
    exactly its fields), each field holding values the parent's field holds: a type assignable to
    the parent field's type (a structure refining the parent field's one included), choices among
    the parent field's, and a value wherever the parent field needs one (not ``optional`` where the
    parent field is not).
    """
    structure = structures[name]
    parent_name = structure.refines
    if parent_name is None or parent_name not in structures or parent_name == name:
        return []
    parent = structures[parent_name]
    found: list[str] = []
    for field_name, parent_field in parent.fields.items():
        field = structure.fields.get(field_name)
        if field is None:
            found.append(
                f"'{name}' refines '{parent_name}' but has no field '{field_name}': a refining "
                "structure carries every field of the one it refines"
            )
            continue
        if not is_assignable(field.type, parent_field.type, structures):
            found.append(
                f"'{name}' refines '{parent_name}', but its field '{field_name}' holds "
                f"{field.type}, which does not fit '{parent_name}'.{field_name} "
                f"({parent_field.type})"
            )
        elif parent_field.choices and not set(field.choices or ()) <= set(parent_field.choices):
            allowed = ", ".join(repr(c) for c in parent_field.choices)
            found.append(
                f"'{name}' refines '{parent_name}', but its field '{field_name}' allows values "
                f"'{parent_name}'.{field_name} does not (allowed there: {allowed}): narrow its "
                "choices to those"
            )
        elif field.optional and not parent_field.optional:
            found.append(
                f"'{name}' refines '{parent_name}', but its field '{field_name}' is optional "
                f"where '{parent_name}'.{field_name} always holds a value"
            )
    for field_name in structure.fields:
        if field_name not in parent.fields:
            found.append(
                f"'{name}' refines '{parent_name}' but adds field '{field_name}', which "
                f"'{parent_name}' does not have, so its values would not fit where "
                f"'{parent_name}' is declared: declare '{name}' without 'refines', or drop the field"
            )
    return found


def annotation(ref: str, structures: Structures) -> Any:
    """The Python annotation that validates values of type ``ref`` (pydantic models for structures)."""
    return _annotation(ref, _freeze(structures))


def json_schema(ref: str, structures: Structures) -> dict[str, Any]:
    """The JSON Schema of type ``ref`` (a copy of its own: callers may change it)."""
    # Every structured llm call asks for its output's schema: built once per type and
    # structures (a type adapter and its schema cost ~280 us), copied per call.
    return copy.deepcopy(_json_schema(ref, _freeze(structures)))


def validate(ref: str, structures: Structures, value: Any) -> Any:
    """Validate ``value`` against type ``ref``; returns plain JSON data.

    Raises:
        pydantic.ValidationError: the value does not fit the type.
    """
    adapter = _adapter(ref, _freeze(structures))
    return adapter.dump_python(adapter.validate_python(value), mode="json")


def type_ref(python_type: Any, structures: Structures) -> str:
    """The type string for a Python type, adding any pydantic models it uses to ``structures``.

    Example:
        >>> s: Structures = {}
        >>> type_ref(list[str], s)
        'list[text]'
    """
    if isinstance(python_type, str):
        return python_type
    if python_type is Any:
        return "any"
    for name, scalar in SCALARS.items():
        if python_type is scalar:
            return name
    if python_type is Blob:
        return "file"
    if python_type is Page:
        return "Page"
    if python_type is list:
        return "list[any]"
    origin = typing.get_origin(python_type)
    if origin is typing.Annotated:
        return _annotated_list(python_type, structures)
    args = typing.get_args(python_type)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        return (
            f"optional[{type_ref(inner, structures)}]"  # `T | None`: an input a run may leave out
        )
    if origin is list:
        (item,) = typing.get_args(python_type) or (Any,)
        return f"list[{type_ref(item, structures)}]"
    if isinstance(python_type, type) and issubclass(python_type, BaseModel):
        _add_structure(python_type, structures)
        return python_type.__name__
    raise TypeError(f"durapipe cannot use {python_type!r} as a pipe type")


def _annotated_list(python_type: Any, structures: Structures) -> str:
    """``Annotated[list[T], Len(n, n)]`` (what ``conlist(T, min_length=n, max_length=n)`` is) -> ``list[T, n]``."""
    base, *metadata = typing.get_args(python_type)
    lengths = [m for m in metadata if isinstance(m, annotated_types.Len)]
    if typing.get_origin(base) is not list or len(lengths) != 1:
        raise TypeError(f"durapipe cannot use {python_type!r} as a pipe type")
    if lengths[0].min_length != lengths[0].max_length:
        raise TypeError(f"durapipe lists have any length or exactly N items, not {python_type!r}")
    return f"{type_ref(base, structures)[:-1]}, {lengths[0].min_length}]"


def _add_structure(model: type[BaseModel], structures: Structures) -> None:
    name = model.__name__
    if name in structures:
        return
    fields: dict[str, FieldSpec] = {}
    structures[name] = StructureSpec(description=model.__doc__ or "", fields=fields)
    for field_name, info in model.model_fields.items():
        fields[field_name] = _field_spec(info, structures)
    parent = _refined_model(model)
    if parent is not None:
        _add_structure(parent, structures)
    structures[name] = StructureSpec(
        description=(model.__doc__ or "").strip(),
        fields=fields,
        refines=parent.__name__ if parent is not None else None,
    )


def _refined_model(model: type[BaseModel]) -> type[BaseModel] | None:
    """The model ``model`` refines: its one pydantic base when it declares no field of its own
    (``class Verdict(YesNo)``, fields narrowed or not), as an MTHDS concept refines another; a
    subclass adding fields extends its base rather than refining it, and refines nothing."""
    bases = [
        base
        for base in model.__bases__
        if issubclass(base, BaseModel) and base is not BaseModel and base not in BUILTINS.values()
    ]
    if len(bases) != 1 or set(model.model_fields) != set(bases[0].model_fields):
        return None
    return bases[0]


def _field_spec(info: pydantic.fields.FieldInfo, structures: Structures) -> FieldSpec:
    hint = info.annotation
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"durapipe structures do not support the union {hint!r}")
        hint = args[0]
    choices: list[str | int | float] | None = None
    if typing.get_origin(hint) is Literal:
        choices = list(typing.get_args(hint))
        hint = type(choices[0])
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [member.value for member in hint]
        hint = type(choices[0])
    has_default = not info.is_required()
    default = info.get_default(call_default_factory=True) if has_default else None
    if isinstance(default, enum.Enum):
        default = default.value
    return FieldSpec(
        type=type_ref(hint, structures),
        description=info.description or "",
        choices=choices,
        optional=optional,
        default=default,
    )


def _freeze(structures: Structures) -> str:
    # A stable text key lets the caches below work across equal-but-distinct dicts. Most calls
    # name no structure (an agent's tool arguments and output, twice a tool call): no dump then.
    if not structures:
        return "{}"
    return json.dumps({k: v.model_dump(mode="json") for k, v in sorted(structures.items())})


@functools.lru_cache(maxsize=512)
def _adapter(ref: str, frozen: str) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(_annotation(ref, frozen))


@functools.lru_cache(maxsize=512)
def _json_schema(ref: str, frozen: str) -> dict[str, Any]:
    return _adapter(ref, frozen).json_schema()


@functools.lru_cache(maxsize=512)
def _annotation(ref: str, frozen: str) -> Any:
    structures = {k: StructureSpec.model_validate(v) for k, v in json.loads(frozen).items()}
    models: dict[str, type[BaseModel]] = {}

    def build(type_ref_: str) -> Any:
        if (inner := optional_of(type_ref_)) is not None:
            return typing.Optional[build(inner)]  # noqa: UP045 (built at run time)
        node = parse_type(type_ref_)
        if node.item is not None:
            items: Any = list[build(str(node.item))]  # type: ignore[misc]
            if node.count is None:
                return items
            return typing.Annotated[items, annotated_types.Len(node.count, node.count)]
        if node.name in SCALARS:
            return SCALARS[node.name]
        if node.name in BUILTINS:
            return BUILTINS[node.name]
        if node.name not in models:
            models[node.name] = model_for(node.name)
        return models[node.name]

    def model_for(name: str) -> type[BaseModel]:
        spec = structures[name]
        definitions: dict[str, Any] = {}
        for field_name, field in spec.fields.items():
            hint: Any = build(field.type)
            if field.choices:
                hint = Literal[tuple(field.choices)]
            field_info = Field(description=field.description or None)
            if field.optional:
                hint = hint | None
            # A default makes a field optional to give, even when the field cannot be null.
            if field.optional or field.default is not None:
                field_info = Field(default=field.default, description=field.description or None)
            definitions[field_name] = (hint, field_info)
        return pydantic.create_model(  # type: ignore[call-overload,no-any-return,unused-ignore]
            name,
            __config__=ConfigDict(extra="forbid"),
            __doc__=spec.description or None,
            **definitions,
        )

    return build(ref)
