"""Blob references in values: what a user is told when a value is not one."""

from __future__ import annotations

import json
from typing import Any

import pydantic

from durapipe.spec._types import BLOB_TYPES, Blob, parse_type

# What a user is shown when a value is not a `Blob` reference.
BLOB_SHAPE = (
    '{"blob": "sha256:<64 hex digits>", "media_type": "application/pdf", "size": 1239, '
    '"name": "invoice.pdf"}'
)


def not_a_blob(value: Any, err: pydantic.ValidationError) -> str:
    """Why ``value`` is not a `Blob` reference and what one looks like, for one sentence.

    Example:
        >>> try:
        ...     Blob.model_validate({"blob": "sha256:zz"})
        ... except pydantic.ValidationError as err:
        ...     print(not_a_blob({"blob": "sha256:zz"}, err)[:75])
        not a blob reference (its 'blob' 'sha256:zz' is not sha256: and 64 lowercase
    """
    if not isinstance(value, dict):
        got = f"got {_shown(value)}"
    else:
        first = err.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "blob"
        if first["type"] == "string_pattern_mismatch":
            got = f"its '{field}' {_shown(value.get(field))} is not sha256: and 64 lowercase hex digits"
        elif first["type"] == "missing":
            got = f"it has no '{field}'"
        elif first["type"] == "extra_forbidden":
            got = f"it has an unknown key '{field}'"
        else:
            got = f"its '{field}' is {_shown(value.get(field))}: {first['msg'].lower()}"
    return (
        f"not a blob reference ({got}); a blob reference looks like {BLOB_SHAPE}, as the blob "
        "store gives it (pass a file as --input NAME=@PATH, in Python a Path or bytes)"
    )


def blob_input_problem(declared: dict[str, str], values: dict[str, Any]) -> tuple[str, str] | None:
    """The first input declared ``file``, ``document`` or ``image`` (or a list of one) whose value
    is not a blob reference: its name and ``"input 'name[0]': why"``; None when every one is.

    A value typed ``any`` upstream reaches such an input unchecked; this refuses it where it is
    used, at once, instead of failing every attempt of the step.
    """
    for name, type_ref in declared.items():
        if name not in values:
            continue
        value = values[name]
        if type_ref in BLOB_TYPES:
            pairs = [(f"input '{name}'", value)]
        elif type_ref.startswith("list[") and isinstance(value, list):
            item = parse_type(type_ref).item
            if item is None or item.name not in BLOB_TYPES or item.item is not None:
                continue
            pairs = [(f"input '{name}[{index}]'", v) for index, v in enumerate(value)]
        else:
            continue
        for label, item_value in pairs:
            if isinstance(item_value, Blob):
                continue
            try:
                Blob.model_validate(item_value)
            except pydantic.ValidationError as err:
                return name, f"{label}: {not_a_blob(item_value, err)}"
    return None


def _shown(value: Any) -> str:
    """``value`` as a user typed it, cut to a readable length."""
    text = f"'{value}'" if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
