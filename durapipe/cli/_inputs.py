"""A run's inputs as the command line gives them: ``--input-json`` and ``--input name=value``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import durapipe as dp

# Input types whose `--input` value is taken as text; any other (a list, a structure) is JSON.
_NOT_JSON = frozenset({"text", "integer", "number", "boolean", "any", "file", "document", "image"})


def parse_inputs(
    input_json: str | None, items: list[str], types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run inputs from ``--input-json`` and ``--input name=value``.

    ``name=@file`` gives a file: its text for a text input, uploaded to the blob store for a
    ``document``, ``image`` or ``file`` input. A value for an input whose declared type (in
    ``types``) is a list or a structure is JSON: ``xs=[1, 2]``. A name is given once: a second
    value (``--input n=2 --input n=3``, or a name of ``--input-json`` again) is refused rather
    than one of them dropped.

    Raises:
        ConfigError: a value cannot be read, or a name is given twice.
    """
    inputs: dict[str, Any] = {}
    from_json: set[str] = set()
    if input_json is not None:
        try:
            data = loads(input_json)
        except json.JSONDecodeError as err:
            raise dp.ConfigError(
                f"--input-json is not valid JSON: {err.msg} at position {err.pos}"
            ) from None
        if not isinstance(data, dict):
            raise dp.ConfigError("--input-json must be a JSON object of input names to values")
        inputs.update(data)
        from_json = set(data)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise dp.ConfigError(f"--input '{item}' must look like name=value or name=@file")
        if name in inputs:
            why = "--input-json gives it too" if name in from_json else "it is given twice"
            raise dp.ConfigError(
                f"--input {name}: {why}; give each input once (a list input takes one JSON "
                f"value: --input '{name}=[...]')"
            )
        inputs[name] = _value(name, value, (types or {}).get(name, "text"))
    return inputs


def loads(text: str) -> Any:
    """``json.loads``, with JSON nested past Python's recursion limit (a few thousand ``[``)
    refused as any other invalid JSON, not a RecursionError traceback.

    Raises:
        json.JSONDecodeError: ``text`` is not JSON, or nests too deeply to read.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("it nests too deeply to read", text, 0) from None


def _value(name: str, value: str, type_ref: str) -> Any:
    """The value of ``--input name=value`` for an input of type ``type_ref``."""
    if value.startswith("@"):
        # The run reads the file: text for text inputs, a blob reference for document/image/file.
        path = Path(value[1:])
        if path.is_dir():
            raise dp.ConfigError(
                f"--input {name}: cannot read '{path}': it is a folder, not a file"
            )
        if not path.is_file():
            raise dp.ConfigError(f"--input {name}: cannot read '{path}': no such file")
        return path
    if type_ref in _NOT_JSON:
        return value  # pydantic reads numbers and booleans from their text
    try:
        return loads(value)
    except json.JSONDecodeError as err:
        # `xs=a,b` for a list: the shape to write, not only where the JSON broke.
        shape = "[...]" if type_ref.startswith("list[") else "{...}"
        raise dp.ConfigError(
            f"--input {name}: a {type_ref} input takes JSON (--input '{name}={shape}'): "
            f"{err.msg} at position {err.pos}"
        ) from None


def input_types(pipeline: dp.Pipeline, pipe: str) -> dict[str, str]:
    """The declared input types of pipe ``pipe`` (none for an unknown pipe: validation names it)."""
    target = pipeline.pipes.get(pipe)
    return dict(target.inputs) if target is not None else {}
