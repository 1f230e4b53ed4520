"""MTHDS working memory on the wire: a request's inputs in, a run's output out.

Inputs arrive in MTHDS's input format (``{"name": {"concept": ..., "content": ...}}``, bare values,
or another run's ``working_memory`` envelope); durapipe runs take plain values. A finished run
answers with a working memory of stuffs (``{"concept": "domain.Concept", "content": ...}``) whose
``main_stuff`` alias names the output. The concepts of a bundle's pipe travel with its run (in the
workflow's memo), so a restarted server shapes the output exactly as the one that started it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final

from durapipe._errors import ConfigError
from durapipe.serve._methods import Method
from durapipe.serve._problems import ServeError
from durapipe.spec import Pipeline

MAIN_STUFF: Final = "main_stuff"
# A stuff name as Pipelex writes them: snake case, starting with a letter.
_STUFF_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def requested_output(
    body: Mapping[str, Any], method: Method, pipe: str
) -> tuple[Method, str | None]:
    """The method a run takes once the request's output fields apply, and its ``output_name``.

    ``output_multiplicity`` and ``dynamic_output_concept_ref`` change the pipe's output (see
    `durapipe.adapters.mthds.override_output`); ``output_name`` names the slot of the working memory
    that holds the output (``main_stuff`` then aliases it, as Pipelex writes it).

    Raises:
        ServeError: a field of the wrong type, or an output the pipe cannot produce.
    """
    name = body.get("output_name")
    if name is not None and (not isinstance(name, str) or not _STUFF_NAME.fullmatch(name)):
        raise ServeError(
            "request.invalid",
            "The field 'output_name' must be a snake_case name (letters, digits, '_'), such as 'summary'.",
            params={"field": "output_name"},
        )
    if name == MAIN_STUFF:
        name = None
    multiplicity = body.get("output_multiplicity")
    if multiplicity is not None and (
        not isinstance(multiplicity, bool | int)
        or (not isinstance(multiplicity, bool) and multiplicity < 1)
    ):
        raise ServeError(
            "request.invalid",
            "The field 'output_multiplicity' must be true, false or a count of at least 1.",
            params={"field": "output_multiplicity"},
        )
    dynamic = body.get("dynamic_output_concept_ref")
    if dynamic is not None and (not isinstance(dynamic, str) or not dynamic):
        raise ServeError(
            "request.invalid",
            "The field 'dynamic_output_concept_ref' must name a concept, such as 'legal.Clause'.",
            params={"field": "dynamic_output_concept_ref"},
        )
    if multiplicity is None and dynamic is None:
        return method, name
    field = "output_multiplicity" if dynamic is None else "dynamic_output_concept_ref"
    if pipe not in method.outputs or method.loaded is None:
        raise ServeError(
            "request.unsupported",
            f"'{field}' applies to the pipes of MTHDS bundles; pipe '{pipe}' is a durapipe YAML pipe, "
            "whose output its spec fixes.",
            params={"field": field, "reason": "not_mthds"},
        )
    from durapipe.adapters.mthds import override_output

    try:
        override = override_output(
            method.loaded,
            pipe,
            method.outputs[pipe],
            multiplicity=multiplicity,
            dynamic_concept=dynamic,
        )
    except ConfigError as err:
        raise ServeError(
            "request.invalid", f"{str(err)[:1].upper()}{str(err)[1:]}.", params={"field": field}
        ) from None
    outputs = {**method.outputs, pipe: override.concept}
    return dataclasses.replace(method, pipeline=override.pipeline, outputs=outputs), name


def run_inputs(
    inputs: object,
    method: Method,
    pipe: str,
    *,
    allow_urls: tuple[str, ...] = (),
    max_bytes: int = 32 * 1024 * 1024,
) -> dict[str, Any]:
    """A request's ``inputs`` as durapipe run inputs for ``pipe``.

    A Document or Image input (``data:`` URL, ``base_64``, or an ``http(s)`` URL under one of
    ``allow_urls``) is stored in the blob store and travels as its reference; a path is refused:
    a client may not make the server read its own disk.

    Raises:
        ServeError: ``inputs`` is not an object of input names, or an envelope lacks an input.
    """
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise ServeError(
            "request.invalid",
            "The field 'inputs' must be an object mapping each input name to its value.",
            params={"field": "inputs"},
        )
    from durapipe.adapters.mthds._files import FileAccess, file_input

    access = FileAccess(local_paths=False, url_prefixes=allow_urls, max_bytes=max_bytes)
    if pipe in method.outputs:
        from durapipe.adapters.mthds import mthds_inputs

        try:
            return mthds_inputs(dict(inputs), method.pipeline, pipe, access)
        except ConfigError as err:
            raise ServeError(
                "input.invalid",
                f"The inputs of pipe '{pipe}' do not fit it: {err}.",
                params={"input": "", "field": ""},
            ) from None
    if isinstance(inputs.get("working_memory"), Mapping):
        inputs = inputs["working_memory"].get("root") or {}
    declared = method.pipeline.pipes[pipe].inputs if pipe in method.pipeline.pipes else {}
    plain: dict[str, Any] = {}
    for name, value in inputs.items():
        plain[name] = _plain(value)
        if declared.get(name) in ("document", "image", "file"):
            content = value.get("content", value) if isinstance(value, Mapping) else value
            try:
                plain[name] = file_input(name, content, access)
            except ConfigError as err:
                raise ServeError(
                    "input.invalid",
                    f"The inputs of pipe '{pipe}' do not fit it: {err}.",
                    params={"input": name, "field": ""},
                ) from None
    return plain


def _plain(value: Any) -> Any:
    """The plain value of one input of a durapipe YAML pipe: its content, unwrapped."""
    if isinstance(value, Mapping) and "concept" in value and "content" in value:
        value = value["content"]
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, inner),) = value.items()
        if key in ("text", "number", "items"):
            return inner
    return value


def concepts_memo(method: Method, pipe: str) -> dict[str, Any]:
    """What a run of ``pipe`` keeps in its memo to shape its output later: its MTHDS concepts
    (of its output, its inputs and, for a sequence, each result of its working memory: see
    `whole_memory`)."""
    if pipe not in method.outputs:
        return {}
    memo: dict[str, Any] = {"output": method.outputs[pipe], "inputs": method.inputs.get(pipe, {})}
    _, main, steps = _memory(method, pipe)
    if main is not None:
        memo["main"] = main
        memo["steps"] = steps
    return memo


def whole_memory(method: Method, pipe: str) -> Pipeline:
    """The pipeline a run of ``pipe`` takes: a bundle's sequence returns its whole working memory
    (nested sequences' results included, as Pipelex's working memory holds them), the main result
    among them (`concepts_memo`)."""
    return _memory(method, pipe)[0]


def _memory(method: Method, pipe: str) -> tuple[Pipeline, str | None, dict[str, str]]:
    if pipe not in method.outputs:
        return method.pipeline, None, {}
    from durapipe.adapters.mthds._memory import HELD, memory_of
    from durapipe.serve._methods import qualified

    pipeline, main, concepts = memory_of(method.pipeline, method.outputs, pipe)
    # The concepts the translation adds are natives (Text, Dynamic): qualified as such.
    return (
        pipeline,
        main,
        {name: c if c == HELD else qualified(c, "native") for name, c in concepts.items()},
    )


def working_memory(
    output: Any, inputs: Mapping[str, Any], concepts: Mapping[str, Any]
) -> dict[str, Any]:
    """The working memory of a finished run (the protocol's ``DictWorkingMemory``).

    Args:
        output: the run's output value.
        inputs: the run's input values.
        concepts: the run's memo of concepts (`concepts_memo`); empty for a durapipe YAML pipe.
    """
    output_concept = concepts.get("output")
    input_concepts: Mapping[str, str] = concepts.get("inputs") or {}
    root: dict[str, Any] = {}
    for name, value in inputs.items():
        concept = input_concepts.get(name)
        root[name] = stuff(name, value, concept)
    steps: Mapping[str, str] = concepts.get("steps") or {}
    if steps and isinstance(output, Mapping):
        # A sequence that returned its whole memory: each result is a stuff, the main one among them.
        from durapipe.adapters.mthds import memory_values

        for name, (concept, value) in memory_values(output, steps).items():
            root[name] = stuff(name, value, concept)
        output = output.get(concepts.get("main", ""))
    slot = concepts.get("output_name")
    if isinstance(slot, str) and slot:
        # The caller named the output's slot: the stuff lives there and main_stuff aliases it.
        root[slot] = stuff(slot, output, output_concept)
        return {"root": root, "aliases": {MAIN_STUFF: slot}}
    root[MAIN_STUFF] = stuff(MAIN_STUFF, output, output_concept)
    return {"root": root, "aliases": {}}


def stuff(name: str, value: Any, concept: str | None) -> dict[str, Any]:
    """One stuff: a concept reference without multiplicity, and its content as MTHDS renders it."""
    if concept is None:
        ref, content = native_stuff(value)
    else:
        from durapipe.adapters.mthds import mthds_output

        ref, content = concept.partition("[")[0], mthds_output(value, concept)
    return {"stuff_code": name, "stuff_name": name, "concept": ref, "content": content}


def native_stuff(value: Any) -> tuple[str, Any]:
    """A native concept and content for a plain JSON value (a durapipe YAML pipe's output)."""
    if isinstance(value, str):
        return "native.Text", {"text": value}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "native.Number", {"number": value}
    if isinstance(value, list):
        items = [native_stuff(item) for item in value]
        same = bool(items) and all(concept == items[0][0] for concept, _ in items)
        return (items[0][0] if same else "native.Anything"), {"items": [c for _, c in items]}
    return "native.JSON", value


def main_stuff(memory: Mapping[str, Any]) -> Any:
    """The content of the run's main output in a working memory."""
    found = memory["root"].get(memory.get("aliases", {}).get(MAIN_STUFF, MAIN_STUFF))
    return found.get("content") if isinstance(found, Mapping) else None
