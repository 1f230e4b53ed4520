"""A run's output, overridden by its caller: the protocol's ``output_multiplicity`` and
``dynamic_output_concept_ref`` (``output_name`` only renames the output in the working memory).

The override changes the spec the run takes (the top pipe's output type), never the bundle: each run
carries its own resolved spec, so two runs of one method may ask for different outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from durapipe._errors import ConfigError
from durapipe.adapters.mthds._api import Method, pipe_for
from durapipe.adapters.mthds._bundle import Bundle, PipeBlueprint
from durapipe.adapters.mthds._deck import ModelDeck
from durapipe.adapters.mthds._library import resolve_concept, split_multiplicity
from durapipe.adapters.mthds._state import Translation
from durapipe.adapters.mthds._translate import type_of
from durapipe.spec import ImagePipe, LlmPipe, Pipeline

# What a caller may ask for: one output (False, or a count of one), a list whose length the model
# decides (True), or exactly N items.
Multiplicity = bool | int


@dataclass(frozen=True)
class OutputOverride:
    """The pipeline a run takes and the MTHDS concept of its output (``Idea[3]``)."""

    pipeline: Pipeline
    concept: str


def override_output(
    method: Method,
    pipe: str,
    concept: str,
    *,
    multiplicity: Multiplicity | None = None,
    dynamic_concept: str | None = None,
) -> OutputOverride:
    """The pipeline and output concept of a run of ``pipe`` whose caller overrides its output.

    Follows Pipelex's reading of the protocol: ``multiplicity`` False or 1 asks for one output,
    True for a list (of the pipe's own count, if it has one), N > 1 for N items; a
    ``dynamic_concept`` applies to a pipe whose output is ``Dynamic`` and names the concept the
    run produces instead.

    Args:
        method: the loaded bundle or package.
        pipe: the durapipe name of the pipe run.
        concept: the pipe's declared output concept (domain-qualified or not).
        multiplicity: the caller's ``output_multiplicity``.
        dynamic_concept: the caller's ``dynamic_output_concept_ref``.

    Raises:
        ConfigError: the pipe cannot produce what is asked (one sentence naming pipe and field).
    """
    code, count, is_list = split_multiplicity(concept)
    spec = method.pipeline.pipes[pipe]
    pipeline = method.pipeline
    declared = getattr(spec, "output", None)
    item_type = declared if isinstance(declared, str) else "any"
    if item_type.startswith("list["):
        item_type = item_type[5:-1].split(",")[0].strip()
    if dynamic_concept is not None:
        if code.rpartition(".")[2] != "Dynamic":
            raise ConfigError(
                f"pipe '{pipe}' outputs '{concept}', not Dynamic: 'dynamic_output_concept_ref' "
                "applies only to a pipe whose output is Dynamic; leave it out"
            )
        item_type, pipeline, code = _concept_type(method, pipe, dynamic_concept, pipeline)
    if multiplicity is not None:
        # True == 1 in Python: the boolean forms are read before any count.
        if multiplicity is True:
            is_list = True
        elif multiplicity is False or multiplicity == 1:
            count, is_list = None, False
        elif multiplicity > 1:
            count, is_list = multiplicity, True
        else:
            raise ConfigError(
                f"'output_multiplicity' must be true, false or a count of at least 1, not {multiplicity}"
            )
    suffix = "" if not is_list else f"[{count}]" if count else "[]"
    wanted = f"{code}{suffix}"
    if wanted == concept:
        return OutputOverride(pipeline, concept)
    if isinstance(spec, ImagePipe):
        if is_list and not count:
            raise ConfigError(
                f"pipe '{pipe}' is a PipeImgGen: 'output_multiplicity' true does not say how many "
                "images to make; send a count (3)"
            )
        images = "image" if not is_list else f"list[image, {count}]"
        pipes = {**pipeline.pipes, pipe: spec.model_copy(update={"output": images})}
        return OutputOverride(pipeline.model_copy(update={"pipes": pipes}), wanted)
    if not isinstance(spec, LlmPipe) or _blueprint_type(method, pipe) != "PipeLLM":
        if multiplicity is not None and suffix != concept[len(concept.split("[")[0]) :]:
            raise ConfigError(
                f"pipe '{pipe}' is a {_blueprint_type(method, pipe) or 'controller'}: "
                "'output_multiplicity' applies to PipeLLM and PipeImgGen pipes in durapipe; run the pipe "
                "inside a PipeBatch, or leave 'output_multiplicity' out"
            )
        # A non-LLM Dynamic pipe makes what it makes: only the concept its output is shown as changes.
        return OutputOverride(pipeline, wanted)
    output = (
        item_type
        if not is_list
        else f"list[{item_type}, {count}]"
        if count
        else f"list[{item_type}]"
    )
    pipes = {**pipeline.pipes, pipe: spec.model_copy(update={"output": output})}
    return OutputOverride(pipeline.model_copy(update={"pipes": pipes}), wanted)


def _source(method: Method, pipe: str) -> tuple[Bundle, PipeBlueprint] | None:
    """The bundle and MTHDS blueprint of the pipe durapipe calls ``pipe``."""
    for bundle in method.library.bundles:
        for code, blueprint in bundle.pipes.items():
            if pipe_for(method, f"{bundle.domain}.{code}") == pipe:
                return bundle, blueprint
    return None


def _blueprint_type(method: Method, pipe: str) -> str | None:
    """The MTHDS type of the pipe durapipe calls ``pipe`` (``PipeLLM``, ...)."""
    found = _source(method, pipe)
    return found[1].type if found else None


def _concept_type(
    method: Method, pipe: str, ref: str, pipeline: Pipeline
) -> tuple[str, Pipeline, str]:
    """The durapipe type of concept ``ref`` (read from the bundle of ``pipe``), the pipeline
    with any structure that type needs, and the concept domain-qualified (``native.Text``)."""
    source = _source(method, pipe)
    if source is None or "[" in ref:
        raise ConfigError(
            f"'dynamic_output_concept_ref' must name one concept (no multiplicity), not '{ref}'"
        )
    bundle = source[0]
    target = resolve_concept(method.library, bundle, ref)
    if isinstance(target, str):
        raise ConfigError(f"'dynamic_output_concept_ref' names no concept of the method: {target}")
    state = Translation(method.library, ModelDeck())
    type_ref = type_of(state, method.library, bundle, ref)
    structures = dict(pipeline.structures)
    for name, structure in state.structures.items():
        if name in structures and structures[name] != structure:
            raise ConfigError(
                f"'dynamic_output_concept_ref' '{ref}' clashes with another structure named '{name}'; "
                "name the concept with its domain"
            )
        structures[name] = structure
    domain = "native" if target.native else target.bundle.domain if target.bundle else "native"
    return (
        type_ref,
        pipeline.model_copy(update={"structures": structures}),
        f"{domain}.{target.code}",
    )
