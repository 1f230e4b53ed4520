"""Working memory: the named values a controller's steps read and write, and step paths."""

from __future__ import annotations

from typing import Any


def join_path(parent: str, name: str) -> str:
    """The step path of ``name`` inside ``parent``."""
    return f"{parent}/{name}" if parent else name


def lookup(memory: dict[str, Any], path: str) -> Any:
    """The value at a dotted working-memory path, e.g. ``fact_check.word_count``.

    Raises:
        KeyError: a part of the path is missing (the message names the part).
    """
    root, *fields = path.split(".")
    value = memory[root]
    for index, field in enumerate(fields):
        if not isinstance(value, dict) or field not in value:
            raise KeyError(f"'{'.'.join([root, *fields[: index + 1]])}' is missing")
        value = value[field]
    return value
