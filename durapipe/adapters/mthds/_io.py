"""MTHDS's input and output formats (the CLI I/O contract) around durapipe runs.

Inputs arrive as ``{"name": {"concept": "native.Text", "content": {"text": "hello"}}}`` (or as bare
values, or as an upstream ``--with-memory`` envelope); durapipe runs take plain values. Outputs leave
as the main concept's rendered JSON (compact) or with the working memory (``--with-memory``).
"""

from __future__ import annotations

import json
from typing import Any

from durapipe._errors import ConfigError
from durapipe.adapters.mthds._api import Method
from durapipe.adapters.mthds._files import CLI_ACCESS, FileAccess, file_input
from durapipe.adapters.mthds._library import split_multiplicity
from durapipe.adapters.mthds._memory import memory_of
from durapipe.spec import Pipeline
from durapipe.spec._types import optional_of


def mthds_inputs(
    data: Any, pipeline: Pipeline, pipe: str, access: FileAccess = CLI_ACCESS
) -> dict[str, Any]:
    """Run inputs for ``pipe`` from MTHDS input JSON (flat bindings or a full envelope).

    A Document or Image input becomes a blob reference (see `file_input`; ``access`` says which
    paths and URLs may be read: the CLI's user's, or none of a server's).

    Raises:
        ConfigError: the data is not an object, or an envelope cannot satisfy the pipe's inputs.
    """
    if not isinstance(data, dict):
        raise ConfigError("MTHDS inputs must be a JSON object of input names to values")
    declared = pipeline.pipes[pipe].inputs if pipe in pipeline.pipes else {}
    if "working_memory" in data:
        return _from_envelope(data["working_memory"], declared, access)
    return {
        name: _content(name, value, declared.get(name, "any"), access)
        for name, value in data.items()
    }


def _from_envelope(memory: Any, declared: dict[str, str], access: FileAccess) -> dict[str, Any]:
    root = memory.get("root", {}) if isinstance(memory, dict) else {}
    found = {n: _content(n, root[n], declared[n], access) for n in declared if n in root}
    if len(declared) == 1 and not found and "main_stuff" in root:
        ((name, type_ref),) = declared.items()
        found[name] = _content(name, root["main_stuff"], type_ref, access)
    missing = sorted(set(declared) - set(found))
    if missing:
        raise ConfigError(
            f"the upstream working memory has {', '.join(sorted(root)) or 'nothing'}; "
            f"this pipe also needs {', '.join(missing)}"
        )
    return found


def _content(name: str, value: Any, type_ref: str, access: FileAccess) -> Any:
    """A plain durapipe value from an MTHDS stuff (``{"concept", "content"}``) or a bare value."""
    if (
        isinstance(value, dict)
        and "content" in value
        and set(value)
        <= {
            "concept",
            "content",
            "stuff_code",
            "stuff_name",
        }
    ):
        value = value["content"]
    if (inner := optional_of(type_ref)) is not None:
        return None if value is None else _content(name, value, inner, access)
    if type_ref.startswith("list["):
        if isinstance(value, dict) and isinstance(value.get("items"), list):
            value = value["items"]
        item = type_ref[5:-1].split(",")[0].strip()
        if not isinstance(value, list):
            return value
        return [_content(f"{name}[{i}]", v, item, access) for i, v in enumerate(value)]
    if type_ref == "text" and isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    if type_ref == "number" and isinstance(value, dict) and "number" in value:
        return value["number"]
    if type_ref == "YesNo" and isinstance(value, bool):
        return {"yes_no": value}  # a bare true/false, as Pipelex reads a YesNo input
    if type_ref in ("document", "image", "file"):
        return file_input(name, value, access)
    return value


def rendered(value: Any, concept: str) -> Any:
    """The JSON an MTHDS runtime shows for a value of ``concept`` (``{"text": ...}`` for Text)."""
    try:
        _, _, is_list = split_multiplicity(concept)
    except ValueError:
        is_list = False
    if value is None:
        return {}
    if is_list or isinstance(value, list):
        item = concept.split("[")[0]
        return {"items": [rendered(v, item) for v in value]} if isinstance(value, list) else value
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return {"number": value}


def memory_pipeline(method: Method, pipe: str) -> tuple[Pipeline, str | None, dict[str, str]]:
    """For ``--with-memory``: the pipeline with sequence ``pipe`` returning its whole working
    memory (nested sequences' results included: see `memory_of`).

    Returns the pipeline, the name of the sequence's own output among the results (None when
    ``pipe`` is not a sequence: nothing changes), and the MTHDS concept of each result.
    """
    return memory_of(method.pipeline, method.outputs, pipe)


def mthds_output(
    output: Any,
    concept: str,
    inputs: dict[str, Any] | None = None,
    input_concepts: dict[str, str] | None = None,
    *,
    with_memory: bool = False,
    memory: dict[str, tuple[str, Any]] | None = None,
) -> Any:
    """What the CLI prints: the main concept's JSON, or (``with_memory``) the full envelope.

    ``memory`` holds the step results (concept, value) by name, when the run returned them.
    """
    main = rendered(output, concept)
    if not with_memory:
        return main
    input_concepts = input_concepts or {}
    root: dict[str, Any] = {
        name: _stuff(name, input_concepts.get(name, "Dynamic"), value)
        for name, value in (inputs or {}).items()
    }
    for name, (step_concept, value) in (memory or {}).items():
        root[name] = _stuff(name, step_concept, value)
    root["main_stuff"] = _stuff(None, concept, output)
    text = json.dumps(main, ensure_ascii=False)
    return {
        "main_stuff": {
            "json": text,
            "markdown": _markdown(main),
            "html": f"<pre>{_escape(text)}</pre>",
        },
        "working_memory": {"root": root, "aliases": _aliases(memory, output)},
    }


def _aliases(memory: dict[str, tuple[str, Any]] | None, output: Any) -> dict[str, str]:
    """``main_stuff`` names the last step result that holds the output, as Pipelex's aliases do."""
    for name, (_, value) in reversed(list((memory or {}).items())):
        if value == output:
            return {"main_stuff": name}
    return {}


def _stuff(name: str | None, concept: str, value: Any) -> dict[str, Any]:
    return {
        "stuff_code": name or "main_stuff",
        "stuff_name": name,
        "concept": {"code": concept.split("[")[0]},
        "content": rendered(value, concept),
    }


def _markdown(main: Any) -> str:
    if isinstance(main, dict) and set(main) == {"text"}:
        return str(main["text"])
    return "```json\n" + json.dumps(main, indent=2, ensure_ascii=False) + "\n```"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
