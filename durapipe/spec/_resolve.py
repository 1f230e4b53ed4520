"""Resolution: from a pipeline to the self-contained spec one run carries.

The resolved spec keeps only the pipes the run reaches, replaces model aliases with model strings and
fills every leaf's timeout and retry policy, so a running workflow never depends on files or code that
changed after it started.
"""

from __future__ import annotations

from durapipe.spec import _types
from durapipe.spec._base import RetrySpec
from durapipe.spec._deck import target
from durapipe.spec._kinds import kind_of
from durapipe.spec._routing import limit_applies, route
from durapipe.spec._spec import (
    LOCAL_EXTRACTOR,
    OFFLINE_MODEL,
    AgentPipe,
    ExtractPipe,
    ImagePipe,
    LlmPipe,
    Pipeline,
    PipeSpec,
    SequencePipe,
    pipes_used,
)


def reachable(pipeline: Pipeline, name: str) -> list[str]:
    """Names of the pipes a run of ``name`` can reach, ``name`` first, in a stable order."""
    order: list[str] = []
    pending = [name]
    while pending:
        current = pending.pop(0)
        if current in order or current not in pipeline.pipes:
            continue
        order.append(current)
        pending.extend(pipes_used(pipeline.pipes[current]))
    return order


def subset(spec: Pipeline, name: str) -> Pipeline:
    """The part of ``spec`` a run of pipe ``name`` needs: its pipes and the structures they use."""
    names = reachable(spec, name)
    pipes = {n: spec.pipes[n] for n in names}
    used: set[str] = set()
    for pipe in pipes.values():
        types = [*pipe.inputs.values()]
        output = getattr(pipe, "output", None)
        # A sequence's output names working-memory values; every other pipe's is a type.
        if isinstance(output, str) and not isinstance(pipe, SequencePipe):
            types.append(output)
        for type_ref in types:
            used |= _types.structures_used(type_ref, spec.structures)
    structures = {n: s for n, s in spec.structures.items() if n in used}
    return Pipeline(
        default_model=spec.default_model,
        models=spec.models,
        structures=structures,
        pipes=pipes,
        limits=spec.limits,
    )


def resolve(
    pipeline: Pipeline,
    name: str,
    *,
    default_model: str | None = None,
    fallback_model: str | None = None,
) -> Pipeline:
    """The resolved spec for a run of pipe ``name``.

    The default model of llm pipes is, in order: ``default_model``, the pipeline's
    ``default_model``, ``fallback_model`` (the ``DURAPIPE_DEFAULT_MODEL`` setting, passed in by
    whoever starts a run: this layer reads no environment), then the offline model.
    An extract pipe defaults to the embedded extractor and an image pipe to the offline model.
    Every leaf (and every agent, whose turns are activities) gets its task queue from the pipeline's
    routing rules (see `durapipe.spec.route`); the resolved spec carries the concrete queues and no
    routing rules, and the limits that apply to its pipes (see `durapipe.spec.limits_for`).
    """
    fallback = default_model or pipeline.default_model or fallback_model or OFFLINE_MODEL
    aliases = {alias: target(entry) for alias, entry in pipeline.models.items()}
    fallback = aliases.get(fallback, fallback)
    pipes: dict[str, PipeSpec] = {}
    for pipe_name, pipe in subset(pipeline, name).pipes.items():
        changes: dict[str, object] = {}
        if isinstance(pipe, LlmPipe | AgentPipe):
            model = pipe.model or fallback
            changes["model"] = aliases.get(model, model)
            if isinstance(pipe, LlmPipe) and pipe.fallbacks:
                changes["fallbacks"] = [aliases.get(m, m) for m in pipe.fallbacks]
        elif isinstance(pipe, ExtractPipe | ImagePipe):
            # Not the pipeline's default model: that one is a chat model, not an OCR or image model.
            model = pipe.model or (LOCAL_EXTRACTOR if pipe.kind == "extract" else OFFLINE_MODEL)
            changes["model"] = aliases.get(model, model)
            if pipe.fallbacks:
                changes["fallbacks"] = [aliases.get(m, m) for m in pipe.fallbacks]
        kind = kind_of(pipe.kind)
        if kind is not None and kind.timeout is not None:
            changes["timeout"] = pipe.timeout or kind.timeout
            changes["retry"] = pipe.retry or kind.retry or RetrySpec()
        if kind is not None and kind.activity is not None:
            # A leaf, or an agent: a workflow whose model turns are activities on its queue.
            changes["queue"] = route(pipe.model_copy(update=changes), pipeline.routing)
        pipes[pipe_name] = pipe.model_copy(update=changes)
    resolved = subset(pipeline, name)
    limits = [
        rule for rule in pipeline.limits if any(limit_applies(rule, p) for p in pipes.values())
    ]
    return resolved.model_copy(
        update={"pipes": pipes, "models": {}, "default_model": fallback, "limits": limits}
    )
