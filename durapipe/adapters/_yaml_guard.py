"""Limits on a YAML pipeline file, checked before it is built: hostile or broken files are input too.

A pipeline file can come from anyone who can start a run, so reading one must take bounded time and
memory and end in one sentence, never a traceback:

- at most `MAX_FILE_BYTES` (a real pipeline is a few kilobytes);
- mappings nested at most `MAX_DEPTH` deep;
- at most `MAX_NODES` values once aliases are expanded (an "alias bomb" of a few lines expands to
  billions);
- no key twice in one mapping (YAML would silently keep the last one: two pipes with one name).

The depth and alias checks read libyaml's event stream (no tree, no recursion), so they stay cheap
on any input that passes the size check.
"""

from __future__ import annotations

from typing import Any

import yaml

from durapipe._errors import PipelineError, Problem

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 500_000
# libyaml's parser when PyYAML was built with it (the usual wheels), else the pure-Python one.
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _refuse(message: str, where: str) -> PipelineError:
    return PipelineError([Problem("YAML", message, where)])


def check_limits(text: str, source: str) -> None:
    """Refuse a file that is too large, too deep, or expands to too many values through aliases.

    Raises:
        PipelineError: one problem, naming the limit (and the line where it was passed).
    """
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_FILE_BYTES:
        raise _refuse(
            f"the file is {size} bytes; a pipeline file may hold at most {MAX_FILE_BYTES}",
            source,
        )
    depth = 0
    expanded = 0
    sizes: dict[str, int] = {}  # anchor -> values it expands to
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, values before it) per open node
    for event in yaml.parse(text, Loader=LOADER):
        where = f"{source}:{event.start_mark.line + 1}" if event.start_mark else source
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _refuse(f"values are nested more than {MAX_DEPTH} levels deep", where)
            open_nodes.append((event.anchor, expanded))
            expanded += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = expanded - before
        elif isinstance(event, yaml.ScalarEvent):
            expanded += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            expanded += sizes.get(event.anchor or "", 1)
        if expanded > MAX_NODES:
            raise _refuse(
                f"the file expands to more than {MAX_NODES} values (through aliases '*name')",
                where,
            )


def duplicate_keys(root: yaml.Node | None, source: str) -> list[Problem]:
    """One problem per key written twice in one mapping, naming both lines."""
    problems: list[Problem] = []
    seen_nodes: set[int] = set()  # an alias shares its node: visit each once
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                pending.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    problems.append(
                        Problem(
                            "YAML",
                            f"key '{key.value}' appears twice in one mapping (first on line "
                            f"{first[key.value]}); YAML would keep only the last",
                            f"{source}:{line}",
                        )
                    )
                else:
                    first[key.value] = line
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return sorted(problems, key=lambda p: int(p.source.rpartition(":")[2]))


# What YAML 1.1 reads an unquoted word as when it is not a string: `no`, `off`, `on`, `yes`, `y`,
# `n`, `true`, `false` (a boolean), `null`, `~` (nothing), `1`, `2.0` (a number).
_READ_AS = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null (no value)",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
}
# The mappings whose keys are names: a section's, and each entry's named parts in it.
_NAMED = {"pipes": ("pipe", "inputs", "input"), "structures": ("structure", "fields", "field")}


def unquoted_names(root: yaml.Node | None, source: str) -> list[Problem]:
    """One problem per name YAML reads as something else: a pipe named ``no`` or ``on`` became the
    boolean false or true, and pydantic said only "pipe '0': field '[key]': Input should be a
    valid string". Names are the keys of ``pipes``, ``structures`` and ``models``, and of each
    pipe's ``inputs`` and structure's ``fields`` (a condition's ``outcomes`` keys are values)."""
    if not isinstance(root, yaml.MappingNode):
        return []
    named: list[tuple[str, yaml.MappingNode]] = []
    for section, entries in root.value:
        if not isinstance(entries, yaml.MappingNode):
            continue
        if section.value == "models":
            named.append(("model alias", entries))
        if section.value not in _NAMED:
            continue
        what, part, part_what = _NAMED[section.value]
        named.append((what, entries))
        for _, entry in entries.value:
            if isinstance(entry, yaml.MappingNode):
                named += [
                    (part_what, v)
                    for k, v in entry.value
                    if k.value == part and isinstance(v, yaml.MappingNode)
                ]
    problems = []
    for what, mapping in named:
        for key, _ in mapping.value:
            read_as = _READ_AS.get(key.tag) if isinstance(key, yaml.ScalarNode) else None
            if read_as is not None and not key.style:  # a quoted key is a string already
                problems.append(
                    Problem(
                        "YAML",
                        f"the {what} name {key.value} is read by YAML as {read_as}, not a "
                        f"name: quote it ('{key.value}':)",
                        f"{source}:{key.start_mark.line + 1}",
                    )
                )
    return sorted(problems, key=lambda p: int(p.source.rpartition(":")[2]))
